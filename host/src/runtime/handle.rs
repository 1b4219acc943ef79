//! How the rest of the host reaches a route's plugin: a [`PluginHandle`]
//! queues [`Event`]s for the route's workers, and what the host tells a
//! plugin and hears back is in the host's own types ([`Request`],
//! [`ConnectOutcome`]), never the generated bindings'.

use std::sync::Arc;

use http::StatusCode;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::CloseInfo;
use super::bindings::berth::plugin::types;
use super::queue::QueueTx;
use super::requests::Outcome;
use crate::outbox::ConnHandle;

/// What a plugin hears of an upgrade request.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    /// The request's path.
    pub(crate) path: String,
    /// Its query string, without the `?`.
    pub(crate) query: Option<String>,
    /// Its headers, names in lower case, values as text (lossy).
    pub(crate) headers: Vec<(String, String)>,
    /// The client's address.
    pub(crate) remote_addr: String,
    /// The subprotocols the client offered, in its order.
    pub(crate) subprotocols: Vec<String>,
}

impl From<&Request> for types::Request {
    fn from(request: &Request) -> Self {
        types::Request {
            path: request.path.clone(),
            query: request.query.clone(),
            headers: request.headers.clone(),
            remote_addr: request.remote_addr.clone(),
            subprotocols: request.subprotocols.clone(),
        }
    }
}

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
pub(super) enum Event {
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
    /// Outbound request `id` of instance `key` has its answer.
    Response {
        key: u64,
        id: u64,
        outcome: Box<Outcome>,
    },
    /// The handshake of `conn` ended before its plugin answered (the client
    /// left, or `handshake-timeout` passed): a pending connect is dropped.
    Abandoned {
        conn: u64,
    },
}

/// Tells the worker that a handshake stopped waiting for its answer.
struct Waiting<'a> {
    worker: &'a QueueTx<Event>,
    conn: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        send_soon(self.worker, Event::Abandoned { conn: self.conn });
    }
}

/// Queues `event` without waiting, for drop paths; falls back to a task
/// when the queue is full.
fn send_soon(worker: &QueueTx<Event>, event: Event) {
    if let Err(mpsc::error::TrySendError::Full(event)) = worker.try_send(event)
        && let Ok(runtime) = tokio::runtime::Handle::try_current()
    {
        let worker = worker.clone();
        runtime.spawn(async move {
            let _ = worker.send(event).await;
        });
    }
}

/// Where sessions send a route's events; cheap to clone.
#[derive(Clone)]
pub(crate) struct PluginHandle {
    pub(super) workers: Arc<[QueueTx<Event>]>,
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
        let worker = self.worker(conn);
        worker.send(event).await.ok()?;
        // Dropped with this future when the handshake gives up first, so
        // that a plugin that answered `pending` forgets the connection.
        let waiting = Waiting { worker, conn };
        let outcome = outcome.await.ok();
        std::mem::forget(waiting);
        outcome
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
        send_soon(self.worker(conn), Event::Close { conn, info });
    }
}
