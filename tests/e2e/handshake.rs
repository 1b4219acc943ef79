//! The HTTP side: plain requests, the host's upgrade checks, and the plugin's
//! say in `on-connect`.

use crate::raw::{ACCEPT, RawClient, UPGRADE, await_healthz_200, http_get};
use crate::support::{
    TestServer, WAIT, connect, recv_text, refusal, request, send_text, try_connect,
};

const ROUTES: &str = r#"
[[route]]
path = "/auth"
plugin = "auth.wasm"

[[route]]
path = "/kit"
plugin = "testkit.wasm"
subprotocols = ["chat.v1", "chat.v2"]

[[route]]
path = "/partner"
plugin = "echo.wasm"
allowed-origins = ["https://example.com"]

[[route]]
path = "/open"
plugin = "echo.wasm"
allowed-origins = ["*"]
"#;

#[tokio::test]
async fn plain_http_gets_real_answers() {
    let server = TestServer::start(ROUTES).await;
    let (status, body) = http_get(server.addr, "/healthz", &[]).await;
    assert_eq!(status, 200);
    assert!(body.ends_with("ok\n"), "{body}");

    let (status, _) = http_get(server.addr, "/nowhere", &[]).await;
    assert_eq!(status, 404);
    let (status, _) = http_get(server.addr, "/nowhere", &UPGRADE).await;
    assert_eq!(status, 404);

    let (status, answer) = http_get(server.addr, "/auth", &[]).await;
    assert_eq!(status, 426);
    assert!(
        answer.to_lowercase().contains("upgrade: websocket"),
        "{answer}"
    );

    let mut bad_version = UPGRADE;
    bad_version[3] = "Sec-WebSocket-Version: 8";
    let (status, answer) = http_get(server.addr, "/open", &bad_version).await;
    assert_eq!(status, 426);
    assert!(
        answer.to_lowercase().contains("sec-websocket-version: 13"),
        "{answer}"
    );

    let mut bad_key = UPGRADE;
    bad_key[2] = "Sec-WebSocket-Key: short";
    let (status, _) = http_get(server.addr, "/open", &bad_key).await;
    assert_eq!(status, 400);

    // The raw upgrade itself works: 101 from the same helper.
    let (status, answer) = http_get(server.addr, "/open", &UPGRADE).await;
    assert_eq!(status, 101);
    assert!(answer.contains(ACCEPT), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn on_connect_can_reject_with_status_and_reason() {
    let server = TestServer::start(ROUTES).await;
    let refused = try_connect(request(&server.url("/auth"), &[])).await;
    assert_eq!(
        refused.err(),
        Some((401, "missing or wrong token".to_string()))
    );
    assert_eq!(
        refusal(request(&server.url("/auth?token=guess"), &[])).await,
        Some(401)
    );

    let mut client = connect(&server.url("/auth?token=let-me-in")).await;
    send_text(&mut client, "in").await;
    assert_eq!(recv_text(&mut client).await, "in");

    let refused = try_connect(request(&server.url("/kit?reject=429"), &[])).await;
    assert_eq!(
        refused.err(),
        Some((429, "rejected on request".to_string()))
    );
    // A status outside 400..=599 is a plugin fault, answered as 500.
    assert_eq!(
        refusal(request(&server.url("/kit?reject=200"), &[])).await,
        Some(500)
    );
    server.stop().await;
}

#[tokio::test]
async fn accepted_subprotocol_is_answered() {
    let server = TestServer::start(ROUTES).await;
    let offered = [("Sec-WebSocket-Protocol", "other, chat.v2, chat.v1")];
    let (_client, headers) = try_connect(request(&server.url("/kit"), &offered))
        .await
        .expect("accepted");
    assert_eq!(headers["sec-websocket-protocol"], "chat.v2");

    // Offers the route does not allow never reach the plugin, so it accepts
    // with none (checked raw: client libraries refuse such an answer).
    let mut upgrade = UPGRADE.to_vec();
    upgrade.push("Sec-WebSocket-Protocol: other");
    let (status, answer) = http_get(server.addr, "/kit", &upgrade).await;
    assert_eq!(status, 101);
    assert!(
        !answer.to_lowercase().contains("sec-websocket-protocol"),
        "{answer}"
    );
    server.stop().await;
}

#[tokio::test]
async fn origin_policy() {
    let server = TestServer::start(ROUTES).await;
    let partner = server.url("/partner");
    let evil = [("Origin", "https://evil.test")];
    assert_eq!(refusal(request(&partner, &evil)).await, Some(403));
    // Same-origin by default: /auth allows only its own origin.
    let auth = server.url("/auth?token=let-me-in");
    assert_eq!(refusal(request(&auth, &evil)).await, Some(403));
    let same = format!("http://{}", server.addr);
    assert!(
        try_connect(request(&auth, &[("Origin", &same)]))
            .await
            .is_ok()
    );
    // No Origin: not a browser, allowed.
    assert!(try_connect(request(&partner, &[])).await.is_ok());
    assert!(
        try_connect(request(&partner, &[("Origin", "https://example.com")]))
            .await
            .is_ok()
    );
    assert!(
        try_connect(request(&server.url("/open"), &evil))
            .await
            .is_ok()
    );
    server.stop().await;
}

#[tokio::test]
async fn connection_limit_and_handshake_deadline() {
    let routes = "max-connections = 2\nhandshake-timeout = \"300ms\"\n[[route]]\npath = \"/echo\"\nplugin = \"echo.wasm\"\n";
    let server = TestServer::start(routes).await;
    let mut first = connect(&server.url("/echo")).await;
    let _second = connect(&server.url("/echo")).await;
    let (status, _) = http_get(server.addr, "/healthz", &[]).await;
    assert_eq!(status, 503);
    // The open connections are unaffected.
    send_text(&mut first, "still served").await;
    assert_eq!(recv_text(&mut first).await, "still served");
    drop(first);

    // A socket that never sends its request head is closed after the deadline,
    // which also frees its slot.
    await_healthz_200(server.addr, "a closed connection's slot is freed").await;
    let mut idle = RawClient::open(server.addr).await;
    let read = tokio::time::timeout(WAIT, idle.rest()).await;
    assert!(read.is_ok(), "the server keeps an idle socket open");
    server.stop().await;
}
