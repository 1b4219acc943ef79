//! The embedded state store: a fjall database (an LSM tree with a write-ahead
//! journal) in `state-dir`.
//!
//! Every write is one journal batch handed to the operating system before
//! the call returns (`PersistMode::Buffer`): it survives a crash of berth,
//! though not of the machine, without an fsync per call. Reads of the same
//! key see the write at once.
//!
//! Keyspaces, each key led by its namespace (length-prefixed, so that no
//! namespace can spell another's keys):
//! - `kv`: namespace, key -> expiry (ms since the epoch, 0 for none), value.
//! - `expiry`: expiry, namespace, key -> nothing; what the sweeper walks.
//! - `topics`: namespace, topic -> the topic's history record ([`Meta`]),
//!   written when its epoch starts or its route's rules change.
//! - `history`: namespace, topic, sequence number -> kind, time, bytes.
//!
//! A publish writes one entry and nothing else: where a topic's history
//! ends, and when it was last written, are read back from its entries when
//! the store opens, and the sweeper removes what falls off the front, so
//! that the route's thread pays for the message alone.
//!
//! A mutex orders the writes, so that quotas, `increment` and
//! `compare-and-set` read and write as one step; plain reads skip it.
//!
//! This file opens the store and holds what its parts share. The byte layouts
//! are in `keys`, the key-value calls in `kv`, topic history in `history`,
//! and the sweeper thread in `sweep`.

mod history;
mod keys;
mod kv;
mod sweep;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use fjall::{Database, Keyspace, KeyspaceCreateOptions};

use super::StateError;
use keys::{Meta, unscope};
use sweep::sweep;

/// The most messages one history read returns.
pub(crate) const MAX_READ: u32 = 1000;

/// The embedded store.
pub(super) struct Store {
    /// What the handle shares with the sweeper thread.
    shared: Arc<Shared>,
}

/// What the store's handle and its sweeper thread share.
struct Shared {
    /// The folder the database lives in.
    dir: PathBuf,
    /// The database, which commits a batch across keyspaces as one write.
    db: Database,
    /// Key-value entries (see the module doc for each keyspace's layout).
    kv: Keyspace,
    /// Key-value expiries, in time order.
    expiry: Keyspace,
    /// Topic records.
    topics: Keyspace,
    /// History entries.
    history: Keyspace,
    /// The writers' books: every write holds them, so writes go one at a time.
    writes: Mutex<Books>,
}

/// What the writers keep count of, loaded when the store opens.
#[derive(Default)]
struct Books {
    /// Keys and bytes each namespace's store holds (expired keys count until swept).
    usage: HashMap<Box<str>, Usage>,
    /// Every topic with history, by its encoded name.
    topics: HashMap<Vec<u8>, Meta>,
    /// Topics with history per namespace.
    topic_counts: HashMap<Box<str>, u32>,
    /// Topics holding entries before their first kept one, for the sweeper.
    untrimmed: HashSet<Vec<u8>>,
}

/// What one namespace's store holds, as its quotas count it.
#[derive(Clone, Copy, Default, Debug)]
struct Usage {
    /// Keys held.
    keys: u64,
    /// Bytes held: each key's name and value.
    bytes: u64,
}

/// The wall clock in ms since the Unix epoch (0 before it).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Logs a database failure and gives the error callers see.
fn unavailable(error: fjall::Error) -> StateError {
    tracing::error!(%error, "state store failed");
    StateError::Unavailable
}

impl Store {
    /// Opens the database in `dir`, creating it if needed, and counts what it holds.
    pub(super) fn open(dir: &Path) -> Result<Store, fjall::Error> {
        std::fs::create_dir_all(dir)?;
        let db = Database::builder(dir).open()?;
        let keyspace = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            kv: keyspace("kv")?,
            expiry: keyspace("expiry")?,
            topics: keyspace("topics")?,
            history: keyspace("history")?,
            db,
            writes: Mutex::new(Books::default()),
        });
        shared.load()?;
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("berth-state-sweep".into())
            .spawn(move || sweep(weak))?;
        Ok(Store { shared })
    }

    /// The folder the database lives in.
    pub(super) fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

impl Shared {
    /// The writers' books, taken back even if a writer panicked holding them.
    fn lock(&self) -> MutexGuard<'_, Books> {
        self.writes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts each namespace's keys and bytes, and reads every topic's record.
    fn load(&self) -> Result<(), fjall::Error> {
        let mut books = self.lock();
        for item in self.kv.iter() {
            let (key, value) = item.into_inner()?;
            if let Some((namespace, name)) = unscope(&key) {
                let usage = books.usage.entry(namespace.into()).or_default();
                usage.keys += 1;
                usage.bytes += (name.len() + value.len().saturating_sub(8)) as u64;
            }
        }
        for item in self.topics.iter() {
            let (key, value) = item.into_inner()?;
            if let (Some((namespace, _)), Some(meta)) = (unscope(&key), Meta::decode(&value)) {
                let meta = self.read_ends(&key, meta)?;
                *books.topic_counts.entry(namespace.into()).or_default() += 1;
                if meta.stored_from < meta.first {
                    books.untrimmed.insert(key.to_vec());
                }
                books.topics.insert(key.to_vec(), meta);
            }
        }
        Ok(())
    }
}

/// A fresh, nonzero epoch: random, so that a wiped store never reuses one.
pub(super) fn new_epoch() -> u64 {
    getrandom::u64()
        .unwrap_or_else(|_| now_ms() ^ u64::from(std::process::id()) << 32)
        .max(1)
}

/// What the tests of the store's parts share.
#[cfg(test)]
mod fixtures {
    use super::super::Entry;
    use crate::config::StateRules;

    /// A namespace's rules small enough to reach: 3 messages, 2 keys, 100 bytes.
    pub(super) fn rules() -> StateRules {
        StateRules {
            history_size: 3,
            store_keys: 2,
            store_bytes: 100,
            ..StateRules::default()
        }
    }

    /// A text message with no position written into it.
    pub(super) fn text(data: &[u8]) -> Entry<'_> {
        Entry {
            text: true,
            data,
            position_at: None,
        }
    }
}
