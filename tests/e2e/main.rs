//! End-to-end tests: the real berth server on 127.0.0.1 port 0, real WebSocket
//! clients, and the real plugins built from `plugins/`.

mod backend;
mod binary;
mod browser;
mod capabilities;
mod cluster;
mod compression;
mod handshake;
mod hostile_clients;
mod hostile_plugins;
mod http_conformance;
mod languages;
mod lifecycle;
mod listeners;
mod metrics;
mod outbound;
mod outbound_js;
mod outbound_python;
mod raw;
mod reload;
mod state;
mod support;
mod tooling;
mod topics;
