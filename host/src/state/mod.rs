//! State that outlives a plugin instance, kept by the host for each
//! namespace: topic history, topic members (presence) and a key-value store.
//!
//! Calls come from route workers and answer before they return, so that a
//! write a plugin saw acknowledged is in the store: the embedded store
//! ([`embedded`]) hands every write to the operating system before it
//! answers, which a `kill -9` of berth cannot undo. Members live in memory
//! ([`presence`]): they are connections, which end with the process.

mod embedded;
mod presence;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{StateConfig, StateRules};

pub(crate) use presence::Member;

/// Where a stored message sits in its topic's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Position {
    /// Names one life of the topic's history.
    pub(crate) epoch: u64,
    /// Counts the topic's messages from 1 within the epoch.
    pub(crate) seq: u64,
}

impl std::fmt::Display for Position {
    /// The text form plugins and clients exchange: `EPOCH-SEQ`, the epoch as
    /// 16 lower-case hex digits.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}-{}", self.epoch, self.seq)
    }
}

/// A message to store: its kind, its bytes, and where its position's text
/// goes into them, if anywhere.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry<'a> {
    /// Whether it is text (else binary).
    pub(crate) text: bool,
    /// Its bytes.
    pub(crate) data: &'a [u8],
    /// A byte offset within `data` (at most its length) for the position.
    pub(crate) position_at: Option<usize>,
}

impl Entry<'_> {
    /// The bytes to store and send once the message has `position`.
    pub(crate) fn compose(&self, position: Position) -> Option<Vec<u8>> {
        let at = self.position_at?;
        let text = position.to_string();
        let mut out = Vec::with_capacity(self.data.len() + text.len());
        out.extend_from_slice(&self.data[..at]);
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(&self.data[at..]);
        Some(out)
    }
}

/// A message kept in a topic's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Kept {
    /// Its place in the epoch.
    pub(crate) seq: u64,
    /// Whether it is text (else binary).
    pub(crate) text: bool,
    /// Its bytes.
    pub(crate) data: Vec<u8>,
}

/// What a history read found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Page {
    /// The epoch of the messages (0 when the topic keeps nothing).
    pub(crate) epoch: u64,
    /// The messages asked for, oldest first.
    pub(crate) messages: Vec<Kept>,
    /// The topic's newest sequence number (0 when it keeps nothing).
    pub(crate) last: u64,
}

/// Why a state call did not take effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StateError {
    /// The messages after the position are no longer all kept.
    #[error("history lost")]
    Lost,
    /// The namespace keeps history for `history-topics` topics already.
    #[error("history-topics reached")]
    HistoryTopics,
    /// The write would pass the namespace's `store-keys`.
    #[error("store-keys reached")]
    StoreKeys,
    /// The write would pass the namespace's `store-bytes`.
    #[error("store-bytes reached")]
    StoreBytes,
    /// `increment` found no decimal integer, or the sum overflows.
    #[error("not a number")]
    NotANumber,
    /// The store failed or did not answer in time.
    #[error("store unavailable")]
    Unavailable,
}

/// Why the state store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The embedded database could not be opened or created.
    #[error("cannot open the state store in {dir} (state-dir): {reason}")]
    Embedded {
        /// Its folder.
        dir: PathBuf,
        /// What the database said.
        reason: String,
    },
}

/// The server's state: one store and the members of every topic.
pub(crate) struct State {
    store: embedded::Store,
    presence: presence::Presence,
}

impl State {
    /// Opens (or creates) the embedded store in `config.dir`.
    pub(crate) fn open(config: &StateConfig) -> Result<Arc<State>, OpenError> {
        let store = embedded::Store::open(&config.dir).map_err(|e| OpenError::Embedded {
            dir: config.dir.clone(),
            reason: e.to_string(),
        })?;
        Ok(Arc::new(State {
            store,
            presence: presence::Presence::default(),
        }))
    }

    /// The store's folder.
    pub(crate) fn dir(&self) -> &Path {
        self.store.dir()
    }

    /// Stores a message published to `topic` and says where, with the bytes
    /// stored when its position was written into them.
    pub(crate) fn append(
        &self,
        namespace: &str,
        topic: &str,
        entry: Entry<'_>,
        rules: &StateRules,
    ) -> Result<(Position, Option<Vec<u8>>), StateError> {
        self.store.append(namespace, topic, entry, rules)
    }

    /// The messages of `topic` after `since` (the newest without it), at most `limit`.
    pub(crate) fn history(
        &self,
        namespace: &str,
        topic: &str,
        since: Option<Position>,
        limit: u32,
    ) -> Result<Page, StateError> {
        self.store.history(namespace, topic, since, limit)
    }

    /// The value of `key`, if it has a live one.
    pub(crate) fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.store.get(namespace, key)
    }

    /// Stores `value` under `key`, for `ttl_ms` if given.
    pub(crate) fn set(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
        rules: &StateRules,
    ) -> Result<(), StateError> {
        self.store.set(namespace, key, value, ttl_ms, rules)
    }

    /// Removes `key`; true if it had a live value.
    pub(crate) fn delete(&self, namespace: &str, key: &str) -> Result<bool, StateError> {
        self.store.delete(namespace, key)
    }

    /// Adds `delta` to the integer under `key`; returns the sum.
    pub(crate) fn increment(
        &self,
        namespace: &str,
        key: &str,
        delta: i64,
        rules: &StateRules,
    ) -> Result<i64, StateError> {
        self.store.increment(namespace, key, delta, rules)
    }

    /// Sets (or removes) `key` only if it holds `expected`; true if it did.
    pub(crate) fn compare_and_set(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: Option<&[u8]>,
        ttl_ms: Option<u64>,
        rules: &StateRules,
    ) -> Result<bool, StateError> {
        self.store
            .compare_and_set(namespace, key, expected, value, ttl_ms, rules)
    }

    /// Makes `conn` a member of `topic`, described by `info`.
    pub(crate) fn join(&self, namespace: &Arc<str>, topic: &str, conn: u64, info: &str) {
        self.presence.join(namespace, topic, conn, info);
    }

    /// Ends `conn`'s membership of `topic`, if it had one.
    pub(crate) fn leave(&self, namespace: &Arc<str>, topic: &str, conn: u64) {
        self.presence.leave(namespace, topic, conn);
    }

    /// Up to `limit` members of `topic`.
    pub(crate) fn members(&self, namespace: &str, topic: &str, limit: usize) -> Vec<Member> {
        self.presence.members(namespace, topic, limit)
    }

    /// How many members `topic` has.
    pub(crate) fn count_members(&self, namespace: &str, topic: &str) -> usize {
        self.presence.count(namespace, topic)
    }
}
