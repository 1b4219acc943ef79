//! berth: a WebSocket port listener whose message handlers are sandboxed
//! WebAssembly components.
//!
//! Data flows one way: [`server`] accepts sockets, `http` answers plain requests
//! and checks upgrades (`handshake`), `session` runs each connection, the
//! [`runtime`] calls the route's plugin, and the plugin's host calls feed the
//! sessions' outbound queues.

#![warn(missing_docs)]

pub mod config;
pub mod demo;
mod handshake;
mod http;
mod outbox;
mod pubsub;
mod router;
pub mod runtime;
pub mod server;
mod session;

pub use config::Config;
pub use server::{ServeError, Server};
