//! Chat: rooms. A client joins the room named in its query (`?room=NAME`,
//! default `lobby`); every text message goes to everyone else in that room and
//! to nobody elsewhere; joins and leaves are announced to the room. The host
//! does the fan-out through topics per room, and knows who is in it (each
//! client is a member of its room's topic, on every node that shares a
//! broker). Messages are JSON objects:
//!
//! - `{"type":"welcome","id":N,"room":"lobby","members":[...]}` to a newcomer,
//!   listing the ids of the room's other members,
//! - `{"type":"join","id":N}` and `{"type":"leave","id":N,"code":C,"reason":"..."}`,
//! - `{"type":"message","from":N,"text":"..."}`.
//!
//! When the route keeps history (`history-size`), every message also carries
//! its position, `{"type":"message","position":"EPOCH-SEQ","from":N,...}`,
//! written in by the host as it stores it; a newcomer gets the room's last 50
//! messages right after the welcome, and a client that comes back with
//! `?since=POSITION` gets every message after that one instead, or
//! `{"type":"resync"}` followed by the last 50 when they are no longer all
//! kept. The sender of a message hears `{"type":"sent","position":"..."}`. Messages go through the topic `room:NAME`, joins and leaves through
//! `events:NAME`, so that the history holds only messages.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use berth_plugin::{
    Accept, CloseInfo, Connect, ConnectionId, HistoryError, Message, Plugin, Position, Reject,
    Request, host, state,
};

thread_local! {
    // One instance serves the whole route, so each connection's room lives here.
    static ROOMS: RefCell<BTreeMap<ConnectionId, String>> = const { RefCell::new(BTreeMap::new()) };
    // Whether the route keeps history, learnt from the first read.
    static KEEPS_HISTORY: Cell<Option<bool>> = const { Cell::new(None) };
}

/// How many past messages a newcomer gets.
const RECENT: u32 = 50;
/// The most messages one history read asks for when catching up.
const PAGE: u32 = 1000;

/// Appends `s` to `out` as a JSON string literal.
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The room named by `?room=NAME`: 1 to 64 of A-Z, a-z, 0-9, '-' and '_'.
fn room_of(req: &Request) -> Result<String, Reject> {
    let name = req.query_param("room").unwrap_or("lobby");
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(name.to_string())
    } else {
        Err(Reject::new(
            400,
            "room names are 1-64 of A-Z, a-z, 0-9, '-' and '_'",
        ))
    }
}

fn topic(room: &str) -> String {
    format!("room:{room}")
}

fn events(room: &str) -> String {
    format!("events:{room}")
}

/// Sends `conn` the room's messages after `since` (the last [`RECENT`]
/// without it), or a resync notice and the last ones when those are gone.
/// Returns whether the route keeps history at all.
fn replay(conn: ConnectionId, room: &str, since: Option<Option<Position>>) -> bool {
    let topic = topic(room);
    let mut after = match since {
        Some(Some(position)) => Some(position),
        // A `since` that is not a position cannot be continued from.
        Some(None) => {
            let _ = host::send(conn, Message::text(r#"{"type":"resync"}"#));
            None
        }
        None => None,
    };
    loop {
        let limit = if after.is_some() { PAGE } else { RECENT };
        let page = match state::history(&topic, after, limit) {
            Ok(page) => page,
            Err(HistoryError::Disabled) => return false,
            Err(HistoryError::Lost) => {
                let _ = host::send(conn, Message::text(r#"{"type":"resync"}"#));
                after = None;
                continue;
            }
            // Unreadable for now: live messages still flow.
            Err(_) => return true,
        };
        for kept in &page.messages {
            let _ = host::send(conn, kept.message());
        }
        match (after.is_some(), page.messages.last(), page.last) {
            (true, Some(newest), Some(last)) if newest.position.seq < last.seq => {
                after = Some(newest.position);
            }
            _ => return true,
        }
    }
}

fn keeps_history() -> bool {
    KEEPS_HISTORY.get().unwrap_or(false)
}

fn room_of_conn(conn: ConnectionId) -> Option<String> {
    ROOMS.with_borrow(|rooms| rooms.get(&conn).cloned())
}

struct Chat;

/// What `on_connect` decides, at once.
fn admit(conn: ConnectionId, req: Request) -> Result<Accept, Reject> {
    let room = room_of(&req)?;
    let since = req.query_param("since").map(Position::parse);
    let mut ids: Vec<u64> = state::members(&topic(&room), 1000)
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m.info.parse().ok())
        .collect();
    ids.sort_unstable();
    let members = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let mut welcome = format!(r#"{{"type":"welcome","id":{conn},"room":"#);
    push_json_string(&mut welcome, &room);
    welcome.push_str(&format!(r#","members":[{members}]}}"#));
    let _ = host::send(conn, Message::text(&welcome));
    let join = format!(r#"{{"type":"join","id":{conn}}}"#);
    let _ = host::publish(&events(&room), Message::text(&join), None);
    // Subscribed before the history is read: a message published on
    // another node in between comes twice rather than never, and its
    // position tells the copies apart.
    let _ = host::subscribe(conn, &events(&room));
    let _ = host::subscribe_as(conn, &topic(&room), &conn.to_string());
    KEEPS_HISTORY.set(Some(replay(conn, &room, since)));
    ROOMS.with_borrow_mut(|rooms| rooms.insert(conn, room));
    Ok(Accept::new())
}

impl Plugin for Chat {
    fn on_connect(conn: ConnectionId, req: Request) -> Connect {
        admit(conn, req).into()
    }

    fn on_message(conn: ConnectionId, msg: Message<'_>) {
        let (Some(text), Some(room)) = (msg.as_text(), room_of_conn(conn)) else {
            return;
        };
        let mut out = String::from(r#"{"type":"message","#);
        let position_at = keeps_history().then(|| {
            out.push_str(r#""position":""#);
            let at = out.len();
            out.push_str(r#"","#);
            at
        });
        out.push_str(&format!(r#""from":{conn},"text":"#));
        push_json_string(&mut out, text);
        out.push('}');
        let message = Message::text(&out);
        let Some(at) = position_at else {
            let _ = host::publish(&topic(&room), message, Some(conn));
            return;
        };
        // The sender hears where its message went, so that it can tell the
        // message apart when history brings it back.
        if let Ok(Some(position)) =
            host::publish_at(&topic(&room), message, Some(conn), at).map(|p| p.position)
        {
            let sent = format!(r#"{{"type":"sent","position":"{position}"}}"#);
            let _ = host::send(conn, Message::text(&sent));
        }
    }

    fn on_close(conn: ConnectionId, info: CloseInfo<'_>) {
        let Some(room) = ROOMS.with_borrow_mut(|rooms| rooms.remove(&conn)) else {
            return;
        };
        let mut out = format!(
            r#"{{"type":"leave","id":{conn},"code":{},"reason":"#,
            info.code
        );
        push_json_string(&mut out, info.reason);
        out.push('}');
        // The host ended the connection's subscriptions before this call.
        let _ = host::publish(&events(&room), Message::text(&out), None);
    }
}

berth_plugin::export!(Chat);
