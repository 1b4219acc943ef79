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

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{Entry, Kept, Page, Position, StateError};
use crate::config::StateRules;

/// How often expired keys and idle histories are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// The most expired keys or idle topics one sweep removes per lock.
const SWEEP_BATCH: usize = 256;
/// The most messages one history read returns.
pub(crate) const MAX_READ: u32 = 1000;

/// The embedded store.
pub(super) struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    db: Database,
    kv: Keyspace,
    expiry: Keyspace,
    topics: Keyspace,
    history: Keyspace,
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

#[derive(Clone, Copy, Default, Debug)]
struct Usage {
    keys: u64,
    bytes: u64,
}

/// One topic's history, as the books hold it. Its record on disk is written
/// when the epoch starts or `ttl` or `keep` change, so `first`, `last` and
/// `last_at` may be behind there: [`Shared::load`] reads them from the entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Meta {
    epoch: u64,
    /// The oldest kept sequence number (last + 1 when none is kept).
    first: u64,
    last: u64,
    /// When the last message was published, in ms since the epoch.
    last_at: u64,
    /// The route's `history-ttl` then, in ms.
    ttl: u64,
    /// The route's `history-size` then.
    keep: u64,
    /// The oldest entry still on disk (below `first` until swept); not in
    /// the record.
    stored_from: u64,
}

impl Meta {
    const LEN: usize = 48;

    fn encode(&self) -> [u8; Self::LEN] {
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
    fn decode(bytes: &[u8]) -> Option<Meta> {
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

    fn expired(&self, now: u64) -> bool {
        self.last_at.saturating_add(self.ttl) <= now
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `namespace` and `name` as one key: the namespace's length first.
fn scoped(namespace: &str, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + namespace.len() + name.len() + 8);
    key.extend_from_slice(&(namespace.len() as u32).to_be_bytes());
    key.extend_from_slice(namespace.as_bytes());
    key.extend_from_slice(name.as_bytes());
    key
}

/// The namespace a [`scoped`] key starts with, and the rest.
fn unscope(key: &[u8]) -> Option<(&str, &[u8])> {
    let len = u32::from_be_bytes(key.get(..4)?.try_into().ok()?) as usize;
    let namespace = std::str::from_utf8(key.get(4..4 + len)?).ok()?;
    Some((namespace, &key[4 + len..]))
}

/// A topic's history key: its scoped name, a 0 byte (no topic name holds
/// one that sorts below it and differs), then the sequence number.
fn entry_key(topic_key: &[u8], seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(topic_key.len() + 9);
    key.extend_from_slice(topic_key);
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn stored(value: &[u8]) -> Option<(u64, &[u8])> {
    let expiry = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    Some((expiry, &value[8..]))
}

fn live(value: &[u8], now: u64) -> Option<&[u8]> {
    let (expiry, data) = stored(value)?;
    (expiry == 0 || expiry > now).then_some(data)
}

/// One key-value write: its key, what the key held when the call read it
/// (expiry and bytes, even if expired), and the call's clock.
#[derive(Clone, Copy)]
struct Write<'a> {
    namespace: &'a str,
    key: &'a str,
    old: Option<(u64, &'a [u8])>,
    now: u64,
}

impl<'a> Write<'a> {
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

fn expiry_key(expiry: u64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&expiry.to_be_bytes());
    out.extend_from_slice(key);
    out
}

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

    pub(super) fn dir(&self) -> &Path {
        &self.shared.dir
    }

    pub(super) fn append(
        &self,
        namespace: &str,
        topic: &str,
        entry: Entry<'_>,
        rules: &StateRules,
    ) -> Result<(Position, Option<Vec<u8>>), StateError> {
        self.shared.append(namespace, topic, entry, rules)
    }

    pub(super) fn history(
        &self,
        namespace: &str,
        topic: &str,
        since: Option<Position>,
        limit: u32,
    ) -> Result<Page, StateError> {
        self.shared.read_history(namespace, topic, since, limit)
    }

    pub(super) fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let value = self
            .shared
            .kv
            .get(scoped(namespace, key))
            .map_err(unavailable)?;
        Ok(value.and_then(|v| live(&v, now_ms()).map(<[u8]>::to_vec)))
    }

    pub(super) fn set(
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

    pub(super) fn delete(&self, namespace: &str, key: &str) -> Result<bool, StateError> {
        let shared = &self.shared;
        let mut books = shared.lock();
        let old = shared.read(namespace, key)?;
        let write = Write::new(namespace, key, &old, now_ms());
        let had = write.live().is_some();
        shared.write(&mut books, write, None, None, &StateRules::default())?;
        Ok(had)
    }

    pub(super) fn increment(
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

    pub(super) fn compare_and_set(
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

    /// `meta` brought up to date from the topic's entries: the last one
    /// gives `last` and `last_at`, the first one `stored_from`.
    fn read_ends(&self, topic_key: &[u8], mut meta: Meta) -> Result<Meta, fjall::Error> {
        let mut prefix = topic_key.to_vec();
        prefix.push(0);
        let seq_of = |key: &[u8]| {
            key.get(prefix.len()..)
                .and_then(|seq| seq.try_into().ok())
                .map(u64::from_be_bytes)
        };
        let mut entries = self.history.prefix(&prefix);
        if let Some(item) = entries.next_back() {
            let (key, value) = item.into_inner()?;
            if let Some(seq) = seq_of(&key).filter(|&seq| seq >= meta.last) {
                meta.last = seq;
                let at = value.get(1..9).and_then(|at| at.try_into().ok());
                meta.last_at = meta.last_at.max(at.map_or(0, u64::from_be_bytes));
            }
        }
        if let Some(item) = entries.next() {
            meta.stored_from = seq_of(&item.key()?).unwrap_or(meta.first);
        } else {
            meta.stored_from = meta.last + 1;
        }
        let kept_from = (meta.last + 1).saturating_sub(meta.keep);
        meta.first = meta.first.max(meta.stored_from).max(kept_from);
        meta.stored_from = meta.stored_from.min(meta.first);
        Ok(meta)
    }

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

    fn append(
        &self,
        namespace: &str,
        topic: &str,
        entry: Entry<'_>,
        rules: &StateRules,
    ) -> Result<(Position, Option<Vec<u8>>), StateError> {
        let mut books = self.lock();
        let now = now_ms();
        let topic_key = scoped(namespace, topic);
        let mut batch = self.db.batch().durability(Some(PersistMode::Buffer));
        let ttl = rules.history_ttl.as_millis() as u64;
        let keep = u64::from(rules.history_size.max(1));
        let (meta, fresh) = match books.topics.get(&topic_key).copied() {
            Some(meta) if !meta.expired(now) => (meta, false),
            stale => {
                if let Some(stale) = stale {
                    // The new epoch counts from 1 again: none of the old
                    // entries may stay to be read as its own.
                    self.forget_entries(&mut batch, &topic_key, &stale);
                } else if books.topic_counts.get(namespace).copied().unwrap_or(0)
                    >= rules.history_topics
                {
                    return Err(StateError::HistoryTopics);
                }
                let meta = Meta {
                    epoch: new_epoch(),
                    first: 1,
                    last: 0,
                    last_at: now,
                    ttl,
                    keep,
                    stored_from: 1,
                };
                (meta, true)
            }
        };
        let seq = meta.last + 1;
        let position = Position {
            epoch: meta.epoch,
            seq,
        };
        let composed = entry.compose(position);
        let data = composed.as_deref().unwrap_or(entry.data);
        let mut stored = Vec::with_capacity(9 + data.len());
        stored.push(u8::from(entry.text));
        stored.extend_from_slice(&now.to_be_bytes());
        stored.extend_from_slice(data);
        batch.insert(&self.history, entry_key(&topic_key, seq), stored);
        let rules_changed = meta.ttl != ttl || meta.keep != keep;
        let meta = Meta {
            first: meta.first.max((seq + 1).saturating_sub(keep)),
            last: seq,
            last_at: now,
            ttl,
            keep,
            ..meta
        };
        if fresh || rules_changed {
            batch.insert(&self.topics, topic_key.clone(), meta.encode());
        }
        batch.commit().map_err(unavailable)?;
        if meta.stored_from < meta.first {
            books.untrimmed.insert(topic_key.clone());
        }
        if books.topics.insert(topic_key, meta).is_none() {
            *books.topic_counts.entry(namespace.into()).or_default() += 1;
        }
        Ok((position, composed))
    }

    /// Adds the removal of every entry a topic has on disk to `batch`.
    fn forget_entries(&self, batch: &mut fjall::OwnedWriteBatch, topic_key: &[u8], meta: &Meta) {
        for seq in meta.stored_from..=meta.last {
            batch.remove(&self.history, entry_key(topic_key, seq));
        }
    }

    /// Removes up to `budget` entries that fell off the front of their
    /// topics' histories; answers how many it removed.
    fn trim(&self, books: &mut Books, budget: usize) -> Result<usize, fjall::Error> {
        if books.untrimmed.is_empty() {
            return Ok(0);
        }
        let mut batch = self.db.batch().durability(Some(PersistMode::Buffer));
        let mut removed = 0;
        let mut trimmed = Vec::new();
        for key in books.untrimmed.iter() {
            let Some(meta) = books.topics.get(key) else {
                trimmed.push((key.clone(), None));
                continue;
            };
            let end = meta.first.min(meta.stored_from + (budget - removed) as u64);
            for seq in meta.stored_from..end {
                batch.remove(&self.history, entry_key(key, seq));
            }
            removed += end.saturating_sub(meta.stored_from) as usize;
            trimmed.push((key.clone(), Some(end)));
            if removed >= budget {
                break;
            }
        }
        if removed > 0 {
            batch.commit()?;
        }
        for (key, end) in trimmed {
            let meta = books.topics.get_mut(&key).zip(end);
            match meta {
                Some((meta, end)) if end < meta.first => {
                    meta.stored_from = end.max(meta.stored_from)
                }
                Some((meta, _)) => {
                    meta.stored_from = meta.first;
                    books.untrimmed.remove(&key);
                }
                None => {
                    books.untrimmed.remove(&key);
                }
            }
        }
        Ok(removed)
    }

    fn read_history(
        &self,
        namespace: &str,
        topic: &str,
        since: Option<Position>,
        limit: u32,
    ) -> Result<Page, StateError> {
        let topic_key = scoped(namespace, topic);
        // Held while reading, so that no append trims what the page is read from.
        let books = self.lock();
        let now = now_ms();
        let meta = books
            .topics
            .get(&topic_key)
            .copied()
            .filter(|m| !m.expired(now));
        let limit = u64::from(limit.min(MAX_READ));
        let Some(meta) = meta else {
            return match since {
                // Nothing kept, and the client saw something: it was lost.
                Some(p) if p.seq > 0 => Err(StateError::Lost),
                _ => Ok(Page {
                    epoch: 0,
                    messages: Vec::new(),
                    last: 0,
                }),
            };
        };
        let start = match since {
            None => meta.first.max((meta.last + 1).saturating_sub(limit)),
            Some(p) if p.epoch != meta.epoch || p.seq + 1 < meta.first || p.seq > meta.last => {
                return Err(StateError::Lost);
            }
            Some(p) => p.seq + 1,
        };
        let end = meta.last.min(start.saturating_add(limit).saturating_sub(1));
        let mut messages = Vec::with_capacity(end.saturating_sub(start).saturating_add(1) as usize);
        if start <= end && limit > 0 {
            let range = self
                .history
                .range(entry_key(&topic_key, start)..=entry_key(&topic_key, end));
            for item in range {
                let (key, value) = item.into_inner().map_err(unavailable)?;
                let seq = u64::from_be_bytes(key[key.len() - 8..].try_into().unwrap_or_default());
                if value.len() < 9 {
                    continue;
                }
                messages.push(Kept {
                    seq,
                    text: value[0] == 1,
                    data: value[9..].to_vec(),
                });
            }
        }
        drop(books);
        Ok(Page {
            epoch: meta.epoch,
            messages,
            last: meta.last,
        })
    }

    /// Removes up to [`SWEEP_BATCH`] expired keys and idle histories; true
    /// if there may be more.
    fn sweep_once(&self) -> bool {
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

/// A fresh, nonzero epoch: random, so that a wiped store never reuses one.
pub(super) fn new_epoch() -> u64 {
    getrandom::u64()
        .unwrap_or_else(|_| now_ms() ^ u64::from(std::process::id()) << 32)
        .max(1)
}

/// Sweeps until the store is dropped.
fn sweep(store: Weak<Shared>) {
    loop {
        std::thread::sleep(SWEEP_EVERY);
        let Some(shared) = store.upgrade() else {
            return;
        };
        while shared.sweep_once() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> StateRules {
        StateRules {
            history_size: 3,
            store_keys: 2,
            store_bytes: 100,
            ..StateRules::default()
        }
    }

    fn text(data: &[u8]) -> Entry<'_> {
        Entry {
            text: true,
            data,
            position_at: None,
        }
    }

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

    #[test]
    fn history_keeps_its_size_and_reads_from_a_position() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rules = rules();
        let mut last = None;
        for i in 1..=5u8 {
            let (position, _) = store.append("/a", "t", text(&[b'0' + i]), &rules).unwrap();
            assert_eq!(position.seq, u64::from(i));
            last = Some(position);
        }
        let last = last.unwrap();
        let page = store.history("/a", "t", None, 10).unwrap();
        let seqs: Vec<u64> = page.messages.iter().map(|k| k.seq).collect();
        assert_eq!(
            (seqs, page.last, page.epoch),
            (vec![3, 4, 5], 5, last.epoch)
        );
        let since = |seq| Some(Position { seq, ..last });
        assert_eq!(
            store
                .history("/a", "t", since(2), 10)
                .unwrap()
                .messages
                .len(),
            3
        );
        assert_eq!(
            store.history("/a", "t", since(1), 10),
            Err(StateError::Lost)
        );
        assert_eq!(
            store.history("/a", "t", since(6), 10),
            Err(StateError::Lost)
        );
        assert_eq!(
            store.history("/b", "t", since(2), 10),
            Err(StateError::Lost)
        );
        // The position is written into the message where it is asked for.
        let entry = Entry {
            text: true,
            data: b"{\"p\":\"\"}",
            position_at: Some(6),
        };
        let (position, composed) = store.append("/a", "t", entry, &rules).unwrap();
        let expected = format!("{{\"p\":\"{position}\"}}");
        assert_eq!(composed.as_deref(), Some(expected.as_bytes()));
        let page = store.history("/a", "t", since(5), 10).unwrap();
        assert_eq!(page.messages[0].data, expected.as_bytes());
    }

    #[test]
    fn history_reopens_where_its_entries_end_and_sheds_its_front() {
        let dir = tempfile::tempdir().unwrap();
        let rules = rules();
        let store = Store::open(dir.path()).unwrap();
        let mut last = None;
        for i in 0..10u8 {
            last = Some(
                store
                    .append("/a", "t", text(&[b'a' + i]), &rules)
                    .unwrap()
                    .0,
            );
        }
        let last = last.unwrap();
        // Only the first publish wrote the topic's record; the entries say
        // where the history ends.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let page = store.history("/a", "t", None, 10).unwrap();
        let seqs: Vec<u64> = page.messages.iter().map(|k| k.seq).collect();
        assert_eq!(
            (seqs, page.last, page.epoch),
            (vec![8, 9, 10], 10, last.epoch)
        );
        let (next, _) = store.append("/a", "t", text(b"k"), &rules).unwrap();
        assert_eq!(next, Position { seq: 11, ..last });
        // The sweeper removes the entries before the kept ones, and no more.
        let on_disk = |store: &Store| {
            let mut prefix = scoped("/a", "t");
            prefix.push(0);
            store.shared.history.prefix(prefix).count()
        };
        assert_eq!(on_disk(&store), 11);
        while store.shared.sweep_once() {}
        assert_eq!(on_disk(&store), 3);
        assert!(store.shared.lock().untrimmed.is_empty());
        // A smaller history-size is written down, and holds after a reopen.
        let smaller = StateRules {
            history_size: 1,
            ..rules
        };
        store.append("/a", "t", text(b"l"), &smaller).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let page = store.history("/a", "t", None, 10).unwrap();
        assert_eq!(page.messages.len(), 1);
        assert_eq!(
            (page.messages[0].seq, &page.messages[0].data[..]),
            (12, &b"l"[..])
        );
    }

    #[test]
    fn a_namespace_keeps_history_for_at_most_history_topics_topics() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rules = StateRules {
            history_size: 1,
            history_topics: 2,
            ..StateRules::default()
        };
        store.append("/a", "t1", text(b"x"), &rules).unwrap();
        store.append("/a", "t2", text(b"x"), &rules).unwrap();
        store.append("/a", "t1", text(b"y"), &rules).unwrap();
        assert_eq!(
            store.append("/a", "t3", text(b"x"), &rules).map(|_| ()),
            Err(StateError::HistoryTopics)
        );
        store.append("/b", "t3", text(b"x"), &rules).unwrap();
    }

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
