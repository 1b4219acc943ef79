//! The echo plugin through the whole stack: text stays text, binary stays binary.

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{TestServer, connect, recv};

const ROUTES: &str = r#"
[[route]]
path = "/echo"
plugin = "echo.wasm"
max-message-size = 2097152
"#;

#[tokio::test]
async fn echoes_text_binary_empty_large_and_utf8() {
    let server = TestServer::start(ROUTES).await;
    let mut client = connect(&server.url("/echo")).await;
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let cases = [
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::text(""),
        Message::binary(Vec::<u8>::new()),
        Message::text("héllo wörld — 日本語 🚀"),
        Message::binary(big),
        Message::text("x".repeat(1024 * 1024)),
    ];
    for case in cases {
        client.send(case.clone()).await.unwrap();
        assert_eq!(recv(&mut client).await, case);
    }
    server.stop().await;
}

#[tokio::test]
async fn keeps_order_of_a_hundred_messages() {
    let server = TestServer::start(ROUTES).await;
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
