//! Every setting's default, also used by the README's config reference.

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
/// Plugin paths are relative to `plugins` beside the config file.
pub const PLUGIN_DIR: &str = "plugins";
/// The embedded state store lives in `state` beside the config file.
pub const STATE_DIR: &str = "state";
/// An outbound request may take 10 seconds, redirects and body included.
pub const OUTBOUND_TIMEOUT: Duration = Duration::from_secs(10);
/// Outbound request and response bodies of up to 1 MiB.
pub const OUTBOUND_BODY_BYTES: usize = 1 << 20;
/// 16 outbound requests waiting per instance...
pub const OUTBOUND_IN_FLIGHT: usize = 16;
/// ...and 256 per route.
pub const OUTBOUND_IN_FLIGHT_ROUTE: usize = 256;
