//! Outbound HTTP from a Python plugin: the fetcher plugin
//! (`plugins/python/src/fetcher.py`) against a backend of the test's own on
//! loopback, through the SDK's `fetch` callbacks and a handshake held
//! pending until the backend answers.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{
    TestServer, connect, guest_plugin, recv_text, request, send_text, try_connect,
};

/// Starts a loopback HTTP/1.1 backend: `/ok` answers 200 "hello", `/no` 403
/// "no", `/hangup` closes the connection without an answer, and anything
/// else is 404. It serves until the test's runtime ends.
async fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream));
        }
    });
    addr
}

/// Reads one request's head and answers it, one request per connection.
async fn answer(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let (status, body) = match head.split(' ').nth(1).unwrap_or_default() {
        "/ok" => ("200 OK", "hello"),
        "/no" => ("403 Forbidden", "no"),
        "/hangup" => return,
        _ => ("404 Not Found", "not found"),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A server with the Python fetcher plugin at `/fetch` (one instance for the
/// route) and `/fetch-conn` (one per connection), granted `backend` only.
async fn server(backend: SocketAddr) -> TestServer {
    let plugin = guest_plugin("python", "fetcher").display().to_string();
    TestServer::start(&format!(
        r#"
[[route]]
path = "/fetch"
plugin = {plugin:?}
allowed-outbound = ["http://{backend}"]

[[route]]
path = "/fetch-conn"
plugin = {plugin:?}
instance = "connection"
allowed-outbound = ["http://{backend}"]
"#
    ))
    .await
}

/// `text` percent-encoded for a query value: everything but RFC 3986's
/// unreserved characters.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn a_python_plugin_fetches_granted_urls_and_is_refused_the_rest() {
    let backend = backend().await;
    // Bound and kept, so that nothing else listens there: a grant is all
    // that is missing.
    let ungranted = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ungranted = ungranted.local_addr().unwrap();
    let server = server(backend).await;
    for path in ["/fetch", "/fetch-conn"] {
        let mut client = connect(&server.url(path)).await;
        let cases = [
            (format!("http://{backend}/ok"), "200 hello"),
            (format!("http://{backend}/no"), "403 no"),
            // Sent, and no answer came: the callback gets the failure.
            (format!("http://{backend}/hangup"), "error failed"),
            // Refused before anything is sent: fetch itself raises.
            (format!("http://{ungranted}/ok"), "error not-allowed"),
            ("not a url".to_string(), "error invalid-request"),
        ];
        for (url, expected) in cases {
            send_text(&mut client, &url).await;
            assert_eq!(recv_text(&mut client).await, expected, "{path} {url}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_python_plugin_holds_a_handshake_until_its_backend_answers() {
    let backend = backend().await;
    let server = server(backend).await;
    let check = |path: &str| {
        let url = format!("http://{backend}{path}");
        server.url(&format!("/fetch?check={}", percent_encoded(&url)))
    };

    // A 200 opens the connection, which then works as any other.
    let (mut client, _) = try_connect(request(&check("/ok"), &[]))
        .await
        .expect("a check answered 200 is accepted");
    send_text(&mut client, &format!("http://{backend}/ok")).await;
    assert_eq!(recv_text(&mut client).await, "200 hello");

    // Another status refuses it with that status.
    let refused = try_connect(request(&check("/no"), &[])).await.err();
    assert_eq!(refused, Some((403, "denied".to_string())));

    // No response at all refuses it with 502 and the reason.
    let refused = try_connect(request(&check("/hangup"), &[])).await.err();
    assert_eq!(refused, Some((502, "failed".to_string())));
    server.stop().await;
}
