//! The load generator's side of the wire: sockets spread over many loopback
//! source addresses, tungstenite clients, and a lean hand-framed client for
//! the echo, fan-out and compression scenarios, which can negotiate
//! permessage-deflate (tungstenite cannot).

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::LIMIT;

/// Sends a testkit command and returns its answer.
pub async fn command(client: &mut Client, text: &str) -> String {
    client
        .send(Message::text(text))
        .await
        .unwrap_or_else(|e| panic!("{text:?}: send: {e}"));
    next_text(client, text).await
}

/// The next text message (pings and pongs skipped), the answer to what
/// `asked` asked; within [`LIMIT`].
pub async fn next_text(client: &mut Client, asked: &str) -> String {
    let next = async {
        loop {
            match client.next().await {
                Some(Ok(Message::Text(answer))) => return answer.as_str().to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("{asked:?}: unexpected answer {other:?}"),
            }
        }
    };
    tokio::time::timeout(LIMIT, next)
        .await
        .unwrap_or_else(|_| panic!("{asked:?}: no answer within {LIMIT:?}"))
}

/// The count, p50 and p99 of a testkit timing answer, `timed N P50_NS
/// P99_NS`, to what `asked` asked.
pub fn timed_answer(asked: &str, answer: &str) -> (usize, Duration, Duration) {
    let fields: Vec<u64> = answer
        .strip_prefix("timed ")
        .map(|rest| rest.split(' ').filter_map(|f| f.parse().ok()).collect())
        .unwrap_or_default();
    let [count, p50, p99] = fields[..] else {
        panic!("{asked:?} answered {answer:?}");
    };
    (
        count as usize,
        Duration::from_nanos(p50),
        Duration::from_nanos(p99),
    )
}

/// A tungstenite client connection.
pub type Client = WebSocketStream<TcpStream>;

static NEXT_SOURCE: AtomicU32 = AtomicU32::new(0);

/// The next source address, round-robin over 127.0.0.2–127.0.0.254: one
/// address has only ~28k ephemeral ports, and closed ones linger in TIME_WAIT.
fn source() -> SocketAddr {
    let n = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) % 253;
    SocketAddr::from(([127, 0, 0, 2 + n as u8], 0))
}

/// A TCP connection to `addr` from the next source address, Nagle off as on
/// the servers: small messages must not wait for ACKs.
pub async fn tcp(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(source())?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens a tungstenite client on `ws://addr/path`, within [`LIMIT`].
pub async fn ws(
    addr: SocketAddr,
    path: &str,
    config: Option<WebSocketConfig>,
) -> Result<Client, String> {
    let open = async {
        let stream = tcp(addr).await.map_err(|e| format!("connect: {e}"))?;
        let url = format!("ws://{addr}{path}");
        tokio_tungstenite::client_async_with_config(url, stream, config)
            .await
            .map(|(client, _)| client)
            .map_err(|e| format!("handshake: {e}"))
    };
    tokio::time::timeout(LIMIT, open)
        .await
        .unwrap_or_else(|_| Err(format!("no handshake within {LIMIT:?}")))
}

/// The fixed key of [`Raw`]'s handshake; the server's answer is still checked.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const INPUT: usize = 64 * 1024;

/// A minimal WebSocket client that writes masked frames straight from a
/// reused buffer and parses the server's frames in place, so that the load
/// generator allocates nothing per message and stays far faster than the
/// servers it measures. It counts the bytes its socket reads and writes, and
/// may offer permessage-deflate ([`Raw::open`]): berth answers no context
/// takeover either way, so [`deflate`] and [`inflate`] take one message each.
pub struct Raw {
    stream: TcpStream,
    input: Box<[u8]>,
    start: usize,
    end: usize,
    output: Vec<u8>,
    mask: [u8; 4],
    /// permessage-deflate was agreed.
    compression: bool,
    /// Bytes the socket read and wrote since [`Raw::reset_traffic`].
    read: u64,
    written: u64,
}

/// What [`Raw::open`] offers when asked to: what a browser offers.
const OFFER: &str = "permessage-deflate; client_max_window_bits";
/// Set on a data frame's first byte when its message is compressed.
const RSV1: u8 = 0x40;
/// What a sync flush ends with, taken off each compressed message (RFC 7692 7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];
/// The opcode of a text frame.
pub const TEXT: u8 = 0x1;

/// A data frame read: whether it came compressed, and where its payload is.
pub struct Frame {
    /// RSV1 was set: the payload is DEFLATE, its tail taken off.
    pub compressed: bool,
    /// The payload, for [`Raw::payload`].
    pub payload: Range<usize>,
}

impl Raw {
    /// Connects and upgrades `ws://addr/path`; panics if the server refuses.
    pub async fn connect(addr: SocketAddr, path: &str, seed: u32) -> Raw {
        Raw::open(addr, path, seed, false).await
    }

    /// Connects and upgrades `ws://addr/path`, offering permessage-deflate if
    /// `offer`; panics unless the server answers 101, with the extension
    /// exactly when it was offered.
    pub async fn open(addr: SocketAddr, path: &str, seed: u32, offer: bool) -> Raw {
        let stream = tcp(addr)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        let mut client = Raw {
            stream,
            input: vec![0; INPUT].into_boxed_slice(),
            start: 0,
            end: 0,
            output: Vec::with_capacity(4096),
            mask: (seed.wrapping_mul(0x9E37_79B9) | 0x0101_0101).to_be_bytes(),
            compression: offer,
            read: 0,
            written: 0,
        };
        let extensions = if offer {
            format!("Sec-WebSocket-Extensions: {OFFER}\r\n")
        } else {
            String::new()
        };
        client.output.extend_from_slice(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n\
                 Sec-WebSocket-Version: 13\r\n{extensions}\r\n"
            )
            .as_bytes(),
        );
        client.flush().await;
        let head_end = loop {
            if let Some(at) = client.input[..client.end]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
            {
                break at + 4;
            }
            client.fill().await;
        };
        let head = String::from_utf8_lossy(&client.input[..head_end]).into_owned();
        let status = head.lines().next().unwrap_or_default();
        assert!(
            status.starts_with("HTTP/1.1 101"),
            "{path}: upgrade refused: {status}"
        );
        let header = |wanted: &str| {
            head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case(wanted).then(|| value.trim())
            })
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(KEY.as_bytes());
        assert_eq!(
            header("sec-websocket-accept"),
            Some(accept.as_str()),
            "{path}: wrong Sec-WebSocket-Accept in {head:?}"
        );
        match header("sec-websocket-extensions") {
            Some(answer) => assert!(
                offer
                    && answer.starts_with("permessage-deflate")
                    && answer.contains("client_no_context_takeover"),
                "{path}: an extension answer {answer:?} to {}",
                if offer { OFFER } else { "no offer" }
            ),
            None => assert!(!offer, "{path}: permessage-deflate offered but not agreed"),
        }
        client.start = head_end;
        client.reset_traffic();
        client
    }

    /// Whether permessage-deflate was agreed.
    pub fn compression(&self) -> bool {
        self.compression
    }

    /// The bytes the socket has read and written since the last reset:
    /// frames, headers included.
    pub fn traffic(&self) -> (u64, u64) {
        (self.read, self.written)
    }

    /// Counts from zero again; what was read but not yet parsed is not counted.
    pub fn reset_traffic(&mut self) {
        self.read = (self.end - self.start) as u64;
        self.written = 0;
    }

    /// Queues one masked text frame; `payload` must be ASCII and under 126 bytes.
    pub fn queue_text(&mut self, payload: &[u8]) {
        self.queue(0x1, payload);
    }

    fn queue(&mut self, opcode: u8, payload: &[u8]) {
        assert!(payload.len() < 126, "only short frames are framed here");
        let mut frame = [0u8; 6 + 125];
        frame[0] = 0x80 | opcode;
        frame[1] = 0x80 | payload.len() as u8;
        frame[2..6].copy_from_slice(&self.mask);
        // Masked four bytes at a time: this is the generator's hottest loop.
        let body = &mut frame[6..6 + payload.len()];
        let key = u32::from_ne_bytes(self.mask);
        let mut words = payload.chunks_exact(4);
        for (out, word) in body.chunks_exact_mut(4).zip(&mut words) {
            let word = u32::from_ne_bytes(word.try_into().unwrap()) ^ key;
            out.copy_from_slice(&word.to_ne_bytes());
        }
        let tail = payload.len() / 4 * 4;
        for (i, (out, byte)) in body[tail..].iter_mut().zip(words.remainder()).enumerate() {
            *out = byte ^ self.mask[i];
        }
        self.output.extend_from_slice(&frame[..6 + payload.len()]);
    }

    /// Queues one masked, final frame; `compressed` sets RSV1, for a payload
    /// made by [`deflate`] (only if compression was agreed).
    pub fn queue_frame(&mut self, opcode: u8, compressed: bool, payload: &[u8]) {
        assert!(
            !compressed || self.compression,
            "RSV1 without the extension"
        );
        let first = 0x80 | if compressed { RSV1 } else { 0 } | opcode;
        let len = payload.len();
        self.output.push(first);
        if len < 126 {
            self.output.push(0x80 | len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            self.output.push(0x80 | 126);
            self.output.extend_from_slice(&short.to_be_bytes());
        } else {
            self.output.push(0x80 | 127);
            self.output.extend_from_slice(&(len as u64).to_be_bytes());
        }
        self.output.extend_from_slice(&self.mask);
        let at = self.output.len();
        self.output.extend_from_slice(payload);
        // Masked four bytes at a time.
        let body = &mut self.output[at..];
        let key = u32::from_ne_bytes(self.mask);
        let mut words = body.chunks_exact_mut(4);
        for word in &mut words {
            let masked = u32::from_ne_bytes((&*word).try_into().unwrap()) ^ key;
            word.copy_from_slice(&masked.to_ne_bytes());
        }
        for (byte, key) in words.into_remainder().iter_mut().zip(self.mask) {
            *byte ^= key;
        }
    }

    /// Writes everything queued, within [`LIMIT`].
    pub async fn flush(&mut self) {
        if self.output.is_empty() {
            return;
        }
        tokio::time::timeout(LIMIT, self.stream.write_all(&self.output))
            .await
            .expect("the server takes our bytes in time")
            .expect("write to the server");
        self.written += self.output.len() as u64;
        self.output.clear();
    }

    /// Reads once from the socket, waiting at most [`LIMIT`]; panics if the server closed it.
    pub async fn fill(&mut self) {
        match self.try_fill(LIMIT).await {
            Some(Ok(0)) => panic!("the server closed the connection"),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("read from the server: {e}"),
            None => panic!("nothing from the server within {LIMIT:?}"),
        }
    }

    async fn try_fill(&mut self, wait: Duration) -> Option<std::io::Result<usize>> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.input.len() {
            self.input.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            assert!(
                self.end < self.input.len(),
                "a frame larger than {INPUT} bytes"
            );
        }
        let read = self.stream.read(&mut self.input[self.end..]);
        let result = tokio::time::timeout(wait, read).await.ok()?;
        if let Ok(n) = result {
            self.end += n;
            self.read += n as u64;
        }
        Some(result)
    }

    /// The payload of the next complete text or binary frame already read, if
    /// any; pings on the way are answered (the pong goes with the next flush).
    pub fn frame(&mut self) -> Option<Range<usize>> {
        self.data_frame().map(|frame| frame.payload)
    }

    /// The next complete text or binary frame already read, if any; pings on
    /// the way are answered (the pong goes with the next flush).
    pub fn data_frame(&mut self) -> Option<Frame> {
        loop {
            let (first, payload) = self.next_frame()?;
            match first & 0x0f {
                0x1 | 0x2 => {
                    let compressed = first & RSV1 != 0;
                    assert!(
                        !compressed || self.compression,
                        "RSV1 on a connection without the extension"
                    );
                    return Some(Frame {
                        compressed,
                        payload,
                    });
                }
                0x9 => {
                    let ping = self.input[payload].to_vec();
                    self.queue(0xA, &ping);
                }
                0xA => {}
                0x8 => panic!(
                    "the server closed the connection: {:?}",
                    String::from_utf8_lossy(&self.input[payload])
                ),
                other => panic!("unexpected frame with opcode {other}"),
            }
        }
    }

    /// The first byte and payload of the next complete frame in the input.
    fn next_frame(&mut self) -> Option<(u8, Range<usize>)> {
        let data = &self.input[self.start..self.end];
        if data.len() < 2 {
            return None;
        }
        assert!(data[0] & 0x80 != 0, "fragmented messages are not expected");
        assert!(data[0] & 0x30 == 0, "RSV2 or RSV3 set");
        assert!(data[1] & 0x80 == 0, "the server masked a frame");
        let (header, len) = match data[1] & 0x7f {
            126 if data.len() >= 4 => (4, u16::from_be_bytes([data[2], data[3]]) as usize),
            127 if data.len() >= 10 => (
                10,
                u64::from_be_bytes(data[2..10].try_into().unwrap()) as usize,
            ),
            126 | 127 => return None,
            len => (2, len as usize),
        };
        if data.len() < header + len {
            return None;
        }
        let first = data[0];
        let payload = self.start + header..self.start + header + len;
        self.start = payload.end;
        Some((first, payload))
    }

    /// The bytes of a payload returned by [`frame`](Self::frame).
    pub fn payload(&self, range: Range<usize>) -> &[u8] {
        &self.input[range]
    }

    /// Waits for the next text or binary frame.
    pub async fn next_data(&mut self) -> Range<usize> {
        self.next_data_frame().await.payload
    }

    /// Waits for the next text or binary frame, with its RSV1 bit.
    pub async fn next_data_frame(&mut self) -> Frame {
        // The clock is read only once a frame is not already here: in a
        // burst most are, and a clock read per message was the largest
        // single cost in the load generator's profile.
        let mut began = None;
        loop {
            if let Some(frame) = self.data_frame() {
                return frame;
            }
            let began = *began.get_or_insert_with(Instant::now);
            assert!(began.elapsed() < LIMIT, "no message within {LIMIT:?}");
            self.flush().await;
            self.fill().await;
        }
    }

    /// Sends a close frame and waits (briefly) for the server's close or EOF,
    /// so that the server sees an orderly close rather than a reset.
    pub async fn close(mut self) {
        self.queue(0x8, &1000u16.to_be_bytes());
        self.flush().await;
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(5) {
            while let Some((first, _)) = self.next_frame() {
                if first & 0x0f == 0x8 {
                    return;
                }
            }
            match self.try_fill(Duration::from_secs(5)).await {
                Some(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
    }
}

/// A 64-byte text payload `c00007 s0000002a ` plus filler: the sequence
/// number sits in hex at a fixed place, so an echo is checked cheaply.
pub struct Payload {
    bytes: [u8; 64],
}

const SEQ_AT: usize = 8;

impl Payload {
    /// The payload for connection `conn`, sequence 0.
    pub fn new(conn: usize) -> Payload {
        let mut bytes = [0u8; 64];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = b'a' + (i % 26) as u8;
        }
        let head = format!("c{:05} s00000000 ", conn % 100_000);
        bytes[..head.len()].copy_from_slice(head.as_bytes());
        Payload { bytes }
    }

    /// Puts `seq` in the payload.
    pub fn set(&mut self, seq: u32) -> &[u8] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for i in 0..8 {
            self.bytes[SEQ_AT + i] = HEX[(seq >> (28 - 4 * i)) as usize & 0xf];
        }
        &self.bytes
    }

    /// Checks that `echo` carries `seq`: the number always, every byte when `full`.
    pub fn check(&mut self, echo: &[u8], seq: u32, full: bool) {
        assert_eq!(echo.len(), 64, "an echo of the wrong length");
        let mut got = 0u32;
        for &digit in &echo[SEQ_AT..SEQ_AT + 8] {
            let value = (digit as char).to_digit(16).expect("a hex sequence number");
            got = got << 4 | value;
        }
        assert_eq!(got, seq, "echoes out of order or missing");
        if full {
            assert_eq!(echo, self.set(seq), "an echo with different content");
        }
    }
}

/// Sends `message` and waits for its echo, which must be the same message
/// (same kind, same bytes); pings and pongs on the way are skipped.
pub async fn round_trip(client: &mut Client, message: &Message) -> Result<(), String> {
    let exchange = async {
        client
            .send(message.clone())
            .await
            .map_err(|e| format!("send: {e}"))?;
        loop {
            match client.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(echo @ (Message::Text(_) | Message::Binary(_)))) => {
                    return if echo == *message {
                        Ok(())
                    } else {
                        Err(format!(
                            "an echo that differs from the message: {} bytes back for {}",
                            echo.len(),
                            message.len()
                        ))
                    };
                }
                Some(Ok(other)) => return Err(format!("unexpected answer {other:?}")),
                Some(Err(e)) => return Err(format!("read: {e}")),
                None => return Err("closed by the server".to_string()),
            }
        }
    };
    tokio::time::timeout(LIMIT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no echo within {LIMIT:?}")))
}

/// `payload` compressed as one message, as a browser does: zlib's default
/// level, a fresh context, a sync flush, its `00 00 FF FF` taken off.
pub fn deflate(payload: &[u8]) -> Vec<u8> {
    let mut compressor = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(payload.len() + payload.len() / 8 + 64);
    for _ in 0..64 {
        let taken = compressor.total_in() as usize;
        compressor
            .compress_vec(&payload[taken..], &mut out, FlushCompress::Sync)
            .expect("compress");
        if compressor.total_in() as usize == payload.len() && out.len() < out.capacity() {
            let body = out.strip_suffix(&TAIL).expect("a sync flush's tail").len();
            out.truncate(body);
            return out;
        }
        out.reserve(out.capacity());
    }
    panic!("compressing {} bytes made no progress", payload.len());
}

/// A compressed message's payload inflated with a fresh context; panics if
/// it is not valid DEFLATE.
pub fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut inflater = Decompress::new(false);
    let input = [payload, &TAIL[..]].concat();
    let mut out = Vec::with_capacity(payload.len() * 4 + 64);
    for _ in 0..64 {
        let taken = inflater.total_in() as usize;
        inflater
            .decompress_vec(&input[taken..], &mut out, FlushDecompress::Sync)
            .expect("the server's compressed message inflates");
        if inflater.total_in() as usize == input.len() && out.len() < out.capacity() {
            return out;
        }
        out.reserve(out.capacity());
    }
    panic!("inflating {} bytes made no progress", payload.len());
}
