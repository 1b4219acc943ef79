//! The listening sockets: each `[[listener]]` is bound once, with its TLS
//! certificate loaded at startup, and accepts until shutdown. Every accepted
//! socket goes the same way: the PROXY header (on listeners behind a TCP
//! proxy), admission under the connection limits, the TLS handshake (on
//! wss:// listeners), then HTTP. All of it, up to the 101 answer, fits in one
//! `handshake-timeout` counted from accept. Sockets turned away on the way
//! are counted by reason.
//!
//! The admin listener (`admin-listen`) is apart from all that: plain HTTP for
//! the operator's `/metrics` and `/healthz`, under no client limit but a small
//! cap of its own.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

use crate::admission::{Admission, Refused};
use crate::client_addr;
use crate::config::{ListenerConfig, TlsFiles};
use crate::http;
use crate::metrics::Rejection;
use crate::server::Shared;

/// How many connections the kernel may hold for us before we accept them.
/// We ask for more than Linux grants (`net.core.somaxconn`, 4096 on current
/// kernels), which then grants its maximum. The usual default of 128 is too
/// few for a burst of connects: past it, the kernel drops the client's last
/// handshake packet while the client already believes it is connected, and
/// such a socket reaches us only when and if the kernel retries; until then no
/// timeout of ours runs for it, and a client waiting for the server to speak
/// first waits on.
const LISTEN_BACKLOG: u32 = 65_535;

/// Sockets the admin listener serves at once; more are closed at accept. A
/// scraper and a health check use one or two; the cap keeps a client that
/// reaches the admin address from holding many.
const ADMIN_SOCKETS: usize = 64;

/// Why a listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The address could not be bound (in use, not permitted...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The certificate or key could not be used.
    #[error("cannot use the TLS certificate and key for {addr}: {reason}")]
    Tls {
        /// The listener's address.
        addr: SocketAddr,
        /// What is wrong, naming the file.
        reason: String,
    },
}

/// A listener bound and ready to accept.
pub(crate) struct Bound {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    proxy_protocol: bool,
    trusted_proxies: Arc<[IpNet]>,
}

impl Bound {
    /// Loads the listener's certificate (if any) and binds its address.
    pub(crate) fn bind(config: &ListenerConfig) -> Result<Bound, ListenError> {
        let tls = config
            .tls
            .as_ref()
            .map(|files| {
                tls_acceptor(files).map_err(|reason| ListenError::Tls {
                    addr: config.address,
                    reason,
                })
            })
            .transpose()?;
        let tcp = listen(config.address).map_err(|source| ListenError::Bind {
            addr: config.address,
            source,
        })?;
        Ok(Bound {
            tcp,
            tls,
            proxy_protocol: config.proxy_protocol,
            trusted_proxies: config.trusted_proxies.clone().into(),
        })
    }

    /// The address actually bound (useful with port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.tcp
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Whether this listener speaks wss://.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Accepts sockets until `stop`, each served in a task of the server's tracker.
    pub(crate) async fn run(self, shared: Arc<Shared>, stop: CancellationToken) {
        let this = Arc::new(self);
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                accepted = this.tcp.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    // Small messages are the norm: never wait to coalesce them.
                    let _ = stream.set_nodelay(true);
                    let accepted_at = Instant::now();
                    let socket = Socket {
                        listener: this.clone(),
                        shared: shared.clone(),
                        accepted_at,
                    };
                    shared.tracker.spawn(socket.serve(stream, peer));
                }
                Err(error) => {
                    // Out of file descriptors, most likely: back off rather
                    // than spin, and keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// One accepted socket on its way to HTTP.
struct Socket {
    listener: Arc<Bound>,
    shared: Arc<Shared>,
    accepted_at: Instant,
}

impl Socket {
    fn deadline(&self) -> Instant {
        self.accepted_at + self.shared.handshake_timeout
    }

    async fn serve(self, stream: TcpStream, peer: SocketAddr) {
        if !self.listener.proxy_protocol {
            return self.admitted(stream, peer).await;
        }
        match tokio::time::timeout_at(
            self.deadline(),
            client_addr::read_proxy_header(stream, peer),
        )
        .await
        {
            Ok(Ok((stream, client))) => self.admitted(stream, client).await,
            Ok(Err(error)) => {
                self.shared.metrics.rejected(Rejection::ProxyHeader);
                tracing::debug!(%peer, %error, "dropped: no valid PROXY header");
            }
            Err(_) => {
                self.shared.metrics.rejected(Rejection::ProxyHeader);
                tracing::debug!(%peer, "dropped: no PROXY header in time");
            }
        }
    }

    /// Admits the socket from `client` under the limits, then serves it.
    async fn admitted<S>(self, stream: S, client: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let trusted = &self.listener.trusted_proxies;
        // A trusted proxy carries many clients: they are counted per request,
        // by the address it forwards, not as the proxy's own.
        let ip = (!trusted.iter().any(|net| net.contains(&client.ip()))).then(|| client.ip());
        let admission = match self.shared.limits.admit(ip) {
            Ok(admission) => admission,
            Err(refused) => {
                if refused == Refused::Full {
                    self.shared.metrics.rejected(Rejection::ServerFull);
                    tracing::warn!(%client, "connection limit reached; answering 503");
                } else {
                    self.shared.metrics.rejected(Rejection::PeerFull);
                    // Debug, not warn: the client decides how often this
                    // happens, and could fill the log.
                    tracing::debug!(%client, "connection limit of the address reached; answering 429");
                }
                return http::refuse_socket(stream, refused).await;
            }
        };
        let Some(acceptor) = self.listener.tls.clone() else {
            return self.http(stream, client, admission).await;
        };
        match tokio::time::timeout_at(self.deadline(), acceptor.accept(stream)).await {
            Ok(Ok(tls)) => self.http(tls, client, admission).await,
            Ok(Err(error)) => {
                self.shared.metrics.rejected(Rejection::Tls);
                tracing::debug!(%client, %error, "TLS handshake failed");
            }
            Err(_) => {
                self.shared.metrics.rejected(Rejection::Tls);
                tracing::debug!(%client, "TLS handshake not done in time");
            }
        }
    }

    async fn http<S>(self, stream: S, client: SocketAddr, admission: Admission)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let accepted = http::Accepted {
            peer: client,
            admission,
            since: self.accepted_at,
            trusted_proxies: self.listener.trusted_proxies.clone(),
        };
        http::serve(self.shared, stream, accepted).await;
    }
}

/// The admin listener, bound and ready to accept.
pub(crate) struct AdminListener {
    tcp: TcpListener,
}

impl AdminListener {
    /// Binds `addr`.
    pub(crate) fn bind(addr: SocketAddr) -> Result<AdminListener, ListenError> {
        let tcp = listen(addr).map_err(|source| ListenError::Bind { addr, source })?;
        Ok(AdminListener { tcp })
    }

    /// The address actually bound (useful with port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.tcp
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Accepts sockets until `stop`, each served in a task of the server's tracker.
    pub(crate) async fn run(self, shared: Arc<Shared>, stop: CancellationToken) {
        let room = Arc::new(Semaphore::new(ADMIN_SOCKETS));
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                accepted = self.tcp.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = room.clone().try_acquire_owned() else {
                        tracing::debug!(%peer, "admin listener busy; closing the socket");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    shared.tracker.clone().spawn(async move {
                        let _permit = permit;
                        http::serve_admin(shared, stream).await;
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Binds `addr` and listens on it with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As TcpListener::bind does: a restart may bind while the last run's
    // connections are still in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A TLS acceptor for `files`, or what is wrong with them in plain words.
/// Only HTTP/1.1 is offered: WebSocket upgrades are an HTTP/1.1 mechanism.
fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, String> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
    };
    let cert_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|error| {
            format!(
                "{} holds no valid PEM certificate: {error}",
                files.cert.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| {
        format!(
            "{} holds no valid PEM private key: {error}",
            files.key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| {
            format!(
                "{} and {} do not go together: {error}",
                files.cert.display(),
                files.key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
