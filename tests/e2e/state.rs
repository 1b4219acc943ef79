//! State that outlives an instance: topic history, members and the
//! key-value store, through the testkit plugin (its `store.rs` lists the
//! commands), with the store on disk in a temporary folder.

use crate::raw::http_get;
use crate::support::{
    BerthProcess, Client, TestServer, ask, ask_until, config_text, connect, json_field, recv_text,
    send_text,
};

/// Publishes `text` to `topic` (the publisher is not subscribed) and returns its position.
async fn publish(client: &mut Client, topic: &str, text: &str) -> String {
    let answer = ask(client, &format!("publish {topic} {text}")).await;
    answer
        .rsplit_once(" at ")
        .unwrap_or_else(|| panic!("no position in {answer:?}"))
        .1
        .to_string()
}

/// The `SEQ:TEXT` entries of a `history` answer, and its `last=`.
fn entries(answer: &str) -> (String, Vec<String>) {
    let mut words = answer.split(' ');
    assert_eq!(words.next(), Some("history"), "{answer}");
    let last = words.next().unwrap_or_default().replace("last=", "");
    (last, words.map(str::to_string).collect())
}

fn expected(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
    range.map(|i| format!("{i}:m{i}")).collect()
}

const KIT: &str = r#"
[[route]]
path = "/kit"
plugin = "testkit.wasm"
history-size = 100
"#;

#[tokio::test]
async fn history_is_read_back_after_any_position_in_order() {
    let server = TestServer::start(KIT).await;
    let mut client = connect(&server.url("/kit")).await;
    let mut positions = Vec::new();
    for i in 1..=100 {
        positions.push(publish(&mut client, "room", &format!("m{i}")).await);
    }
    assert!(positions[39].ends_with("-40"), "{positions:?}");
    let (last, got) =
        entries(&ask(&mut client, &format!("history room {} 1000", positions[39])).await);
    assert_eq!(got, expected(41..=100));
    assert_eq!(last, positions[99]);
    // A limit pages through, oldest first; without a position, the newest.
    let (_, got) = entries(&ask(&mut client, &format!("history room {} 5", positions[39])).await);
    assert_eq!(got, expected(41..=45));
    let (_, got) = entries(&ask(&mut client, "history room - 3").await);
    assert_eq!(got, expected(98..=100));
    let (_, got) = entries(&ask(&mut client, &format!("history room {} 10", positions[99])).await);
    assert!(got.is_empty());
    // Another topic, or a route of another namespace, has none of it.
    let (last, got) = entries(&ask(&mut client, "history other - 10").await);
    assert_eq!((last.as_str(), got.len()), ("none", 0));
    // A position the topic never reached, or from another epoch, is lost.
    let (epoch, _) = positions[0].split_once('-').unwrap();
    let ahead = format!("{epoch}-101");
    assert_eq!(
        ask(&mut client, &format!("history room {ahead} 10")).await,
        "history error lost"
    );
    let other_epoch = format!("{:016x}-40", u64::from_str_radix(epoch, 16).unwrap() ^ 1);
    assert_eq!(
        ask(&mut client, &format!("history room {other_epoch} 10")).await,
        "history error lost"
    );
    server.stop().await;
}

#[tokio::test]
async fn history_keeps_its_size_and_forgets_idle_topics_after_its_ttl() {
    let server = TestServer::start(
        r#"
[[route]]
path = "/small"
plugin = "testkit.wasm"
history-size = 5
history-ttl = "1s"

[[route]]
path = "/none"
plugin = "testkit.wasm"
"#,
    )
    .await;
    let mut client = connect(&server.url("/small")).await;
    let mut positions = Vec::new();
    for i in 1..=10 {
        positions.push(publish(&mut client, "t", &format!("m{i}")).await);
    }
    let (_, got) = entries(&ask(&mut client, "history t - 100").await);
    assert_eq!(got, expected(6..=10));
    // Resuming right before the oldest kept message works; earlier is lost.
    let (_, got) = entries(&ask(&mut client, &format!("history t {} 100", positions[4])).await);
    assert_eq!(got, expected(6..=10));
    assert_eq!(
        ask(&mut client, &format!("history t {} 100", positions[3])).await,
        "history error lost"
    );
    // A second without publishes, and the history is gone: its positions are lost.
    ask_until(
        &mut client,
        &format!("history t {} 100", positions[9]),
        |a| a == "history error lost",
    )
    .await;
    let fresh = publish(&mut client, "t", "again").await;
    assert!(fresh.ends_with("-1"), "{fresh}");
    assert_ne!(fresh.split('-').next(), positions[0].split('-').next());
    // A route without history publishes without positions, and says why it
    // cannot read any.
    let mut plain = connect(&server.url("/none")).await;
    assert_eq!(ask(&mut plain, "publish t x").await, "published 0");
    assert_eq!(
        ask(&mut plain, "history t - 10").await,
        "history error disabled"
    );
    server.stop().await;
}

#[tokio::test]
async fn members_are_listed_and_counted_until_their_connection_ends() {
    let server = TestServer::start(KIT).await;
    let url = server.url("/kit");
    let mut alice = connect(&url).await;
    let mut bob = connect(&url).await;
    let mut watcher = connect(&url).await;
    assert_eq!(
        ask(&mut alice, "subscribe-as room alice").await,
        "subscribed"
    );
    assert_eq!(ask(&mut bob, "subscribe-as room bob").await, "subscribed");
    // A plain subscriber is not a member.
    assert_eq!(ask(&mut watcher, "subscribe room").await, "subscribed");
    assert_eq!(
        ask(&mut watcher, "members room 10").await,
        "members 2 alice bob"
    );
    assert_eq!(ask(&mut watcher, "count room").await, "count 2");
    assert_eq!(
        ask(&mut watcher, "members room 1").await.split(' ').count(),
        3
    );
    // Subscribing again with another description replaces it.
    assert_eq!(
        ask(&mut bob, "subscribe-as room robert").await,
        "subscribed"
    );
    assert_eq!(
        ask(&mut watcher, "members room 10").await,
        "members 2 alice robert"
    );
    // Unsubscribing leaves; so does a connection that ends.
    assert_eq!(ask(&mut alice, "unsubscribe room").await, "unsubscribed");
    assert_eq!(
        ask(&mut watcher, "members room 10").await,
        "members 1 robert"
    );
    drop(bob);
    ask_until(&mut watcher, "count room", |a| a == "count 0").await;
    // A description longer than max-member (256 bytes) is refused.
    let long = "x".repeat(257);
    assert_eq!(
        ask(&mut watcher, &format!("subscribe-as room {long}")).await,
        "error too-large"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_store_gets_sets_counts_swaps_and_expires_values() {
    let server = TestServer::start(KIT).await;
    let mut client = connect(&server.url("/kit")).await;
    assert_eq!(ask(&mut client, "get k").await, "value none");
    assert_eq!(ask(&mut client, "set k v1").await, "set ok");
    assert_eq!(ask(&mut client, "get k").await, "value v1");
    assert_eq!(ask(&mut client, "incr k 1").await, "error not-a-number");
    assert_eq!(ask(&mut client, "incr n 5").await, "incr 5");
    assert_eq!(ask(&mut client, "incr n -7").await, "incr -2");
    assert_eq!(ask(&mut client, "get n").await, "value -2");
    assert_eq!(
        ask(&mut client, &format!("incr n {}", i64::MAX)).await,
        "incr 9223372036854775805"
    );
    assert_eq!(ask(&mut client, "incr n 10").await, "error not-a-number");
    assert_eq!(ask(&mut client, "cas k v0 v2").await, "cas false");
    assert_eq!(ask(&mut client, "cas k v1 v2").await, "cas true");
    assert_eq!(ask(&mut client, "cas fresh - v").await, "cas true");
    assert_eq!(ask(&mut client, "cas fresh - w").await, "cas false");
    assert_eq!(ask(&mut client, "cas fresh v -").await, "cas true");
    assert_eq!(ask(&mut client, "get fresh").await, "value none");
    assert_eq!(ask(&mut client, "del k").await, "deleted true");
    assert_eq!(ask(&mut client, "del k").await, "deleted false");
    assert_eq!(ask(&mut client, "set brief x 200").await, "set ok");
    assert_eq!(ask(&mut client, "get brief").await, "value x");
    ask_until(&mut client, "get brief", |a| a == "value none").await;
    let long_key = "k".repeat(257);
    assert_eq!(
        ask(&mut client, &format!("get {long_key}")).await,
        "error too-large"
    );
    // A value over max-value (64 KiB) is refused whole.
    assert_eq!(
        ask(&mut client, "fill big 1 65537").await,
        "filled 0, then too-large"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_namespace_at_its_quota_gets_an_error_and_others_are_untouched() {
    let server = TestServer::start(
        r#"
admin-listen = "127.0.0.1:0"

[[route]]
path = "/tight"
plugin = "testkit.wasm"
store-keys = 50

[[route]]
path = "/small"
plugin = "testkit.wasm"
store-bytes = "1KiB"

[[route]]
path = "/roomy"
plugin = "testkit.wasm"
"#,
    )
    .await;
    let mut tight = connect(&server.url("/tight")).await;
    assert_eq!(
        ask(&mut tight, "fill k 100 8").await,
        "filled 50, then quota"
    );
    // Replacing a key within the quota still works, and the plugin serves on.
    assert_eq!(ask(&mut tight, "set k0 changed").await, "set ok");
    assert_eq!(ask(&mut tight, "del k1").await, "deleted true");
    assert_eq!(ask(&mut tight, "set another v").await, "set ok");
    assert_eq!(ask(&mut tight, "set one-more v").await, "error quota");
    let mut small = connect(&server.url("/small")).await;
    // Ten keys of 2 + 100 bytes fit in 1 KiB; the eleventh does not.
    assert_eq!(
        ask(&mut small, "fill k 100 100").await,
        "filled 10, then quota"
    );
    let mut roomy = connect(&server.url("/roomy")).await;
    assert_eq!(ask(&mut roomy, "fill k 1000 8").await, "filled 1000");
    assert_eq!(ask(&mut roomy, "get k0").await, "value 0|......");
    // Namespaces do not see each other's keys.
    assert_eq!(ask(&mut tight, "get k999").await, "value none");
    let (_, metrics) = http_get(server.admin.unwrap(), "/metrics", &[]).await;
    for limit in ["store_keys", "store_bytes"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.contains(&format!("limit=\"{limit}\"")) && !l.ends_with(" 0")),
            "{limit} not counted:\n{metrics}"
        );
    }
    server.stop().await;
}

/// A berth process whose config and store live in `dir`.
fn berth_in(dir: &std::path::Path) -> BerthProcess {
    let text = config_text(&format!("state-dir = {:?}\n{KIT}", dir.join("state")));
    BerthProcess::with_config(dir, &text)
}

#[tokio::test]
async fn what_was_acknowledged_survives_kill_9_and_a_lost_store_changes_the_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let mut berth = berth_in(dir.path());
    let mut client = connect(&berth.url("/kit")).await;
    assert_eq!(ask(&mut client, "fill key 1000 16").await, "filled 1000");
    let mut positions = Vec::new();
    for i in 1..=20 {
        positions.push(publish(&mut client, "room", &format!("m{i}")).await);
    }
    berth.kill();

    let berth = berth_in(dir.path());
    let mut client = connect(&berth.url("/kit")).await;
    assert_eq!(
        ask(&mut client, "check-many key 1000").await,
        "present 1000"
    );
    let (last, got) = entries(&ask(&mut client, "history room - 50").await);
    assert_eq!(
        (last.as_str(), got),
        (positions[19].as_str(), expected(1..=20))
    );
    let (_, got) = entries(&ask(&mut client, &format!("history room {} 50", positions[9])).await);
    assert_eq!(got, expected(11..=20));
    drop(client);
    drop(berth);

    // The store is lost: the old positions cannot be resumed from, and new
    // messages start a new epoch.
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let berth = berth_in(dir.path());
    let mut client = connect(&berth.url("/kit")).await;
    assert_eq!(
        ask(&mut client, &format!("history room {} 50", positions[9])).await,
        "history error lost"
    );
    let fresh = publish(&mut client, "room", "new").await;
    assert!(fresh.ends_with("-1"), "{fresh}");
    assert_ne!(fresh.split('-').next(), positions[0].split('-').next());
}

#[tokio::test]
async fn a_backend_publish_through_the_api_is_kept_in_history_too() {
    let token = "history-token-0123456789";
    let server =
        TestServer::start(&format!("{KIT}\n[publish-api]\ntokens = [\"{token}\"]\n")).await;
    let mut client = connect(&server.url("/kit")).await;
    let first = publish(&mut client, "news", "m1").await;
    let (status, _, body) = crate::cluster::post(
        server.addr,
        "/publish/kit/news",
        Some(token),
        "text/plain",
        b"m2",
    )
    .await;
    let body = String::from_utf8(body).unwrap();
    assert_eq!(status, 202, "{body}");
    let (epoch, _) = first.split_once('-').unwrap();
    assert!(
        body.contains(&format!("\"position\":\"{epoch}-2\"")),
        "{body}"
    );
    let (_, got) = entries(&ask(&mut client, &format!("history news {first} 10")).await);
    assert_eq!(got, expected(2..=2));
    server.stop().await;
}

const CHAT: &str = r#"
[[route]]
path = "/chat"
plugin = "chat.wasm"
history-size = 1000
"#;

/// Joins the chat at `query` and returns the client, its id and the welcome.
async fn join_chat(url: &str) -> (Client, String) {
    let mut client = connect(url).await;
    let welcome = recv_text(&mut client).await;
    assert_eq!(json_field(&welcome, "type"), "\"welcome\"", "{welcome}");
    (client, welcome)
}

/// Sends `text` to the room and returns the position the sender is told.
async fn say(client: &mut Client, text: &str) -> String {
    send_text(client, text).await;
    loop {
        // Joins and leaves of others may come first.
        let sent = recv_text(client).await;
        if json_field(&sent, "type") == "\"sent\"" {
            return json_field(&sent, "position").trim_matches('"').to_string();
        }
    }
}

/// Reads chat messages until one with `text` arrives; returns the texts seen.
async fn texts_until(client: &mut Client, last: &str) -> Vec<String> {
    let mut texts = Vec::new();
    loop {
        let msg = recv_text(client).await;
        if json_field(&msg, "type") != "\"message\"" {
            continue;
        }
        assert!(msg.contains("\"position\":\""), "{msg}");
        let text = json_field(&msg, "text").trim_matches('"').to_string();
        let done = text == last;
        texts.push(text);
        if done {
            return texts;
        }
    }
}

#[tokio::test]
async fn a_chat_client_that_comes_back_with_since_gets_exactly_what_it_missed() {
    let server = TestServer::start(CHAT).await;
    let url = server.url("/chat?room=r");
    let (mut a, _) = join_chat(&url).await;
    let (mut b, welcome) = join_chat(&url).await;
    assert!(welcome.contains("\"members\":["), "{welcome}");
    let seen = say(&mut a, "m0").await;
    assert_eq!(texts_until(&mut b, "m0").await, ["m0"]);
    drop(b);
    for i in 1..=10 {
        say(&mut a, &format!("m{i}")).await;
    }
    let (mut back, _) = join_chat(&format!("{url}&since={seen}")).await;
    say(&mut a, "live").await;
    let expected: Vec<String> = (1..=10)
        .map(|i| format!("m{i}"))
        .chain(["live".into()])
        .collect();
    assert_eq!(texts_until(&mut back, "live").await, expected);

    // A newcomer gets the recent messages, oldest first; a position that is
    // no longer kept gets a resync notice, then the same.
    let (mut fresh, _) = join_chat(&url).await;
    let all: Vec<String> = (0..=10)
        .map(|i| format!("m{i}"))
        .chain(["live".into()])
        .collect();
    assert_eq!(texts_until(&mut fresh, "live").await, all);
    let (epoch, _) = seen.split_once('-').unwrap();
    let stale = format!("{:016x}-3", u64::from_str_radix(epoch, 16).unwrap() ^ 1);
    let mut lost = connect(&format!("{url}&since={stale}")).await;
    recv_text(&mut lost).await; // welcome
    assert_eq!(recv_text(&mut lost).await, r#"{"type":"resync"}"#);
    assert_eq!(texts_until(&mut lost, "live").await, all);
    server.stop().await;
}

#[tokio::test]
async fn a_rooms_history_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut berth = BerthProcess::with_config(dir.path(), &config_text(CHAT));
    let (mut a, _) = join_chat(&berth.url("/chat?room=kept")).await;
    for i in 0..5 {
        say(&mut a, &format!("m{i}")).await;
    }
    berth.kill();
    let berth = BerthProcess::with_config(dir.path(), &config_text(CHAT));
    let (mut b, _) = join_chat(&berth.url("/chat?room=kept")).await;
    let expected: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    assert_eq!(texts_until(&mut b, "m4").await, expected);
}
