//! Helpers: a real berth server on 127.0.0.1 port 0, real WebSocket clients,
//! raw HTTP requests, and the real `berth` binary. Every wait is bounded.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use berth::{Config, Server};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, Request};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The longest any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A WebSocket client connection.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A berth server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// The config text for a test server: port 0, the built plugins, then `routes`.
pub fn config_text(routes: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nplugin-dir = {:?}\n{routes}",
        berth::demo::BUILT_PLUGIN_DIR
    )
}

impl TestServer {
    /// Starts a server with the given top-level keys and `[[route]]` tables.
    pub async fn start(routes: &str) -> TestServer {
        let config =
            Config::from_toml(&config_text(routes), Path::new("test.toml"), Path::new("/"))
                .expect("test config is valid");
        let server = Server::bind(config).await.expect("server starts");
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// The ws:// URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Shuts the server down and waits for it.
    pub async fn stop(mut self) {
        let _ = self.stop.take().expect("stopped once").send(());
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("server stops in time")
            .expect("server task does not panic");
    }
}

/// Opens a WebSocket connection, failing the test on error.
pub async fn connect(url: &str) -> Client {
    let (client, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("connect succeeds");
    client
}

/// An upgrade request for `url` with extra headers.
pub fn request(url: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut request = url.into_client_request().expect("valid url");
    for (name, value) in headers {
        request.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).expect("valid header name"),
            HeaderValue::from_str(value).expect("valid header value"),
        );
    }
    request
}

/// Tries an upgrade: `Ok(client, response headers)` or `Err((status, body))`.
pub async fn try_connect(
    request: Request<()>,
) -> Result<(Client, tokio_tungstenite::tungstenite::http::HeaderMap), (u16, String)> {
    use tokio_tungstenite::tungstenite::Error;
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake in time")
    {
        Ok((client, response)) => Ok((client, response.headers().clone())),
        Err(Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((status, body))
        }
        Err(other) => panic!("handshake failed without an HTTP answer: {other}"),
    }
}

/// The HTTP status an upgrade is refused with, or `None` if it is accepted.
pub async fn refusal(request: Request<()>) -> Option<u16> {
    try_connect(request).await.err().map(|(status, _)| status)
}

/// The next data message, skipping nothing: pings are answered by the library.
pub async fn recv(client: &mut Client) -> Message {
    loop {
        let msg = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("a message arrives in time")
            .expect("the connection is open")
            .expect("the message is valid");
        if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            return msg;
        }
    }
}

/// The next message, which must be text.
pub async fn recv_text(client: &mut Client) -> String {
    match recv(client).await {
        Message::Text(text) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Sends a text message.
pub async fn send_text(client: &mut Client, text: &str) {
    client
        .send(Message::text(text))
        .await
        .expect("send succeeds");
}

/// Reads until the server's close frame and returns it.
pub async fn expect_close(client: &mut Client) -> CloseFrame {
    match recv(client).await {
        Message::Close(Some(frame)) => frame,
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// A raw HTTP/1.1 GET with extra header lines; returns the status and the whole answer.
pub async fn http_get(addr: SocketAddr, path: &str, headers: &[&str]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut text = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes()).await.expect("write");
    // Read the head, then the body its content-length announces (a 101 has
    // none, and its connection stays open).
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                break;
            }
        }
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("answer in time")
            .expect("read");
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    (status, answer)
}

/// A JSON field's raw value in a flat JSON object written by the chat plugin.
pub fn json_field<'a>(json: &'a str, field: &str) -> &'a str {
    let key = format!("\"{field}\":");
    let start = json
        .find(&key)
        .unwrap_or_else(|| panic!("{field} in {json}"))
        + key.len();
    let rest = &json[start..];
    let end = if let Some(quoted) = rest.strip_prefix('"') {
        quoted.find('"').expect("closing quote") + 2
    } else {
        rest.find([',', '}']).expect("end of value")
    };
    &rest[..end]
}

/// Asks the testkit on `url` which `on-close` calls it has seen, until
/// `conn:code` is among them (bounded).
pub async fn await_on_close(url: &str, conn: &str, code: u16) {
    let expected = format!("{conn}:{code}");
    let mut observer = connect(url).await;
    for _ in 0..100 {
        send_text(&mut observer, "closes").await;
        let seen = recv_text(&mut observer).await;
        if seen.split(' ').any(|c| c == expected) {
            return;
        }
        assert!(
            !seen.split(' ').any(|c| c.starts_with(&format!("{conn}:"))),
            "on-close for {conn} had the wrong code: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no on-close {expected}");
}

/// Connects to the testkit at `url` and returns the client with its id.
pub async fn kit_client(url: &str) -> (Client, String) {
    let mut client = connect(url).await;
    send_text(&mut client, "whoami").await;
    let id = recv_text(&mut client).await.replace("id ", "");
    (client, id)
}
