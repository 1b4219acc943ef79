//! Outbound HTTP from a Python plugin: the fetcher plugin
//! (`plugins/python/src/fetcher.py`) against the loopback backend of
//! `backend.rs`, through the SDK's `fetch` callbacks, the `FetchError` it
//! raises for a request refused before sending, and a handshake held
//! pending until the backend answers.

use std::net::SocketAddr;

use crate::backend::{Backend, encoded};
use crate::support::{
    TestServer, connect, guest_plugin, recv_text, request, send_text, try_connect,
};

/// A server with the Python fetcher plugin at `/fetch` (one instance for the
/// route) and `/fetch-conn` (one per connection), both granted `backend`
/// and `closed` (where nothing listens).
async fn server(backend: &Backend, closed: SocketAddr) -> TestServer {
    let plugin = guest_plugin("python", "fetcher").display().to_string();
    let grants = format!("[\"{}\", \"http://{closed}\"]", backend.grant());
    TestServer::start(&format!(
        r#"
[[route]]
path = "/fetch"
plugin = {plugin:?}
allowed-outbound = {grants}

[[route]]
path = "/fetch-conn"
plugin = {plugin:?}
instance = "connection"
allowed-outbound = {grants}
"#
    ))
    .await
}

/// A port that was free a moment ago: nothing listens there.
fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test]
async fn a_python_plugin_fetches_granted_urls_and_is_refused_the_rest() {
    let backend = Backend::start().await;
    let stranger = Backend::start().await;
    let closed = closed_port();
    let server = server(&backend, closed).await;
    for path in ["/fetch", "/fetch-conn"] {
        let mut client = connect(&server.url(path)).await;
        let cases = [
            (backend.url("/ok"), "200 hello"),
            (backend.url("/verify?token=bad"), "403 bad token"),
            // Sent, and no answer came: the callback gets the FetchError.
            (format!("http://{closed}/"), "error connect-failed"),
            // Refused before anything is sent: fetch itself raises it.
            (stranger.url("/ok"), "error not-allowed"),
            ("not a url".to_string(), "error invalid-request"),
        ];
        for (url, expected) in cases {
            send_text(&mut client, &url).await;
            assert_eq!(recv_text(&mut client).await, expected, "{path} {url}");
        }
    }
    assert_eq!(stranger.requests(), 0, "the ungranted backend was reached");
    server.stop().await;
}

#[tokio::test]
async fn a_python_plugin_holds_a_handshake_until_its_backend_answers() {
    let backend = Backend::start().await;
    let closed = closed_port();
    let server = server(&backend, closed).await;
    let check = |url: &str| request(&server.url(&format!("/fetch?check={}", encoded(url))), &[]);

    // A 200 opens the connection, which then works as any other.
    let (mut client, _) = try_connect(check(&backend.url("/ok")))
        .await
        .expect("a check answered 200 is accepted");
    send_text(&mut client, &backend.url("/ok")).await;
    assert_eq!(recv_text(&mut client).await, "200 hello");

    // Another status refuses it with that status.
    let refused = try_connect(check(&backend.url("/verify?token=bad"))).await;
    assert_eq!(refused.err(), Some((403, "denied".to_string())));

    // No response at all refuses it with 502 and the error's kind.
    let refused = try_connect(check(&format!("http://{closed}/"))).await;
    assert_eq!(refused.err(), Some((502, "connect-failed".to_string())));
    server.stop().await;
}
