//! Topics: publish/subscribe fan-out owned by the host. One `publish` queues the
//! same message (its bytes shared, not copied) on every subscriber's outbound
//! queue; a subscriber whose queue is full is closed as a slow consumer, and
//! nobody else waits for it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::outbox::{ConnHandle, Outbound};

/// Subscribers of one topic, by connection id.
type Subscribers = HashMap<u64, ConnHandle>;
/// The topics of one namespace.
type Topics = HashMap<Box<str>, Subscribers>;

/// Every topic of every namespace in this server.
#[derive(Default)]
pub(crate) struct Broker {
    namespaces: RwLock<HashMap<Arc<str>, Topics>>,
}

impl Broker {
    /// Adds `conn` to `topic` in `namespace`.
    pub(crate) fn subscribe(
        &self,
        namespace: &Arc<str>,
        topic: &str,
        conn: u64,
        handle: ConnHandle,
    ) {
        let mut namespaces = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
        namespaces
            .entry(namespace.clone())
            .or_default()
            .entry(topic.into())
            .or_default()
            .insert(conn, handle);
    }

    /// Removes `conn` from `topic` in `namespace`; empty topics are forgotten.
    pub(crate) fn unsubscribe(&self, namespace: &str, topic: &str, conn: u64) {
        let mut namespaces = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
        let Some(topics) = namespaces.get_mut(namespace) else {
            return;
        };
        if let Some(subscribers) = topics.get_mut(topic) {
            subscribers.remove(&conn);
            if subscribers.is_empty() {
                topics.remove(topic);
            }
        }
        if topics.is_empty() {
            namespaces.remove(namespace);
        }
    }

    /// Queues `msg` for every subscriber of `topic` but `exclude`; returns how
    /// many took it.
    pub(crate) fn publish(
        &self,
        namespace: &str,
        topic: &str,
        msg: &WsMessage,
        exclude: Option<u64>,
    ) -> u32 {
        let namespaces = self.namespaces.read().unwrap_or_else(|e| e.into_inner());
        let Some(subscribers) = namespaces.get(namespace).and_then(|t| t.get(topic)) else {
            return 0;
        };
        let mut delivered = 0;
        for (&conn, handle) in subscribers {
            // Cloning a message clones a reference to its bytes, not the bytes.
            if Some(conn) != exclude && handle.push(Outbound::Message(msg.clone())).is_ok() {
                delivered += 1;
            }
        }
        delivered
    }
}
