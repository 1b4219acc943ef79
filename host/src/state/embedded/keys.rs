//! How the store lays its data out in bytes: keys led by their namespace,
//! history and expiry keys that sort in the order they are walked, stored
//! values with their expiry, and topic records ([`Meta`]).

/// One topic's history, as the books hold it. Its record on disk is written
/// when the epoch starts or `ttl` or `keep` change, so `first`, `last` and
/// `last_at` may be behind there: [`Shared::load`](super::Shared::load)
/// reads them from the entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Meta {
    /// The epoch its positions carry.
    pub(super) epoch: u64,
    /// The oldest kept sequence number (last + 1 when none is kept).
    pub(super) first: u64,
    /// The newest sequence number.
    pub(super) last: u64,
    /// When the last message was published, in ms since the epoch.
    pub(super) last_at: u64,
    /// The route's `history-ttl` then, in ms.
    pub(super) ttl: u64,
    /// The route's `history-size` then.
    pub(super) keep: u64,
    /// The oldest entry still on disk (below `first` until swept); not in
    /// the record.
    pub(super) stored_from: u64,
}

impl Meta {
    /// The length of a record: six big-endian u64s.
    const LEN: usize = 48;

    /// The record as stored; `stored_from` is left out.
    pub(super) fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0; Self::LEN];
        let fields = [
            self.epoch,
            self.first,
            self.last,
            self.last_at,
            self.ttl,
            self.keep,
        ];
        for (i, n) in fields.into_iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&n.to_be_bytes());
        }
        out
    }

    /// Reads a record; one without `keep` (40 bytes) keeps everything it holds.
    pub(super) fn decode(bytes: &[u8]) -> Option<Meta> {
        let n = |i: usize| {
            Some(u64::from_be_bytes(
                bytes.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        let first = n(1)?;
        Some(Meta {
            epoch: n(0)?,
            first,
            last: n(2)?,
            last_at: n(3)?,
            ttl: n(4)?,
            keep: n(5).unwrap_or(u64::MAX),
            stored_from: first,
        })
    }

    /// Whether `ttl` has passed since the last publish, as of `now`.
    pub(super) fn expired(&self, now: u64) -> bool {
        self.last_at.saturating_add(self.ttl) <= now
    }
}

/// `namespace` and `name` as one key: the namespace's length first.
pub(super) fn scoped(namespace: &str, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + namespace.len() + name.len() + 8);
    key.extend_from_slice(&(namespace.len() as u32).to_be_bytes());
    key.extend_from_slice(namespace.as_bytes());
    key.extend_from_slice(name.as_bytes());
    key
}

/// The namespace a [`scoped`] key starts with, and the rest.
pub(super) fn unscope(key: &[u8]) -> Option<(&str, &[u8])> {
    let len = u32::from_be_bytes(key.get(..4)?.try_into().ok()?) as usize;
    let namespace = std::str::from_utf8(key.get(4..4 + len)?).ok()?;
    Some((namespace, &key[4 + len..]))
}

/// A topic's history key: its scoped name, a 0 byte (no topic name holds
/// one that sorts below it and differs), then the sequence number.
pub(super) fn entry_key(topic_key: &[u8], seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(topic_key.len() + 9);
    key.extend_from_slice(topic_key);
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// A stored value's expiry (0 for none) and bytes.
pub(super) fn stored(value: &[u8]) -> Option<(u64, &[u8])> {
    let expiry = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    Some((expiry, &value[8..]))
}

/// A stored value's bytes, unless it has expired by `now`.
pub(super) fn live(value: &[u8], now: u64) -> Option<&[u8]> {
    let (expiry, data) = stored(value)?;
    (expiry == 0 || expiry > now).then_some(data)
}

/// An `expiry` key: the expiry, big-endian so that keys sort by time, then
/// the scoped key.
pub(super) fn expiry_key(expiry: u64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&expiry.to_be_bytes());
    out.extend_from_slice(key);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_records_round_trip() {
        let meta = Meta {
            epoch: u64::MAX,
            first: 2,
            last: 3,
            last_at: 4,
            ttl: 5,
            keep: 6,
            stored_from: 2,
        };
        assert_eq!(Meta::decode(&meta.encode()), Some(meta));
        let old = Meta::decode(&meta.encode()[..40]).unwrap();
        assert_eq!(old.keep, u64::MAX);
        assert_eq!(Meta::decode(&[0; 39]), None);
        assert_eq!(unscope(&scoped("/ns", "key")), Some(("/ns", &b"key"[..])));
    }
}
