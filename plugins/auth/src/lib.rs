//! Auth: refuses the WebSocket upgrade with 401 unless the query carries the demo
//! token (`?token=let-me-in`); accepted connections get an echo.

wit_bindgen::generate!({ path: "../../wit", world: "berth:plugin/plugin" });

use berth::plugin::host;
use berth::plugin::types::{Accept, CloseInfo, ConnectionId, Message, Reject, Request};
use exports::berth::plugin::handler::Guest;

/// The token a client must present; a real plugin would check a signed token.
const DEMO_TOKEN: &str = "let-me-in";

struct Auth;

fn has_token(query: Option<&str>) -> bool {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .any(|(key, value)| key == "token" && value == DEMO_TOKEN)
}

impl Guest for Auth {
    fn on_connect(_conn: ConnectionId, req: Request) -> Result<Accept, Reject> {
        if has_token(req.query.as_deref()) {
            Ok(Accept { subprotocol: None })
        } else {
            Err(Reject {
                status: 401,
                reason: "missing or wrong token".into(),
            })
        }
    }

    fn on_message(conn: ConnectionId, msg: Message) {
        let _ = host::send(conn, &msg);
    }

    fn on_close(_conn: ConnectionId, _info: CloseInfo) {}

    fn on_timer(_token: u64) {}
}

export!(Auth);
