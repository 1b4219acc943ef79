//! Several berth nodes sharing topics through a real `redis-server`, and the
//! backend publish API. Each test starts its own Redis on a port of
//! 127.0.0.1 that the test holds for as long as it runs (no snapshots, no
//! append-only file), so that it can kill and restart it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use crate::metrics::{scrape, scrape_until};
use crate::raw::RawClient;
use crate::support::{
    BerthProcess, Client, Process, TestServer, WAIT, ask, ask_until, berth_command, connect,
    eventually, recv, recv_text, send_text,
};

/// A token the test nodes accept on the publish API.
const TOKEN: &str = "test-token-0123456789abcdef";

/// How the log names each of a node's two connections to Redis.
const SUBSCRIBE: &str = "connection=\"subscribe\"";
const PUBLISH: &str = "connection=\"publish\"";

/// A `redis-server` of this test's own, killed when dropped.
///
/// Redis cannot take port 0 and say which port it got, so the test picks
/// the port, and holds it: a socket bound there with `SO_REUSEADDR` and
/// never listening keeps every other program off the port for the whole
/// test (and, while Redis is down, connections to it are refused as if
/// nothing were there), while Redis, which binds with `SO_REUSEADDR` too,
/// can listen on it. No other program can take the port between the pick
/// and Redis, nor between a kill and a restart.
struct Redis {
    port: u16,
    _hold: TcpSocket,
    dir: tempfile::TempDir,
    process: Option<Process>,
}

impl Redis {
    /// A port held for Redis, with no Redis on it yet.
    fn reserve() -> Redis {
        let hold = TcpSocket::new_v4().expect("a socket");
        hold.set_reuseaddr(true).expect("SO_REUSEADDR");
        hold.bind(([127, 0, 0, 1], 0).into()).expect("a free port");
        Redis {
            port: hold.local_addr().expect("the bound address").port(),
            _hold: hold,
            dir: tempfile::tempdir().expect("a temporary folder"),
            process: None,
        }
    }

    /// Starts Redis on a port of its own and waits until it answers. A port
    /// that another program took all the same (one that picked it before
    /// this test held it) is given up for another, a few times.
    async fn start() -> Redis {
        let mut failures = Vec::new();
        for _ in 0..3 {
            let mut redis = Redis::reserve();
            match redis.try_spawn().await {
                Ok(()) => return redis,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("redis-server did not start:\n{}", failures.join("\n"));
    }

    /// Starts Redis on this one's port (again) and waits until it answers.
    async fn spawn(&mut self) {
        if let Err(failure) = self.try_spawn().await {
            panic!("{failure}");
        }
    }

    /// Starts Redis on this one's port and waits until it answers, or until
    /// it ends without answering (the port was taken after all): then `Err`
    /// with its log.
    async fn try_spawn(&mut self) -> Result<(), String> {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--logfile", "/dev/stderr"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null());
        let process = Process::try_spawn(command).unwrap_or_else(|e| {
            panic!(
                "cannot start redis-server ({e}); these tests need it on PATH: \
                 apt-get install redis-server"
            )
        });
        let process = self.process.insert(process);
        let (port, pid) = (self.port, process.pid());
        // This Redis, not another on the port: the one whose process id it says.
        let ours = format!("process_id:{pid}\r\n");
        let what = format!("redis-server answers on port {port}, or ends");
        let answered = eventually(WAIT, &what, async || {
            if !process.running() {
                return Ok(false);
            }
            match command_to(port, &["INFO", "server"]).await {
                Ok(reply) if reply.contains(&ours) => Ok(true),
                Ok(reply) => Err(format!("reply {reply:?}")),
                Err(error) => Err(error.to_string()),
            }
        })
        .await;
        if answered {
            Ok(())
        } else {
            process.exited().await;
            let log = process.log();
            self.process = None;
            Err(format!("redis-server ended on port {port}:\n{log}"))
        }
    }

    /// Kills Redis with SIGKILL, as a crash would.
    fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Waits until `channel` has `count` subscribers in Redis: a node
    /// subscribes there one round trip after its first local subscriber.
    async fn await_subscribers(&self, channel: &str, count: i64) {
        let what = format!("{channel} has {count} subscribers in Redis");
        eventually(WAIT, &what, async || {
            let reply = command_to(self.port, &["PUBSUB", "NUMSUB", channel])
                .await
                .expect("redis answers");
            let now: i64 = reply
                .rsplit(':')
                .next()
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("no count in {reply:?}"));
            if now == count {
                Ok(())
            } else {
                Err(format!("{now}"))
            }
        })
        .await
    }
}

/// Sends one command to Redis in its wire format and returns the raw reply.
async fn command_to(port: u16, args: &[&str]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes()).await?;
    let mut reply = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, stream.read(&mut reply))
        .await
        .map_err(|_| std::io::Error::other("no reply in time"))??;
    Ok(String::from_utf8_lossy(&reply[..n]).into_owned())
}

/// Writes a node's config into `dir`: the testkit at `/kit` in the shared
/// namespace `shared`, at `/room` (namespace `/room`) and at `/hist` (with
/// history and a small key quota), topics and state through `redis_url`, and
/// `extra` appended to `[broker]`.
fn node_config(dir: &Path, name: &str, redis_url: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"listen = "127.0.0.1:0"
plugin-dir = {plugins:?}
state-dir = "{name}-state"
presence-ttl = "2s"

[broker]
url = "{redis_url}"
{extra}

[publish-api]
tokens = ["{TOKEN}"]
max-body = "1KiB"

[[route]]
path = "/kit"
plugin = "testkit.wasm"
namespace = "shared"

[[route]]
path = "/room"
plugin = "testkit.wasm"

[[route]]
path = "/hist"
plugin = "testkit.wasm"
history-size = 100
store-keys = 20
"#,
            plugins = berth::demo::BUILT_PLUGIN_DIR,
        ),
    )
    .expect("write the config");
    path
}

/// Three berth nodes on one Redis.
struct Cluster {
    redis: Redis,
    nodes: Vec<BerthProcess>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let redis = Redis::start().await;
        let dir = tempfile::tempdir().expect("a temporary folder");
        let nodes = (0..3)
            .map(|n| {
                let config = node_config(dir.path(), &format!("node{n}"), &redis.url(), "");
                BerthProcess::start(&["--config", config.to_str().unwrap()])
            })
            .collect();
        Cluster {
            redis,
            nodes,
            _dir: dir,
        }
    }
}

/// `per_node` testkit clients on each node's `path`, all subscribed to `topic`.
async fn subscribe_all(
    nodes: &[BerthProcess],
    path: &str,
    topic: &str,
    per_node: usize,
) -> Vec<Vec<Client>> {
    let mut all = Vec::new();
    for node in nodes {
        let mut mine = Vec::new();
        for _ in 0..per_node {
            let mut client = connect(&node.url(path)).await;
            assert_eq!(
                ask(&mut client, &format!("subscribe {topic}")).await,
                "subscribed"
            );
            mine.push(client);
        }
        all.push(mine);
    }
    all
}

/// Reads `count` messages and returns them in arrival order.
async fn take_texts(client: &mut Client, count: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(count);
    for _ in 0..count {
        got.push(recv_text(client).await);
    }
    got
}

/// Publisher `n` publishes `{prefix}{n}` to `topic`; then every subscriber
/// must get exactly those, one from each publisher, and nothing else first.
async fn each_publishes_and_all_receive(
    publishers: &mut [Client],
    subscribers: &mut [Vec<Client>],
    topic: &str,
    prefix: &str,
) {
    for (n, publisher) in publishers.iter_mut().enumerate() {
        assert!(
            ask(publisher, &format!("publish {topic} {prefix}{n}"))
                .await
                .starts_with("published ")
        );
    }
    let expected: Vec<String> = (0..publishers.len())
        .map(|n| format!("{prefix}{n}"))
        .collect();
    for clients in subscribers.iter_mut() {
        for client in clients {
            let mut got = take_texts(client, publishers.len()).await;
            got.sort();
            assert_eq!(got, expected, "exactly once");
        }
    }
}

#[tokio::test]
async fn every_subscriber_on_every_node_gets_every_publish_once_and_in_order() {
    const PER_PUBLISHER: usize = 40;
    let cluster = Cluster::start().await;
    let mut subscribers = subscribe_all(&cluster.nodes, "/kit", "news", 10).await;
    cluster
        .redis
        .await_subscribers("berth:shared:news", 3)
        .await;

    // One publisher per node, each with its own range of numbers.
    let mut publishers = Vec::new();
    for node in &cluster.nodes {
        publishers.push(connect(&node.url("/kit")).await);
    }
    for (n, publisher) in publishers.iter_mut().enumerate() {
        let from = n * 1000;
        send_text(
            publisher,
            &format!("publish-many news {from} {PER_PUBLISHER} 0"),
        )
        .await;
    }
    for publisher in &mut publishers {
        assert_eq!(recv_text(publisher).await, "published");
    }
    for (node, clients) in subscribers.iter_mut().enumerate() {
        for client in clients {
            let got = take_texts(client, 3 * PER_PUBLISHER).await;
            // Per publisher: every number once, in the order published.
            let mut by_publisher: HashMap<usize, Vec<usize>> = HashMap::new();
            for text in &got {
                let number: usize = text
                    .trim_end_matches('|')
                    .parse()
                    .unwrap_or_else(|_| panic!("unexpected message {text:?}"));
                by_publisher
                    .entry(number / 1000)
                    .or_default()
                    .push(number % 1000);
            }
            for publisher in 0..3 {
                assert_eq!(
                    by_publisher.get(&publisher).map(Vec::as_slice),
                    Some((0..PER_PUBLISHER).collect::<Vec<_>>().as_slice()),
                    "node {node}'s subscriber, publisher {publisher}: {got:?}"
                );
            }
        }
    }
    // Everybody has everything. A duplicate of an earlier message could
    // still be on its way back from Redis, but each node's marker below is
    // published after every node had everything, so Redis hands it out after
    // every earlier message: a duplicate would arrive before the markers.
    each_publishes_and_all_receive(&mut publishers, &mut subscribers, "news", "end").await;
}

#[tokio::test]
async fn a_node_never_delivers_its_own_publish_twice() {
    let cluster = Cluster::start().await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut near = connect(&a.url("/kit")).await;
    assert_eq!(ask(&mut near, "subscribe echo").await, "subscribed");
    let mut far = connect(&b.url("/kit")).await;
    assert_eq!(ask(&mut far, "subscribe echo").await, "subscribed");
    cluster
        .redis
        .await_subscribers("berth:shared:echo", 2)
        .await;

    let mut publisher = connect(&a.url("/kit")).await;
    // Counted on the publishing node only.
    assert_eq!(
        ask(&mut publisher, "publish echo once").await,
        "published 1"
    );
    assert_eq!(recv_text(&mut far).await, "once");
    // Node b heard "once" from Redis, so Redis had already handed node a
    // its own copy back: node a sees the barrier after that copy.
    let mut barrier = connect(&b.url("/kit")).await;
    assert_eq!(
        ask(&mut barrier, "publish echo barrier").await,
        "published 1"
    );
    assert_eq!(recv_text(&mut near).await, "once");
    assert_eq!(
        recv_text(&mut near).await,
        "barrier",
        "node a delivered its own publish twice"
    );
    assert_eq!(recv_text(&mut far).await, "barrier");
}

#[tokio::test]
async fn delivery_resumes_after_redis_is_killed_and_restarted() {
    let mut cluster = Cluster::start().await;
    let mut subscribers = subscribe_all(&cluster.nodes, "/kit", "live", 2).await;
    cluster
        .redis
        .await_subscribers("berth:shared:live", 3)
        .await;
    let mut publishers = Vec::new();
    for node in &cluster.nodes {
        publishers.push(connect(&node.url("/kit")).await);
    }
    assert!(
        ask(&mut publishers[0], "publish live before")
            .await
            .starts_with("published ")
    );
    for clients in &mut subscribers {
        for client in clients {
            assert_eq!(recv_text(client).await, "before");
        }
    }

    cluster.redis.kill();
    for node in &cluster.nodes {
        node.wait_log(&["redis disconnected", SUBSCRIBE]).await;
        node.wait_log(&["redis disconnected", PUBLISH]).await;
    }
    // During the outage a publish reaches its own node's subscribers only.
    assert_eq!(
        ask(&mut publishers[0], "publish live during").await,
        "published 2"
    );
    for client in &mut subscribers[0] {
        assert_eq!(recv_text(client).await, "during");
    }

    cluster.redis.spawn().await;
    for node in &cluster.nodes {
        let line = node.wait_log(&["redis reconnected", SUBSCRIBE]).await;
        assert!(line.contains("resubscribed to 1 channels"), "{line}");
        node.wait_log(&["redis reconnected", PUBLISH]).await;
    }
    cluster
        .redis
        .await_subscribers("berth:shared:live", 3)
        .await;
    // Nobody gets "during" now: it was never sent to Redis.
    each_publishes_and_all_receive(&mut publishers, &mut subscribers, "live", "after").await;

    // Node 0 sent "before" and "after0", received the other two "after"s,
    // and kept "during" to itself; both of its connections came back once.
    let broker = |name: &str| format!("berth_broker_{name}");
    // A publish is counted as sent once Redis has answered it, which can be
    // after the other nodes have delivered it: wait for both counts.
    let scrape = scrape_until(cluster.nodes[0].addr, "two received and two sent", |s| {
        s.value(&broker("received_total"), &[]) == 2.0 && s.value(&broker("sent_total"), &[]) == 2.0
    })
    .await;
    for (name, labels, expected) in [
        ("sent_total", &[][..], 2.0),
        ("unsent_total", &[("reason", "unreachable")][..], 1.0),
        ("unsent_total", &[("reason", "queue_full")][..], 0.0),
        ("foreign_total", &[][..], 0.0),
        ("connected", &[("connection", "publish")][..], 1.0),
        ("connected", &[("connection", "subscribe")][..], 1.0),
        ("reconnects_total", &[("connection", "publish")][..], 1.0),
        ("reconnects_total", &[("connection", "subscribe")][..], 1.0),
    ] {
        assert_eq!(
            scrape.value(&broker(name), labels),
            expected,
            "{name}{labels:?}"
        );
    }
}

#[tokio::test]
async fn without_redis_startup_fails_in_one_line_unless_redis_is_optional() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    // The port is held, with no Redis on it until the end.
    let mut redis = Redis::reserve();
    let url = redis.url();

    let config = node_config(dir.path(), "required", &url, "");
    let mut command = berth_command();
    command
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped());
    let mut berth = Process::spawn(command);
    let status = berth.exited().await;
    let stderr = berth.log();
    assert!(!status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    assert!(
        line.contains(&format!("cannot reach Redis at {url}")) && line.contains("required = false"),
        "{line}"
    );

    let config = node_config(dir.path(), "optional", &url, "required = false");
    let node = BerthProcess::start(&["--config", config.to_str().unwrap()]);
    node.wait_log(&["cannot reach Redis", "serving local topics only"])
        .await;
    let mut subscriber = connect(&node.url("/kit")).await;
    assert_eq!(ask(&mut subscriber, "subscribe t").await, "subscribed");
    let mut publisher = connect(&node.url("/kit")).await;
    assert_eq!(ask(&mut publisher, "publish t local").await, "published 1");
    assert_eq!(recv_text(&mut subscriber).await, "local");

    // It keeps trying: once Redis is there, it subscribes there too.
    redis.spawn().await;
    let line = node.wait_log(&["redis connected", SUBSCRIBE]).await;
    assert!(line.contains("resubscribed to 1 channels"), "{line}");
    redis.await_subscribers("berth:shared:t", 1).await;
}

/// One HTTP/1.1 request on a fresh socket; returns the status, the head
/// (lower-case) and the body.
async fn http(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut request = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n");
    if !head.contains("Transfer-Encoding") {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut client = RawClient::open(addr).await;
    client.write(request.as_bytes()).await.expect("write");
    // The server may answer (413) before reading all of it.
    let _ = client.write(body).await;
    let answer = client.answer(false).await;
    (answer.status, answer.head.to_ascii_lowercase(), answer.body)
}

/// A POST to the publish API with `token` (if any), `content_type` and `body`.
pub(crate) async fn post(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut head = format!("POST {path} HTTP/1.1\r\nContent-Type: {content_type}");
    if let Some(token) = token {
        head.push_str(&format!("\r\nAuthorization: Bearer {token}"));
    }
    http(addr, &head, body).await
}

#[tokio::test]
async fn the_publish_api_reaches_subscribers_on_every_node() {
    let cluster = Cluster::start().await;
    let mut subscribers = subscribe_all(&cluster.nodes, "/kit", "alerts", 2).await;
    let mut room = subscribe_all(&cluster.nodes, "/room", "lobby", 1).await;
    cluster
        .redis
        .await_subscribers("berth:shared:alerts", 3)
        .await;
    cluster
        .redis
        .await_subscribers("berth:/room:lobby", 3)
        .await;
    let addr = cluster.nodes[1].addr;
    let path = "/publish/shared/alerts";

    let (status, head, _) = post(addr, path, None, "text/plain", b"x").await;
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    let (status, head, _) = post(
        addr,
        path,
        Some("wrong-token-0123456789"),
        "text/plain",
        b"x",
    )
    .await;
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    assert!(head.contains("invalid_token"), "{head}");

    let big = vec![b'a'; 1025];
    assert_eq!(
        post(addr, path, Some(TOKEN), "text/plain", &big).await.0,
        413
    );
    // Without a Content-Length, the limit holds as the body streams in.
    let chunked = format!(
        "POST {path} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked"
    );
    let mut body = Vec::new();
    for _ in 0..4 {
        body.extend_from_slice(b"200\r\n");
        body.extend_from_slice(&[b'b'; 0x200]);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(http(addr, &chunked, &body).await.0, 413);

    assert_eq!(
        post(
            addr,
            "/publish/nowhere/alerts",
            Some(TOKEN),
            "text/plain",
            b"x"
        )
        .await
        .0,
        404
    );
    assert_eq!(
        post(addr, "/publish/shared", Some(TOKEN), "text/plain", b"x")
            .await
            .0,
        404
    );
    let (status, head, _) = http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}"),
        b"",
    )
    .await;
    assert_eq!(status, 405);
    assert!(head.contains("allow: post"), "{head}");
    assert_eq!(
        post(addr, path, Some(TOKEN), "text/plain", b"\xff\xfe")
            .await
            .0,
        400
    );
    assert_eq!(
        post(
            addr,
            path,
            Some(TOKEN),
            "application/json",
            b"{\"a\":\"\xc3\x28\"}"
        )
        .await
        .0,
        400
    );

    // Text, then binary, then JSON (text): on every node, in order.
    let (status, _, answer) = post(
        addr,
        path,
        Some(TOKEN),
        "text/plain; charset=utf-8",
        "héllo".as_bytes(),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        String::from_utf8_lossy(&answer).trim(),
        "{\"local_subscribers\":2}"
    );
    let (status, _, _) = post(
        addr,
        path,
        Some(TOKEN),
        "application/octet-stream",
        b"\x00\x01\xff",
    )
    .await;
    assert_eq!(status, 202);
    let (status, _, _) = post(addr, path, Some(TOKEN), "application/json", b"{\"n\":1}").await;
    assert_eq!(status, 202);
    for clients in &mut subscribers {
        for client in clients {
            assert_eq!(recv_text(client).await, "héllo");
            assert_eq!(recv(client).await, Message::binary(vec![0u8, 1, 255]));
            assert_eq!(recv_text(client).await, "{\"n\":1}");
        }
    }

    // Node 1 counted every answer above by its status.
    let counted = scrape(addr).await;
    for (status, expected) in [
        ("202", 3.0),
        ("400", 2.0),
        ("401", 2.0),
        ("404", 2.0),
        ("405", 1.0),
        ("413", 2.0),
    ] {
        assert_eq!(
            counted.value("berth_publish_requests_total", &[("status", status)]),
            expected,
            "status {status}"
        );
    }

    // A route path's namespace, "/room", is written without its slash.
    let (status, _, answer) = post(
        cluster.nodes[2].addr,
        "/publish/room/lobby",
        Some(TOKEN),
        "text/plain",
        b"hi room",
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        String::from_utf8_lossy(&answer).trim(),
        "{\"local_subscribers\":1}"
    );
    for clients in &mut room {
        for client in clients {
            assert_eq!(recv_text(client).await, "hi room");
        }
    }
    // Nothing else arrived: the next message is the answer to this.
    for clients in subscribers.iter_mut().chain(room.iter_mut()) {
        for client in clients {
            assert!(ask(client, "whoami").await.starts_with("id "));
            client.send(Message::Close(None)).await.unwrap();
        }
    }
}

#[tokio::test]
async fn the_publish_api_is_off_without_tokens_and_its_paths_are_reserved() {
    let server = TestServer::start("[[route]]\npath = \"/kit\"\nplugin = \"testkit.wasm\"\n").await;
    let (status, _, _) = post(
        server.addr,
        "/publish/kit/t",
        Some(TOKEN),
        "text/plain",
        b"x",
    )
    .await;
    assert_eq!(status, 404);
    server.stop().await;

    let config = crate::support::config_text(
        "[[route]]\npath = \"/publish/x\"\nplugin = \"testkit.wasm\"\n",
    );
    let error = berth::Config::from_toml(&config, Path::new("test.toml"), Path::new("/"))
        .expect_err("a route under /publish/ is refused")
        .to_string();
    assert!(error.contains("answered by berth itself"), "{error}");
}

#[tokio::test]
async fn history_members_and_keys_are_the_same_on_every_node() {
    let mut cluster = Cluster::start().await;
    let url = |n: usize| cluster.nodes[n].url("/hist");
    let (mut a, mut b, mut c) = (
        connect(&url(0)).await,
        connect(&url(1)).await,
        connect(&url(2)).await,
    );

    // History written through node A is read through node C.
    let mut positions = Vec::new();
    for i in 1..=5 {
        let answer = ask(&mut a, &format!("publish news m{i}")).await;
        let (_, position) = answer.rsplit_once(" at ").expect("a position");
        positions.push(position.to_string());
    }
    assert_eq!(
        ask(&mut c, &format!("history news {} 10", positions[1])).await,
        format!("history last={} 3:m3 4:m4 5:m5", positions[4])
    );
    assert_eq!(
        ask(&mut b, "history news - 2").await,
        format!("history last={} 4:m4 5:m5", positions[4])
    );
    let (epoch, _) = positions[0].split_once('-').unwrap();
    let stale = format!("{:016x}-2", u64::from_str_radix(epoch, 16).unwrap() ^ 1);
    assert_eq!(
        ask(&mut b, &format!("history news {stale} 10")).await,
        "history error lost"
    );

    // One store of keys, one quota, for the namespace on every node.
    assert_eq!(ask(&mut b, "set k v").await, "set ok");
    assert_eq!(ask(&mut c, "get k").await, "value v");
    assert_eq!(ask(&mut a, "incr n 2").await, "incr 2");
    assert_eq!(ask(&mut c, "incr n -5").await, "incr -3");
    assert_eq!(ask(&mut a, "incr k 1").await, "error not-a-number");
    assert_eq!(ask(&mut a, "cas k v w").await, "cas true");
    assert_eq!(ask(&mut c, "cas k v x").await, "cas false");
    assert_eq!(ask(&mut b, "get k").await, "value w");
    assert_eq!(ask(&mut a, "fill q 30 4").await, "filled 18, then quota");
    assert_eq!(ask(&mut c, "set one-more v").await, "error quota");
    assert_eq!(ask(&mut b, "del q0").await, "deleted true");
    assert_eq!(ask(&mut c, "set one-more v").await, "set ok");
    assert_eq!(ask(&mut b, "del q1").await, "deleted true");
    assert_eq!(ask(&mut b, "set brief x 200").await, "set ok");
    ask_until(&mut c, "get brief", |v| v == "value none").await;
    // The expired key gave its place back: the namespace holds 20 keys again.
    assert_eq!(ask(&mut a, "set after-expiry v").await, "set ok");
    assert_eq!(ask(&mut a, "set too-many v").await, "error quota");

    // Members of every node, one per node.
    let mut members = Vec::new();
    for n in 0..3 {
        let mut member = connect(&url(n)).await;
        assert_eq!(
            ask(&mut member, &format!("subscribe-as room n{n}")).await,
            "subscribed"
        );
        members.push(member);
    }
    ask_until(&mut c, "members room 10", |m| m == "members 3 n0 n1 n2").await;
    ask_until(&mut a, "count room", |m| m == "count 3").await;
    // A member that leaves is gone at once; a node that dies, within presence-ttl.
    drop(members.remove(0));
    ask_until(&mut b, "members room 10", |m| m == "members 2 n1 n2").await;
    cluster.nodes[1].kill();
    ask_until(&mut c, "members room 10", |m| m == "members 1 n2").await;

    // Without Redis, state calls answer unavailable within state-timeout,
    // and the route goes on serving.
    cluster.redis.kill();
    assert_eq!(ask(&mut c, "get k").await, "error unavailable");
    assert_eq!(
        ask(&mut c, "history news - 2").await,
        "history error unavailable"
    );
    assert_eq!(
        ask(&mut c, "publish news x").await,
        "publish failed: not-stored"
    );
    assert!(ask(&mut c, "whoami").await.starts_with("id "));
}
