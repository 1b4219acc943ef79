//! What berth counts apart: the closed sets of values behind the `limit`,
//! `export`, `kind`, `reason` and `result` labels, each value with its label
//! text and its counter's place in the handles that hold one per value.

use crate::upgrade::Refusal;

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
    /// Every limit, in the order of their counters.
    pub(super) const ALL: [Limit; 14] = [
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
    pub(super) fn label(self) -> &'static str {
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

/// A kind of event an `on-events` call carries. With [`Export`], the one
/// table of the names of what berth calls a plugin for, as logs and metric
/// labels spell them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// A message from a connection.
    Message,
    /// The end of a connection.
    Close,
    /// A timer firing.
    Timer,
    /// The answer to an outbound request.
    Response,
}

impl EventKind {
    /// Every kind, in the order they are counted.
    pub(crate) const ALL: [EventKind; 4] = [
        EventKind::Message,
        EventKind::Close,
        EventKind::Timer,
        EventKind::Response,
    ];

    /// The value of the `kind` label.
    pub(super) fn label(self) -> &'static str {
        match self {
            EventKind::Message => "message",
            EventKind::Close => "close",
            EventKind::Timer => "timer",
            EventKind::Response => "response",
        }
    }

    /// What logs call the handling of one: the name of the export each kind
    /// of event had before `on-events` carried them all.
    pub(crate) fn call_name(self) -> &'static str {
        match self {
            EventKind::Message => "on-message",
            EventKind::Close => "on-close",
            EventKind::Timer => "on-timer",
            EventKind::Response => "on-response",
        }
    }
}

/// A plugin export berth calls, whose calls are timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Export {
    /// `on-connect`.
    Connect,
    /// `on-events`: one call per batch of messages, closes and timer firings.
    Events,
}

impl Export {
    /// Every timed export, in the order of their histograms.
    pub(super) const ALL: [Export; 2] = [Export::Connect, Export::Events];

    /// The value of the `export` label.
    pub(super) fn label(self) -> &'static str {
        match self {
            Export::Connect => "on_connect",
            Export::Events => "on_events",
        }
    }

    /// Its name in the contract, as logs give it.
    pub(crate) fn call_name(self) -> &'static str {
        match self {
            Export::Connect => "on-connect",
            Export::Events => "on-events",
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
    pub(super) const COUNT: usize = Refusal::ALL.len() + Rejection::OTHERS.len();

    /// Every rejection, in the order of their counters.
    pub(super) fn all() -> impl Iterator<Item = Rejection> {
        Refusal::ALL
            .into_iter()
            .map(Rejection::Refused)
            .chain(Rejection::OTHERS)
    }

    /// Where this rejection's counter is: its place in [`Rejection::all`].
    pub(super) fn index(self) -> usize {
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
    pub(super) fn label(self) -> &'static str {
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
    /// Every result, in the order of their counters.
    pub(super) const ALL: [Reload; 2] = [Reload::Ok, Reload::Failed];

    /// The value of the `result` label.
    pub(super) fn label(self) -> &'static str {
        match self {
            Reload::Ok => "ok",
            Reload::Failed => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_has_its_own_counter_and_label() {
        let mut labels = std::collections::HashSet::new();
        for (index, rejection) in Rejection::all().enumerate() {
            assert_eq!(rejection.index(), index, "{rejection:?}");
            assert!(labels.insert(rejection.label()), "{rejection:?}");
        }
        assert_eq!(labels.len(), Rejection::COUNT);
    }
}
