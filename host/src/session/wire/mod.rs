//! A session's socket: inbound frames parsed by [`Reader`], outbound frames
//! written here, and the two never cut into each other's frames.
//!
//! Data messages are framed straight into one output buffer per connection,
//! header and payload. Control frames (the pongs and close echoes that
//! answer the client, the session's pings and close frames) wait in a side
//! buffer that joins the output only between two whole data frames, so a
//! pong answered while a large message is half written never lands inside
//! it. Neither direction goes through tungstenite's framing: a frame costs
//! here only its header and a copy (or none, for a large payload), where
//! tungstenite's path adds a `Frame` per message, its own buffers and a waker
//! registration on every poll, per subscriber of every publish.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::deflate;
use super::gate::Gate;
use super::reader::Reader;
use super::spares::Spares;
use crate::extensions::MAX_WINDOW_BITS;
use crate::metrics::Traffic;
use crate::outbox::Outbound;

/// Stop framing more messages once this much output is waiting: a burst
/// leaves in writes of about this size, and a connection's buffer stays
/// near it however long the burst.
const BATCH: usize = 64 * 1024;

/// Payloads at least this large are written from their own bytes rather than
/// copied into the output buffer: the copy would cost more than the extra
/// entry in a vectored write.
const LARGE: usize = 16 * 1024;

/// Output buffers kept for the connections that need one next, and the
/// largest kept: an idle connection holds no output buffer, and a busy one
/// takes a warm buffer instead of growing a new one at every burst.
const SPARES: usize = 16;
const SPARE_CAPACITY: usize = 2 * (BATCH + LARGE);

/// Output buffers given back by connections that went idle.
static SPARE: Spares<Vec<u8>> = Spares::new(SPARES);

/// Reads pause while this much output waits. Framing data never leaves more
/// than [`BATCH`] plus one message under [`LARGE`], so only control frames
/// can go past it: the pongs and close echoes of a peer that sends pings
/// without reading the answers. Its socket then fills instead of our memory.
const READ_PAUSE: usize = BATCH + LARGE + 16 * 1024;

/// Set on a data frame's first byte when its message is compressed.
const RSV1: u8 = 0x40;

/// How a connection that negotiated permessage-deflate compresses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Compression {
    /// The window agreed with the client, in bits.
    pub(crate) window_bits: u8,
    /// Messages shorter than this go uncompressed.
    pub(crate) threshold: usize,
}

/// One connection's socket after the handshake: inbound frames parsed in its
/// read buffer, outbound messages framed into one buffer and written from it.
pub(crate) struct Wire<S> {
    io: S,
    reader: Reader,
    read_gate: Arc<Gate>,
    /// Control frames waiting to join the output between two data frames.
    control: Vec<u8>,
    /// A close frame has been framed: nothing but a close answer follows.
    close_sent: bool,
    /// What [`Self::buffered_data`] met after the data it took: the next
    /// thing [`Self::poll_read`] returns.
    held: Option<Result<WsMessage, WsError>>,
    /// Whole frames waiting for the socket, from `written` on.
    out: Vec<u8>,
    written: usize,
    /// A large payload whose frame header ends `out`, and how much of it the
    /// socket has taken. Nothing joins `out` until it is written.
    tail: Option<(Bytes, usize)>,
    /// The socket has taken bytes since it was last flushed.
    unflushed: bool,
    /// Set if the client negotiated permessage-deflate.
    compression: Option<Compression>,
}

impl<S> Wire<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Takes over `io`, a connection whose handshake is done, whose messages
    /// may have up to `max_message` bytes, compressed as it negotiated.
    pub(crate) fn new(io: S, max_message: usize, compression: Option<Compression>) -> Self {
        Wire {
            io,
            reader: Reader::new(max_message, compression.is_some()),
            read_gate: Gate::new(),
            control: Vec::new(),
            close_sent: false,
            held: None,
            out: Vec::new(),
            written: 0,
            tail: None,
            unflushed: false,
            compression,
        }
    }

    /// The next inbound message. The answer to a ping or a close frame is
    /// ready to write when this returns it; `None` is the socket's end.
    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<WsMessage, WsError>>> {
        if self.waiting() >= READ_PAUSE {
            // The write side is stuck (its waker is registered with the
            // socket) and polls this again once it has written.
            return Poll::Pending;
        }
        if let Some(next) = self.held.take() {
            return Poll::Ready(Some(next));
        }
        let gate = self.read_gate.clone();
        gate.poll(cx, |cx| self.poll_next(cx))
    }

    /// The next data message already in the read buffer, without reading
    /// the socket: a session takes a burst of messages in one turn of its
    /// loop this way. Anything else found there waits for `poll_read`.
    pub(crate) fn buffered_data(&mut self) -> Option<WsMessage> {
        if self.held.is_some() {
            return None;
        }
        match self.reader.next() {
            Ok(Some(msg @ (WsMessage::Text(_) | WsMessage::Binary(_)))) => Some(msg),
            Ok(Some(msg)) => {
                self.answer(&msg);
                self.held = Some(Ok(msg));
                None
            }
            Ok(None) => None,
            Err(error) => {
                self.held = Some(Err(error));
                None
            }
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<WsMessage, WsError>>> {
        loop {
            match self.reader.next() {
                Err(error) => return Poll::Ready(Some(Err(error))),
                Ok(Some(msg)) => {
                    self.answer(&msg);
                    return Poll::Ready(Some(Ok(msg)));
                }
                Ok(None) => {}
            }
            self.reader.reserve();
            let read =
                tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.reader.buf);
            match ready!(read) {
                Ok(0) => return Poll::Ready(None),
                Ok(_) => {}
                Err(error) => return Poll::Ready(Some(Err(WsError::Io(error)))),
            }
        }
    }

    /// Answers a ping with a pong, and a close frame with its echo, unless
    /// our own close frame has gone out (RFC 6455 5.5.1-5.5.3).
    fn answer(&mut self, msg: &WsMessage) {
        if self.close_sent {
            return;
        }
        match msg {
            WsMessage::Ping(payload) => self.control_frame(0xA, &[payload]),
            WsMessage::Close(frame) => {
                let code = frame.as_ref().map(|f| u16::from(f.code).to_be_bytes());
                self.control_frame(0x8, &[code.as_ref().map_or(&[][..], |c| &c[..])]);
                self.close_sent = true;
            }
            _ => {}
        }
    }

    /// Adds a control frame made of `parts` to the side buffer.
    fn control_frame(&mut self, opcode: u8, parts: &[&[u8]]) {
        header(
            &mut self.control,
            opcode,
            parts.iter().map(|p| p.len()).sum(),
        );
        for part in parts {
            self.control.extend_from_slice(part);
        }
    }

    /// The bytes waiting to be written in our own buffers.
    fn waiting(&self) -> usize {
        self.out.len() - self.written + self.control.len()
    }

    /// Whether anything is waiting to be written.
    pub(crate) fn has_output(&self) -> bool {
        self.written < self.out.len() || self.tail.is_some() || !self.control.is_empty()
    }

    /// Frames messages from the front of `queue` until about [`BATCH`] bytes
    /// wait or a large payload is next to write. Data messages are counted in
    /// `sent`; control frames go to the side buffer.
    pub(crate) fn frame(&mut self, queue: &mut VecDeque<Outbound>, sent: &mut Traffic) {
        if self.out.capacity() == 0 {
            self.out = SPARE.take().unwrap_or_default();
        }
        self.take_control();
        while !self.full() {
            match queue.front_mut() {
                None => break,
                Some(Outbound::Run { messages, next }) => {
                    // A shared run: frame from it in place, up to the batch.
                    while *next < messages.len() && !self.full() {
                        let shared = &messages[*next];
                        self.data(&shared.msg, Some(&shared.deflated), sent);
                        *next += 1;
                    }
                    if *next == messages.len() {
                        queue.pop_front();
                    }
                }
                Some(Outbound::One(_)) => {
                    let Some(Outbound::One(msg)) = queue.pop_front() else {
                        unreachable!("the front was one message");
                    };
                    if !self.data(&msg, None, sent) {
                        self.control(&msg);
                    }
                }
            }
        }
    }

    /// Whether framing must wait for the socket: a batch is waiting, or a
    /// large payload must be written before anything follows its header.
    fn full(&self) -> bool {
        self.tail.is_some() || self.out.len() - self.written >= BATCH
    }

    /// Frames `msg` if it is a data message; payloads of [`LARGE`] bytes or
    /// more are written later from their own bytes, not copied. A message
    /// shared with other subscribers brings the place its compressed form is
    /// kept, `deflated`, so that it is compressed once for all of them.
    fn data(
        &mut self,
        msg: &WsMessage,
        deflated: Option<&OnceLock<Option<Bytes>>>,
        sent: &mut Traffic,
    ) -> bool {
        let (opcode, payload): (u8, &[u8]) = match msg {
            WsMessage::Text(text) => (0x1, text.as_bytes()),
            WsMessage::Binary(bytes) => (0x2, bytes),
            _ => return false,
        };
        let packed = self
            .compression
            .filter(|c| payload.len() >= c.threshold)
            .and_then(|c| match deflated {
                Some(shared) if c.window_bits == MAX_WINDOW_BITS => shared
                    .get_or_init(|| deflate::compress(payload, MAX_WINDOW_BITS))
                    .clone(),
                _ => deflate::compress(payload, c.window_bits),
            });
        if let Some(packed) = packed {
            sent.count_compressed(payload.len(), packed.len());
            header(&mut self.out, RSV1 | opcode, packed.len());
            if packed.len() >= LARGE {
                self.tail = Some((packed, 0));
            } else {
                self.out.extend_from_slice(&packed);
            }
            return true;
        }
        sent.count(payload.len());
        header(&mut self.out, opcode, payload.len());
        if payload.len() >= LARGE {
            // Another reference to the same bytes.
            self.tail = Some((msg.clone().into_data(), 0));
        } else {
            self.out.extend_from_slice(payload);
        }
        true
    }

    /// Frames a control message the session sends: a ping, or its close
    /// frame (once; a close answered already ends what may be sent).
    fn control(&mut self, msg: &WsMessage) {
        match msg {
            WsMessage::Ping(payload) if !self.close_sent => self.control_frame(0x9, &[payload]),
            WsMessage::Pong(payload) if !self.close_sent => self.control_frame(0xA, &[payload]),
            WsMessage::Close(frame) if !self.close_sent => {
                match frame {
                    Some(frame) => {
                        let code = u16::from(frame.code).to_be_bytes();
                        self.control_frame(0x8, &[&code, frame.reason.as_bytes()]);
                    }
                    None => self.control_frame(0x8, &[]),
                }
                self.close_sent = true;
            }
            _ => {}
        }
    }

    /// Writes until nothing waits: data frames and control frames, each only
    /// between whole frames of the other.
    pub(crate) fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            self.take_control();
            let head = &self.out[self.written..];
            let tail = self
                .tail
                .as_ref()
                .map_or(&[][..], |(bytes, at)| &bytes[*at..]);
            if head.is_empty() && tail.is_empty() {
                self.out.clear();
                self.written = 0;
                self.tail = None;
                return Poll::Ready(Ok(()));
            }
            let io = Pin::new(&mut self.io);
            let n = if head.is_empty() {
                ready!(io.poll_write(cx, tail))?
            } else if tail.is_empty() || !io.is_write_vectored() {
                ready!(io.poll_write(cx, head))?
            } else {
                ready!(io.poll_write_vectored(cx, &[IoSlice::new(head), IoSlice::new(tail)]))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.unflushed = true;
            let from_head = n.min(head.len());
            self.written += from_head;
            if let Some((_, at)) = &mut self.tail {
                *at += n - from_head;
            }
            if self.written == self.out.len() {
                self.out.clear();
                self.written = 0;
                if self
                    .tail
                    .as_ref()
                    .is_some_and(|(bytes, at)| *at == bytes.len())
                {
                    self.tail = None;
                }
            }
        }
    }

    /// Flushes the socket if it has taken bytes since the last flush.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.unflushed {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Writes and flushes everything `queue` and the output hold.
    pub(crate) async fn drain(
        &mut self,
        queue: &mut VecDeque<Outbound>,
        sent: &mut Traffic,
    ) -> Result<(), WsError> {
        std::future::poll_fn(|cx| {
            loop {
                ready!(self.poll_write(cx))?;
                if queue.is_empty() {
                    break;
                }
                self.frame(queue, sent);
            }
            self.poll_flush(cx).map_err(WsError::from)
        })
        .await
    }

    /// Hands the output buffer to the thread's spares once everything is
    /// written, so that an idle connection holds none (it would otherwise
    /// keep its last burst's size until the next ping tick).
    pub(crate) fn settle(&mut self) {
        if self.out.capacity() == 0 || self.has_output() {
            return;
        }
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        self.written = 0;
        if out.capacity() <= SPARE_CAPACITY {
            SPARE.give(out);
        }
    }

    /// Gives back the memory a burst grew, if nothing waits to be written.
    pub(crate) fn shrink(&mut self) {
        if !self.has_output() {
            self.out = Vec::new();
            self.control = Vec::new();
            self.reader.shrink();
        }
    }

    /// Moves waiting control frames to the output, unless a large payload is
    /// still being written after its header.
    fn take_control(&mut self) {
        if self.tail.is_some() || self.control.is_empty() {
            return;
        }
        self.out.extend_from_slice(&self.control);
        self.control.clear();
    }
}

/// Appends a server frame's header (FIN set, unmasked: RFC 6455 5.2) for a
/// payload of `len` bytes; `opcode` may carry [`RSV1`].
fn header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    match len {
        0..=125 => out.push(len as u8),
        126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests;
