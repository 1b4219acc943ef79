//! Echo: every message goes back to its sender, text as text and binary as binary.

use berth_plugin::{ConnectionId, Message, Plugin, host};

struct Echo;

impl Plugin for Echo {
    fn on_message(conn: ConnectionId, msg: Message<'_>) {
        // A failed send means the client is gone or too slow; the host closes it.
        let _ = host::send(conn, msg);
    }
}

berth_plugin::export!(Echo);
