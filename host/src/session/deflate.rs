//! permessage-deflate's codec: one message in, one message out, with a hard
//! cap on what inflating may produce.
//!
//! No context is kept between messages (see `extensions.rs`), so the
//! compressors (one kind per window size) and inflaters are shared by every
//! connection, each lent for one message: a connection holds deflate memory
//! only for the length of a call, and the pools hold no more than were in
//! use at once.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::spares::Spares;

/// What every compressed message ends with before its trailing bytes are
/// taken off, and what an inflater is given back at its end (RFC 7692 7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// The smallest window a compressor is kept for (see `extensions.rs`).
const MIN_WINDOW_BITS: u8 = 9;

/// Level 1: real-time messages are small and many, and the fastest level
/// keeps most of the gain on the JSON and text they carry.
const LEVEL: u32 = 1;

/// Messages the deflate library failed on (and that went uncompressed).
static LIBRARY_FAILURES: AtomicUsize = AtomicUsize::new(0);

/// The most compressors of one window size, and inflaters, kept for reuse:
/// more than the threads that serve sessions, which is as many as can be in
/// use at once.
const KEPT: usize = 64;

/// Compressors per window size, from [`MIN_WINDOW_BITS`] to 15.
static COMPRESSORS: [Spares<Compress>; 7] = [const { Spares::new(KEPT) }; 7];
/// Inflaters for the largest window, which inflates any.
static INFLATERS: Spares<Decompress> = Spares::new(KEPT);

/// What a corrupt compressed message is called in the read error that
/// closes its connection with 1007.
pub(crate) const CORRUPT: &str = "invalid compressed data";

/// Why an inbound compressed message was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// It would inflate to more than the cap.
    TooLarge,
    /// It is not a valid DEFLATE stream.
    Corrupt,
}

/// `payload` compressed as one message with a window of `window_bits`, its
/// trailing `00 00 FF FF` removed; `None` if that is not smaller.
pub(crate) fn compress(payload: &[u8], window_bits: u8) -> Option<Bytes> {
    let spares =
        &COMPRESSORS[usize::from(window_bits.clamp(MIN_WINDOW_BITS, 15) - MIN_WINDOW_BITS)];
    let mut compressor = spares.take().unwrap_or_else(|| {
        Compress::new_with_window_bits(Compression::new(LEVEL), false, window_bits)
    });
    compressor.reset();
    // Room for the worst case, so that one call always finishes: the
    // fastest level's static codes can make incompressible data an
    // eighth larger, and zlib-rs 0.6 panics in that level when its
    // output runs short mid-block rather than waiting for more room.
    let mut out = Vec::with_capacity(payload.len() + payload.len() / 8 + 64);
    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        compressor.compress_vec(payload, &mut out, FlushCompress::Sync)
    }));
    let Ok(done) = done else {
        // Its state is unknown: it is not kept, and this message goes
        // uncompressed.
        LIBRARY_FAILURES.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            len = payload.len(),
            "the deflate library failed on a message; sent uncompressed"
        );
        return None;
    };
    let whole = usize::try_from(compressor.total_in()).ok() == Some(payload.len());
    spares.give(compressor);
    if done.is_err() || !whole || out.len() == out.capacity() {
        return None;
    }
    out.truncate(out.strip_suffix(&TAIL)?.len());
    if out.len() >= payload.len() {
        return None;
    }
    out.shrink_to_fit();
    Some(Bytes::from(out))
}

/// Inflates one message's `compressed` payload, stopping as soon as it would
/// be more than `max` bytes: a small message that inflates to gigabytes costs
/// no more than the cap.
pub(crate) fn inflate(compressed: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    let mut inflater = INFLATERS
        .take()
        .unwrap_or_else(|| Decompress::new_with_window_bits(false, 15));
    let inflated = inflate_with(&mut inflater, compressed, max);
    INFLATERS.give(inflater);
    inflated
}

fn inflate_with(
    inflater: &mut Decompress,
    compressed: &[u8],
    max: usize,
) -> Result<Vec<u8>, InflateError> {
    {
        inflater.reset(false);
        // Room grows as output comes, up to one byte past the cap: reaching it
        // is how an over-long message is told apart from one of exactly `max`.
        let limit = max.saturating_add(1);
        let mut out = Vec::with_capacity(compressed.len().saturating_mul(2).max(64).min(limit));
        for (mut input, last) in [(compressed, false), (&TAIL[..], true)] {
            loop {
                if out.len() == out.capacity() {
                    if out.len() >= limit {
                        return Err(InflateError::TooLarge);
                    }
                    out.reserve_exact(out.capacity().min(limit - out.len()));
                }
                let (before_in, before_out) = (inflater.total_in(), out.len());
                let status = inflater
                    .decompress_vec(input, &mut out, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Corrupt)?;
                let took = usize::try_from(inflater.total_in() - before_in).unwrap_or(usize::MAX);
                input = &input[took.min(input.len())..];
                if out.len() > max {
                    return Err(InflateError::TooLarge);
                }
                if status == Status::StreamEnd {
                    // A final block: nothing may follow it but the tail.
                    return if last || input.is_empty() {
                        Ok(out)
                    } else {
                        Err(InflateError::Corrupt)
                    };
                }
                if out.len() < out.capacity() {
                    if input.is_empty() {
                        break;
                    }
                    if took == 0 && out.len() == before_out {
                        return Err(InflateError::Corrupt);
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| {
                format!(
                    "{{\"user\":\"u{}\",\"text\":\"hello there\",\"n\":{i}}}",
                    i % 7
                )
            })
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn round_trips_at_every_window() {
        let text = json(200);
        for bits in 9..=15 {
            let packed = compress(&text, bits).expect("JSON shrinks");
            assert!(packed.len() < text.len() / 3, "{bits}: {}", packed.len());
            assert_eq!(inflate(&packed, text.len()).unwrap(), text);
        }
    }

    #[test]
    fn incompressible_data_of_every_size_compresses_or_passes() {
        let mut state = 0x1234_5678_9ABC_DEF0u64;
        let mut noise = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        };
        // An image's bytes: a slow wave with noise on it, which the fastest
        // level's static codes make larger than it is.
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| ((f64::from(i) / 37.0).sin() * 60.0 + 128.0) as u8 + noise() % 24)
            .collect();
        for len in [16, 100, 1024, 4096, 16 << 10, 128 << 10] {
            for start in (0..data.len() - len).step_by(7919) {
                let message = &data[start..start + len];
                if let Some(packed) = compress(message, 15) {
                    assert_eq!(inflate(&packed, len).unwrap(), message);
                }
            }
        }
        assert_eq!(LIBRARY_FAILURES.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn does_not_grow_what_does_not_shrink() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        assert_eq!(compress(&noise, 15), None);
        assert_eq!(compress(b"", 15), None);
    }

    #[test]
    fn the_cap_holds_against_a_bomb() {
        let zeros = vec![0u8; 8 << 20];
        let bomb = compress(&zeros, 15).unwrap();
        assert!(bomb.len() < 128 << 10, "{}", bomb.len());
        assert_eq!(inflate(&bomb, 1 << 20), Err(InflateError::TooLarge));
        assert_eq!(inflate(&bomb, 8 << 20).unwrap().len(), 8 << 20);
        assert_eq!(inflate(&bomb, (8 << 20) - 1), Err(InflateError::TooLarge));
    }

    #[test]
    fn refuses_corrupt_input() {
        assert_eq!(
            inflate(&[0xFF, 0xFF, 0xFF], 1024),
            Err(InflateError::Corrupt)
        );
        // A block of the reserved type 3.
        assert_eq!(inflate(&[0x07, 0x00], 1024), Err(InflateError::Corrupt));
        // Data after a final block.
        assert_eq!(
            inflate(&[0x03, 0x00, 0x42], 1024),
            Err(InflateError::Corrupt)
        );
    }

    #[test]
    fn an_empty_message_inflates_to_nothing() {
        // What a client sends for an empty compressed message: one empty
        // stored block, its tail taken off.
        assert_eq!(inflate(&[0x00], 16).unwrap(), b"");
        assert_eq!(inflate(&[0x02, 0x00], 16).unwrap(), b"");
    }
}
