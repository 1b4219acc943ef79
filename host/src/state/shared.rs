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

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::{Client, Connection, RedisResult, Script, Value};

use super::presence::{Member, Membership, Presence};
use super::{Entry, Kept, Page, Position, StateError};
use crate::config::StateRules;

/// How long the store answers `unavailable` at once after a failed connect.
const BACKOFF: Duration = Duration::from_secs(1);
/// Connections kept for reuse; more are opened when calls overlap, and closed after.
const POOL: usize = 8;
/// The most members one read fetches.
const MAX_MEMBERS: usize = 100_000;

const APPEND: &str = r#"
local meta, list, topics = KEYS[1], KEYS[2], KEYS[3]
local size, ttl, fresh, topic = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[7]
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', topics, '-inf', now - ttl)
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  if not redis.call('ZSCORE', topics, topic) and redis.call('ZCARD', topics) >= tonumber(ARGV[6]) then
    return {'full'}
  end
  epoch = fresh
  redis.call('DEL', list)
  redis.call('HSET', meta, 'epoch', epoch, 'last', 0)
end
local seq = redis.call('HINCRBY', meta, 'last', 1)
local data = ARGV[5]
local at = tonumber(ARGV[8])
local composed = false
if at >= 0 then
  data = string.sub(data, 1, at) .. epoch .. '-' .. string.format('%d', seq) .. string.sub(data, at + 1)
  composed = data
end
redis.call('RPUSH', list, ARGV[4] .. data)
redis.call('LTRIM', list, -size, -1)
redis.call('PEXPIRE', meta, ttl)
redis.call('PEXPIRE', list, ttl)
redis.call('ZADD', topics, now, topic)
redis.call('PEXPIRE', topics, ttl)
return {epoch, seq, composed}
"#;

const READ: &str = r#"
local meta, list = KEYS[1], KEYS[2]
local since_epoch, since_seq, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  if since_epoch ~= '' and since_seq > 0 then return {'lost'} end
  return {'', 0}
end
local last = tonumber(redis.call('HGET', meta, 'last'))
local first = last - redis.call('LLEN', list) + 1
local start
if since_epoch == '' then
  start = math.max(first, last - limit + 1)
else
  if since_epoch ~= epoch or since_seq + 1 < first or since_seq > last then return {'lost'} end
  start = since_seq + 1
end
local stop = math.min(last, start + limit - 1)
if start > stop then return {epoch, last, start, {}} end
return {epoch, last, start, redis.call('LRANGE', list, start - first, stop - first)}
"#;

/// A topic's live members, read against Redis's own clock (which scored
/// them) in one round trip.
const MEMBERS: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf', 'LIMIT', 0, tonumber(ARGV[1]))
"#;

/// Every key-value write: forgets names whose values Redis expired, checks
/// the quota, and writes. ARGV: value-key prefix, name, op, max keys, max
/// bytes, then the op's own arguments.
const WRITE: &str = r#"
local sizes, total, expiries = KEYS[1], KEYS[2], KEYS[3]
local base, name, op = ARGV[1], ARGV[2], ARGV[3]
local max_keys, max_bytes = tonumber(ARGV[4]), tonumber(ARGV[5])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local function forget(n)
  local size = redis.call('HGET', sizes, n)
  if size then
    redis.call('HDEL', sizes, n)
    redis.call('DECRBY', total, size)
  end
  redis.call('ZREM', expiries, n)
end
for _, n in ipairs(redis.call('ZRANGEBYSCORE', expiries, '-inf', now, 'LIMIT', 0, 64)) do
  if redis.call('EXISTS', base .. n) == 0 then forget(n) end
end
local key = base .. name
local current = redis.call('GET', key)
if not current and redis.call('HEXISTS', sizes, name) == 1 then forget(name) end
local old = tonumber(redis.call('HGET', sizes, name) or '0')
local function store(value, ttl)
  local size = string.len(name) + string.len(value)
  local keys = redis.call('HLEN', sizes) + (current and 0 or 1)
  local used = tonumber(redis.call('GET', total) or '0')
  if not current and keys > max_keys then return 'keys' end
  if used - old + size > max_bytes and used - old + size > used then return 'bytes' end
  if ttl > 0 then
    redis.call('SET', key, value, 'PX', ttl)
    redis.call('ZADD', expiries, now + ttl, name)
  else
    redis.call('SET', key, value)
    redis.call('ZREM', expiries, name)
  end
  redis.call('HSET', sizes, name, size)
  redis.call('INCRBY', total, size - old)
  return 'ok'
end
local function remove()
  if not current then return 0 end
  redis.call('DEL', key)
  forget(name)
  return 1
end
if op == 'set' then
  return store(ARGV[6], tonumber(ARGV[7]))
elseif op == 'delete' then
  return remove()
elseif op == 'increment' then
  local n = tonumber(current or '0')
  if current and (not string.match(current, '^-?%d+$') or string.len(current) > 20) then return 'nan' end
  local ok, sum = pcall(redis.call, 'INCRBY', key, ARGV[6])
  if not ok then return 'nan' end
  local pttl = redis.call('PTTL', key)
  local value = redis.call('GET', key)
  local result = store(value, pttl > 0 and pttl or 0)
  if result ~= 'ok' then
    if current then redis.call('SET', key, current, 'KEEPTTL') else redis.call('DEL', key) end
    return result
  end
  return {sum}
else
  local matches
  if ARGV[6] == '0' then matches = not current else matches = current == ARGV[7] end
  if not matches then return 'no' end
  if ARGV[8] == '0' then remove() return 'ok' end
  return store(ARGV[9], tonumber(ARGV[10]))
end
"#;

/// A change to this node's members, for the presence thread.
enum Change {
    Join(Arc<str>, Box<str>, u64, Arc<str>),
    Leave(Arc<str>, Box<str>, u64, Arc<str>),
}

/// The shared store.
pub(super) struct Store {
    client: Client,
    prefix: String,
    timeout: Duration,
    node: Arc<str>,
    pool: Mutex<Vec<Connection>>,
    down_until: Mutex<Option<Instant>>,
    changes: Mutex<Sender<Change>>,
    append: Script,
    read: Script,
    write: Script,
    members: Script,
}

/// `namespace`'s keys start with this: its length, then itself.
fn scope(prefix: &str, namespace: &str) -> String {
    format!("{prefix}{}:{namespace}:", namespace.len())
}

fn epoch_of(hex: &[u8]) -> Option<u64> {
    u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

fn text(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

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

    /// Runs `call` on a pooled connection, within `state-timeout`.
    fn with<T>(
        &self,
        call: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, StateError> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.connect()?,
        };
        match call(&mut conn) {
            Ok(value) => {
                let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
                if pool.len() < POOL {
                    pool.push(conn);
                }
                Ok(value)
            }
            Err(error) => {
                // The connection may hold half an answer: it is not reused.
                tracing::warn!(%error, "state store call failed");
                Err(StateError::Unavailable)
            }
        }
    }

    fn connect(&self) -> Result<Connection, StateError> {
        let mut down = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
        if down.is_some_and(|until| Instant::now() < until) {
            return Err(StateError::Unavailable);
        }
        let opened = self
            .client
            .get_connection_with_timeout(self.timeout)
            .and_then(|conn| {
                conn.set_read_timeout(Some(self.timeout))?;
                conn.set_write_timeout(Some(self.timeout))?;
                Ok(conn)
            });
        match opened {
            Ok(conn) => {
                *down = None;
                Ok(conn)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot reach Redis for the state store");
                *down = Some(Instant::now() + BACKOFF);
                Err(StateError::Unavailable)
            }
        }
    }

    pub(super) fn append(
        &self,
        namespace: &str,
        topic: &str,
        entry: Entry<'_>,
        rules: &StateRules,
    ) -> Result<(Position, Option<Vec<u8>>), StateError> {
        let scope = scope(&self.prefix, namespace);
        let fresh = format!("{:016x}", super::embedded::new_epoch());
        let answer: Value = self.with(|conn| {
            self.append
                .key(format!("{scope}h:{topic}"))
                .key(format!("{scope}l:{topic}"))
                .key(format!("{scope}t"))
                .arg(rules.history_size.max(1))
                .arg(rules.history_ttl.as_millis() as u64)
                .arg(&fresh)
                .arg(if entry.text { "t" } else { "b" })
                .arg(entry.data)
                .arg(rules.history_topics)
                .arg(topic)
                .arg(entry.position_at.map_or(-1, |at| at as i64))
                .invoke(conn)
        })?;
        let Value::Array(parts) = answer else {
            return Err(StateError::Unavailable);
        };
        if parts.first().and_then(text) == Some(b"full") {
            return Err(StateError::HistoryTopics);
        }
        let epoch = parts.first().and_then(text).and_then(epoch_of);
        let seq = parts.get(1).and_then(int);
        let (Some(epoch), Some(seq)) = (epoch, seq) else {
            return Err(StateError::Unavailable);
        };
        let position = Position {
            epoch,
            seq: seq as u64,
        };
        let composed = parts.get(2).and_then(text).map(<[u8]>::to_vec);
        Ok((position, composed))
    }

    pub(super) fn history(
        &self,
        namespace: &str,
        topic: &str,
        since: Option<Position>,
        limit: u32,
    ) -> Result<Page, StateError> {
        let scope = scope(&self.prefix, namespace);
        let (since_epoch, since_seq) = match since {
            Some(p) => (format!("{:016x}", p.epoch), p.seq),
            None => (String::new(), 0),
        };
        let answer: Value = self.with(|conn| {
            self.read
                .key(format!("{scope}h:{topic}"))
                .key(format!("{scope}l:{topic}"))
                .arg(since_epoch)
                .arg(since_seq)
                .arg(limit.min(super::embedded::MAX_READ))
                .invoke(conn)
        })?;
        let Value::Array(parts) = answer else {
            return Err(StateError::Unavailable);
        };
        match parts.first().and_then(text) {
            Some(b"lost") => return Err(StateError::Lost),
            Some(b"") => {
                return Ok(Page {
                    epoch: 0,
                    messages: Vec::new(),
                    last: 0,
                });
            }
            _ => {}
        }
        let epoch = parts.first().and_then(text).and_then(epoch_of);
        let last = parts.get(1).and_then(int);
        let start = parts.get(2).and_then(int);
        let (Some(epoch), Some(last), Some(start)) = (epoch, last, start) else {
            return Err(StateError::Unavailable);
        };
        let items = match parts.get(3) {
            Some(Value::Array(items)) => items.as_slice(),
            _ => &[],
        };
        let messages = items
            .iter()
            .zip(start as u64..)
            .filter_map(|(item, seq)| {
                let bytes = text(item)?;
                let (&kind, data) = bytes.split_first()?;
                Some(Kept {
                    seq,
                    text: kind == b't',
                    data: data.to_vec(),
                })
            })
            .collect();
        Ok(Page {
            epoch,
            messages,
            last: last as u64,
        })
    }

    /// Queues a change to this node's members for the presence thread.
    fn change(&self, change: Change) {
        let _ = self
            .changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(change);
    }

    pub(super) fn joined(&self, namespace: &Arc<str>, topic: &str, conn: u64, info: Arc<str>) {
        self.change(Change::Join(namespace.clone(), topic.into(), conn, info));
    }

    pub(super) fn left(&self, namespace: &Arc<str>, topic: &str, conn: u64, info: Arc<str>) {
        self.change(Change::Leave(namespace.clone(), topic.into(), conn, info));
    }

    /// Members of `topic` on other nodes, live now.
    pub(super) fn remote_members(
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

    pub(super) fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let key = format!("{}k:{key}", scope(&self.prefix, namespace));
        self.with(|conn| redis::cmd("GET").arg(key).query(conn))
    }

    fn write(
        &self,
        namespace: &str,
        key: &str,
        op: &str,
        rules: &StateRules,
        args: &[&[u8]],
    ) -> Result<Value, StateError> {
        let scope = scope(&self.prefix, namespace);
        self.with(|conn| {
            let mut call = self.write.prepare_invoke();
            call.key(format!("{scope}s"))
                .key(format!("{scope}b"))
                .key(format!("{scope}x"))
                .arg(format!("{scope}k:"))
                .arg(key)
                .arg(op)
                .arg(rules.store_keys)
                .arg(rules.store_bytes);
            for arg in args {
                call.arg(*arg);
            }
            call.invoke(conn)
        })
    }

    fn written(answer: Value) -> Result<bool, StateError> {
        match text(&answer) {
            Some(b"ok") => Ok(true),
            Some(b"no") => Ok(false),
            Some(b"keys") => Err(StateError::StoreKeys),
            Some(b"bytes") => Err(StateError::StoreBytes),
            Some(b"nan") => Err(StateError::NotANumber),
            _ => Err(StateError::Unavailable),
        }
    }

    pub(super) fn set(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        ttl_ms: Option<u64>,
        rules: &StateRules,
    ) -> Result<(), StateError> {
        let ttl = ttl_ms.map_or(0, |t| t.max(1)).to_string();
        let answer = self.write(namespace, key, "set", rules, &[value, ttl.as_bytes()])?;
        Self::written(answer).map(drop)
    }

    pub(super) fn delete(&self, namespace: &str, key: &str) -> Result<bool, StateError> {
        let rules = StateRules::default();
        match self.write(namespace, key, "delete", &rules, &[])? {
            Value::Int(n) => Ok(n == 1),
            _ => Err(StateError::Unavailable),
        }
    }

    pub(super) fn increment(
        &self,
        namespace: &str,
        key: &str,
        delta: i64,
        rules: &StateRules,
    ) -> Result<i64, StateError> {
        let delta = delta.to_string();
        match self.write(namespace, key, "increment", rules, &[delta.as_bytes()])? {
            Value::Array(sum) => sum.first().and_then(int).ok_or(StateError::Unavailable),
            other => Self::written(other).and(Err(StateError::Unavailable)),
        }
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
        let ttl = ttl_ms.map_or(0, |t| t.max(1)).to_string();
        let flag = |v: Option<&[u8]>| if v.is_some() { &b"1"[..] } else { &b"0"[..] };
        let args = [
            flag(expected),
            expected.unwrap_or_default(),
            flag(value),
            value.unwrap_or_default(),
            ttl.as_bytes(),
        ];
        Self::written(self.write(namespace, key, "cas", rules, &args)?)
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
fn publish_members(
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
