//! A WebSocket client on a bare TCP socket, for the tests that need what no
//! client library does: frames that break the protocol on purpose, an
//! upgrade request with any headers, and the frames the server sent exactly
//! as it sent them (RSV bits, fragments, compressed payloads).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::support::WAIT;

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

/// A well-formed final client frame.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(true, 0, opcode, payload, Some(MASK))
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

/// A WebSocket client on a bare TCP socket that writes what it is told to,
/// valid or not.
pub struct RawClient {
    pub reader: OwnedReadHalf,
    /// Taken by a test that writes from another task.
    pub writer: Option<OwnedWriteHalf>,
    /// Bytes read but not yet taken as a frame.
    pub buffer: Vec<u8>,
}

/// The upgrade request for `path`, with the RFC 6455 sample key.
pub fn upgrade_request(addr: SocketAddr, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

impl RawClient {
    /// Upgrades a new socket to `path`; fails the test unless it gets 101.
    pub async fn connect(addr: SocketAddr, path: &str) -> RawClient {
        let (client, head) = RawClient::upgrade(addr, path, &[]).await;
        assert!(head.starts_with("HTTP/1.1 101 "), "not upgraded: {head}");
        client
    }

    /// Sends the upgrade request for `path` with `headers` (`Name: value`
    /// lines) added, and returns the client with the answer's head.
    pub async fn upgrade(addr: SocketAddr, path: &str, headers: &[&str]) -> (RawClient, String) {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (reader, writer) = stream.into_split();
        let mut client = RawClient {
            reader,
            writer: Some(writer),
            buffer: Vec::new(),
        };
        let mut request = upgrade_request(addr, path);
        request.truncate(request.len() - 2);
        for line in headers {
            request.push_str(line);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        client
            .write(request.as_bytes())
            .await
            .expect("request written");
        let end = loop {
            if let Some(end) = client.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            assert!(client.fill().await, "the socket ended before an answer");
        };
        // Whatever follows the head is already WebSocket frames.
        let head: Vec<u8> = client.buffer.drain(..end).collect();
        (client, String::from_utf8_lossy(&head).into_owned())
    }

    /// Writes raw bytes, within the test's bounded wait.
    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let writer = self.writer.as_mut().expect("the writer was not taken");
        tokio::time::timeout(WAIT, writer.write_all(bytes))
            .await
            .expect("the server takes the bytes in time")
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

    /// Sends a masked text message.
    pub async fn send_text(&mut self, text: &str) {
        self.write(&client_frame(TEXT, text.as_bytes()))
            .await
            .expect("send");
    }

    /// The next text message, skipping the server's pings.
    pub async fn recv_text(&mut self) -> String {
        loop {
            let frame = self.next_frame().await.expect("a text message");
            match frame.opcode {
                TEXT => return String::from_utf8(frame.payload).expect("UTF-8 text"),
                PING => {}
                other => panic!("expected text, got opcode {other}: {frame:?}"),
            }
        }
    }

    /// The testkit's id for this connection.
    pub async fn whoami(&mut self) -> String {
        self.send_text("whoami").await;
        self.recv_text().await.replace("id ", "")
    }

    /// Reads up to the server's close frame and returns its code and reason.
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

    /// Waits (bounded) until the server ends the socket, ignoring what it sends.
    pub async fn expect_end(&mut self) {
        while self.fill().await {
            self.buffer.clear();
        }
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
