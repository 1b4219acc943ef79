//! The instances a route worker owns, and how they are made: a store per
//! instance with its WASI context (no arguments, no inherited environment, no
//! sockets, only the folders the route grants), its limits and its timers.

use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};

use super::queue::queue;
use wasmtime::Store;
use wasmtime::error::Context as _;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::batch::Batch;
use super::bindings::Plugin;
use super::handle::PluginHandle;
use super::limits::Limits;
use super::quarantine::Quarantine;
use super::requests::{Requests, RouteRequests};
use super::stdio::{LineBudget, LogTarget, Stdio};
use super::store::{ConnEntry, HostState, RouteShared};
use super::timers::Timers;
use super::worker::{QUEUE, QUEUE_BYTES, SHARED, Worker};
use super::{Compiled, EPOCH_TICK, RouteWorkers, RuntimeError};
use crate::config::{InstanceModel, RouteConfig};
use crate::metrics::RouteMetrics;
use crate::pubsub::{Held, Topics};
use crate::state::State;

/// A live instance and its store.
pub(super) struct Live {
    pub(super) store: Store<HostState>,
    pub(super) plugin: Plugin,
}

/// The instances one worker owns.
pub(super) enum Instances {
    /// The route model: one instance, or none after it failed to restart.
    Shared(Option<Live>),
    /// The connection model: one instance per connection pinned to this worker.
    PerConnection(FxHashMap<u64, Live>),
}

impl Instances {
    /// The instance `key` names (see [`Worker::key`]), if it is alive.
    pub(super) fn get_mut(&mut self, key: u64) -> Option<&mut Live> {
        match self {
            Instances::Shared(live) => live.as_mut(),
            Instances::PerConnection(map) => map.get_mut(&key),
        }
    }
}

/// Starts the workers of `route`: one for the route model (its instance made
/// here, so a plugin that cannot start fails the server's startup), one per
/// core for the connection model.
pub(super) fn spawn(
    engine: &wasmtime::Engine,
    runtime: &tokio::runtime::Handle,
    topics: &Arc<Topics>,
    state: &Arc<State>,
    route: Arc<RouteConfig>,
    compiled: Arc<Compiled>,
    metrics: Arc<RouteMetrics>,
) -> Result<RouteWorkers, RuntimeError> {
    let deadline_ticks = route
        .call_timeout
        .as_micros()
        .div_ceil(EPOCH_TICK.as_micros())
        .max(1) as u64;
    let shared = Arc::new(RouteShared {
        name: route.path.as_str().into(),
        write_queue_bytes: route.write_queue_bytes,
        max_topic_name: route.max_topic_name,
        max_subscriptions_per_connection: route.max_subscriptions_per_connection,
        max_subscriptions: route.max_subscriptions,
        subscriptions: AtomicUsize::new(0),
        metrics: metrics.clone(),
        namespace: route.namespace.as_str().into(),
        values: route.values.clone(),
        topics: topics.clone(),
        state: state.clone(),
        rules: route.state,
        quarantine: Quarantine::new(route.quarantine),
        requests: Arc::new(RouteRequests::new(route.outbound.clone(), metrics.clone())),
    });
    let count = match route.instance {
        InstanceModel::Route => 1,
        InstanceModel::Connection => std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let mut senders = Vec::with_capacity(count);
    let mut threads = Vec::with_capacity(count);
    for index in 0..count {
        let (tx, rx) = queue(QUEUE, QUEUE_BYTES, runtime);
        let mut worker = Worker {
            route: route.clone(),
            shared: shared.clone(),
            compiled: compiled.clone(),
            engine: engine.clone(),
            runtime: runtime.clone(),
            queue: tx.downgrade(),
            current_conn: Arc::new(AtomicU64::new(0)),
            deadline_ticks,
            instances: Instances::PerConnection(FxHashMap::default()),
            batch: Batch::default(),
            held: Held::batching(),
            metrics: metrics.clone(),
        };
        if route.instance == InstanceModel::Route {
            let live = worker
                .instantiate(SHARED)
                .map_err(|e| RuntimeError::Instantiate {
                    plugin: compiled.name.clone(),
                    reason: super::one_line(&e),
                })?;
            worker.instances = Instances::Shared(Some(live));
        }
        let thread = std::thread::Builder::new()
            .name(format!("berth{}#{index}", route.path))
            .spawn(move || worker.run(rx))
            .map_err(|source| RuntimeError::Thread {
                route: route.path.clone(),
                source,
            })?;
        senders.push(tx);
        threads.push(thread);
    }
    Ok(RouteWorkers {
        handle: PluginHandle {
            workers: senders.into(),
        },
        threads,
    })
}

impl Worker {
    /// Makes an instance; `key` tags its timer events (its connection, or 0).
    pub(super) fn instantiate(&self, key: u64) -> wasmtime::Result<Live> {
        let budget = LineBudget::new(self.shared.name.clone());
        let target = |stream| LogTarget {
            route: self.shared.name.clone(),
            current_conn: self.current_conn.clone(),
            stream,
            budget: budget.clone(),
        };
        // No arguments, no inherited environment, no sockets, and only the
        // folders the route grants: clocks and random numbers are all a
        // plugin gets by default.
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(target(Stdio::Stdout))
            .stderr(target(Stdio::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let grants = &self.route.grants;
        for (name, value) in &grants.env {
            wasi.env(name, value);
        }
        for dir in &grants.dirs {
            let perms = if dir.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            wasi.preopened_dir(&dir.host, &dir.guest, perms)
                .with_context(|| format!("cannot open granted folder {}", dir.host.display()))?;
        }
        let timers = Timers::new(key, self.queue.clone(), self.runtime.clone());
        let requests = Requests::new(
            key,
            self.shared.requests.clone(),
            self.queue.clone(),
            self.runtime.clone(),
        );
        let state = HostState::new(
            wasi.build(),
            self.shared.clone(),
            self.current_conn.clone(),
            timers,
            requests,
            Limits::new(self.route.max_memory, self.metrics.plugin_memory.clone()),
            budget,
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| state.limits());
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.deadline_ticks);
        let plugin = self.compiled.pre.instantiate(&mut store)?;
        Ok(Live { store, plugin })
    }

    pub(super) fn restart_shared(&mut self, conns: FxHashMap<u64, ConnEntry>) {
        let live = match self.instantiate(SHARED) {
            Ok(mut live) => {
                live.store.data_mut().restore_conns(conns);
                Some(live)
            }
            Err(error) => {
                tracing::error!(route = %self.route.path, "plugin failed to start again: {error:#}");
                // Without an instance nobody can address these connections;
                // dropping their handles lets the sessions notice.
                drop(conns);
                None
            }
        };
        self.instances = Instances::Shared(live);
    }

    /// Makes sure an instance exists to serve `conn`; false if none can be made.
    pub(super) fn ready_for(&mut self, conn: u64) -> bool {
        let missing = match &self.instances {
            Instances::Shared(live) => live.is_none(),
            Instances::PerConnection(_) => true,
        };
        if !missing {
            return true;
        }
        let started = std::time::Instant::now();
        match &self.instances {
            Instances::Shared(_) => self.restart_shared(FxHashMap::default()),
            Instances::PerConnection(_) => match self.instantiate(conn) {
                Ok(live) => {
                    // Read by the fan-out benchmark: the real cost of a
                    // connection's instance, pool slot included.
                    tracing::trace!(
                        target: "berth::instance",
                        route = %self.route.path,
                        conn,
                        micros = started.elapsed().as_micros() as u64,
                        "instance made"
                    );
                    if let Instances::PerConnection(map) = &mut self.instances {
                        map.insert(conn, live);
                    }
                }
                Err(error) => {
                    tracing::warn!(route = %self.route.path, conn, "cannot make an instance: {error:#}");
                }
            },
        }
        self.live(self.key(conn)).is_some()
    }
}
