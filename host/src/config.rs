//! Configuration: one TOML file, read in two stages. Serde turns the text into
//! raw values (so a bad value or an unknown key is reported at its line and
//! column by the TOML parser), then [`Config::from_toml`] checks what serde
//! cannot and produces the plain values the server runs on.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use tracing::level_filters::LevelFilter;

/// The address berth listens on when neither the config nor the command line names one.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// A configuration file that cannot be used, with the place in it that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// Why reading it failed.
        source: std::io::Error,
    },
    /// The file was read but something in it is wrong.
    #[error("{}:{line}:{column}: {message}", file.display())]
    Invalid {
        /// The config file (or `<demo>` for the embedded one).
        file: PathBuf,
        /// 1-based line of the offending value.
        line: usize,
        /// 1-based column of the offending value.
        column: usize,
        /// What is wrong, in plain words.
        message: String,
    },
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
    pub quarantine: Quarantine,
    /// The route's history and store bounds.
    pub state: StateRules,
    /// What the plugin may reach besides clocks and random numbers.
    pub grants: Grants,
}

/// A plugin that traps `traps` times within `window` is quarantined: new
/// connections to its route get 503 until its file changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quarantine {
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

/// What a route keeps in the state store, and how much: history per topic,
/// members' descriptions, and its namespace's key-value quota. Routes that
/// share a namespace must agree on these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateRules {
    /// Messages kept per topic (`history-size`); 0 keeps none.
    pub history_size: u32,
    /// A topic's history is dropped when nothing was published to it for
    /// this long (`history-ttl`).
    pub history_ttl: Duration,
    /// Topics with history the namespace may keep at once (`history-topics`).
    pub history_topics: u32,
    /// Longest member description `subscribe` takes (`max-member`).
    pub max_member: usize,
    /// Keys the namespace's store may hold (`store-keys`).
    pub store_keys: u64,
    /// Bytes of keys and values the namespace's store may hold (`store-bytes`).
    pub store_bytes: u64,
    /// Longest value `set` takes (`max-value`).
    pub max_value: usize,
}

impl Default for StateRules {
    fn default() -> Self {
        StateRules {
            history_size: 0,
            history_ttl: defaults::HISTORY_TTL,
            history_topics: defaults::HISTORY_TOPICS,
            max_member: defaults::MAX_MEMBER,
            store_keys: defaults::STORE_KEYS,
            store_bytes: defaults::STORE_BYTES,
            max_value: defaults::MAX_VALUE,
        }
    }
}

/// Where the state store lives and how long its callers wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateConfig {
    /// The embedded store's folder (`state-dir`); unused with a `[broker]`.
    pub dir: PathBuf,
    /// The longest a plugin's state call waits for the store (`state-timeout`).
    pub timeout: Duration,
    /// How long a node's members outlive its last refresh in Redis
    /// (`presence-ttl`): a node that dies leaves no members after this.
    pub presence_ttl: Duration,
}

impl StateConfig {
    /// The defaults, with the store in `dir`.
    pub fn in_dir(dir: PathBuf) -> StateConfig {
        StateConfig {
            dir,
            timeout: defaults::STATE_TIMEOUT,
            presence_ttl: defaults::PRESENCE_TTL,
        }
    }

    /// Where the demo keeps its store unless `--state-dir` says otherwise:
    /// `state` beside its default plugin folder, `$XDG_DATA_HOME/berth/state`
    /// (else `~/.local/share/berth/state`, else under the temporary folder).
    pub fn demo_dir() -> PathBuf {
        user_dir("XDG_DATA_HOME", ".local/share")
            .map(|dir| dir.join("berth/state"))
            .unwrap_or_else(|| std::env::temp_dir().join("berth-state"))
    }
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
            quarantine: Quarantine {
                traps: defaults::QUARANTINE_TRAPS,
                window: defaults::QUARANTINE_WINDOW,
            },
            grants: Grants::default(),
            state: StateRules::default(),
        }
    }
}

/// A route's `compression`: whether permessage-deflate is negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Compression {
    /// Offers are accepted; messages under the threshold still go plain.
    #[default]
    On,
    /// Offers are declined.
    Off,
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

/// A validated configuration, ready to serve.
#[derive(Clone, Debug)]
pub struct Config {
    /// The sockets to listen on (at least one), each plain or TLS.
    pub listeners: Vec<ListenerConfig>,
    /// The most connections (HTTP or WebSocket) open at once; more get 503.
    pub max_connections: usize,
    /// The most connections one client IP address may have open at once;
    /// more get 429. `None`: no per-address limit.
    pub max_connections_per_ip: Option<usize>,
    /// How long a client has to send its HTTP request head after connecting.
    pub handshake_timeout: Duration,
    /// The routes, each with its own plugin.
    pub routes: Vec<RouteConfig>,
    /// How many plugin instances may be alive at once (sizes the instance pool).
    pub max_instances: u32,
    /// The most linear memory one plugin instance may use, in bytes.
    pub max_memory: u64,
    /// The folder plugin paths are relative to, and where drop-in plugins go.
    pub plugin_dir: PathBuf,
    /// Whether every `NAME.wasm` in `plugin_dir` is served at `/NAME`.
    pub auto_routes: bool,
    /// Which browser origins drop-in routes accept: same-origin from a config
    /// file, any in the demo.
    pub auto_route_origins: OriginPolicy,
    /// Where compiled plugins are cached, or `None` to compile every time.
    pub cache_dir: Option<PathBuf>,
    /// Whether `/` answers a browser with the demo's chat page (the demo
    /// only: a config file's server answers what its routes say).
    pub demo_page: bool,
    /// A separate plain HTTP address that serves `/metrics` and `/healthz`;
    /// when set, the public listeners do not serve `/metrics`.
    pub admin_listen: Option<SocketAddr>,
    /// How much is logged when `RUST_LOG` is not set.
    pub log_level: LevelFilter,
    /// Topics shared with other berth nodes through Redis; `None`: this
    /// process only.
    pub broker: Option<BrokerConfig>,
    /// The backend publish API (`POST /publish/NAMESPACE/TOPIC`).
    pub publish_api: PublishApiConfig,
    /// The state store (`state-dir`, `state-timeout`, `presence-ttl`).
    pub state: StateConfig,
}

/// `[broker]`: topics shared by every berth node that names the same Redis.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// The Redis server, as `redis://[:PASSWORD@]HOST:PORT[/DB]`.
    pub url: String,
    /// Put before every channel name, so that several deployments can share one Redis.
    pub channel_prefix: String,
    /// Whether startup fails when Redis cannot be reached (otherwise the node
    /// serves local topics and keeps trying).
    pub required: bool,
}

impl BrokerConfig {
    /// The URL without its password, for logs and errors.
    pub fn shown_url(&self) -> String {
        redact_url(&self.url)
    }
}

// By hand: the URL may hold a password, and a config may be debug-printed.
impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("url", &self.shown_url())
            .field("channel_prefix", &self.channel_prefix)
            .field("required", &self.required)
            .finish()
    }
}

/// `url` with the user-info part (`user:password@`) replaced by `***@`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// `[publish-api]`: who may publish to topics over HTTP, and how much.
#[derive(Clone, PartialEq, Eq)]
pub struct PublishApiConfig {
    /// Bearer tokens that may publish; none turns the API off (404).
    pub tokens: Vec<String>,
    /// The largest request body, in bytes; more is answered 413.
    pub max_body: usize,
}

impl Default for PublishApiConfig {
    fn default() -> Self {
        PublishApiConfig {
            tokens: Vec::new(),
            max_body: defaults::MAX_PUBLISH_BODY,
        }
    }
}

// By hand: the tokens are secrets, and a config may be debug-printed.
impl std::fmt::Debug for PublishApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishApiConfig")
            .field("tokens", &format_args!("[{} hidden]", self.tokens.len()))
            .field("max_body", &self.max_body)
            .finish()
    }
}

/// One socket berth listens on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    /// The address and port.
    pub address: SocketAddr,
    /// The certificate and key for wss://, or `None` for plain ws://.
    pub tls: Option<TlsFiles>,
    /// Whether every connection starts with a PROXY protocol (v1 or v2)
    /// header naming the real client (a TCP load balancer in front).
    pub proxy_protocol: bool,
    /// Peers whose `Forwarded` / `X-Forwarded-For` headers are believed (HTTP
    /// load balancers in front); from anyone else those headers are ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl ListenerConfig {
    /// A plain ws:// listener on `address` with no proxy in front.
    pub fn plain(address: SocketAddr) -> ListenerConfig {
        ListenerConfig {
            address,
            tls: None,
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
        }
    }
}

/// PEM files for a TLS listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Command-line settings that win over the config file, at startup and again
/// at every config reload.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// The one plain address to listen on instead of the configured
    /// listeners (`--listen`).
    pub listen: Option<SocketAddr>,
    /// Where compiled plugins are cached (`--cache-dir`).
    pub cache_dir: Option<PathBuf>,
    /// Where the embedded state store lives (`--state-dir`).
    pub state_dir: Option<PathBuf>,
}

impl Overrides {
    /// Writes these settings over `config`.
    pub fn apply(&self, config: &mut Config) {
        if let Some(listen) = self.listen {
            config.listeners = vec![ListenerConfig::plain(listen)];
        }
        if let Some(dir) = &self.cache_dir {
            config.cache_dir = (!dir.as_os_str().is_empty()).then(|| dir.clone());
        }
        if let Some(dir) = &self.state_dir {
            config.state.dir = dir.clone();
        }
    }
}

/// A duration written the human way in TOML ("30s", "500ms", "1m 30s").
#[derive(Clone, Copy, Debug)]
struct HumanDuration(Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text)
            .map(HumanDuration)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
    }
}

/// A size in bytes: a plain number, or a string with a unit ("64 MiB", "512KiB").
#[derive(Clone, Copy, Debug)]
struct ByteSize(u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(text) => parse_size(&text).map(ByteSize).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid size {text:?}: write a number of bytes, or a number with B, KiB, MiB or GiB"
                ))
            }),
        }
    }
}

fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(scale)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    listen: Option<Spanned<SocketAddr>>,
    #[serde(default, rename = "listener")]
    listeners: Vec<RawListener>,
    plugin_dir: Option<PathBuf>,
    #[serde(default)]
    auto_routes: bool,
    cache_dir: Option<PathBuf>,
    admin_listen: Option<Spanned<SocketAddr>>,
    log_level: Option<Spanned<String>>,
    max_connections: Option<Spanned<usize>>,
    max_connections_per_ip: Option<Spanned<usize>>,
    handshake_timeout: Option<Spanned<HumanDuration>>,
    max_instances: Option<Spanned<usize>>,
    max_memory: Option<Spanned<ByteSize>>,
    #[serde(default, rename = "route")]
    routes: Vec<RawRoute>,
    broker: Option<RawBroker>,
    publish_api: Option<RawPublishApi>,
    state_dir: Option<PathBuf>,
    state_timeout: Option<Spanned<HumanDuration>>,
    presence_ttl: Option<Spanned<HumanDuration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawBroker {
    url: Spanned<String>,
    channel_prefix: Option<String>,
    required: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPublishApi {
    #[serde(default)]
    tokens: Vec<Spanned<String>>,
    max_body: Option<Spanned<ByteSize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRoute {
    path: Spanned<String>,
    plugin: Spanned<PathBuf>,
    #[serde(default)]
    allowed_origins: Vec<Spanned<String>>,
    #[serde(default)]
    subprotocols: Vec<Spanned<String>>,
    max_message_size: Option<Spanned<usize>>,
    ping_interval: Option<Spanned<HumanDuration>>,
    pong_timeout: Option<Spanned<HumanDuration>>,
    write_queue: Option<Spanned<usize>>,
    write_queue_bytes: Option<Spanned<ByteSize>>,
    max_topic_name: Option<Spanned<ByteSize>>,
    max_subscriptions_per_connection: Option<Spanned<usize>>,
    max_subscriptions: Option<Spanned<usize>>,
    call_timeout: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    instance: InstanceModel,
    namespace: Option<Spanned<String>>,
    config: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    on_reload: ReloadPolicy,
    max_connections: Option<Spanned<usize>>,
    idle_timeout: Option<Spanned<HumanDuration>>,
    close_timeout: Option<Spanned<HumanDuration>>,
    max_memory: Option<Spanned<ByteSize>>,
    #[serde(default)]
    compression: Compression,
    compression_threshold: Option<Spanned<ByteSize>>,
    quarantine_traps: Option<u32>,
    quarantine_window: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default, rename = "dir")]
    dirs: Vec<RawDir>,
    history_size: Option<u32>,
    history_ttl: Option<Spanned<HumanDuration>>,
    history_topics: Option<Spanned<usize>>,
    max_member: Option<Spanned<ByteSize>>,
    store_keys: Option<Spanned<usize>>,
    store_bytes: Option<Spanned<ByteSize>>,
    max_value: Option<Spanned<ByteSize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawListener {
    address: Spanned<SocketAddr>,
    tls_cert: Option<Spanned<PathBuf>>,
    tls_key: Option<Spanned<PathBuf>>,
    #[serde(default)]
    proxy_protocol: bool,
    #[serde(default)]
    trusted_proxies: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDir {
    host: Spanned<PathBuf>,
    guest: Spanned<String>,
    #[serde(default)]
    writable: bool,
}

/// Route defaults, also used by the README's config reference.
pub mod defaults {
    use std::time::Duration;

    /// Largest client message: 64 KiB.
    pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;
    /// Ping every 30 seconds.
    pub const PING_INTERVAL: Duration = Duration::from_secs(30);
    /// Drop a client 10 seconds after an unanswered ping.
    pub const PONG_TIMEOUT: Duration = Duration::from_secs(10);
    /// 1024 queued outbound messages per connection.
    pub const WRITE_QUEUE: usize = 1024;
    /// 1 MiB of queued outbound payload per connection (or the route's
    /// `max-message-size`, if that is larger).
    pub const WRITE_QUEUE_BYTES: usize = 1 << 20;
    /// Longest topic name a plugin may use: 256 bytes.
    pub const MAX_TOPIC_NAME: usize = 256;
    /// Topics one connection may be subscribed to: 1,024.
    pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 1024;
    /// Subscriptions a route's connections may hold together: 100,000.
    pub const MAX_SUBSCRIPTIONS: usize = 100_000;
    /// Longest `[route.config]` key, and so the longest `config-get` looks up: 256 bytes.
    pub const MAX_CONFIG_KEY: usize = 256;
    /// One plugin call may run for at most 1 second.
    pub const CALL_TIMEOUT: Duration = Duration::from_secs(1);
    /// 10,000 open connections.
    pub const MAX_CONNECTIONS: usize = 10_000;
    /// 10 seconds to send the HTTP request head.
    pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// 1,000 plugin instances alive at once.
    pub const MAX_INSTANCES: u32 = 1000;
    /// Outbound messages of 1 KiB or more are compressed, where negotiated.
    pub const COMPRESSION_THRESHOLD: usize = 1024;
    /// 64 MiB of linear memory per instance.
    pub const MAX_MEMORY: u64 = 64 << 20;
    /// 2 seconds for the peer to answer a close frame.
    pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
    /// Quarantine after 5 traps...
    pub const QUARANTINE_TRAPS: u32 = 5;
    /// ...within one minute.
    pub const QUARANTINE_WINDOW: Duration = Duration::from_secs(60);
    /// The publish API takes bodies of up to 64 KiB.
    pub const MAX_PUBLISH_BODY: usize = 64 * 1024;
    /// Redis channel names start with `berth:`.
    pub const CHANNEL_PREFIX: &str = "berth:";
    /// A topic's history goes after a day without publishes.
    pub const HISTORY_TTL: Duration = Duration::from_secs(24 * 3600);
    /// A namespace keeps history for at most 10,000 topics.
    pub const HISTORY_TOPICS: u32 = 10_000;
    /// Longest member description: 256 bytes.
    pub const MAX_MEMBER: usize = 256;
    /// A namespace's store holds at most 10,000 keys...
    pub const STORE_KEYS: u64 = 10_000;
    /// ...and 16 MiB of keys and values.
    pub const STORE_BYTES: u64 = 16 << 20;
    /// Longest stored value: 64 KiB.
    pub const MAX_VALUE: usize = 64 * 1024;
    /// Longest store key: 256 bytes (not configurable: keys are names).
    pub const MAX_KEY: usize = 256;
    /// A state call waits at most 100 ms for the store.
    pub const STATE_TIMEOUT: Duration = Duration::from_millis(100);
    /// A node's members leave Redis 15 seconds after its last refresh.
    pub const PRESENCE_TTL: Duration = Duration::from_secs(15);
}

/// Reads the source text around spans, to turn byte offsets into line and column.
struct Source<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }
}

impl Config {
    /// Reads and validates the config file at `path`; relative paths in it are
    /// relative to the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_toml(&text, path, base)
    }

    /// Validates TOML `text`; `file` names it in errors and `base` anchors relative paths.
    pub fn from_toml(text: &str, file: &Path, base: &Path) -> Result<Config, ConfigError> {
        let source = Source { file, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_string();
            source.error(e.span().unwrap_or(0..0), message)
        })?;
        let plugin_dir = base.join(raw.plugin_dir.unwrap_or_else(|| PathBuf::from("plugins")));

        let max_memory = match raw.max_memory {
            None => defaults::MAX_MEMORY,
            Some(v) if v.get_ref().0 < 1 << 16 => {
                return Err(
                    source.error(v.span(), "must be at least 64 KiB (one WebAssembly page)")
                );
            }
            Some(v) => v.into_inner().0,
        };
        let mut routes: Vec<RouteConfig> = Vec::with_capacity(raw.routes.len());
        let mut route_spans = Vec::with_capacity(raw.routes.len());
        for route in raw.routes {
            route_spans.push(route.path.span());
            let checked = check_route(&source, base, &plugin_dir, max_memory, route)?;
            routes.push(checked);
        }
        let max_connections = positive(&source, raw.max_connections, defaults::MAX_CONNECTIONS)?;
        let handshake_timeout =
            nonzero(&source, raw.handshake_timeout, defaults::HANDSHAKE_TIMEOUT)?;
        let max_instances = positive(&source, raw.max_instances, defaults::MAX_INSTANCES as usize)?;
        let max_instances = u32::try_from(max_instances).unwrap_or(u32::MAX);
        let max_connections_per_ip = match raw.max_connections_per_ip {
            Some(v) if *v.get_ref() == 0 => {
                return Err(
                    source.error(v.span(), "must be at least 1 (leave it out for no limit)")
                );
            }
            v => v.map(Spanned::into_inner),
        };
        let cache_dir = match raw.cache_dir {
            Some(dir) if dir.as_os_str().is_empty() => None,
            Some(dir) => Some(base.join(dir)),
            None => default_cache_dir(),
        };
        let listeners = listeners(&source, base, raw.listen, raw.listeners)?;
        if let Some(admin) = &raw.admin_listen
            && admin.get_ref().port() != 0
            && listeners.iter().any(|l| l.address == *admin.get_ref())
        {
            return Err(source.error(
                admin.span(),
                "admin-listen must be an address of its own, not one of the listeners",
            ));
        }
        let log_level = match raw.log_level {
            None => LevelFilter::INFO,
            Some(level) => parse_level(level.get_ref()).ok_or_else(|| {
                source.error(
                    level.span(),
                    format!(
                        "log-level {:?} must be one of \"error\", \"warn\", \"info\", \"debug\", \"trace\" or \"off\"",
                        level.get_ref()
                    ),
                )
            })?,
        };
        same_state_per_namespace(&source, &routes, &route_spans)?;
        let state = StateConfig {
            dir: raw
                .state_dir
                .map(|dir| base.join(dir))
                .unwrap_or_else(|| base.join("state")),
            timeout: nonzero(&source, raw.state_timeout, defaults::STATE_TIMEOUT)?,
            presence_ttl: nonzero(&source, raw.presence_ttl, defaults::PRESENCE_TTL)?,
        };
        let broker = raw.broker.map(|b| broker(&source, b)).transpose()?;
        let publish_api = match raw.publish_api {
            None => PublishApiConfig::default(),
            Some(api) => publish_api(&source, api)?,
        };
        Ok(Config {
            broker,
            publish_api,
            state,
            listeners,
            max_instances,
            max_memory,
            plugin_dir,
            auto_routes: raw.auto_routes,
            auto_route_origins: OriginPolicy::List(Vec::new()),
            cache_dir,
            demo_page: false,
            admin_listen: raw.admin_listen.map(Spanned::into_inner),
            log_level,
            max_connections,
            max_connections_per_ip,
            handshake_timeout,
            routes,
        })
    }

    /// The route serving `path`, if any.
    pub fn route(&self, path: &str) -> Option<&RouteConfig> {
        self.routes.iter().find(|r| r.path == path)
    }
}

/// A log level by its name, as `RUST_LOG` spells it (any case).
fn parse_level(name: &str) -> Option<LevelFilter> {
    Some(match name.to_ascii_lowercase().as_str() {
        "off" => LevelFilter::OFF,
        "error" => LevelFilter::ERROR,
        "warn" => LevelFilter::WARN,
        "info" => LevelFilter::INFO,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => return None,
    })
}

fn positive(
    source: &Source,
    value: Option<Spanned<usize>>,
    default: usize,
) -> Result<usize, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if *v.get_ref() == 0 => Err(source.error(v.span(), "must be at least 1")),
        Some(v) => Ok(v.into_inner()),
    }
}

fn nonzero(
    source: &Source,
    value: Option<Spanned<HumanDuration>>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v.get_ref().0.is_zero() => {
            Err(source.error(v.span(), "must be longer than zero"))
        }
        Some(v) => Ok(v.into_inner().0),
    }
}

/// Where compiled plugins are cached unless the config says otherwise:
/// `$XDG_CACHE_HOME/berth`, else `~/.cache/berth`; none without a home.
pub fn default_cache_dir() -> Option<PathBuf> {
    user_dir("XDG_CACHE_HOME", ".cache").map(|dir| dir.join("berth"))
}

/// The folder an XDG variable names, else `$HOME/home_relative`.
pub(crate) fn user_dir(xdg_var: &str, home_relative: &str) -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var(xdg_var).or_else(|| var("HOME").map(|home| home.join(home_relative)))
}

/// The listeners: `[[listener]]` tables, or the single plain `listen`
/// address (the default when there is neither).
fn listeners(
    source: &Source,
    base: &Path,
    listen: Option<Spanned<SocketAddr>>,
    raw: Vec<RawListener>,
) -> Result<Vec<ListenerConfig>, ConfigError> {
    if let Some(listen) = &listen
        && !raw.is_empty()
    {
        return Err(source.error(
            listen.span(),
            "use either listen or [[listener]] tables, not both",
        ));
    }
    if raw.is_empty() {
        let address = listen.map_or_else(
            || DEFAULT_LISTEN.parse().expect("a valid default"),
            Spanned::into_inner,
        );
        return Ok(vec![ListenerConfig::plain(address)]);
    }
    let mut listeners: Vec<ListenerConfig> = Vec::with_capacity(raw.len());
    for listener in raw {
        let span = listener.address.span();
        let address = listener.address.into_inner();
        // Port 0 asks the system for any free port: several may.
        if address.port() != 0 && listeners.iter().any(|l| l.address == address) {
            return Err(source.error(span, format!("{address} is listed twice")));
        }
        let tls = match (listener.tls_cert, listener.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: base.join(cert.into_inner()),
                key: base.join(key.into_inner()),
            }),
            (Some(one), None) | (None, Some(one)) => {
                return Err(
                    source.error(one.span(), "a TLS listener needs both tls-cert and tls-key")
                );
            }
        };
        let mut trusted_proxies = Vec::with_capacity(listener.trusted_proxies.len());
        for proxy in listener.trusted_proxies {
            let span = proxy.span();
            let text = proxy.into_inner();
            let net = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    source.error(
                        span,
                        format!("{text:?} is not an IP address or CIDR block like \"10.0.0.0/8\""),
                    )
                })?;
            trusted_proxies.push(net);
        }
        listeners.push(ListenerConfig {
            address,
            tls,
            proxy_protocol: listener.proxy_protocol,
            trusted_proxies,
        });
    }
    Ok(listeners)
}

/// Paths the host answers itself, which no route may take.
pub const RESERVED_PATHS: &[&str] = &["/healthz", "/metrics"];

/// Path prefixes the host answers itself (the publish API), which no route may take.
pub const RESERVED_PREFIXES: &[&str] = &["/publish/"];

/// Whether berth answers `path` itself, so that no route may take it.
pub fn is_reserved(path: &str) -> bool {
    RESERVED_PATHS.contains(&path) || RESERVED_PREFIXES.iter().any(|p| path.starts_with(p))
}

/// Checks `[broker]`.
fn broker(source: &Source, raw: RawBroker) -> Result<BrokerConfig, ConfigError> {
    let span = raw.url.span();
    let url = raw.url.into_inner();
    // The client's own parser, so that what passes here is what it can dial.
    if let Err(error) = redis::Client::open(url.as_str()) {
        return Err(source.error(
            span,
            format!(
                "{:?} is not a Redis URL like \"redis://127.0.0.1:6379\": {error}",
                redact_url(&url)
            ),
        ));
    }
    Ok(BrokerConfig {
        url,
        channel_prefix: raw
            .channel_prefix
            .unwrap_or_else(|| defaults::CHANNEL_PREFIX.to_string()),
        required: raw.required.unwrap_or(true),
    })
}

/// The fewest characters a publish API token may have: a short token could
/// be guessed by simply trying.
const MIN_TOKEN_LEN: usize = 16;

/// Checks `[publish-api]`.
fn publish_api(source: &Source, raw: RawPublishApi) -> Result<PublishApiConfig, ConfigError> {
    let mut tokens = Vec::with_capacity(raw.tokens.len());
    for token in raw.tokens {
        let span = token.span();
        let token = token.into_inner();
        // RFC 6750's b64token, so that every token can be sent as written.
        let body = token.trim_end_matches('=');
        let valid = !body.is_empty()
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
        if !valid {
            return Err(source.error(
                span,
                "a token may hold only letters, digits and -._~+/ (then '=' padding)",
            ));
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(source.error(
                span,
                format!("a token must be at least {MIN_TOKEN_LEN} characters long"),
            ));
        }
        tokens.push(token);
    }
    let max_body = match raw.max_body {
        None => defaults::MAX_PUBLISH_BODY,
        Some(v) if v.get_ref().0 == 0 => {
            return Err(source.error(v.span(), "must be at least 1 byte"));
        }
        Some(v) => usize::try_from(v.into_inner().0).unwrap_or(usize::MAX),
    };
    Ok(PublishApiConfig { tokens, max_body })
}

/// The route path a drop-in plugin file is served at (`chat.wasm` -> `/chat`),
/// or `None` for files that are not plugins: dotfiles, temporary files that
/// editors and build tools write before renaming, and names a URL path
/// cannot hold plainly.
pub fn auto_route_path(file: &Path) -> Option<String> {
    let name = file.file_name()?.to_str()?;
    let stem = name.strip_suffix(".wasm")?;
    let plain = !stem.is_empty()
        && !stem.starts_with('.')
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    let path = format!("/{stem}");
    (plain && !is_reserved(&path)).then_some(path)
}

fn check_route(
    source: &Source,
    base: &Path,
    plugin_dir: &Path,
    pool_memory: u64,
    raw: RawRoute,
) -> Result<RouteConfig, ConfigError> {
    let path_span = raw.path.span();
    let path = raw.path.into_inner();
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        return Err(source.error(
            path_span,
            format!("route path {path:?} must start with '/' and hold no '?', '#' or space"),
        ));
    }
    if is_reserved(&path) {
        return Err(source.error(path_span, format!("{path} is answered by berth itself")));
    }
    let plugin_span = raw.plugin.span();
    let plugin_path = plugin_dir.join(raw.plugin.into_inner());
    if !plugin_path.is_file() {
        return Err(source.error(
            plugin_span,
            format!("plugin file not found: {}", plugin_path.display()),
        ));
    }

    let mut origins = Vec::with_capacity(raw.allowed_origins.len());
    let mut any_origin = false;
    for origin in raw.allowed_origins {
        let span = origin.span();
        let origin = origin.into_inner().to_ascii_lowercase();
        if origin == "*" {
            any_origin = true;
        } else if origin
            .split_once("://")
            .is_none_or(|(_, host)| host.is_empty())
            || origin.ends_with('/')
        {
            return Err(source.error(
                span,
                format!("origin {origin:?} must look like \"https://example.com\" (or be \"*\")"),
            ));
        } else {
            origins.push(origin);
        }
    }

    let mut subprotocols = Vec::with_capacity(raw.subprotocols.len());
    for protocol in raw.subprotocols {
        let span = protocol.span();
        let protocol = protocol.into_inner();
        if protocol.is_empty() || !protocol.bytes().all(is_token_byte) {
            return Err(source.error(
                span,
                format!("subprotocol {protocol:?} must be a non-empty HTTP token"),
            ));
        }
        subprotocols.push(protocol);
    }

    let namespace = match raw.namespace {
        None => path.clone(),
        Some(ns) if ns.get_ref().is_empty() => {
            return Err(source.error(ns.span(), "namespace must not be empty"));
        }
        Some(ns) => ns.into_inner(),
    };

    let max_memory = match raw.max_memory {
        None => pool_memory,
        Some(v) if v.get_ref().0 < 1 << 16 => {
            return Err(source.error(v.span(), "must be at least 64 KiB (one WebAssembly page)"));
        }
        Some(v) if v.get_ref().0 > pool_memory => {
            return Err(source.error(
                v.span(),
                format!("must not exceed the top-level max-memory ({pool_memory} bytes), which sizes every instance slot"),
            ));
        }
        Some(v) => v.into_inner().0,
    };
    let mut dirs = Vec::with_capacity(raw.dirs.len());
    for dir in raw.dirs {
        let guest_span = dir.guest.span();
        let guest = dir.guest.into_inner();
        if !guest.starts_with('/') {
            return Err(source.error(
                guest_span,
                format!("guest path {guest:?} must be absolute, like \"/data\""),
            ));
        }
        let host_span = dir.host.span();
        let host = base.join(dir.host.into_inner());
        if !host.is_dir() {
            return Err(source.error(host_span, format!("folder not found: {}", host.display())));
        }
        dirs.push(DirGrant {
            host,
            guest,
            writable: dir.writable,
        });
    }
    let quarantine = Quarantine {
        traps: raw.quarantine_traps.unwrap_or(defaults::QUARANTINE_TRAPS),
        window: nonzero(source, raw.quarantine_window, defaults::QUARANTINE_WINDOW)?,
    };

    let values = match raw.config {
        None => BTreeMap::new(),
        Some(table) => {
            if let Some(key) = table
                .get_ref()
                .keys()
                .find(|k| k.len() > defaults::MAX_CONFIG_KEY)
            {
                return Err(source.error(
                    table.span(),
                    format!(
                        "config key {:?}... is {} bytes; keys may be at most {} bytes",
                        &key[..key.floor_char_boundary(32)],
                        key.len(),
                        defaults::MAX_CONFIG_KEY
                    ),
                ));
            }
            table.into_inner()
        }
    };
    let max_message_size = positive(source, raw.max_message_size, defaults::MAX_MESSAGE_SIZE)?;
    let write_queue_bytes = write_queue_bytes(source, raw.write_queue_bytes, max_message_size)?;
    Ok(RouteConfig {
        max_connections: match raw.max_connections {
            Some(v) if *v.get_ref() == 0 => {
                return Err(
                    source.error(v.span(), "must be at least 1 (leave it out for no limit)")
                );
            }
            v => v.map(Spanned::into_inner),
        },
        idle_timeout: raw
            .idle_timeout
            .map(|v| nonzero(source, Some(v), Duration::ZERO))
            .transpose()?,
        close_timeout: nonzero(source, raw.close_timeout, defaults::CLOSE_TIMEOUT)?,
        max_memory,
        compression: raw.compression == Compression::On,
        compression_threshold: raw
            .compression_threshold
            .map_or(defaults::COMPRESSION_THRESHOLD, |v| {
                usize::try_from(v.into_inner().0).unwrap_or(usize::MAX)
            }),
        quarantine,
        state: state_rules(
            source,
            raw.history_size,
            raw.history_ttl,
            raw.history_topics,
            raw.max_member,
            raw.store_keys,
            raw.store_bytes,
            raw.max_value,
        )?,
        grants: Grants { env: raw.env, dirs },
        on_reload: raw.on_reload,
        instance: raw.instance,
        namespace,
        values,
        path,
        plugin: PluginSource::File(plugin_path),
        allowed_origins: if any_origin {
            OriginPolicy::Any
        } else {
            OriginPolicy::List(origins)
        },
        subprotocols,
        max_message_size,
        ping_interval: nonzero(source, raw.ping_interval, defaults::PING_INTERVAL)?,
        pong_timeout: nonzero(source, raw.pong_timeout, defaults::PONG_TIMEOUT)?,
        write_queue: positive(source, raw.write_queue, defaults::WRITE_QUEUE)?,
        write_queue_bytes,
        max_topic_name: match raw.max_topic_name {
            None => defaults::MAX_TOPIC_NAME,
            Some(v) if v.get_ref().0 == 0 => {
                return Err(source.error(v.span(), "must be at least 1 byte"));
            }
            Some(v) => usize::try_from(v.into_inner().0).unwrap_or(usize::MAX),
        },
        max_subscriptions_per_connection: positive(
            source,
            raw.max_subscriptions_per_connection,
            defaults::MAX_SUBSCRIPTIONS_PER_CONNECTION,
        )?,
        max_subscriptions: positive(source, raw.max_subscriptions, defaults::MAX_SUBSCRIPTIONS)?,
        call_timeout: nonzero(source, raw.call_timeout, defaults::CALL_TIMEOUT)?,
    })
}

/// A route's state keys, each at its default when left out.
#[allow(clippy::too_many_arguments)]
fn state_rules(
    source: &Source,
    history_size: Option<u32>,
    history_ttl: Option<Spanned<HumanDuration>>,
    history_topics: Option<Spanned<usize>>,
    max_member: Option<Spanned<ByteSize>>,
    store_keys: Option<Spanned<usize>>,
    store_bytes: Option<Spanned<ByteSize>>,
    max_value: Option<Spanned<ByteSize>>,
) -> Result<StateRules, ConfigError> {
    let bytes = |value: Option<Spanned<ByteSize>>, default: u64| match value {
        None => Ok(default),
        Some(v) if v.get_ref().0 == 0 => Err(source.error(v.span(), "must be at least 1 byte")),
        Some(v) => Ok(v.into_inner().0),
    };
    let clamp = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    Ok(StateRules {
        history_size: history_size.unwrap_or(0),
        history_ttl: nonzero(source, history_ttl, defaults::HISTORY_TTL)?,
        history_topics: u32::try_from(positive(
            source,
            history_topics,
            defaults::HISTORY_TOPICS as usize,
        )?)
        .unwrap_or(u32::MAX),
        max_member: clamp(bytes(max_member, defaults::MAX_MEMBER as u64)?),
        store_keys: positive(source, store_keys, defaults::STORE_KEYS as usize)? as u64,
        store_bytes: bytes(store_bytes, defaults::STORE_BYTES)?,
        max_value: clamp(bytes(max_value, defaults::MAX_VALUE as u64)?),
    })
}

/// Routes that share a namespace share its history and store, so they must
/// bound them alike; the second route to differ is the error.
fn same_state_per_namespace(
    source: &Source,
    routes: &[RouteConfig],
    spans: &[Range<usize>],
) -> Result<(), ConfigError> {
    for (i, route) in routes.iter().enumerate() {
        if let Some(first) = routes[..i]
            .iter()
            .find(|r| r.namespace == route.namespace && r.state != route.state)
        {
            return Err(source.error(
                spans[i].clone(),
                format!(
                    "route {} shares namespace {:?} with route {} but sets other history or \
                     store keys (history-size, history-ttl, history-topics, max-member, \
                     store-keys, store-bytes, max-value); routes of one namespace must agree",
                    route.path, route.namespace, first.path
                ),
            ));
        }
    }
    Ok(())
}

/// A route's `write-queue-bytes`: at least its `max-message-size`, so that
/// the echo of the largest message a client may send can always be queued.
fn write_queue_bytes(
    source: &Source,
    value: Option<Spanned<ByteSize>>,
    max_message_size: usize,
) -> Result<usize, ConfigError> {
    let Some(value) = value else {
        return Ok(defaults::WRITE_QUEUE_BYTES.max(max_message_size));
    };
    let bytes = usize::try_from(value.get_ref().0).unwrap_or(usize::MAX);
    if bytes < max_message_size {
        return Err(source.error(
            value.span(),
            format!(
                "must be at least the route's max-message-size ({max_message_size} bytes), \
                 or the answer to a largest message could never be queued"
            ),
        ));
    }
    Ok(bytes)
}

/// Whether `b` may appear in an HTTP token (RFC 9110 section 5.6.2).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir();
        Config::from_toml(text, Path::new("berth.toml"), &dir)
    }

    #[test]
    fn subscription_and_name_bounds_have_defaults_and_refuse_zero_and_long_config_keys() {
        let route =
            |extra: &str| format!("[[route]]\npath = \"/r\"\nplugin = \"echo.wasm\"\n{extra}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        std::fs::write(dir.path().join("plugins/echo.wasm"), b"").unwrap();
        let load = |text: &str| Config::from_toml(text, Path::new("berth.toml"), dir.path());
        let r = load(&route("")).unwrap().routes.remove(0);
        assert_eq!(
            (
                r.max_topic_name,
                r.max_subscriptions_per_connection,
                r.max_subscriptions
            ),
            (256, 1024, 100_000)
        );
        let set = "max-topic-name = \"1KiB\"\nmax-subscriptions-per-connection = 8\nmax-subscriptions = 50";
        let r = load(&route(set)).unwrap().routes.remove(0);
        assert_eq!(
            (
                r.max_topic_name,
                r.max_subscriptions_per_connection,
                r.max_subscriptions
            ),
            (1024, 8, 50)
        );
        for zero in [
            "max-topic-name = 0",
            "max-subscriptions-per-connection = 0",
            "max-subscriptions = 0",
        ] {
            let err = load(&route(zero)).unwrap_err().to_string();
            assert!(err.contains("must be at least 1"), "{zero}: {err}");
        }
        let long_key = format!("[route.config]\n{} = \"v\"", "k".repeat(257));
        let err = load(&route(&long_key)).unwrap_err().to_string();
        assert!(err.contains("keys may be at most 256 bytes"), "{err}");
        let fits = format!("[route.config]\n{} = \"v\"", "k".repeat(256));
        assert_eq!(load(&route(&fits)).unwrap().routes[0].values.len(), 1);
    }

    #[test]
    fn write_queue_bytes_defaults_to_cover_max_message_size_and_may_not_be_below_it() {
        let route =
            |extra: &str| format!("[[route]]\npath = \"/r\"\nplugin = \"echo.wasm\"\n{extra}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        std::fs::write(dir.path().join("plugins/echo.wasm"), b"").unwrap();
        let bytes = |text: &str| {
            Config::from_toml(text, Path::new("berth.toml"), dir.path())
                .map(|c| c.routes[0].write_queue_bytes)
        };
        assert_eq!(bytes(&route("")).unwrap(), 1 << 20);
        assert_eq!(
            bytes(&route("max-message-size = 4194304")).unwrap(),
            4 << 20
        );
        assert_eq!(
            bytes(&route("write-queue-bytes = \"256KiB\"")).unwrap(),
            256 << 10
        );
        let err = bytes(&route("write-queue-bytes = 1000"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("at least the route's max-message-size"),
            "{err}"
        );
    }

    #[test]
    fn compression_is_on_by_default_and_its_keys_are_checked() {
        let route =
            |extra: &str| format!("[[route]]\npath = \"/r\"\nplugin = \"echo.wasm\"\n{extra}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        std::fs::write(dir.path().join("plugins/echo.wasm"), b"").unwrap();
        let compression = |text: &str| {
            Config::from_toml(text, Path::new("berth.toml"), dir.path())
                .map(|c| (c.routes[0].compression, c.routes[0].compression_threshold))
        };
        assert_eq!(compression(&route("")).unwrap(), (true, 1024));
        assert_eq!(
            compression(&route(
                "compression = \"off\"\ncompression-threshold = \"4KiB\""
            ))
            .unwrap(),
            (false, 4096)
        );
        assert_eq!(
            compression(&route("compression-threshold = 0")).unwrap(),
            (true, 0)
        );
        let err = compression(&route("compression = \"gzip\""))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("berth.toml:4:"), "{err}");
        assert!(err.contains("on") && err.contains("off"), "{err}");
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let err = parse("listen = \"127.0.0.1:1\"\nlisten-on = 3\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("berth.toml:2:1:"), "{text}");
        assert!(text.contains("listen-on"), "{text}");
    }

    #[test]
    fn bad_duration_names_line_and_column() {
        let err = parse("handshake-timeout = \"10 parsecs\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("berth.toml:1:21:"), "{text}");
        assert!(text.contains("invalid duration"), "{text}");
    }

    #[test]
    fn missing_plugin_names_its_path() {
        let err = parse("[[route]]\npath = \"/x\"\nplugin = \"nope.wasm\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("berth.toml:3:10:"), "{text}");
        assert!(text.contains("plugins/nope.wasm"), "{text}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64 MiB"), Some(64 << 20));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("1 GB"), None);
        let err = parse("max-memory = \"lots\"\n").unwrap_err().to_string();
        assert!(err.starts_with("berth.toml:1:14:"), "{err}");
    }

    #[test]
    fn drop_in_names() {
        let path = |name: &str| auto_route_path(Path::new(name));
        assert_eq!(path("/p/chat.wasm").as_deref(), Some("/chat"));
        assert_eq!(path("/p/my-game_2.wasm").as_deref(), Some("/my-game_2"));
        for ignored in [
            "/p/.chat.wasm",
            "/p/chat.wasm.tmp",
            "/p/chat.wasm~",
            "/p/.wasm",
            "/p/chat.WASM",
            "/p/sp ace.wasm",
            "/p/healthz.wasm",
            "/p/metrics.wasm",
        ] {
            assert_eq!(path(ignored), None, "{ignored}");
        }
    }

    #[test]
    fn broker_and_publish_api() {
        let config = parse(
            "[broker]\nurl = \"redis://:secret@127.0.0.1:6379/2\"\n\
             [publish-api]\ntokens = [\"0123456789abcdef\"]\nmax-body = \"1KiB\"\n",
        )
        .unwrap();
        let broker = config.broker.expect("a broker");
        assert_eq!(broker.channel_prefix, "berth:");
        assert!(broker.required);
        assert_eq!(broker.shown_url(), "redis://***@127.0.0.1:6379/2");
        assert!(!format!("{broker:?}").contains("secret"));
        assert_eq!(config.publish_api.max_body, 1024);
        assert!(!format!("{:?}", config.publish_api).contains("0123456789abcdef"));

        let config =
            parse("[broker]\nurl = \"redis://h:1\"\nchannel-prefix = \"a/\"\nrequired = false\n")
                .unwrap();
        let broker = config.broker.unwrap();
        assert_eq!(
            (broker.channel_prefix.as_str(), broker.required),
            ("a/", false)
        );
        assert!(
            config.publish_api.tokens.is_empty(),
            "the API is off by default"
        );

        let err = parse("[broker]\nurl = \"http://h:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("berth.toml:2:7:"), "{err}");
        let err = parse("[publish-api]\ntokens = [\"short\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 16"), "{err}");
        let err = parse("[publish-api]\ntokens = [\"has a space in it, too long\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("berth.toml:2:11:"), "{err}");
    }

    #[test]
    fn the_publish_api_prefix_is_reserved() {
        assert!(is_reserved("/healthz"));
        assert!(is_reserved("/publish/x"));
        assert!(!is_reserved("/publish"));
        assert!(!is_reserved("/publisher"));
        let err = parse("[[route]]\npath = \"/publish/x\"\nplugin = \"x.wasm\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("answered by berth itself"), "{err}");
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.listeners[0].address.to_string(), DEFAULT_LISTEN);
        assert!(config.routes.is_empty());
        assert_eq!(config.max_connections, defaults::MAX_CONNECTIONS);
        assert_eq!(config.admin_listen, None);
        assert_eq!(config.log_level, LevelFilter::INFO);
    }

    #[test]
    fn admin_listen_and_log_level() {
        let config = parse("admin-listen = \"127.0.0.1:9100\"\nlog-level = \"Debug\"\n").unwrap();
        assert_eq!(config.admin_listen, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(config.log_level, LevelFilter::DEBUG);
        let err = parse("log-level = \"loud\"\n").unwrap_err().to_string();
        assert!(err.starts_with("berth.toml:1:13:"), "{err}");
        let err = parse("[[route]]\npath = \"/metrics\"\nplugin = \"x.wasm\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("answered by berth itself"), "{err}");
    }
}
