//! Topic history in Redis: appending a message and reading a page from a
//! position, each one Lua script.

use redis::Value;

use super::{Store, epoch_of, int, scope, text};
use crate::config::StateRules;
use crate::state::History;
use crate::state::{Entry, Kept, Page, Position, StateError, embedded};

/// Appends a message to a topic's history, starting the epoch `ARGV[3]` when
/// it has none and the namespace is under `history-topics`. KEYS: record,
/// list, the namespace's topics. ARGV: size, ttl (ms), fresh epoch, kind,
/// message, history-topics, topic, position offset (-1 for none).
pub(super) const APPEND: &str = r#"
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

/// A page of a topic's history, or `lost`. KEYS: record, list. ARGV: since
/// epoch ('' for none), since sequence number, limit.
pub(super) const READ: &str = r#"
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

impl History for Store {
    /// Appends a message to a topic's history ([`APPEND`]); answers its
    /// position and, where the entry asks for it, the message with the
    /// position written in.
    fn append(
        &self,
        namespace: &str,
        topic: &str,
        entry: Entry<'_>,
        rules: &StateRules,
    ) -> Result<(Position, Option<Vec<u8>>), StateError> {
        let scope = scope(&self.prefix, namespace);
        let fresh = format!("{:016x}", embedded::new_epoch());
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

    /// Up to `limit` messages of a topic's history: the newest, or those after
    /// `since` ([`READ`]).
    fn history(
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
                .arg(limit.min(embedded::MAX_READ))
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
}
