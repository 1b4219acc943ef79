//! This node's topic members in Redis: the thread that writes joins and
//! leaves as they come and renews them before `presence-ttl` runs out, and
//! the read of other nodes' members.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::pool::BACKOFF;
use super::{Store, scope};
use crate::state::StateError;
use crate::state::presence::{Member, Membership, Presence};

/// The most members one read fetches.
const MAX_MEMBERS: usize = 100_000;

/// A topic's live members, read against Redis's own clock (which scored
/// them) in one round trip.
pub(super) const MEMBERS: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf', 'LIMIT', 0, tonumber(ARGV[1]))
"#;

/// A change to this node's members, for the presence thread.
pub(super) enum Change {
    /// A member joined: namespace, topic, connection, description.
    Join(Arc<str>, Box<str>, u64, Arc<str>),
    /// A member left: namespace, topic, connection, description.
    Leave(Arc<str>, Box<str>, u64, Arc<str>),
}

impl Store {
    /// Queues a change to this node's members for the presence thread.
    fn change(&self, change: Change) {
        let _ = self
            .changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(change);
    }

    /// Queues a member's join, for Redis.
    pub(in crate::state) fn joined(
        &self,
        namespace: &Arc<str>,
        topic: &str,
        conn: u64,
        info: Arc<str>,
    ) {
        self.change(Change::Join(namespace.clone(), topic.into(), conn, info));
    }

    /// Queues a member's leave, for Redis.
    pub(in crate::state) fn left(
        &self,
        namespace: &Arc<str>,
        topic: &str,
        conn: u64,
        info: Arc<str>,
    ) {
        self.change(Change::Leave(namespace.clone(), topic.into(), conn, info));
    }

    /// Members of `topic` on other nodes, live now.
    pub(in crate::state) fn remote_members(
        &self,
        namespace: &str,
        topic: &str,
        limit: usize,
    ) -> Result<Vec<Member>, StateError> {
        let key = format!("{}p:{topic}", scope(&self.prefix, namespace));
        let entries: Vec<Vec<u8>> = self.with(|conn| {
            self.members
                .key(&key)
                .arg(limit.min(MAX_MEMBERS))
                .invoke(conn)
        })?;
        Ok(entries
            .iter()
            .filter_map(|entry| {
                let text = std::str::from_utf8(entry).ok()?;
                let mut parts = text.splitn(3, '|');
                let (node, conn, info) = (parts.next()?, parts.next()?, parts.next()?);
                (node != &*self.node).then(|| Member {
                    conn: conn.parse().unwrap_or(0),
                    node: node.into(),
                    info: info.into(),
                })
            })
            .collect())
    }

    /// Writes `changes` and, when `all` is given, renews every member in it.
    fn sync_members(
        &self,
        changes: Vec<Change>,
        all: Option<Vec<Membership>>,
        ttl: Duration,
    ) -> Result<(), StateError> {
        let entry = |conn: u64, info: &str| format!("{}|{conn}|{info}", self.node);
        let key =
            |namespace: &str, topic: &str| format!("{}p:{topic}", scope(&self.prefix, namespace));
        self.with(|conn| {
            let now: (u64, u64) = redis::cmd("TIME").query(conn)?;
            let expiry = now.0 * 1000 + now.1 / 1000 + ttl.as_millis() as u64;
            let mut pipe = redis::pipe();
            for change in &changes {
                match change {
                    Change::Join(ns, topic, c, info) => {
                        let key = key(ns, topic);
                        pipe.zadd(&key, entry(*c, info), expiry).ignore();
                        pipe.pexpire(&key, 2 * ttl.as_millis() as i64).ignore();
                    }
                    Change::Leave(ns, topic, c, info) => {
                        pipe.zrem(key(ns, topic), entry(*c, info)).ignore();
                    }
                }
            }
            for (ns, topic, c, info) in all.iter().flatten() {
                let key = key(ns, topic);
                pipe.zadd(&key, entry(*c, info), expiry).ignore();
                pipe.pexpire(&key, 2 * ttl.as_millis() as i64).ignore();
                pipe.zrembyscore(&key, "-inf", now.0 * 1000).ignore();
            }
            pipe.query::<()>(conn)
        })
    }
}

/// Writes this node's joins and leaves to Redis as they come, and renews all
/// its members three times per `presence-ttl`, until the store is dropped.
pub(super) fn publish_members(
    store: std::sync::Weak<Store>,
    changes: Receiver<Change>,
    presence: Arc<Presence>,
    ttl: Duration,
) {
    let renew_every = ttl / 3;
    let mut renewed = Instant::now();
    let mut pending: Vec<Change> = Vec::new();
    loop {
        let wait = renew_every.saturating_sub(renewed.elapsed());
        match changes.recv_timeout(wait) {
            Ok(change) => {
                pending.push(change);
                pending.extend(changes.try_iter());
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let Some(store) = store.upgrade() else { return };
        let all = (renewed.elapsed() >= renew_every).then(|| presence.snapshot());
        let renewing = all.is_some();
        match store.sync_members(std::mem::take(&mut pending), all, ttl) {
            Ok(()) if renewing => renewed = Instant::now(),
            Ok(()) => {}
            // Redis is away: renew everything once it is back, which also
            // carries the joins missed meanwhile (missed leaves expire).
            Err(_) => {
                std::thread::sleep(BACKOFF);
                renewed = Instant::now() - renew_every;
            }
        }
    }
}
