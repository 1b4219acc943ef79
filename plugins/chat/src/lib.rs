//! Chat: one room per route. Every text message goes to every other member;
//! joins and leaves are announced to the others. Messages are JSON objects:
//!
//! - `{"type":"welcome","id":N,"members":[...]}` to a newcomer,
//! - `{"type":"join","id":N}` and `{"type":"leave","id":N,"code":C,"reason":"..."}`,
//! - `{"type":"message","from":N,"text":"..."}`.

wit_bindgen::generate!({ path: "../../wit", world: "berth:plugin/plugin" });

use std::cell::RefCell;
use std::collections::BTreeSet;

use berth::plugin::host;
use berth::plugin::types::{Accept, CloseInfo, ConnectionId, Message, Reject, Request};
use exports::berth::plugin::handler::Guest;

thread_local! {
    // One instance serves the whole route, so the room lives in the instance.
    static MEMBERS: RefCell<BTreeSet<ConnectionId>> = const { RefCell::new(BTreeSet::new()) };
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

/// Sends `text` to every member but `except`.
fn broadcast(except: ConnectionId, text: String) {
    let msg = Message::Text(text);
    MEMBERS.with_borrow(|members| {
        for &member in members.iter().filter(|&&m| m != except) {
            let _ = host::send(member, &msg);
        }
    });
}

struct Chat;

impl Guest for Chat {
    fn on_connect(conn: ConnectionId, _req: Request) -> Result<Accept, Reject> {
        let members = MEMBERS.with_borrow(|m| {
            m.iter()
                .map(|id| id.to_string())
                .collect::<Vec<_>>()
                .join(",")
        });
        let welcome = format!(r#"{{"type":"welcome","id":{conn},"members":[{members}]}}"#);
        let _ = host::send(conn, &Message::Text(welcome));
        broadcast(conn, format!(r#"{{"type":"join","id":{conn}}}"#));
        MEMBERS.with_borrow_mut(|m| m.insert(conn));
        Ok(Accept { subprotocol: None })
    }

    fn on_message(conn: ConnectionId, msg: Message) {
        if let Message::Text(text) = msg {
            let mut out = format!(r#"{{"type":"message","from":{conn},"text":"#);
            push_json_string(&mut out, &text);
            out.push('}');
            broadcast(conn, out);
        }
    }

    fn on_close(conn: ConnectionId, info: CloseInfo) {
        MEMBERS.with_borrow_mut(|m| m.remove(&conn));
        let mut out = format!(
            r#"{{"type":"leave","id":{conn},"code":{},"reason":"#,
            info.code
        );
        push_json_string(&mut out, &info.reason);
        out.push('}');
        broadcast(conn, out);
    }
}

export!(Chat);
