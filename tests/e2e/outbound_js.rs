//! Outbound HTTP from a JavaScript plugin (`plugins/js/src/fetcher.js`): the
//! SDK's `fetch` against a backend on loopback that the route was granted,
//! both from a message handler and from an `async onConnect`, which answers
//! the upgrade only once the backend has.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::support::{
    TestServer, connect, guest_plugin, recv_text, request, send_text, try_connect,
};

/// A backend that answers HTTP/1.1 by hand: `/ok` is 200 "hello", `/no` is
/// 403, anything else 404. One request per connection, which it closes.
struct Backend {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Backend {
    async fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream));
            }
        });
        Backend { addr, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    // The requests carry no body, so the head is all there is to read.
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or("");
    let (status, body) = match path {
        "/ok" => ("200 OK", "hello"),
        "/no" => ("403 Forbidden", "go away"),
        _ => ("404 Not Found", "no such page"),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The fetcher on `/fetch` (one instance for the route) and `/fetch-conn`
/// (one per connection), both granted `backend` and nothing else.
async fn server(backend: &Backend) -> TestServer {
    let plugin = guest_plugin("js", "fetcher");
    let grant = format!("http://{}", backend.addr);
    TestServer::start(&format!(
        r#"
[[route]]
path = "/fetch"
plugin = {plugin:?}
allowed-outbound = [{grant:?}]

[[route]]
path = "/fetch-conn"
plugin = {plugin:?}
instance = "connection"
allowed-outbound = [{grant:?}]
"#
    ))
    .await
}

/// `s` percent-encoded for a query value.
fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn js_fetch_answers_a_message_with_the_backends_response() {
    let backend = Backend::start().await;
    let server = server(&backend).await;
    let mut client = connect(&server.url("/fetch")).await;

    send_text(&mut client, &backend.url("/ok")).await;
    assert_eq!(recv_text(&mut client).await, "200 hello");
    send_text(&mut client, &backend.url("/no")).await;
    assert_eq!(recv_text(&mut client).await, "403 go away");

    // Berth's own port is not granted: nothing is sent, and the promise
    // rejects with the reason.
    let ungranted = format!("http://{}/ok", server.addr);
    send_text(&mut client, &ungranted).await;
    assert_eq!(recv_text(&mut client).await, "error not-allowed");

    // The instance is still in good shape after a rejected request.
    send_text(&mut client, &backend.url("/ok")).await;
    assert_eq!(recv_text(&mut client).await, "200 hello");
    server.stop().await;
}

#[tokio::test]
async fn js_async_on_connect_answers_once_the_backend_has() {
    let backend = Backend::start().await;
    let server = server(&backend).await;
    let check = |route: &str, url: &str| {
        request(
            &server.url(&format!("{route}?check={}", query_value(url))),
            &[],
        )
    };

    for route in ["/fetch", "/fetch-conn"] {
        // Accepted after the backend's 200, and open for messages.
        let (mut client, _) = try_connect(check(route, &backend.url("/ok")))
            .await
            .unwrap_or_else(|(status, body)| panic!("{route}: refused {status} {body}"));
        send_text(&mut client, &backend.url("/ok")).await;
        assert_eq!(recv_text(&mut client).await, "200 hello", "{route}");

        // Refused with the backend's status.
        let refused = try_connect(check(route, &backend.url("/no"))).await.err();
        assert_eq!(refused, Some((403, "denied".to_string())), "{route}");
    }

    // No response at all: 502, with the reason in the body.
    let ungranted = format!("http://{}/ok", server.addr);
    let refused = try_connect(check("/fetch", &ungranted)).await.err();
    assert_eq!(refused, Some((502, "not-allowed".to_string())));

    // Without `check` the hook answers at once, with nothing to wait for.
    let mut client = connect(&server.url("/fetch")).await;
    send_text(&mut client, &backend.url("/missing")).await;
    assert_eq!(recv_text(&mut client).await, "404 no such page");
    server.stop().await;
}
