//! Echo: every message goes back to its sender, text as text and binary as binary.

wit_bindgen::generate!({ path: "../../wit", world: "berth:plugin/plugin" });

use berth::plugin::host;
use berth::plugin::types::{Accept, CloseInfo, ConnectionId, Message, Reject, Request};
use exports::berth::plugin::handler::Guest;

struct Echo;

impl Guest for Echo {
    fn on_connect(_conn: ConnectionId, _req: Request) -> Result<Accept, Reject> {
        Ok(Accept { subprotocol: None })
    }

    fn on_message(conn: ConnectionId, msg: Message) {
        // A failed send means the client is gone or too slow; the host closes it.
        let _ = host::send(conn, &msg);
    }

    fn on_close(_conn: ConnectionId, _info: CloseInfo) {}

    fn on_timer(_token: u64) {}
}

export!(Echo);
