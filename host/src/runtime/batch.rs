//! One `on-events` call in the making: the events a worker has taken for one
//! instance, with every message's bytes and close reason copied once into a
//! payload that is lowered into the guest whole. A batch of any size costs
//! the guest two allocations (the payload and the event list), and the
//! buffers are kept from call to call, so the host allocates nothing per
//! message either.

use bytes::Bytes;

use super::bindings::berth::plugin::types::{
    CloseEvent, Event, MessageEvent, MessageKind, OutboundError, ResponseEvent, ResponseHead,
};
use super::requests::Outcome;
use crate::metrics::{EventKind, Export};

/// The most events one call carries.
const MAX_EVENTS: usize = 256;
/// The payload bytes one call carries, unless a single message is larger.
const MAX_PAYLOAD: usize = 1 << 20;
/// A message at least this large is handed over from its own bytes, alone,
/// rather than copied into the payload first.
const OWN_PAYLOAD: usize = 64 << 10;
/// Payload capacity kept between calls; more is given back after a call.
const KEEP: usize = 256 << 10;

/// What a failed call is named in logs: after the event it was handling,
/// so that a log line says what the plugin was doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Named {
    /// A call of an export, outside any one event of it.
    Export(Export),
    /// The handling of one event of an `on-events` call.
    Event(EventKind),
}

impl Named {
    /// The name, from the one table of them.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Named::Export(export) => export.call_name(),
            Named::Event(kind) => kind.call_name(),
        }
    }
}

/// Events waiting for one instance's next `on-events` call.
#[derive(Default)]
pub(super) struct Batch {
    /// The instance the events are for; `None` while empty.
    key: Option<u64>,
    payload: Vec<u8>,
    /// A single large message, when the call's payload is its own bytes.
    own: Option<Bytes>,
    events: Vec<Event>,
    /// Messages, closes, timer firings and responses in the batch.
    counts: [u64; EventKind::ALL.len()],
}

impl Batch {
    /// The instance the batch is for, if it holds anything.
    pub(super) fn key(&self) -> Option<u64> {
        self.key
    }

    /// Whether an event of `len` payload bytes for instance `key` may join.
    pub(super) fn fits(&self, key: u64, len: usize) -> bool {
        match self.key {
            None => true,
            Some(current) => {
                current == key
                    && self.own.is_none()
                    && self.events.len() < MAX_EVENTS
                    && self.payload.len() + len <= MAX_PAYLOAD
                    && len < OWN_PAYLOAD
            }
        }
    }

    /// Whether the batch holds anything but closes.
    pub(super) fn has_other_than_closes(&self) -> bool {
        self.counts[0] + self.counts[2] + self.counts[3] > 0
    }

    fn join(&mut self, key: u64) {
        debug_assert!(self.fits(key, 0));
        self.key = Some(key);
    }

    /// The span that `bytes` will occupy, after copying them into the payload.
    fn append(&mut self, bytes: &[u8]) -> (u32, u32) {
        let start = self.payload.len();
        self.payload.extend_from_slice(bytes);
        // Within u32: MAX_PAYLOAD bounds a shared payload, and a route's
        // max-message-size (below 4 GiB) bounds one of its own.
        (start as u32, bytes.len() as u32)
    }

    /// The span that `bytes` will occupy: the whole payload, uncopied, for
    /// a large first event; else a copy appended to the payload.
    fn place(&mut self, bytes: &Bytes) -> (u32, u32) {
        if self.events.is_empty() && bytes.len() >= OWN_PAYLOAD {
            self.own = Some(bytes.clone());
            (0, bytes.len() as u32)
        } else {
            self.append(bytes)
        }
    }

    /// Adds a data message that arrived on `conn`.
    pub(super) fn message(&mut self, key: u64, conn: u64, kind: MessageKind, bytes: &Bytes) {
        self.join(key);
        let (start, len) = self.place(bytes);
        self.events.push(Event::Message(MessageEvent {
            conn,
            kind,
            start,
            len,
        }));
        self.counts[0] += 1;
    }

    /// Adds the end of `conn`.
    pub(super) fn close(&mut self, key: u64, conn: u64, code: u16, reason: &str) {
        self.join(key);
        let (start, len) = self.append(reason.as_bytes());
        self.events.push(Event::Close(CloseEvent {
            conn,
            code,
            start,
            len,
        }));
        self.counts[1] += 1;
    }

    /// Adds a timer firing of instance `key`.
    pub(super) fn timer(&mut self, key: u64, token: u64) {
        self.join(key);
        self.events.push(Event::Timer(token));
        self.counts[2] += 1;
    }

    /// Adds the answer to outbound request `id` of instance `key`.
    pub(super) fn response(&mut self, key: u64, id: u64, outcome: &Outcome) {
        let (head, body) = match outcome {
            Ok(answer) => (
                Ok(ResponseHead {
                    status: answer.status,
                    headers: answer.headers.clone(),
                }),
                &answer.body,
            ),
            Err(failure) => (Err((*failure).into()), &bytes::Bytes::new()),
        };
        self.push_response(key, id, head, body);
    }

    fn push_response(
        &mut self,
        key: u64,
        id: u64,
        outcome: Result<ResponseHead, OutboundError>,
        body: &Bytes,
    ) {
        self.join(key);
        let (start, len) = self.place(body);
        self.events.push(Event::Response(ResponseEvent {
            id,
            outcome,
            start,
            len,
        }));
        self.counts[3] += 1;
    }

    /// What the call hands over: the payload and the events.
    pub(super) fn contents(&self) -> (&[u8], &[Event]) {
        let payload = self.own.as_deref().unwrap_or(&self.payload);
        (payload, &self.events)
    }

    /// The connection each event is about, in order (0 for a timer).
    pub(super) fn conns(&self) -> impl Iterator<Item = u64> + '_ {
        self.events.iter().map(|event| match event {
            Event::Message(m) => m.conn,
            Event::Close(c) => c.conn,
            Event::Timer(_) | Event::Response(_) => 0,
        })
    }

    /// The connection and name of event `index`, for a call that failed
    /// while handling it.
    pub(super) fn event(&self, index: u32) -> (u64, Named) {
        match self.events.get(index as usize) {
            Some(Event::Message(m)) => (m.conn, Named::Event(EventKind::Message)),
            Some(Event::Close(c)) => (c.conn, Named::Event(EventKind::Close)),
            Some(Event::Timer(_)) => (0, Named::Event(EventKind::Timer)),
            Some(Event::Response(_)) => (0, Named::Event(EventKind::Response)),
            None => (0, Named::Export(Export::Events)),
        }
    }

    /// A batch of the events after `index`, for the instance that replaces
    /// one whose call failed while handling event `index`.
    pub(super) fn after(&self, index: u32) -> Batch {
        let (payload, events) = self.contents();
        let mut rest = Batch::default();
        let Some(key) = self.key else {
            return rest;
        };
        for event in events.iter().skip(index as usize + 1) {
            match event {
                Event::Message(m) => {
                    let bytes = &payload[m.start as usize..(m.start + m.len) as usize];
                    rest.message(key, m.conn, m.kind, &Bytes::copy_from_slice(bytes));
                }
                Event::Close(c) => {
                    let reason = &payload[c.start as usize..(c.start + c.len) as usize];
                    rest.close(
                        key,
                        c.conn,
                        c.code,
                        std::str::from_utf8(reason).unwrap_or(""),
                    );
                }
                Event::Timer(token) => rest.timer(key, *token),
                Event::Response(r) => {
                    let body = &payload[r.start as usize..(r.start + r.len) as usize];
                    let body = Bytes::copy_from_slice(body);
                    rest.push_response(key, r.id, r.outcome.clone(), &body);
                }
            }
        }
        rest
    }

    /// Messages, closes, timer firings and responses in the batch.
    pub(super) fn counts(&self) -> [u64; EventKind::ALL.len()] {
        self.counts
    }

    /// Empties the batch for the next call, giving back a payload buffer
    /// that one large batch grew.
    pub(super) fn clear(&mut self) {
        self.key = None;
        self.own = None;
        self.events.clear();
        self.counts = [0; EventKind::ALL.len()];
        self.payload.clear();
        if self.payload.capacity() > KEEP {
            self.payload.shrink_to(KEEP);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn spans_point_into_one_payload_in_order() {
        let mut batch = Batch::default();
        batch.message(0, 7, MessageKind::Text, &text("hello"));
        batch.close(0, 8, 1000, "bye");
        batch.timer(0, 42);
        batch.message(0, 7, MessageKind::Binary, &text("xyz"));
        let (payload, events) = batch.contents();
        assert_eq!(payload, b"hellobyexyz");
        assert!(matches!(
            events[0],
            Event::Message(MessageEvent {
                conn: 7,
                start: 0,
                len: 5,
                ..
            })
        ));
        assert!(matches!(
            events[1],
            Event::Close(CloseEvent {
                conn: 8,
                code: 1000,
                start: 5,
                len: 3
            })
        ));
        assert!(matches!(events[2], Event::Timer(42)));
        assert!(matches!(
            events[3],
            Event::Message(MessageEvent {
                conn: 7,
                start: 8,
                len: 3,
                ..
            })
        ));
        assert_eq!(batch.counts(), [2, 1, 1, 0]);
        assert_eq!(
            batch.event(4),
            (0, Named::Export(Export::Events)),
            "past the batch"
        );
    }

    #[test]
    fn a_batch_of_closes_holds_nothing_else() {
        let mut batch = Batch::default();
        batch.close(0, 9, 1006, "");
        assert_eq!(batch.event(0), (9, Named::Event(EventKind::Close)));
        assert!(!batch.has_other_than_closes());
        batch.message(0, 3, MessageKind::Text, &text("a"));
        assert!(batch.has_other_than_closes());
    }

    #[test]
    fn the_events_after_a_failed_one_make_a_batch_of_their_own() {
        let mut batch = Batch::default();
        batch.message(0, 1, MessageKind::Text, &text("spin"));
        batch.message(0, 2, MessageKind::Binary, &text("next"));
        batch.close(0, 3, 4000, "gone");
        batch.timer(0, 5);
        assert_eq!(batch.conns().collect::<Vec<_>>(), [1, 2, 3, 0]);
        assert_eq!(batch.event(0), (1, Named::Event(EventKind::Message)));
        assert_eq!(batch.event(2), (3, Named::Event(EventKind::Close)));
        let rest = batch.after(0);
        let (payload, events) = rest.contents();
        assert_eq!(payload, b"nextgone");
        assert_eq!(events.len(), 3);
        assert!(matches!(
            events[0],
            Event::Message(MessageEvent {
                conn: 2,
                kind: MessageKind::Binary,
                start: 0,
                len: 4
            })
        ));
        assert!(matches!(events[2], Event::Timer(5)));
        assert!(
            batch.after(3).key().is_none(),
            "nothing after the last event"
        );
    }

    #[test]
    fn a_large_message_is_handed_over_alone_from_its_own_bytes() {
        let mut batch = Batch::default();
        let big = Bytes::from(vec![1u8; OWN_PAYLOAD]);
        assert!(batch.fits(0, big.len()));
        batch.message(0, 1, MessageKind::Binary, &big);
        assert!(
            !batch.fits(0, 0),
            "nothing joins a message with its own payload"
        );
        let (payload, _) = batch.contents();
        assert_eq!(payload.as_ptr(), big.as_ptr(), "not copied");
        batch.clear();
        batch.message(0, 1, MessageKind::Text, &text("small"));
        assert!(
            !batch.fits(0, OWN_PAYLOAD),
            "a large message starts its own call"
        );
        assert!(
            !batch.fits(1, 1),
            "another instance's events start their own call"
        );
    }

    #[test]
    fn a_batch_stops_at_its_event_and_byte_bounds() {
        let mut batch = Batch::default();
        for _ in 0..MAX_EVENTS {
            assert!(batch.fits(0, 1));
            batch.message(0, 1, MessageKind::Text, &text("x"));
        }
        assert!(!batch.fits(0, 1));
        batch.clear();
        let chunk = Bytes::from(vec![b'a'; OWN_PAYLOAD - 1]);
        while batch.fits(0, chunk.len()) {
            batch.message(0, 1, MessageKind::Text, &chunk);
        }
        assert!(batch.contents().0.len() <= MAX_PAYLOAD);
        batch.clear();
        assert!(batch.payload.capacity() <= KEEP);
    }
}
