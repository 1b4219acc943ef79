//! Protocol conformance around the upgrade and at close, checked byte for
//! byte: every request here is written by hand on a bare TCP socket and every
//! answer read raw, because client libraries hide exactly what browsers and
//! other libraries are strict about (status lines, header lists, whether a
//! body or a close code is on the wire, whether the socket ends).
//!
//! The plain answers already checked in `handshake.rs` (`/healthz`, 404, 426
//! for a plain GET, 426 for version 8, 400 for a short key, the RFC sample
//! accept key) and the close-handshake timeout checked in `hostile_clients.rs`
//! (`a_peer_that_never_answers_our_close_is_dropped_after_close_timeout`) are
//! not repeated here.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{TestServer, WAIT, await_on_close};

/// An echo route and a testkit route (whose `close CODE REASON` command
/// closes with any code and reason, and whose `closes` record tells what
/// `on-close` heard).
const ROUTES: &str = r#"
[[route]]
path = "/echo"
plugin = "echo.wasm"

[[route]]
path = "/kit"
plugin = "testkit.wasm"
"#;

/// The accept key RFC 6455 section 1.3 derives from its sample key, the one
/// in [`UPGRADE`].
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The upgrade headers a WebSocket client sends, as header lines.
const UPGRADE: [&str; 4] = [
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
];

/// The opcode of a text frame (RFC 6455 section 5.2).
const TEXT: u8 = 0x1;
/// The opcode of a close frame.
const CLOSE: u8 = 0x8;
/// The opcode of a ping frame.
const PING: u8 = 0x9;

/// A request head: `METHOD PATH VERSION`, a Host line, then `headers`.
fn head(method: &str, path: &str, version: &str, addr: SocketAddr, headers: &[&str]) -> String {
    let mut text = format!("{method} {path} {version}\r\nHost: {addr}\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text
}

/// A final, masked client frame (clients must mask, RFC 6455 section 5.3).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    const MASK: [u8; 4] = [0x1f, 0x8b, 0x52, 0xe4];
    let mut out = vec![0x80 | opcode];
    match u16::try_from(payload.len()) {
        Ok(len @ 0..=125) => out.push(0x80 | len as u8),
        Ok(len) => {
            out.push(0x80 | 126);
            out.extend_from_slice(&len.to_be_bytes());
        }
        Err(_) => panic!("only frames under 64 KiB are needed here"),
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// A close frame's payload: the code in network order, then the reason.
fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// One HTTP answer as it came off the socket.
#[derive(Debug)]
struct Answer {
    /// The status line, e.g. `HTTP/1.1 426 Upgrade Required`.
    status_line: String,
    /// The status code.
    status: u16,
    /// The header lines as (lower-case name, value), in order.
    headers: Vec<(String, String)>,
    /// The body, as long as `content-length` says.
    body: Vec<u8>,
}

impl Answer {
    /// Every value of header `name` joined by ", " (as a list header reads),
    /// or `None` if it is absent.
    fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    /// Whether header `name` lists `token` (comma-separated, any case).
    fn lists(&self, name: &str, token: &str) -> bool {
        self.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }
}

/// A client on a bare TCP socket: it writes whatever bytes it is given and
/// reads answers and frames raw. Every wait is bounded by [`WAIT`].
struct Wire {
    stream: TcpStream,
    /// Bytes read but not yet taken as an answer or a frame.
    buffer: Vec<u8>,
}

impl Wire {
    /// Opens a socket to `addr`.
    async fn open(addr: SocketAddr) -> Wire {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        Wire {
            stream,
            buffer: Vec::new(),
        }
    }

    /// Writes `bytes`. An error is returned, not raised: a server that
    /// refuses a request may stop reading it before it is all written.
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        tokio::time::timeout(WAIT, self.stream.write_all(bytes))
            .await
            .expect("the server takes the bytes in time")
    }

    /// Reads more into the buffer; false once the socket has ended (closed or reset).
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("the server answers or closes in time")
        {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Reads one answer. Its body is read as `content-length` says, unless
    /// the request was a HEAD (`to_head`) or the status has no body.
    async fn answer(&mut self, to_head: bool) -> Answer {
        let end = loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let read = String::from_utf8_lossy(&self.buffer).into_owned();
            assert!(
                self.fill().await,
                "the socket ended before an answer: {read:?}"
            );
        };
        let text = String::from_utf8(self.buffer[..end].to_vec()).expect("an ASCII head");
        self.buffer.drain(..end + 4);
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_string();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (name, value) = line.split_once(':').expect("a header line");
                (name.to_ascii_lowercase(), value.trim().to_string())
            })
            .collect();
        let mut answer = Answer {
            status_line,
            status,
            headers,
            body: Vec::new(),
        };
        let bodiless = to_head || matches!(status, 100..=199 | 204 | 304);
        let length = if bodiless {
            0
        } else {
            answer
                .header("content-length")
                .map(|v| v.parse::<usize>().expect("a numeric content-length"))
                .unwrap_or(0)
        };
        while self.buffer.len() < length {
            assert!(self.fill().await, "the socket ended inside a body");
        }
        answer.body = self.buffer.drain(..length).collect();
        answer
    }

    /// Sends one request and reads its answer.
    async fn ask(&mut self, request: &str) -> Answer {
        self.write(request.as_bytes())
            .await
            .expect("request written");
        self.answer(request.starts_with("HEAD ")).await
    }

    /// Reads until the server ends the socket, and checks that it ended it
    /// with a FIN and no reset: a reset can make a client drop what it has
    /// not read yet, so it is no way to end an answer. Returns what came
    /// after the last answer or frame taken.
    async fn end(&mut self) -> Vec<u8> {
        let mut chunk = [0u8; 4096];
        loop {
            let read = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("the server ends the socket in time");
            match read {
                Ok(0) => break,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(error) => panic!("the socket was reset: {error}"),
            }
        }
        // A reset that came after the FIN does not show in reads, only here.
        let error = self.stream.take_error().expect("the socket's error");
        assert!(
            error.is_none(),
            "the socket was reset after its FIN: {error:?}"
        );
        std::mem::take(&mut self.buffer)
    }

    /// The next frame the server sent, as (opcode, payload), or `None` once
    /// the socket has ended. Server frames are never masked.
    async fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buffer) {
                self.buffer.drain(..used);
                return Some(frame);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The next frame that is not a ping.
    async fn next_non_ping(&mut self) -> (u8, Vec<u8>) {
        loop {
            match self.next_frame().await {
                Some((PING, _)) => {}
                Some(frame) => return frame,
                None => panic!("the socket ended before a frame"),
            }
        }
    }

    /// Sends a text message and returns the text that comes back.
    async fn round_trip(&mut self, text: &str) -> String {
        self.write(&client_frame(TEXT, text.as_bytes()))
            .await
            .expect("frame written");
        match self.next_non_ping().await {
            (TEXT, payload) => String::from_utf8(payload).expect("UTF-8 text"),
            other => panic!("expected text, got {other:?}"),
        }
    }

    /// Reads the server's close frame (skipping pings) and returns its payload.
    async fn close_payload(&mut self) -> Vec<u8> {
        match self.next_non_ping().await {
            (CLOSE, payload) => payload,
            (opcode, payload) => panic!(
                "expected a close frame, got opcode {opcode}: {:?}",
                String::from_utf8_lossy(&payload)
            ),
        }
    }
}

/// Parses one server frame at the start of `bytes` as ((opcode, payload),
/// bytes taken); `None` if it is not all there yet.
fn parse_server_frame(bytes: &[u8]) -> Option<((u8, Vec<u8>), usize)> {
    let (&first, &second) = (bytes.first()?, bytes.get(1)?);
    assert_eq!(second & 0x80, 0, "the server masked a frame");
    let (len, at) = match second & 0x7f {
        126 => (
            u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        len => (len as usize, 2),
    };
    let payload = bytes.get(at..at + len)?.to_vec();
    Some(((first & 0x0f, payload), at + len))
}

/// Upgrades a fresh socket to `path` with the usual headers.
async fn upgraded(addr: SocketAddr, path: &str) -> Wire {
    let mut wire = Wire::open(addr).await;
    let answer = wire
        .ask(&head("GET", path, "HTTP/1.1", addr, &UPGRADE))
        .await;
    assert_eq!(answer.status, 101, "{answer:?}");
    wire
}

/// Whether `answer` is an HTTP/1.1 answer with `status`.
fn is_11(answer: &Answer, status: u16) -> bool {
    answer.status == status && answer.status_line.starts_with("HTTP/1.1 ")
}

/// Plain requests kept alive on a socket, then an upgrade on that same socket.
#[tokio::test]
async fn requests_kept_alive_before_an_upgrade_leave_the_socket_able_to_upgrade() {
    let server = TestServer::start(ROUTES).await;
    let addr = server.addr;
    let mut wire = Wire::open(addr).await;
    let healthz = wire
        .ask(&head("GET", "/healthz", "HTTP/1.1", addr, &[]))
        .await;
    assert!(is_11(&healthz, 200), "{healthz:?}");
    assert_eq!(healthz.body, b"ok\n");
    // A plain GET on the route, then a refused upgrade: neither ends the socket.
    let plain = wire.ask(&head("GET", "/echo", "HTTP/1.1", addr, &[])).await;
    assert!(is_11(&plain, 426), "{plain:?}");
    let mut bad_key = UPGRADE;
    bad_key[2] = "Sec-WebSocket-Key: AAAA";
    let refused = wire
        .ask(&head("GET", "/echo", "HTTP/1.1", addr, &bad_key))
        .await;
    assert!(is_11(&refused, 400), "{refused:?}");

    let upgrade = wire
        .ask(&head("GET", "/echo", "HTTP/1.1", addr, &UPGRADE))
        .await;
    assert!(is_11(&upgrade, 101), "{upgrade:?}");
    assert_eq!(
        upgrade.header("sec-websocket-accept").as_deref(),
        Some(ACCEPT)
    );
    assert!(upgrade.lists("upgrade", "websocket"), "{upgrade:?}");
    assert!(upgrade.lists("connection", "upgrade"), "{upgrade:?}");
    // RFC 9110 section 8.6: no Content-Length in a 1xx answer.
    assert_eq!(upgrade.header("content-length"), None, "{upgrade:?}");
    assert_eq!(
        wire.round_trip("on the same socket").await,
        "on the same socket"
    );
    server.stop().await;
}

/// Header names in any case, and `Upgrade`/`Connection` values as token lists in any case.
#[tokio::test]
async fn header_names_and_tokens_match_in_any_case_and_in_lists() {
    let server = TestServer::start(ROUTES).await;
    let addr = server.addr;
    let variants: [&[&str]; 3] = [
        // Firefox's Connection list, names in capitals and in lower case.
        &[
            "UPGRADE: WebSocket",
            "CONNECTION: keep-alive, Upgrade",
            "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==",
            "SEC-WEBSOCKET-VERSION: 13",
        ],
        // The Connection tokens split over two header lines.
        &[
            "upgrade: websocket",
            "Connection: keep-alive",
            "connection: UPGRADE",
            "Sec-Websocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "sec-websocket-version: 13",
        ],
        // Two protocols offered, and a list without spaces.
        &[
            "Upgrade: h2c, WEBSOCKET",
            "Connection: Upgrade,keep-alive",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        ],
    ];
    for headers in variants {
        let mut wire = Wire::open(addr).await;
        let answer = wire
            .ask(&head("GET", "/echo", "HTTP/1.1", addr, headers))
            .await;
        assert!(is_11(&answer, 101), "{headers:?}: {answer:?}");
        assert_eq!(
            answer.header("sec-websocket-accept").as_deref(),
            Some(ACCEPT)
        );
        assert_eq!(wire.round_trip("any case").await, "any case");
    }
    server.stop().await;
}

/// A client that writes its first frame with the request head loses nothing.
#[tokio::test]
async fn a_frame_written_right_behind_the_request_head_is_not_lost() {
    let server = TestServer::start(ROUTES).await;
    let addr = server.addr;
    let mut wire = Wire::open(addr).await;
    // Head and first frame in one write, as a pipelining client sends them.
    let mut bytes = head("GET", "/echo", "HTTP/1.1", addr, &UPGRADE).into_bytes();
    bytes.extend(client_frame(TEXT, b"eager"));
    wire.write(&bytes).await.expect("written");
    let answer = wire.answer(false).await;
    assert!(is_11(&answer, 101), "{answer:?}");
    assert_eq!(wire.next_non_ping().await, (TEXT, b"eager".to_vec()));
    server.stop().await;
}

/// Every way a `Sec-WebSocket-Key` can be wrong is answered 400.
#[tokio::test]
async fn a_missing_repeated_or_malformed_key_is_400() {
    let server = TestServer::start(ROUTES).await;
    let addr = server.addr;
    let keys: [&[&str]; 8] = [
        &[],
        // Base64 of 15 and of 17 bytes.
        &["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA"],
        &["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA="],
        // 24 characters, but not base64.
        &["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j*Q=="],
        &["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=A"],
        // Not the base64 of any 16 bytes: the last digit has bits past the 128th.
        &["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR=="],
        &["Sec-WebSocket-Key: "],
        // Two keys: RFC 6455 section 11.3.1 allows one.
        &[
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==",
        ],
    ];
    // One socket for all: a refusal keeps an HTTP/1.1 socket open.
    let mut wire = Wire::open(addr).await;
    for key in keys {
        let mut headers = vec![UPGRADE[0], UPGRADE[1], UPGRADE[3]];
        headers.extend_from_slice(key);
        let answer = wire
            .ask(&head("GET", "/echo", "HTTP/1.1", addr, &headers))
            .await;
        assert!(is_11(&answer, 400), "{key:?}: {answer:?}");
        assert_eq!(answer.header("sec-websocket-accept"), None);
    }
    // Another 16-byte key than the sample one is of course fine.
    let mut other = UPGRADE;
    other[2] = "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==";
    let answer = wire
        .ask(&head("GET", "/echo", "HTTP/1.1", addr, &other))
        .await;
    assert!(is_11(&answer, 101), "{answer:?}");
    server.stop().await;
}

/// Every way a `Sec-WebSocket-Version` can be wrong is answered 426 naming 13.
#[tokio::test]
async fn a_missing_repeated_or_unknown_version_is_426_naming_13() {
    let server = TestServer::start(ROUTES).await;
    let addr = server.addr;
    let versions: [&[&str]; 4] = [
        &[],
        &["Sec-WebSocket-Version: 14"],
        &["Sec-WebSocket-Version: 13, 8"],
        &["Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 13"],
    ];
    let mut wire = Wire::open(addr).await;
    for version in versions {
        let mut headers = UPGRADE[..3].to_vec();
        headers.extend_from_slice(version);
        let answer = wire
            .ask(&head("GET", "/echo", "HTTP/1.1", addr, &headers))
            .await;
        assert!(is_11(&answer, 426), "{version:?}: {answer:?}");
        assert_eq!(
            answer.header("sec-websocket-version").as_deref(),
            Some("13")
        );
    }
    server.stop().await;
}

/// Methods besides GET and HEAD get 405 with `Allow`; HEAD gets a GET's answer without its body.
#[tokio::test]
async fn other_methods_are_405_and_head_answers_like_a_plain_get() {
    let server = TestServer::start(ROUTES).await;
    let addr = server.addr;
    let mut wire = Wire::open(addr).await;
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        for headers in [&[][..], &UPGRADE[..]] {
            let answer = wire
                .ask(&head(method, "/echo", "HTTP/1.1", addr, headers))
                .await;
            assert!(is_11(&answer, 405), "{method}: {answer:?}");
            assert_eq!(
                answer.header("allow").as_deref(),
                Some("GET, HEAD"),
                "{method}"
            );
        }
    }
    // HEAD never upgrades: it gets the plain GET's 426 and its headers, and no
    // body (the next answer on the socket starts right after the head).
    let get = wire.ask(&head("GET", "/echo", "HTTP/1.1", addr, &[])).await;
    assert!(is_11(&get, 426), "{get:?}");
    for headers in [&[][..], &UPGRADE[..]] {
        let answer = wire
            .ask(&head("HEAD", "/echo", "HTTP/1.1", addr, headers))
            .await;
        assert!(is_11(&answer, 426), "{answer:?}");
        assert!(answer.lists("upgrade", "websocket"), "{answer:?}");
        assert_eq!(
            answer.header("content-length"),
            get.header("content-length")
        );
        assert_eq!(answer.header("sec-websocket-accept"), None);
        let next = wire
            .ask(&head("GET", "/healthz", "HTTP/1.1", addr, &[]))
            .await;
        assert!(
            is_11(&next, 200),
            "a body followed the HEAD answer: {next:?}"
        );
    }
    server.stop().await;
}

/// Heads over 16 KiB or 100 headers get a real 431 and a clean end; smaller ones upgrade.
#[tokio::test]
async fn request_heads_over_the_limit_are_answered_431_before_the_socket_ends() {
    let server = TestServer::start(ROUTES).await;
    let addr = server.addr;
    // One 64 KiB header (the server stops reading at its limit, so most of
    // this is still unread when it answers), 200 small headers, and 24 KiB
    // over many lines: each is too large, and must get a real answer rather
    // than a reset that would lose it.
    let long = format!("X-Filler: {}", "f".repeat(64 * 1024));
    let many: Vec<String> = (0..200).map(|i| format!("X-Many-{i}: {i}")).collect();
    let lines: Vec<String> = (0..24)
        .map(|i| format!("X-Kib-{i}: {}", "k".repeat(1010)))
        .collect();
    for extra in [vec![long], many, lines] {
        let mut headers: Vec<&str> = UPGRADE.to_vec();
        headers.extend(extra.iter().map(String::as_str));
        let mut wire = Wire::open(addr).await;
        let _ = wire
            .write(head("GET", "/echo", "HTTP/1.1", addr, &headers).as_bytes())
            .await;
        let answer = wire.answer(false).await;
        assert!(is_11(&answer, 431), "{answer:?}");
        assert_eq!(wire.end().await, b"", "bytes after the 431");
    }
    // A large head within the limit (cookies, say) still upgrades.
    let cookie = format!("Cookie: session={}", "c".repeat(12 * 1024));
    let mut headers: Vec<&str> = UPGRADE.to_vec();
    headers.push(&cookie);
    let mut wire = Wire::open(addr).await;
    let answer = wire
        .ask(&head("GET", "/echo", "HTTP/1.1", addr, &headers))
        .await;
    assert!(is_11(&answer, 101), "{answer:?}");
    assert_eq!(wire.round_trip("big head").await, "big head");
    server.stop().await;
}

/// An upgrade over HTTP/1.0 gets an HTTP/1.0 4xx and the socket ends, keep-alive or not.
#[tokio::test]
async fn an_http_1_0_upgrade_is_refused_in_http_1_0_and_the_socket_closed() {
    let server = TestServer::start(ROUTES).await;
    let addr = server.addr;
    let mut keep_alive = UPGRADE;
    keep_alive[1] = "Connection: keep-alive, Upgrade";
    for headers in [UPGRADE, keep_alive] {
        let mut wire = Wire::open(addr).await;
        let answer = wire
            .ask(&head("GET", "/echo", "HTTP/1.0", addr, &headers))
            .await;
        assert!(answer.status_line.starts_with("HTTP/1.0 4"), "{answer:?}");
        assert_eq!(answer.header("sec-websocket-accept"), None);
        // Ended even when the client asked to keep it: no upgrade can come
        // on it, and a client waiting for one would wait in vain.
        let rest = wire.end().await;
        assert!(rest.is_empty(), "more after the refusal: {rest:?}");
    }
    server.stop().await;
}

/// The server's close frame echoes the client's code, and the server ends the socket first.
#[tokio::test]
async fn the_server_echoes_the_clients_close_code_then_ends_the_socket() {
    let server = TestServer::start(ROUTES).await;
    let kit = server.url("/kit");
    let mut wire = upgraded(server.addr, "/kit").await;
    let id = wire.round_trip("whoami").await.replace("id ", "");
    wire.write(&client_frame(CLOSE, &close_payload(4321, "done here")))
        .await
        .expect("close written");
    let payload = wire.close_payload().await;
    assert_eq!(
        payload.get(..2),
        Some(&4321u16.to_be_bytes()[..]),
        "{payload:?}"
    );
    // RFC 6455 section 7.1.1: the server ends the TCP connection first.
    assert!(wire.end().await.is_empty(), "frames after the close");
    await_on_close(&kit, &id, 4321).await;

    // A plugin-asked close is answered by the client's echo, then ended too.
    let mut wire = upgraded(server.addr, "/kit").await;
    wire.write(&client_frame(TEXT, b"close 4002 enough"))
        .await
        .expect("command written");
    assert_eq!(wire.close_payload().await, close_payload(4002, "enough"));
    wire.write(&client_frame(CLOSE, &4002u16.to_be_bytes()))
        .await
        .expect("echo written");
    assert!(wire.end().await.is_empty(), "frames after the close");
    server.stop().await;
}

/// A close frame without a code is echoed empty; 1005 reaches only `on-close`.
#[tokio::test]
async fn a_close_without_a_code_is_answered_with_an_empty_close_not_1005() {
    let server = TestServer::start(ROUTES).await;
    let mut wire = upgraded(server.addr, "/kit").await;
    let id = wire.round_trip("whoami").await.replace("id ", "");
    wire.write(&client_frame(CLOSE, b""))
        .await
        .expect("close written");
    assert_eq!(
        wire.close_payload().await,
        b"",
        "the echo of an empty close"
    );
    assert!(wire.end().await.is_empty(), "frames after the close");
    // 1005 is what on-close hears, never what is sent.
    await_on_close(&server.url("/kit"), &id, 1005).await;
    server.stop().await;
}

/// A plugin's close code must be one that may be on the wire; those that may are sent as given.
#[tokio::test]
async fn a_plugin_can_close_with_every_sendable_code_and_with_no_other() {
    // `lifecycle.rs` checks 1005; here the other codes RFC 6455 section 7.4
    // reserves or forbids on the wire, and the edges of the sendable ranges.
    let server = TestServer::start(ROUTES).await;
    for code in [0u16, 999, 1004, 1006, 1015, 1016, 2999, 5000, 65535] {
        let mut wire = upgraded(server.addr, "/kit").await;
        let answer = wire.round_trip(&format!("close {code} nope")).await;
        assert_eq!(answer, "error invalid-code", "close {code}");
        // The connection stays open and usable.
        assert!(wire.round_trip("whoami").await.starts_with("id "));
    }
    // 1012-1014 are registered with IANA for servers to send (1014: bad gateway).
    for code in [1000u16, 1003, 1007, 1011, 1012, 1013, 1014, 3000, 4999] {
        let mut wire = upgraded(server.addr, "/kit").await;
        wire.write(&client_frame(TEXT, format!("close {code} bye").as_bytes()))
            .await
            .expect("command written");
        assert_eq!(
            wire.close_payload().await,
            close_payload(code, "bye"),
            "close {code}"
        );
    }
    server.stop().await;
}

/// A plugin's close reason is cut to fit the frame, never inside a character.
#[tokio::test]
async fn a_long_close_reason_is_cut_to_123_bytes_at_a_character_boundary() {
    let server = TestServer::start(ROUTES).await;
    // "é" is the 123rd and 124th bytes: the cut falls inside it, so it goes whole.
    let straddling = format!("{}é and more", "a".repeat(122));
    let exact = "b".repeat(123);
    let over = "c".repeat(200);
    let euro = format!("{}€tail", "d".repeat(120));
    let cases = [
        (straddling.as_str(), "a".repeat(122)),
        (exact.as_str(), exact.clone()),
        (over.as_str(), "c".repeat(123)),
        // A three-byte character ending exactly at byte 123 stays.
        (euro.as_str(), format!("{}€", "d".repeat(120))),
    ];
    for (reason, sent) in cases {
        let mut wire = upgraded(server.addr, "/kit").await;
        wire.write(&client_frame(
            TEXT,
            format!("close 4000 {reason}").as_bytes(),
        ))
        .await
        .expect("command written");
        let payload = wire.close_payload().await;
        assert!(
            payload.len() <= 125,
            "a {}-byte close payload",
            payload.len()
        );
        assert_eq!(payload, close_payload(4000, &sent), "reason {reason:?}");
    }
    server.stop().await;
}
