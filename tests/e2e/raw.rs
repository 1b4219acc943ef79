//! A client on a bare TCP socket, for the tests that need what no client
//! library does: requests and frames that break the protocol on purpose, an
//! upgrade request with any headers, HTTP answers read byte for byte (status
//! lines, header lists, whether a body is on the wire, whether the socket
//! ends and how), and the frames the server sent exactly as it sent them (RSV
//! bits, fragments, compressed payloads). Every wait is bounded by [`WAIT`].

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::support::{WAIT, eventually};

/// The opcode of a continuation frame (RFC 6455 section 5.2).
pub const CONTINUATION: u8 = 0x0;
/// The opcode of a text frame.
pub const TEXT: u8 = 0x1;
/// The opcode of a close frame.
pub const CLOSE: u8 = 0x8;
/// The opcode of a ping frame.
pub const PING: u8 = 0x9;

/// The masking key of every masked frame these tests write.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// The upgrade headers a WebSocket client sends, as header lines, with the
/// sample key of RFC 6455 section 1.3.
pub const UPGRADE: [&str; 4] = [
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
];

/// The accept key RFC 6455 section 1.3 derives from the key in [`UPGRADE`].
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The head of a frame: FIN, the three RSV bits (`rsv`, high bit first),
/// the opcode, and `len` in the shortest length encoding, masked by `mask`.
pub fn head(fin: bool, rsv: u8, opcode: u8, len: u64, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    let masked = if mask.is_some() { 0x80 } else { 0 };
    match len {
        0..=125 => out.push(masked | len as u8),
        126..=0xffff => {
            out.push(masked | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(masked | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
    out
}

/// A whole frame with `payload`, masked with `mask` if given.
pub fn frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = head(fin, rsv, opcode, payload.len() as u64, mask);
    match mask {
        Some(key) => out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4])),
        None => out.extend_from_slice(payload),
    }
    out
}

/// A well-formed final client frame (clients must mask, RFC 6455 section 5.3).
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(true, 0, opcode, payload, Some(MASK))
}

/// A close frame's payload: the code in network order, then the reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// A request head: `METHOD PATH VERSION`, a Host line, then `headers`.
pub fn request_head(
    method: &str,
    path: &str,
    version: &str,
    addr: SocketAddr,
    headers: &[&str],
) -> String {
    let mut text = format!("{method} {path} {version}\r\nHost: {addr}\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text
}

/// The upgrade request for `path`, with the headers in [`UPGRADE`].
pub fn upgrade_request(addr: SocketAddr, path: &str) -> String {
    request_head("GET", path, "HTTP/1.1", addr, &UPGRADE)
}

/// A frame as the server sent it.
#[derive(Debug)]
pub struct ServerFrame {
    /// The low four bits of the first byte.
    pub opcode: u8,
    /// RSV1: the message is compressed (permessage-deflate).
    pub rsv1: bool,
    /// FIN: the frame ends its message.
    pub fin: bool,
    /// The payload (server frames are never masked).
    pub payload: Vec<u8>,
}

/// One HTTP answer as it came off the socket.
#[derive(Debug)]
pub struct Answer {
    /// The head as it was sent, status line to the empty line that ends it.
    pub head: String,
    /// The status line, e.g. `HTTP/1.1 426 Upgrade Required`.
    pub status_line: String,
    /// The status code.
    pub status: u16,
    /// The header lines as (lower-case name, value), in order.
    pub headers: Vec<(String, String)>,
    /// The body, as long as `content-length` says.
    pub body: Vec<u8>,
}

impl Answer {
    /// Parses a head as [`RawClient::head`] returns it; the body is left empty.
    fn parse(head: String) -> Answer {
        let mut lines = head.trim_end_matches("\r\n").split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_string();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {status_line:?}"));
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(':').expect("a header line");
                (name.to_ascii_lowercase(), value.trim().to_string())
            })
            .collect();
        Answer {
            status_line,
            status,
            headers,
            head,
            body: Vec::new(),
        }
    }

    /// Every value of header `name` joined by ", " (as a list header reads),
    /// or `None` if it is absent.
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    /// Whether header `name` lists `token` (comma-separated, any case).
    pub fn lists(&self, name: &str, token: &str) -> bool {
        self.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }
}

/// A client on a bare TCP socket that writes what it is told to, valid or
/// not, and reads answers and frames raw.
pub struct RawClient {
    pub reader: OwnedReadHalf,
    /// Taken by a test that writes from another task.
    pub writer: Option<OwnedWriteHalf>,
    /// Bytes read but not yet taken as an answer or a frame.
    pub buffer: Vec<u8>,
}

impl RawClient {
    /// Opens a socket to `addr`, writing nothing yet.
    pub async fn open(addr: SocketAddr) -> RawClient {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        let (reader, writer) = stream.into_split();
        RawClient {
            reader,
            writer: Some(writer),
            buffer: Vec::new(),
        }
    }

    /// Upgrades a new socket to `path`; fails the test unless it gets 101.
    pub async fn connect(addr: SocketAddr, path: &str) -> RawClient {
        let (client, head) = RawClient::upgrade(addr, path, &[]).await;
        assert!(head.starts_with("HTTP/1.1 101 "), "not upgraded: {head}");
        client
    }

    /// Sends the upgrade request for `path` with `headers` (`Name: value`
    /// lines) added, and returns the client with the answer's head.
    pub async fn upgrade(addr: SocketAddr, path: &str, headers: &[&str]) -> (RawClient, String) {
        let mut client = RawClient::open(addr).await;
        let mut lines = UPGRADE.to_vec();
        lines.extend_from_slice(headers);
        let request = request_head("GET", path, "HTTP/1.1", addr, &lines);
        client
            .write(request.as_bytes())
            .await
            .expect("request written");
        // Whatever follows the head is already WebSocket frames.
        let head = client.head().await;
        (client, head)
    }

    /// Writes raw bytes, within the test's bounded wait. An error is
    /// returned, not raised: a server that refuses what it is sent may stop
    /// reading before it is all written.
    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let writer = self.writer.as_mut().expect("the writer was not taken");
        tokio::time::timeout(WAIT, writer.write_all(bytes))
            .await
            .expect("the server takes the bytes in time")
    }

    /// Ends the sending side (a FIN), keeping the socket open for reading.
    pub fn finish_writing(&mut self) {
        // Dropping the write half shuts it down.
        self.writer = None;
    }

    /// Reads more into the buffer; false once the socket has ended (closed or reset).
    pub async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(WAIT, self.reader.read(&mut chunk))
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

    /// The head of the next HTTP answer as it was sent, up to and including
    /// the empty line that ends it.
    pub async fn head(&mut self) -> String {
        let end = loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let read = String::from_utf8_lossy(&self.buffer).into_owned();
            assert!(
                self.fill().await,
                "the socket ended before an answer: {read:?}"
            );
        };
        let head: Vec<u8> = self.buffer.drain(..end).collect();
        String::from_utf8(head).expect("an ASCII head")
    }

    /// Reads one answer. Its body is read as `content-length` says, unless
    /// the request was a HEAD (`to_head`) or the status has no body.
    pub async fn answer(&mut self, to_head: bool) -> Answer {
        let mut answer = Answer::parse(self.head().await);
        let bodiless = to_head || matches!(answer.status, 100..=199 | 204 | 304);
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
    pub async fn exchange(&mut self, request: &str) -> Answer {
        self.write(request.as_bytes())
            .await
            .expect("request written");
        self.answer(request.starts_with("HEAD ")).await
    }

    /// Reads until the server ends the socket (closed or reset), and returns
    /// what came after the last answer or frame taken.
    pub async fn rest(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buffer)
    }

    /// Waits (bounded) until the server ends the socket, ignoring what it sends.
    pub async fn expect_end(&mut self) {
        while self.fill().await {
            self.buffer.clear();
        }
    }

    /// Reads until the server ends the socket, and checks that it ended it
    /// with a FIN and no reset: a reset can make a client drop what it has
    /// not read yet, so it is no way to end an answer. Returns what came
    /// after the last answer or frame taken.
    pub async fn end_cleanly(&mut self) -> Vec<u8> {
        let mut chunk = [0u8; 4096];
        loop {
            let read = tokio::time::timeout(WAIT, self.reader.read(&mut chunk))
                .await
                .expect("the server ends the socket in time");
            match read {
                Ok(0) => break,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(error) => panic!("the socket was reset: {error}"),
            }
        }
        // A reset that came after the FIN does not show in reads, only here.
        let error = self
            .reader
            .as_ref()
            .take_error()
            .expect("the socket's error");
        assert!(
            error.is_none(),
            "the socket was reset after its FIN: {error:?}"
        );
        std::mem::take(&mut self.buffer)
    }

    /// The next frame the server sent, or `None` once the socket has ended.
    pub async fn next_frame(&mut self) -> Option<ServerFrame> {
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
    pub async fn next_non_ping(&mut self) -> ServerFrame {
        loop {
            match self.next_frame().await {
                Some(frame) if frame.opcode == PING => {}
                Some(frame) => return frame,
                None => panic!("the socket ended before a frame"),
            }
        }
    }

    /// Sends a masked text message.
    pub async fn send_text(&mut self, text: &str) {
        self.write(&client_frame(TEXT, text.as_bytes()))
            .await
            .expect("send");
    }

    /// The next text message, skipping the server's pings.
    pub async fn recv_text(&mut self) -> String {
        let frame = self.next_non_ping().await;
        match frame.opcode {
            TEXT => String::from_utf8(frame.payload).expect("UTF-8 text"),
            other => panic!("expected text, got opcode {other}: {frame:?}"),
        }
    }

    /// Sends a text message and returns the text that comes back.
    pub async fn round_trip(&mut self, text: &str) -> String {
        self.send_text(text).await;
        self.recv_text().await
    }

    /// The testkit's id for this connection.
    pub async fn whoami(&mut self) -> String {
        self.round_trip("whoami").await.replace("id ", "")
    }

    /// Reads up to the server's close frame, past any other, and returns its
    /// code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            let frame = self
                .next_frame()
                .await
                .expect("a close frame before the socket ends");
            if frame.opcode == CLOSE {
                assert!(frame.payload.len() >= 2, "close without a code: {frame:?}");
                let code = u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
                let reason = String::from_utf8(frame.payload[2..].to_vec()).expect("UTF-8");
                return (code, reason);
            }
        }
    }

    /// The payload of the server's close frame, which must be the next
    /// frame but for pings (it may have no code at all).
    pub async fn close_payload(&mut self) -> Vec<u8> {
        let frame = self.next_non_ping().await;
        assert_eq!(
            frame.opcode,
            CLOSE,
            "expected a close frame, got {:?}",
            String::from_utf8_lossy(&frame.payload)
        );
        frame.payload
    }
}

/// Parses one unmasked server frame at the start of `bytes`, with the number
/// of bytes it took; `None` if it is not all there yet.
pub fn parse_server_frame(bytes: &[u8]) -> Option<(ServerFrame, usize)> {
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
    let frame = ServerFrame {
        opcode: first & 0x0f,
        rsv1: first & 0x40 != 0,
        fin: first & 0x80 != 0,
        payload,
    };
    Some((frame, at + len))
}

/// A raw HTTP/1.1 GET with extra header lines, on a socket of its own;
/// returns the status and the whole answer as text (a 101's socket is left
/// open, with nothing read past its head).
pub async fn http_get(addr: SocketAddr, path: &str, headers: &[&str]) -> (u16, String) {
    let mut lines = vec!["Connection: close"];
    lines.extend_from_slice(headers);
    let mut client = RawClient::open(addr).await;
    let answer = client
        .exchange(&request_head("GET", path, "HTTP/1.1", addr, &lines))
        .await;
    let text = format!("{}{}", answer.head, String::from_utf8_lossy(&answer.body));
    (answer.status, text)
}

/// Asks `/healthz` on new sockets until one is answered 200 (bounded by
/// [`WAIT`]): a place given back may take the server a moment to free.
pub async fn await_healthz_200(addr: SocketAddr, what: &str) {
    eventually(WAIT, what, async || {
        match http_get(addr, "/healthz", &[]).await {
            (200, _) => Ok(()),
            (status, _) => Err(format!("answered {status}")),
        }
    })
    .await
}
