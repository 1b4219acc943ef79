//! Counter: answers each message with how many messages this connection has
//! sent so far. Meant for the `connection` instance model, where each
//! connection has an instance, and so a count, of its own.

use std::cell::Cell;

use berth_plugin::{ConnectionId, Message, Plugin, host};

thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

struct Counter;

impl Plugin for Counter {
    fn on_message(conn: ConnectionId, _msg: Message<'_>) {
        let count = COUNT.get() + 1;
        COUNT.set(count);
        let _ = host::send(conn, Message::text(&count.to_string()));
    }
}

berth_plugin::export!(Counter);
