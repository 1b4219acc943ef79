//! A benchmark fixture for the suite's `crossing` scenario: each shape of a
//! batched contract, implemented as an SDK would implement it, echoing every
//! message to its connection.

wit_bindgen::generate!({ path: "wit", world: "crossing" });

use berth::crossing::out;
use berth::crossing::types::{Actions, Event, Message, Span};
use exports::berth::crossing::shapes::Guest;

struct Crossing;

impl Guest for Crossing {
    fn noop() {}

    fn on_message(conn: u64, msg: Message) {
        let _ = out::send_message(conn, &msg);
    }

    fn on_events(events: Vec<Event>) {
        for event in &events {
            let _ = out::send_message(event.conn, &event.msg);
        }
    }

    fn on_batch(payload: Vec<u8>, events: Vec<Span>) {
        for span in &events {
            let _ = out::send_bytes(span.conn, span.kind, slice(&payload, span));
        }
    }

    fn on_batch_returning(payload: Vec<u8>, events: Vec<Span>) -> Actions {
        // An SDK's `send` appends to one buffer; the call returns it whole.
        let mut out = Vec::with_capacity(payload.len());
        let mut items = Vec::with_capacity(events.len());
        for span in &events {
            let offset = out.len() as u32;
            out.extend_from_slice(slice(&payload, span));
            items.push(Span {
                conn: span.conn,
                kind: span.kind,
                offset,
                len: span.len,
            });
        }
        Actions {
            payload: out,
            items,
        }
    }
}

/// The span's bytes; an empty slice for a span outside the payload.
fn slice<'a>(payload: &'a [u8], span: &Span) -> &'a [u8] {
    let start = span.offset as usize;
    payload
        .get(start..start + span.len as usize)
        .unwrap_or_default()
}

export!(Crossing);
