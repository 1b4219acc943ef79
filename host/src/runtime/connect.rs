//! What a plugin's answer to a new connection becomes: the host's
//! [`ConnectOutcome`], whether the answer came from `on-connect` itself or,
//! for a connection it left `pending`, later from `answer-connect`.

use http::StatusCode;
use tokio::sync::oneshot;

use super::bindings::berth::plugin::types;
use super::handle::ConnectOutcome;
use super::store::RouteShared;
use crate::metrics::Limit;

/// The longest `reject` reason sent as an HTTP body; the rest is cut.
const MAX_REJECT_REASON: usize = 1024;

/// A connection whose plugin answered `pending`: its handshake waits on
/// `reply` until the plugin decides or the handshake gives up.
pub(crate) struct Pending {
    pub(super) reply: oneshot::Sender<ConnectOutcome>,
    /// The subprotocols the client offered, which an accept must choose from.
    pub(super) offered: Vec<String>,
}

/// The outcome of `answer` for `conn`: a subprotocol the client did not
/// offer, or a status that is not an error, is the plugin's fault (500).
pub(super) fn decide(
    answer: Result<types::Accept, types::Reject>,
    offered: &[String],
    route: &RouteShared,
    conn: u64,
) -> ConnectOutcome {
    match answer {
        Ok(accept) => match accept.subprotocol {
            Some(chosen) if !offered.contains(&chosen) => {
                tracing::error!(
                    route = %route.name, conn,
                    "plugin accepted with subprotocol {chosen:?}, which was not offered"
                );
                ConnectOutcome::Failed
            }
            subprotocol => ConnectOutcome::Accept { subprotocol },
        },
        Err(reject) => match StatusCode::from_u16(reject.status) {
            Ok(status) if status.is_client_error() || status.is_server_error() => {
                let mut reason = reject.reason;
                if reason.len() > MAX_REJECT_REASON {
                    route.metrics.limit_hit(Limit::RejectReason);
                    reason.truncate(super::cut(&reason, MAX_REJECT_REASON).len());
                }
                ConnectOutcome::Reject { status, reason }
            }
            _ => {
                tracing::error!(
                    route = %route.name, conn,
                    "plugin rejected with status {}, which is not in 400..=599", reject.status
                );
                ConnectOutcome::Failed
            }
        },
    }
}
