//! HTTP/1.1 around the upgrade: every accepted socket is served by hyper, so
//! plain requests get real answers (`/healthz`, 404, 426), and an upgrade
//! request on a route passes the host's checks and the plugin's `on-connect`
//! before the 101 answer. After 101 the socket becomes a session.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::handshake::{self, Refusal};
use crate::outbox;
use crate::router::Router;
use crate::runtime::{CloseInfo, ConnectOutcome, Request as PluginRequest};
use crate::session::{self, CloseReport, Stops};

/// State shared by every connection of one server.
pub(crate) struct App {
    pub(crate) router: Arc<Router>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) handshake_timeout: Duration,
    next_conn: AtomicU64,
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
    pub(crate) fn new(
        router: Arc<Router>,
        handshake_timeout: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        App {
            router,
            shutdown,
            tracker: TaskTracker::new(),
            handshake_timeout,
            next_conn: AtomicU64::new(1),
        }
    }

    async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        permit: Arc<OwnedSemaphorePermit>,
    ) -> Response<Body> {
        let path = req.uri().path();
        if path == "/healthz" {
            return plain(StatusCode::OK, "ok\n");
        }
        let Some(route) = self.router.get(path) else {
            return plain(StatusCode::NOT_FOUND, "no route at this path\n");
        };
        let offer = match handshake::check(&req, &route.config) {
            Ok(offer) => offer,
            Err(refusal) => return refuse(refusal),
        };

        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let request = plugin_request(&req, peer, offer.subprotocols);
        let (handle, outbox) = outbox::outbox(route.config.write_queue, &route.retired);
        let asked = route.plugin.connect(conn, request, handle);
        let outcome = match tokio::time::timeout(self.handshake_timeout, asked).await {
            Ok(Some(outcome)) => outcome,
            Ok(None) => return plain(StatusCode::SERVICE_UNAVAILABLE, "route unavailable\n"),
            Err(_) => {
                tracing::warn!(route = %route.config.path, conn, "on-connect did not answer in time");
                return plain(StatusCode::SERVICE_UNAVAILABLE, "route busy\n");
            }
        };
        let subprotocol = match outcome {
            ConnectOutcome::Accept { subprotocol } => subprotocol,
            ConnectOutcome::Reject { status, reason } => return plain(status, reason),
            ConnectOutcome::Failed => {
                return plain(StatusCode::INTERNAL_SERVER_ERROR, "plugin failed\n");
            }
            ConnectOutcome::Unavailable => {
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no plugin instance available\n",
                );
            }
        };

        let on_upgrade = hyper::upgrade::on(&mut req);
        let report = CloseReport::new(conn, route.plugin.clone());
        // Debug level: entering an enabled span on every poll of the session
        // cost 2.5% of the server's CPU in the pipelined echo profile.
        let span = tracing::debug_span!("conn", id = conn, route = %route.config.path, %peer);
        let stops = Stops {
            shutdown: self.shutdown.clone(),
            retired: route.retired.clone(),
        };
        self.tracker.spawn(
            async move {
                let _permit = permit;
                match on_upgrade.await {
                    Ok(upgraded) => {
                        tracing::debug!("connection opened");
                        let io = TokioIo::new(upgraded);
                        let ws = WebSocketStream::from_raw_socket(
                            io,
                            Role::Server,
                            Some(route.ws_config),
                        )
                        .await;
                        let config = route.config.clone();
                        session::run(ws, conn, config, outbox, stops, report).await;
                    }
                    Err(error) => {
                        tracing::debug!(%error, "upgrade failed");
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
        response
    }
}

/// Serves one accepted socket until it closes or upgrades.
pub(crate) async fn serve(
    app: Arc<App>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    let permit = Arc::new(permit);
    let service_app = app.clone();
    let service = service_fn(move |req| {
        let app = service_app.clone();
        let permit = permit.clone();
        async move { Ok::<_, Infallible>(app.handle(req, peer, permit).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(app.handshake_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = app.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "HTTP connection ended with an error");
    }
}

/// Answers a socket over the connection limit with 503 and closes it.
pub(crate) async fn overloaded(mut stream: TcpStream) {
    const ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
content-length: 21\r\nconnection: close\r\n\r\ntoo many connections\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(ANSWER)).await;
}
