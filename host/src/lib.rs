//! berth: a WebSocket port listener whose message handlers are sandboxed
//! WebAssembly components.
//!
//! # Layout
//!
//! A connection's path, in the order it happens; each step hands the
//! connection to the next, and no step imports from a later one except to
//! hand over:
//!
//! 1. `listener.rs`: accepts sockets, reads the PROXY header (with
//!    `client_addr.rs`), runs the TLS handshake.
//! 2. `admission.rs`: every cap on open connections (the server's and per
//!    client address, taken here; per forwarded client and per route, taken
//!    by the next steps).
//! 3. `http.rs`: hyper on every socket: `/healthz`, `/metrics`, the demo page,
//!    `publish_api.rs`, refusals; an upgrade request goes on.
//! 4. `upgrade/`: the request checks (`checks.rs`, with `extensions.rs` for
//!    permessage-deflate), the plugin's `on-connect`, the 101 answer.
//! 5. `session/`: the connection after 101: `mod.rs` its loop, `reader/`
//!    inbound frames, `wire/` outbound frames, `deflate.rs` compression,
//!    `gate.rs` its wake-ups, `spares.rs` reused buffers.
//! 6. `runtime/`: a route's plugin: `handle.rs` the queue sessions send
//!    events to (`queue.rs`), `worker.rs` the thread that batches them
//!    (`batch.rs`) and calls the plugin, `instances.rs` and `store.rs` its
//!    instances, `imports.rs` and `state_calls.rs` what its imports do,
//!    `connect.rs` what its answer to a new connection becomes, with
//!    `timers.rs`, `requests.rs` (outbound requests in flight), `stdio.rs`,
//!    `limits.rs`, `quarantine.rs`, `cache.rs` and the generated
//!    `bindings.rs`.
//! 7. Back to the socket: `outbox/`, each connection's outbound queue, which
//!    the plugin's sends and `pubsub.rs`'s topic fan-out fill and the session
//!    drains.
//!
//! Beside the path: `server.rs` builds it all and holds what every step
//! shares; `config/` reads the TOML file (`demo.rs` when there is none,
//! `folders.rs` for per-user folders); `reload.rs` builds route versions
//! from it and the plugin files (`watch.rs` sees them change) and publishes
//! them to `router.rs`; `cluster/` carries topics between nodes through
//! Redis; `fetch.rs` sends plugins' outbound HTTP requests to the origins
//! their route grants; `state/` keeps topic history, members and each namespace's
//! key-value store, embedded or in Redis; `metrics/` owns the Prometheus
//! registry; `close_code.rs` says which close codes may travel. The
//! command line (`main.rs`) adds `check/` (`berth check`) and `scaffold.rs`
//! (`berth new`).

#![deny(missing_docs)]

mod admission;
pub mod check;
mod client_addr;
mod close_code;
pub mod cluster;
pub mod config;
pub mod demo;
mod extensions;
mod fetch;
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
