//! Scenario 10: permessage-deflate. One berth, its routes compressing (the
//! default), measured with clients that negotiate compression beside clients
//! that offer none: here the baseline is berth itself, uncompressed. Both
//! send the same JSON chat messages, in alternating rounds:
//! - pipelined echo of ~1 KiB messages: bytes on the wire per message each
//!   way, as the client's socket counts them, and server CPU per message;
//! - fan-out of ~1 KiB messages to many subscribers: delivery rate and
//!   server CPU per delivery;
//! - idle connections after one 4 KiB message each way: server memory per
//!   connection, by scenario 4's method.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::idle::{self, CONCURRENCY, SPARE_DESCRIPTORS};
use crate::report::{
    CPU_MEANINGFUL, Goal, Summary, Table, median, median_duration, median_share, micros, percent,
    ratio, ratio_of, share, whole,
};
use crate::servers::{Server, own_cpu};
use crate::wire::ws;
use crate::wire::{Raw, TEXT, deflate, inflate};
use crate::{Bench, LIMIT, Plan, QUEUE_DEPTH};

/// The routes' compression threshold: shorter outbound messages go plain.
/// Every chat message is at least this long, so that where compression was
/// negotiated all of them are compressed.
const THRESHOLD: usize = 1024;
/// The size of the idle connections' one message each way, at least.
const IDLE_MESSAGE: usize = 4096;
/// Distinct echo messages, sent in turn. Each message is compressed on its
/// own (no context takeover), so one sent again compresses no better.
const ECHO_POOL: usize = 1024;
/// Distinct messages for the idle connections.
const IDLE_POOL: usize = 64;

/// The routes: the echo and testkit plugins as in the other scenarios, the
/// threshold spelled out; testkit's queue holds a whole burst of ~1 KiB
/// messages, so that no subscriber is closed as a slow consumer.
fn routes() -> String {
    format!(
        r#"
[[route]]
path = "/echo"
plugin = "echo.wasm"
compression = "on"
compression-threshold = {THRESHOLD}

[[route]]
path = "/kit"
plugin = "testkit.wasm"
compression = "on"
compression-threshold = {THRESHOLD}
write-queue = {QUEUE_DEPTH}
write-queue-bytes = "64MiB"
"#
    )
}

/// Whether the clients of a round offer permessage-deflate.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Plain,
    Deflate,
}

impl Variant {
    const BOTH: [Variant; 2] = [Variant::Plain, Variant::Deflate];

    fn offers(self) -> bool {
        self == Variant::Deflate
    }

    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "berth, no offer",
            Variant::Deflate => "berth, permessage-deflate",
        }
    }
}

/// Words for the chat messages' text.
#[rustfmt::skip]
const WORDS: [&str; 64] = [
    "the", "build", "is", "green", "again", "who", "broke", "staging", "deploy", "at", "noon",
    "lunch", "anyone", "coffee", "meeting", "moved", "to", "three", "please", "review", "my",
    "pull", "request", "thanks", "looks", "good", "merged", "rollback", "done", "on", "call",
    "tonight", "tests", "flaky", "retry", "ticket", "closed", "customer", "reported", "a", "bug",
    "in", "login", "page", "fixed", "it", "yesterday", "release", "notes", "draft", "ready", "for",
    "friday", "weekend", "see", "you", "tomorrow", "ok", "sure", "why", "not", "great", "idea",
    "lol",
];

/// A xorshift sequence: varied messages, the same in every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below as u64) as usize
    }
}

/// A JSON array of chat messages, at least `len` bytes: what a real-time
/// handler relays, varied in users, ids and words.
fn chat(rng: &mut Rng, len: usize) -> String {
    let mut text = String::from("[");
    while text.len() < len {
        if text.len() > 1 {
            text.push(',');
        }
        let _ = write!(
            text,
            r#"{{"type":"message","room":"lobby","user":"user-{}","id":{},"text":""#,
            rng.next(1000),
            100_000 + rng.next(900_000)
        );
        for word in 0..3 + rng.next(12) {
            if word > 0 {
                text.push(' ');
            }
            text.push_str(WORDS[rng.next(WORDS.len())]);
        }
        text.push_str("\"}");
    }
    text.push(']');
    text
}

/// The messages a part sends, and what checks that each arrives intact.
struct Messages {
    texts: Vec<String>,
    /// Each text as a client compresses it, if the part sends them compressed.
    deflated: Vec<Vec<u8>>,
    /// The server's compressed form of each text, once it has been inflated
    /// and found right: the same bytes again need only be compared. berth
    /// compresses a publish once for every subscriber, so a fan-out inflates
    /// each message once, not once per delivery, and the load generator stays
    /// far faster than the server.
    verified: Vec<OnceLock<Box<[u8]>>>,
}

impl Messages {
    fn new(count: usize, len: usize, seed: u64, deflated: bool) -> Arc<Messages> {
        let mut rng = Rng(seed | 1);
        let texts: Vec<String> = (0..count).map(|_| chat(&mut rng, len)).collect();
        let deflated = if deflated {
            texts.iter().map(|t| deflate(t.as_bytes())).collect()
        } else {
            Vec::new()
        };
        let verified = (0..count).map(|_| OnceLock::new()).collect();
        Arc::new(Messages {
            texts,
            deflated,
            verified,
        })
    }

    fn len(&self) -> usize {
        self.texts.len()
    }

    /// The texts' sizes: smallest, mean, largest.
    fn sizes(&self) -> (usize, f64, usize) {
        let sizes = self.texts.iter().map(String::len);
        let total: usize = sizes.clone().sum();
        (
            sizes.clone().min().unwrap_or(0),
            total as f64 / self.len() as f64,
            sizes.max().unwrap_or(0),
        )
    }

    /// The mean size of the client's compressed forms.
    fn deflated_mean(&self) -> f64 {
        let total: usize = self.deflated.iter().map(Vec::len).sum();
        total as f64 / self.deflated.len().max(1) as f64
    }

    /// Queues text `index` on `client`, compressed if it negotiated compression.
    fn queue(&self, client: &mut Raw, index: usize) {
        if client.compression() {
            client.queue_frame(TEXT, true, &self.deflated[index]);
        } else {
            client.queue_frame(TEXT, false, self.texts[index].as_bytes());
        }
    }

    /// Checks that `payload`, compressed or not, is text `index`.
    fn check(&self, index: usize, compressed: bool, payload: &[u8]) {
        let text = self.texts[index].as_bytes();
        if !compressed {
            assert!(
                payload == text,
                "message {index}: {} bytes that differ from the {} sent",
                payload.len(),
                text.len()
            );
            return;
        }
        let verified = &self.verified[index];
        if verified.get().is_some_and(|v| **v == *payload) {
            return;
        }
        let inflated = inflate(payload);
        assert!(
            inflated == text,
            "message {index}: inflates to {} bytes that differ from the {} sent",
            inflated.len(),
            text.len()
        );
        let _ = verified.set(payload.into());
    }
}

/// Sends text `index` and checks its echo; returns whether the echo came compressed.
async fn exchange(client: &mut Raw, messages: &Messages, index: usize) -> bool {
    messages.queue(client, index);
    client.flush().await;
    let echo = client.next_data_frame().await;
    messages.check(index, echo.compressed, client.payload(echo.payload));
    echo.compressed
}

/// The share of data frames that came compressed, as a cell.
fn compressed_cell(compressed: usize, total: usize) -> String {
    percent(compressed as f64 / total.max(1) as f64)
}

/// One round of pipelined echo.
#[derive(Clone, Copy)]
struct Echo {
    rate: f64,
    elapsed: Duration,
    /// Bytes the clients wrote per message.
    up: f64,
    /// Bytes the clients read per message.
    down: f64,
    cpu_per_message: Duration,
    generator: Option<f64>,
    compressed: usize,
    total: usize,
}

impl Echo {
    fn cells(&self) -> Vec<String> {
        vec![
            whole(self.rate),
            format!("{:.3} s", self.elapsed.as_secs_f64()),
            format!("{:.0} B", self.up),
            format!("{:.0} B", self.down),
            if self.elapsed >= CPU_MEANINGFUL {
                micros(self.cpu_per_message)
            } else {
                "(too short)".to_string()
            },
            self.generator.map_or("-".to_string(), percent),
            compressed_cell(self.compressed, self.total),
        ]
    }

    fn median_of(rounds: &[Echo]) -> Echo {
        let of = |f: fn(&Echo) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
        Echo {
            rate: of(|r| r.rate),
            elapsed: median_duration(&rounds.iter().map(|r| r.elapsed).collect::<Vec<_>>()),
            up: of(|r| r.up),
            down: of(|r| r.down),
            cpu_per_message: median_duration(
                &rounds.iter().map(|r| r.cpu_per_message).collect::<Vec<_>>(),
            ),
            generator: median_share(rounds.iter().map(|r| r.generator)),
            compressed: rounds.iter().map(|r| r.compressed).sum(),
            total: rounds.iter().map(|r| r.total).sum(),
        }
    }
}

/// Every connection keeps `window` messages in flight until `messages` have
/// come back; every echo is checked whole.
async fn pipelined(server: &Server, variant: Variant, pool: &Arc<Messages>, plan: &Plan) -> Echo {
    let (connections, messages, window) = (
        plan.pipelined_connections,
        plan.compression_messages,
        plan.window,
    );
    let mut clients = Vec::with_capacity(connections);
    for conn in 0..connections {
        let client = Raw::open(server.addr(), "/echo", conn as u32, variant.offers());
        clients.push(client.await);
    }
    let cpu_before = server.cpu();
    let own_before = own_cpu();
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(conn, mut client)| {
            let pool = pool.clone();
            tokio::spawn(async move {
                // Each connection starts elsewhere in the pool.
                let pick = |seq: usize| (conn * 131 + seq) % pool.len();
                let (mut sent, mut received, mut compressed) = (0usize, 0usize, 0usize);
                loop {
                    while let Some(echo) = client.data_frame() {
                        pool.check(
                            pick(received),
                            echo.compressed,
                            client.payload(echo.payload),
                        );
                        compressed += usize::from(echo.compressed);
                        received += 1;
                    }
                    if received == messages {
                        break;
                    }
                    while sent < messages && sent - received < window {
                        pool.queue(&mut client, pick(sent));
                        sent += 1;
                    }
                    client.flush().await;
                    assert!(start.elapsed() < LIMIT, "echoes take too long");
                    client.fill().await;
                }
                (Instant::now(), compressed, client)
            })
        })
        .collect();
    let mut last = start;
    let mut compressed = 0;
    let mut clients = Vec::with_capacity(connections);
    for task in tasks {
        let (done, mine, client) = task.await.expect("a client finished");
        last = last.max(done);
        compressed += mine;
        clients.push(client);
    }
    let cpu = server.cpu().saturating_sub(cpu_before);
    let elapsed = last - start;
    let generator = share(own_cpu() - own_before, elapsed);
    let (read, written) = clients
        .iter()
        .map(Raw::traffic)
        .fold((0, 0), |(r, w), (cr, cw)| (r + cr, w + cw));
    futures_util::future::join_all(clients.into_iter().map(Raw::close)).await;
    let total = connections * messages;
    Echo {
        rate: total as f64 / elapsed.as_secs_f64(),
        elapsed,
        up: written as f64 / total as f64,
        down: read as f64 / total as f64,
        cpu_per_message: cpu / total as u32,
        generator,
        compressed,
        total,
    }
}

/// One round of fan-out.
#[derive(Clone, Copy)]
struct Fan {
    rate: f64,
    elapsed: Duration,
    /// Bytes a subscriber read per delivery.
    down: f64,
    cpu_per_delivery: Option<Duration>,
    generator: Option<f64>,
    compressed: usize,
    total: usize,
}

impl Fan {
    fn cells(&self) -> Vec<String> {
        vec![
            whole(self.rate),
            format!("{:.3} s", self.elapsed.as_secs_f64()),
            format!("{:.0} B", self.down),
            self.cpu_per_delivery.map_or("(too short)".into(), micros),
            self.generator.map_or("-".into(), percent),
            compressed_cell(self.compressed, self.total),
        ]
    }

    fn median_of(rounds: &[Fan]) -> Fan {
        let of = |f: fn(&Fan) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
        Fan {
            rate: of(|r| r.rate),
            elapsed: median_duration(&rounds.iter().map(|r| r.elapsed).collect::<Vec<_>>()),
            down: of(|r| r.down),
            cpu_per_delivery: rounds
                .iter()
                .map(|r| r.cpu_per_delivery)
                .collect::<Option<Vec<_>>>()
                .map(|v| median_duration(&v)),
            generator: median_share(rounds.iter().map(|r| r.generator)),
            compressed: rounds.iter().map(|r| r.compressed).sum(),
            total: rounds.iter().map(|r| r.total).sum(),
        }
    }
}

/// Subscribers join `topic`; one publisher sends every message of `burst`
/// back to back with testkit's `publish TOPIC TEXT`; each subscriber checks
/// that each arrives whole and in order.
async fn fanout(
    server: &Server,
    variant: Variant,
    burst: &Arc<Messages>,
    subscribers: usize,
    topic: &str,
) -> Fan {
    let subscribe = format!("subscribe {topic}");
    let mut clients = Vec::with_capacity(subscribers);
    for seed in 0..subscribers {
        let mut client = Raw::open(server.addr(), "/kit", seed as u32, variant.offers()).await;
        client.queue_frame(TEXT, false, subscribe.as_bytes());
        client.flush().await;
        let reply = client.next_data_frame().await;
        assert!(!reply.compressed && client.payload(reply.payload) == b"subscribed");
        client.reset_traffic();
        clients.push(client);
    }
    // Made before the clock starts: the publisher only sends.
    let publishes: Vec<Message> = burst
        .texts
        .iter()
        .map(|text| Message::text(format!("publish {topic} {text}")))
        .collect();
    let count = burst.len();
    // Subscribers that have read the whole burst.
    let done = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let (done, burst) = (done.clone(), burst.clone());
            tokio::spawn(async move {
                let mut compressed = 0usize;
                for index in 0..count {
                    let message = client.next_data_frame().await;
                    burst.check(index, message.compressed, client.payload(message.payload));
                    compressed += usize::from(message.compressed);
                }
                let last = Instant::now();
                done.fetch_add(1, Ordering::Relaxed);
                // Closed once the server's CPU time has been read.
                (last, compressed, client)
            })
        })
        .collect();

    let publisher = ws(server.addr(), "/kit", None)
        .await
        .unwrap_or_else(|e| panic!("the publisher cannot connect: {e}"));
    let (mut sink, mut answers) = publisher.split();
    // berth answers each publish; drain the answers so they never back up.
    let mut drain = tokio::spawn(async move { while let Some(Ok(_)) = answers.next().await {} });
    let cpu_before = server.cpu();
    let own_before = own_cpu();
    let start = Instant::now();
    for publish in &publishes {
        sink.feed(publish.clone()).await.unwrap();
    }
    sink.flush().await.unwrap();
    let waited = Instant::now();
    while done.load(Ordering::Relaxed) < subscribers {
        assert!(waited.elapsed() < LIMIT, "the burst did not arrive in time");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.elapsed();
    let cpu = server.cpu().saturating_sub(cpu_before);
    let generator = share(own_cpu() - own_before, elapsed);
    let deliveries = subscribers * count;
    let cpu_per_delivery = (elapsed >= CPU_MEANINGFUL).then(|| cpu / deliveries as u32);
    let mut last = start;
    let (mut read, mut compressed) = (0u64, 0usize);
    let mut clients = Vec::with_capacity(subscribers);
    for reader in readers {
        let (at, mine, client) = reader.await.expect("a subscriber got every message");
        last = last.max(at);
        read += client.traffic().0;
        compressed += mine;
        clients.push(client);
    }
    let _ = sink.close().await;
    // The drain ends with the server's close answer.
    if tokio::time::timeout(LIMIT, &mut drain).await.is_err() {
        drain.abort();
    }
    futures_util::future::join_all(clients.into_iter().map(Raw::close)).await;
    Fan {
        rate: deliveries as f64 / (last - start).as_secs_f64(),
        elapsed,
        down: read as f64 / deliveries as f64,
        cpu_per_delivery,
        generator,
        compressed,
        total: deliveries,
    }
}

/// Scenario 4's method on a fresh berth: a warm-up connection and message,
/// then `wanted` connections, each sending one message and reading its
/// echo, held 1 s; VmRSS growth over connections.
async fn idle_round(
    config: &Path,
    variant: Variant,
    wanted: usize,
    pool: &Arc<Messages>,
) -> (idle::Figures, usize) {
    let server = crate::start_berth(config);
    let (addr, offer) = (server.addr(), variant.offers());
    // The warm-up makes the route's instance and, where compression is
    // negotiated, the server thread's compressor and inflater: neither is
    // a connection's cost.
    let mut warm = Raw::open(addr, "/echo", 0, offer).await;
    exchange(&mut warm, pool, 0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before_kib = server.rss_kib();

    let began = Instant::now();
    let deadline = began + 3 * LIMIT;
    let next = Cell::new(0usize);
    let compressed = Cell::new(0usize);
    let clients = RefCell::new(Vec::with_capacity(wanted));
    let (next, compressed, clients) = (&next, &compressed, &clients);
    let workers = (0..CONCURRENCY).map(|_| async move {
        while next.get() < wanted {
            assert!(
                Instant::now() < deadline,
                "idle connections take too long to open"
            );
            let n = next.get();
            next.set(n + 1);
            let mut client = Raw::open(addr, "/echo", n as u32 + 1, offer).await;
            if exchange(&mut client, pool, n % pool.len()).await {
                compressed.set(compressed.get() + 1);
            }
            clients.borrow_mut().push(client);
        }
    });
    futures_util::future::join_all(workers).await;
    let open_time = began.elapsed();
    let mut clients = clients.take();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_kib = server.rss_kib();

    // Idle must not mean dead: a few connections, picked at random, still echo.
    let seed = Instant::now().duration_since(began).as_nanos() as u64;
    for index in idle::picks(clients.len(), seed) {
        exchange(&mut clients[index], pool, index % pool.len()).await;
    }
    exchange(&mut warm, pool, 1).await;
    drop(clients);
    if let Some(notes) = server.stop() {
        println!("  its stderr:\n{notes}");
    }
    let figures = idle::Figures {
        opened: wanted,
        open_time,
        before_kib,
        after_kib,
    };
    (figures, compressed.get())
}

/// Prints a note when connections that negotiated compression got messages
/// at or above the threshold uncompressed: every JSON message shrinks.
fn note_uncompressed(what: &str, compressed: usize, total: usize) {
    if compressed < total {
        println!(
            "  note: {} of {total} {what} came uncompressed on connections that negotiated \
             compression, though every message is {THRESHOLD} B or more and shrinks",
            total - compressed
        );
    }
}

/// Scenario 10: compression negotiated beside not offered, on one berth.
pub async fn scenario(bench: &Bench, summary: &mut Summary) {
    let plan = &bench.plan;
    let dir = tempfile::Builder::new()
        .prefix("berth-bench-compression-")
        .tempdir()
        .expect("a temporary folder");
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, crate::config_text(&routes())).expect("write the config");
    let echo_pool = Messages::new(ECHO_POOL, THRESHOLD, 0x5EED_0001, true);
    let burst = Messages::new(plan.compression_burst, THRESHOLD, 0x5EED_0002, false);
    let idle_pool = Messages::new(IDLE_POOL, IDLE_MESSAGE, 0x5EED_0003, true);
    let (low, mean, high) = echo_pool.sizes();
    println!();
    println!(
        "10. compression: the same berth routes (echo.wasm and testkit.wasm, route model, \
         compression on, threshold {THRESHOLD} B), clients offering permessage-deflate \
         (`client_max_window_bits`; berth answers no context takeover either way) beside \
         clients offering nothing, alternating rounds. Messages: JSON arrays of chat messages, \
         {low} to {high} B (mean {mean:.0} B), all at or above the threshold; clients compress \
         each at zlib's default level ({:.0} B mean, compressed before the clock starts), berth \
         at level 1",
        echo_pool.deflated_mean()
    );
    let server = crate::start_berth(&config);

    println!();
    println!(
        "10. compression, pipelined echo: {} connections x {} messages, {} in flight per \
         connection, {ECHO_POOL} distinct messages in turn, every echo checked whole; bytes on \
         the wire per message as the clients' sockets count them, frame headers included; \
         server CPU per message from /proc (shown for runs of 0.5 s or more); the share of \
         echoes that came compressed",
        plan.pipelined_connections, plan.compression_messages, plan.window
    );
    let table = Table::new(&[
        "msgs/s",
        "time",
        "client->server/msg",
        "server->client/msg",
        "server cpu/msg",
        "load gen cpu",
        "compressed",
    ]);
    let mut rounds = [Vec::new(), Vec::new()];
    for round in 1..=plan.rounds {
        for (variant, results) in Variant::BOTH.into_iter().zip(&mut rounds) {
            let figures = pipelined(&server, variant, &echo_pool, plan).await;
            table.row(variant.name(), &round.to_string(), &figures.cells());
            results.push(figures);
        }
    }
    let [plain, packed] = rounds.map(|r| Echo::median_of(&r));
    table.row(
        &format!("median {}", Variant::Plain.name()),
        "",
        &plain.cells(),
    );
    table.row(
        &format!("median {}", Variant::Deflate.name()),
        "",
        &packed.cells(),
    );
    table.row(
        "  deflate / plain",
        "",
        &[
            ratio(packed.rate, plain.rate),
            ratio_of(packed.elapsed, plain.elapsed),
            ratio(packed.up, plain.up),
            ratio(packed.down, plain.down),
            if plain.cpu_per_message.is_zero() {
                "-".to_string()
            } else {
                ratio_of(packed.cpu_per_message, plain.cpu_per_message)
            },
        ],
    );
    note_uncompressed("echoes", packed.compressed, packed.total);

    let subscribers = plan.subscribers;
    let (low, mean, high) = burst.sizes();
    println!();
    println!(
        "10. compression, fan-out: 1 publisher (not compressing) -> {subscribers} subscribers \
         on testkit's /kit, {} publishes back to back with `publish TOPIC TEXT`, each a \
         different message of {low} to {high} B (mean {mean:.0} B), every delivery checked \
         whole; bytes each subscriber read per delivery; server CPU per delivery during the \
         burst; a fresh topic per round",
        burst.len()
    );
    let table = Table::new(&[
        "deliveries/s",
        "time",
        "wire/delivery",
        "server cpu/delivery",
        "load gen cpu",
        "compressed",
    ]);
    let mut rounds = [Vec::new(), Vec::new()];
    for round in 1..=plan.rounds {
        for (index, (variant, results)) in Variant::BOTH.into_iter().zip(&mut rounds).enumerate() {
            let topic = format!("chat{round}-{index}");
            let figures = fanout(&server, variant, &burst, subscribers, &topic).await;
            table.row(variant.name(), &round.to_string(), &figures.cells());
            results.push(figures);
        }
    }
    let [plain, packed] = rounds.map(|r| Fan::median_of(&r));
    table.row(
        &format!("median {}", Variant::Plain.name()),
        "",
        &plain.cells(),
    );
    table.row(
        &format!("median {}", Variant::Deflate.name()),
        "",
        &packed.cells(),
    );
    let cpu_ratio = match (packed.cpu_per_delivery, plain.cpu_per_delivery) {
        (Some(p), Some(b)) if !b.is_zero() => Some(p.as_secs_f64() / b.as_secs_f64()),
        _ => None,
    };
    table.row(
        "  deflate / plain",
        "",
        &[
            ratio(packed.rate, plain.rate),
            ratio_of(packed.elapsed, plain.elapsed),
            ratio(packed.down, plain.down),
            cpu_ratio.map_or("-".into(), |r| format!("{r:.2}x")),
        ],
    );
    note_uncompressed("deliveries", packed.compressed, packed.total);
    let check = summary.check(
        "10. compression, fan-out",
        "server cpu/delivery, deflate / plain",
        cpu_ratio.unwrap_or(f64::NAN),
        Goal::RatioAtMost(1.5),
        "",
    );
    println!("  {check}");
    if let Some(notes) = server.stop() {
        println!("  berth's stderr:\n{notes}");
    }

    let cap = bench.open_files.saturating_sub(SPARE_DESCRIPTORS) as usize;
    let wanted = plan.compression_idle.min(cap);
    let (low, _, high) = idle_pool.sizes();
    println!();
    println!(
        "10. compression, idle connections: {wanted} connections to /echo, opened \
         {CONCURRENCY} at a time, each sending one message of {low} to {high} B (compressed \
         where negotiated) and reading its echo, then held 1 s; KiB per connection = VmRSS \
         growth / connections. A fresh berth per round; its warm-up connection exchanges a \
         message the same way first."
    );
    if wanted < plan.compression_idle {
        println!(
            "  (capped from {} by this process's open-file limit of {})",
            plan.compression_idle, bench.open_files
        );
    }
    let table = Table::new(&[
        "connections",
        "open time",
        "rss before",
        "rss after",
        "KiB/conn",
        "compressed",
    ]);
    let mut rounds = [Vec::new(), Vec::new()];
    let mut compressed = 0;
    for round in 1..=plan.rounds {
        for (variant, results) in Variant::BOTH.into_iter().zip(&mut rounds) {
            let (figures, packed) = idle_round(&config, variant, wanted, &idle_pool).await;
            let mut cells = figures.cells();
            cells.push(compressed_cell(packed, wanted));
            table.row(variant.name(), &round.to_string(), &cells);
            results.push(figures);
            if variant == Variant::Deflate {
                compressed += packed;
            }
            // Let the kernel settle before the next server.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    note_uncompressed("echoes", compressed, wanted * plan.rounds);
    let [plain, packed] = rounds.map(|r| {
        median(
            &r.iter()
                .map(idle::Figures::per_connection)
                .collect::<Vec<_>>(),
        )
    });
    let only_last = |text: String| {
        let mut cells = vec![String::new(); 4];
        cells.push(text);
        cells
    };
    table.row(
        &format!("median {}", Variant::Plain.name()),
        "",
        &only_last(format!("{plain:.2}")),
    );
    table.row(
        &format!("median {}", Variant::Deflate.name()),
        "",
        &only_last(format!("{packed:.2}")),
    );
    table.row("  deflate / plain", "", &only_last(ratio(packed, plain)));
    let check = summary.check(
        "10. compression, idle connections",
        "KiB per connection with deflate",
        packed,
        Goal::AtMost(10.0),
        "KiB",
    );
    println!("  {check}");
}
