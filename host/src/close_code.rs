//! Which WebSocket close codes may travel in a close frame, either way.

/// Whether `code` may be put in a close frame: the codes of RFC 6455 section
/// 7.4 and the IANA registry it set up, which added 1012-1014. 1005, 1006 and
/// 1015 only report what happened and must never be sent; 1004 and
/// 1016-2999 are reserved; below 1000 and above 4999 are not close codes.
/// tungstenite's own check is not used: it refuses 1014.
pub(crate) fn sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_codes_meant_for_the_wire_are_sendable() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1011, 1012, 1013, 1014, 3000, 4999,
        ] {
            assert!(sendable(code), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, u16::MAX] {
            assert!(!sendable(code), "{code}");
        }
    }
}
