//! Prometheus metrics: the registry, every metric berth exports, and the
//! handles the rest of the server counts with.
//!
//! Label sets are resolved once, when a route version is made or the server
//! starts, into plain handles ([`RouteMetrics`], one counter per rejection
//! reason), so that counting on a hot path is an atomic add on a handle at
//! hand, never a lookup by label. A connection counts its own traffic in
//! plain integers ([`Traffic`]) and adds it to its route's counters once per
//! batch of frames, so that a fan-out to a thousand subscribers does not
//! contend on one shared counter per message per subscriber.
//!
//! Each server has its own registry (two servers in one process, as in the
//! tests, count apart), exposed in the Prometheus text format at `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::upgrade::Refusal;

/// The `Content-Type` of what [`Metrics::encode`] writes: the Prometheus text
/// format, version 0.0.4.
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds of the plugin call duration buckets, in seconds: a call into
/// a small plugin takes about a microsecond, and `call-timeout` stops one at a
/// second by default (more if a route allows it).
const CALL_BUCKETS: [f64; 18] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The labels of a per-route series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

/// The labels of a plugin call duration series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    route: String,
    export: &'static str,
}

/// The labels of a plugin limit series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    route: String,
    limit: &'static str,
}

/// A bound a plugin's host call ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    /// A message larger than the connection's `write-queue-bytes`.
    WriteQueueBytes,
    /// A topic name longer than the route's `max-topic-name`.
    TopicName,
    /// A subscription past a connection's `max-subscriptions-per-connection`.
    SubscriptionsPerConnection,
    /// A subscription past the route's `max-subscriptions`.
    Subscriptions,
    /// A `config-get` key longer than any key the config may hold.
    ConfigKey,
    /// A timer past the instance's live timers.
    Timers,
    /// A `log` line past the instance's rate (stdout and stderr share it).
    LogLines,
    /// An `on-connect` refusal whose reason was cut to fit an HTTP body.
    RejectReason,
    /// A member description longer than the route's `max-member`.
    MaxMember,
    /// A store key longer than 256 bytes.
    MaxKey,
    /// A stored value longer than the route's `max-value`.
    MaxValue,
    /// A store write past the namespace's `store-keys`.
    StoreKeys,
    /// A store write past the namespace's `store-bytes`.
    StoreBytes,
    /// A publish that would start history for a topic past the namespace's `history-topics`.
    HistoryTopics,
}

impl Limit {
    const ALL: [Limit; 14] = [
        Limit::WriteQueueBytes,
        Limit::TopicName,
        Limit::SubscriptionsPerConnection,
        Limit::Subscriptions,
        Limit::ConfigKey,
        Limit::Timers,
        Limit::LogLines,
        Limit::RejectReason,
        Limit::MaxMember,
        Limit::MaxKey,
        Limit::MaxValue,
        Limit::StoreKeys,
        Limit::StoreBytes,
        Limit::HistoryTopics,
    ];

    /// The value of the `limit` label: the config key that sets the bound,
    /// or the bound's own name where it is fixed.
    fn label(self) -> &'static str {
        match self {
            Limit::WriteQueueBytes => "write_queue_bytes",
            Limit::TopicName => "max_topic_name",
            Limit::SubscriptionsPerConnection => "max_subscriptions_per_connection",
            Limit::Subscriptions => "max_subscriptions",
            Limit::ConfigKey => "config_key",
            Limit::Timers => "timers",
            Limit::LogLines => "log_lines",
            Limit::RejectReason => "reject_reason",
            Limit::MaxMember => "max_member",
            Limit::MaxKey => "max_key",
            Limit::MaxValue => "max_value",
            Limit::StoreKeys => "store_keys",
            Limit::StoreBytes => "store_bytes",
            Limit::HistoryTopics => "history_topics",
        }
    }
}

/// The label of a rejection series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The label of a Redis connection series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabel {
    connection: &'static str,
}

/// The label of the series of publishes that did not reach Redis.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnsentLabel {
    reason: &'static str,
}

/// The label of a publish API series: the HTTP status of the answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

/// The label of a reload series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// The `kind` label of the events a plugin is handed, in the order counted.
const EVENT_KINDS: [&str; 3] = ["message", "close", "timer"];

/// The labels of the plugin events counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    route: String,
    kind: &'static str,
}

/// A plugin export whose calls are timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Export {
    /// `on-connect`.
    Connect,
    /// `on-events`: one call per batch of messages, closes and timer firings.
    Events,
}

impl Export {
    const ALL: [Export; 2] = [Export::Connect, Export::Events];

    /// The value of the `export` label.
    fn label(self) -> &'static str {
        match self {
            Export::Connect => "on_connect",
            Export::Events => "on_events",
        }
    }
}

/// Why a socket or an upgrade request did not become a WebSocket connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// The host's own checks of the upgrade request said no.
    Refused(Refusal),
    /// No route at the path: 404.
    NoRoute,
    /// The server's `max-connections` reached: 503 at accept.
    ServerFull,
    /// The client address's `max-connections-per-ip` reached: 429.
    PeerFull,
    /// A request head over the size limit: 431 (or 414 for a long URI).
    HeadTooLarge,
    /// A request head that is not HTTP/1.1: 400 from hyper.
    BadRequest,
    /// No complete request head within `handshake-timeout` (a slow or stalled
    /// client, or a kept-alive socket left idle): the socket is closed.
    HeadTimeout,
    /// No valid PROXY header (in time) on a `proxy-protocol` listener: dropped.
    ProxyHeader,
    /// The TLS handshake failed or did not finish in time: dropped.
    Tls,
    /// The plugin's `on-connect` rejected the request, with its own status.
    PluginReject,
    /// The plugin's `on-connect` failed or broke the contract: 500.
    PluginFailed,
    /// The plugin did not answer before the handshake deadline: 503.
    PluginTimeout,
    /// No plugin instance could serve the connection (the pool is full, or
    /// the route's workers are gone): 503.
    NoInstance,
    /// The route is quarantined: 503.
    Quarantined,
}

impl Rejection {
    /// Every rejection but the host's refusals ([`Refusal::ALL`]), in the
    /// order of their counters.
    const OTHERS: [Rejection; 13] = [
        Rejection::NoRoute,
        Rejection::ServerFull,
        Rejection::PeerFull,
        Rejection::HeadTooLarge,
        Rejection::BadRequest,
        Rejection::HeadTimeout,
        Rejection::ProxyHeader,
        Rejection::Tls,
        Rejection::PluginReject,
        Rejection::PluginFailed,
        Rejection::PluginTimeout,
        Rejection::NoInstance,
        Rejection::Quarantined,
    ];

    /// The number of rejection series.
    const COUNT: usize = Refusal::ALL.len() + Rejection::OTHERS.len();

    /// Every rejection, in the order of their counters.
    fn all() -> impl Iterator<Item = Rejection> {
        Refusal::ALL
            .into_iter()
            .map(Rejection::Refused)
            .chain(Rejection::OTHERS)
    }

    /// Where this rejection's counter is: its place in [`Rejection::all`].
    fn index(self) -> usize {
        match self {
            Rejection::Refused(refusal) => refusal as usize,
            other => {
                Refusal::ALL.len()
                    + Rejection::OTHERS
                        .iter()
                        .position(|r| *r == other)
                        .expect("OTHERS lists every other rejection")
            }
        }
    }

    /// The value of the `reason` label.
    fn label(self) -> &'static str {
        match self {
            Rejection::Refused(refusal) => refusal.label(),
            Rejection::NoRoute => "no_route",
            Rejection::ServerFull => "server_full",
            Rejection::PeerFull => "peer_full",
            Rejection::HeadTooLarge => "head_too_large",
            Rejection::BadRequest => "bad_request",
            Rejection::HeadTimeout => "head_timeout",
            Rejection::ProxyHeader => "proxy_header",
            Rejection::Tls => "tls",
            Rejection::PluginReject => "plugin_reject",
            Rejection::PluginFailed => "plugin_failed",
            Rejection::PluginTimeout => "plugin_timeout",
            Rejection::NoInstance => "no_instance",
            Rejection::Quarantined => "quarantined",
        }
    }
}

/// Whether a new route version could be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reload {
    /// A new version serves.
    Ok,
    /// A plugin or config file could not be used; what ran before stays.
    Failed,
}

impl Reload {
    const ALL: [Reload; 2] = [Reload::Ok, Reload::Failed];

    /// The value of the `result` label.
    fn label(self) -> &'static str {
        match self {
            Reload::Ok => "ok",
            Reload::Failed => "failed",
        }
    }
}

/// One server's registry and metric families.
pub(crate) struct Metrics {
    registry: Registry,
    connections_open: Family<RouteLabel, Gauge>,
    plugin_memory: Family<RouteLabel, Gauge>,
    queued_bytes: Family<RouteLabel, Gauge>,
    limit_hits: Family<LimitLabels, Counter>,
    connections: Family<RouteLabel, Counter>,
    messages_received: Family<RouteLabel, Counter>,
    messages_sent: Family<RouteLabel, Counter>,
    received_bytes: Family<RouteLabel, Counter>,
    sent_bytes: Family<RouteLabel, Counter>,
    sent_wire_bytes: Family<RouteLabel, Counter>,
    calls: Family<CallLabels, Histogram, fn() -> Histogram>,
    events: Family<EventLabels, Counter>,
    traps: Family<RouteLabel, Counter>,
    quarantines: Family<RouteLabel, Counter>,
    slow_consumer_closes: Family<RouteLabel, Counter>,
    heartbeat_timeouts: Family<RouteLabel, Counter>,
    /// Indexed by [`Reload`].
    reloads: [Counter; Reload::ALL.len()],
    /// Indexed by [`Rejection::index`].
    rejections: [Counter; Rejection::COUNT],
    /// Publish API answers, by status.
    publish_requests: Family<StatusLabel, Counter>,
}

/// A new plugin call duration series, for the family's constructor.
fn call_histogram() -> Histogram {
    Histogram::new(CALL_BUCKETS)
}

impl Metrics {
    /// A registry with every metric registered, at zero.
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("berth");
        let connections_open = Family::default();
        registry.register(
            "connections_open",
            "WebSocket connections open now",
            connections_open.clone(),
        );
        let plugin_memory = Family::default();
        registry.register_with_unit(
            "plugin_memory",
            "Linear memory the route's plugin instances hold now, all versions together",
            Unit::Bytes,
            plugin_memory.clone(),
        );
        let queued_bytes = Family::default();
        registry.register_with_unit(
            "queued",
            "Payload bytes the route's connections hold for their clients, until the socket takes them",
            Unit::Bytes,
            queued_bytes.clone(),
        );
        let limit_hits = Family::default();
        registry.register(
            "plugin_limit_hits",
            "Host calls of the route's plugin refused or cut short by a bound, by the bound",
            limit_hits.clone(),
        );
        let connections = Family::default();
        registry.register(
            "connections",
            "WebSocket connections opened (101 answered and upgraded)",
            connections.clone(),
        );
        let messages_received = Family::default();
        registry.register(
            "messages_received",
            "Data messages (text and binary) received from clients",
            messages_received.clone(),
        );
        let messages_sent = Family::default();
        registry.register(
            "messages_sent",
            "Data messages (text and binary) written to clients",
            messages_sent.clone(),
        );
        let received_bytes = Family::default();
        registry.register_with_unit(
            "received",
            "Payload bytes of the data messages received from clients",
            Unit::Bytes,
            received_bytes.clone(),
        );
        let sent_bytes = Family::default();
        registry.register_with_unit(
            "sent",
            "Payload bytes of the data messages written to clients",
            Unit::Bytes,
            sent_bytes.clone(),
        );
        let sent_wire_bytes = Family::default();
        registry.register_with_unit(
            "sent_wire",
            "Payload bytes of the data messages written to clients as they went on the wire: compressed where compressed",
            Unit::Bytes,
            sent_wire_bytes.clone(),
        );
        let calls = Family::new_with_constructor(call_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "plugin_call_duration",
            "Time spent in one call into a plugin export, failed calls included",
            Unit::Seconds,
            calls.clone(),
        );
        let events = Family::default();
        registry.register(
            "plugin_events",
            "Events handed to a plugin in its on-events calls, by kind (message, close, timer)",
            events.clone(),
        );
        let traps = Family::default();
        registry.register(
            "plugin_traps",
            "Plugin calls that failed: a trap, call-timeout, max-memory, a stack overflow",
            traps.clone(),
        );
        let quarantines = Family::default();
        registry.register(
            "quarantines",
            "Times a route version was quarantined for failing too often",
            quarantines.clone(),
        );
        let slow_consumer_closes = Family::default();
        registry.register(
            "slow_consumer_closes",
            "Connections closed with 1013 because their write-queue was full",
            slow_consumer_closes.clone(),
        );
        let heartbeat_timeouts = Family::default();
        registry.register(
            "heartbeat_timeouts",
            "Connections dropped for not answering a ping within pong-timeout",
            heartbeat_timeouts.clone(),
        );
        let reload_family = Family::<ResultLabel, Counter>::default();
        registry.register(
            "reloads",
            "Route versions made after startup (ok), and plugin or config files that could not be used (failed)",
            reload_family.clone(),
        );
        let reloads = Reload::ALL.map(|result| {
            reload_family.get_or_create_owned(&ResultLabel {
                result: result.label(),
            })
        });
        let rejection_family = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "handshake_rejections",
            "Sockets and upgrade requests that did not become WebSocket connections, by reason",
            rejection_family.clone(),
        );
        let rejections = std::array::from_fn(|index| {
            let reason = Rejection::all().nth(index).expect("COUNT rejections");
            rejection_family.get_or_create_owned(&ReasonLabel {
                reason: reason.label(),
            })
        });
        let publish_requests = Family::default();
        registry.register(
            "publish_requests",
            "Requests to the publish API (POST /publish/NAMESPACE/TOPIC), by the HTTP status answered",
            publish_requests.clone(),
        );
        Metrics {
            registry,
            connections_open,
            plugin_memory,
            queued_bytes,
            limit_hits,
            connections,
            messages_received,
            messages_sent,
            received_bytes,
            sent_bytes,
            sent_wire_bytes,
            calls,
            events,
            traps,
            quarantines,
            slow_consumer_closes,
            heartbeat_timeouts,
            reloads,
            rejections,
            publish_requests,
        }
    }

    /// The handles one version of the route at `path` counts with. Versions
    /// of the same path share their series: a reload does not reset them.
    pub(crate) fn route(&self, path: &str) -> RouteMetrics {
        let label = RouteLabel {
            route: path.to_string(),
        };
        let per_route = |family: &Family<RouteLabel, Counter>| family.get_or_create_owned(&label);
        RouteMetrics {
            connections_open: self.connections_open.get_or_create_owned(&label),
            plugin_memory: self.plugin_memory.get_or_create_owned(&label),
            queued_bytes: self.queued_bytes.get_or_create_owned(&label),
            limit_hits: Limit::ALL.map(|limit| {
                self.limit_hits.get_or_create_owned(&LimitLabels {
                    route: path.to_string(),
                    limit: limit.label(),
                })
            }),
            connections: per_route(&self.connections),
            messages_received: per_route(&self.messages_received),
            messages_sent: per_route(&self.messages_sent),
            received_bytes: per_route(&self.received_bytes),
            sent_bytes: per_route(&self.sent_bytes),
            sent_wire_bytes: per_route(&self.sent_wire_bytes),
            calls: Export::ALL.map(|export| {
                self.calls.get_or_create_owned(&CallLabels {
                    route: path.to_string(),
                    export: export.label(),
                })
            }),
            events: EVENT_KINDS.map(|kind| {
                self.events.get_or_create_owned(&EventLabels {
                    route: path.to_string(),
                    kind,
                })
            }),
            traps: per_route(&self.traps),
            quarantines: per_route(&self.quarantines),
            slow_consumer_closes: per_route(&self.slow_consumer_closes),
            heartbeat_timeouts: per_route(&self.heartbeat_timeouts),
        }
    }

    /// Counts a socket or upgrade request that was turned away.
    pub(crate) fn rejected(&self, reason: Rejection) {
        self.rejections[reason.index()].inc();
    }

    /// Counts `count` reloads that ended with `result`.
    pub(crate) fn reloaded(&self, result: Reload, count: u64) {
        if count != 0 {
            self.reloads[result as usize].inc_by(count);
        }
    }

    /// Counts one answer of the publish API. Not a hot path: one family
    /// lookup per HTTP request.
    pub(crate) fn publish_answered(&self, status: u16) {
        self.publish_requests
            .get_or_create(&StatusLabel { status })
            .inc();
    }

    /// Registers the Redis link's metrics (only a node with `[broker]` has
    /// them) and returns the handles it counts with.
    pub(crate) fn register_broker(&mut self) -> BrokerMetrics {
        let connected = Family::<ConnectionLabel, Gauge>::default();
        self.registry.register(
            "broker_connected",
            "1 while the connection to Redis is up, 0 while berth is reconnecting",
            connected.clone(),
        );
        let reconnects = Family::<ConnectionLabel, Counter>::default();
        self.registry.register(
            "broker_reconnects",
            "Connections to Redis made again after one was lost or could not be made at startup",
            reconnects.clone(),
        );
        let sent = Counter::default();
        self.registry.register(
            "broker_sent",
            "Publishes made on this node and sent to Redis for the other nodes",
            sent.clone(),
        );
        let received = Counter::default();
        self.registry.register(
            "broker_received",
            "Publishes made on other nodes that arrived from Redis for subscribers here",
            received.clone(),
        );
        let unsent = Family::<UnsentLabel, Counter>::default();
        self.registry.register(
            "broker_unsent",
            "Publishes made on this node that reached its own subscribers only: Redis was unreachable, or the queue to it was full",
            unsent.clone(),
        );
        let foreign = Counter::default();
        self.registry.register(
            "broker_foreign",
            "Payloads on berth's Redis channels that berth did not write, dropped",
            foreign.clone(),
        );
        let by_connection = |connection| ConnectionLabel { connection };
        let unsent_for = |reason| unsent.get_or_create_owned(&UnsentLabel { reason });
        BrokerMetrics {
            publish_connected: connected.get_or_create_owned(&by_connection("publish")),
            subscribe_connected: connected.get_or_create_owned(&by_connection("subscribe")),
            publish_reconnects: reconnects.get_or_create_owned(&by_connection("publish")),
            subscribe_reconnects: reconnects.get_or_create_owned(&by_connection("subscribe")),
            sent,
            received,
            unreachable: unsent_for("unreachable"),
            queue_full: unsent_for("queue_full"),
            foreign,
        }
    }

    /// Every metric in the Prometheus text format ([`CONTENT_TYPE`]).
    pub(crate) fn encode(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}

/// The metric handles of one route, resolved once per route version.
pub(crate) struct RouteMetrics {
    connections_open: Gauge,
    /// Linear memory held by the route's instances, kept by their limiters.
    pub(crate) plugin_memory: Gauge,
    /// Payload bytes held for the route's clients, kept by their outboxes.
    pub(crate) queued_bytes: Gauge,
    /// Indexed by [`Limit`].
    limit_hits: [Counter; Limit::ALL.len()],
    connections: Counter,
    messages_received: Counter,
    messages_sent: Counter,
    received_bytes: Counter,
    sent_bytes: Counter,
    sent_wire_bytes: Counter,
    /// Indexed by [`Export`].
    calls: [Histogram; Export::ALL.len()],
    /// Events handed over, indexed as [`EVENT_KINDS`].
    events: [Counter; EVENT_KINDS.len()],
    /// Failed plugin calls.
    pub(crate) traps: Counter,
    /// Quarantines entered.
    pub(crate) quarantines: Counter,
    /// Connections closed with 1013.
    pub(crate) slow_consumer_closes: Counter,
    /// Connections dropped for an unanswered ping.
    pub(crate) heartbeat_timeouts: Counter,
}

impl RouteMetrics {
    /// Records how long one call into `export` took.
    pub(crate) fn observe_call(&self, export: Export, took: Duration) {
        self.calls[export as usize].observe(took.as_secs_f64());
    }

    /// Counts a host call refused by `limit`.
    pub(crate) fn limit_hit(&self, limit: Limit) {
        self.limit_hits[limit as usize].inc();
    }

    /// Counts the messages, closes and timer firings of one `on-events` call.
    pub(crate) fn delivered(&self, counts: [u64; EVENT_KINDS.len()]) {
        for (counter, count) in self.events.iter().zip(counts) {
            if count != 0 {
                counter.inc_by(count);
            }
        }
    }

    /// Counts a connection that has opened; it counts as open until the
    /// returned guard is dropped.
    pub(crate) fn opened(&self) -> OpenConnection {
        self.connections.inc();
        self.connections_open.inc();
        OpenConnection {
            open: self.connections_open.clone(),
        }
    }
}

/// The Redis link's metric handles, resolved once at startup.
#[derive(Clone)]
pub(crate) struct BrokerMetrics {
    /// 1 while the publishing connection is up.
    pub(crate) publish_connected: Gauge,
    /// 1 while the subscribing connection is up.
    pub(crate) subscribe_connected: Gauge,
    /// Publishing connections made again.
    pub(crate) publish_reconnects: Counter,
    /// Subscribing connections made again.
    pub(crate) subscribe_reconnects: Counter,
    /// Publishes sent to Redis.
    pub(crate) sent: Counter,
    /// Other nodes' publishes that arrived.
    pub(crate) received: Counter,
    /// Publishes not sent because Redis was unreachable.
    pub(crate) unreachable: Counter,
    /// Publishes dropped from a full queue to Redis.
    pub(crate) queue_full: Counter,
    /// Payloads that were not berth's envelopes.
    pub(crate) foreign: Counter,
}

/// One open connection in its route's `connections_open` gauge.
pub(crate) struct OpenConnection {
    open: Gauge,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Data messages and their payload bytes, counted by one connection in one
/// direction and not yet added to its route's counters.
#[derive(Default)]
pub(crate) struct Traffic {
    messages: u64,
    bytes: u64,
    /// The same payloads' bytes on the wire, where some went compressed.
    wire: u64,
}

impl Traffic {
    /// Counts one data message of `len` payload bytes.
    pub(crate) fn count(&mut self, len: usize) {
        self.count_compressed(len, len);
    }

    /// Counts one data message of `len` payload bytes that took `wire`
    /// bytes on the wire.
    pub(crate) fn count_compressed(&mut self, len: usize, wire: usize) {
        self.messages += 1;
        self.bytes += len as u64;
        self.wire += wire as u64;
    }

    /// Adds what was counted to the route's received counters.
    pub(crate) fn flush_received(&mut self, route: &RouteMetrics) {
        if self.messages != 0 {
            route.messages_received.inc_by(self.messages);
            route.received_bytes.inc_by(self.bytes);
            *self = Traffic::default();
        }
    }

    /// Adds what was counted to the route's sent counters.
    pub(crate) fn flush_sent(&mut self, route: &RouteMetrics) {
        if self.messages != 0 {
            route.messages_sent.inc_by(self.messages);
            route.sent_bytes.inc_by(self.bytes);
            route.sent_wire_bytes.inc_by(self.wire);
            *self = Traffic::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_named_by_the_conventions_and_starts_at_zero() {
        let mut metrics = Metrics::new();
        let broker = metrics.register_broker();
        let route = metrics.route("/r");
        let text = metrics.encode();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(name.starts_with("berth_"), "{line}");
            let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert_eq!(value, 0.0, "{line}");
        }
        for series in [
            "berth_connections_total{route=\"/r\"}",
            "berth_received_bytes_total{route=\"/r\"}",
            "berth_plugin_call_duration_seconds_count{route=\"/r\",export=\"on_events\"}",
            "berth_reloads_total{result=\"failed\"}",
            "berth_handshake_rejections_total{reason=\"quarantined\"}",
            "berth_broker_connected{connection=\"subscribe\"}",
            "berth_broker_unsent_total{reason=\"queue_full\"}",
            "berth_broker_received_total",
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
        drop((route, broker));
    }

    #[test]
    fn every_rejection_has_its_own_counter_and_label() {
        let mut labels = std::collections::HashSet::new();
        for (index, rejection) in Rejection::all().enumerate() {
            assert_eq!(rejection.index(), index, "{rejection:?}");
            assert!(labels.insert(rejection.label()), "{rejection:?}");
        }
        assert_eq!(labels.len(), Rejection::COUNT);
    }

    #[test]
    fn traffic_reaches_the_route_once_flushed_and_versions_share_series() {
        let metrics = Metrics::new();
        let first = metrics.route("/r");
        let second = metrics.route("/r");
        let mut received = Traffic::default();
        received.count(3);
        received.count(4);
        received.flush_received(&first);
        let mut sent = Traffic::default();
        sent.count(10);
        sent.count_compressed(1000, 250);
        sent.flush_sent(&second);
        sent.flush_sent(&second);
        let open = second.opened();
        second.observe_call(Export::Events, Duration::from_micros(3));
        second.delivered([5, 1, 0]);
        let text = metrics.encode();
        for series in [
            "berth_messages_received_total{route=\"/r\"} 2",
            "berth_received_bytes_total{route=\"/r\"} 7",
            "berth_messages_sent_total{route=\"/r\"} 2",
            "berth_sent_bytes_total{route=\"/r\"} 1010",
            "berth_sent_wire_bytes_total{route=\"/r\"} 260",
            "berth_connections_open{route=\"/r\"} 1",
            "berth_plugin_call_duration_seconds_count{route=\"/r\",export=\"on_events\"} 1",
            "berth_plugin_events_total{route=\"/r\",kind=\"message\"} 5",
            "berth_plugin_events_total{route=\"/r\",kind=\"close\"} 1",
            "berth_plugin_events_total{route=\"/r\",kind=\"timer\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
        drop(open);
        assert!(
            metrics
                .encode()
                .contains("berth_connections_open{route=\"/r\"} 0")
        );
    }
}
