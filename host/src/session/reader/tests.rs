//! Unit tests of `reader`.

use super::*;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame: `first` is the first header byte (FIN, RSV, opcode).
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

fn reader() -> Reader {
    Reader::new(1 << 20, false)
}

/// Feeds `bytes` one at a time and collects what comes out, up to the
/// first error.
fn trickle(reader: &mut Reader, bytes: &[u8]) -> Result<Vec<WsMessage>, WsError> {
    let mut out = Vec::new();
    for &byte in bytes {
        reader.buf.extend_from_slice(&[byte]);
        while let Some(msg) = reader.next()? {
            out.push(msg);
        }
    }
    Ok(out)
}

fn protocol(result: Result<Vec<WsMessage>, WsError>) -> bool {
    matches!(result, Err(WsError::Protocol(_)))
}

#[test]
fn messages_of_every_length_class_arrive_whole_in_any_split() {
    for len in [0, 1, 125, 126, 65535, 65536, 100_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let bytes = frame(0x82, &payload);
        let mut whole = reader();
        whole.buf.extend_from_slice(&bytes);
        assert_eq!(
            whole.next().unwrap(),
            Some(WsMessage::binary(payload.clone()))
        );
        if len < 1000 {
            let got = trickle(&mut reader(), &bytes).unwrap();
            assert_eq!(got, vec![WsMessage::binary(payload)]);
        }
    }
}

#[test]
fn fragments_join_around_control_frames() {
    let mut bytes = frame(0x01, "héllo ".as_bytes());
    bytes.extend(frame(0x89, b"ping"));
    // "wörld" cut inside the two-byte "ö".
    let word = "wörld".as_bytes();
    bytes.extend(frame(0x00, &word[..2]));
    bytes.extend(frame(0x80, &word[2..]));
    let got = trickle(&mut reader(), &bytes).unwrap();
    assert_eq!(
        got,
        vec![
            WsMessage::Ping(Bytes::from_static(b"ping")),
            WsMessage::text("héllo wörld")
        ]
    );
}

#[test]
fn bad_text_fails_at_its_first_bad_byte_before_the_frame_is_whole() {
    let mut payload = b"fine so far".to_vec();
    payload.push(0xFF);
    payload.extend_from_slice(&[b'x'; 100]);
    let bytes = frame(0x81, &payload);
    let mut reader = reader();
    // Header and the text up to and including the bad byte.
    let upto = bytes.len() - 100;
    assert!(trickle(&mut reader, &bytes[..upto - 1]).unwrap().is_empty());
    assert!(matches!(
        trickle(&mut reader, &bytes[upto - 1..upto]),
        Err(WsError::Utf8(_))
    ));
    // A message that ends inside a character is not text either.
    let mut cut = frame(0x01, b"ok");
    cut.extend(frame(0x80, &"ö".as_bytes()[..1]));
    assert!(matches!(
        trickle(&mut self::reader(), &cut),
        Err(WsError::Utf8(_))
    ));
}

#[test]
fn what_rfc_6455_forbids_is_a_protocol_error() {
    let mut unmasked = frame(0x81, b"hi");
    unmasked[1] &= 0x7F;
    for bytes in [
        frame(0xC1, b"rsv1"),
        frame(0x83, b"reserved data opcode"),
        frame(0x8B, b"reserved control opcode"),
        frame(0x09, b"fragmented ping"),
        frame(0x89, &[0; 126]),
        frame(0x80, b"continuation of nothing"),
        [frame(0x01, b"a"), frame(0x81, b"b")].concat(),
        frame(0x88, &[0x03]),
        frame(0x88, &1005u16.to_be_bytes()),
        frame(0x88, &999u16.to_be_bytes()),
        unmasked,
    ] {
        assert!(protocol(trickle(&mut reader(), &bytes)), "{bytes:x?}");
    }
}

#[test]
fn close_frames_carry_a_checked_code_and_reason() {
    let mut payload = 4000u16.to_be_bytes().to_vec();
    payload.extend_from_slice("bye ✓".as_bytes());
    let got = trickle(&mut reader(), &frame(0x88, &payload)).unwrap();
    let Some(WsMessage::Close(Some(close))) = got.first() else {
        panic!("{got:?}");
    };
    assert_eq!(
        (u16::from(close.code), close.reason.as_str()),
        (4000, "bye ✓")
    );
    assert_eq!(
        trickle(&mut reader(), &frame(0x88, b"")).unwrap(),
        vec![WsMessage::Close(None)]
    );
    // Registered after RFC 6455, and tungstenite's check refuses it.
    assert!(trickle(&mut reader(), &frame(0x88, &1014u16.to_be_bytes())).is_ok());
    let mut bad = 1000u16.to_be_bytes().to_vec();
    bad.push(0xFF);
    assert!(matches!(
        trickle(&mut reader(), &frame(0x88, &bad)),
        Err(WsError::Utf8(_))
    ));
}

#[test]
fn an_oversized_message_is_refused_from_its_header() {
    let mut small = Reader::new(100, false);
    // Only the header of a 1 MiB frame: refused before any payload.
    let bytes = frame(0x82, &vec![0; 1 << 20]);
    small.buf.extend_from_slice(&bytes[..14]);
    assert!(matches!(small.next(), Err(WsError::Capacity(_))));
    // Fragments that together pass the limit.
    let mut small = Reader::new(100, false);
    small
        .buf
        .extend_from_slice(&[frame(0x02, &[0; 60]), frame(0x80, &[0; 60])].concat());
    assert!(matches!(small.next(), Err(WsError::Capacity(_))));
}

#[test]
fn utf8_pieces_carry_characters_across_any_cut() {
    let text = "aé€😀z".as_bytes();
    for cut in 0..=text.len() {
        let mut stream = Utf8Stream::default();
        assert!(stream.feed(&text[..cut]).is_ok());
        assert!(stream.feed(&text[cut..]).is_ok());
        assert!(stream.is_whole(), "cut at {cut}");
    }
    let mut stream = Utf8Stream::default();
    assert!(stream.feed(&[0xE2, 0x82]).is_ok());
    assert!(stream.feed(&[0x41]).is_err());
}
