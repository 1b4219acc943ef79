//! One connection's outbound queue: bounded in messages and in bytes, filled
//! by the plugin runtime and by topics, drained by the connection's session. It holds WebSocket
//! messages ready for the wire, and runs of publishes shared with every
//! other subscriber of their topic; a close message in it ends the
//! connection.
//!
//! It is a plain locked `VecDeque` rather than a channel because:
//! - a route worker that handles a batch of events can hold back the wake-ups
//!   it causes until the batch is done ([`Wakes`]), so that a
//!   session wakes once to write every message the batch queued for it,
//!   instead of once per message, which is what makes a fan-out to a thousand
//!   subscribers cheap;
//! - a run of publishes is one entry, whatever its length: a topic queues it
//!   on each subscriber with one push, and no subscriber holds a copy or a
//!   reference count per message;
//! - the session takes the whole queue at once by swapping it with its own
//!   empty one: no message is moved, and both buffers are reused;
//! - an idle connection's queue allocates nothing.
//!
//! The byte bound counts what the connection holds until the socket has
//! taken it: the queue, and what the session took from it last, which it
//! frames and writes before it takes again. A message shared with other
//! subscribers counts in each queue that holds it, as each could hold it
//! alone.
//!
//! Only a push onto an empty queue needs to wake the session: a non-empty
//! queue means a wake-up is already on its way, and the session always takes
//! everything there is before it sleeps again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

/// Why an outbound message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The queue is full: the client is too slow, and the session will close it.
    Full,
    /// One message larger than the whole byte bound: refused, and the
    /// connection stays open.
    TooLarge,
    /// The session has ended.
    Gone,
}

/// Consecutive publishes to one topic, shared by the subscribers that queue
/// them.
pub(crate) type Published = Arc<[Publish]>;

/// One publish in a run, and its compressed form: made by the first
/// subscriber's session that needs it and used by every other, so that a
/// publish is compressed once however many subscribers negotiated compression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Publish {
    /// The message as the plugin published it.
    pub(crate) msg: WsMessage,
    /// Its payload compressed with the largest window, or `None` where that
    /// is no smaller; unset until a session asks.
    pub(crate) deflated: OnceLock<Option<Bytes>>,
}

impl From<WsMessage> for Publish {
    fn from(msg: WsMessage) -> Self {
        Publish {
            msg,
            deflated: OnceLock::new(),
        }
    }
}

/// One entry of a connection's outbound queue.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outbound {
    /// A message for this connection alone: a send, a close, a ping.
    One(WsMessage),
    /// Publishes to a topic this connection subscribes to, from `next` on.
    Run {
        /// The run, shared with the topic's other subscribers.
        messages: Published,
        /// The first message not yet written.
        next: usize,
    },
}

impl Outbound {
    /// Whether this is a close message, which ends what is written.
    pub(crate) fn is_close(&self) -> bool {
        matches!(self, Outbound::One(msg) if msg.is_close())
    }
}

impl From<WsMessage> for Outbound {
    fn from(msg: WsMessage) -> Self {
        Outbound::One(msg)
    }
}

struct State {
    queue: VecDeque<Outbound>,
    /// The messages `queue` holds, each of a run's counted.
    len: usize,
    /// The payload bytes `queue` holds.
    bytes: usize,
    /// The payload bytes the session took last, until it takes again (it
    /// takes only once everything it took before has reached the socket).
    taken: usize,
    /// The session, while it waits on an empty queue.
    waiter: Option<Waker>,
    /// The session has ended; pushes are refused.
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    capacity: usize,
    byte_capacity: usize,
    /// The route's gauge of the bytes its connections hold for clients.
    held: Gauge,
    /// Live [`ConnHandle`]s: at zero nobody can reach the connection any more.
    handles: AtomicUsize,
    /// The connection's stop signal, cancelled when the client is too slow.
    stop: CancellationToken,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; recover the state regardless.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The session wake-ups that pushes cause: made at once, or held back by a
/// route worker until its batch of events is done, so that a session wakes
/// once to write everything the batch queued for it.
#[derive(Default)]
pub(crate) struct Wakes {
    /// `None` wakes at once.
    held: Option<Vec<Waker>>,
}

impl Wakes {
    /// Wake-ups made as they happen.
    pub(crate) fn immediate() -> Wakes {
        Wakes { held: None }
    }

    /// Wake-ups held until [`Self::wake_all`].
    pub(crate) fn deferred() -> Wakes {
        Wakes {
            held: Some(Vec::new()),
        }
    }

    fn add(&mut self, waker: Waker) {
        match &mut self.held {
            Some(held) => held.push(waker),
            None => waker.wake(),
        }
    }

    /// Wakes each session held back. Each is in the list once: only a push
    /// onto an empty queue wakes its session.
    pub(crate) fn wake_all(&mut self) {
        if let Some(held) = &mut self.held {
            for waker in held.drain(..) {
                waker.wake();
            }
        }
    }
}

/// The sending side of one connection's outbound queue, held by the plugin
/// runtime and by the topics the connection is subscribed to.
pub(crate) struct ConnHandle {
    shared: Arc<Shared>,
}

impl Clone for ConnHandle {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        ConnHandle {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for ConnHandle {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last handle: the session must learn that nobody will write
            // to it again.
            if let Some(waker) = self.shared.lock().waiter.take() {
                waker.wake();
            }
        }
    }
}

impl ConnHandle {
    /// Queues `out` without waiting; the session's wake-up goes to `wakes`.
    /// A full queue marks the client as a slow consumer: its session closes
    /// it with 1013.
    pub(crate) fn push(&self, out: WsMessage, wakes: &mut Wakes) -> Result<(), PushError> {
        let bytes = out.len();
        if bytes > self.shared.byte_capacity {
            return Err(PushError::TooLarge);
        }
        self.queue(1, bytes, Outbound::One(out), wakes)
    }

    /// Queues a run of publishes whose payloads add up to `bytes`, as
    /// [`Self::push`] does one message, each counted against the bounds. A
    /// run that does not fit whole is not queued: the client is a slow
    /// consumer, and its session closes it.
    pub(crate) fn push_run(
        &self,
        messages: &Published,
        bytes: usize,
        wakes: &mut Wakes,
    ) -> Result<(), PushError> {
        let run = Outbound::Run {
            messages: messages.clone(),
            next: 0,
        };
        self.queue(messages.len(), bytes, run, wakes)
    }

    fn queue(
        &self,
        count: usize,
        bytes: usize,
        out: Outbound,
        wakes: &mut Wakes,
    ) -> Result<(), PushError> {
        let mut state = self.shared.lock();
        if state.closed {
            return Err(PushError::Gone);
        }
        if state.len + count > self.shared.capacity
            || state.bytes + state.taken + bytes > self.shared.byte_capacity
        {
            drop(state);
            self.shared.stop.cancel();
            return Err(PushError::Full);
        }
        state.queue.push_back(out);
        state.len += count;
        state.bytes += bytes;
        self.shared.held.inc_by(bytes as i64);
        // Set only while the session waits on an empty queue.
        let waiter = state.waiter.take();
        drop(state);
        if let Some(waker) = waiter {
            wakes.add(waker);
        }
        Ok(())
    }
}

/// The session's end of the queue.
pub(crate) struct Outbox {
    shared: Arc<Shared>,
}

impl Outbox {
    /// Moves everything queued to the end of `into` (by swapping buffers
    /// when `into` is empty). Ready with `false` once the queue is empty and
    /// no handle is left to fill it.
    pub(crate) fn poll_take(
        &self,
        cx: &mut Context<'_>,
        into: &mut VecDeque<Outbound>,
    ) -> Poll<bool> {
        let mut state = self.shared.lock();
        // Called only once everything taken before has reached the socket.
        if state.taken > 0 {
            self.shared.held.dec_by(state.taken as i64);
            state.taken = 0;
        }
        if state.queue.is_empty() {
            if self.shared.handles.load(Ordering::Acquire) == 0 {
                return Poll::Ready(false);
            }
            state.waiter = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if into.is_empty() {
            std::mem::swap(&mut state.queue, into);
        } else {
            into.append(&mut state.queue);
        }
        state.len = 0;
        state.taken = std::mem::take(&mut state.bytes);
        Poll::Ready(true)
    }

    /// Gives back the memory a burst grew, if the queue is empty. Called when
    /// the connection has been quiet for a while, not after every drain, so
    /// that a busy connection does not free and regrow its queue each burst.
    pub(crate) fn shrink(&self) {
        let mut state = self.shared.lock();
        if state.queue.is_empty() {
            state.queue = VecDeque::new();
        }
    }

    /// The connection's stop signal.
    pub(crate) fn stop(&self) -> &CancellationToken {
        &self.shared.stop
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.closed = true;
        state.waiter = None;
        // Messages nobody will write go now, not when the last handle does.
        state.queue = VecDeque::new();
        state.len = 0;
        self.shared
            .held
            .dec_by((std::mem::take(&mut state.bytes) + std::mem::take(&mut state.taken)) as i64);
    }
}

/// The bounds of one connection's outbound queue, and where it counts the
/// bytes it holds.
pub(crate) struct Bounds {
    /// Messages, each of a run counted.
    pub(crate) messages: usize,
    /// Payload bytes, until the socket has taken them.
    pub(crate) bytes: usize,
    /// The route's gauge of the bytes its connections hold.
    pub(crate) held: Gauge,
}

/// Makes the outbound queue for a new connection, within `bounds`. The
/// connection's own stop signal is a child of `parent` (the signal that stops
/// every connection of its route version).
pub(crate) fn outbox(bounds: Bounds, parent: &CancellationToken) -> (ConnHandle, Outbox) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            len: 0,
            bytes: 0,
            taken: 0,
            waiter: None,
            closed: false,
        }),
        capacity: bounds.messages,
        byte_capacity: bounds.bytes,
        held: bounds.held,
        handles: AtomicUsize::new(1),
        stop: parent.child_token(),
    });
    (
        ConnHandle {
            shared: shared.clone(),
        },
        Outbox { shared },
    )
}

#[cfg(test)]
mod tests;
