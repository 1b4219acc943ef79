//! The units values are written in: durations the human way ("30s") and
//! byte sizes with an optional binary unit ("64 MiB").

use std::time::Duration;

use serde::Deserialize;

/// A duration written the human way in TOML ("30s", "500ms", "1m 30s").
#[derive(Clone, Copy, Debug)]
pub(super) struct HumanDuration(pub(super) Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
    }
}

/// A size in bytes: a plain number, or a string with a unit ("64 MiB", "512KiB").
#[derive(Clone, Copy, Debug)]
pub(super) struct ByteSize(pub(super) u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(text) => parse_size(&text).map(ByteSize).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid size {text:?}: write a number of bytes, or a number with B, KiB, MiB or GiB"
                ))
            }),
        }
    }
}

/// The bytes in `text`: digits, then optionally B, KiB, MiB or GiB; `None`
/// for anything else, or a size that does not fit in 64 bits.
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    #[test]
    fn bad_duration_names_line_and_column() {
        let err = parse("handshake-timeout = \"10 parsecs\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("berth.toml:1:21:"), "{text}");
        assert!(text.contains("invalid duration"), "{text}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64 MiB"), Some(64 << 20));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("1 GB"), None);
        let err = parse("max-memory = \"lots\"\n").unwrap_err().to_string();
        assert!(err.starts_with("berth.toml:1:14:"), "{err}");
    }
}
