//! A route's actor: one OS thread owns the route's plugin instance and calls it
//! synchronously, one event at a time, in the order events were queued.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use http::StatusCode;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wasmtime::Store;
use wasmtime_wasi::WasiCtxBuilder;

use super::bindings::Plugin;
use super::bindings::berth::plugin::types::{CloseInfo, Message, Request};
use super::host::{ConnEntry, HostState};
use super::stdio::{LogTarget, Stdio};
use super::{Compiled, EPOCH_TICK, RouteActor, RuntimeError};
use crate::config::RouteConfig;
use crate::session::ConnHandle;

/// How many events may wait for a route's instance before sessions stop reading
/// their sockets (TCP backpressure reaches the clients).
const QUEUE: usize = 4096;
/// The most events handled per wake-up of the thread.
const BATCH: usize = 256;

/// What the plugin decided about a new connection.
#[derive(Debug)]
pub(crate) enum ConnectOutcome {
    /// Open the connection, answering with this subprotocol.
    Accept { subprotocol: Option<String> },
    /// Answer the upgrade request with this HTTP status and reason.
    Reject { status: StatusCode, reason: String },
    /// The plugin failed (trapped or broke the contract): answer 500.
    Failed,
}

/// Something that happened on one of the route's connections.
pub(crate) enum Event {
    Connect {
        conn: u64,
        request: Request,
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
}

/// Where sessions send a route's events; cheap to clone.
#[derive(Clone)]
pub(crate) struct PluginHandle {
    tx: mpsc::Sender<Event>,
}

impl PluginHandle {
    /// Asks the plugin about a new connection. `None` when the route's actor is gone.
    pub(crate) async fn connect(
        &self,
        conn: u64,
        request: Request,
        handle: ConnHandle,
    ) -> Option<ConnectOutcome> {
        let (reply, outcome) = oneshot::channel();
        let event = Event::Connect {
            conn,
            request,
            handle,
            reply,
        };
        self.tx.send(event).await.ok()?;
        outcome.await.ok()
    }

    /// Delivers a data message; waits while the route's queue is full.
    pub(crate) async fn message(&self, conn: u64, msg: WsMessage) {
        let _ = self.tx.send(Event::Message { conn, msg }).await;
    }

    /// Reports the end of an accepted connection.
    pub(crate) async fn close(&self, conn: u64, info: CloseInfo) {
        let _ = self.tx.send(Event::Close { conn, info }).await;
    }

    /// Reports the end of a connection without waiting, for drop paths; falls
    /// back to a task when the queue is full.
    pub(crate) fn close_soon(&self, conn: u64, info: CloseInfo) {
        if let Err(mpsc::error::TrySendError::Full(event)) =
            self.tx.try_send(Event::Close { conn, info })
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let tx = self.tx.clone();
            runtime.spawn(async move {
                let _ = tx.send(event).await;
            });
        }
    }
}

/// A live instance and its store.
struct Live {
    store: Store<HostState>,
    plugin: Plugin,
}

struct Actor {
    route: Arc<RouteConfig>,
    compiled: Compiled,
    engine: wasmtime::Engine,
    current_conn: Arc<AtomicU64>,
    deadline_ticks: u64,
    live: Option<Live>,
}

/// Instantiates the route's plugin and starts its thread.
pub(super) fn spawn(
    engine: &wasmtime::Engine,
    route: Arc<RouteConfig>,
    compiled: Compiled,
) -> Result<RouteActor, RuntimeError> {
    let deadline_ticks = route
        .call_timeout
        .as_micros()
        .div_ceil(EPOCH_TICK.as_micros())
        .max(1) as u64;
    let mut actor = Actor {
        route: route.clone(),
        compiled,
        engine: engine.clone(),
        current_conn: Arc::new(AtomicU64::new(0)),
        deadline_ticks,
        live: None,
    };
    let live = actor.instantiate().map_err(|e| RuntimeError::Instantiate {
        plugin: actor.compiled.name.clone(),
        reason: format!("{e:#}"),
    })?;
    actor.live = Some(live);

    let (tx, rx) = mpsc::channel(QUEUE);
    let thread = std::thread::Builder::new()
        .name(format!("berth-route{}", route.path))
        .spawn(move || actor.run(rx))
        .map_err(|source| RuntimeError::Thread {
            route: route.path.clone(),
            source,
        })?;
    Ok(RouteActor {
        handle: PluginHandle { tx },
        thread,
    })
}

fn to_plugin_message(msg: WsMessage) -> Option<Message> {
    match msg {
        WsMessage::Text(text) => Some(Message::Text(text.as_str().to_owned())),
        WsMessage::Binary(bytes) => Some(Message::Binary(bytes.into())),
        _ => None,
    }
}

impl Actor {
    fn run(mut self, mut rx: mpsc::Receiver<Event>) {
        let mut batch = Vec::with_capacity(BATCH);
        while rx.blocking_recv_many(&mut batch, BATCH) > 0 {
            for event in batch.drain(..) {
                self.handle(event);
            }
        }
        tracing::debug!(route = %self.route.path, "route actor stopped");
    }

    fn instantiate(&self) -> wasmtime::Result<Live> {
        let route_name: Arc<str> = self.route.path.as_str().into();
        let target = |stream| LogTarget {
            route: route_name.clone(),
            current_conn: self.current_conn.clone(),
            stream,
        };
        let wasi = WasiCtxBuilder::new()
            .stdout(target(Stdio::Stdout))
            .stderr(target(Stdio::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = HostState::new(wasi, route_name.clone(), self.current_conn.clone());
        let mut store = Store::new(&self.engine, state);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.deadline_ticks);
        let plugin = self.compiled.pre.instantiate(&mut store)?;
        Ok(Live { store, plugin })
    }

    /// Calls into the plugin under the route's deadline. A failed call leaves the
    /// instance unusable, so it is replaced by a fresh one (its state is lost).
    fn call<R>(
        &mut self,
        conn: u64,
        export: &str,
        f: impl FnOnce(&Plugin, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Option<R> {
        if self.live.is_none() {
            self.replace_instance(HashMap::new());
        }
        let live = self.live.as_mut()?;
        live.store.data().set_current(conn);
        live.store.set_epoch_deadline(self.deadline_ticks);
        let result = f(&live.plugin, &mut live.store);
        live.store.data().set_current(0);
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                let reason = match error.downcast_ref::<wasmtime::Trap>() {
                    Some(wasmtime::Trap::Interrupt) => format!(
                        "ran longer than call-timeout ({})",
                        humantime::format_duration(self.route.call_timeout)
                    ),
                    _ => format!("{error:#}"),
                };
                tracing::error!(
                    route = %self.route.path, conn, export,
                    "plugin call failed: {reason}; starting a fresh instance (the old one's state is lost)"
                );
                let conns = self
                    .live
                    .take()
                    .map(|mut live| live.store.data_mut().take_conns())
                    .unwrap_or_default();
                self.replace_instance(conns);
                None
            }
        }
    }

    fn replace_instance(&mut self, conns: HashMap<u64, ConnEntry>) {
        match self.instantiate() {
            Ok(mut live) => {
                live.store.data_mut().restore_conns(conns);
                self.live = Some(live);
            }
            Err(error) => {
                tracing::error!(route = %self.route.path, "plugin failed to start again: {error:#}");
                // Without an instance nobody can address these connections;
                // dropping their handles lets the sessions notice.
                drop(conns);
            }
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Connect {
                conn,
                request,
                handle,
                reply,
            } => self.connect(conn, request, handle, reply),
            Event::Message { conn, msg } => {
                let Some(msg) = to_plugin_message(msg) else {
                    return;
                };
                self.call(conn, "on-message", |plugin, store| {
                    plugin
                        .berth_plugin_handler()
                        .call_on_message(store, conn, &msg)
                });
            }
            Event::Close { conn, info } => self.close(conn, info),
        }
    }

    fn connect(
        &mut self,
        conn: u64,
        request: Request,
        handle: ConnHandle,
        reply: oneshot::Sender<ConnectOutcome>,
    ) {
        if self.live.is_none() {
            self.replace_instance(HashMap::new());
        }
        if let Some(live) = self.live.as_mut() {
            live.store.data_mut().add_conn(conn, handle);
        }
        let result = self.call(conn, "on-connect", |plugin, store| {
            plugin
                .berth_plugin_handler()
                .call_on_connect(store, conn, &request)
        });
        let outcome = match result {
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
                    ConnectOutcome::Reject {
                        status,
                        reason: reject.reason,
                    }
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

    fn close(&mut self, conn: u64, info: CloseInfo) {
        self.forget(conn);
        self.call(conn, "on-close", |plugin, store| {
            plugin
                .berth_plugin_handler()
                .call_on_close(store, conn, &info)
        });
    }

    fn forget(&mut self, conn: u64) {
        if let Some(live) = self.live.as_mut() {
            live.store.data_mut().remove_conn(conn);
        }
    }
}
