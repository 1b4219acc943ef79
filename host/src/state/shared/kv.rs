//! The key-value store in Redis: every write one Lua script that keeps the
//! namespace's books (sizes, bytes, expiries) and checks its quota.

use redis::Value;

use super::{Store, int, scope, text};
use crate::config::StateRules;
use crate::state::Keys;
use crate::state::StateError;

/// Every key-value write: forgets names whose values Redis expired, checks
/// the quota, and writes. ARGV: value-key prefix, name, op, max keys, max
/// bytes, then the op's own arguments.
pub(super) const WRITE: &str = r#"
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

impl Keys for Store {
    /// What `key` holds; Redis forgets expired keys itself.
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let key = format!("{}k:{key}", scope(&self.prefix, namespace));
        self.with(|conn| redis::cmd("GET").arg(key).query(conn))
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
        let ttl = ttl_ms.map_or(0, |t| t.max(1)).to_string();
        let answer = self.write(namespace, key, "set", rules, &[value, ttl.as_bytes()])?;
        Self::written(answer).map(drop)
    }

    /// Removes `key`; answers whether it held a value.
    fn delete(&self, namespace: &str, key: &str) -> Result<bool, StateError> {
        let rules = StateRules::default();
        match self.write(namespace, key, "delete", &rules, &[])? {
            Value::Int(n) => Ok(n == 1),
            _ => Err(StateError::Unavailable),
        }
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
        let delta = delta.to_string();
        match self.write(namespace, key, "increment", rules, &[delta.as_bytes()])? {
            Value::Array(sum) => sum.first().and_then(int).ok_or(StateError::Unavailable),
            other => Self::written(other).and(Err(StateError::Unavailable)),
        }
    }

    /// Writes `value` (removes the key for `None`) only if the key's value is
    /// `expected`; answers whether it did.
    fn compare_and_set(
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
}

impl Store {
    /// Runs the key-value operation `op` through [`WRITE`], within the
    /// namespace's quota.
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

    /// What a [`WRITE`] answer says of a write.
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
}
