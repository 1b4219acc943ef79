//! The Redis link's metrics: registered only on a node with `[broker]`, and
//! the handles its publisher and subscriber count with ([`BrokerMetrics`]).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::Metrics;

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

impl Metrics {
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
