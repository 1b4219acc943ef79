//! The config file as serde reads it: every key, its type and its place in
//! the text, before anything is checked. Unknown keys are refused here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::route::{InstanceModel, ReloadPolicy};
use super::units::{ByteSize, HumanDuration};

/// The whole file: the top-level keys and its tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawConfig {
    pub(super) listen: Option<Spanned<SocketAddr>>,
    #[serde(default, rename = "listener")]
    pub(super) listeners: Vec<RawListener>,
    pub(super) plugin_dir: Option<PathBuf>,
    #[serde(default)]
    pub(super) auto_routes: bool,
    pub(super) cache_dir: Option<PathBuf>,
    pub(super) admin_listen: Option<Spanned<SocketAddr>>,
    pub(super) log_level: Option<Spanned<String>>,
    pub(super) max_connections: Option<Spanned<usize>>,
    pub(super) max_connections_per_ip: Option<Spanned<usize>>,
    pub(super) handshake_timeout: Option<Spanned<HumanDuration>>,
    pub(super) max_instances: Option<Spanned<usize>>,
    pub(super) max_memory: Option<Spanned<ByteSize>>,
    #[serde(default, rename = "route")]
    pub(super) routes: Vec<RawRoute>,
    pub(super) broker: Option<RawBroker>,
    pub(super) publish_api: Option<RawPublishApi>,
    pub(super) state_dir: Option<PathBuf>,
    pub(super) state_timeout: Option<Spanned<HumanDuration>>,
    pub(super) presence_ttl: Option<Spanned<HumanDuration>>,
}

/// `[broker]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawBroker {
    pub(super) url: Spanned<String>,
    pub(super) channel_prefix: Option<String>,
    pub(super) required: Option<bool>,
}

/// `[publish-api]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawPublishApi {
    #[serde(default)]
    pub(super) tokens: Vec<Spanned<String>>,
    pub(super) max_body: Option<Spanned<ByteSize>>,
}

/// One `[[route]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawRoute {
    pub(super) path: Spanned<String>,
    pub(super) plugin: Spanned<PathBuf>,
    #[serde(default)]
    pub(super) allowed_origins: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) subprotocols: Vec<Spanned<String>>,
    pub(super) max_message_size: Option<Spanned<usize>>,
    pub(super) ping_interval: Option<Spanned<HumanDuration>>,
    pub(super) pong_timeout: Option<Spanned<HumanDuration>>,
    pub(super) write_queue: Option<Spanned<usize>>,
    pub(super) write_queue_bytes: Option<Spanned<ByteSize>>,
    pub(super) max_topic_name: Option<Spanned<ByteSize>>,
    pub(super) max_subscriptions_per_connection: Option<Spanned<usize>>,
    pub(super) max_subscriptions: Option<Spanned<usize>>,
    pub(super) call_timeout: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    pub(super) instance: InstanceModel,
    pub(super) namespace: Option<Spanned<String>>,
    pub(super) config: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    pub(super) on_reload: ReloadPolicy,
    pub(super) max_connections: Option<Spanned<usize>>,
    pub(super) idle_timeout: Option<Spanned<HumanDuration>>,
    pub(super) close_timeout: Option<Spanned<HumanDuration>>,
    pub(super) max_memory: Option<Spanned<ByteSize>>,
    #[serde(default)]
    pub(super) compression: Compression,
    pub(super) compression_threshold: Option<Spanned<ByteSize>>,
    pub(super) quarantine_traps: Option<u32>,
    pub(super) quarantine_window: Option<Spanned<HumanDuration>>,
    #[serde(default)]
    pub(super) env: BTreeMap<String, String>,
    #[serde(default, rename = "dir")]
    pub(super) dirs: Vec<RawDir>,
    pub(super) history_size: Option<u32>,
    pub(super) history_ttl: Option<Spanned<HumanDuration>>,
    pub(super) history_topics: Option<Spanned<usize>>,
    pub(super) max_member: Option<Spanned<ByteSize>>,
    pub(super) store_keys: Option<Spanned<usize>>,
    pub(super) store_bytes: Option<Spanned<ByteSize>>,
    pub(super) max_value: Option<Spanned<ByteSize>>,
    #[serde(default)]
    pub(super) allowed_outbound: Vec<Spanned<String>>,
    pub(super) outbound_timeout: Option<Spanned<HumanDuration>>,
    pub(super) outbound_body_bytes: Option<Spanned<ByteSize>>,
    pub(super) outbound_in_flight: Option<Spanned<usize>>,
    pub(super) outbound_in_flight_route: Option<Spanned<usize>>,
}

/// One `[[listener]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawListener {
    pub(super) address: Spanned<SocketAddr>,
    pub(super) tls_cert: Option<Spanned<PathBuf>>,
    pub(super) tls_key: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub(super) proxy_protocol: bool,
    #[serde(default)]
    pub(super) trusted_proxies: Vec<Spanned<String>>,
}

/// One `[[route.dir]]` table: a folder granted to the plugin.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawDir {
    pub(super) host: Spanned<PathBuf>,
    pub(super) guest: Spanned<String>,
    #[serde(default)]
    pub(super) writable: bool,
}

/// A route's `compression`: whether permessage-deflate is negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum Compression {
    /// Offers are accepted; messages under the threshold still go plain.
    #[default]
    On,
    /// Offers are declined.
    Off,
}
