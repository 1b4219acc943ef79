//! Configuration: one TOML file, read in two stages. Serde turns the text into
//! raw values (so a bad value or an unknown key is reported at its line and
//! column by the TOML parser), then [`Config::from_toml`] checks what serde
//! cannot and produces the plain values the server runs on.
//!
//! A [`Config`] has two halves: [`StartupConfig`], which the server reads
//! once as it starts (a reload that changes it only warns), and
//! [`LiveConfig`], which every reload applies.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tracing::level_filters::LevelFilter;

mod broker;
mod checks;
pub mod defaults;
mod listen;
mod load;
mod outbound;
mod raw;
mod route;
mod route_check;
mod state;
mod units;

pub use broker::{BrokerConfig, PublishApiConfig};
pub use listen::{DEFAULT_LISTEN, ListenerConfig, TlsFiles};
pub use outbound::{OutboundGrant, OutboundRules};
pub use route::{
    DirGrant, Grants, InstanceModel, OriginPolicy, PluginSource, QuarantineRule, ReloadPolicy,
    RouteConfig,
};
pub use state::{StateConfig, StateRules};

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

/// A validated configuration, ready to serve. The default is what a config
/// file that sets nothing gives, with its folders relative to the working
/// directory.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// What the server is built with: a reload leaves it as it is.
    pub startup: StartupConfig,
    /// What a reload replaces: the routes and the drop-in folder.
    pub live: LiveConfig,
}

impl Config {
    /// The route serving `path`, if any.
    pub fn route(&self, path: &str) -> Option<&RouteConfig> {
        self.live.routes.iter().find(|r| r.path == path)
    }
}

/// The settings read once as the server starts: sockets, limits, pools,
/// logging, the broker and the state store. A reload that changes one of
/// them warns that it takes effect at the next restart.
#[derive(Clone, Debug, PartialEq)]
pub struct StartupConfig {
    /// The sockets to listen on (at least one), each plain or TLS.
    pub listeners: Vec<ListenerConfig>,
    /// The most connections (HTTP or WebSocket) open at once; more get 503.
    pub max_connections: usize,
    /// The most connections one client IP address may have open at once;
    /// more get 429. `None`: no per-address limit.
    pub max_connections_per_ip: Option<usize>,
    /// How long a client has to send its HTTP request head after connecting.
    pub handshake_timeout: Duration,
    /// How many plugin instances may be alive at once (sizes the instance pool).
    pub max_instances: u32,
    /// The most linear memory one plugin instance may use, in bytes.
    pub max_memory: u64,
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

impl StartupConfig {
    /// The settings that differ between `self` and `other`, named as the
    /// config file spells them, for the warning a reload gives.
    pub fn differences(&self, other: &StartupConfig) -> Vec<&'static str> {
        // Taken apart field by field, so that a new setting cannot be left
        // out of the list without the compiler noticing.
        let StartupConfig {
            listeners,
            max_connections,
            max_connections_per_ip,
            handshake_timeout,
            max_instances,
            max_memory,
            cache_dir,
            demo_page,
            admin_listen,
            log_level,
            broker,
            publish_api,
            state:
                StateConfig {
                    dir: state_dir,
                    timeout: state_timeout,
                    presence_ttl,
                },
        } = self;
        [
            ("listen and [[listener]]", *listeners != other.listeners),
            ("max-connections", *max_connections != other.max_connections),
            (
                "handshake-timeout",
                *handshake_timeout != other.handshake_timeout,
            ),
            (
                "max-connections-per-ip",
                *max_connections_per_ip != other.max_connections_per_ip,
            ),
            ("max-instances", *max_instances != other.max_instances),
            ("max-memory", *max_memory != other.max_memory),
            ("cache-dir", *cache_dir != other.cache_dir),
            ("admin-listen", *admin_listen != other.admin_listen),
            ("log-level", *log_level != other.log_level),
            ("[broker]", *broker != other.broker),
            ("state-dir", *state_dir != other.state.dir),
            ("state-timeout", *state_timeout != other.state.timeout),
            ("presence-ttl", *presence_ttl != other.state.presence_ttl),
            ("[publish-api]", *publish_api != other.publish_api),
            ("the demo page", *demo_page != other.demo_page),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }
}

impl Default for StartupConfig {
    fn default() -> Self {
        StartupConfig {
            listeners: vec![ListenerConfig::plain(
                DEFAULT_LISTEN.parse().expect("a valid default"),
            )],
            max_connections: defaults::MAX_CONNECTIONS,
            max_connections_per_ip: None,
            handshake_timeout: defaults::HANDSHAKE_TIMEOUT,
            max_instances: defaults::MAX_INSTANCES,
            max_memory: defaults::MAX_MEMORY,
            cache_dir: crate::folders::default_cache_dir(),
            demo_page: false,
            admin_listen: None,
            log_level: LevelFilter::INFO,
            broker: None,
            publish_api: PublishApiConfig::default(),
            state: StateConfig::in_dir(PathBuf::from(defaults::STATE_DIR)),
        }
    }
}

/// The settings a reload applies: which routes there are and how each is
/// served. A route whose settings change gets a new version.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveConfig {
    /// The routes, each with its own plugin.
    pub routes: Vec<RouteConfig>,
    /// The folder plugin paths are relative to, and where drop-in plugins go.
    pub plugin_dir: PathBuf,
    /// Whether every `NAME.wasm` in `plugin_dir` is served at `/NAME`.
    pub auto_routes: bool,
    /// Which browser origins drop-in routes accept: same-origin from a config
    /// file, any in the demo.
    pub auto_route_origins: OriginPolicy,
}

impl LiveConfig {
    /// The folders plugins come from: the drop-in folder, then the folder of
    /// each configured route's plugin file.
    pub fn plugin_folders(&self) -> Vec<PathBuf> {
        let mut folders = vec![self.plugin_dir.clone()];
        for route in &self.routes {
            if let PluginSource::File(file) = &route.plugin
                && let Some(folder) = file.parent()
            {
                folders.push(folder.to_path_buf());
            }
        }
        folders
    }
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            routes: Vec::new(),
            plugin_dir: PathBuf::from(defaults::PLUGIN_DIR),
            auto_routes: false,
            auto_route_origins: OriginPolicy::List(Vec::new()),
        }
    }
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
        let startup = &mut config.startup;
        if let Some(listen) = self.listen {
            startup.listeners = vec![ListenerConfig::plain(listen)];
        }
        if let Some(dir) = &self.cache_dir {
            startup.cache_dir = (!dir.as_os_str().is_empty()).then(|| dir.clone());
        }
        if let Some(dir) = &self.state_dir {
            startup.state.dir = dir.clone();
        }
    }
}

/// `text` read as `berth.toml` in the temporary folder: the tests' config.
#[cfg(test)]
fn parse(text: &str) -> Result<Config, ConfigError> {
    let dir = std::env::temp_dir();
    Config::from_toml(text, std::path::Path::new("berth.toml"), &dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_changed_setting_as_the_file_spells_it() {
        let running = StartupConfig::default();
        assert!(running.differences(&running.clone()).is_empty());
        let mut next = running.clone();
        next.max_connections += 1;
        next.state.presence_ttl += Duration::from_secs(1);
        next.broker = Some(BrokerConfig {
            url: "redis://127.0.0.1:6379".into(),
            channel_prefix: defaults::CHANNEL_PREFIX.into(),
            required: true,
        });
        assert_ne!(next, running);
        assert_eq!(
            next.differences(&running),
            ["max-connections", "[broker]", "presence-ttl"]
        );
    }
}
