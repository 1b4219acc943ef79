//! Topics: publish/subscribe fan-out owned by the host. One `publish` queues the
//! same message (its bytes shared, not copied) on every subscriber's outbound
//! queue; a subscriber whose queue is full is closed as a slow consumer, and
//! nobody else waits for it.
//!
//! While a route worker runs a batch of plugin calls ([`batching`]),
//! consecutive publishes to one topic are held as a run, and the run is
//! queued as one shared entry per subscriber ([`Published`]): a thousand
//! subscribers cost a thousand pushes per run, not per publish, and hold no
//! per-message copy or reference count (in the fan-out benchmark's profile,
//! a push per publish per subscriber was a quarter of berth's CPU, and a
//! reference-counted clone per message per subscriber a tenth after that).
//! Anything that must come after the run in some connection's order (a
//! `send` or `close` to one of its subscribers, a subscription change, the
//! end of the batch) delivers it first.
//!
//! A [`Remote`] (the Redis link in `cluster`) extends topics to other nodes:
//! the broker tells it when a topic gains its first or loses its last local
//! subscriber, and hands it every publish made here; what other nodes
//! publish comes back through [`Broker::deliver`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustc_hash::{FxHashMap, FxHashSet};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::outbox::{ConnHandle, Published};

/// Subscribers of one topic, by connection id.
type Subscribers = FxHashMap<u64, ConnHandle>;
/// The topics of one namespace.
type Topics = HashMap<Box<str>, Subscribers>;

/// Every topic of every namespace in this server.
#[derive(Default)]
pub(crate) struct Broker {
    namespaces: RwLock<HashMap<Arc<str>, Topics>>,
    remote: Option<Arc<dyn Remote>>,
}

/// Topics beyond this process. Called with the broker's lock held, so that
/// opens and closes of one topic arrive in the order they happened: each
/// call must only queue work, never wait.
pub(crate) trait Remote: Send + Sync {
    /// `topic` got its first subscriber on this node.
    fn opened(&self, namespace: &Arc<str>, topic: &str);
    /// `topic` lost its last subscriber on this node.
    fn closed(&self, namespace: &str, topic: &str);
    /// A publish made on this node, for the subscribers on other nodes.
    fn publish(&self, namespace: &str, topic: &str, msg: &WsMessage);
}

/// The most publishes held in one run. Beyond this the run is delivered, so a
/// plugin publishing in a loop makes the host hold a bounded amount (the
/// subscribers' queues, bounded themselves, take the rest or close).
const MAX_RUN: usize = 256;

/// Consecutive publishes to one topic, not yet queued.
struct Run {
    broker: Arc<Broker>,
    namespace: Arc<str>,
    topic: Box<str>,
    messages: Vec<(WsMessage, Option<u64>)>,
}

impl Run {
    fn deliver(self) {
        self.broker
            .deliver(&self.namespace, &self.topic, &self.messages);
    }
}

thread_local! {
    /// Set while this thread runs [`batching`].
    static BATCHING: Cell<bool> = const { Cell::new(false) };
    static RUN: RefCell<Option<Run>> = const { RefCell::new(None) };
}

/// Runs `f` with publishes on this thread held in runs, and delivers the last
/// run when it returns.
pub(crate) fn batching<R>(f: impl FnOnce() -> R) -> R {
    let outer = BATCHING.replace(true);
    let result = f();
    deliver_held();
    BATCHING.set(outer);
    result
}

/// Delivers the run this thread holds, if any.
pub(crate) fn deliver_held() {
    if let Some(run) = RUN.take() {
        run.deliver();
    }
}

/// Delivers the held run first if `conn` subscribes to its topic, so that a
/// message sent to `conn` now arrives after those published before it.
pub(crate) fn deliver_held_before(conn: u64) {
    let due = RUN.with_borrow(|run| {
        run.as_ref()
            .is_some_and(|run| run.broker.subscribes(&run.namespace, &run.topic, conn))
    });
    if due {
        deliver_held();
    }
}

impl Broker {
    /// A broker whose topics also reach other nodes through `remote`.
    pub(crate) fn with_remote(remote: Arc<dyn Remote>) -> Broker {
        Broker {
            namespaces: RwLock::default(),
            remote: Some(remote),
        }
    }

    /// Adds `conn` to `topic` in `namespace`.
    pub(crate) fn subscribe(
        &self,
        namespace: &Arc<str>,
        topic: &str,
        conn: u64,
        handle: ConnHandle,
    ) {
        deliver_held();
        let mut namespaces = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
        let subscribers = namespaces
            .entry(namespace.clone())
            .or_default()
            .entry(topic.into())
            .or_default();
        if subscribers.is_empty()
            && let Some(remote) = &self.remote
        {
            remote.opened(namespace, topic);
        }
        subscribers.insert(conn, handle);
    }

    /// Removes `conn` from `topic` in `namespace`; empty topics are forgotten.
    pub(crate) fn unsubscribe(&self, namespace: &str, topic: &str, conn: u64) {
        deliver_held();
        let mut namespaces = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
        let Some(topics) = namespaces.get_mut(namespace) else {
            return;
        };
        if let Some(subscribers) = topics.get_mut(topic) {
            subscribers.remove(&conn);
            if subscribers.is_empty() {
                topics.remove(topic);
                if let Some(remote) = &self.remote {
                    remote.closed(namespace, topic);
                }
            }
        }
        if topics.is_empty() {
            namespaces.remove(namespace);
        }
    }

    fn subscribes(&self, namespace: &str, topic: &str, conn: u64) -> bool {
        let namespaces = self.namespaces.read().unwrap_or_else(|e| e.into_inner());
        namespaces
            .get(namespace)
            .and_then(|t| t.get(topic))
            .is_some_and(|s| s.contains_key(&conn))
    }

    /// Queues `msg` for every local subscriber of `topic` but `exclude` (now,
    /// or at the end of the run when [`batching`]), and hands it to the
    /// [`Remote`] for the other nodes' subscribers (`exclude` is a local
    /// connection: it means nothing there); returns how many local
    /// subscribers it is for.
    pub(crate) fn publish(
        self: &Arc<Self>,
        namespace: &Arc<str>,
        topic: &str,
        msg: WsMessage,
        exclude: Option<u64>,
    ) -> u32 {
        if let Some(remote) = &self.remote {
            remote.publish(namespace, topic, &msg);
        }
        let count = {
            let namespaces = self.namespaces.read().unwrap_or_else(|e| e.into_inner());
            let Some(subscribers) = namespaces.get(&**namespace).and_then(|t| t.get(topic)) else {
                return 0;
            };
            let excluded = exclude.is_some_and(|conn| subscribers.contains_key(&conn));
            (subscribers.len() - usize::from(excluded)) as u32
        };
        if count == 0 {
            return 0;
        }
        if !BATCHING.get() {
            self.deliver(namespace, topic, &[(msg, exclude)]);
            return count;
        }
        let finished = RUN.with_borrow_mut(|held| {
            if let Some(run) = held
                && Arc::ptr_eq(&run.broker, self)
                && run.namespace == *namespace
                && *run.topic == *topic
            {
                run.messages.push((msg, exclude));
                if run.messages.len() < MAX_RUN {
                    return None;
                }
                return held.take();
            }
            held.replace(Run {
                broker: self.clone(),
                namespace: namespace.clone(),
                topic: topic.into(),
                messages: vec![(msg, exclude)],
            })
        });
        if let Some(run) = finished {
            run.deliver();
        }
        count
    }

    /// Queues `messages` at once for the local subscribers of `topic`, each
    /// but the connection it excludes; for publishes from other nodes too.
    /// Every subscriber's queue gets the same shared run, except that a
    /// connection some of them exclude (their sender) gets a run of its own
    /// without those: a queue then holds only what it will write, and
    /// `write-queue` bounds its memory as it bounds its count.
    pub(crate) fn deliver(
        &self,
        namespace: &str,
        topic: &str,
        messages: &[(WsMessage, Option<u64>)],
    ) {
        let namespaces = self.namespaces.read().unwrap_or_else(|e| e.into_inner());
        let Some(subscribers) = namespaces.get(namespace).and_then(|t| t.get(topic)) else {
            return;
        };
        // Cloning a message clones a reference to its bytes, not the bytes.
        let shared: Published = messages.iter().map(|(msg, _)| msg.clone().into()).collect();
        let shared_bytes = shared.iter().map(|s| s.msg.len()).sum();
        let excluded: FxHashSet<u64> = messages.iter().filter_map(|(_, e)| *e).collect();
        for (&conn, handle) in subscribers {
            if excluded.is_empty() || !excluded.contains(&conn) {
                let _ = handle.push_run(&shared, shared_bytes);
                continue;
            }
            let own: Published = messages
                .iter()
                .filter(|(_, exclude)| *exclude != Some(conn))
                .map(|(msg, _)| msg.clone().into())
                .collect();
            if !own.is_empty() {
                let _ = handle.push_run(&own, own.iter().map(|s| s.msg.len()).sum());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{Bounds, Outbound, Outbox};
    use std::task::{Context, Waker};
    use tokio_util::sync::CancellationToken;

    /// The texts queued for a connection, as its session would write them.
    fn texts(outbox: &Outbox) -> Vec<String> {
        let mut got = std::collections::VecDeque::new();
        let mut cx = Context::from_waker(Waker::noop());
        let _ = outbox.poll_take(&mut cx, &mut got);
        got.iter()
            .flat_map(|out| match out {
                Outbound::One(msg) => vec![msg],
                Outbound::Run { messages, next } => {
                    messages[*next..].iter().map(|s| &s.msg).collect()
                }
            })
            .map(|msg| msg.to_text().unwrap().to_string())
            .collect()
    }

    fn outbox(messages: usize, parent: &CancellationToken) -> (ConnHandle, Outbox) {
        let bounds = Bounds {
            messages,
            bytes: 1 << 20,
            held: Default::default(),
        };
        crate::outbox::outbox(bounds, parent)
    }

    #[test]
    fn a_held_run_keeps_each_connections_order() {
        let broker = Arc::new(Broker::default());
        let namespace: Arc<str> = "ns".into();
        let shutdown = CancellationToken::new();
        let (a, a_out) = outbox(16, &shutdown);
        let (b, b_out) = outbox(16, &shutdown);
        broker.subscribe(&namespace, "t", 1, a.clone());
        broker.subscribe(&namespace, "t", 2, b.clone());
        batching(|| {
            assert_eq!(
                broker.publish(&namespace, "t", WsMessage::text("p1"), None),
                2
            );
            assert_eq!(
                broker.publish(&namespace, "t", WsMessage::text("p2"), Some(2)),
                1
            );
            assert!(
                texts(&b_out).is_empty(),
                "the run is held until something needs it"
            );
            // A direct send to a subscriber comes after what was published before it.
            deliver_held_before(1);
            a.push(WsMessage::text("direct")).unwrap();
            assert_eq!(
                broker.publish(&namespace, "t", WsMessage::text("p3"), None),
                2
            );
            assert_eq!(
                broker.publish(&namespace, "other", WsMessage::text("x"), None),
                0
            );
        });
        assert_eq!(texts(&a_out), ["p1", "p2", "direct", "p3"]);
        assert_eq!(texts(&b_out), ["p1", "p3"]);
    }
}
