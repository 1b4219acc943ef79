//! The sweeper: a thread that removes expired keys, idle topic histories
//! and the entries that fell off a history's front, a batch at a time.

use std::sync::Weak;
use std::time::Duration;

use fjall::PersistMode;

use super::keys::{Meta, expiry_key, stored, unscope};
use super::{Shared, now_ms};

/// How often expired keys and idle histories are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// The most expired keys or idle topics one sweep removes per lock.
const SWEEP_BATCH: usize = 256;

impl Shared {
    /// Removes up to [`SWEEP_BATCH`] expired keys and idle histories; true
    /// if there may be more.
    pub(super) fn sweep_once(&self) -> bool {
        let now = now_ms();
        let mut more = false;
        let due: Vec<Vec<u8>> = self
            .expiry
            .range(..expiry_key(now, &[]))
            .take(SWEEP_BATCH)
            .filter_map(|item| item.key().ok().map(|k| k.to_vec()))
            .collect();
        more |= due.len() == SWEEP_BATCH;
        if !due.is_empty() {
            let mut books = self.lock();
            let mut batch = self.db.batch().durability(Some(PersistMode::Buffer));
            for index in &due {
                batch.remove(&self.expiry, index.clone());
                let key = &index[8..];
                let Ok(Some(value)) = self.kv.get(key) else {
                    continue;
                };
                // A later write may have set another expiry: only this one goes.
                if stored(&value).is_some_and(|(e, _)| e.to_be_bytes() == index[..8]) {
                    if let (Some((namespace, name)), Some((_, data))) =
                        (unscope(key), stored(&value))
                        && let Some(usage) = books.usage.get_mut(namespace)
                    {
                        usage.keys -= 1;
                        usage.bytes -= (name.len() + data.len()) as u64;
                    }
                    batch.remove(&self.kv, key.to_vec());
                }
            }
            if let Err(error) = batch.commit() {
                tracing::error!(%error, "cannot remove expired state keys");
                return false;
            }
        }
        let mut books = self.lock();
        match self.trim(&mut books, SWEEP_BATCH) {
            Ok(removed) => more |= removed == SWEEP_BATCH,
            Err(error) => {
                tracing::error!(%error, "cannot remove old history entries");
                return false;
            }
        }
        let idle: Vec<(Vec<u8>, Meta)> = books
            .topics
            .iter()
            .filter(|(_, m)| m.expired(now))
            .take(SWEEP_BATCH)
            .map(|(k, m)| (k.clone(), *m))
            .collect();
        more |= idle.len() == SWEEP_BATCH;
        if idle.is_empty() {
            return more;
        }
        let mut batch = self.db.batch().durability(Some(PersistMode::Buffer));
        for (key, meta) in &idle {
            self.forget_entries(&mut batch, key, meta);
            batch.remove(&self.topics, key.clone());
        }
        if let Err(error) = batch.commit() {
            tracing::error!(%error, "cannot remove idle topic histories");
            return false;
        }
        for (key, _) in idle {
            books.topics.remove(&key);
            books.untrimmed.remove(&key);
            if let Some((namespace, _)) = unscope(&key)
                && let Some(count) = books.topic_counts.get_mut(namespace)
            {
                *count = count.saturating_sub(1);
            }
        }
        more
    }
}

/// Sweeps until the store is dropped.
pub(super) fn sweep(store: Weak<Shared>) {
    loop {
        std::thread::sleep(SWEEP_EVERY);
        let Some(shared) = store.upgrade() else {
            return;
        };
        while shared.sweep_once() {}
    }
}
