//! berth: a WebSocket port listener whose message handlers are sandboxed
//! WebAssembly components.
//!
//! Data flows one way: [`listener`] accepts sockets (PROXY header, limits,
//! TLS), `http` answers plain requests and checks upgrades (`handshake`),
//! `session` runs each connection, the [`runtime`] calls the route's plugin,
//! and the plugin's host calls feed the sessions' outbound queues. Beside that
//! flow, [`reload`] builds route versions and publishes the routing table
//! (`router`) that `http` reads; [`server`] starts and stops it all. Topics
//! (`pubsub`) reach other nodes through Redis when configured ([`cluster`]),
//! and backends publish to them over HTTP (`publish_api`). Topic history,
//! members and the plugins' key-value stores live in [`state`]. `metrics` owns the
//! Prometheus registry; each of those modules counts with handles it hands
//! out, resolved once per route version.

#![deny(missing_docs)]

mod admission;
pub mod check;
mod client_addr;
mod close_code;
pub mod cluster;
pub mod config;
pub mod demo;
mod extensions;
pub mod folders;
mod http;
pub mod listener;
mod metrics;
mod outbox;
mod publish_api;
mod pubsub;
pub mod reload;
mod router;
pub mod runtime;
pub mod scaffold;
pub mod server;
mod session;
pub mod state;
mod upgrade;
mod watch;

pub use config::Config;
pub use reload::ReloadHandle;
pub use server::{ServeError, ServeOptions, Server};
