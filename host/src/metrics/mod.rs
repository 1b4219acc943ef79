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
//!
//! This file holds the registry and the server-wide families; a route's
//! handles and a connection's traffic are in `route`, the values each label
//! takes in `kinds`, the Redis link's metrics in `broker`, and plugins'
//! outbound requests in `outbound`.

mod broker;
mod kinds;
mod outbound;
mod route;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

pub(crate) use broker::BrokerMetrics;
pub(crate) use kinds::{EventKind, Export, Limit, Rejection, Reload};
pub(crate) use outbound::OutboundMetrics;
pub(crate) use route::{RouteMetrics, Traffic};

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

/// The label of a rejection series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
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

/// The labels of the plugin events counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    route: String,
    kind: &'static str,
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
    outbound: outbound::OutboundFamilies,
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
            "Events handed to a plugin in its on-events calls, by kind (message, close, timer, response)",
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
        let outbound = outbound::OutboundFamilies::register(&mut registry);
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
            outbound,
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

    /// Every metric in the Prometheus text format ([`CONTENT_TYPE`]).
    pub(crate) fn encode(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
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
}
