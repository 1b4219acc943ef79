//! How connections end, and what the plugin hears about it: heartbeat
//! timeouts, client and plugin closes, oversized messages, slow consumers,
//! plugin faults, and the isolation of routes.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::{
    Client, TestServer, WAIT, ask, await_on_close, connect, echoes, expect_close, json_field,
    kit_client, recv, recv_text, send_text,
};

const ROUTES: &str = r#"
[[route]]
path = "/chat"
plugin = "chat.wasm"
ping-interval = "200ms"
pong-timeout = "300ms"

[[route]]
path = "/small"
plugin = "echo.wasm"
max-message-size = 1024

[[route]]
path = "/a"
plugin = "testkit.wasm"
call-timeout = "200ms"

[[route]]
path = "/b"
plugin = "testkit.wasm"

[[route]]
path = "/tiny-queue"
plugin = "testkit.wasm"
write-queue = 4

[[route]]
path = "/small-bytes"
plugin = "testkit.wasm"
max-message-size = 1024
write-queue-bytes = "64KiB"
"#;

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_dropped_and_on_close_runs() {
    let server = TestServer::start(ROUTES).await;
    let mut watcher = connect(&server.url("/chat")).await;
    recv_text(&mut watcher).await; // welcome
    let mut silent = connect(&server.url("/chat")).await;
    let welcome = recv_text(&mut silent).await;
    let silent_id = json_field(&welcome, "id").to_string();
    assert_eq!(
        json_field(&recv_text(&mut watcher).await, "type"),
        "\"join\""
    );

    // `silent` is never read again, so its client library never answers a
    // ping; the watcher keeps reading (and answering) while it waits.
    let leave = recv_text(&mut watcher).await;
    assert_eq!(json_field(&leave, "type"), "\"leave\"");
    assert_eq!(json_field(&leave, "id"), silent_id);
    assert_eq!(json_field(&leave, "code"), "1006");
    assert_eq!(json_field(&leave, "reason"), "\"heartbeat timeout\"");
    drop(silent);
    server.stop().await;
}

#[tokio::test]
async fn a_client_close_code_reaches_on_close() {
    let server = TestServer::start(ROUTES).await;
    let mut watcher = connect(&server.url("/chat")).await;
    recv_text(&mut watcher).await;
    let mut leaver = connect(&server.url("/chat")).await;
    recv_text(&mut leaver).await;
    recv_text(&mut watcher).await; // join
    let frame = CloseFrame {
        code: CloseCode::from(4000),
        reason: "bye".into(),
    };
    leaver.close(Some(frame)).await.unwrap();
    let leave = recv_text(&mut watcher).await;
    assert_eq!(json_field(&leave, "code"), "4000");
    assert_eq!(json_field(&leave, "reason"), "\"bye\"");
    server.stop().await;
}

#[tokio::test]
async fn a_plugin_close_reaches_the_client() {
    let server = TestServer::start(ROUTES).await;
    let mut client = connect(&server.url("/b")).await;
    send_text(&mut client, "close 4001 see you later").await;
    let frame = expect_close(&mut client).await;
    assert_eq!(u16::from(frame.code), 4001);
    assert_eq!(frame.reason.as_str(), "see you later");

    let mut client = connect(&server.url("/b")).await;
    assert_eq!(
        ask(&mut client, "close 1005 not sendable").await,
        "error invalid-code"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_message_closes_only_its_connection_with_1009() {
    let server = TestServer::start(ROUTES).await;
    let mut other = connect(&server.url("/small")).await;
    let mut big = connect(&server.url("/small")).await;
    big.send(Message::binary(vec![7u8; 2000])).await.unwrap();
    let frame = expect_close(&mut big).await;
    assert_eq!(frame.code, CloseCode::Size);

    echoes(&mut other, "still here").await;
    echoes(
        &mut connect(&server.url("/small")).await,
        "and new ones too",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_plugin_cannot_reach_another_routes_connection() {
    let server = TestServer::start(ROUTES).await;
    let (mut victim, victim_id) = kit_client(&server.url("/b")).await;

    let mut attacker = connect(&server.url("/a")).await;
    assert_eq!(
        ask(&mut attacker, &format!("send {victim_id} gotcha")).await,
        "error unknown-connection"
    );

    // Within its own route the same call works.
    let mut peer = connect(&server.url("/b")).await;
    let command = format!("send {victim_id} hello neighbour");
    assert_eq!(ask(&mut peer, &command).await, "sent");
    // The victim's next message is the neighbour's, so "gotcha" never arrived.
    assert_eq!(recv_text(&mut victim).await, "hello neighbour");
    server.stop().await;
}

#[tokio::test]
async fn a_runaway_or_trapping_plugin_call_is_stopped_and_the_route_keeps_serving() {
    let server = TestServer::start(ROUTES).await;
    let mut bystander = connect(&server.url("/a")).await;
    let mut client = connect(&server.url("/a")).await;
    send_text(&mut client, "spin").await;
    assert!(ask(&mut client, "whoami").await.starts_with("id "));
    send_text(&mut client, "panic").await;
    assert!(ask(&mut bystander, "whoami").await.starts_with("id "));
    server.stop().await;
}

/// Reads past binary messages, for at most `budget`, to the close frame;
/// returns it.
async fn close_past_binaries(client: &mut Client, budget: Duration) -> CloseFrame {
    let deadline = tokio::time::Instant::now() + budget;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no close frame");
        match recv(client).await {
            Message::Close(frame) => return frame.expect("close frame has a code"),
            Message::Binary(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_client_too_slow_for_its_queue_is_closed_with_1013() {
    let server = TestServer::start(ROUTES).await;
    let mut client = connect(&server.url("/tiny-queue")).await;
    // 20 MB in one call: more than the queue and the socket buffers hold.
    send_text(&mut client, "flood 20000 1024").await;
    let frame = close_past_binaries(&mut client, WAIT * 3).await;
    assert_eq!(frame.code, CloseCode::Again);
    assert_eq!(frame.reason.as_str(), "slow consumer");
    server.stop().await;
}

#[tokio::test]
async fn a_message_larger_than_write_queue_bytes_is_refused_and_the_client_stays() {
    let server = TestServer::start(ROUTES).await;
    let mut client = connect(&server.url("/small-bytes")).await;
    // One message over the whole bound: refused to the plugin, nothing queued.
    send_text(&mut client, "flood 1 70000").await;
    assert_eq!(recv_text(&mut client).await, "flood stopped: too-large");
    assert!(ask(&mut client, "whoami").await.starts_with("id "));
    let hits = crate::metrics::scrape(server.addr).await.value(
        "berth_plugin_limit_hits_total",
        &[("route", "/small-bytes"), ("limit", "write_queue_bytes")],
    );
    assert_eq!(hits, 1.0);
    // Many that fit one by one but not together: the client is too slow.
    send_text(&mut client, "flood 100 40000").await;
    let frame = close_past_binaries(&mut client, WAIT).await;
    assert_eq!(frame.code, CloseCode::Again);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_clients_with_1001() {
    let server = TestServer::start(ROUTES).await;
    let mut a = connect(&server.url("/b")).await;
    let mut b = connect(&server.url("/chat")).await;
    recv_text(&mut b).await;
    let stopping = tokio::spawn(server.stop());
    for client in [&mut a, &mut b] {
        assert_eq!(expect_close(client).await.code, CloseCode::Away);
        // The server ends the TCP connection after the close handshake.
        let end = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("ends");
        assert!(end.is_none() || end.is_some_and(|r| r.is_err()));
    }
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("stops")
        .unwrap();
}

#[tokio::test]
async fn on_close_runs_once_with_the_right_code_whatever_ends_the_connection() {
    let routes = r#"
[[route]]
path = "/kit"
plugin = "testkit.wasm"
max-message-size = 1024
ping-interval = "200ms"
pong-timeout = "300ms"
"#;
    let server = TestServer::start(routes).await;
    let url = server.url("/kit");

    let (mut client, id) = kit_client(&url).await;
    let frame = CloseFrame {
        code: CloseCode::from(4000),
        reason: "done".into(),
    };
    client.close(Some(frame)).await.unwrap();
    await_on_close(&url, &id, 4000).await;

    let (mut client, id) = kit_client(&url).await;
    send_text(&mut client, "close 4001 by plugin").await;
    expect_close(&mut client).await;
    await_on_close(&url, &id, 4001).await;

    let (mut client, id) = kit_client(&url).await;
    client.send(Message::binary(vec![0u8; 4096])).await.unwrap();
    assert_eq!(expect_close(&mut client).await.code, CloseCode::Size);
    await_on_close(&url, &id, 1009).await;

    // The client vanishes without a close frame.
    let (client, id) = kit_client(&url).await;
    drop(client);
    await_on_close(&url, &id, 1006).await;

    // The client stops answering pings.
    let (silent, id) = kit_client(&url).await;
    await_on_close(&url, &id, 1006).await;
    drop(silent);

    // Each connection was reported exactly once.
    let seen = ask(&mut connect(&url).await, "closes").await;
    let mut conns: Vec<&str> = seen
        .split(' ')
        .map(|c| c.split(':').next().unwrap())
        .collect();
    let total = conns.len();
    conns.sort();
    conns.dedup();
    assert_eq!(conns.len(), total, "an on-close ran twice: {seen}");
    server.stop().await;
}
