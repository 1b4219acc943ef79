//! Topic members on this node: which connections subscribed to a topic with
//! a member description, and what it says. Bounded by the subscriptions that
//! carry them (`max-subscriptions`) and by `max-member` each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashMap;

/// A topic member as a plugin sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    /// Its connection.
    pub(crate) conn: u64,
    /// Its node's name ("local" on a node without a broker).
    pub(crate) node: Arc<str>,
    /// Its description.
    pub(crate) info: Arc<str>,
}

/// One membership: namespace, topic, connection and description.
pub(super) type Membership = (Arc<str>, Box<str>, u64, Arc<str>);

/// The members of one topic, by connection.
type Members = FxHashMap<u64, Arc<str>>;
/// Each topic's members, by namespace and topic.
type Topics = HashMap<(Arc<str>, Box<str>), Members>;

/// Every topic's members on this node.
#[derive(Default)]
pub(super) struct Presence {
    topics: Mutex<Topics>,
}

impl Presence {
    fn lock(&self) -> std::sync::MutexGuard<'_, Topics> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `conn` a member; returns its description, shared.
    pub(super) fn join(
        &self,
        namespace: &Arc<str>,
        topic: &str,
        conn: u64,
        info: &str,
    ) -> Arc<str> {
        let info: Arc<str> = info.into();
        self.lock()
            .entry((namespace.clone(), topic.into()))
            .or_default()
            .insert(conn, info.clone());
        info
    }

    /// Ends a membership; returns the description it had.
    pub(super) fn leave(&self, namespace: &Arc<str>, topic: &str, conn: u64) -> Option<Arc<str>> {
        let mut topics = self.lock();
        let key = (namespace.clone(), Box::<str>::from(topic));
        let members = topics.get_mut(&key)?;
        let info = members.remove(&conn);
        if members.is_empty() {
            topics.remove(&key);
        }
        info
    }

    /// Every membership on this node, to renew in a shared store.
    pub(super) fn snapshot(&self) -> Vec<Membership> {
        self.lock()
            .iter()
            .flat_map(|((ns, topic), members)| {
                members
                    .iter()
                    .map(|(&conn, info)| (ns.clone(), topic.clone(), conn, info.clone()))
            })
            .collect()
    }

    /// Up to `limit` members of `topic` on this node, named `node`.
    pub(super) fn members(
        &self,
        namespace: &str,
        topic: &str,
        limit: usize,
        node: &Arc<str>,
    ) -> Vec<Member> {
        let topics = self.lock();
        topics
            .get(&(Arc::from(namespace), Box::from(topic)))
            .map(|members| {
                members
                    .iter()
                    .take(limit)
                    .map(|(&conn, info)| Member {
                        conn,
                        node: node.clone(),
                        info: info.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn count(&self, namespace: &str, topic: &str) -> usize {
        self.lock()
            .get(&(Arc::from(namespace), Box::from(topic)))
            .map_or(0, |m| m.len())
    }
}
