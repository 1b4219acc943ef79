//! Route workers: OS threads that own plugin instances and call them
//! synchronously, one event at a time, in the order events were queued.
//!
//! In the `route` model one worker owns the route's single instance. In the
//! `connection` model a route has a few workers (one per core); each
//! connection is pinned to one of them, gets its own instance there, and
//! connections on different workers run in parallel.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::sync::oneshot;

use super::queue::{QueueRx, WeakQueueTx};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wasmtime::Store;

use super::batch::{Batch, Named};
use super::bindings::Plugin;
use super::bindings::berth::plugin::types::{self, MessageKind};
use super::connect::{Pending, decide};
use super::handle::{ConnectOutcome, Event, Request};
use super::instances::{Instances, Live};
use super::requests::held_bytes;
use super::store::{HostState, RouteShared};
use super::{CloseInfo, Compiled};
use crate::config::RouteConfig;
use crate::metrics::{Export, RouteMetrics};
use crate::outbox::ConnHandle;
use crate::pubsub::Held;

/// How many events may wait for a worker before sessions stop reading their
/// sockets (TCP backpressure reaches the clients).
pub(super) const QUEUE: usize = 4096;
/// The bytes of the messages a route worker's queue may hold: a count of
/// events alone would let 4,096 messages of the largest size wait.
pub(super) const QUEUE_BYTES: usize = 8 << 20;
/// The most events handled per wake-up of a worker.
const BATCH: usize = 256;
/// The instance key of a route-model instance (connection ids start at 1).
pub(super) const SHARED: u64 = 0;

/// Everything a worker needs to make and call instances.
pub(super) struct Worker {
    pub(super) route: Arc<RouteConfig>,
    pub(super) shared: Arc<RouteShared>,
    pub(super) compiled: Arc<Compiled>,
    pub(super) engine: wasmtime::Engine,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) queue: WeakQueueTx<Event>,
    pub(super) current_conn: Arc<AtomicU64>,
    pub(super) deadline_ticks: u64,
    pub(super) instances: Instances,
    /// The events taken for the next `on-events` call.
    pub(super) batch: Batch,
    /// What the calls of the batch publish and wake, held until it ends;
    /// lent to each call.
    pub(super) held: Held,
    pub(super) metrics: Arc<RouteMetrics>,
}

impl Worker {
    pub(super) fn run(mut self, mut rx: QueueRx<Event>) {
        let mut batch = Vec::with_capacity(BATCH);
        while rx.blocking_recv_many(&mut batch, BATCH) > 0 {
            let mut taken = 0;
            for event in batch.drain(..) {
                match &event {
                    Event::Message { msg, .. } => taken += rx.room(msg.len()),
                    Event::Response { outcome, .. } => {
                        taken += rx.room(held_bytes(outcome));
                    }
                    _ => {}
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

    /// The instance key that serves `conn`.
    pub(super) fn key(&self, conn: u64) -> u64 {
        match self.instances {
            Instances::Shared(_) => SHARED,
            Instances::PerConnection(_) => conn,
        }
    }

    pub(super) fn live(&mut self, key: u64) -> Option<&mut Live> {
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
        let decided = live.store.data_mut().take_decided();
        self.metrics.observe_call(export, took);
        let result = result.map_err(|error| {
            let (conn, named) = failed(at);
            self.fail(key, conn, named, error);
            Some(at)
        });
        // Connections the call refused, or accepted after their handshake
        // gave up, leave only now: in the `connection` model their instance
        // goes with them, and it cannot go while it is being called.
        for conn in decided {
            self.forget(conn);
        }
        result
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
            Event::Response { key, id, outcome } => {
                // As for timers: a cancel in the events before it must count.
                self.flush();
                let known = self
                    .live(key)
                    .is_some_and(|live| live.store.data_mut().requests().finished(id));
                if !known {
                    return; // cancelled, or its instance is gone
                }
                self.batch.response(key, id, &outcome);
            }
            Event::Abandoned { conn } => {
                let key = self.key(conn);
                let waiting = self
                    .live(key)
                    .is_some_and(|live| live.store.data_mut().abandon(conn));
                if waiting {
                    self.flush();
                    self.forget(conn);
                }
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
            |_| (conn, Named::Export(Export::Connect)),
            |plugin, store| {
                store.data().set_current(conn);
                plugin.berth_plugin_handler().call_on_connect(
                    store,
                    conn,
                    &types::Request::from(&request),
                )
            },
        );
        let answer = match result {
            Ok(types::ConnectAnswer::Accept(accept)) => Ok(accept),
            Ok(types::ConnectAnswer::Reject(reject)) => Err(reject),
            Ok(types::ConnectAnswer::Pending) => {
                // The handshake waits for `answer-connect`; the entry stays
                // so that what the plugin sends meanwhile is delivered once
                // the connection opens.
                if let Some(live) = self.live(key) {
                    let pending = Pending {
                        reply,
                        offered: request.subprotocols,
                    };
                    live.store.data_mut().await_answer(conn, pending);
                }
                return;
            }
            Err(_) => {
                self.forget(conn);
                let _ = reply.send(ConnectOutcome::Failed);
                return;
            }
        };
        let outcome = decide(answer, &request.subprotocols, &self.shared, conn);
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
