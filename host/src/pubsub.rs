//! Topics: publish/subscribe fan-out owned by the host. One `publish` queues the
//! same message (its bytes shared, not copied) on every subscriber's outbound
//! queue; a subscriber whose queue is full is closed as a slow consumer, and
//! nobody else waits for it.
//!
//! While a route worker runs a batch of plugin calls, what they publish and
//! the wake-ups they cause are held in a [`Held`] that the worker owns and
//! lends to each call. Consecutive publishes to one topic are held as a run,
//! and the run is queued as one shared entry per subscriber ([`Published`]),
//! so that a subscriber costs one push per run, not per publish, and holds
//! no per-message copy or reference count. Anything that must come after the
//! run in some connection's order (a `send` or `close` to one of its
//! subscribers, a subscription change, the end of the batch) delivers it
//! first.
//!
//! A [`Remote`] (the Redis link in `cluster`) extends topics to other nodes:
//! the topics tells it when a topic gains its first or loses its last local
//! subscriber, and hands it every publish made here; what other nodes
//! publish comes back through [`Topics::deliver`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustc_hash::{FxHashMap, FxHashSet};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::outbox::{ConnHandle, Published, Wakes};

/// Subscribers of one topic, by connection id.
type Subscribers = FxHashMap<u64, ConnHandle>;
/// The topics of one namespace.
type Namespace = HashMap<Box<str>, Subscribers>;

/// Every topic of every namespace in this server.
#[derive(Default)]
pub(crate) struct Topics {
    namespaces: RwLock<HashMap<Arc<str>, Namespace>>,
    remote: Option<Arc<dyn Remote>>,
}

/// Topics beyond this process. Called with the topics's lock held, so that
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
    topics: Arc<Topics>,
    namespace: Arc<str>,
    topic: Box<str>,
    messages: Vec<(WsMessage, Option<u64>)>,
}

/// What a batch of plugin calls holds back until something needs it: a run
/// of publishes to one topic, and the session wake-ups its pushes cause.
/// Made by a route worker for its batches ([`Held::batching`]); elsewhere
/// ([`Held::immediate`]) nothing waits.
#[derive(Default)]
pub(crate) struct Held {
    /// Whether publishes are held in runs.
    batching: bool,
    run: Option<Run>,
    wakes: Wakes,
}

impl Held {
    /// Holds publishes in runs and wake-ups until [`Self::finish`].
    pub(crate) fn batching() -> Held {
        Held {
            batching: true,
            run: None,
            wakes: Wakes::deferred(),
        }
    }

    /// Delivers each publish and wake-up as it is made.
    pub(crate) fn immediate() -> Held {
        Held {
            batching: false,
            run: None,
            wakes: Wakes::immediate(),
        }
    }

    /// The wake-ups, for pushes made outside a topic.
    pub(crate) fn wakes(&mut self) -> &mut Wakes {
        &mut self.wakes
    }

    /// Delivers the held run, if any.
    pub(crate) fn deliver(&mut self) {
        if let Some(run) = self.run.take() {
            run.topics
                .deliver(&run.namespace, &run.topic, &run.messages, &mut self.wakes);
        }
    }

    /// Delivers the held run first if `conn` subscribes to its topic, so that
    /// a message sent to `conn` now arrives after those published before it.
    pub(crate) fn deliver_before(&mut self, conn: u64) {
        let due = self
            .run
            .as_ref()
            .is_some_and(|run| run.topics.subscribes(&run.namespace, &run.topic, conn));
        if due {
            self.deliver();
        }
    }

    /// Ends the batch: delivers the held run, then wakes every session that
    /// has something to write.
    pub(crate) fn finish(&mut self) {
        self.deliver();
        self.wakes.wake_all();
    }
}

impl Topics {
    /// A topics whose topics also reach other nodes through `remote`.
    pub(crate) fn with_remote(remote: Arc<dyn Remote>) -> Topics {
        Topics {
            namespaces: RwLock::default(),
            remote: Some(remote),
        }
    }

    /// Adds `conn` to `topic` in `namespace`, after delivering what `held`
    /// holds (published before `conn` subscribed).
    pub(crate) fn subscribe(
        &self,
        namespace: &Arc<str>,
        topic: &str,
        conn: u64,
        handle: ConnHandle,
        held: &mut Held,
    ) {
        held.deliver();
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

    /// Removes `conn` from `topic` in `namespace`, after delivering what
    /// `held` holds (published while `conn` was subscribed); empty topics are
    /// forgotten.
    pub(crate) fn unsubscribe(&self, namespace: &str, topic: &str, conn: u64, held: &mut Held) {
        held.deliver();
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
    /// or in a run when `held` is batching), and hands it to the
    /// [`Remote`] for the other nodes' subscribers (`exclude` is a local
    /// connection: it means nothing there); returns how many local
    /// subscribers it is for.
    pub(crate) fn publish(
        self: &Arc<Self>,
        namespace: &Arc<str>,
        topic: &str,
        msg: WsMessage,
        exclude: Option<u64>,
        held: &mut Held,
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
        if !held.batching {
            self.deliver(namespace, topic, &[(msg, exclude)], &mut held.wakes);
            return count;
        }
        if let Some(run) = &mut held.run
            && Arc::ptr_eq(&run.topics, self)
            && run.namespace == *namespace
            && *run.topic == *topic
        {
            run.messages.push((msg, exclude));
            if run.messages.len() >= MAX_RUN {
                held.deliver();
            }
            return count;
        }
        held.deliver();
        held.run = Some(Run {
            topics: self.clone(),
            namespace: namespace.clone(),
            topic: topic.into(),
            messages: vec![(msg, exclude)],
        });
        count
    }

    /// Queues `messages` at once for the local subscribers of `topic`, each
    /// but the connection it excludes; for publishes from other nodes too.
    /// Every subscriber's queue gets the same shared run, except that a
    /// connection some of them exclude (their sender) gets a run of its own
    /// without those: a queue then holds only what it will write, and
    /// `write-queue` bounds its memory as it bounds its count. Wake-ups go
    /// to `wakes`.
    pub(crate) fn deliver(
        &self,
        namespace: &str,
        topic: &str,
        messages: &[(WsMessage, Option<u64>)],
        wakes: &mut Wakes,
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
                let _ = handle.push_run(&shared, shared_bytes, wakes);
                continue;
            }
            let own: Published = messages
                .iter()
                .filter(|(_, exclude)| *exclude != Some(conn))
                .map(|(msg, _)| msg.clone().into())
                .collect();
            if !own.is_empty() {
                let _ = handle.push_run(&own, own.iter().map(|s| s.msg.len()).sum(), wakes);
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
        let topics = Arc::new(Topics::default());
        let namespace: Arc<str> = "ns".into();
        let shutdown = CancellationToken::new();
        let (a, a_out) = outbox(16, &shutdown);
        let (b, b_out) = outbox(16, &shutdown);
        let mut held = Held::batching();
        topics.subscribe(&namespace, "t", 1, a.clone(), &mut held);
        topics.subscribe(&namespace, "t", 2, b.clone(), &mut held);
        let text = WsMessage::text;
        assert_eq!(
            topics.publish(&namespace, "t", text("p1"), None, &mut held),
            2
        );
        assert_eq!(
            topics.publish(&namespace, "t", text("p2"), Some(2), &mut held),
            1
        );
        assert!(
            texts(&b_out).is_empty(),
            "the run is held until something needs it"
        );
        // A direct send to a subscriber comes after what was published before it.
        held.deliver_before(1);
        a.push(text("direct"), held.wakes()).unwrap();
        assert_eq!(
            topics.publish(&namespace, "t", text("p3"), None, &mut held),
            2
        );
        assert_eq!(
            topics.publish(&namespace, "other", text("x"), None, &mut held),
            0
        );
        held.finish();
        assert_eq!(texts(&a_out), ["p1", "p2", "direct", "p3"]);
        assert_eq!(texts(&b_out), ["p1", "p3"]);
    }
}
