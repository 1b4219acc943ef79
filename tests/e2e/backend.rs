//! A plugin's backend for the outbound tests: a real HTTP/1.1 server on a
//! loopback port (hyper's), whose paths answer the ways a backend can:
//!
//! - `/ok`: 200, `x-test: yes`, body `hello`.
//! - `/echo`: 200 with the request's method and body, `METHOD BODY`.
//! - `/verify?token=T`: 200 `welcome` for `good`, 403 `bad token` otherwise.
//! - `/held`: answers 200 `released` only once [`Backend::release`] is called
//!   (so a test decides when a slow backend answers, not a clock).
//! - `/big?n=N`: 200 with N bytes of `x`.
//! - `/to?url=U`: 302 to U (percent-decoded).
//! - anything else: 404.
//!
//! Every request is counted, so a test can tell that one never arrived.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A running backend; it stops when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    gate: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    /// Starts a backend on a free loopback port.
    pub async fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let (gate, _) = watch::channel(false);
        let counted = requests.clone();
        let opened = gate.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let counted = counted.clone();
                let opened = opened.subscribe();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        counted.fetch_add(1, Ordering::SeqCst);
                        answer(req, opened.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            addr,
            requests,
            gate,
            task,
        }
    }

    /// The http:// URL of `path_and_query` on this backend.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    /// The grant that covers this backend alone.
    pub fn grant(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Lets every `/held` request, waiting or to come, have its answer.
    pub fn release(&self) {
        self.gate.send_replace(true);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    req: Request<Incoming>,
    mut gate: watch::Receiver<bool>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let param = |name: &str| {
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key == name).then(|| {
                percent_encoding::percent_decode_str(value)
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
    };
    let reply = |status: u16, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        response
    };
    Ok(match path.as_str() {
        "/ok" => {
            let mut response = reply(200, "hello".into());
            response
                .headers_mut()
                .insert("x-test", hyper::header::HeaderValue::from_static("yes"));
            response
        }
        "/echo" => {
            let method = req.method().to_string();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            reply(200, format!("{method} {}", String::from_utf8_lossy(&body)))
        }
        "/verify" => match param("token").as_deref() {
            Some("good") => reply(200, "welcome".into()),
            _ => reply(403, "bad token".into()),
        },
        "/held" => {
            let _ = gate.wait_for(|open| *open).await;
            reply(200, "released".into())
        }
        "/big" => {
            let n = param("n").and_then(|n| n.parse().ok()).unwrap_or(0);
            reply(200, "x".repeat(n))
        }
        "/to" => {
            let mut response = reply(302, String::new());
            let target = param("url").unwrap_or_default();
            response.headers_mut().insert(
                hyper::header::LOCATION,
                hyper::header::HeaderValue::from_str(&target).unwrap(),
            );
            response
        }
        _ => reply(404, "no such path".into()),
    })
}

/// `text` percent-encoded for a query parameter.
pub fn encoded(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}
