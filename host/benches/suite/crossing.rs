//! Scenario `crossing`: what one crossing into a plugin costs, measured in
//! this process on one core, with no socket in the way.
//!
//! The fixture `plugins/crossing` implements each shape a batched contract
//! could take (see its WIT), echoing every message; the host side here does
//! what berth's route thread does around a call: it hands over messages that
//! arrived as shared bytes and turns each reply into shared bytes for an
//! outbound queue. Figures are nanoseconds per message, medians of several
//! runs, for batches of 1, 16 and 256 messages of 64 B text. The first row
//! is an empty export call into the fixture.

use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::report::{Table, median};

/// The fixture's bindings, apart from the `berth` crate's name.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../plugins/crossing/wit",
        world: "crossing",
    });
}

use bindings::Crossing;
use bindings::berth::crossing::types::{Actions, Event, Message, Span};

/// Messages timed per run: enough for a run to last milliseconds.
const MESSAGES: usize = 256 * 400;
/// Runs per figure; the median is shown.
const RUNS: usize = 7;
/// The batch sizes compared.
const BATCHES: [usize; 3] = [1, 16, 256];
/// The message: what the pipelined echo scenario sends.
const PAYLOAD: &[u8; 64] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A store's state: WASI (the fixture is a wasip2 component) and the replies.
struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    /// What the plugin sent, as an outbound queue would hold it.
    sent: Vec<(u64, Bytes)>,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::berth::crossing::types::Host for State {}

impl bindings::berth::crossing::out::Host for State {
    fn send_message(&mut self, conn: u64, msg: Message) -> Result<(), u8> {
        let bytes = match msg {
            Message::Text(text) => Bytes::from(text),
            Message::Binary(data) => Bytes::from(data),
        };
        self.sent.push((conn, bytes));
        Ok(())
    }

    fn send_bytes(&mut self, conn: u64, kind: u8, data: Vec<u8>) -> Result<(), u8> {
        if kind == 0 && std::str::from_utf8(&data).is_err() {
            return Err(1);
        }
        self.sent.push((conn, Bytes::from(data)));
        Ok(())
    }
}

fn engine() -> Engine {
    let mut config = Config::new();
    // As berth's engine: epoch checks are part of every call's cost.
    config.wasm_component_model(true).epoch_interruption(true);
    Engine::new(&config).expect("an engine")
}

fn store(engine: &Engine) -> Store<State> {
    let state = State {
        wasi: WasiCtx::builder().build(),
        table: ResourceTable::new(),
        sent: Vec::with_capacity(256),
    };
    let mut store = Store::new(engine, state);
    store.set_epoch_deadline(u64::MAX / 2);
    store
}

/// Nanoseconds per message of `run`, which handles `MESSAGES` messages.
fn per_message(runs: usize, messages: usize, mut run: impl FnMut()) -> f64 {
    run(); // warm up
    let mut figures = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        run();
        figures.push(started.elapsed().as_nanos() as f64 / messages as f64);
    }
    median(&figures)
}

fn ns(value: f64) -> String {
    format!("{value:.0} ns")
}

/// The messages a batch hands over: each in bytes of its own, as read.
fn inbound(batch: usize) -> Vec<(u64, Bytes)> {
    (0..batch)
        .map(|i| (i as u64 + 1, Bytes::from_static(PAYLOAD)))
        .collect()
}

pub fn scenario(smoke: bool) {
    println!("\n== crossing: one call into a plugin, in this process (ns per message) ==");
    let messages = if smoke { 256 * 4 } else { MESSAGES };
    let runs = if smoke { 1 } else { RUNS };
    let dir = Path::new(::berth::demo::BUILT_PLUGIN_DIR);
    let engine = engine();
    let mut linker: Linker<State> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("WASI links");
    Crossing::add_to_linker::<State, HasSelf<State>>(&mut linker, |state| state)
        .expect("the fixture's imports link");
    let component =
        Component::from_file(&engine, dir.join("crossing.wasm")).expect("the crossing fixture");
    let mut store = store(&engine);
    let fixture = Crossing::instantiate(&mut store, &component, &linker).expect("instantiates");
    let shapes = fixture.berth_crossing_shapes();

    let table = Table::new(&["batch 1", "batch 16", "batch 256"]);
    let noop = per_message(runs, messages, || {
        for _ in 0..messages {
            shapes.call_noop(&mut store).unwrap();
        }
    });
    table.row(
        "empty export (fixture)",
        "",
        &[ns(noop), "".into(), "".into()],
    );

    // 0.2: one export call per message, text copied into a String for the call.
    let mut cells = Vec::new();
    for batch in BATCHES {
        let inbound = inbound(batch);
        cells.push(ns(per_message(runs, messages, || {
            for _ in 0..messages / batch {
                for (conn, bytes) in &inbound {
                    let text = std::str::from_utf8(bytes).unwrap().to_owned();
                    shapes
                        .call_on_message(&mut store, *conn, &Message::Text(text))
                        .unwrap();
                }
                assert_eq!(store.data().sent.len(), batch);
                store.data_mut().sent.clear();
            }
        })));
    }
    table.row("0.2: a call per message", "", &cells);

    // A: a list of events, each message its own string.
    let mut cells = Vec::new();
    for batch in BATCHES {
        let inbound = inbound(batch);
        let mut events = Vec::with_capacity(batch);
        cells.push(ns(per_message(runs, messages, || {
            for _ in 0..messages / batch {
                events.extend(inbound.iter().map(|(conn, bytes)| Event {
                    conn: *conn,
                    msg: Message::Text(std::str::from_utf8(bytes).unwrap().to_owned()),
                }));
                shapes.call_on_events(&mut store, &events).unwrap();
                events.clear();
                assert_eq!(store.data().sent.len(), batch);
                store.data_mut().sent.clear();
            }
        })));
    }
    table.row("A: list of events", "", &cells);

    // B and C: one payload and plain spans, built in buffers kept across calls.
    let mut payload = Vec::with_capacity(256 * PAYLOAD.len());
    let mut spans = Vec::with_capacity(256);
    let fill = |inbound: &[(u64, Bytes)], payload: &mut Vec<u8>, spans: &mut Vec<Span>| {
        payload.clear();
        spans.clear();
        for (conn, bytes) in inbound {
            spans.push(Span {
                conn: *conn,
                kind: 0,
                offset: payload.len() as u32,
                len: bytes.len() as u32,
            });
            payload.extend_from_slice(bytes);
        }
    };
    let mut cells = Vec::new();
    for batch in BATCHES {
        let inbound = inbound(batch);
        cells.push(ns(per_message(runs, messages, || {
            for _ in 0..messages / batch {
                fill(&inbound, &mut payload, &mut spans);
                shapes.call_on_batch(&mut store, &payload, &spans).unwrap();
                assert_eq!(store.data().sent.len(), batch);
                store.data_mut().sent.clear();
            }
        })));
    }
    table.row("B: payload + spans, send by import", "", &cells);

    let mut cells = Vec::new();
    for batch in BATCHES {
        let inbound = inbound(batch);
        cells.push(ns(per_message(runs, messages, || {
            for _ in 0..messages / batch {
                fill(&inbound, &mut payload, &mut spans);
                let Actions {
                    payload: out,
                    items,
                } = shapes
                    .call_on_batch_returning(&mut store, &payload, &spans)
                    .unwrap();
                let out = Bytes::from(out);
                let sent = &mut store.data_mut().sent;
                for item in items {
                    let range = item.offset as usize..(item.offset + item.len) as usize;
                    let bytes = out.slice(range);
                    if item.kind == 0 {
                        std::str::from_utf8(&bytes).expect("text is UTF-8");
                    }
                    sent.push((item.conn, bytes));
                }
                assert_eq!(sent.len(), batch);
                sent.clear();
            }
        })));
    }
    table.row("C: payload + spans, replies returned", "", &cells);
}
