//! The key-value store: reads, and writes that keep each namespace within
//! its `store-keys` and `store-bytes`, each in one durable batch.

use fjall::PersistMode;

use super::keys::{expiry_key, live, scoped, stored};
use super::{Books, Shared, Store, Usage, now_ms, unavailable};
use crate::config::StateRules;
use crate::state::Keys;
use crate::state::StateError;

/// One key-value write: its key, what the key held when the call read it
/// (expiry and bytes, even if expired), and the call's clock.
#[derive(Clone, Copy)]
struct Write<'a> {
    /// The namespace whose quota the write counts against.
    namespace: &'a str,
    /// The key, unscoped.
    key: &'a str,
    /// The key's expiry and bytes when read, expired or not.
    old: Option<(u64, &'a [u8])>,
    /// The call's clock, in ms since the Unix epoch.
    now: u64,
}

impl<'a> Write<'a> {
    /// The write of `key`, given what [`Shared::read`] found in it.
    fn new(namespace: &'a str, key: &'a str, old: &'a Option<fjall::Slice>, now: u64) -> Self {
        Write {
            namespace,
            key,
            old: old.as_deref().and_then(stored),
            now,
        }
    }

    /// The value the key holds, unless it has expired.
    fn live(&self) -> Option<&'a [u8]> {
        self.old
            .and_then(|(expiry, data)| (expiry == 0 || expiry > self.now).then_some(data))
    }
}

impl Keys for Store {
    /// What `key` holds, unless it has expired.
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let value = self
            .shared
            .kv
            .get(scoped(namespace, key))
            .map_err(unavailable)?;
        Ok(value.and_then(|v| live(&v, now_ms()).map(<[u8]>::to_vec)))
    }

    /// Sets `key` to `value`, for `ttl_ms` if given, within the namespace's quota.
    fn set(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
        rules: &StateRules,
    ) -> Result<(), StateError> {
        let shared = &self.shared;
        let mut books = shared.lock();
        let old = shared.read(namespace, key)?;
        let write = Write::new(namespace, key, &old, now_ms());
        shared.write(&mut books, write, Some(value), ttl_ms, rules)
    }

    /// Removes `key`; answers whether it held a value that had not expired.
    fn delete(&self, namespace: &str, key: &str) -> Result<bool, StateError> {
        let shared = &self.shared;
        let mut books = shared.lock();
        let old = shared.read(namespace, key)?;
        let write = Write::new(namespace, key, &old, now_ms());
        let had = write.live().is_some();
        shared.write(&mut books, write, None, None, &StateRules::default())?;
        Ok(had)
    }

    /// Adds `delta` to the decimal integer `key` holds (0 when none); answers
    /// the sum.
    fn increment(
        &self,
        namespace: &str,
        key: &str,
        delta: i64,
        rules: &StateRules,
    ) -> Result<i64, StateError> {
        let shared = &self.shared;
        let mut books = shared.lock();
        let old = shared.read(namespace, key)?;
        let write = Write::new(namespace, key, &old, now_ms());
        let (current, expiry) = match (write.live(), write.old) {
            (Some(data), Some((expiry, _))) => {
                let text = std::str::from_utf8(data).map_err(|_| StateError::NotANumber)?;
                (
                    text.parse::<i64>().map_err(|_| StateError::NotANumber)?,
                    expiry,
                )
            }
            _ => (0, 0),
        };
        let sum = current.checked_add(delta).ok_or(StateError::NotANumber)?;
        // The key keeps its time to live: the remaining part of it.
        let ttl = (expiry != 0).then(|| expiry - write.now);
        let text = sum.to_string();
        shared.write(&mut books, write, Some(text.as_bytes()), ttl, rules)?;
        Ok(sum)
    }

    /// Writes `value` (removes the key for `None`) only if the key's live value
    /// is `expected`; answers whether it did.
    fn compare_and_set(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: Option<&[u8]>,
        ttl_ms: Option<u64>,
        rules: &StateRules,
    ) -> Result<bool, StateError> {
        let shared = &self.shared;
        let mut books = shared.lock();
        let old = shared.read(namespace, key)?;
        let write = Write::new(namespace, key, &old, now_ms());
        if write.live() != expected {
            return Ok(false);
        }
        shared.write(&mut books, write, value, ttl_ms, rules)?;
        Ok(true)
    }
}

impl Shared {
    /// What `key` holds now, as stored (expiry first), read once per call.
    fn read(&self, namespace: &str, key: &str) -> Result<Option<fjall::Slice>, StateError> {
        self.kv.get(scoped(namespace, key)).map_err(unavailable)
    }

    /// Writes `value` under the write's key (removes it for `None`) within
    /// the namespace's quota, in one durable batch.
    fn write(
        &self,
        books: &mut Books,
        write: Write<'_>,
        value: Option<&[u8]>,
        ttl_ms: Option<u64>,
        rules: &StateRules,
    ) -> Result<(), StateError> {
        let Write {
            namespace,
            key,
            old: old_entry,
            now,
        } = write;
        let full = scoped(namespace, key);
        let usage = books.usage.get(namespace).copied().unwrap_or_default();
        let old_size = old_entry.map_or(0, |(_, data)| (key.len() + data.len()) as u64);
        let new_size = value.map_or(0, |data| (key.len() + data.len()) as u64);
        let keys = usage.keys - u64::from(old_entry.is_some()) + u64::from(value.is_some());
        let bytes = usage.bytes - old_size + new_size;
        if value.is_some() {
            if keys > rules.store_keys && keys > usage.keys {
                return Err(StateError::StoreKeys);
            }
            if bytes > rules.store_bytes && bytes > usage.bytes {
                return Err(StateError::StoreBytes);
            }
        }
        if old_entry.is_none() && value.is_none() {
            return Ok(());
        }
        let mut batch = self.db.batch().durability(Some(PersistMode::Buffer));
        if let Some((expiry, _)) = old_entry
            && expiry != 0
        {
            batch.remove(&self.expiry, expiry_key(expiry, &full));
        }
        match value {
            Some(data) => {
                let expiry = ttl_ms.map_or(0, |ttl| now.saturating_add(ttl.max(1)));
                let mut stored = Vec::with_capacity(8 + data.len());
                stored.extend_from_slice(&expiry.to_be_bytes());
                stored.extend_from_slice(data);
                if expiry != 0 {
                    batch.insert(&self.expiry, expiry_key(expiry, &full), []);
                }
                batch.insert(&self.kv, full, stored);
            }
            None => batch.remove(&self.kv, full),
        }
        batch.commit().map_err(unavailable)?;
        if keys == 0 {
            books.usage.remove(namespace);
        } else {
            books.usage.insert(namespace.into(), Usage { keys, bytes });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::fixtures::rules;
    use super::*;

    #[test]
    fn usage_follows_writes_expiry_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rules = rules();
        store.set("/a", "k1", b"0123456789", None, &rules).unwrap();
        store.set("/a", "k2", b"x", Some(1), &rules).unwrap();
        assert_eq!(
            store.set("/a", "k3", b"x", None, &rules),
            Err(StateError::StoreKeys)
        );
        // Another namespace has its own quota and cannot see these keys.
        store.set("/b", "k3", b"x", None, &rules).unwrap();
        assert_eq!(store.get("/b", "k1"), Ok(None));
        // The expired key no longer reads, and once swept it frees its place.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.get("/a", "k2"), Ok(None));
        while store.shared.sweep_once() {}
        store.set("/a", "k3", b"x", None, &rules).unwrap();
        let usage = |store: &Store| store.shared.lock().usage.get("/a").copied().unwrap();
        let (keys, bytes) = (usage(&store).keys, usage(&store).bytes);
        assert_eq!((keys, bytes), (2, 2 + 10 + 2 + 1));
        assert_eq!(
            store.set("/a", "k1", &[b'y'; 100], None, &rules),
            Err(StateError::StoreBytes)
        );
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!((usage(&store).keys, usage(&store).bytes), (2, 15));
        assert_eq!(store.get("/a", "k1"), Ok(Some(b"0123456789".to_vec())));
    }
}
