//! The host side of the contract: what a plugin's imports do. Each store holds
//! the connections of its own route and nothing else, so a plugin can address
//! only those; any other id is `unknown-connection`.

use std::sync::atomic::Ordering;

use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::bindings::berth::plugin::{host, types};
use super::stdio::MAX_LINE;
use super::store::HostState;
use crate::config;
use crate::metrics::Limit;
use crate::outbox::PushError;
use crate::state::Entry;

/// The longest close reason that fits in a close frame (125 bytes less the code).
const MAX_CLOSE_REASON: usize = 123;

fn conn_error(err: PushError) -> types::ConnError {
    match err {
        PushError::Full => types::ConnError::QueueFull,
        PushError::TooLarge => types::ConnError::TooLarge,
        PushError::Gone => types::ConnError::Closing,
    }
}

/// A plugin's message as a WebSocket message, or `None` if its text is not
/// UTF-8 or its Latin-1 string has a character above U+00FF. The bytes move;
/// only a Latin-1 string with characters above U+007F is decoded into new ones.
fn to_wire(msg: types::Message) -> Option<WsMessage> {
    Some(match msg {
        types::Message::Text(text) => WsMessage::Text(text.into()),
        types::Message::TextUtf8(bytes) => WsMessage::Text(String::from_utf8(bytes).ok()?.into()),
        types::Message::Binary(bytes) => WsMessage::Binary(bytes.into()),
        types::Message::BinaryLatin1(text) => WsMessage::Binary(latin1(text)?.into()),
    })
}

/// `msg` as a history entry with its position written at `position_at`;
/// `None` if that offset is past the end or inside a character.
fn history_entry(msg: &WsMessage, position_at: Option<u32>) -> Option<Entry<'_>> {
    let (text, data): (bool, &[u8]) = match msg {
        WsMessage::Text(text) => (true, text.as_bytes()),
        WsMessage::Binary(bytes) => (false, bytes),
        _ => (false, &[]),
    };
    let position_at = position_at.map(|at| at as usize);
    if let Some(at) = position_at {
        let fits = match msg {
            WsMessage::Text(text) => text.is_char_boundary(at),
            _ => at <= data.len(),
        };
        if !fits {
            return None;
        }
    }
    Some(Entry {
        text,
        data,
        position_at,
    })
}

/// The bytes whose characters `text` holds, if each is below U+0100.
fn latin1(text: String) -> Option<Vec<u8>> {
    if text.is_ascii() {
        return Some(text.into_bytes());
    }
    text.chars().map(|c| u8::try_from(c).ok()).collect()
}

/// Cuts `reason` to what fits in a close frame, at a character boundary.
fn close_reason(mut reason: String) -> String {
    reason.truncate(super::cut(&reason, MAX_CLOSE_REASON).len());
    reason
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn send(
        &mut self,
        conn: u64,
        msg: types::Message,
    ) -> wasmtime::Result<Result<(), types::ConnError>> {
        let (entry, held) = match self.entry(conn) {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        let Some(msg) = to_wire(msg) else {
            return Ok(Err(types::ConnError::InvalidMessage));
        };
        let pushed = entry.push(msg, held);
        if pushed == Err(PushError::TooLarge) {
            self.route.metrics.limit_hit(Limit::WriteQueueBytes);
        }
        Ok(pushed.map_err(conn_error))
    }

    fn close(
        &mut self,
        conn: u64,
        code: u16,
        reason: String,
    ) -> wasmtime::Result<Result<(), types::ConnError>> {
        if !crate::close_code::sendable(code) {
            return Ok(Err(types::ConnError::InvalidCode));
        }
        // tungstenite names no 1014 (it is `Bad(1014)` there), but writes
        // any code as its number.
        let code = CloseCode::from(code);
        let (entry, held) = match self.entry(conn) {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        let frame = CloseFrame {
            code,
            reason: close_reason(reason).into(),
        };
        let result = entry.push(WsMessage::Close(Some(frame)), held);
        entry.closing = true;
        Ok(result.map_err(conn_error))
    }

    fn subscribe(
        &mut self,
        conn: u64,
        topic: String,
        member: Option<String>,
    ) -> wasmtime::Result<Result<(), types::ConnError>> {
        // Names are kept per subscription and per topic, and every
        // subscription is an entry in two maps: the host bounds both.
        if topic.len() > self.route.max_topic_name {
            self.route.metrics.limit_hit(Limit::TopicName);
            return Ok(Err(types::ConnError::TooLarge));
        }
        if member
            .as_ref()
            .is_some_and(|m| m.len() > self.route.rules.max_member)
        {
            self.route.metrics.limit_hit(Limit::MaxMember);
            return Ok(Err(types::ConnError::TooLarge));
        }
        let (entry, held) = match self.entry(conn) {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        if !entry.topics.contains(topic.as_str()) {
            let route = &entry.route;
            if entry.topics.len() >= route.max_subscriptions_per_connection {
                route.metrics.limit_hit(Limit::SubscriptionsPerConnection);
                return Ok(Err(types::ConnError::TooManySubscriptions));
            }
            let taken =
                route
                    .subscriptions
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        (n < route.max_subscriptions).then_some(n + 1)
                    });
            if taken.is_err() {
                route.metrics.limit_hit(Limit::Subscriptions);
                return Ok(Err(types::ConnError::TooManySubscriptions));
            }
            let handle = entry.handle.clone();
            route
                .topics
                .subscribe(&route.namespace, &topic, conn, handle, held);
            entry.topics.insert(topic.as_str().into());
        }
        let route = &entry.route;
        match member {
            Some(info) => {
                route.state.join(&route.namespace, &topic, conn, &info);
                entry.memberships.insert(topic.into());
            }
            None => {
                if entry.memberships.remove(topic.as_str()) {
                    route.state.leave(&route.namespace, &topic, conn);
                }
            }
        }
        Ok(Ok(()))
    }

    fn unsubscribe(
        &mut self,
        conn: u64,
        topic: String,
    ) -> wasmtime::Result<Result<(), types::ConnError>> {
        if topic.len() > self.route.max_topic_name {
            self.route.metrics.limit_hit(Limit::TopicName);
            return Ok(Err(types::ConnError::TooLarge));
        }
        let entry = match self.conns.get_mut(&conn) {
            Some(entry) => entry,
            None => return Ok(Err(types::ConnError::UnknownConnection)),
        };
        if entry.topics.remove(topic.as_str()) {
            let route = &entry.route;
            route.subscriptions.fetch_sub(1, Ordering::Relaxed);
            route
                .topics
                .unsubscribe(&route.namespace, &topic, conn, &mut self.held);
            if entry.memberships.remove(topic.as_str()) {
                route.state.leave(&route.namespace, &topic, conn);
            }
        }
        Ok(Ok(()))
    }

    fn publish(
        &mut self,
        topic: String,
        msg: types::Message,
        exclude: Option<u64>,
        position_at: Option<u32>,
    ) -> wasmtime::Result<Result<types::Published, types::PublishError>> {
        let Some(msg) = to_wire(msg) else {
            return Ok(Err(types::PublishError::InvalidMessage));
        };
        let route = &self.route;
        if topic.len() > route.max_topic_name {
            route.metrics.limit_hit(Limit::TopicName);
            return Ok(Err(types::PublishError::TooLarge));
        }
        if msg.len() > route.write_queue_bytes {
            route.metrics.limit_hit(Limit::WriteQueueBytes);
            return Ok(Err(types::PublishError::TooLarge));
        }
        // Stored before anyone gets it, so that no subscriber holds a
        // message a later history read would not find.
        let mut msg = msg;
        let position = if route.rules.history_size > 0 {
            let entry = match history_entry(&msg, position_at) {
                Some(entry) => entry,
                None => return Ok(Err(types::PublishError::InvalidMessage)),
            };
            let stored = route
                .state
                .store()
                .append(&route.namespace, &topic, entry, &route.rules);
            match stored {
                Ok((p, composed)) => {
                    if let Some(bytes) = composed {
                        msg = match entry.text {
                            // An ASCII position put at a character boundary.
                            true => {
                                WsMessage::Text(String::from_utf8(bytes).unwrap_or_default().into())
                            }
                            false => WsMessage::Binary(bytes.into()),
                        };
                    }
                    Some(types::Position {
                        epoch: p.epoch,
                        seq: p.seq,
                    })
                }
                Err(e) => {
                    if e == crate::state::StateError::HistoryTopics {
                        route.metrics.limit_hit(Limit::HistoryTopics);
                    }
                    return Ok(Err(types::PublishError::NotStored));
                }
            }
        } else {
            None
        };
        let subscribers =
            route
                .topics
                .publish(&route.namespace, &topic, msg, exclude, &mut self.held);
        Ok(Ok(types::Published {
            subscribers,
            position,
        }))
    }

    fn set_timer(
        &mut self,
        delay_ms: u32,
        repeat: bool,
        token: u64,
    ) -> wasmtime::Result<Result<u64, types::TimerError>> {
        let id = self.timers.set(delay_ms, repeat, token);
        if id.is_none() {
            self.route.metrics.limit_hit(Limit::Timers);
        }
        Ok(id.ok_or(types::TimerError::TooManyTimers))
    }

    fn cancel_timer(&mut self, id: u64) -> wasmtime::Result<bool> {
        Ok(self.timers.cancel(id))
    }

    fn config_get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        // No configured key is longer (the config refuses them), so a longer
        // one is a plugin probing the host: it is answered without a lookup.
        if key.len() > config::defaults::MAX_CONFIG_KEY {
            self.route.metrics.limit_hit(Limit::ConfigKey);
            return Ok(None);
        }
        Ok(self.route.values.get(&key).cloned())
    }

    fn log(&mut self, level: types::LogLevel, message: String) -> wasmtime::Result<()> {
        if !self.log_budget.take() {
            self.route.metrics.limit_hit(Limit::LogLines);
            return Ok(());
        }
        let message = super::cut(&message, MAX_LINE);
        let conn = self.current_conn.load(Ordering::Relaxed);
        let route = &*self.route.name;
        match level {
            types::LogLevel::Trace => {
                tracing::trace!(target: "berth::plugin", route, conn, "{message}")
            }
            types::LogLevel::Debug => {
                tracing::debug!(target: "berth::plugin", route, conn, "{message}")
            }
            types::LogLevel::Info => {
                tracing::info!(target: "berth::plugin", route, conn, "{message}")
            }
            types::LogLevel::Warn => {
                tracing::warn!(target: "berth::plugin", route, conn, "{message}")
            }
            types::LogLevel::Error => {
                tracing::error!(target: "berth::plugin", route, conn, "{message}")
            }
        }
        Ok(())
    }

    fn answer_connect(
        &mut self,
        conn: u64,
        answer: Result<types::Accept, types::Reject>,
    ) -> wasmtime::Result<Result<(), types::ConnError>> {
        Ok(self.answer(conn, answer))
    }

    fn handling(&mut self, index: u32) -> wasmtime::Result<()> {
        // An index past the batch is the plugin's mistake; it tags nothing.
        if let Some(&conn) = self.event_conns.get(index as usize) {
            self.handling = index;
            self.set_current(conn);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{close_reason, latin1, to_wire, types};
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    #[test]
    fn every_way_of_carrying_a_message_reaches_the_wire_intact() {
        let all: Vec<u8> = (0..=255).collect();
        let as_latin1: String = all.iter().map(|&b| char::from(b)).collect();
        assert_eq!(latin1(as_latin1.clone()), Some(all.clone()));
        assert_eq!(
            to_wire(types::Message::BinaryLatin1(as_latin1)),
            Some(WsMessage::Binary(all.clone().into()))
        );
        assert_eq!(latin1("ascii only".into()), Some(b"ascii only".to_vec()));
        assert_eq!(latin1("€".into()), None, "U+20AC is not a byte");
        assert_eq!(
            to_wire(types::Message::TextUtf8("héllo".as_bytes().to_vec())),
            Some(WsMessage::Text("héllo".into()))
        );
        assert_eq!(to_wire(types::Message::TextUtf8(vec![0xff, 0x41])), None);
        assert_eq!(
            to_wire(types::Message::Text("t".into())),
            Some(WsMessage::Text("t".into()))
        );
        assert_eq!(
            to_wire(types::Message::Binary(all.clone())),
            Some(WsMessage::Binary(all.into()))
        );
    }

    #[test]
    fn close_reason_is_cut_at_a_char_boundary() {
        let long = "é".repeat(100); // 200 bytes
        let cut = close_reason(long);
        assert!(cut.len() <= 123);
        assert_eq!(cut.len(), 122);
        let exact = "x".repeat(123);
        assert_eq!(close_reason(exact.clone()), exact);
        // A three-byte character ending at byte 123 stays whole.
        let euro = format!("{}€€", "x".repeat(120));
        assert_eq!(close_reason(euro), format!("{}€", "x".repeat(120)));
    }
}
