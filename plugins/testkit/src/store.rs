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

use berth_plugin::{ConnectionId, Position, host, state};

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
        _ => return None,
    })
}
