//! The demo served when berth runs without a config file: its plugins are
//! compiled into the binary, so it works straight from a fresh clone.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::{
    Config, ListenerConfig, LiveConfig, OriginPolicy, PluginSource, RouteConfig, StartupConfig,
    StateConfig, StateRules,
};
use crate::folders::user_dir;

macro_rules! plugin {
    ($name:literal) => {
        PluginSource::Embedded {
            name: concat!($name, ".wasm"),
            bytes: include_bytes!(concat!(env!("BERTH_PLUGIN_DIR"), "/", $name, ".wasm")),
        }
    };
}

fn route(path: &str, plugin: PluginSource) -> RouteConfig {
    RouteConfig {
        // The demo listens on loopback and holds nothing private, so pages
        // from any origin (a browser console, a local HTML file) may try it.
        allowed_origins: OriginPolicy::Any,
        ..RouteConfig::with_defaults(path.to_string(), plugin)
    }
}

/// The demo: `/echo`, `/chat`, `/ticker` and `/auth` (token `let-me-in`) on
/// `listen`, and every `NAME.wasm` dropped into `plugin_dir` at `/NAME`.
pub fn config(listen: SocketAddr, plugin_dir: PathBuf) -> Config {
    Config {
        startup: StartupConfig {
            listeners: vec![ListenerConfig::plain(listen)],
            state: StateConfig::in_dir(default_state_dir()),
            demo_page: true,
            ..StartupConfig::default()
        },
        live: LiveConfig {
            plugin_dir,
            auto_routes: true,
            auto_route_origins: OriginPolicy::Any,
            routes: vec![
                route("/echo", plugin!("echo")),
                RouteConfig {
                    // A room's messages outlive its members and restarts of berth.
                    state: StateRules {
                        history_size: 1000,
                        ..StateRules::default()
                    },
                    ..route("/chat", plugin!("chat"))
                },
                route("/ticker", plugin!("ticker")),
                route("/auth", plugin!("auth")),
            ],
        },
    }
}

/// The folder where the build put the compiled plugins (echo, chat, auth, testkit).
pub const BUILT_PLUGIN_DIR: &str = env!("BERTH_PLUGIN_DIR");

/// Where the demo looks for drop-in plugins unless `--plugin-dir` says
/// otherwise: `$XDG_DATA_HOME/berth/plugins`, else `~/.local/share/berth/plugins`,
/// else a folder under the system's temporary directory.
pub fn default_plugin_dir() -> PathBuf {
    user_dir("XDG_DATA_HOME", ".local/share")
        .map(|dir| dir.join("berth/plugins"))
        .unwrap_or_else(|| std::env::temp_dir().join("berth-plugins"))
}

/// Where the demo keeps its store unless `--state-dir` says otherwise:
/// `state` beside its default plugin folder, `$XDG_DATA_HOME/berth/state`
/// (else `~/.local/share/berth/state`, else under the temporary folder).
pub fn default_state_dir() -> PathBuf {
    user_dir("XDG_DATA_HOME", ".local/share")
        .map(|dir| dir.join("berth/state"))
        .unwrap_or_else(|| std::env::temp_dir().join("berth-state"))
}
