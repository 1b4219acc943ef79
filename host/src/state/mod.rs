//! State that outlives a plugin instance, kept by the host for each
//! namespace: topic history, topic members (presence) and a key-value store.
//!
//! Calls come from route workers and answer before they return, so that a
//! write a plugin saw acknowledged is in the store. Without a `[broker]` the
//! store is embedded (`embedded`): it hands every write to the operating
//! system before it answers, which a `kill -9` of berth cannot undo. With
//! one, it is Redis (`shared`), so that every node sees the same history,
//! members and keys. This node's members also live in memory (`presence`):
//! they are connections, which end with the process.

mod embedded;
mod presence;
mod shared;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{BrokerConfig, StateConfig, StateRules};

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
    /// The `[broker]` URL cannot be used for the state store.
    #[error("cannot use {url} ([broker] url) for the state store: {reason}")]
    Shared {
        /// The URL, without its password.
        url: String,
        /// What the client said.
        reason: String,
    },
}

/// A topic history store: the embedded one or Redis. Every call answers
/// from the store before it returns.
pub(crate) trait History: Send + Sync {
    /// Stores a message published to `topic` and says where, with the bytes
    /// stored when its position was written into them.
    fn append(
        &self,
        namespace: &str,
        topic: &str,
        entry: Entry<'_>,
        rules: &StateRules,
    ) -> Result<(Position, Option<Vec<u8>>), StateError>;

    /// The messages of `topic` after `since` (the newest without it), at most `limit`.
    fn history(
        &self,
        namespace: &str,
        topic: &str,
        since: Option<Position>,
        limit: u32,
    ) -> Result<Page, StateError>;
}

/// A key-value store per namespace, within its quotas: the embedded one or
/// Redis. Every call answers from the store before it returns.
pub(crate) trait Keys: Send + Sync {
    /// The value of `key`, if it has a live one.
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StateError>;

    /// Stores `value` under `key`, for `ttl_ms` if given.
    fn set(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
        rules: &StateRules,
    ) -> Result<(), StateError>;

    /// Removes `key`; true if it had a live value.
    fn delete(&self, namespace: &str, key: &str) -> Result<bool, StateError>;

    /// Adds `delta` to the integer under `key`; returns the sum.
    fn increment(
        &self,
        namespace: &str,
        key: &str,
        delta: i64,
        rules: &StateRules,
    ) -> Result<i64, StateError>;

    /// Sets (or removes) `key` only if it holds `expected`; true if it did.
    fn compare_and_set(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: Option<&[u8]>,
        ttl_ms: Option<u64>,
        rules: &StateRules,
    ) -> Result<bool, StateError>;
}

/// Where history and keys live: both halves of one store.
pub(crate) trait Backend: History + Keys {}

impl<T: History + Keys> Backend for T {}

/// The server's state: one store and this node's members.
pub(crate) struct State {
    store: Arc<dyn Backend>,
    /// The Redis store when there is a `[broker]`: members on other nodes.
    redis: Option<Arc<shared::Store>>,
    /// Where the store is, for the log.
    place: String,
    presence: Arc<presence::Presence>,
    /// The node name this node's members carry.
    node: Arc<str>,
}

impl State {
    /// Opens the store: Redis when there is a `broker`, else the embedded
    /// one in `config.dir` (created if needed).
    pub(crate) fn open(
        config: &StateConfig,
        broker: Option<&BrokerConfig>,
    ) -> Result<Arc<State>, OpenError> {
        let presence = Arc::new(presence::Presence::default());
        let state = match broker {
            Some(broker) => {
                let store = shared::Store::open(
                    &broker.url,
                    &broker.channel_prefix,
                    config.timeout,
                    config.presence_ttl,
                    presence.clone(),
                )
                .map_err(|e| OpenError::Shared {
                    url: broker.shown_url(),
                    reason: e.to_string(),
                })?;
                let node = store.node().clone();
                State {
                    store: store.clone(),
                    redis: Some(store),
                    place: format!("Redis (node {node})"),
                    presence,
                    node,
                }
            }
            None => {
                let store =
                    embedded::Store::open(&config.dir).map_err(|e| OpenError::Embedded {
                        dir: config.dir.clone(),
                        reason: e.to_string(),
                    })?;
                State {
                    place: store.dir().display().to_string(),
                    store: Arc::new(store),
                    redis: None,
                    presence,
                    node: "local".into(),
                }
            }
        };
        Ok(Arc::new(state))
    }

    /// Where the store is, for the log.
    pub(crate) fn describe(&self) -> &str {
        &self.place
    }

    /// The store's history and keys.
    pub(crate) fn store(&self) -> &dyn Backend {
        &*self.store
    }

    /// Makes `conn` a member of `topic`, described by `info`.
    pub(crate) fn join(&self, namespace: &Arc<str>, topic: &str, conn: u64, info: &str) {
        let info = self.presence.join(namespace, topic, conn, info);
        if let Some(redis) = &self.redis {
            redis.joined(namespace, topic, conn, info);
        }
    }

    /// Ends `conn`'s membership of `topic`, if it had one.
    pub(crate) fn leave(&self, namespace: &Arc<str>, topic: &str, conn: u64) {
        let info = self.presence.leave(namespace, topic, conn);
        if let (Some(redis), Some(info)) = (&self.redis, info) {
            redis.left(namespace, topic, conn, info);
        }
    }

    /// Up to `limit` members of `topic`, this node's first.
    pub(crate) fn members(
        &self,
        namespace: &str,
        topic: &str,
        limit: usize,
    ) -> Result<Vec<Member>, StateError> {
        let mut members = self.presence.members(namespace, topic, limit, &self.node);
        if let Some(redis) = &self.redis
            && members.len() < limit
        {
            let others = redis.remote_members(namespace, topic, limit - members.len())?;
            members.extend(others);
        }
        Ok(members)
    }

    /// How many members `topic` has.
    pub(crate) fn count_members(&self, namespace: &str, topic: &str) -> Result<usize, StateError> {
        let here = self.presence.count(namespace, topic);
        match &self.redis {
            None => Ok(here),
            Some(redis) => Ok(here + redis.remote_members(namespace, topic, usize::MAX)?.len()),
        }
    }
}
