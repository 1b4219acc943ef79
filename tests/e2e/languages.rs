//! One behavior table for the echo and chat plugins, run once for each
//! language they are written in (Rust, JavaScript, Python): the same clients,
//! the same messages, the same expected bytes. A plugin's language must not
//! show on the wire.

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::metrics::scrape;

use crate::support::{
    Client, TestServer, connect, guest_plugin, json_field, recv, recv_text, refusal, request,
    send_text,
};

/// The languages the example plugins are written in.
#[derive(Clone, Copy)]
enum Lang {
    Rust,
    Js,
    Python,
}

impl Lang {
    /// The config routes for this language's plugins: echo in both instance
    /// models and chat.
    fn routes(self) -> String {
        let plugin = |name: &str| match self {
            Lang::Rust => format!("{name}.wasm"),
            Lang::Js => guest_plugin("js", name).display().to_string(),
            Lang::Python => guest_plugin("python", name).display().to_string(),
        };
        format!(
            r#"
[[route]]
path = "/echo"
plugin = {echo:?}
max-message-size = 2097152

[[route]]
path = "/echo-conn"
plugin = {echo:?}
instance = "connection"

[[route]]
path = "/chat"
plugin = {chat:?}
"#,
            echo = plugin("echo"),
            chat = plugin("chat"),
        )
    }

    async fn server(self) -> TestServer {
        TestServer::start(&self.routes()).await
    }
}

async fn echoes_text_binary_empty_large_and_utf8(lang: Lang) {
    let server = lang.server().await;
    let mut client = connect(&server.url("/echo")).await;
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let cases = [
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::text(""),
        Message::binary(Vec::<u8>::new()),
        Message::text("héllo wörld — 日本語 🚀"),
        Message::binary(big),
        // 256 KiB: JavaScript plugins pay about half a microsecond per
        // character of text passed to the host, and a call has one second.
        Message::text("x".repeat(256 * 1024)),
    ];
    for case in cases {
        client.send(case.clone()).await.unwrap();
        assert_eq!(recv(&mut client).await, case);
    }
    server.stop().await;
}

async fn echo_keeps_the_order_of_a_hundred_messages(lang: Lang) {
    let server = lang.server().await;
    let mut client = connect(&server.url("/echo")).await;
    for i in 0..100 {
        client.feed(Message::text(format!("m{i}"))).await.unwrap();
    }
    client.flush().await.unwrap();
    for i in 0..100 {
        assert_eq!(recv(&mut client).await, Message::text(format!("m{i}")));
    }
    server.stop().await;
}

async fn echo_serves_each_connection_with_its_own_instance(lang: Lang) {
    let server = lang.server().await;
    let mut a = connect(&server.url("/echo-conn")).await;
    let mut b = connect(&server.url("/echo-conn")).await;
    for i in 0..10 {
        let (to_a, to_b) = (format!("a{i}"), Message::binary(vec![i; 3]));
        send_text(&mut a, &to_a).await;
        b.send(to_b.clone()).await.unwrap();
        assert_eq!(recv(&mut b).await, to_b);
        assert_eq!(recv_text(&mut a).await, to_a);
    }
    drop(a);
    // A closed connection's instance is dropped; the other keeps going.
    send_text(&mut b, "still here").await;
    assert_eq!(recv_text(&mut b).await, "still here");
    server.stop().await;
}

/// Echoes `count` binary messages of 1 KiB, `WINDOW` in flight, each checked.
async fn echo_binary(client: &mut Client, count: usize) {
    const WINDOW: usize = 64;
    let message = |i: usize| Message::binary(vec![(i % 251) as u8; 1024]);
    let mut answered = 0;
    for i in 0..count {
        client.feed(message(i)).await.unwrap();
        if i + 1 - answered >= WINDOW {
            client.flush().await.unwrap();
            assert_eq!(recv(client).await, message(answered));
            answered += 1;
        }
    }
    client.flush().await.unwrap();
    while answered < count {
        assert_eq!(recv(client).await, message(answered));
        answered += 1;
    }
}

async fn echo_memory_stays_flat_over_a_hundred_thousand_binary_messages(lang: Lang) {
    let server = lang.server().await;
    let mut client = connect(&server.url("/echo")).await;
    let memory = || async {
        scrape(server.addr)
            .await
            .value("berth_plugin_memory_bytes", &[("route", "/echo")])
    };
    // The first messages settle the guest allocator's pools.
    echo_binary(&mut client, 1_000).await;
    let before = memory().await;
    echo_binary(&mut client, 100_000).await;
    let grown = memory().await - before;
    assert!(
        grown <= 1024.0 * 1024.0,
        "the instance grew {grown} bytes over 100,000 binary messages (from {before})"
    );
    server.stop().await;
}

/// Joins `room` (the default room when `None`) and returns the client with its id.
async fn join(server: &TestServer, room: Option<&str>) -> (Client, String) {
    let path = match room {
        Some(room) => format!("/chat?room={room}"),
        None => "/chat".to_string(),
    };
    let mut client = connect(&server.url(&path)).await;
    let welcome = recv_text(&mut client).await;
    assert_eq!(json_field(&welcome, "type"), "\"welcome\"");
    let id = json_field(&welcome, "id").to_string();
    (client, id)
}

async fn chat_reaches_everyone_else_and_announces_joins_and_leaves(lang: Lang) {
    let server = lang.server().await;
    let (mut a, a_id) = join(&server, None).await;
    let mut b = connect(&server.url("/chat")).await;
    let welcome = recv_text(&mut b).await;
    let b_id = json_field(&welcome, "id").to_string();
    assert_eq!(
        welcome,
        format!(r#"{{"type":"welcome","id":{b_id},"room":"lobby","members":[{a_id}]}}"#)
    );
    assert_eq!(
        recv_text(&mut a).await,
        format!(r#"{{"type":"join","id":{b_id}}}"#)
    );
    let (mut c, c_id) = join(&server, Some("lobby")).await;
    for client in [&mut a, &mut b] {
        assert_eq!(
            recv_text(client).await,
            format!(r#"{{"type":"join","id":{c_id}}}"#)
        );
    }

    // Quotes, a backslash, control characters and non-ASCII text come out
    // escaped the same way in every language.
    send_text(&mut a, "hello \"room\" \\ \n\t\u{1} — 日本").await;
    let expected = format!(
        r#"{{"type":"message","from":{a_id},"text":"hello \"room\" \\ \n\t\u0001 — 日本"}}"#
    );
    assert_eq!(recv_text(&mut b).await, expected);
    assert_eq!(recv_text(&mut c).await, expected);

    // The sender gets nothing back: its next message is b's, not its own.
    send_text(&mut b, "from b").await;
    let from_b = format!(r#"{{"type":"message","from":{b_id},"text":"from b"}}"#);
    assert_eq!(recv_text(&mut a).await, from_b);
    assert_eq!(recv_text(&mut c).await, from_b);

    c.close(None).await.unwrap();
    for client in [&mut a, &mut b] {
        let leave = recv_text(client).await;
        assert_eq!(json_field(&leave, "type"), "\"leave\"");
        assert_eq!(json_field(&leave, "id"), c_id);
    }
    server.stop().await;
}

async fn chat_rooms_are_isolated_and_bad_names_refused(lang: Lang) {
    let server = lang.server().await;
    let mut red = connect(&server.url("/chat?room=red")).await;
    assert_eq!(json_field(&recv_text(&mut red).await, "room"), "\"red\"");
    let (mut blue, _) = join(&server, Some("blue")).await;
    let (mut red2, _) = join(&server, Some("red")).await;
    assert_eq!(json_field(&recv_text(&mut red).await, "type"), "\"join\"");
    send_text(&mut red, "only for red").await;
    assert!(recv_text(&mut red2).await.contains("only for red"));
    send_text(&mut blue, "only for blue").await;
    send_text(&mut red, "second for red").await;
    // Blue's message was sent first, yet red2 hears only its own room.
    assert!(recv_text(&mut red2).await.contains("second for red"));
    for bad in ["no%20spaces", "", &"x".repeat(65)] {
        let url = server.url(&format!("/chat?room={bad}"));
        assert_eq!(refusal(request(&url, &[])).await, Some(400), "{bad:?}");
    }
    server.stop().await;
}

/// One test per case and language, so a failure names both.
macro_rules! table {
    ($($case:ident),* $(,)?) => {
        mod rust {
            $(#[tokio::test] async fn $case() { super::$case(super::Lang::Rust).await })*
        }
        mod js {
            $(#[tokio::test] async fn $case() { super::$case(super::Lang::Js).await })*
        }
        mod python {
            $(#[tokio::test] async fn $case() { super::$case(super::Lang::Python).await })*
        }
    };
}

table!(
    echoes_text_binary_empty_large_and_utf8,
    echo_keeps_the_order_of_a_hundred_messages,
    echo_serves_each_connection_with_its_own_instance,
    chat_reaches_everyone_else_and_announces_joins_and_leaves,
    chat_rooms_are_isolated_and_bad_names_refused,
);

// Not JavaScript: its instance grows about 42 bytes per binary message echoed
// (4 MiB per 100,000, still growing after 400,000). That is not a copy of the
// message (1 KiB) but something smaller per message that the engine's heap
// keeps; README "What each language costs" tracks it.
#[tokio::test]
async fn rust_echo_memory_stays_flat_over_a_hundred_thousand_binary_messages() {
    echo_memory_stays_flat_over_a_hundred_thousand_binary_messages(Lang::Rust).await;
}

#[tokio::test]
async fn python_echo_memory_stays_flat_over_a_hundred_thousand_binary_messages() {
    echo_memory_stays_flat_over_a_hundred_thousand_binary_messages(Lang::Python).await;
}
