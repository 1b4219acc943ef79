//! Auth-remote: asks an identity service whether a connection may open,
//! before it opens, without holding up the route's other connections.
//!
//! `on-connect` leaves the connection pending and sends
//! `GET {verify-url}?token={token}` (the `verify-url` of the route's
//! `[route.config]`, the `token` query parameter of the upgrade request).
//! When the backend answers 200 the connection opens; any other status
//! refuses it with that status and the backend's body as the reason; a
//! request that failed refuses it with 502 and the error's kind (`timeout`,
//! `connect-failed`, `not-allowed`, ...) as the reason. An open connection
//! echoes what it is sent.
//!
//! The route must grant the backend's origin:
//!
//! ```toml
//! [[route]]
//! path = "/secure"
//! plugin = "auth_remote.wasm"
//! allowed-outbound = ["https://id.example.com"]
//! [route.config]
//! verify-url = "https://id.example.com/verify"
//! ```

use berth_plugin::outbound::{self, Request as Outbound};
use berth_plugin::{Accept, Connect, ConnectionId, Message, Plugin, Reject, Request, host, log};

struct AuthRemote;

impl Plugin for AuthRemote {
    fn on_connect(conn: ConnectionId, req: Request) -> Connect {
        let Some(verify) = host::config_get("verify-url") else {
            log::error("auth-remote: the route's [route.config] has no verify-url");
            return Reject::new(500, "verify-url is not configured").into();
        };
        let token = req.query_param("token").unwrap_or_default();
        // The token arrived percent-encoded in the query, and goes on so.
        let separator = if verify.contains('?') { '&' } else { '?' };
        let url = format!("{verify}{separator}token={token}");
        let asked = outbound::fetch(&Outbound::get(&url), move |answer| {
            let decided = match answer {
                Ok(response) if response.status == 200 => host::accept(conn, Accept::new()),
                Ok(response) => host::reject(conn, Reject::new(response.status, response.text())),
                Err(error) => host::reject(conn, Reject::new(502, error.name())),
            };
            // The client gave up, or its handshake-timeout passed first.
            let _ = decided;
        });
        match asked {
            Ok(_) => Connect::Pending,
            Err(error) => Reject::new(502, error.name()).into(),
        }
    }

    fn on_message(conn: ConnectionId, msg: Message<'_>) {
        let _ = host::send(conn, msg);
    }
}

berth_plugin::export!(AuthRemote);
