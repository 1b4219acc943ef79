//! What one route is: the settings a `[[route]]` table becomes (or a drop-in
//! plugin gets), and the kinds of value they take.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{OutboundRules, StateRules, defaults};

/// Everything berth needs to serve one URL path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    /// The URL path, starting with `/`.
    pub path: String,
    /// The component that handles the route.
    pub plugin: PluginSource,
    /// Which browser origins are accepted.
    pub allowed_origins: OriginPolicy,
    /// Subprotocols a plugin may accept, in no particular order.
    pub subprotocols: Vec<String>,
    /// The largest message (and frame) a client may send, in bytes.
    pub max_message_size: usize,
    /// How often the host pings each client.
    pub ping_interval: Duration,
    /// How long a client has to answer a ping before it is dropped.
    pub pong_timeout: Duration,
    /// How many outbound messages may wait for one slow client before it is closed.
    pub write_queue: usize,
    /// How many bytes of outbound payload may wait for one slow client,
    /// counted until the socket has taken them, before it is closed; a
    /// single message larger than this is refused to the plugin.
    pub write_queue_bytes: usize,
    /// The longest topic name the plugin may subscribe to or publish on, in bytes.
    pub max_topic_name: usize,
    /// How many topics one connection may be subscribed to at once.
    pub max_subscriptions_per_connection: usize,
    /// How many subscriptions the route's connections may hold together.
    pub max_subscriptions: usize,
    /// The longest a single plugin call may run before it is stopped.
    pub call_timeout: Duration,
    /// Whether one instance serves the route or each connection gets its own.
    pub instance: InstanceModel,
    /// The topic namespace: the route's path unless several routes share one.
    pub namespace: String,
    /// The `[route.config]` values the plugin can read with `config-get`.
    pub values: BTreeMap<String, String>,
    /// What happens to open connections when the route's plugin or settings change.
    pub on_reload: ReloadPolicy,
    /// The most connections this route may have open; more are refused with 503.
    pub max_connections: Option<usize>,
    /// How long a connection may go without a data message from its client
    /// before it is closed (1000 "idle timeout"); `None`: never.
    pub idle_timeout: Option<Duration>,
    /// How long the peer has to answer a close frame before the socket is dropped.
    pub close_timeout: Duration,
    /// The most linear memory one instance of this route's plugin may use, in bytes.
    pub max_memory: u64,
    /// Whether clients that offer permessage-deflate get it.
    pub compression: bool,
    /// Outbound messages shorter than this go uncompressed, in bytes.
    pub compression_threshold: usize,
    /// When the route's plugin is quarantined for trapping too often.
    pub quarantine: QuarantineRule,
    /// The route's history and store bounds.
    pub state: StateRules,
    /// What the plugin may reach besides clocks and random numbers.
    pub grants: Grants,
    /// The origins the plugin may send HTTP requests to, and their bounds.
    pub outbound: OutboundRules,
}

impl RouteConfig {
    /// A route at `path` served by `plugin` with every other setting at its
    /// default (same-origin browsers only): what a drop-in plugin gets.
    pub fn with_defaults(path: String, plugin: PluginSource) -> RouteConfig {
        RouteConfig {
            namespace: path.clone(),
            path,
            plugin,
            allowed_origins: OriginPolicy::List(Vec::new()),
            subprotocols: Vec::new(),
            max_message_size: defaults::MAX_MESSAGE_SIZE,
            ping_interval: defaults::PING_INTERVAL,
            pong_timeout: defaults::PONG_TIMEOUT,
            write_queue: defaults::WRITE_QUEUE,
            write_queue_bytes: defaults::WRITE_QUEUE_BYTES,
            max_topic_name: defaults::MAX_TOPIC_NAME,
            max_subscriptions_per_connection: defaults::MAX_SUBSCRIPTIONS_PER_CONNECTION,
            max_subscriptions: defaults::MAX_SUBSCRIPTIONS,
            call_timeout: defaults::CALL_TIMEOUT,
            instance: InstanceModel::Route,
            values: BTreeMap::new(),
            on_reload: ReloadPolicy::Drain,
            max_connections: None,
            idle_timeout: None,
            close_timeout: defaults::CLOSE_TIMEOUT,
            max_memory: defaults::MAX_MEMORY,
            compression: true,
            compression_threshold: defaults::COMPRESSION_THRESHOLD,
            quarantine: QuarantineRule {
                traps: defaults::QUARANTINE_TRAPS,
                window: defaults::QUARANTINE_WINDOW,
            },
            grants: Grants::default(),
            state: StateRules::default(),
            outbound: OutboundRules::default(),
        }
    }
}

/// Where a route's plugin comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// A component file on disk.
    File(PathBuf),
    /// A component compiled into the binary (the demo's plugins).
    Embedded {
        /// A short name for logs, like `echo.wasm`.
        name: &'static str,
        /// The component's bytes.
        bytes: &'static [u8],
    },
}

impl PluginSource {
    /// A name for this plugin in logs and the startup banner.
    pub fn display_name(&self) -> String {
        match self {
            PluginSource::File(path) => path.display().to_string(),
            PluginSource::Embedded { name, .. } => format!("{name} (embedded)"),
        }
    }
}

impl std::fmt::Debug for PluginSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display_name())
    }
}

/// Which browser origins may open connections on a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginPolicy {
    /// Same-origin requests, plus these origins (lower-case `scheme://host[:port]`).
    List(Vec<String>),
    /// Any origin (`allowed-origins = ["*"]`).
    Any,
}

/// How a route's plugin is instantiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceModel {
    /// One instance serves every connection of the route, one call at a time.
    #[default]
    Route,
    /// Each connection gets a fresh instance, dropped when it closes; calls on
    /// different connections run in parallel.
    Connection,
}

/// What a route's open connections do when a new version of the route takes over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReloadPolicy {
    /// They stay on the version they opened with until they close; that
    /// version is freed when its last connection goes.
    #[default]
    Drain,
    /// They are closed with 1012 (Service Restart) so that clients reconnect
    /// to the new version.
    Restart,
}

/// A plugin that traps `traps` times within `window` is quarantined: new
/// connections to its route get 503 until its file changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuarantineRule {
    /// Traps that trip the quarantine; 0 turns it off.
    pub traps: u32,
    /// The window the traps are counted in.
    pub window: Duration,
}

/// Capabilities granted to a route's plugin. By default it has none: no
/// environment variables, no arguments, no files, no sockets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// Environment variables the plugin sees, by name.
    pub env: BTreeMap<String, String>,
    /// Host folders the plugin may open.
    pub dirs: Vec<DirGrant>,
}

/// A host folder made visible to a plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirGrant {
    /// The folder on the host.
    pub host: PathBuf,
    /// Where the plugin sees it (an absolute guest path such as `/data`).
    pub guest: String,
    /// Whether the plugin may create, change and delete files in it.
    pub writable: bool,
}
