//! The listener: binds the port, has the reload thread load every route,
//! accepts sockets under the connection limit, and shuts down cleanly.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Overrides};
use crate::http::{self, Admission, App, Tally};
use crate::pubsub::Broker;
use crate::reload::{LoadError, ReloadHandle, Reloader, Stopped, Trigger};
use crate::router::Router;
use crate::runtime::{Runtime, RuntimeError};

/// How long open connections get to finish their close handshakes at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How long route threads get to deliver the last `on-close` calls at shutdown.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Why the server could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound (in use, not permitted...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The plugin engine could not be set up.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A configured route's plugin could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The reload thread could not be started.
    #[error("cannot start the reload thread: {0}")]
    Thread(std::io::Error),
}

/// How a server runs besides its config.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// The file the config was read from: watched, and read again on reload.
    pub config_file: Option<PathBuf>,
    /// Command-line settings to apply again to every reloaded config.
    pub overrides: Overrides,
    /// Whether to watch the plugin folders and the config file for changes.
    pub watch: bool,
}

/// The limits a socket is admitted under at accept. Sockets are counted
/// here, before any HTTP, rather than at the upgrade: a client that opens
/// sockets and never sends a request holds file descriptors and memory all
/// the same, so that is what has to be capped.
struct Limits {
    /// `max-connections`: sockets open at once.
    global: Arc<Semaphore>,
    /// `max-connections-per-ip`: open sockets per client address, and the cap.
    per_ip: Option<(Arc<Tally<IpAddr>>, usize)>,
}

/// Why a socket was refused at accept.
enum Refused {
    /// The server has `max-connections` open: 503.
    Full,
    /// The client's address has `max-connections-per-ip` open: 429.
    PeerFull,
}

impl Limits {
    /// Takes a place for a socket from `ip` under every limit, or says which
    /// one is full. The address is checked first: one that is over its own
    /// limit is told so, and takes nothing from everyone's.
    fn admit(&self, ip: IpAddr) -> Result<Admission, Refused> {
        let peer = match &self.per_ip {
            Some((tally, max)) => Some(tally.try_acquire(ip, *max).ok_or(Refused::PeerFull)?),
            None => None,
        };
        let permit = self
            .global
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Full)?;
        Ok(Admission::new(permit, peer))
    }
}

/// How many connections the kernel may hold for us before we accept them.
/// We ask for more than Linux grants (`net.core.somaxconn`, 4096 on current
/// kernels), which then grants its maximum. The usual default of 128 is too
/// few for a burst of connects: past it, the kernel drops the client's last
/// handshake packet while the client already believes it is connected, and
/// such a socket reaches us only when and if the kernel retries; until then no
/// timeout of ours runs for it, and a client waiting for the server to speak
/// first waits on.
const LISTEN_BACKLOG: u32 = 65_535;

/// Binds `addr` and listens on it with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
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

/// A bound, loaded server that has not started accepting yet.
pub struct Server {
    listener: TcpListener,
    app: Arc<App>,
    limits: Limits,
    reload: ReloadHandle,
    reload_thread: JoinHandle<Stopped>,
    plugin_dir: Option<PathBuf>,
    // Dropped last: it drives the call deadlines of the route threads.
    runtime: Arc<Runtime>,
}

impl Server {
    /// Binds the configured address and loads every route's plugin; fails on
    /// the first configured plugin that cannot serve. Nothing is watched.
    pub async fn bind(config: Config) -> Result<Server, ServeError> {
        Server::bind_with(config, ServeOptions::default()).await
    }

    /// [`Server::bind`] with a config file to reload and files to watch.
    pub async fn bind_with(config: Config, options: ServeOptions) -> Result<Server, ServeError> {
        let listener = listen(config.listen).map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
        let runtime = Arc::new(Runtime::new(&config)?);
        let router = Arc::new(Router::default());
        let shutdown = CancellationToken::new();
        let app = Arc::new(App::new(
            router.clone(),
            config.handshake_timeout,
            shutdown.clone(),
        ));
        let limits = Limits {
            global: Arc::new(Semaphore::new(config.max_connections)),
            per_ip: config
                .max_connections_per_ip
                .map(|max| (Arc::default(), max)),
        };
        let plugin_dir = config.auto_routes.then(|| config.plugin_dir.clone());
        let loader = runtime.clone();
        let ServeOptions {
            config_file,
            overrides,
            watch,
        } = options;
        // Compiling takes milliseconds to seconds: not on an async worker.
        let reloader = tokio::task::spawn_blocking(move || {
            let broker = Arc::new(Broker::default());
            Reloader::start(
                loader,
                broker,
                router,
                shutdown,
                config,
                config_file,
                overrides,
            )
        })
        .await
        .expect("plugin loading does not panic")?;
        let (reload, reload_thread) = reloader.spawn(watch).map_err(ServeError::Thread)?;
        Ok(Server {
            listener,
            app,
            limits,
            reload,
            reload_thread,
            plugin_dir,
            runtime,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The routes served now, as (path, plugin) pairs in path order.
    pub fn routes(&self) -> Vec<(String, String)> {
        self.app.router.list()
    }

    /// The folder whose `NAME.wasm` files are served at `/NAME`, if drop-in
    /// routes are on.
    pub fn drop_in_folder(&self) -> Option<&std::path::Path> {
        self.plugin_dir.as_deref()
    }

    /// A handle that makes the server re-read its config and plugin files.
    pub fn reload_handle(&self) -> ReloadHandle {
        self.reload.clone()
    }

    /// Accepts connections until `shutdown` completes, then closes every
    /// connection with 1001, lets the plugins see each `on-close`, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server {
            listener,
            app,
            limits,
            reload,
            reload_thread,
            plugin_dir: _,
            runtime,
        } = self;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        // Small messages are the norm: never wait to coalesce them.
                        let _ = stream.set_nodelay(true);
                        match limits.admit(peer.ip()) {
                            Ok(admission) => {
                                app.tracker.spawn(http::serve(app.clone(), stream, peer, admission));
                            }
                            Err(Refused::Full) => {
                                tracing::warn!(%peer, "connection limit reached; answering 503");
                                app.tracker.spawn(http::refuse_socket(stream, http::OVERLOADED));
                            }
                            Err(Refused::PeerFull) => {
                                // Debug, not warn: the client decides how
                                // often this happens, and could fill the log.
                                tracing::debug!(%peer, "connection limit of the address reached; answering 429");
                                app.tracker.spawn(http::refuse_socket(stream, http::TOO_MANY_FROM_PEER));
                            }
                        }
                    }
                    Err(error) => {
                        // Out of file descriptors, most likely: back off
                        // rather than spin, and keep serving.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
        drop(listener);
        tracing::info!("shutting down");
        app.shutdown.cancel();
        app.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, app.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = app.tracker.len(),
                "connections still open after the shutdown grace period"
            );
        }
        // Route threads end once every handle to them is gone: the reload
        // thread drops its table when it stops, the app its router. The last
        // on-close calls are already in their queues.
        reload.trigger(Trigger::Stop);
        let drained = tokio::task::spawn_blocking(move || {
            let threads = reload_thread.join().unwrap_or_default();
            drop(app);
            for thread in threads {
                let _ = thread.join();
            }
        });
        if tokio::time::timeout(DRAIN_GRACE, drained).await.is_err() {
            tracing::warn!("route threads still busy after the drain grace period");
        }
        drop(runtime);
    }
}
