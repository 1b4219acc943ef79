//! The bytes a publish travels in between nodes: a 10-byte header, then the
//! message as it was published.
//!
//! ```text
//! byte 0     version: 1
//! byte 1     kind: 0 text (UTF-8), 1 binary
//! bytes 2-9  the publishing node's id, big-endian
//! bytes 10-  the message
//! ```
//!
//! The node id lets a node skip its own publishes when Redis hands them back
//! (it has delivered them locally already); the kind keeps text and binary
//! apart, which a Redis payload alone cannot.

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// The envelope layout this build writes and reads.
const VERSION: u8 = 1;
const TEXT: u8 = 0;
const BINARY: u8 = 1;
/// Version, kind and node id.
pub(super) const HEADER: usize = 10;

/// Why a payload from Redis is not a message this node can deliver.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum EnvelopeError {
    /// Shorter than the header: not written by berth.
    #[error("{0} bytes, shorter than an envelope header")]
    Short(usize),
    /// Another layout (a newer berth), or not written by berth.
    #[error("unknown envelope version {0}")]
    Version(u8),
    /// Neither text nor binary.
    #[error("unknown message kind {0}")]
    Kind(u8),
    /// A text message that is not UTF-8.
    #[error("a text message that is not UTF-8")]
    NotUtf8,
}

/// `msg`, published on `node`, as an envelope; `None` for anything but text
/// and binary messages (plugins can publish nothing else).
pub(super) fn encode(node: u64, msg: &WsMessage) -> Option<Vec<u8>> {
    let (kind, body): (u8, &[u8]) = match msg {
        WsMessage::Text(text) => (TEXT, text.as_bytes()),
        WsMessage::Binary(bytes) => (BINARY, bytes),
        _ => return None,
    };
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&node.to_be_bytes());
    out.extend_from_slice(body);
    Some(out)
}

/// The publishing node and the message in `payload`.
pub(super) fn decode(payload: &[u8]) -> Result<(u64, WsMessage), EnvelopeError> {
    if payload.len() < HEADER {
        return Err(EnvelopeError::Short(payload.len()));
    }
    if payload[0] != VERSION {
        return Err(EnvelopeError::Version(payload[0]));
    }
    let node = u64::from_be_bytes(payload[2..HEADER].try_into().expect("eight bytes"));
    let body = Bytes::copy_from_slice(&payload[HEADER..]);
    let msg = match payload[1] {
        TEXT => WsMessage::Text(Utf8Bytes::try_from(body).map_err(|_| EnvelopeError::NotUtf8)?),
        BINARY => WsMessage::Binary(body),
        kind => return Err(EnvelopeError::Kind(kind)),
    };
    Ok((node, msg))
}

/// The publishing node of `payload`, read without decoding the message, so
/// that a node's own publishes coming back cost nothing more.
pub(super) fn node_of(payload: &[u8]) -> Option<u64> {
    let id = payload.get(2..HEADER)?;
    Some(u64::from_be_bytes(id.try_into().expect("eight bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_binary_round_trip_with_their_node() {
        for msg in [
            WsMessage::text("héllo"),
            WsMessage::text(""),
            WsMessage::binary(vec![0u8, 255, 1]),
            WsMessage::binary(Vec::new()),
        ] {
            let bytes = encode(0xdead_beef_0000_0001, &msg).expect("data messages encode");
            assert_eq!(node_of(&bytes), Some(0xdead_beef_0000_0001));
            assert_eq!(decode(&bytes), Ok((0xdead_beef_0000_0001, msg)));
        }
        assert_eq!(encode(1, &WsMessage::Ping(Bytes::new())), None);
    }

    #[test]
    fn the_header_layout_is_fixed() {
        let bytes = encode(0x0102_0304_0506_0708, &WsMessage::text("hi")).unwrap();
        assert_eq!(bytes, [1, 0, 1, 2, 3, 4, 5, 6, 7, 8, b'h', b'i']);
    }

    #[test]
    fn foreign_payloads_are_refused() {
        assert_eq!(decode(b"hello"), Err(EnvelopeError::Short(5)));
        assert_eq!(
            decode(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(EnvelopeError::Version(2))
        );
        assert_eq!(
            decode(&[1, 7, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(EnvelopeError::Kind(7))
        );
        assert_eq!(
            decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff]),
            Err(EnvelopeError::NotUtf8)
        );
    }
}
