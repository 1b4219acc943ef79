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
use __bindings::berth::plugin::types::{ConnectAnswer, Event, Message as Outgoing, MessageKind};
use __bindings::exports::berth::plugin::handler::Guest;

pub use __bindings::berth::plugin::state::{HistoryError, Member, StateError};
pub use __bindings::berth::plugin::types::{
    AcceptResult as Accept, ConnError, ConnectionId, LogLevel, OutboundError, Position,
    PublishError, Published, RejectResult as Reject, Request, RequestId, TimerError, TimerId,
};

/// A position's text form, `EPOCH-SEQ` with the epoch as 16 hex digits
/// (`00a1b2c3d4e5f607-42`): what a client keeps and sends back to resume.
impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}-{}", self.epoch, self.seq)
    }
}

impl Position {
    /// Reads a position's text form; `None` for anything else, so a
    /// malformed `?since=` reads as no position at all.
    pub fn parse(text: &str) -> Option<Position> {
        let (epoch, seq) = text.split_once('-')?;
        let digits = |text: &str, hex: bool| {
            !text.is_empty()
                && text.bytes().all(|b| match hex {
                    true => b.is_ascii_hexdigit(),
                    false => b.is_ascii_digit(),
                })
        };
        if epoch.len() != 16 || !digits(epoch, true) || !digits(seq, false) {
            return None;
        }
        Some(Position {
            epoch: u64::from_str_radix(epoch, 16).ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

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

/// What [`Plugin::on_connect`] decides about a new connection.
#[derive(Clone, Debug)]
pub enum Connect {
    /// Open it now.
    Accept(Accept),
    /// Refuse the upgrade with an HTTP status.
    Reject(Reject),
    /// Decide later with [`host::accept`] or [`host::reject`], before the
    /// route's `handshake-timeout` (after which the client gets 503): say,
    /// once a backend asked with [`outbound::fetch`] has answered.
    Pending,
}

impl From<Accept> for Connect {
    fn from(accept: Accept) -> Self {
        Connect::Accept(accept)
    }
}

impl From<Reject> for Connect {
    fn from(reject: Reject) -> Self {
        Connect::Reject(reject)
    }
}

impl From<Result<Accept, Reject>> for Connect {
    fn from(answer: Result<Accept, Reject>) -> Self {
        match answer {
            Ok(accept) => Connect::Accept(accept),
            Err(reject) => Connect::Reject(reject),
        }
    }
}

/// The events a plugin handles; each one defaults to doing nothing (accepting, for `on_connect`).
///
/// The functions take no `self`: the host calls them as free functions, and
/// whatever state a plugin keeps lives in the instance (see the crate docs).
pub trait Plugin {
    /// A client asks to open a connection: accept it, refuse it with an
    /// HTTP status, or leave it pending and decide later.
    fn on_connect(conn: ConnectionId, req: Request) -> Connect {
        let _ = (conn, req);
        Connect::Accept(Accept::new())
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

    /// The answer to an outbound request started with [`outbound::send`]
    /// (requests started with [`outbound::fetch`] go to their callback).
    fn on_response(id: RequestId, response: Result<outbound::Response, OutboundError>) {
        let _ = (id, response);
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
    fn on_connect(conn: ConnectionId, req: Request) -> ConnectAnswer {
        match <T as Plugin>::on_connect(conn, req) {
            Connect::Accept(accept) => ConnectAnswer::Accept(accept),
            Connect::Reject(reject) => ConnectAnswer::Reject(reject),
            Connect::Pending => ConnectAnswer::Pending,
        }
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
                Event::Response(r) => {
                    let body = span(&payload, r.start, r.len);
                    let response = r.outcome.map(|head| outbound::Response {
                        status: head.status,
                        headers: head.headers,
                        body: body.to_vec(),
                    });
                    if let Some(then) = outbound::take_callback(r.id) {
                        then(response);
                    } else {
                        <T as Plugin>::on_response(r.id, response);
                    }
                }
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
    use super::__bindings::berth::plugin::types;
    use super::raw;
    pub use super::raw::{cancel_timer, config_get, set_timer, unsubscribe};
    use crate::{Accept, ConnError, ConnectionId, Message, PublishError, Published, Reject};

    /// Opens `conn`, which [`crate::Plugin::on_connect`] left pending.
    /// `unknown-connection` when it is not pending: answered already, or its
    /// client gave up or ran out of `handshake-timeout` (it got 503).
    pub fn accept(conn: ConnectionId, accept: Accept) -> Result<(), ConnError> {
        let subprotocol = accept.subprotocol.as_deref();
        raw::answer_connect(conn, Ok(types::AcceptParam { subprotocol }))
    }

    /// Refuses `conn`, which [`crate::Plugin::on_connect`] left pending,
    /// with an HTTP status; errors as for [`accept`].
    pub fn reject(conn: ConnectionId, reject: Reject) -> Result<(), ConnError> {
        let (status, reason) = (reject.status, reject.reason.as_str());
        raw::answer_connect(conn, Err(types::RejectParam { status, reason }))
    }

    /// Subscribes `conn` to `topic` (not as a member: see [`subscribe_as`]).
    pub fn subscribe(conn: ConnectionId, topic: &str) -> Result<(), ConnError> {
        raw::subscribe(conn, topic, None)
    }

    /// Subscribes `conn` to `topic` as a member described by `member` (a
    /// name, a JSON object; at most the route's `max-member` bytes), which
    /// [`crate::state::members`] lists on every node until it leaves.
    pub fn subscribe_as(conn: ConnectionId, topic: &str, member: &str) -> Result<(), ConnError> {
        raw::subscribe(conn, topic, Some(member))
    }

    /// Queues `msg` for `conn`; messages to one connection arrive in the order sent.
    pub fn send(conn: ConnectionId, msg: Message<'_>) -> Result<(), ConnError> {
        raw::send(conn, msg.lend())
    }

    /// Starts closing `conn` with `code` and `reason` (cut to 123 bytes), after what is queued.
    pub fn close(conn: ConnectionId, code: u16, reason: &str) -> Result<(), ConnError> {
        raw::close(conn, code, reason)
    }

    /// Sends `msg` to every subscriber of `topic` but `exclude`; says how
    /// many it is for and, when the route keeps history, where it was
    /// stored. A message that fails reaches nobody.
    pub fn publish(
        topic: &str,
        msg: Message<'_>,
        exclude: Option<ConnectionId>,
    ) -> Result<Published, PublishError> {
        raw::publish(topic, msg.lend(), exclude, None)
    }

    /// [`publish`], with the message's position (`EPOCH-SEQ`) written into
    /// it at byte offset `at` when the route keeps history, so that what is
    /// stored and sent carries its own position (a JSON field, say). `at`
    /// must be at most the message's length, and a character boundary.
    pub fn publish_at(
        topic: &str,
        msg: Message<'_>,
        exclude: Option<ConnectionId>,
        at: usize,
    ) -> Result<Published, PublishError> {
        let at = u32::try_from(at).map_err(|_| PublishError::InvalidMessage)?;
        raw::publish(topic, msg.lend(), exclude, Some(at))
    }

    /// Writes `message` to the host's log at `level`.
    pub fn log(level: crate::LogLevel, message: &str) {
        raw::log(level, message)
    }
}

/// HTTP requests to the backends the route was granted (`allowed-outbound`).
/// A request never blocks the instance: [`fetch`] returns at once, other
/// events keep arriving, and the answer comes later, as a call of the
/// request's callback, in the same ordered batches as messages:
///
/// ```ignore
/// outbound::fetch(&outbound::Request::get(&url), move |answer| match answer {
///     Ok(response) if response.status == 200 => { let _ = host::send(conn, Message::text(response.text())); }
///     Ok(response) => { /* another status */ }
///     Err(error) => { /* timeout, connect-failed, ... */ }
/// })?;
/// ```
pub mod outbound {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::time::Duration;

    use super::__bindings::berth::plugin::outbound as raw;
    use crate::{OutboundError, RequestId};

    /// What a callback does with a request's answer.
    type Callback = Box<dyn FnOnce(Result<Response, OutboundError>)>;

    thread_local! {
        static CALLBACKS: RefCell<HashMap<RequestId, Callback>> = RefCell::new(HashMap::new());
    }

    /// An HTTP request to send.
    #[derive(Clone, Debug)]
    pub struct Request {
        /// The method, such as `GET`.
        pub method: String,
        /// An absolute `http` or `https` URL.
        pub url: String,
        /// Request headers (`host` and `content-length` are the host's).
        pub headers: Vec<(String, String)>,
        /// The body; empty for none.
        pub body: Vec<u8>,
        /// How long to wait for the whole answer; the route's
        /// `outbound-timeout` when `None` or longer.
        pub timeout: Option<Duration>,
    }

    impl Request {
        /// A `GET` of `url`.
        pub fn get(url: &str) -> Self {
            Request {
                method: "GET".into(),
                url: url.into(),
                headers: Vec::new(),
                body: Vec::new(),
                timeout: None,
            }
        }

        /// A `POST` of `body` to `url`.
        pub fn post(url: &str, body: impl Into<Vec<u8>>) -> Self {
            Request {
                method: "POST".into(),
                body: body.into(),
                ..Request::get(url)
            }
        }

        /// Adds a header.
        pub fn header(mut self, name: &str, value: &str) -> Self {
            self.headers.push((name.into(), value.into()));
            self
        }

        /// Waits at most `timeout` for the answer.
        pub fn timeout(mut self, timeout: Duration) -> Self {
            self.timeout = Some(timeout);
            self
        }
    }

    /// A response, whole.
    #[derive(Clone, Debug)]
    pub struct Response {
        /// The HTTP status, after any redirects.
        pub status: u16,
        /// Header names (lower case) and values, in order.
        pub headers: Vec<(String, String)>,
        /// The body.
        pub body: Vec<u8>,
    }

    impl Response {
        /// The first value of header `name` (any case).
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        /// The body as text, with bytes that are not UTF-8 replaced.
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }

    /// Starts `request`; its answer goes to [`crate::Plugin::on_response`].
    /// Refused at once (no answer follows) with `not-allowed`,
    /// `invalid-request` or `too-many-requests`.
    pub fn send(request: &Request) -> Result<RequestId, OutboundError> {
        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let timeout_ms = request
            .timeout
            .map(|t| u32::try_from(t.as_millis()).unwrap_or(u32::MAX));
        raw::fetch(raw::OutboundRequest {
            method: &request.method,
            url: &request.url,
            headers: &headers,
            body: &request.body,
            timeout_ms,
        })
    }

    /// Starts `request`; `then` gets its answer. Refused at once as
    /// [`send`] is, and then `then` is dropped uncalled.
    pub fn fetch(
        request: &Request,
        then: impl FnOnce(Result<Response, OutboundError>) + 'static,
    ) -> Result<RequestId, OutboundError> {
        let id = send(request)?;
        CALLBACKS.with(|c| c.borrow_mut().insert(id, Box::new(then)));
        Ok(id)
    }

    /// Abandons a request: no answer follows, and its callback is dropped.
    /// False if it had been answered already.
    pub fn cancel(id: RequestId) -> bool {
        CALLBACKS.with(|c| c.borrow_mut().remove(&id));
        raw::cancel(id)
    }

    /// The callback waiting for request `id`'s answer.
    pub(crate) fn take_callback(id: RequestId) -> Option<Callback> {
        CALLBACKS.with(|c| c.borrow_mut().remove(&id))
    }
}

/// State that outlives the instance, kept by the host for the route's
/// namespace: topic history, topic members and a key-value store. Each call
/// answers from the store before it returns.
pub mod state {
    use super::__bindings::berth::plugin::state as raw;
    use super::__bindings::berth::plugin::types::MessageKind;
    use crate::{HistoryError, Member, Message, Position, StateError};
    use std::time::Duration;

    /// A message kept in a topic's history.
    #[derive(Clone, Debug)]
    pub struct Kept {
        /// Where it sits in the history.
        pub position: Position,
        text: bool,
        data: Vec<u8>,
    }

    impl Kept {
        /// The message as it was published.
        pub fn message(&self) -> Message<'_> {
            match self.text {
                // The host stored it from a checked text message.
                true => Message::Text(std::str::from_utf8(&self.data).unwrap_or_default()),
                false => Message::Binary(&self.data),
            }
        }
    }

    /// What a history read found.
    #[derive(Clone, Debug)]
    pub struct Page {
        /// The messages after the position asked for, oldest first.
        pub messages: Vec<Kept>,
        /// The topic's newest position, if it keeps anything: when it is past
        /// the last of `messages`, more follow.
        pub last: Option<Position>,
    }

    /// The messages of `topic` after `since` (the newest `limit` without it),
    /// oldest first; `Err(HistoryError::Lost)` when they are no longer all
    /// kept, so the client must resync.
    pub fn history(topic: &str, since: Option<Position>, limit: u32) -> Result<Page, HistoryError> {
        let page = raw::history(topic, since, limit)?;
        let epoch = page.epoch;
        Ok(Page {
            messages: page
                .messages
                .into_iter()
                .map(|kept| Kept {
                    position: Position {
                        epoch,
                        seq: kept.seq,
                    },
                    text: kept.kind == MessageKind::Text,
                    data: kept.data,
                })
                .collect(),
            last: (page.last > 0).then_some(Position {
                epoch,
                seq: page.last,
            }),
        })
    }

    /// Up to `limit` members of `topic`, on every node.
    pub fn members(topic: &str, limit: u32) -> Result<Vec<Member>, StateError> {
        raw::members(topic, limit)
    }

    /// How many members `topic` has, on every node.
    pub fn count_members(topic: &str) -> Result<u32, StateError> {
        raw::count_members(topic)
    }

    fn millis(ttl: Option<Duration>) -> Option<u64> {
        ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1))
    }

    /// The value stored under `key`, if any.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, StateError> {
        raw::get(key)
    }

    /// Stores `value` under `key`, for `ttl` if given.
    pub fn set(key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), StateError> {
        raw::set(key, value, millis(ttl))
    }

    /// Removes `key`; true if it had a value.
    pub fn delete(key: &str) -> Result<bool, StateError> {
        raw::delete(key)
    }

    /// Adds `delta` to the integer under `key` (absent counts as 0); returns the sum.
    pub fn increment(key: &str, delta: i64) -> Result<i64, StateError> {
        raw::increment(key, delta)
    }

    /// Sets `key` to `value` (removes it for `None`) only if it now holds
    /// `expected` (`None`: only if absent); true if it did.
    pub fn compare_and_set(
        key: &str,
        expected: Option<&[u8]>,
        value: Option<&[u8]>,
        ttl: Option<Duration>,
    ) -> Result<bool, StateError> {
        raw::compare_and_set(key, expected, value, millis(ttl))
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
