//! HTTP/1.1 around the upgrade: every accepted socket is served by hyper, so
//! plain requests get real answers (`/healthz`, `/metrics`, 404, 426), and an
//! upgrade request on a route passes the host's checks and the plugin's
//! `on-connect` before the 101 answer. After 101 the socket becomes a session.
//! Every way an upgrade is turned down is counted by reason. The admin
//! listener's sockets are served here too, with `/metrics` and `/healthz` only.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::handshake::{self, Refusal};
use crate::metrics::{self, Metrics, Rejection};
use crate::outbox;
use crate::proxy;
use crate::publish_api::PublishApi;
use crate::router::Router;
use crate::runtime::{CloseInfo, ConnectOutcome, Request as PluginRequest};
use crate::session::{self, CloseReport, Stops};

/// State shared by every connection of one server.
pub(crate) struct App {
    pub(crate) router: Arc<Router>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tracker: TaskTracker,
    /// The time from a socket's connect (or, on a kept-alive socket, from its
    /// last answer) to the 101 answer: the request head and `on-connect` both
    /// have to fit in it.
    pub(crate) handshake_timeout: Duration,
    /// Open WebSocket connections per route path, for `max-connections` of
    /// routes. Counted by path rather than by route version, so that a reload
    /// (which makes a new version, while `drain` keeps the old one's
    /// connections open) does not reset the count and let a route hold twice
    /// its limit.
    route_conns: Arc<Tally<String>>,
    next_conn: AtomicU64,
    /// Whether `/` answers a browser with the demo page.
    demo_page: bool,
    /// The server's metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// Whether the public listeners answer `/metrics` (no admin listener).
    public_metrics: bool,
    /// `POST /publish/...`, when `[publish-api]` has tokens.
    publish_api: Option<PublishApi>,
}

/// The demo's chat page, one self-contained file (sources in `examples/demo`).
const DEMO_PAGE: &str = include_str!("../../examples/demo/index.html");

/// The demo page: it may run only its own inline script and style and open
/// WebSockets, nothing else (no other origin's scripts, frames or forms).
fn demo_page() -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(DEMO_PAGE.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src ws: wss:; img-src data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Open connections counted by key (a client address, a route path), so that
/// each key can be held to a cap. A key has an entry only while it has open
/// connections, so the table never outgrows the connections themselves.
pub(crate) struct Tally<K: Eq + Hash> {
    // The std hasher, randomly seeded: client addresses are chosen by clients.
    counts: Mutex<HashMap<K, usize>>,
}

impl<K: Eq + Hash> Default for Tally<K> {
    fn default() -> Self {
        Tally {
            counts: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> Tally<K> {
    fn lock(&self) -> MutexGuard<'_, HashMap<K, usize>> {
        // Nothing panics while holding the lock; recover the table regardless.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more connection for `key`, unless it already has `max`.
    /// The count drops again when the returned slot does.
    pub(crate) fn try_acquire(self: &Arc<Self>, key: K, max: usize) -> Option<TallySlot<K>> {
        let mut counts = self.lock();
        let count = counts.get(&key).copied().unwrap_or(0);
        if count >= max {
            return None;
        }
        counts.insert(key.clone(), count + 1);
        Some(TallySlot {
            tally: self.clone(),
            key,
        })
    }
}

/// One connection counted in a [`Tally`] until this is dropped.
pub(crate) struct TallySlot<K: Eq + Hash + Clone> {
    tally: Arc<Tally<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Drop for TallySlot<K> {
    fn drop(&mut self) {
        let mut counts = self.tally.lock();
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// What an accepted socket holds for as long as it is open, as HTTP or as a
/// WebSocket connection: its place under the server's `max-connections` and
/// under its client address's `max-connections-per-ip`.
pub(crate) struct Admission {
    _permit: OwnedSemaphorePermit,
    _peer: Option<TallySlot<IpAddr>>,
}

impl Admission {
    /// The places a socket was admitted with.
    pub(crate) fn new(permit: OwnedSemaphorePermit, peer: Option<TallySlot<IpAddr>>) -> Self {
        Admission {
            _permit: permit,
            _peer: peer,
        }
    }
}

type Body = Full<Bytes>;

fn plain(status: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(text.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The metrics, in the text format their `Content-Type` names.
fn metrics_answer(metrics: &Metrics) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(metrics.encode())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    response
}

fn refuse(refusal: Refusal) -> Response<Body> {
    let mut response = plain(refusal.status(), format!("{}\n", refusal.reason()));
    let headers = response.headers_mut();
    match refusal {
        Refusal::NotUpgrade => {
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            headers.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        Refusal::BadVersion => {
            headers.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        // RFC 9110 section 15.5.6: a 405 lists the methods the target allows.
        Refusal::MethodNotAllowed => {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        // An HTTP/1.0 client that asked to keep the socket (`Connection:
        // keep-alive, Upgrade`) would otherwise wait on it for an upgrade
        // that cannot come: end it after the answer.
        Refusal::OldHttp => {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        _ => {}
    }
    response
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

impl App {
    /// State for a server whose routes `router` holds; `shutdown` stops it.
    /// `/metrics` is answered on the public listeners if `public_metrics`.
    pub(crate) fn new(
        router: Arc<Router>,
        handshake_timeout: Duration,
        demo_page: bool,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
        public_metrics: bool,
        publish_api: Option<PublishApi>,
    ) -> Self {
        App {
            demo_page,
            publish_api,
            router,
            shutdown,
            tracker: TaskTracker::new(),
            handshake_timeout,
            route_conns: Arc::default(),
            next_conn: AtomicU64::new(1),
            metrics,
            public_metrics,
        }
    }

    /// Whether `/` serves the demo page.
    pub(crate) fn serves_demo_page(&self) -> bool {
        self.demo_page
    }

    /// Whether `/publish/...` is served (`[publish-api]` has tokens).
    pub(crate) fn serves_publish_api(&self) -> bool {
        self.publish_api.is_some()
    }

    /// Counts a refusal by the host's checks and answers it.
    fn refused(&self, refusal: Refusal) -> Response<Body> {
        self.metrics.rejected(Rejection::Refused(refusal));
        refuse(refusal)
    }

    /// Counts a request turned down for `reason` and answers `status`.
    fn turned_down(
        &self,
        reason: Rejection,
        status: StatusCode,
        text: impl Into<Bytes>,
    ) -> Response<Body> {
        self.metrics.rejected(reason);
        plain(status, text)
    }

    /// Answers one request; an upgrade must reach its 101 by `deadline`.
    async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        admission: Arc<Admission>,
        deadline: Instant,
        forwarded: Option<TallySlot<IpAddr>>,
    ) -> Response<Body> {
        let path = req.uri().path();
        if path == "/healthz" {
            return plain(StatusCode::OK, "ok\n");
        }
        if let Some(api) = &self.publish_api
            && PublishApi::claims(path)
        {
            let response = api.handle(req, deadline).await;
            self.metrics.publish_answered(response.status().as_u16());
            return response;
        }
        if path == "/"
            && self.demo_page
            && matches!(*req.method(), Method::GET | Method::HEAD)
            && !req.headers().contains_key(header::UPGRADE)
            && self.router.get(path).is_none()
        {
            return demo_page();
        }
        if path == "/metrics" && self.public_metrics {
            return metrics_answer(&self.metrics);
        }
        let Some(route) = self.router.get(path) else {
            return self.turned_down(
                Rejection::NoRoute,
                StatusCode::NOT_FOUND,
                "no route at this path\n",
            );
        };
        let offer = match handshake::check(&req, &route.config) {
            Ok(offer) => offer,
            Err(refusal) => return self.refused(refusal),
        };
        if Instant::now() >= deadline {
            return self.refused(Refusal::TooSlow);
        }
        // Taken before the plugin is asked: a full route costs it nothing.
        // Routes without a limit are counted too, so that a reload that sets
        // one finds the connections already open.
        let max = route.config.max_connections.unwrap_or(usize::MAX);
        let Some(route_slot) = self.route_conns.try_acquire(route.config.path.clone(), max) else {
            tracing::debug!(route = %route.config.path, %peer, "route connection limit reached; answering 503");
            return self.refused(Refusal::RouteFull);
        };

        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let request = plugin_request(&req, peer, offer.subprotocols);
        let deflate = offer.deflate;
        let bounds = outbox::Bounds {
            messages: route.config.write_queue,
            bytes: route.config.write_queue_bytes,
            held: route.metrics.queued_bytes.clone(),
        };
        let (handle, outbox) = outbox::outbox(bounds, &route.retired);
        let asked = route.plugin.connect(conn, request, handle);
        let outcome = match tokio::time::timeout_at(deadline, asked).await {
            Ok(Some(outcome)) => outcome,
            Ok(None) => {
                return self.turned_down(
                    Rejection::NoInstance,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "route unavailable\n",
                );
            }
            Err(_) => {
                tracing::warn!(route = %route.config.path, conn, %peer, "on-connect did not answer before the handshake deadline");
                return self.turned_down(
                    Rejection::PluginTimeout,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "route busy\n",
                );
            }
        };
        let subprotocol = match outcome {
            ConnectOutcome::Accept { subprotocol } => subprotocol,
            ConnectOutcome::Reject { status, reason } => {
                return self.turned_down(Rejection::PluginReject, status, reason);
            }
            ConnectOutcome::Failed => {
                return self.turned_down(
                    Rejection::PluginFailed,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "plugin failed\n",
                );
            }
            ConnectOutcome::Unavailable => {
                return self.turned_down(
                    Rejection::NoInstance,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no plugin instance available\n",
                );
            }
            ConnectOutcome::Quarantined => {
                return self.turned_down(
                    Rejection::Quarantined,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "route quarantined: its plugin failed too often; it serves again when its file changes\n",
                );
            }
        };

        let on_upgrade = hyper::upgrade::on(&mut req);
        let report = CloseReport::new(conn, route.plugin.clone());
        // Debug level: entering an enabled span on every poll of the session
        // cost 2.5% of the server's CPU in the pipelined echo profile. So that
        // a connection's events say whose they are at any level (and in JSON
        // logs, where an event carries only its own fields when the span is
        // off), each of them names `conn` and `route` itself.
        let span = tracing::debug_span!("conn", conn, route = %route.config.path, %peer);
        let stops = Stops {
            shutdown: self.shutdown.clone(),
            retired: route.retired.clone(),
        };
        self.tracker.spawn(
            async move {
                let _admission = admission;
                let _forwarded = forwarded;
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
        response
    }
}

/// What the listener knows of a socket it hands to HTTP.
pub(crate) struct Accepted {
    /// The client: the socket's peer, or the one its PROXY header named.
    pub(crate) peer: SocketAddr,
    /// The socket's places under the connection limits.
    pub(crate) admission: Admission,
    /// When it was accepted: the handshake deadline counts from here.
    pub(crate) since: Instant,
    /// Peers whose forwarding headers name the client.
    pub(crate) trusted_proxies: Arc<[IpNet]>,
    /// `max-connections-per-ip`, applied per request to forwarded clients.
    pub(crate) per_ip: Option<(Arc<Tally<IpAddr>>, usize)>,
}

/// Serves one accepted socket until it closes or upgrades.
pub(crate) async fn serve<S>(app: Arc<App>, stream: S, accepted: Accepted)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let Accepted {
        peer,
        admission,
        since,
        trusted_proxies,
        per_ip,
    } = accepted;
    let admission = Arc::new(admission);
    // When the socket began to owe us a request head: at connect, then after
    // each answer on a kept-alive socket. hyper's header_read_timeout bounds
    // the head from that moment (it does not restart per byte, so it also
    // ends slow and stalled heads, and idle kept-alive sockets); the same
    // deadline then bounds on-connect, so that connect-to-101 as a whole fits
    // in one handshake-timeout rather than in one per stage.
    let awaiting_since = Arc::new(Mutex::new(since));
    let service_app = app.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let app = service_app.clone();
        let admission = admission.clone();
        let awaiting_since = awaiting_since.clone();
        // Behind a trusted proxy the client is the one it forwards for, and
        // that client, not the proxy, is what the per-address limit counts.
        let client = proxy::client_addr(req.headers(), peer, &trusted_proxies);
        let forwarded = match &per_ip {
            Some((tally, max)) if client != peer => match tally.try_acquire(client.ip(), *max) {
                Some(slot) => Some(slot),
                None => {
                    let response = app.turned_down(
                        Rejection::PeerFull,
                        StatusCode::TOO_MANY_REQUESTS,
                        "too many connections from this address\n",
                    );
                    return futures_util::future::Either::Left(std::future::ready(Ok(response)));
                }
            },
            _ => None,
        };
        futures_util::future::Either::Right(async move {
            let since = *awaiting_since.lock().unwrap_or_else(|e| e.into_inner());
            let deadline = since + app.handshake_timeout;
            let response = app
                .handle(req, client, admission, deadline, forwarded)
                .await;
            *awaiting_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            Ok::<_, Infallible>(response)
        })
    });
    // Not pinned in place: once it ends without an upgrade, the socket is
    // taken back out of it to be closed gently.
    let mut connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(app.handshake_timeout)
        // A head over MAX_HEAD, or with more than hyper's 100 header lines, is
        // answered 431 (a larger one would otherwise grow hyper's read buffer
        // to about 400 KiB before it gave up).
        .max_header_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let result = tokio::select! {
        result = &mut connection => result,
        () = app.shutdown.cancelled() => {
            // Not through an import: tokio::select! brings its own `Pin`
            // into this scope, which would leave ours unused.
            std::pin::Pin::new(&mut connection).graceful_shutdown();
            (&mut connection).await
        }
    };
    if let Err(error) = result {
        // hyper answered these itself (431, 400) or closed the socket.
        if error.is_parse_too_large() {
            app.metrics.rejected(Rejection::HeadTooLarge);
        } else if error.is_parse() {
            app.metrics.rejected(Rejection::BadRequest);
        } else if error.is_timeout() {
            app.metrics.rejected(Rejection::HeadTimeout);
        }
        tracing::debug!(%peer, %error, "HTTP connection ended with an error");
    }
    // `None` once upgraded: the socket then belongs to the session. The rest
    // of `parts` (the service, which holds the socket's admission) lives to
    // the end of the block, so a lingering socket still counts.
    if let Some(parts) = connection.into_parts() {
        linger(parts.io.into_inner()).await;
    }
}

/// Serves one socket of the admin listener until it closes: `/metrics` and
/// `/healthz`, 404 for anything else. Nothing here is counted as a
/// rejection: the admin address is the operator's, not the clients'.
pub(crate) async fn serve_admin<S>(app: Arc<App>, stream: S)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service_app = app.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let response = match req.uri().path() {
            "/metrics" => metrics_answer(&service_app.metrics),
            "/healthz" => plain(StatusCode::OK, "ok\n"),
            _ => plain(StatusCode::NOT_FOUND, "not found\n"),
        };
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let mut connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(app.handshake_timeout)
        .max_header_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), service);
    let result = tokio::select! {
        result = &mut connection => result,
        () = app.shutdown.cancelled() => {
            std::pin::Pin::new(&mut connection).graceful_shutdown();
            (&mut connection).await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "admin HTTP connection ended with an error");
    }
}

/// The largest request head (request line and headers) berth reads: 16 KiB,
/// twice what common proxies allow by default and far above what browsers
/// send, cookies included. A larger one is answered 431.
const MAX_HEAD: usize = 16 * 1024;

/// The longest a socket is kept after its HTTP answers are done and our side
/// is shut, for the client to read them and end its own side.
const LINGER_TIME: Duration = Duration::from_secs(1);

/// The most bytes read and discarded from a client in [`LINGER_TIME`].
const LINGER_BYTES: usize = 1024 * 1024;

/// Closes a socket that ends as HTTP, after its last answer, without losing
/// that answer. Closing a socket with unread input (the rest of a head over
/// the size limit, a request body never read, pipelined requests after a
/// `Connection: close`) makes the kernel send a reset, and a client that gets
/// the reset before it has read the answer (at once, on some systems) never
/// sees the answer: it sees "connection reset" instead of 431. So our side is
/// shut first, which ends the answer with a FIN, and what the client still
/// sends is read and dropped until it ends its side, for a bounded time and
/// number of bytes.
async fn linger<S>(stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    shut_and_drain(stream, LINGER_TIME).await;
}

/// Shuts our side of `stream` (hyper may have done so already; that is no
/// reason not to drain), then reads and drops what the client still sends
/// until it ends its side, for at most `time` and [`LINGER_BYTES`].
async fn shut_and_drain<S>(mut stream: S, time: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(time, async {
        let _ = stream.shutdown().await;
        let mut scratch = [0u8; 4096];
        let mut left = LINGER_BYTES;
        loop {
            match stream.read(&mut scratch).await? {
                0 => break,
                n if n >= left => break,
                n => left -= n,
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// The answer to a socket over the server's `max-connections`.
pub(crate) const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\nconnection: close\r\n\r\n\
too many connections\n";

/// The answer to a socket over its client address's `max-connections-per-ip`.
pub(crate) const TOO_MANY_FROM_PEER: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 39\r\nconnection: close\r\n\r\n\
too many connections from this address\n";

/// The longest a socket refused at accept is kept for its answer. Short:
/// refused sockets are outside every limit, so a client that neither reads
/// nor closes must not be able to pile them up.
const REFUSAL_TIME: Duration = Duration::from_millis(250);

/// Answers a socket refused at accept with `answer`, whatever it asked, and
/// closes it; hyper never sees it.
pub(crate) async fn refuse_socket<S>(mut stream: S, answer: &'static [u8])
where
    S: AsyncWrite + AsyncRead + Unpin,
{
    let started = Instant::now();
    if tokio::time::timeout(REFUSAL_TIME, stream.write_all(answer))
        .await
        .is_ok_and(|written| written.is_ok())
    {
        // As for any socket that ends as HTTP (see `linger`): a reset must
        // not discard the answer.
        shut_and_drain(stream, REFUSAL_TIME.saturating_sub(started.elapsed())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_caps_each_key_and_forgets_keys_with_nothing_open() {
        let tally: Arc<Tally<&str>> = Arc::default();
        let first = tally.try_acquire("a", 2).expect("room for one");
        let _second = tally.try_acquire("a", 2).expect("room for two");
        assert!(tally.try_acquire("a", 2).is_none(), "a third past the cap");
        let other = tally.try_acquire("b", 2).expect("keys are counted apart");
        drop(first);
        let _third = tally
            .try_acquire("a", 2)
            .expect("a dropped slot makes room");
        drop(other);
        assert!(
            !tally.lock().contains_key("b"),
            "an empty key stayed behind"
        );
    }
}
