//! The host side of the contract: what a plugin's imports do. Each store holds
//! the connections of its own route and nothing else, so a plugin can address
//! only those; any other id is `unknown-connection`.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustc_hash::FxHashMap;

use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::berth::plugin::{host, types};
use super::limits::Limits;
use super::stdio::{LineBudget, MAX_LINE};
use super::timers::Timers;
use crate::config;
use crate::metrics::{Limit, RouteMetrics};
use crate::outbox::{ConnHandle, PushError};
use crate::pubsub::{Broker, Held};
use crate::state::{Entry, State};

/// What every instance of one route shares: its name, its topic namespace and
/// config values, and the server's broker.
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
    pub(crate) broker: Arc<Broker>,
    /// The server's state store and members.
    pub(crate) state: Arc<State>,
    /// The route's history and store bounds.
    pub(crate) rules: config::StateRules,
    /// The route version's trap record, shared by all its workers.
    pub(crate) quarantine: Quarantine,
}

/// Counts a route version's traps; too many within the window quarantine it.
pub(crate) struct Quarantine {
    rule: config::Quarantine,
    traps: Mutex<VecDeque<Instant>>,
    tripped: AtomicBool,
}

impl Quarantine {
    /// A clean record under `rule`.
    pub(crate) fn new(rule: config::Quarantine) -> Self {
        Quarantine {
            rule,
            traps: Mutex::new(VecDeque::new()),
            tripped: AtomicBool::new(false),
        }
    }

    /// Notes a trap; true if this one put the route in quarantine.
    pub(crate) fn record_trap(&self) -> bool {
        if self.rule.traps == 0 || self.is_tripped() {
            return false;
        }
        let now = Instant::now();
        let mut traps = self.traps.lock().unwrap_or_else(|e| e.into_inner());
        while traps
            .front()
            .is_some_and(|&at| now.duration_since(at) > self.rule.window)
        {
            traps.pop_front();
        }
        traps.push_back(now);
        if traps.len() >= self.rule.traps as usize {
            self.tripped.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Whether new connections are refused.
    pub(crate) fn is_tripped(&self) -> bool {
        self.tripped.load(Ordering::Relaxed)
    }

    /// The rule, for messages.
    pub(crate) fn rule(&self) -> config::Quarantine {
        self.rule
    }
}

/// The longest close reason that fits in a close frame (125 bytes less the code).
const MAX_CLOSE_REASON: usize = 123;

/// One open connection as the plugin's store sees it.
pub(crate) struct ConnEntry {
    conn: u64,
    handle: ConnHandle,
    /// Set once the plugin has asked to close it: later sends are refused.
    closing: bool,
    /// Its topics; dropping the entry ends its subscriptions.
    topics: HashSet<Box<str>>,
    /// The topics it is a member of (a subset of `topics`).
    memberships: HashSet<Box<str>>,
    route: Arc<RouteShared>,
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
                .broker
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
    wasi: WasiCtx,
    table: ResourceTable,
    route: Arc<RouteShared>,
    /// The connection of the call in progress, for log tags (0 when none).
    current_conn: Arc<AtomicU64>,
    conns: FxHashMap<u64, ConnEntry>,
    timers: Timers,
    limits: Limits,
    /// The instance's log allowance, shared with its stdout and stderr.
    log_budget: Arc<LineBudget>,
    /// The connection of each event of the `on-events` call in progress (0
    /// for a timer), to tag logs as the plugin moves through them.
    event_conns: Vec<u64>,
    /// The event of the call in progress that the plugin said it handles.
    handling: u32,
    /// What the worker's batch holds back, lent to each call ([`Self::lend`]).
    held: Held,
}

impl HostState {
    /// A store's state for one instance of the route, held to `limits`.
    pub(crate) fn new(
        wasi: WasiCtx,
        route: Arc<RouteShared>,
        current_conn: Arc<AtomicU64>,
        timers: Timers,
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

    /// Hands the route's connections to a replacement store.
    pub(crate) fn take_conns(&mut self) -> FxHashMap<u64, ConnEntry> {
        std::mem::take(&mut self.conns)
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
    fn entry(&mut self, conn: u64) -> Result<(&mut ConnEntry, &mut Held), types::ConnError> {
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

fn conn_error(err: PushError) -> types::ConnError {
    match err {
        PushError::Full => types::ConnError::QueueFull,
        PushError::TooLarge => types::ConnError::TooLarge,
        PushError::Gone => types::ConnError::Closing,
    }
}

/// A plugin's message as a WebSocket message, or `None` if its text is not
/// UTF-8 or its Latin-1 string has a character above U+00FF. The bytes move;
/// only a Latin-1 string with characters above U+007F is decoded into new ones.
fn to_wire(msg: types::Message) -> Option<WsMessage> {
    Some(match msg {
        types::Message::Text(text) => WsMessage::Text(text.into()),
        types::Message::TextUtf8(bytes) => WsMessage::Text(String::from_utf8(bytes).ok()?.into()),
        types::Message::Binary(bytes) => WsMessage::Binary(bytes.into()),
        types::Message::BinaryLatin1(text) => WsMessage::Binary(latin1(text)?.into()),
    })
}

/// `msg` as a history entry with its position written at `position_at`;
/// `None` if that offset is past the end or inside a character.
fn history_entry(msg: &WsMessage, position_at: Option<u32>) -> Option<Entry<'_>> {
    let (text, data): (bool, &[u8]) = match msg {
        WsMessage::Text(text) => (true, text.as_bytes()),
        WsMessage::Binary(bytes) => (false, bytes),
        _ => (false, &[]),
    };
    let position_at = position_at.map(|at| at as usize);
    if let Some(at) = position_at {
        let fits = match msg {
            WsMessage::Text(text) => text.is_char_boundary(at),
            _ => at <= data.len(),
        };
        if !fits {
            return None;
        }
    }
    Some(Entry {
        text,
        data,
        position_at,
    })
}

/// The bytes whose characters `text` holds, if each is below U+0100.
fn latin1(text: String) -> Option<Vec<u8>> {
    if text.is_ascii() {
        return Some(text.into_bytes());
    }
    text.chars().map(|c| u8::try_from(c).ok()).collect()
}

/// Cuts `reason` to what fits in a close frame, at a character boundary.
fn close_reason(mut reason: String) -> String {
    reason.truncate(super::cut(&reason, MAX_CLOSE_REASON).len());
    reason
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn send(
        &mut self,
        conn: u64,
        msg: types::Message,
    ) -> wasmtime::Result<Result<(), types::ConnError>> {
        let (entry, held) = match self.entry(conn) {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        let Some(msg) = to_wire(msg) else {
            return Ok(Err(types::ConnError::InvalidMessage));
        };
        let pushed = entry.push(msg, held);
        if pushed == Err(PushError::TooLarge) {
            self.route.metrics.limit_hit(Limit::WriteQueueBytes);
        }
        Ok(pushed.map_err(conn_error))
    }

    fn close(
        &mut self,
        conn: u64,
        code: u16,
        reason: String,
    ) -> wasmtime::Result<Result<(), types::ConnError>> {
        if !crate::close_code::sendable(code) {
            return Ok(Err(types::ConnError::InvalidCode));
        }
        // tungstenite names no 1014 (it is `Bad(1014)` there), but writes
        // any code as its number.
        let code = CloseCode::from(code);
        let (entry, held) = match self.entry(conn) {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        let frame = CloseFrame {
            code,
            reason: close_reason(reason).into(),
        };
        let result = entry.push(WsMessage::Close(Some(frame)), held);
        entry.closing = true;
        Ok(result.map_err(conn_error))
    }

    fn subscribe(
        &mut self,
        conn: u64,
        topic: String,
        member: Option<String>,
    ) -> wasmtime::Result<Result<(), types::ConnError>> {
        // Names are kept per subscription and per topic, and every
        // subscription is an entry in two maps: the host bounds both.
        if topic.len() > self.route.max_topic_name {
            self.route.metrics.limit_hit(Limit::TopicName);
            return Ok(Err(types::ConnError::TooLarge));
        }
        if member
            .as_ref()
            .is_some_and(|m| m.len() > self.route.rules.max_member)
        {
            self.route.metrics.limit_hit(Limit::MaxMember);
            return Ok(Err(types::ConnError::TooLarge));
        }
        let (entry, held) = match self.entry(conn) {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        if !entry.topics.contains(topic.as_str()) {
            let route = &entry.route;
            if entry.topics.len() >= route.max_subscriptions_per_connection {
                route.metrics.limit_hit(Limit::SubscriptionsPerConnection);
                return Ok(Err(types::ConnError::TooManySubscriptions));
            }
            let taken =
                route
                    .subscriptions
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        (n < route.max_subscriptions).then_some(n + 1)
                    });
            if taken.is_err() {
                route.metrics.limit_hit(Limit::Subscriptions);
                return Ok(Err(types::ConnError::TooManySubscriptions));
            }
            let handle = entry.handle.clone();
            route
                .broker
                .subscribe(&route.namespace, &topic, conn, handle, held);
            entry.topics.insert(topic.as_str().into());
        }
        let route = &entry.route;
        match member {
            Some(info) => {
                route.state.join(&route.namespace, &topic, conn, &info);
                entry.memberships.insert(topic.into());
            }
            None => {
                if entry.memberships.remove(topic.as_str()) {
                    route.state.leave(&route.namespace, &topic, conn);
                }
            }
        }
        Ok(Ok(()))
    }

    fn unsubscribe(
        &mut self,
        conn: u64,
        topic: String,
    ) -> wasmtime::Result<Result<(), types::ConnError>> {
        if topic.len() > self.route.max_topic_name {
            self.route.metrics.limit_hit(Limit::TopicName);
            return Ok(Err(types::ConnError::TooLarge));
        }
        let entry = match self.conns.get_mut(&conn) {
            Some(entry) => entry,
            None => return Ok(Err(types::ConnError::UnknownConnection)),
        };
        if entry.topics.remove(topic.as_str()) {
            let route = &entry.route;
            route.subscriptions.fetch_sub(1, Ordering::Relaxed);
            route
                .broker
                .unsubscribe(&route.namespace, &topic, conn, &mut self.held);
            if entry.memberships.remove(topic.as_str()) {
                route.state.leave(&route.namespace, &topic, conn);
            }
        }
        Ok(Ok(()))
    }

    fn publish(
        &mut self,
        topic: String,
        msg: types::Message,
        exclude: Option<u64>,
        position_at: Option<u32>,
    ) -> wasmtime::Result<Result<types::Published, types::PublishError>> {
        let Some(msg) = to_wire(msg) else {
            return Ok(Err(types::PublishError::InvalidMessage));
        };
        let route = &self.route;
        if topic.len() > route.max_topic_name {
            route.metrics.limit_hit(Limit::TopicName);
            return Ok(Err(types::PublishError::TooLarge));
        }
        if msg.len() > route.write_queue_bytes {
            route.metrics.limit_hit(Limit::WriteQueueBytes);
            return Ok(Err(types::PublishError::TooLarge));
        }
        // Stored before anyone gets it, so that no subscriber holds a
        // message a later history read would not find.
        let mut msg = msg;
        let position = if route.rules.history_size > 0 {
            let entry = match history_entry(&msg, position_at) {
                Some(entry) => entry,
                None => return Ok(Err(types::PublishError::InvalidMessage)),
            };
            let stored = route
                .state
                .append(&route.namespace, &topic, entry, &route.rules);
            match stored {
                Ok((p, composed)) => {
                    if let Some(bytes) = composed {
                        msg = match entry.text {
                            // An ASCII position put at a character boundary.
                            true => {
                                WsMessage::Text(String::from_utf8(bytes).unwrap_or_default().into())
                            }
                            false => WsMessage::Binary(bytes.into()),
                        };
                    }
                    Some(types::Position {
                        epoch: p.epoch,
                        seq: p.seq,
                    })
                }
                Err(e) => {
                    if e == crate::state::StateError::HistoryTopics {
                        route.metrics.limit_hit(Limit::HistoryTopics);
                    }
                    return Ok(Err(types::PublishError::NotStored));
                }
            }
        } else {
            None
        };
        let subscribers =
            route
                .broker
                .publish(&route.namespace, &topic, msg, exclude, &mut self.held);
        Ok(Ok(types::Published {
            subscribers,
            position,
        }))
    }

    fn set_timer(
        &mut self,
        delay_ms: u32,
        repeat: bool,
        token: u64,
    ) -> wasmtime::Result<Result<u64, types::TimerError>> {
        let id = self.timers.set(delay_ms, repeat, token);
        if id.is_none() {
            self.route.metrics.limit_hit(Limit::Timers);
        }
        Ok(id.ok_or(types::TimerError::TooManyTimers))
    }

    fn cancel_timer(&mut self, id: u64) -> wasmtime::Result<bool> {
        Ok(self.timers.cancel(id))
    }

    fn config_get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        // No configured key is longer (the config refuses them), so a longer
        // one is a plugin probing the host: it is answered without a lookup.
        if key.len() > config::defaults::MAX_CONFIG_KEY {
            self.route.metrics.limit_hit(Limit::ConfigKey);
            return Ok(None);
        }
        Ok(self.route.values.get(&key).cloned())
    }

    fn log(&mut self, level: types::LogLevel, message: String) -> wasmtime::Result<()> {
        if !self.log_budget.take() {
            self.route.metrics.limit_hit(Limit::LogLines);
            return Ok(());
        }
        let message = super::cut(&message, MAX_LINE);
        let conn = self.current_conn.load(Ordering::Relaxed);
        let route = &*self.route.name;
        match level {
            types::LogLevel::Trace => {
                tracing::trace!(target: "berth::plugin", route, conn, "{message}")
            }
            types::LogLevel::Debug => {
                tracing::debug!(target: "berth::plugin", route, conn, "{message}")
            }
            types::LogLevel::Info => {
                tracing::info!(target: "berth::plugin", route, conn, "{message}")
            }
            types::LogLevel::Warn => {
                tracing::warn!(target: "berth::plugin", route, conn, "{message}")
            }
            types::LogLevel::Error => {
                tracing::error!(target: "berth::plugin", route, conn, "{message}")
            }
        }
        Ok(())
    }

    fn handling(&mut self, index: u32) -> wasmtime::Result<()> {
        // An index past the batch is the plugin's mistake; it tags nothing.
        if let Some(&conn) = self.event_conns.get(index as usize) {
            self.handling = index;
            self.set_current(conn);
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::{close_reason, latin1, to_wire, types};
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    #[test]
    fn every_way_of_carrying_a_message_reaches_the_wire_intact() {
        let all: Vec<u8> = (0..=255).collect();
        let as_latin1: String = all.iter().map(|&b| char::from(b)).collect();
        assert_eq!(latin1(as_latin1.clone()), Some(all.clone()));
        assert_eq!(
            to_wire(types::Message::BinaryLatin1(as_latin1)),
            Some(WsMessage::Binary(all.clone().into()))
        );
        assert_eq!(latin1("ascii only".into()), Some(b"ascii only".to_vec()));
        assert_eq!(latin1("€".into()), None, "U+20AC is not a byte");
        assert_eq!(
            to_wire(types::Message::TextUtf8("héllo".as_bytes().to_vec())),
            Some(WsMessage::Text("héllo".into()))
        );
        assert_eq!(to_wire(types::Message::TextUtf8(vec![0xff, 0x41])), None);
        assert_eq!(
            to_wire(types::Message::Text("t".into())),
            Some(WsMessage::Text("t".into()))
        );
        assert_eq!(
            to_wire(types::Message::Binary(all.clone())),
            Some(WsMessage::Binary(all.into()))
        );
    }

    #[test]
    fn close_reason_is_cut_at_a_char_boundary() {
        let long = "é".repeat(100); // 200 bytes
        let cut = close_reason(long);
        assert!(cut.len() <= 123);
        assert_eq!(cut.len(), 122);
        let exact = "x".repeat(123);
        assert_eq!(close_reason(exact.clone()), exact);
        // A three-byte character ending at byte 123 stays whole.
        let euro = format!("{}€€", "x".repeat(120));
        assert_eq!(close_reason(euro), format!("{}€", "x".repeat(120)));
    }
}
