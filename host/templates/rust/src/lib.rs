//! {{name}}: a berth plugin. It greets each connection and echoes its messages.
//!
//! berth calls these functions as connections come and go; each has a default
//! that does nothing, so implement only what the plugin needs. The `host`
//! module holds what a plugin can ask of berth: send, close, topics, timers,
//! config values and log lines; `outbound` sends HTTP requests to the
//! origins the route grants.

use berth_plugin::{Accept, Connect, ConnectionId, Message, Plugin, Request, host};

struct {{type}};

impl Plugin for {{type}} {
    fn on_connect(conn: ConnectionId, _req: Request) -> Connect {
        // Sent now, delivered right after the handshake completes.
        let _ = host::send(conn, Message::text("hello from {{name}}"));
        Accept::new().into()
    }

    fn on_message(conn: ConnectionId, msg: Message<'_>) {
        // `msg` is borrowed from berth's batch: copy what must outlive the call.
        // A failed send means the client is gone or too slow; berth closes it.
        let _ = host::send(conn, msg);
    }
}

berth_plugin::export!({{type}});
