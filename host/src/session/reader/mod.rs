//! Inbound WebSocket frames, parsed and checked in the session's read buffer.
//!
//! A client's frames are unmasked in place and a complete message leaves the
//! buffer as a slice of it (no copy for a message that came in one frame).
//! Every rule of RFC 6455 section 5 that a server must enforce is checked
//! here, and text is checked as UTF-8 while it arrives, across fragments and
//! within a frame still being received, so that a client sending bad text is
//! refused at the first bad byte rather than after its message is whole.
//! Sizes are checked from the frame header, before any payload is buffered.
//!
//! With permessage-deflate, a message whose first frame sets RSV1 is
//! compressed: its frames are gathered as they are (their size counts
//! against the cap too), and the whole message is inflated when its last
//! frame is in, up to the cap and no further, then checked as text.

use super::deflate::{self, InflateError};
use bytes::{Buf, Bytes, BytesMut};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data};

/// Read buffer size: a server holds many connections, and the read buffer is
/// most of an idle one's memory; a larger one does not read small messages
/// faster.
pub(crate) const READ_BUFFER: usize = 4 * 1024;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The frame whose header is parsed and whose payload is arriving.
struct Head {
    opcode: u8,
    fin: bool,
    mask: [u8; 4],
    /// Header bytes before the payload in the buffer.
    header: usize,
    len: usize,
    /// Payload bytes already unmasked (and, for text, checked).
    done: usize,
}

/// The parsing state of one connection's inbound side.
pub(crate) struct Reader {
    /// Bytes read from the socket and not yet handed on.
    pub(crate) buf: BytesMut,
    max_message: usize,
    frame: Option<Head>,
    /// A message whose later fragments are still to come: whether it is
    /// text, and its bytes so far.
    partial: Option<(bool, BytesMut)>,
    /// Whether the data frame arriving carries text.
    text: bool,
    utf8: Utf8Stream,
    /// permessage-deflate was negotiated: RSV1 marks a compressed message.
    deflate: bool,
    /// Whether the data message arriving is compressed.
    compressed: bool,
}

impl Reader {
    /// A reader that refuses messages over `max_message` bytes, compressed
    /// or inflated, and takes compressed ones if `deflate` was negotiated.
    pub(crate) fn new(max_message: usize, deflate: bool) -> Self {
        Reader {
            buf: BytesMut::with_capacity(READ_BUFFER),
            max_message,
            frame: None,
            partial: None,
            text: false,
            utf8: Utf8Stream::default(),
            deflate,
            compressed: false,
        }
    }

    /// Makes room for the next read: at least the rest of the frame under
    /// way, else a buffer's worth.
    pub(crate) fn reserve(&mut self) {
        let wanted = match &self.frame {
            Some(head) => (head.header + head.len).saturating_sub(self.buf.len()),
            None => 0,
        };
        let spare = self.buf.capacity() - self.buf.len();
        if spare < wanted.max(READ_BUFFER / 4) {
            self.buf.reserve(wanted.max(READ_BUFFER));
        }
    }

    /// Gives back the memory a burst grew, if nothing is buffered.
    pub(crate) fn shrink(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > READ_BUFFER {
            self.buf = BytesMut::with_capacity(READ_BUFFER);
        }
    }

    /// The next whole message or control frame in the buffer, `None` if more
    /// bytes are needed first.
    pub(crate) fn next(&mut self) -> Result<Option<WsMessage>, WsError> {
        loop {
            if self.frame.is_none() {
                match self.head()? {
                    Some(head) => self.frame = Some(head),
                    None => return Ok(None),
                }
            }
            let head = self.frame.as_mut().expect("set above");
            let arrived = (self.buf.len() - head.header).min(head.len);
            if arrived > head.done {
                let from = head.header + head.done;
                let to = head.header + arrived;
                unmask(&mut self.buf[from..to], head.mask, head.done);
                let carries_text = !self.compressed
                    && (head.opcode == TEXT || (head.opcode == CONTINUATION && self.text));
                if carries_text && self.utf8.feed(&self.buf[from..to]).is_err() {
                    return Err(invalid_utf8());
                }
                head.done = arrived;
            }
            if head.done < head.len {
                return Ok(None);
            }
            let Head {
                opcode,
                fin,
                header,
                len,
                ..
            } = self.frame.take().expect("set above");
            let mut payload = self.buf.split_to(header + len);
            payload.advance(header);
            match opcode {
                PING => return Ok(Some(WsMessage::Ping(payload.freeze()))),
                PONG => return Ok(Some(WsMessage::Pong(payload.freeze()))),
                CLOSE => return close(payload.freeze()).map(Some),
                TEXT | BINARY if fin => return self.finish(opcode == TEXT, payload).map(Some),
                TEXT | BINARY => self.partial = Some((opcode == TEXT, payload)),
                _ => {
                    let (text, mut bytes) = self.partial.take().expect("checked by head()");
                    bytes.extend_from_slice(&payload);
                    if fin {
                        return self.finish(text, bytes).map(Some);
                    }
                    self.partial = Some((text, bytes));
                }
            }
        }
    }

    /// Parses and checks the header at the front of the buffer, if whole.
    fn head(&mut self) -> Result<Option<Head>, WsError> {
        let buf = &self.buf[..];
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        // RSV1 marks the first frame of a compressed message, once
        // permessage-deflate is negotiated; no other reserved bit has a use.
        let rsv1 = b0 & 0x40 != 0;
        if b0 & 0x30 != 0 || (rsv1 && !(self.deflate && matches!(opcode, TEXT | BINARY))) {
            return Err(WsError::Protocol(ProtocolError::NonZeroReservedBits));
        }
        if b1 & 0x80 == 0 {
            return Err(WsError::Protocol(ProtocolError::UnmaskedFrameFromClient));
        }
        let (extra, short) = match b1 & 0x7F {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(n as u64)),
        };
        let header = 2 + extra + 4;
        if buf.len() < header {
            return Ok(None);
        }
        let len = match short {
            Some(n) => n,
            None if extra == 2 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
            None => u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")),
        };
        let mask = buf[2 + extra..header].try_into().expect("4 bytes");
        match opcode {
            CLOSE | PING | PONG => {
                if !fin {
                    return Err(WsError::Protocol(ProtocolError::FragmentedControlFrame));
                }
                if len > 125 {
                    return Err(WsError::Protocol(ProtocolError::ControlFrameTooBig));
                }
            }
            TEXT | BINARY | CONTINUATION => {
                match (&self.partial, opcode) {
                    (None, CONTINUATION) => {
                        return Err(WsError::Protocol(ProtocolError::UnexpectedContinueFrame));
                    }
                    (Some((text, _)), TEXT | BINARY) => {
                        let data = if *text { Data::Text } else { Data::Binary };
                        return Err(WsError::Protocol(ProtocolError::ExpectedFragment(data)));
                    }
                    _ => {}
                }
                let before = self.partial.as_ref().map_or(0, |(_, bytes)| bytes.len());
                let size = usize::try_from(len)
                    .unwrap_or(usize::MAX)
                    .saturating_add(before);
                if size > self.max_message {
                    return Err(WsError::Capacity(CapacityError::MessageTooLong {
                        size,
                        max_size: self.max_message,
                    }));
                }
                if opcode != CONTINUATION {
                    self.text = opcode == TEXT;
                    self.compressed = rsv1;
                    self.utf8 = Utf8Stream::default();
                }
            }
            0x3..=0x7 => {
                return Err(WsError::Protocol(ProtocolError::UnknownDataFrameType(
                    opcode,
                )));
            }
            _ => {
                return Err(WsError::Protocol(ProtocolError::UnknownControlFrameType(
                    opcode,
                )));
            }
        }
        Ok(Some(Head {
            opcode,
            fin,
            mask,
            header,
            len: len as usize,
            done: 0,
        }))
    }

    /// Hands on a whole data message, its text already checked unless it
    /// came compressed.
    fn finish(&mut self, text: bool, bytes: BytesMut) -> Result<WsMessage, WsError> {
        if self.compressed {
            return self.inflate(text, &bytes);
        }
        if !text {
            return Ok(WsMessage::Binary(bytes.freeze()));
        }
        if !self.utf8.is_whole() {
            return Err(invalid_utf8());
        }
        // SAFETY: every byte went through `Utf8Stream::feed`, which accepts
        // only UTF-8, and `is_whole` says no character was cut at the end.
        Ok(WsMessage::Text(unsafe {
            Utf8Bytes::from_bytes_unchecked(bytes.freeze())
        }))
    }
}

impl Reader {
    /// Inflates a compressed message and checks its text.
    fn inflate(&self, text: bool, compressed: &[u8]) -> Result<WsMessage, WsError> {
        let mut bytes = match deflate::inflate(compressed, self.max_message) {
            Ok(bytes) => bytes,
            Err(InflateError::TooLarge) => {
                return Err(WsError::Capacity(CapacityError::MessageTooLong {
                    size: self.max_message + 1,
                    max_size: self.max_message,
                }));
            }
            Err(InflateError::Corrupt) => return Err(WsError::Utf8(deflate::CORRUPT.into())),
        };
        // Growth in doublings may leave up to half the buffer spare, and a
        // message can wait in the route's queue a while.
        if bytes.capacity() - bytes.len() > READ_BUFFER {
            bytes.shrink_to_fit();
        }
        let bytes = Bytes::from(bytes);
        if !text {
            return Ok(WsMessage::Binary(bytes));
        }
        Utf8Bytes::try_from(bytes)
            .map(WsMessage::Text)
            .map_err(|_| invalid_utf8())
    }
}

fn invalid_utf8() -> WsError {
    WsError::Utf8("invalid UTF-8 in a text message".to_string())
}

/// A close frame's payload: nothing, or a code that may be sent on the wire
/// and a UTF-8 reason.
fn close(payload: Bytes) -> Result<WsMessage, WsError> {
    match payload.len() {
        0 => Ok(WsMessage::Close(None)),
        1 => Err(WsError::Protocol(ProtocolError::InvalidCloseSequence)),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !crate::close_code::sendable(code) {
                return Err(WsError::Protocol(ProtocolError::InvalidCloseSequence));
            }
            let code = CloseCode::from(code);
            let reason = Utf8Bytes::try_from(payload.slice(2..)).map_err(|_| invalid_utf8())?;
            Ok(WsMessage::Close(Some(CloseFrame { code, reason })))
        }
    }
}

/// Unmasks `bytes`, the payload from offset `at` on (RFC 6455 5.3).
fn unmask(bytes: &mut [u8], mask: [u8; 4], at: usize) {
    let mut mask = mask;
    mask.rotate_left(at % 4);
    let word = u32::from_ne_bytes(mask);
    let mut chunks = bytes.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes((&*chunk).try_into().expect("4 bytes")) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (byte, m) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= m;
    }
}

/// UTF-8 checked in pieces: a character cut between two pieces is carried
/// over, and a byte that no continuation could make valid fails at once.
#[derive(Default)]
struct Utf8Stream {
    carry: [u8; 4],
    carried: usize,
}

impl Utf8Stream {
    /// Checks the next bytes of the text.
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), ()> {
        if self.carried > 0 {
            let width = match self.carry[0] {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            let take = (width - self.carried).min(bytes.len());
            self.carry[self.carried..self.carried + take].copy_from_slice(&bytes[..take]);
            self.carried += take;
            bytes = &bytes[take..];
            match std::str::from_utf8(&self.carry[..self.carried]) {
                Ok(_) => self.carried = 0,
                // Still short of a whole character, and no bytes left.
                Err(error) if error.error_len().is_none() => return Ok(()),
                Err(_) => return Err(()),
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(error) if error.error_len().is_none() => {
                let rest = &bytes[error.valid_up_to()..];
                self.carry[..rest.len()].copy_from_slice(rest);
                self.carried = rest.len();
                Ok(())
            }
            Err(_) => Err(()),
        }
    }

    /// Whether the text so far ends on a whole character.
    fn is_whole(&self) -> bool {
        self.carried == 0
    }
}

#[cfg(test)]
mod tests;
