//! The state store shared by every node of a `[broker]`: history, members
//! and keys in Redis, so that what one node stores every node reads.
//!
//! A plugin's state call is a Redis round trip on the route's thread, bounded
//! by `state-timeout`: past it, or while Redis is unreachable, the call
//! answers `unavailable` and the route goes on. After a failed connect the
//! store answers `unavailable` at once for a moment rather than making every
//! call wait for its own connect timeout. Each change that needs several
//! commands is one Lua script, so it is atomic and one round trip.
//!
//! Members are written by a thread of their own (joins and leaves only
//! queue, they never wait on Redis), which also renews this node's members
//! before `presence-ttl` runs out: a node that dies leaves no members behind
//! for longer than that. This node's own members are read from memory.
//!
//! Keys (P is the broker's `channel-prefix`; names are length-prefixed so
//! that no namespace can spell another's):
//! - `P{n}:NS:h:TOPIC` (hash: epoch, last) and `P{n}:NS:l:TOPIC` (list of
//!   kind byte + message, the newest last): a topic's history, expiring
//!   `history-ttl` after its last publish; `P{n}:NS:t` (sorted set) the
//!   namespace's topics with history, by last publish.
//! - `P{n}:NS:p:TOPIC` (sorted set of `NODE|CONN|INFO` by expiry): members.
//! - `P{n}:NS:k:KEY` a value; `P{n}:NS:s` (hash of sizes), `P{n}:NS:b`
//!   (bytes in use) and `P{n}:NS:x` (sorted set of expiries): the quota's books.
//!
//! This file opens the store and holds what its parts share. Connections
//! are in `pool`, topic history in `history`, the key-value calls in `kv`
//! and members in `members`; each keeps the Lua script it runs beside the
//! code that passes the script its keys and arguments.

mod history;
mod kv;
mod members;
mod pool;

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::{Client, Connection, RedisResult, Script, Value};

use super::presence::Presence;
use history::{APPEND, READ};
use kv::WRITE;
use members::{Change, MEMBERS, publish_members};

/// The shared store.
pub(super) struct Store {
    /// Opens connections to Redis.
    client: Client,
    /// The broker's `channel-prefix`, which every key starts with.
    prefix: String,
    /// `state-timeout`: for connecting, and for each read and write.
    timeout: Duration,
    /// This node's name among members: random, once per process.
    node: Arc<str>,
    /// Connections kept for reuse.
    pool: Mutex<Vec<Connection>>,
    /// Until when calls answer `unavailable` at once, after a failed connect.
    down_until: Mutex<Option<Instant>>,
    /// Member changes, for the presence thread.
    changes: Mutex<Sender<Change>>,
    /// The [`APPEND`] script.
    append: Script,
    /// The [`READ`] script.
    read: Script,
    /// The [`WRITE`] script.
    write: Script,
    /// The [`MEMBERS`] script.
    members: Script,
}

/// `namespace`'s keys start with this: its length, then itself.
fn scope(prefix: &str, namespace: &str) -> String {
    format!("{prefix}{}:{namespace}:", namespace.len())
}

/// An epoch from the 16 hex digits it is stored as.
fn epoch_of(hex: &[u8]) -> Option<u64> {
    u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// A reply's bytes, if it is a string.
fn text(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// A reply's integer, whether Redis sent it as one or as text.
fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => std::str::from_utf8(text(other)?).ok()?.parse().ok(),
    }
}

impl Store {
    /// A store on the Redis at `url`; connections open when first needed.
    pub(super) fn open(
        url: &str,
        prefix: &str,
        timeout: Duration,
        presence_ttl: Duration,
        presence: Arc<Presence>,
    ) -> RedisResult<Arc<Store>> {
        let client = Client::open(url)?;
        let node: Arc<str> = format!("{:016x}", super::embedded::new_epoch()).into();
        let (changes, rx) = std::sync::mpsc::channel();
        let store = Arc::new(Store {
            client,
            prefix: prefix.to_string(),
            timeout,
            node,
            pool: Mutex::new(Vec::new()),
            down_until: Mutex::new(None),
            changes: Mutex::new(changes),
            append: Script::new(APPEND),
            read: Script::new(READ),
            write: Script::new(WRITE),
            members: Script::new(MEMBERS),
        });
        let weak = Arc::downgrade(&store);
        std::thread::Builder::new()
            .name("berth-presence".into())
            .spawn(move || publish_members(weak, rx, presence, presence_ttl))
            .map_err(|e| redis::RedisError::from(std::io::Error::other(e)))?;
        Ok(store)
    }

    /// This node's name among members.
    pub(super) fn node(&self) -> &Arc<str> {
        &self.node
    }
}
