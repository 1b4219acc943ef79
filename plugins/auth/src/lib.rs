//! Auth: refuses the WebSocket upgrade with 401 unless the query carries the demo
//! token (`?token=let-me-in`); accepted connections get an echo.

use berth_plugin::{Accept, Connect, ConnectionId, Message, Plugin, Reject, Request, host};

/// The token a client must present; a real plugin would check a signed token.
const DEMO_TOKEN: &str = "let-me-in";

struct Auth;

fn has_token(req: &Request) -> bool {
    req.query_params()
        .any(|(key, value)| key == "token" && value == DEMO_TOKEN)
}

/// What `on_connect` decides, at once.
fn admit(_conn: ConnectionId, req: Request) -> Result<Accept, Reject> {
    if has_token(&req) {
        Ok(Accept::new())
    } else {
        Err(Reject::new(401, "missing or wrong token"))
    }
}

impl Plugin for Auth {
    fn on_connect(_conn: ConnectionId, req: Request) -> Connect {
        admit(_conn, req).into()
    }

    fn on_message(conn: ConnectionId, msg: Message<'_>) {
        let _ = host::send(conn, msg);
    }
}

berth_plugin::export!(Auth);
