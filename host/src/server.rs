//! The server: binds its listeners, has the reload thread load every route,
//! accepts until told to stop, and shuts down cleanly.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::Limits;
use crate::cluster::{self, Cluster, ClusterError};
use crate::config::{Config, Overrides};
use crate::listener::{AdminListener, Bound, ListenError};
use crate::metrics::Metrics;
use crate::publish_api::PublishApi;
use crate::pubsub::Topics;
use crate::reload::{LoadError, ReloadHandle, Reloader, Stopped, Trigger, Wiring};
use crate::router::Router;
use crate::runtime::{EngineSettings, Runtime, RuntimeError};
use crate::state::State;

/// How long open connections get to finish their close handshakes at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How long route threads get to deliver the last `on-close` calls at shutdown.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Why the server could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be set up (its address, its certificate).
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// The plugin engine could not be set up.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A configured route's plugin could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The reload thread could not be started.
    #[error("cannot start the reload thread: {0}")]
    Thread(std::io::Error),
    /// The Redis broker could not be reached, and it is required.
    #[error(transparent)]
    Topics(#[from] ClusterError),
    /// The state store could not be opened.
    #[error(transparent)]
    State(#[from] crate::state::OpenError),
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

/// What every step of every connection of one server reads: made here, once,
/// and handed to the listeners.
pub(crate) struct Shared {
    /// The routing table, which reload replaces.
    pub(crate) router: Arc<Router>,
    /// Cancelled when the server shuts down.
    pub(crate) shutdown: CancellationToken,
    /// Every socket's task, so that shutdown can wait for them.
    pub(crate) tracker: TaskTracker,
    /// The time from a socket's connect (or, on a kept-alive socket, from its
    /// last answer) to the 101 answer: the request head and `on-connect` both
    /// have to fit in it.
    pub(crate) handshake_timeout: Duration,
    /// The caps on open connections.
    pub(crate) limits: Limits,
    /// The next connection id.
    next_conn: AtomicU64,
    /// Whether `/` answers a browser with the demo page.
    pub(crate) demo_page: bool,
    /// The server's metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// Whether the public listeners answer `/metrics` (no admin listener).
    pub(crate) public_metrics: bool,
    /// `POST /publish/...`, when `[publish-api]` has tokens.
    pub(crate) publish_api: Option<PublishApi>,
}

impl Shared {
    /// A new connection's id, unique within this process.
    pub(crate) fn next_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

/// A bound, loaded server that has not started accepting yet.
pub struct Server {
    listeners: Vec<Bound>,
    admin: Option<AdminListener>,
    shared: Arc<Shared>,
    reload: ReloadHandle,
    reload_thread: JoinHandle<Stopped>,
    plugin_dir: Option<PathBuf>,
    /// The Redis link, if topics are shared with other nodes; its tasks end
    /// when it is dropped.
    cluster: Option<Cluster>,
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
        let (startup, live) = (&config.startup, &config.live);
        let listeners = startup
            .listeners
            .iter()
            .map(Bound::bind)
            .collect::<Result<Vec<_>, _>>()?;
        let admin = startup.admin_listen.map(AdminListener::bind).transpose()?;
        let mut metrics = Metrics::new();
        let runtime = Arc::new(Runtime::new(&EngineSettings::from(startup))?);
        let router = Arc::new(Router::default());
        let shutdown = CancellationToken::new();
        let (topics, cluster) = match &startup.broker {
            None => (Arc::new(Topics::default()), None),
            Some(broker) => {
                let (topics, cluster) = cluster::start(broker, metrics.register_broker()).await?;
                (topics, Some(cluster))
            }
        };
        let (state_config, broker_config) = (startup.state.clone(), startup.broker.clone());
        // Opening replays the store's journal: disk work, not for an async worker.
        let state =
            tokio::task::spawn_blocking(move || State::open(&state_config, broker_config.as_ref()))
                .await
                .expect("opening the state store does not panic")?;
        tracing::info!(store = %state.describe(), "state store open");
        let metrics = Arc::new(metrics);
        let publish_api = PublishApi::new(
            &startup.publish_api,
            router.clone(),
            topics.clone(),
            state.clone(),
        );
        let shared = Arc::new(Shared {
            router: router.clone(),
            shutdown: shutdown.clone(),
            tracker: TaskTracker::new(),
            handshake_timeout: startup.handshake_timeout,
            limits: Limits::new(startup.max_connections, startup.max_connections_per_ip),
            next_conn: AtomicU64::new(1),
            demo_page: startup.demo_page,
            metrics: metrics.clone(),
            public_metrics: admin.is_none(),
            publish_api,
        });
        let plugin_dir = live.auto_routes.then(|| live.plugin_dir.clone());
        let loader = runtime.clone();
        let ServeOptions {
            config_file,
            overrides,
            watch,
        } = options;
        // Compiling takes milliseconds to seconds: not on an async worker.
        let reloader = tokio::task::spawn_blocking(move || {
            let wiring = Wiring {
                runtime: loader,
                metrics,
                topics,
                state,
                router,
                shutdown,
            };
            Reloader::start(wiring, config, config_file, overrides)
        })
        .await
        .expect("plugin loading does not panic")?;
        let (reload, reload_thread) = reloader.spawn(watch).map_err(ServeError::Thread)?;
        Ok(Server {
            listeners,
            admin,
            shared,
            reload,
            reload_thread,
            plugin_dir,
            cluster,
            runtime,
        })
    }

    /// The first listener's address as bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listeners[0].local_addr()
    }

    /// Every listener's address as bound, and whether it speaks wss://.
    pub fn local_addrs(&self) -> Vec<(SocketAddr, bool)> {
        self.listeners
            .iter()
            .map(|l| (l.local_addr(), l.is_tls()))
            .collect()
    }

    /// The admin listener's address as bound, if `admin-listen` is set:
    /// `/metrics` is served there, and not on the listeners.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminListener::local_addr)
    }

    /// The routes served now, as (path, plugin) pairs in path order.
    pub fn routes(&self) -> Vec<(String, String)> {
        self.shared.router.list()
    }

    /// The folder whose `NAME.wasm` files are served at `/NAME`, if drop-in
    /// routes are on.
    pub fn drop_in_folder(&self) -> Option<&std::path::Path> {
        self.plugin_dir.as_deref()
    }

    /// Whether `/` serves the demo's chat page to browsers.
    pub fn serves_demo_page(&self) -> bool {
        self.shared.demo_page
    }

    /// Whether backends can publish with `POST /publish/NAMESPACE/TOPIC`.
    pub fn serves_publish_api(&self) -> bool {
        self.shared.publish_api.is_some()
    }

    /// A handle that makes the server re-read its config and plugin files.
    pub fn reload_handle(&self) -> ReloadHandle {
        self.reload.clone()
    }

    /// Accepts connections until `shutdown` completes, then closes every
    /// connection with 1001, lets the plugins see each `on-close`, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server {
            listeners,
            admin,
            shared,
            reload,
            reload_thread,
            plugin_dir: _,
            cluster,
            runtime,
        } = self;
        let stop_accepting = CancellationToken::new();
        let mut accepting = tokio::task::JoinSet::new();
        for listener in listeners {
            accepting.spawn(listener.run(shared.clone(), stop_accepting.clone()));
        }
        if let Some(admin) = admin {
            accepting.spawn(admin.run(shared.clone(), stop_accepting.clone()));
        }
        shutdown.await;
        stop_accepting.cancel();
        // The listening sockets close here, before the connections are told.
        while accepting.join_next().await.is_some() {}
        tracing::info!("shutting down");
        shared.shutdown.cancel();
        shared.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = shared.tracker.len(),
                "connections still open after the shutdown grace period"
            );
        }
        // Route threads end once every handle to them is gone: the reload
        // thread drops its table when it stops, `shared` its router. The last
        // on-close calls are already in their queues.
        reload.trigger(Trigger::Stop);
        let drained = tokio::task::spawn_blocking(move || {
            let threads = reload_thread.join().unwrap_or_default();
            drop(shared);
            for thread in threads {
                let _ = thread.join();
            }
        });
        if tokio::time::timeout(DRAIN_GRACE, drained).await.is_err() {
            tracing::warn!("route threads still busy after the drain grace period");
        }
        // After the route threads: what their last on-close calls publish
        // may still reach the other nodes.
        drop(cluster);
        drop(runtime);
    }
}
