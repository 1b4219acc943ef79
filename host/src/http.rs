//! HTTP/1.1 on every accepted socket, served by hyper: plain requests get
//! real answers (`/healthz`, `/metrics`, the demo page, the publish API,
//! 404), and an upgrade request on a route goes to [`upgrade`], whose
//! refusals are answered and counted here by reason. The admin listener's
//! sockets are served here too, with `/metrics` and `/healthz` only; both
//! kinds of socket get the same hyper settings ([`connection`]). A socket
//! that ends as HTTP is closed gently ([`linger`]), and one refused at
//! accept gets its answer without hyper ([`refuse_socket`]).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::admission::{Admission, PerIp, Refused, TallySlot};
use crate::client_addr;
use crate::metrics::{self, Metrics, Rejection};
use crate::publish_api::PublishApi;
use crate::server::Shared;
use crate::upgrade::{self, Places, Refusal, TurnedDown};

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

/// Counts a refusal by the host's checks and answers it.
fn refused(metrics: &Metrics, refusal: Refusal) -> Response<Body> {
    metrics.rejected(Rejection::Refused(refusal));
    refuse(refusal)
}

/// Counts a request turned down for `reason` and answers `status`.
fn turned_down(
    metrics: &Metrics,
    reason: Rejection,
    status: StatusCode,
    text: impl Into<Bytes>,
) -> Response<Body> {
    metrics.rejected(reason);
    plain(status, text)
}

/// Answers one request; an upgrade must reach its 101 by `deadline`.
async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
    places: Places,
    deadline: Instant,
) -> Response<Body> {
    let path = req.uri().path();
    if path == "/healthz" {
        return plain(StatusCode::OK, "ok\n");
    }
    if let Some(api) = &shared.publish_api
        && PublishApi::claims(path)
    {
        let response = api.handle(req, deadline).await;
        shared.metrics.publish_answered(response.status().as_u16());
        return response;
    }
    if path == "/"
        && shared.demo_page
        && matches!(*req.method(), Method::GET | Method::HEAD)
        && !req.headers().contains_key(header::UPGRADE)
        && shared.router.get(path).is_none()
    {
        return demo_page();
    }
    if path == "/metrics" && shared.public_metrics {
        return metrics_answer(&shared.metrics);
    }
    let Some(route) = shared.router.get(path) else {
        let text = "no route at this path\n";
        return turned_down(
            &shared.metrics,
            Rejection::NoRoute,
            StatusCode::NOT_FOUND,
            text,
        );
    };
    match upgrade::upgrade(&shared, req, route, peer, places, deadline).await {
        Ok(switching) => switching,
        Err(TurnedDown::Refused(refusal)) => refused(&shared.metrics, refusal),
        Err(TurnedDown::Answer {
            reason,
            status,
            text,
        }) => turned_down(&shared.metrics, reason, status, text),
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
}

/// Serves one accepted socket until it closes or upgrades.
pub(crate) async fn serve<S>(shared: Arc<Shared>, stream: S, accepted: Accepted)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let Accepted {
        peer,
        admission,
        since,
        trusted_proxies,
    } = accepted;
    let admission = Arc::new(admission);
    // Held to the end, so that a lingering socket still counts.
    let _held = admission.clone();
    // When the socket began to owe us a request head: at connect, then after
    // each answer on a kept-alive socket. hyper's header_read_timeout bounds
    // the head from that moment (it does not restart per byte, so it also
    // ends slow and stalled heads, and idle kept-alive sockets); the same
    // deadline then bounds on-connect, so that connect-to-101 as a whole fits
    // in one handshake-timeout rather than in one per stage.
    let awaiting_since = Arc::new(Mutex::new(since));
    let service_shared = shared.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = service_shared.clone();
        let admission = admission.clone();
        let awaiting_since = awaiting_since.clone();
        // Behind a trusted proxy the client is the one it forwards for, and
        // that client, not the proxy, is what the per-address limit counts.
        let client = client_addr::from_forwarded(req.headers(), peer, &trusted_proxies);
        let forwarded = match forwarded_place(shared.limits.per_ip(), client, peer) {
            Ok(forwarded) => forwarded,
            Err(()) => {
                let response = turned_down(
                    &shared.metrics,
                    Rejection::PeerFull,
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many connections from this address\n",
                );
                return futures_util::future::Either::Left(std::future::ready(Ok(response)));
            }
        };
        futures_util::future::Either::Right(async move {
            let since = *awaiting_since.lock().unwrap_or_else(|e| e.into_inner());
            let deadline = since + shared.handshake_timeout;
            let places = Places::new(admission, forwarded);
            let response = handle(shared, req, client, places, deadline).await;
            *awaiting_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            Ok::<_, Infallible>(response)
        })
    });
    let (result, ended) = connection(&shared, stream, service).await;
    if let Err(error) = result {
        // hyper answered these itself (431, 400) or closed the socket.
        if error.is_parse_too_large() {
            shared.metrics.rejected(Rejection::HeadTooLarge);
        } else if error.is_parse() {
            shared.metrics.rejected(Rejection::BadRequest);
        } else if error.is_timeout() {
            shared.metrics.rejected(Rejection::HeadTimeout);
        }
        tracing::debug!(%peer, %error, "HTTP connection ended with an error");
    }
    // `None` once upgraded: the socket then belongs to the session.
    if let Some(stream) = ended {
        linger(stream).await;
    }
}

/// The forwarded client's place under `max-connections-per-ip`, when it is
/// not the socket's peer; `Err` when it has the cap already.
fn forwarded_place(
    per_ip: Option<&PerIp>,
    client: SocketAddr,
    peer: SocketAddr,
) -> Result<Option<TallySlot<IpAddr>>, ()> {
    match per_ip {
        Some(per_ip) if client != peer => per_ip.try_acquire(client.ip()).map(Some).ok_or(()),
        _ => Ok(None),
    }
}

/// Serves one socket of the admin listener until it closes: `/metrics` and
/// `/healthz`, 404 for anything else. Nothing here is counted as a
/// rejection: the admin address is the operator's, not the clients'.
pub(crate) async fn serve_admin<S>(shared: Arc<Shared>, stream: S)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service_shared = shared.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let response = match req.uri().path() {
            "/metrics" => metrics_answer(&service_shared.metrics),
            "/healthz" => plain(StatusCode::OK, "ok\n"),
            _ => plain(StatusCode::NOT_FOUND, "not found\n"),
        };
        std::future::ready(Ok::<_, Infallible>(response))
    });
    if let (Err(error), _) = connection(&shared, stream, service).await {
        tracing::debug!(%error, "admin HTTP connection ended with an error");
    }
}

/// Runs hyper on `stream` with `service` until the socket closes or
/// upgrades, or the server shuts down (then gracefully: an answer under way
/// is finished). Answers how it ended, and the socket unless it upgraded.
async fn connection<S, Svc>(
    shared: &Shared,
    stream: S,
    service: Svc,
) -> (Result<(), hyper::Error>, Option<S>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    Svc: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
    Svc::Future: Send + 'static,
{
    // Not pinned in place: once it ends without an upgrade, the socket is
    // taken back out of it.
    let mut connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.handshake_timeout)
        // A head over MAX_HEAD, or with more than hyper's 100 header lines, is
        // answered 431 (a larger one would otherwise grow hyper's read buffer
        // to about 400 KiB before it gave up).
        .max_header_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let result = tokio::select! {
        result = &mut connection => result,
        () = shared.shutdown.cancelled() => {
            // Not through an import: tokio::select! brings its own `Pin`
            // into this scope, which would leave ours unused.
            std::pin::Pin::new(&mut connection).graceful_shutdown();
            (&mut connection).await
        }
    };
    let stream = connection.into_parts().map(|parts| parts.io.into_inner());
    (result, stream)
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
const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\nconnection: close\r\n\r\n\
too many connections\n";

/// The answer to a socket over its client address's `max-connections-per-ip`.
const TOO_MANY_FROM_PEER: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 39\r\nconnection: close\r\n\r\n\
too many connections from this address\n";

/// The longest a socket refused at accept is kept for its answer. Short:
/// refused sockets are outside every limit, so a client that neither reads
/// nor closes must not be able to pile them up.
const REFUSAL_TIME: Duration = Duration::from_millis(250);

/// Answers a socket refused at accept, whatever it asked, and closes it;
/// hyper never sees it.
pub(crate) async fn refuse_socket<S>(mut stream: S, refused: Refused)
where
    S: AsyncWrite + AsyncRead + Unpin,
{
    let answer = match refused {
        Refused::Full => OVERLOADED,
        Refused::PeerFull => TOO_MANY_FROM_PEER,
    };
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
