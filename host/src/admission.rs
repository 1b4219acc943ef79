//! Admission: every cap on open connections, in one place. A socket takes
//! its places under the server's `max-connections` and its client address's
//! `max-connections-per-ip` at accept ([`Limits::admit`]), before any HTTP,
//! and holds them ([`Admission`]) for as long as it is open; a WebSocket
//! connection also takes a place under its route's `max-connections` before
//! its plugin is asked. A key of a [`Tally`] exists only while it has open
//! connections, so no table outgrows the connections themselves.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Open connections counted by key (a client address, a route path), so that
/// each key can be held to a cap.
pub(crate) struct Tally<K: Eq + Hash> {
    // The std hasher, randomly seeded: client addresses are chosen by clients.
    counts: Mutex<HashMap<K, usize>>,
}

impl<K: Eq + Hash> Default for Tally<K> {
    fn default() -> Self {
        Tally {
            counts: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> Tally<K> {
    fn lock(&self) -> MutexGuard<'_, HashMap<K, usize>> {
        // Nothing panics while holding the lock; recover the table regardless.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more connection for `key`, unless it already has `max`.
    /// The count drops again when the returned slot does.
    pub(crate) fn try_acquire(self: &Arc<Self>, key: K, max: usize) -> Option<TallySlot<K>> {
        let mut counts = self.lock();
        let count = counts.get(&key).copied().unwrap_or(0);
        if count >= max {
            return None;
        }
        counts.insert(key.clone(), count + 1);
        Some(TallySlot {
            tally: self.clone(),
            key,
        })
    }
}

/// One connection counted in a [`Tally`] until this is dropped.
pub(crate) struct TallySlot<K: Eq + Hash + Clone> {
    tally: Arc<Tally<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Drop for TallySlot<K> {
    fn drop(&mut self) {
        let mut counts = self.tally.lock();
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// What an accepted socket holds for as long as it is open, as HTTP or as a
/// WebSocket connection: its place under the server's `max-connections` and
/// under its client address's `max-connections-per-ip`.
pub(crate) struct Admission {
    _permit: OwnedSemaphorePermit,
    _peer: Option<TallySlot<IpAddr>>,
}

/// The caps of one server's public listeners. Sockets are counted at accept
/// (or right after the PROXY header that names their client), before any
/// HTTP: a client that opens sockets and never sends a request holds file
/// descriptors and memory all the same, so that is what has to be capped.
pub(crate) struct Limits {
    /// `max-connections`: sockets open at once.
    global: Arc<Semaphore>,
    /// `max-connections-per-ip`: open sockets per client address, and the cap.
    per_ip: Option<PerIp>,
    /// Open WebSocket connections per route path, for routes'
    /// `max-connections`. Counted by path rather than by route version, so
    /// that a reload (which makes a new version, while `drain` keeps the old
    /// one's connections open) does not reset the count and let a route hold
    /// twice its limit.
    routes: Arc<Tally<String>>,
}

/// `max-connections-per-ip`: the open sockets per client address, and the cap.
#[derive(Clone)]
pub(crate) struct PerIp {
    tally: Arc<Tally<IpAddr>>,
    max: usize,
}

impl PerIp {
    /// Takes a place for one more connection from `ip`, unless it has the cap.
    pub(crate) fn try_acquire(&self, ip: IpAddr) -> Option<TallySlot<IpAddr>> {
        self.tally.try_acquire(ip, self.max)
    }
}

/// Why a socket was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The server has `max-connections` open: 503.
    Full,
    /// The client's address has `max-connections-per-ip` open: 429.
    PeerFull,
}

impl Limits {
    /// Caps of `max_connections` sockets, and of `per_ip` per client address.
    pub(crate) fn new(max_connections: usize, per_ip: Option<usize>) -> Limits {
        Limits {
            global: Arc::new(Semaphore::new(max_connections)),
            per_ip: per_ip.map(|max| PerIp {
                tally: Arc::default(),
                max,
            }),
            routes: Arc::default(),
        }
    }

    /// Takes a place for a socket from `ip` under every limit (`None`: a
    /// trusted proxy, whose clients are counted per request instead), or says
    /// which one is full. The address is checked first: one that is over its
    /// own limit is told so, and takes nothing from everyone's.
    pub(crate) fn admit(&self, ip: Option<IpAddr>) -> Result<Admission, Refused> {
        let peer = match (&self.per_ip, ip) {
            (Some(per_ip), Some(ip)) => Some(per_ip.try_acquire(ip).ok_or(Refused::PeerFull)?),
            _ => None,
        };
        let permit = self
            .global
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Full)?;
        Ok(Admission {
            _permit: permit,
            _peer: peer,
        })
    }

    /// `max-connections-per-ip`, for the clients a trusted proxy forwards.
    pub(crate) fn per_ip(&self) -> Option<&PerIp> {
        self.per_ip.as_ref()
    }

    /// Takes a place for one more connection on the route at `path`, unless
    /// it has `max` open. Routes without a cap are counted too (`usize::MAX`),
    /// so that a reload that sets one finds the connections already open.
    pub(crate) fn enter_route(&self, path: &str, max: usize) -> Option<TallySlot<String>> {
        self.routes.try_acquire(path.to_string(), max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_caps_each_key_and_forgets_keys_with_nothing_open() {
        let tally: Arc<Tally<&str>> = Arc::default();
        let first = tally.try_acquire("a", 2).expect("room for one");
        let _second = tally.try_acquire("a", 2).expect("room for two");
        assert!(tally.try_acquire("a", 2).is_none(), "a third past the cap");
        let other = tally.try_acquire("b", 2).expect("keys are counted apart");
        drop(first);
        let _third = tally
            .try_acquire("a", 2)
            .expect("a dropped slot makes room");
        drop(other);
        assert!(
            !tally.lock().contains_key("b"),
            "an empty key stayed behind"
        );
    }

    #[test]
    fn an_address_over_its_cap_takes_nothing_from_the_server() {
        let limits = Limits::new(2, Some(1));
        let ip: IpAddr = [127, 0, 0, 1].into();
        let _first = limits.admit(Some(ip)).expect("room for one");
        assert!(matches!(limits.admit(Some(ip)), Err(Refused::PeerFull)));
        let _proxy = limits.admit(None).expect("the server's second place");
        assert!(matches!(limits.admit(None), Err(Refused::Full)));
    }
}
