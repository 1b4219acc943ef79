//! The upgrade: a WebSocket upgrade request on a route passes the host's
//! checks ([`checks`]), takes a place under the route's `max-connections`,
//! and is put to the plugin's `on-connect`, all before the handshake
//! deadline. Accepted, it gets the 101 answer built here, and its socket
//! becomes a session once hyper hands it over. Turned down, it says why
//! ([`TurnedDown`]) for HTTP to answer and count.

mod checks;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::Instrument;

pub(crate) use checks::Refusal;

use crate::admission::{Admission, TallySlot};
use crate::metrics::Rejection;
use crate::outbox;
use crate::router::Route;
use crate::runtime::{CloseInfo, ConnectOutcome, Request as PluginRequest};
use crate::server::Shared;
use crate::session::{self, CloseReport, StopSignals};

/// Why an upgrade request did not get its 101.
#[derive(Debug)]
pub(crate) enum TurnedDown {
    /// The host's checks refused it.
    Refused(Refusal),
    /// The route or its plugin turned it down: counted under `reason`, and
    /// answered `status` with `text`.
    Answer {
        /// The rejection it is counted as.
        reason: Rejection,
        /// The HTTP status of the answer.
        status: StatusCode,
        /// The answer's body.
        text: String,
    },
}

impl TurnedDown {
    fn answer(reason: Rejection, status: StatusCode, text: impl Into<String>) -> Self {
        TurnedDown::Answer {
            reason,
            status,
            text: text.into(),
        }
    }
}

/// What holds an upgrading socket's places under the connection caps; the
/// session keeps them until it ends.
pub(crate) struct Places {
    _admission: Arc<Admission>,
    _forwarded: Option<TallySlot<IpAddr>>,
}

impl Places {
    /// The socket's own places (shared with its other requests), and the
    /// forwarded client's under `max-connections-per-ip` when the socket
    /// comes from a trusted proxy.
    pub(crate) fn new(admission: Arc<Admission>, forwarded: Option<TallySlot<IpAddr>>) -> Self {
        Places {
            _admission: admission,
            _forwarded: forwarded,
        }
    }
}

/// Upgrades `req` from `peer` on `route`: the checks, `on-connect` by
/// `deadline`, and the 101 answer, after which the session runs in a task
/// of `shared`'s tracker.
pub(crate) async fn upgrade(
    shared: &Shared,
    mut req: Request<Incoming>,
    route: Arc<Route>,
    peer: SocketAddr,
    places: Places,
    deadline: Instant,
) -> Result<Response<Full<Bytes>>, TurnedDown> {
    let offer = checks::check(&req, &route.config).map_err(TurnedDown::Refused)?;
    if Instant::now() >= deadline {
        return Err(TurnedDown::Refused(Refusal::TooSlow));
    }
    // Taken before the plugin is asked: a full route costs it nothing.
    let max = route.config.max_connections.unwrap_or(usize::MAX);
    let Some(route_slot) = shared.limits.enter_route(&route.config.path, max) else {
        tracing::debug!(route = %route.config.path, %peer, "route connection limit reached; answering 503");
        return Err(TurnedDown::Refused(Refusal::RouteFull));
    };

    let conn = shared.next_conn();
    let request = plugin_request(&req, peer, offer.subprotocols);
    let deflate = offer.deflate;
    let bounds = outbox::Bounds {
        messages: route.config.write_queue,
        bytes: route.config.write_queue_bytes,
        held: route.metrics.queued_bytes.clone(),
    };
    let (handle, outbox) = outbox::outbox(bounds, &route.retired);
    let asked = route.plugin.connect(conn, request, handle);
    let unavailable = StatusCode::SERVICE_UNAVAILABLE;
    let outcome = match tokio::time::timeout_at(deadline, asked).await {
        Ok(Some(outcome)) => outcome,
        Ok(None) => {
            let reason = Rejection::NoInstance;
            return Err(TurnedDown::answer(
                reason,
                unavailable,
                "route unavailable\n",
            ));
        }
        Err(_) => {
            tracing::warn!(route = %route.config.path, conn, %peer, "on-connect did not answer before the handshake deadline");
            let reason = Rejection::PluginTimeout;
            return Err(TurnedDown::answer(reason, unavailable, "route busy\n"));
        }
    };
    let subprotocol = match outcome {
        ConnectOutcome::Accept { subprotocol } => subprotocol,
        ConnectOutcome::Reject { status, reason } => {
            return Err(TurnedDown::answer(Rejection::PluginReject, status, reason));
        }
        ConnectOutcome::Failed => {
            let status = StatusCode::INTERNAL_SERVER_ERROR;
            return Err(TurnedDown::answer(
                Rejection::PluginFailed,
                status,
                "plugin failed\n",
            ));
        }
        ConnectOutcome::Unavailable => {
            let text = "no plugin instance available\n";
            return Err(TurnedDown::answer(Rejection::NoInstance, unavailable, text));
        }
        ConnectOutcome::Quarantined => {
            let text = "route quarantined: its plugin failed too often; it serves again when its file changes\n";
            return Err(TurnedDown::answer(
                Rejection::Quarantined,
                unavailable,
                text,
            ));
        }
    };

    let on_upgrade = hyper::upgrade::on(&mut req);
    let report = CloseReport::new(conn, route.plugin.clone());
    // At debug level: a span entered on every poll of every session is a
    // cost paid per message. So that a connection's events say whose they
    // are at any level (and in JSON logs, where an event carries only its
    // own fields when the span is off), each of them names `conn` and
    // `route` itself.
    let span = tracing::debug_span!("conn", conn, route = %route.config.path, %peer);
    let stops = StopSignals {
        shutdown: shared.shutdown.clone(),
        retired: route.retired.clone(),
    };
    shared.tracker.spawn(
        async move {
            let _places = places;
            let _route_slot = route_slot;
            match on_upgrade.await {
                Ok(upgraded) => {
                    let _open = route.metrics.opened();
                    tracing::debug!(conn, route = %route.config.path, %peer, "connection opened");
                    let io = TokioIo::new(upgraded);
                    let config = route.config.clone();
                    let metrics = route.metrics.clone();
                    let opened = session::Opened { conn, deflate };
                    session::run(io, opened, config, outbox, stops, report, metrics).await;
                }
                Err(error) => {
                    tracing::debug!(conn, route = %route.config.path, %peer, %error, "upgrade failed");
                    report
                        .report(CloseInfo {
                            code: 1006,
                            reason: "upgrade failed".into(),
                        })
                        .await;
                }
            }
        }
        .instrument(span),
    );

    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = derive_accept_key(&offer.key);
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    if let Some(protocol) = subprotocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    if let Some(deflate) = deflate {
        headers.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_str(&deflate.answer()).expect("the answer is ASCII"),
        );
    }
    Ok(response)
}

/// What the plugin sees of an upgrade request.
fn plugin_request<B>(
    req: &Request<B>,
    peer: SocketAddr,
    subprotocols: Vec<String>,
) -> PluginRequest {
    PluginRequest {
        path: req.uri().path().to_string(),
        query: req.uri().query().map(str::to_string),
        headers: req
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        remote_addr: peer.to_string(),
        subprotocols,
    }
}
