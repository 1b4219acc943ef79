//! The demo served when berth runs without a config file: its plugins are
//! compiled into the binary, so it works straight from a fresh clone.

use std::net::SocketAddr;

use crate::config::{Config, InstanceModel, OriginPolicy, PluginSource, RouteConfig, defaults};

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
        path: path.to_string(),
        plugin,
        // The demo listens on loopback and holds nothing private, so pages
        // from any origin (a browser console, a local HTML file) may try it.
        allowed_origins: OriginPolicy::Any,
        subprotocols: Vec::new(),
        max_message_size: defaults::MAX_MESSAGE_SIZE,
        ping_interval: defaults::PING_INTERVAL,
        pong_timeout: defaults::PONG_TIMEOUT,
        write_queue: defaults::WRITE_QUEUE,
        call_timeout: defaults::CALL_TIMEOUT,
        instance: InstanceModel::Route,
        namespace: path.to_string(),
        values: Default::default(),
    }
}

/// The demo: `/echo`, `/chat`, `/ticker` and `/auth` (token `let-me-in`) on `listen`.
pub fn config(listen: SocketAddr) -> Config {
    Config {
        listen,
        max_connections: defaults::MAX_CONNECTIONS,
        handshake_timeout: defaults::HANDSHAKE_TIMEOUT,
        max_instances: defaults::MAX_INSTANCES,
        max_memory: defaults::MAX_MEMORY,
        routes: vec![
            route("/echo", plugin!("echo")),
            route("/chat", plugin!("chat")),
            route("/ticker", plugin!("ticker")),
            route("/auth", plugin!("auth")),
        ],
    }
}

/// The folder where the build put the compiled plugins (echo, chat, auth, testkit).
pub const BUILT_PLUGIN_DIR: &str = env!("BERTH_PLUGIN_DIR");
