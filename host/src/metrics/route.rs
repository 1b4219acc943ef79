//! The handles one route version counts with ([`RouteMetrics`]), and the
//! traffic a connection counts in plain integers until it flushes them
//! into those handles ([`Traffic`]).

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::kinds::{EventKind, Export, Limit};
use super::outbound::OutboundMetrics;
use super::{CallLabels, EventLabels, LimitLabels, Metrics, RouteLabel};

impl Metrics {
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
            events: EventKind::ALL.map(|kind| {
                self.events.get_or_create_owned(&EventLabels {
                    route: path.to_string(),
                    kind: kind.label(),
                })
            }),
            traps: per_route(&self.traps),
            quarantines: per_route(&self.quarantines),
            slow_consumer_closes: per_route(&self.slow_consumer_closes),
            heartbeat_timeouts: per_route(&self.heartbeat_timeouts),
            outbound: self.outbound.route(path),
        }
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
    /// Events handed over, indexed as [`EventKind::ALL`].
    events: [Counter; EventKind::ALL.len()],
    /// Failed plugin calls.
    pub(crate) traps: Counter,
    /// Quarantines entered.
    pub(crate) quarantines: Counter,
    /// Connections closed with 1013.
    pub(crate) slow_consumer_closes: Counter,
    /// Connections dropped for an unanswered ping.
    pub(crate) heartbeat_timeouts: Counter,
    /// The route's outbound requests.
    pub(crate) outbound: OutboundMetrics,
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
    pub(crate) fn delivered(&self, counts: [u64; EventKind::ALL.len()]) {
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
        second.delivered([5, 1, 0, 0]);
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
