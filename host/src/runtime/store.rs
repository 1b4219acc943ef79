//! What a plugin instance's store holds: its WASI context, its connections
//! (only its own route's: a plugin can address nothing else), its timers and
//! limits, and the batch's held effects lent to the call in progress.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use rustc_hash::FxHashMap;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::berth::plugin::types;
use super::connect::{Pending, decide};
use super::handle::ConnectOutcome;
use super::limits::Limits;
use super::quarantine::Quarantine;
use super::requests::{Requests, RouteRequests};
use super::stdio::LineBudget;
use super::timers::Timers;
use crate::config;
use crate::metrics::RouteMetrics;
use crate::outbox::{ConnHandle, PushError};
use crate::pubsub::{Held, Topics};
use crate::state::State;

/// What every instance of one route shares: its name, its topic namespace and
/// config values, and the server's topics.
pub(crate) struct RouteShared {
    pub(crate) name: Arc<str>,
    /// The route's `write-queue-bytes`: no message larger than this is sent.
    pub(crate) write_queue_bytes: usize,
    /// The route's `max-topic-name`.
    pub(crate) max_topic_name: usize,
    /// The route's `max-subscriptions-per-connection`.
    pub(crate) max_subscriptions_per_connection: usize,
    /// The route's `max-subscriptions`.
    pub(crate) max_subscriptions: usize,
    /// Subscriptions the route version's connections hold, in every instance.
    pub(crate) subscriptions: AtomicUsize,
    /// The route's metrics, for the limits its plugin runs into.
    pub(crate) metrics: Arc<RouteMetrics>,
    pub(crate) namespace: Arc<str>,
    pub(crate) values: BTreeMap<String, String>,
    pub(crate) topics: Arc<Topics>,
    /// The server's state store and members.
    pub(crate) state: Arc<State>,
    /// The route's history and store bounds.
    pub(crate) rules: config::StateRules,
    /// The route version's trap record, shared by all its workers.
    pub(crate) quarantine: Quarantine,
    /// The route's outbound grant, bounds and requests in flight.
    pub(crate) requests: Arc<RouteRequests>,
}

/// One open connection as the plugin's store sees it.
pub(crate) struct ConnEntry {
    pub(super) conn: u64,
    pub(super) handle: ConnHandle,
    /// Set once the plugin has asked to close it: later sends are refused.
    pub(super) closing: bool,
    /// Its topics; dropping the entry ends its subscriptions.
    pub(super) topics: HashSet<Box<str>>,
    /// The topics it is a member of (a subset of `topics`).
    pub(super) memberships: HashSet<Box<str>>,
    pub(super) route: Arc<RouteShared>,
}

impl ConnEntry {
    /// Queues `msg` for the connection, after anything published to it
    /// earlier in the batch that `held` holds.
    pub(crate) fn push(&self, msg: WsMessage, held: &mut Held) -> Result<(), PushError> {
        held.deliver_before(self.conn);
        self.handle.push(msg, held.wakes())
    }
}

impl Drop for ConnEntry {
    fn drop(&mut self) {
        self.route
            .subscriptions
            .fetch_sub(self.topics.len(), Ordering::Relaxed);
        // The worker delivers what its batch holds before it lets an entry
        // go, so nothing is held here.
        let mut held = Held::immediate();
        for topic in &self.topics {
            self.route
                .topics
                .unsubscribe(&self.route.namespace, topic, self.conn, &mut held);
        }
        for topic in &self.memberships {
            self.route
                .state
                .leave(&self.route.namespace, topic, self.conn);
        }
    }
}

/// Everything a plugin instance's store holds.
pub(crate) struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) route: Arc<RouteShared>,
    /// The connection of the call in progress, for log tags (0 when none).
    pub(super) current_conn: Arc<AtomicU64>,
    pub(super) conns: FxHashMap<u64, ConnEntry>,
    pub(super) timers: Timers,
    pub(super) limits: Limits,
    /// The instance's log allowance, shared with its stdout and stderr.
    pub(super) log_budget: Arc<LineBudget>,
    /// The connection of each event of the `on-events` call in progress (0
    /// for a timer), to tag logs as the plugin moves through them.
    pub(super) event_conns: Vec<u64>,
    /// The event of the call in progress that the plugin said it handles.
    pub(super) handling: u32,
    /// What the worker's batch holds back, lent to each call ([`Self::lend`]).
    pub(super) held: Held,
    /// The instance's outbound requests in flight.
    pub(super) requests: Requests,
    /// Connections whose `on-connect` answered `pending`, until decided.
    pending: FxHashMap<u64, Pending>,
    /// Connections decided during the call in progress that never opened,
    /// for the worker to forget after it.
    decided: Vec<u64>,
}

impl HostState {
    /// A store's state for one instance of the route, held to `limits`.
    pub(crate) fn new(
        wasi: WasiCtx,
        route: Arc<RouteShared>,
        current_conn: Arc<AtomicU64>,
        timers: Timers,
        requests: Requests,
        limits: Limits,
        log_budget: Arc<LineBudget>,
    ) -> Self {
        HostState {
            wasi,
            table: ResourceTable::new(),
            route,
            current_conn,
            conns: FxHashMap::default(),
            timers,
            limits,
            log_budget,
            event_conns: Vec::new(),
            handling: 0,
            held: Held::immediate(),
            requests,
            pending: FxHashMap::default(),
            decided: Vec::new(),
        }
    }

    /// Swaps `held` with the store's own: the worker lends its batch's
    /// before a call and takes it back after, so that what the plugin sends
    /// and publishes keeps the batch's order.
    pub(crate) fn lend(&mut self, held: &mut Held) {
        std::mem::swap(&mut self.held, held);
    }

    /// Starts an `on-events` call whose events are about `conns`, in order:
    /// the first event is being handled until the plugin says otherwise.
    pub(crate) fn begin_events(&mut self, conns: impl Iterator<Item = u64>) {
        self.event_conns.clear();
        self.event_conns.extend(conns);
        self.handling = 0;
        self.set_current(self.event_conns.first().copied().unwrap_or(0));
    }

    /// The event the plugin last said it handles, for a call that failed.
    pub(crate) fn handled_at(&self) -> u32 {
        self.handling
    }

    /// What every instance of the route shares.
    pub(super) fn route(&self) -> &Arc<RouteShared> {
        &self.route
    }

    /// The store's resource limits, for `Store::limiter`.
    pub(crate) fn limits(&mut self) -> &mut Limits {
        &mut self.limits
    }

    /// Makes `conn` addressable by the plugin.
    pub(crate) fn add_conn(&mut self, conn: u64, handle: ConnHandle) {
        let entry = ConnEntry {
            conn,
            handle,
            closing: false,
            topics: HashSet::new(),
            memberships: HashSet::new(),
            route: self.route.clone(),
        };
        self.conns.insert(conn, entry);
    }

    /// Forgets `conn` and ends its subscriptions; returns its entry.
    pub(crate) fn remove_conn(&mut self, conn: u64) -> Option<ConnEntry> {
        self.conns.remove(&conn)
    }

    /// The instance's timers.
    pub(crate) fn timers(&mut self) -> &mut Timers {
        &mut self.timers
    }

    /// The instance's outbound requests.
    pub(crate) fn requests(&mut self) -> &mut Requests {
        &mut self.requests
    }

    /// Holds `conn`'s handshake until the plugin answers it.
    pub(crate) fn await_answer(&mut self, conn: u64, pending: Pending) {
        self.pending.insert(conn, pending);
    }

    /// Drops `conn`'s pending handshake, which gave up; false if the
    /// plugin had answered it already.
    pub(crate) fn abandon(&mut self, conn: u64) -> bool {
        self.pending.remove(&conn).is_some()
    }

    /// Answers `conn`'s pending handshake. `unknown-connection` when none
    /// waits, or when it gave up before this answer reached it.
    pub(crate) fn answer(
        &mut self,
        conn: u64,
        answer: Result<types::Accept, types::Reject>,
    ) -> Result<(), types::ConnError> {
        let pending = self
            .pending
            .remove(&conn)
            .ok_or(types::ConnError::UnknownConnection)?;
        let outcome = decide(answer, &pending.offered, &self.route, conn);
        let accepted = matches!(outcome, ConnectOutcome::Accept { .. });
        let reached = pending.reply.send(outcome).is_ok();
        if !(accepted && reached) {
            self.decided.push(conn);
        }
        if reached {
            Ok(())
        } else {
            Err(types::ConnError::UnknownConnection)
        }
    }

    /// The connections decided in the call just made that never opened.
    pub(crate) fn take_decided(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.decided)
    }

    /// Hands the route's open connections to a replacement store. Those
    /// still pending stay behind: the replacement never saw their
    /// `on-connect`, and their handshakes fail as this store goes.
    pub(crate) fn take_conns(&mut self) -> FxHashMap<u64, ConnEntry> {
        let mut conns = std::mem::take(&mut self.conns);
        conns.retain(|conn, _| !self.pending.contains_key(conn));
        conns
    }

    /// Adopts the connections of the store this one replaces.
    pub(crate) fn restore_conns(&mut self, conns: FxHashMap<u64, ConnEntry>) {
        self.conns = conns;
    }

    /// Marks which connection the next call is about, for log tags.
    pub(crate) fn set_current(&self, conn: u64) {
        self.current_conn.store(conn, Ordering::Relaxed);
    }

    /// The entry of `conn`, and what the batch holds.
    pub(super) fn entry(
        &mut self,
        conn: u64,
    ) -> Result<(&mut ConnEntry, &mut Held), types::ConnError> {
        let entry = self
            .conns
            .get_mut(&conn)
            .ok_or(types::ConnError::UnknownConnection)?;
        if entry.closing {
            return Err(types::ConnError::Closing);
        }
        Ok((entry, &mut self.held))
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
