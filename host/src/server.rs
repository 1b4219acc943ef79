//! The listener: binds the port, loads every route's plugin, accepts sockets
//! under the connection limit, and shuts down cleanly.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::http::{self, App};
use crate::pubsub::Broker;
use crate::router::{Route, Router};
use crate::runtime::{Runtime, RuntimeError};
use crate::session::ws_config;

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
    /// A plugin could not be loaded.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// A bound, loaded server that has not started accepting yet.
pub struct Server {
    listener: TcpListener,
    app: Arc<App>,
    limit: Arc<Semaphore>,
    threads: Vec<JoinHandle<()>>,
    // Dropped last: it drives the call deadlines of the route threads.
    runtime: Arc<Runtime>,
}

impl Server {
    /// Binds the configured address and loads every route's plugin; fails on
    /// the first plugin that cannot serve.
    pub async fn bind(config: Config) -> Result<Server, ServeError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let runtime = Arc::new(Runtime::new(&config)?);
        let loader = runtime.clone();
        let routes = config.routes.clone();
        let broker = Arc::new(Broker::default());
        let handle = tokio::runtime::Handle::current();
        let loaded = tokio::task::spawn_blocking(move || {
            routes
                .into_iter()
                .map(|route| {
                    let compiled = loader.compile(&route.plugin)?;
                    let route = Arc::new(route);
                    let actor = loader.spawn_route(&handle, &broker, route.clone(), compiled)?;
                    Ok((route, actor))
                })
                .collect::<Result<Vec<_>, RuntimeError>>()
        })
        .await
        .expect("plugin loading does not panic")?;

        let mut router = Router::default();
        let mut threads = Vec::with_capacity(loaded.len());
        for (route, actor) in loaded {
            tracing::info!(route = %route.path, plugin = %route.plugin.display_name(), "route ready");
            router.insert(Route {
                ws_config: ws_config(&route),
                config: route,
                plugin: actor.handle,
            });
            threads.extend(actor.threads);
        }
        Ok(Server {
            listener,
            app: Arc::new(App::new(router, config.handshake_timeout)),
            limit: Arc::new(Semaphore::new(config.max_connections)),
            threads,
            runtime,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Accepts connections until `shutdown` completes, then closes every
    /// connection with 1001, lets the plugins see each `on-close`, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server {
            listener,
            app,
            limit,
            threads,
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
                        match limit.clone().try_acquire_owned() {
                            Ok(permit) => {
                                app.tracker.spawn(http::serve(app.clone(), stream, peer, permit));
                            }
                            Err(_) => {
                                tracing::warn!(%peer, "connection limit reached; answering 503");
                                app.tracker.spawn(http::overloaded(stream));
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
        // Route threads end once every handle to them is gone; the last
        // on-close calls are already in their queues.
        drop(app);
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        if tokio::time::timeout(DRAIN_GRACE, joined).await.is_err() {
            tracing::warn!("route threads still busy after the drain grace period");
        }
        drop(runtime);
    }
}
