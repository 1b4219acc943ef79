//! Write berth plugins in Rust.
//!
//! A plugin is a `cdylib` crate built for `wasm32-wasip2`: a type implements
//! [`Plugin`], handling only the events it cares about, and [`export!`] makes
//! it the component's handler. This one sends every message back to its sender:
//!
//! ```no_run
//! use berth_plugin::{ConnectionId, Message, Plugin, host};
//!
//! struct Echo;
//!
//! impl Plugin for Echo {
//!     fn on_message(conn: ConnectionId, msg: Message) {
//!         // A failed send means the client is gone or too slow; the host closes it.
//!         let _ = host::send(conn, &msg);
//!     }
//! }
//!
//! berth_plugin::export!(Echo);
//! ```
//!
//! `cargo build --release --target wasm32-wasip2` then writes the component to
//! `target/wasm32-wasip2/release/<crate>.wasm`, ready for a route in berth's config.
//!
//! The host calls an instance one event at a time, never concurrently, so a
//! plugin keeps its state in `thread_local!` cells. In the `route` instance model
//! that state is shared by every connection of the route; in the `connection`
//! model each connection has its own instance and so its own state.

/// The bindings generated from `wit/berth.wit`; use the re-exports instead.
#[doc(hidden)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "berth:plugin/plugin",
        // The macro is expanded in the plugin's crate, which reaches the
        // bindings (and wit-bindgen's runtime) through this crate alone.
        pub_export_macro: true,
        default_bindings_module: "berth_plugin::__bindings",
    });
}

use __bindings::exports::berth::plugin::handler::Guest;

pub use __bindings::berth::plugin::host;
pub use __bindings::berth::plugin::types::{
    Accept, CloseInfo, ConnError, ConnectionId, LogLevel, Message, Reject, Request, TimerError,
    TimerId,
};

/// The events a plugin handles; each one defaults to doing nothing (accepting, for `on_connect`).
///
/// The functions take no `self`: the host calls them as free functions, and
/// whatever state a plugin keeps lives in the instance (see the crate docs).
pub trait Plugin {
    /// A client asks to open a connection; `Err` refuses the upgrade with an HTTP status.
    fn on_connect(conn: ConnectionId, req: Request) -> Result<Accept, Reject> {
        let _ = (conn, req);
        Ok(Accept::new())
    }

    /// A complete data message arrived on `conn`.
    fn on_message(conn: ConnectionId, msg: Message) {
        let _ = (conn, msg);
    }

    /// `conn` has ended (called once per accepted connection; it can no longer be sent to).
    fn on_close(conn: ConnectionId, info: CloseInfo) {
        let _ = (conn, info);
    }

    /// A timer set with [`host::set_timer`] fired; `token` is the value given then.
    fn on_timer(token: u64) {
        let _ = token;
    }
}

// A blanket impl rather than a wrapper type, because the generated export
// macro accepts only a bare type name.
impl<T: Plugin> Guest for T {
    fn on_connect(conn: ConnectionId, req: Request) -> Result<Accept, Reject> {
        <T as Plugin>::on_connect(conn, req)
    }

    fn on_message(conn: ConnectionId, msg: Message) {
        <T as Plugin>::on_message(conn, msg)
    }

    fn on_close(conn: ConnectionId, info: CloseInfo) {
        <T as Plugin>::on_close(conn, info)
    }

    fn on_timer(token: u64) {
        <T as Plugin>::on_timer(token)
    }
}

/// Exports a type implementing [`Plugin`] as the component's handler; use it once per plugin.
#[macro_export]
macro_rules! export {
    ($ty:ident) => {
        $crate::__bindings::export!($ty with_types_in $crate::__bindings);
    };
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<String>) -> Self {
        Message::Text(text.into())
    }

    /// A binary message.
    pub fn binary(bytes: impl Into<Vec<u8>>) -> Self {
        Message::Binary(bytes.into())
    }

    /// The text of a text message, or `None` for a binary one.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(text) => Some(text),
            Message::Binary(_) => None,
        }
    }
}

impl Accept {
    /// Accepts the connection without a subprotocol.
    pub fn new() -> Self {
        Accept { subprotocol: None }
    }

    /// Accepts the connection with `subprotocol`, which must be one of [`Request::subprotocols`].
    pub fn with_subprotocol(subprotocol: impl Into<String>) -> Self {
        Accept {
            subprotocol: Some(subprotocol.into()),
        }
    }
}

impl Default for Accept {
    /// Accepts the connection without a subprotocol.
    fn default() -> Self {
        Accept::new()
    }
}

impl Reject {
    /// Refuses the connection with HTTP `status` (400..=599) and `reason` as the body.
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Reject {
            status,
            reason: reason.into(),
        }
    }
}

impl Request {
    /// The query's `name=value` pairs in order, as sent (not percent-decoded); parts without `=` are skipped.
    pub fn query_params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.query
            .as_deref()
            .unwrap_or_default()
            .split('&')
            .filter_map(|pair| pair.split_once('='))
    }

    /// The value of the first query pair named `name`, as sent (not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query_params()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }

    /// The value of the first header named `name`, compared without regard to case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Writes lines to the host's log, which tags them with the route and connection.
pub mod log {
    use crate::{LogLevel, host};

    /// Logs `message` as an error.
    pub fn error(message: &str) {
        host::log(LogLevel::Error, message);
    }

    /// Logs `message` as a warning.
    pub fn warn(message: &str) {
        host::log(LogLevel::Warn, message);
    }

    /// Logs `message` at info level.
    pub fn info(message: &str) {
        host::log(LogLevel::Info, message);
    }

    /// Logs `message` at debug level.
    pub fn debug(message: &str) {
        host::log(LogLevel::Debug, message);
    }

    /// Logs `message` at trace level.
    pub fn trace(message: &str) {
        host::log(LogLevel::Trace, message);
    }
}
