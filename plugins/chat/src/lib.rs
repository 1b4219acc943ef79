//! Chat: rooms. A client joins the room named in its query (`?room=NAME`,
//! default `lobby`); every text message goes to everyone else in that room and
//! to nobody elsewhere; joins and leaves are announced to the room. The host
//! does the fan-out through one topic per room. Messages are JSON objects:
//!
//! - `{"type":"welcome","id":N,"room":"lobby","members":[...]}` to a newcomer,
//! - `{"type":"join","id":N}` and `{"type":"leave","id":N,"code":C,"reason":"..."}`,
//! - `{"type":"message","from":N,"text":"..."}`.

use std::cell::RefCell;
use std::collections::BTreeMap;

use berth_plugin::{Accept, CloseInfo, ConnectionId, Message, Plugin, Reject, Request, host};

thread_local! {
    // One instance serves the whole route, so who is in which room lives here.
    static ROOMS: RefCell<BTreeMap<ConnectionId, String>> = const { RefCell::new(BTreeMap::new()) };
}

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

fn room_of_conn(conn: ConnectionId) -> Option<String> {
    ROOMS.with_borrow(|rooms| rooms.get(&conn).cloned())
}

struct Chat;

impl Plugin for Chat {
    fn on_connect(conn: ConnectionId, req: Request) -> Result<Accept, Reject> {
        let room = room_of(&req)?;
        let members = ROOMS.with_borrow(|rooms| {
            rooms
                .iter()
                .filter(|(_, r)| **r == room)
                .map(|(id, _)| id.to_string())
                .collect::<Vec<_>>()
                .join(",")
        });
        let mut welcome = format!(r#"{{"type":"welcome","id":{conn},"room":"#);
        push_json_string(&mut welcome, &room);
        welcome.push_str(&format!(r#","members":[{members}]}}"#));
        let _ = host::send(conn, Message::text(&welcome));
        let join = format!(r#"{{"type":"join","id":{conn}}}"#);
        let _ = host::publish(&topic(&room), Message::text(&join), None);
        let _ = host::subscribe(conn, &topic(&room));
        ROOMS.with_borrow_mut(|rooms| rooms.insert(conn, room));
        Ok(Accept::new())
    }

    fn on_message(conn: ConnectionId, msg: Message<'_>) {
        let (Some(text), Some(room)) = (msg.as_text(), room_of_conn(conn)) else {
            return;
        };
        let mut out = format!(r#"{{"type":"message","from":{conn},"text":"#);
        push_json_string(&mut out, text);
        out.push('}');
        let _ = host::publish(&topic(&room), Message::text(&out), Some(conn));
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
        // The host ended the connection's subscription before this call.
        let _ = host::publish(&topic(&room), Message::text(&out), None);
    }
}

berth_plugin::export!(Chat);
