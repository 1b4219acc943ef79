//! Testkit's commands for the state the host keeps (history, members, the
//! key-value store), each answered with one line:
//!
//! - `subscribe-as TOPIC MEMBER` answers `subscribed` or `error KIND`.
//! - `history TOPIC SINCE|- LIMIT` answers `history last=POS|none SEQ:TEXT ...`
//!   or `history error KIND`.
//! - `members TOPIC LIMIT` answers `members N INFO ...` (sorted);
//!   `count TOPIC` answers `count N`.
//! - `get KEY` answers `value TEXT` or `value none`; `set KEY VALUE [TTL_MS]`
//!   answers `set ok`; `del KEY` answers `deleted BOOL`; `incr KEY DELTA`
//!   answers `incr N`; `cas KEY EXPECTED|- VALUE|-` answers `cas BOOL`.
//! - `fill PREFIX COUNT SIZE` sets PREFIX0.. with SIZE-byte values until the
//!   first refusal: `filled N` or `filled N, then KIND`.
//! - `check-many PREFIX COUNT` answers `present N`: how many of PREFIX0..
//!   read back with the value `fill` wrote.
//!
//! Every refusal is `error KIND`, with the WIT name of the error.
//!
//! The timing commands loop N times (at most [`MAX_TIMED`]) inside the
//! plugin, time each iteration with the WASI monotonic clock, and answer
//! `timed N P50_NS P99_NS`, so that a benchmark sees what the host calls cost
//! a plugin, without the WebSocket round trip:
//!
//! - `time-store N`: a `set` of a 64-byte value, then a `get` of the same
//!   key, keys `bench-0` .. cycled over [`TIMED_KEYS`];
//! - `time-config N`: two `config-get`s of the key `bench` (a cheap pair of
//!   host calls, beside which the others show what the store adds);
//! - `time-history TOPIC N LIMIT`: `history(TOPIC, none, LIMIT)`, which must
//!   find LIMIT messages;
//! - `time-publish TOPIC N SIZE`: a publish of a SIZE-byte text to TOPIC.

use std::time::Instant;

use berth_plugin::{ConnectionId, Message, Position, host, state};

/// The most iterations a timing command runs.
const MAX_TIMED: usize = 100_000;
/// How many distinct keys `time-store` cycles over.
const TIMED_KEYS: usize = 1000;
/// The size of `time-store`'s values.
const TIMED_VALUE: usize = 64;

/// The value `fill` writes under `PREFIX{i}`, so that `check-many` can tell
/// a stored value from another.
fn fill_value(i: usize, size: usize) -> Vec<u8> {
    let mut value = format!("{i}|").into_bytes();
    value.resize(size.max(value.len()), b'.');
    value
}

fn dash(text: &str) -> Option<&[u8]> {
    (text != "-").then_some(text.as_bytes())
}

/// Answers a state command, or `None` if `command` is not one.
pub(crate) fn answer(conn: ConnectionId, command: &str, rest: &str) -> Option<String> {
    let mut args = rest.split(' ');
    let mut arg = || args.next().unwrap_or_default();
    Some(match command {
        "subscribe-as" => {
            let (topic, member) = rest.split_once(' ').unwrap_or((rest, ""));
            match host::subscribe_as(conn, topic, member) {
                Ok(()) => "subscribed".into(),
                Err(e) => format!("error {}", e.name()),
            }
        }
        "history" => {
            let (topic, since, limit) = (arg(), arg(), arg());
            let since = Position::parse(since);
            match state::history(topic, since, limit.parse().unwrap_or(0)) {
                Ok(page) => {
                    let mut out = match page.last {
                        Some(last) => format!("history last={last}"),
                        None => "history last=none".into(),
                    };
                    for kept in &page.messages {
                        let text = kept.message().as_text().unwrap_or("<binary>");
                        out.push_str(&format!(" {}:{text}", kept.position.seq));
                    }
                    out
                }
                Err(e) => format!("history error {}", e.name()),
            }
        }
        "members" => {
            let (topic, limit) = (arg(), arg());
            match state::members(topic, limit.parse().unwrap_or(0)) {
                Ok(members) => {
                    let mut infos: Vec<&str> = members.iter().map(|m| m.info.as_str()).collect();
                    infos.sort_unstable();
                    format!("members {} {}", infos.len(), infos.join(" "))
                }
                Err(e) => format!("error {}", e.name()),
            }
        }
        "count" => match state::count_members(arg()) {
            Ok(n) => format!("count {n}"),
            Err(e) => format!("error {}", e.name()),
        },
        "get" => match state::get(arg()) {
            Ok(Some(value)) => format!("value {}", String::from_utf8_lossy(&value)),
            Ok(None) => "value none".into(),
            Err(e) => format!("error {}", e.name()),
        },
        "set" => {
            let (key, value, ttl) = (arg(), arg(), arg());
            let ttl = ttl.parse().ok().map(std::time::Duration::from_millis);
            match state::set(key, value.as_bytes(), ttl) {
                Ok(()) => "set ok".into(),
                Err(e) => format!("error {}", e.name()),
            }
        }
        "del" => match state::delete(arg()) {
            Ok(had) => format!("deleted {had}"),
            Err(e) => format!("error {}", e.name()),
        },
        "incr" => {
            let (key, delta) = (arg(), arg());
            match state::increment(key, delta.parse().unwrap_or(0)) {
                Ok(n) => format!("incr {n}"),
                Err(e) => format!("error {}", e.name()),
            }
        }
        "cas" => {
            let (key, expected, value) = (arg(), arg(), arg());
            match state::compare_and_set(key, dash(expected), dash(value), None) {
                Ok(done) => format!("cas {done}"),
                Err(e) => format!("error {}", e.name()),
            }
        }
        "fill" => {
            let prefix = arg();
            let (count, size) = (
                arg().parse().unwrap_or(0usize),
                arg().parse().unwrap_or(0usize),
            );
            let mut out = format!("filled {count}");
            for i in 0..count {
                let key = format!("{prefix}{i}");
                if let Err(e) = state::set(&key, &fill_value(i, size), None) {
                    out = format!("filled {i}, then {}", e.name());
                    break;
                }
            }
            out
        }
        "check-many" => {
            let (prefix, count) = (arg(), arg().parse().unwrap_or(0usize));
            let present = (0..count)
                .filter(|&i| {
                    let want = fill_value(i, 0);
                    state::get(&format!("{prefix}{i}"))
                        .ok()
                        .flatten()
                        .is_some_and(|v| v.starts_with(&want))
                })
                .count();
            format!("present {present}")
        }
        "time-store" => time_store(arg().parse().unwrap_or(0)),
        "time-config" => {
            let count = arg().parse().unwrap_or(0);
            timed(count, |_| {
                let a = host::config_get("bench");
                let b = host::config_get("bench");
                match (a, b) {
                    (Some(_), Some(_)) => Ok(()),
                    _ => Err("error no config key bench".into()),
                }
            })
        }
        "time-history" => {
            let topic = arg();
            let (count, limit) = (arg().parse().unwrap_or(0), arg().parse().unwrap_or(0));
            timed(count, |_| match state::history(topic, None, limit) {
                Ok(page) if page.messages.len() == limit as usize => Ok(()),
                Ok(page) => Err(format!(
                    "error history found {} messages, not {limit}",
                    page.messages.len()
                )),
                Err(e) => Err(format!("error {}", e.name())),
            })
        }
        "time-publish" => {
            let topic = arg();
            let (count, size) = (arg().parse().unwrap_or(0), arg().parse().unwrap_or(0));
            let body = ".".repeat(size);
            timed(count, |_| {
                match host::publish(topic, Message::text(&body), None) {
                    Ok(_) => Ok(()),
                    Err(e) => Err(format!("error {}", e.name())),
                }
            })
        }
        _ => return None,
    })
}

/// `time-store`: each iteration sets a key and reads it back; the keys and
/// values are made before the clock starts.
fn time_store(count: usize) -> String {
    let keys: Vec<String> = (0..TIMED_KEYS).map(|i| format!("bench-{i}")).collect();
    let mut value = [b'v'; TIMED_VALUE];
    timed(count, |i| {
        // A different value each time, so that each set changes the store.
        value[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let key = &keys[i % TIMED_KEYS];
        state::set(key, &value, None).map_err(|e| format!("error {}", e.name()))?;
        match state::get(key) {
            Ok(Some(read)) if read == value => Ok(()),
            Ok(_) => Err(format!("error {key} read back differently")),
            Err(e) => Err(format!("error {}", e.name())),
        }
    })
}

/// Runs `step` `count` times (at most [`MAX_TIMED`]), timing each, and
/// answers `timed N P50_NS P99_NS`, or the first step's error.
fn timed(count: usize, mut step: impl FnMut(usize) -> Result<(), String>) -> String {
    let count = count.min(MAX_TIMED);
    if count == 0 {
        return "error nothing to time".into();
    }
    let mut samples: Vec<u64> = Vec::with_capacity(count);
    for i in 0..count {
        let started = Instant::now();
        let result = step(i);
        let took = started.elapsed();
        if let Err(error) = result {
            return error;
        }
        samples.push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
    }
    summary(samples)
}

/// `timed N P50_NS P99_NS` of `samples` (at least one).
pub(crate) fn summary(mut samples: Vec<u64>) -> String {
    samples.sort_unstable();
    let count = samples.len();
    let at = |p: f64| samples[((count - 1) as f64 * p).round() as usize];
    format!("timed {count} {} {}", at(0.5), at(0.99))
}
