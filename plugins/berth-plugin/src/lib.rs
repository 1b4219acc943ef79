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
//!     fn on_message(conn: ConnectionId, msg: Message<'_>) {
//!         // A failed send means the client is gone or too slow; the host closes it.
//!         let _ = host::send(conn, msg);
//!     }
//! }
//!
//! berth_plugin::export!(Echo);
//! ```
//!
//! `cargo build --release --target wasm32-wasip2` then writes the component to
//! `target/wasm32-wasip2/release/<crate>.wasm`, ready for a route in berth's config.
//!
//! The host hands an instance every event that is waiting for it in one call
//! (the contract's `on-events`); this crate calls [`Plugin::on_message`],
//! [`Plugin::on_close`] and [`Plugin::on_timer`] once per event, in order, with
//! messages borrowed from that call's buffer: nothing is copied on the way in.
//!
//! The host calls an instance one batch at a time, never concurrently, so a
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
        // Outgoing messages are lent to the host call, not copied into an
        // owned value first.
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

use __bindings::berth::plugin::host as raw;
use __bindings::berth::plugin::types::{Event, Message as Outgoing, MessageKind};
use __bindings::exports::berth::plugin::handler::Guest;

pub use __bindings::berth::plugin::types::{
    Accept, ConnError, ConnectionId, LogLevel, PublishError, Reject, Request, TimerError, TimerId,
};

/// A data message: text or bytes, borrowed from the call that delivered it
/// (or from the plugin, to send). Copy what must outlive the handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

impl<'a> Message<'a> {
    /// A text message.
    pub fn text(text: &'a str) -> Self {
        Message::Text(text)
    }

    /// A binary message.
    pub fn binary(bytes: &'a [u8]) -> Self {
        Message::Binary(bytes)
    }

    /// The text of a text message, or `None` for a binary one.
    pub fn as_text(&self) -> Option<&'a str> {
        match *self {
            Message::Text(text) => Some(text),
            Message::Binary(_) => None,
        }
    }

    /// The message's bytes: a text message's UTF-8, or a binary message's bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
        }
    }

    /// The message as the contract carries it out: the bytes are lent, not copied.
    fn lend(self) -> Outgoing<'a> {
        match self {
            Message::Text(text) => Outgoing::Text(text),
            Message::Binary(bytes) => Outgoing::Binary(bytes),
        }
    }
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseInfo<'a> {
    /// The WebSocket close code; 1006 when the peer vanished (see the WIT for the others).
    pub code: u16,
    /// The close reason; may be empty.
    pub reason: &'a str,
}

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
    fn on_message(conn: ConnectionId, msg: Message<'_>) {
        let _ = (conn, msg);
    }

    /// `conn` has ended (called once per accepted connection; it can no longer be sent to).
    fn on_close(conn: ConnectionId, info: CloseInfo<'_>) {
        let _ = (conn, info);
    }

    /// A timer set with [`host::set_timer`] fired; `token` is the value given then.
    fn on_timer(token: u64) {
        let _ = token;
    }
}

/// The bytes of `start..start + len` in `payload`; empty if the host sent a span outside it.
fn span(payload: &[u8], start: u32, len: u32) -> &[u8] {
    let start = start as usize;
    payload
        .get(start..start.saturating_add(len as usize))
        .unwrap_or_default()
}

/// Text the host has checked; checked again here, which costs little beside
/// the call, rather than trusted with `unsafe`.
fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

// A blanket impl rather than a wrapper type, because the generated export
// macro accepts only a bare type name.
impl<T: Plugin> Guest for T {
    fn on_connect(conn: ConnectionId, req: Request) -> Result<Accept, Reject> {
        <T as Plugin>::on_connect(conn, req)
    }

    fn on_events(payload: Vec<u8>, events: Vec<Event>) {
        for (index, event) in events.into_iter().enumerate() {
            // Tells the host where a failure would leave the batch, so that
            // the events after a failed one are not lost.
            if index > 0 {
                raw::handling(index as u32);
            }
            match event {
                Event::Message(m) => {
                    let bytes = span(&payload, m.start, m.len);
                    let msg = match m.kind {
                        MessageKind::Text => Message::Text(text(bytes)),
                        MessageKind::Binary => Message::Binary(bytes),
                    };
                    <T as Plugin>::on_message(m.conn, msg);
                }
                Event::Close(c) => {
                    let reason = text(span(&payload, c.start, c.len));
                    let info = CloseInfo {
                        code: c.code,
                        reason,
                    };
                    <T as Plugin>::on_close(c.conn, info);
                }
                Event::Timer(token) => <T as Plugin>::on_timer(token),
            }
        }
    }
}

/// Exports a type implementing [`Plugin`] as the component's handler; use it once per plugin.
#[macro_export]
macro_rules! export {
    ($ty:ident) => {
        $crate::__bindings::export!($ty with_types_in $crate::__bindings);
    };
}

/// What a plugin may ask of the host: every call is checked, and takes effect at once.
pub mod host {
    use super::raw;
    pub use super::raw::{cancel_timer, config_get, set_timer, subscribe, unsubscribe};
    use crate::{ConnError, ConnectionId, Message, PublishError};

    /// Queues `msg` for `conn`; messages to one connection arrive in the order sent.
    pub fn send(conn: ConnectionId, msg: Message<'_>) -> Result<(), ConnError> {
        raw::send(conn, msg.lend())
    }

    /// Starts closing `conn` with `code` and `reason` (cut to 123 bytes), after what is queued.
    pub fn close(conn: ConnectionId, code: u16, reason: &str) -> Result<(), ConnError> {
        raw::close(conn, code, reason)
    }

    /// Sends `msg` to every subscriber of `topic` but `exclude`; returns how
    /// many it is for. Fails only for a message larger than the route's
    /// `write-queue-bytes`, which reaches nobody.
    pub fn publish(
        topic: &str,
        msg: Message<'_>,
        exclude: Option<ConnectionId>,
    ) -> Result<u32, PublishError> {
        raw::publish(topic, msg.lend(), exclude)
    }

    /// Writes `message` to the host's log at `level`.
    pub fn log(level: crate::LogLevel, message: &str) {
        raw::log(level, message)
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
