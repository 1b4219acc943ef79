//! The metrics of plugins' outbound HTTP requests: how each ended (an HTTP
//! status, or the reason there was none) and how long it took.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::RouteLabel;

/// Upper bounds of the request duration buckets, in seconds: from a
/// loopback answer to the default `outbound-timeout`.
const BUCKETS: [f64; 14] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// The labels of the outbound requests counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    route: String,
    /// The HTTP status, or an `outbound-error` case, or `cancelled`.
    status: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The server-wide outbound families.
pub(super) struct OutboundFamilies {
    requests: Family<OutcomeLabels, Counter>,
    durations: Family<RouteLabel, Histogram, fn() -> Histogram>,
}

impl OutboundFamilies {
    /// Registers the families in `registry`.
    pub(super) fn register(registry: &mut Registry) -> OutboundFamilies {
        let requests = Family::default();
        registry.register(
            "outbound_requests",
            "Plugins' outbound HTTP requests, by the final HTTP status or the reason there was \
             none (not-allowed, invalid-request, too-many-requests, connect-failed, timeout, \
             too-large, failed, cancelled)",
            requests.clone(),
        );
        let durations = Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "outbound_request_duration",
            "Time from a plugin's fetch to its answer being queued for the plugin, redirects \
             and body included",
            Unit::Seconds,
            durations.clone(),
        );
        OutboundFamilies {
            requests,
            durations,
        }
    }

    /// The handles of the route at `path`.
    pub(super) fn route(&self, path: &str) -> OutboundMetrics {
        OutboundMetrics {
            route: path.to_string(),
            requests: self.requests.clone(),
            duration: self.durations.get_or_create_owned(&RouteLabel {
                route: path.to_string(),
            }),
        }
    }
}

/// One route's outbound handles. Outcomes are looked up by label when a
/// request ends: a request costs far more than the lookup, and the statuses
/// a backend answers with are not known in advance.
pub(crate) struct OutboundMetrics {
    route: String,
    requests: Family<OutcomeLabels, Counter>,
    duration: Histogram,
}

impl OutboundMetrics {
    /// Counts a request that ended with `status` (an HTTP status or a
    /// reason) after `took`; `None` for one refused before it started.
    pub(crate) fn ended(&self, status: &str, took: Option<Duration>) {
        self.requests
            .get_or_create(&OutcomeLabels {
                route: self.route.clone(),
                status: status.to_string(),
            })
            .inc();
        if let Some(took) = took {
            self.duration.observe(took.as_secs_f64());
        }
    }
}
