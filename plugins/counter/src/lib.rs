//! Counter: answers each message with how many messages this connection has
//! sent so far. Meant for the `connection` instance model, where each
//! connection has an instance, and so a count, of its own.

wit_bindgen::generate!({ path: "../../wit", world: "berth:plugin/plugin" });

use std::cell::Cell;

use berth::plugin::host;
use berth::plugin::types::{Accept, CloseInfo, ConnectionId, Message, Reject, Request};
use exports::berth::plugin::handler::Guest;

thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

struct Counter;

impl Guest for Counter {
    fn on_connect(_conn: ConnectionId, _req: Request) -> Result<Accept, Reject> {
        Ok(Accept { subprotocol: None })
    }

    fn on_message(conn: ConnectionId, _msg: Message) {
        let count = COUNT.get() + 1;
        COUNT.set(count);
        let _ = host::send(conn, &Message::Text(count.to_string()));
    }

    fn on_close(_conn: ConnectionId, _info: CloseInfo) {}

    fn on_timer(_token: u64) {}
}

export!(Counter);
