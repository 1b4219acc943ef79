//! `Sec-WebSocket-Extensions`: which permessage-deflate offer (RFC 7692) a
//! route accepts, and the answer that goes in its 101.
//!
//! berth accepts an offer only on its own terms: no context takeover in
//! either direction. Each message is then compressed and inflated on its
//! own, so that no connection keeps a deflate context between messages (an
//! idle connection costs what it costs without compression), and a publish
//! compresses once for every subscriber that negotiated the same window.

/// The permessage-deflate parameters agreed with one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Deflate {
    /// The LZ77 window berth compresses with, in bits (9 to 15): the
    /// client's `server_max_window_bits`, or 15.
    pub(crate) window_bits: u8,
}

/// The largest window, and the one every client can inflate.
pub(crate) const MAX_WINDOW_BITS: u8 = 15;

/// The smallest window berth can compress with: the deflate library, like
/// zlib, has no raw deflate with an 8-bit window, so an offer that asks for
/// one is declined.
const MIN_WINDOW_BITS: u8 = 9;

impl Deflate {
    /// The first acceptable permessage-deflate offer among the values of the
    /// request's `Sec-WebSocket-Extensions` headers, if any. Offers of other
    /// extensions, and malformed offers, are passed over (RFC 7692 5).
    pub(crate) fn negotiate<'a>(headers: impl IntoIterator<Item = &'a [u8]>) -> Option<Deflate> {
        headers
            .into_iter()
            .filter_map(|value| std::str::from_utf8(value).ok())
            .flat_map(|value| value.split(','))
            .find_map(accept)
    }

    /// The `Sec-WebSocket-Extensions` value that answers the accepted offer.
    pub(crate) fn answer(self) -> String {
        let mut answer = String::from(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        );
        if self.window_bits != MAX_WINDOW_BITS {
            answer.push_str(&format!("; server_max_window_bits={}", self.window_bits));
        }
        answer
    }
}

/// The terms on which berth takes one offer (`name; param; param=value`).
fn accept(offer: &str) -> Option<Deflate> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut seen = [false; 4];
    let mut window_bits = MAX_WINDOW_BITS;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(unquote(value.trim())?)),
            None => (param, None),
        };
        let slot = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => 0,
            "client_no_context_takeover" if value.is_none() => 1,
            "server_max_window_bits" => {
                window_bits = bits(value?)?;
                2
            }
            // The client says it can use a smaller window: berth inflates
            // with the largest, which takes any, so it names none.
            "client_max_window_bits" => {
                if let Some(value) = value {
                    bits(value)?;
                }
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[slot], true) {
            // A parameter named twice makes the offer invalid (RFC 7692 7).
            return None;
        }
    }
    (window_bits >= MIN_WINDOW_BITS).then_some(Deflate { window_bits })
}

/// A window size in bits: 8 to 15, without leading zeros (RFC 7692 7.1.2).
fn bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

/// A parameter value, as a token or a quoted string (RFC 6455 9.1).
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(value),
    }
    .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(values: &[&str]) -> Option<u8> {
        Deflate::negotiate(values.iter().map(|v| v.as_bytes())).map(|d| d.window_bits)
    }

    #[test]
    fn accepts_the_first_offer_it_can_honour() {
        assert_eq!(offer(&["permessage-deflate"]), Some(15));
        assert_eq!(
            offer(&["permessage-deflate; client_max_window_bits"]),
            Some(15)
        );
        assert_eq!(
            offer(&[
                "x-webkit-deflate-frame",
                "permessage-deflate; server_max_window_bits=10"
            ]),
            Some(10)
        );
        assert_eq!(
            offer(&[
                "permessage-deflate; server_max_window_bits=\"12\"; server_no_context_takeover"
            ]),
            Some(12)
        );
        // The 8-bit window cannot be honoured; the next offer can.
        assert_eq!(
            offer(&[
                "permessage-deflate; server_max_window_bits=8, permessage-deflate; client_max_window_bits=9"
            ]),
            Some(15)
        );
        assert_eq!(
            offer(&["PerMessage-Deflate; Client_No_Context_Takeover"]),
            Some(15)
        );
    }

    #[test]
    fn passes_over_malformed_offers() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=09",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=\"\"",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; mystery",
            "deflate-frame",
        ] {
            assert_eq!(offer(&[bad]), None, "{bad}");
        }
        assert_eq!(offer(&[]), None);
    }

    #[test]
    fn answers_without_context_takeover() {
        assert_eq!(
            Deflate { window_bits: 15 }.answer(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert_eq!(
            Deflate { window_bits: 9 }.answer(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9"
        );
    }
}
