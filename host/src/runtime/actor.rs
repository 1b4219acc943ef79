//! Route workers: OS threads that own plugin instances and call them
//! synchronously, one event at a time, in the order events were queued.
//!
//! In the `route` model one worker owns the route's single instance. In the
//! `connection` model a route has a few workers (one per core); each
//! connection is pinned to one of them, gets its own instance there, and
//! connections on different workers run in parallel.

use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};

use http::StatusCode;
use tokio::sync::{mpsc, oneshot};

use super::queue::{QueueRx, QueueTx, WeakQueueTx, queue};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wasmtime::Store;
use wasmtime::error::Context as _;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::batch::{Batch, Named};
use super::bindings::Plugin;
use super::bindings::berth::plugin::types::{MessageKind, Request};
use super::host::{ConnEntry, HostState, Quarantine, RouteShared};
use super::limits::Limits;
use super::stdio::{LineBudget, LogTarget, Stdio};
use super::timers::Timers;
use super::{CloseInfo, Compiled, EPOCH_TICK, RouteActor, RuntimeError};
use crate::config::{InstanceModel, RouteConfig};
use crate::metrics::{Export, Limit, RouteMetrics};
use crate::outbox::ConnHandle;
use crate::pubsub::{Broker, Held};
use crate::state::State;

/// How many events may wait for a worker before sessions stop reading their
/// sockets (TCP backpressure reaches the clients).
const QUEUE: usize = 4096;
/// The longest `reject` reason sent as an HTTP body; the rest is cut.
const MAX_REJECT_REASON: usize = 1024;
/// The bytes of the messages a route worker's queue may hold: a count of
/// events alone would let 4,096 messages of the largest size wait.
const QUEUE_BYTES: usize = 8 << 20;
/// The most events handled per wake-up of a worker.
const BATCH: usize = 256;
/// The instance key of a route-model instance (connection ids start at 1).
const SHARED: u64 = 0;

/// What the plugin decided about a new connection.
#[derive(Debug)]
pub(crate) enum ConnectOutcome {
    /// Open the connection, answering with this subprotocol.
    Accept { subprotocol: Option<String> },
    /// Answer the upgrade request with this HTTP status and reason.
    Reject { status: StatusCode, reason: String },
    /// The plugin failed (trapped or broke the contract): answer 500.
    Failed,
    /// No instance could be made for the connection (the pool is full): answer 503.
    Unavailable,
    /// The route is quarantined: answer 503.
    Quarantined,
}

/// Something for a worker to do.
pub(crate) enum Event {
    Connect {
        conn: u64,
        // Boxed: every event is moved through the queue at the size of the
        // largest, and messages are the common case.
        request: Box<Request>,
        handle: ConnHandle,
        reply: oneshot::Sender<ConnectOutcome>,
    },
    Message {
        conn: u64,
        msg: WsMessage,
    },
    Close {
        conn: u64,
        info: CloseInfo,
    },
    /// Answered once the worker has handled every event queued before it.
    Settled {
        reply: oneshot::Sender<()>,
    },
    /// Timer `timer` of instance `key` is due.
    Timer {
        key: u64,
        timer: u64,
    },
}

/// Where sessions send a route's events; cheap to clone.
#[derive(Clone)]
pub(crate) struct PluginHandle {
    workers: Arc<[QueueTx<Event>]>,
}

impl PluginHandle {
    /// The worker that serves `conn`: the same one for the connection's whole life.
    fn worker(&self, conn: u64) -> &QueueTx<Event> {
        &self.workers[(conn % self.workers.len() as u64) as usize]
    }

    /// Asks the plugin about a new connection. `None` when the route's worker is gone.
    pub(crate) async fn connect(
        &self,
        conn: u64,
        request: Request,
        handle: ConnHandle,
    ) -> Option<ConnectOutcome> {
        let (reply, outcome) = oneshot::channel();
        let event = Event::Connect {
            conn,
            request: Box::new(request),
            handle,
            reply,
        };
        self.worker(conn).send(event).await.ok()?;
        outcome.await.ok()
    }

    /// Delivers a data message; waits while the worker's queue is full.
    pub(crate) async fn message(&self, conn: u64, msg: WsMessage) {
        let bytes = msg.len();
        let _ = self
            .worker(conn)
            .send_sized(Event::Message { conn, msg }, bytes)
            .await;
    }

    /// Waits until the worker has handled every event sent before for `conn`,
    /// so that the plugin's answers to them are in the connection's outbox.
    pub(crate) async fn settled(&self, conn: u64) {
        let (reply, done) = oneshot::channel();
        if self
            .worker(conn)
            .send(Event::Settled { reply })
            .await
            .is_ok()
        {
            let _ = done.await;
        }
    }

    /// Reports the end of an accepted connection.
    pub(crate) async fn close(&self, conn: u64, info: CloseInfo) {
        let _ = self.worker(conn).send(Event::Close { conn, info }).await;
    }

    /// Reports the end of a connection without waiting, for drop paths; falls
    /// back to a task when the queue is full.
    pub(crate) fn close_soon(&self, conn: u64, info: CloseInfo) {
        let worker = self.worker(conn);
        if let Err(mpsc::error::TrySendError::Full(event)) =
            worker.try_send(Event::Close { conn, info })
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let worker = worker.clone();
            runtime.spawn(async move {
                let _ = worker.send(event).await;
            });
        }
    }
}

/// A live instance and its store.
struct Live {
    store: Store<HostState>,
    plugin: Plugin,
}

/// The instances one worker owns.
enum Instances {
    /// The route model: one instance, or none after it failed to restart.
    Shared(Option<Live>),
    /// The connection model: one instance per connection pinned to this worker.
    PerConnection(FxHashMap<u64, Live>),
}

impl Instances {
    /// The instance `key` names (see [`Worker::key`]), if it is alive.
    fn get_mut(&mut self, key: u64) -> Option<&mut Live> {
        match self {
            Instances::Shared(live) => live.as_mut(),
            Instances::PerConnection(map) => map.get_mut(&key),
        }
    }
}

/// Everything a worker needs to make and call instances.
struct Worker {
    route: Arc<RouteConfig>,
    shared: Arc<RouteShared>,
    compiled: Arc<Compiled>,
    engine: wasmtime::Engine,
    runtime: tokio::runtime::Handle,
    queue: WeakQueueTx<Event>,
    current_conn: Arc<AtomicU64>,
    deadline_ticks: u64,
    instances: Instances,
    /// The events taken for the next `on-events` call.
    batch: Batch,
    /// What the calls of the batch publish and wake, held until it ends;
    /// lent to each call.
    held: Held,
    metrics: Arc<RouteMetrics>,
}

/// Starts the workers of `route`: one for the route model (its instance made
/// here, so a plugin that cannot start fails the server's startup), one per
/// core for the connection model.
pub(super) fn spawn(
    engine: &wasmtime::Engine,
    runtime: &tokio::runtime::Handle,
    broker: &Arc<Broker>,
    state: &Arc<State>,
    route: Arc<RouteConfig>,
    compiled: Arc<Compiled>,
    metrics: Arc<RouteMetrics>,
) -> Result<RouteActor, RuntimeError> {
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
        broker: broker.clone(),
        state: state.clone(),
        rules: route.state,
        quarantine: Quarantine::new(route.quarantine),
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
    Ok(RouteActor {
        handle: PluginHandle {
            workers: senders.into(),
        },
        threads,
    })
}

impl Worker {
    fn run(mut self, mut rx: QueueRx<Event>) {
        let mut batch = Vec::with_capacity(BATCH);
        while rx.blocking_recv_many(&mut batch, BATCH) > 0 {
            let mut taken = 0;
            for event in batch.drain(..) {
                if let Event::Message { msg, .. } = &event {
                    taken += rx.room(msg.len());
                }
                self.handle(event);
            }
            rx.release(taken);
            self.flush();
            // Each session wakes once per batch, to write all the batch
            // queued for it.
            self.held.finish();
        }
        // Each version of a route has its own workers: after a reload, this
        // tells the operator when the last connection of the old one has gone.
        tracing::info!(
            route = %self.route.path,
            hash = %&self.compiled.hash.to_hex()[..12],
            "route version stopped"
        );
    }

    /// Makes an instance; `key` tags its timer events (its connection, or 0).
    fn instantiate(&self, key: u64) -> wasmtime::Result<Live> {
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
        let state = HostState::new(
            wasi.build(),
            self.shared.clone(),
            self.current_conn.clone(),
            timers,
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

    /// The instance key that serves `conn`.
    fn key(&self, conn: u64) -> u64 {
        match self.instances {
            Instances::Shared(_) => SHARED,
            Instances::PerConnection(_) => conn,
        }
    }

    fn live(&mut self, key: u64) -> Option<&mut Live> {
        self.instances.get_mut(key)
    }

    /// Calls into instance `key` under the route's deadline and times the
    /// call. `f` tags the call's logs with its connection (see
    /// `HostState::set_current`). A failed call leaves the instance unusable:
    /// see [`Self::fail`], told which connection and event failed by
    /// `failed`, given the event the plugin last said it handled; that event
    /// is the error, `None` when there was no instance to call.
    fn call<R>(
        &mut self,
        key: u64,
        export: Export,
        failed: impl FnOnce(u32) -> (u64, Named),
        f: impl FnOnce(&Plugin, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, Option<u32>> {
        let ticks = self.deadline_ticks;
        let held = &mut self.held;
        let live = self.instances.get_mut(key).ok_or(None)?;
        live.store.set_epoch_deadline(ticks);
        live.store.data_mut().lend(held);
        let started = std::time::Instant::now();
        let result = f(&live.plugin, &mut live.store);
        let took = started.elapsed();
        live.store.data_mut().lend(held);
        live.store.data().set_current(0);
        let at = live.store.data().handled_at();
        self.metrics.observe_call(export, took);
        result.map_err(|error| {
            let (conn, named) = failed(at);
            self.fail(key, conn, named, error);
            Some(at)
        })
    }

    /// Replaces a failed route-model instance with a fresh one (the route's
    /// connections stay open; the old state is lost), or drops a failed
    /// connection-model instance and closes its connection with 1011.
    fn fail(&mut self, key: u64, conn: u64, named: Named, error: wasmtime::Error) {
        let export = named.as_str();
        let reason = match error.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => format!(
                "ran longer than call-timeout ({})",
                humantime::format_duration(self.route.call_timeout)
            ),
            // The cause alone: the whole chain carries a wasm backtrace of
            // tens of frames, which goes to the debug log instead.
            Some(trap) => trap.to_string(),
            None => error.root_cause().to_string(),
        };
        tracing::debug!(route = %self.route.path, conn, export, "plugin call failed: {error:?}");
        self.metrics.traps.inc();
        if self.shared.quarantine.record_trap() {
            self.metrics.quarantines.inc();
            let rule = self.shared.quarantine.rule();
            tracing::error!(
                route = %self.route.path,
                "plugin quarantined: {} failed calls within {}; new connections get 503 until its file changes",
                rule.traps,
                humantime::format_duration(rule.window)
            );
        }
        // The failed instance's connections may leave their topics.
        self.held.deliver();
        match &mut self.instances {
            Instances::Shared(live) => {
                tracing::error!(
                    route = %self.route.path, conn, export,
                    "plugin call failed: {reason}; starting a fresh instance (the old one's state is lost)"
                );
                let conns = live
                    .take()
                    .map(|mut live| live.store.data_mut().take_conns())
                    .unwrap_or_default();
                self.restart_shared(conns);
            }
            Instances::PerConnection(map) => {
                tracing::error!(
                    route = %self.route.path, conn, export,
                    "plugin call failed: {reason}; closing the connection"
                );
                if let Some(mut live) = map.remove(&key)
                    && let Some(entry) = live.store.data_mut().remove_conn(key)
                {
                    let frame = CloseFrame {
                        code: CloseCode::Error,
                        reason: "plugin failed".into(),
                    };
                    let _ = entry.push(WsMessage::Close(Some(frame)), &mut self.held);
                }
            }
        }
    }

    fn restart_shared(&mut self, conns: FxHashMap<u64, ConnEntry>) {
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

    /// Adds `event` to the batch for the next call, or handles it at once,
    /// handing over the batch first when the event must not wait behind it
    /// or cannot join it.
    fn handle(&mut self, event: Event) {
        match event {
            Event::Connect {
                conn,
                request,
                handle,
                reply,
            } => {
                self.flush();
                self.connect(conn, *request, handle, reply);
            }
            Event::Message { conn, msg } => {
                let (kind, bytes) = match msg {
                    WsMessage::Text(text) => (MessageKind::Text, text.into()),
                    WsMessage::Binary(bytes) => (MessageKind::Binary, bytes),
                    _ => return,
                };
                let key = self.key(conn);
                if !self.batch.fits(key, bytes.len()) {
                    self.flush();
                }
                self.batch.message(key, conn, kind, &bytes);
            }
            Event::Close { conn, info } => self.close(conn, info),
            Event::Settled { reply } => {
                // Publishes held in this batch belong before the answer too.
                self.flush();
                self.held.deliver();
                let _ = reply.send(());
            }
            Event::Timer { key, timer } => {
                // The plugin may cancel the timer while handling what came
                // before it: those events go first, then the timer is looked up.
                self.flush();
                let Some(token) = self
                    .live(key)
                    .and_then(|live| live.store.data_mut().timers().fired(timer))
                else {
                    return; // cancelled, or its instance is gone
                };
                self.batch.timer(key, token);
            }
        }
    }

    /// Hands the batch to its instance in one `on-events` call. If the call
    /// fails in the route model, the events after the one that failed go to
    /// the fresh instance, so that one plugin fault costs one event.
    fn flush(&mut self) {
        while let Some(key) = self.batch.key() {
            let counts = self.batch.counts();
            let batch = std::mem::take(&mut self.batch);
            let result = self.call(
                key,
                Export::Events,
                |at| batch.event(at),
                |plugin, store| {
                    store.data_mut().begin_events(batch.conns());
                    let (payload, events) = batch.contents();
                    plugin
                        .berth_plugin_handler()
                        .call_on_events(store, payload, events)
                },
            );
            self.metrics.delivered(counts);
            let rest = match (result, &self.instances) {
                (Err(Some(at)), Instances::Shared(Some(_))) => batch.after(at),
                _ => Batch::default(),
            };
            self.batch = batch;
            self.batch.clear();
            if rest.key().is_some() {
                self.batch = rest;
            }
        }
    }

    /// Makes sure an instance exists to serve `conn`; false if none can be made.
    fn ready_for(&mut self, conn: u64) -> bool {
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

    fn connect(
        &mut self,
        conn: u64,
        request: Request,
        handle: ConnHandle,
        reply: oneshot::Sender<ConnectOutcome>,
    ) {
        if self.shared.quarantine.is_tripped() {
            let _ = reply.send(ConnectOutcome::Quarantined);
            return;
        }
        if !self.ready_for(conn) {
            let _ = reply.send(ConnectOutcome::Unavailable);
            return;
        }
        let key = self.key(conn);
        if let Some(live) = self.live(key) {
            live.store.data_mut().add_conn(conn, handle);
        }
        let result = self.call(
            key,
            Export::Connect,
            |_| (conn, Named::Connect),
            |plugin, store| {
                store.data().set_current(conn);
                plugin
                    .berth_plugin_handler()
                    .call_on_connect(store, conn, &request)
            },
        );
        let outcome = match result.ok() {
            Some(Ok(accept)) => match accept.subprotocol {
                Some(chosen) if !request.subprotocols.contains(&chosen) => {
                    tracing::error!(
                        route = %self.route.path, conn,
                        "plugin accepted with subprotocol {chosen:?}, which was not offered"
                    );
                    ConnectOutcome::Failed
                }
                subprotocol => ConnectOutcome::Accept { subprotocol },
            },
            Some(Err(reject)) => match StatusCode::from_u16(reject.status) {
                Ok(status) if status.is_client_error() || status.is_server_error() => {
                    let mut reason = reject.reason;
                    if reason.len() > MAX_REJECT_REASON {
                        self.metrics.limit_hit(Limit::RejectReason);
                        reason.truncate(super::cut(&reason, MAX_REJECT_REASON).len());
                    }
                    ConnectOutcome::Reject { status, reason }
                }
                _ => {
                    tracing::error!(
                        route = %self.route.path, conn,
                        "plugin rejected with status {}, which is not in 400..=599", reject.status
                    );
                    ConnectOutcome::Failed
                }
            },
            None => ConnectOutcome::Failed,
        };
        let accepted = matches!(outcome, ConnectOutcome::Accept { .. });
        if !accepted {
            self.forget(conn);
        }
        if reply.send(outcome).is_err() && accepted {
            // The handshake was abandoned before the answer arrived: the
            // connection never opened, but the plugin accepted it, so it is
            // owed its on-close.
            self.close(
                conn,
                CloseInfo {
                    code: 1006,
                    reason: "handshake abandoned".into(),
                },
            );
        }
    }

    /// Adds the end of `conn` to the batch. The connection leaves the
    /// plugin's store now, so events before it in the batch go first.
    fn close(&mut self, conn: u64, info: CloseInfo) {
        let key = self.key(conn);
        if !self.batch.fits(key, info.reason.len()) || self.batch.has_other_than_closes() {
            self.flush();
        }
        // Its subscriptions end with its entry: what they hold goes first.
        self.held.deliver();
        if let Some(live) = self.live(key) {
            live.store.data_mut().remove_conn(conn);
        } else {
            return; // its instance failed and is gone, and the plugin with it
        }
        self.batch.close(key, conn, info.code, &info.reason);
        if let Instances::PerConnection(_) = self.instances {
            self.flush();
            if let Instances::PerConnection(map) = &mut self.instances {
                // The connection's instance, and with it its timers, ends here.
                map.remove(&conn);
            }
        }
    }

    /// Forgets a connection that was not accepted (and its instance, if it had one).
    fn forget(&mut self, conn: u64) {
        self.held.deliver();
        let key = self.key(conn);
        match &mut self.instances {
            Instances::Shared(Some(live)) => {
                live.store.data_mut().remove_conn(conn);
            }
            Instances::Shared(None) => {}
            Instances::PerConnection(map) => {
                map.remove(&key);
            }
        }
    }
}
