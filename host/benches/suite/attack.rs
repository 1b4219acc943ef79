//! Scenario 9: clients that send large messages to the echo and never read
//! the answers. berth must close each with 1013 once its connection holds
//! `write-queue-bytes`, keep its memory bounded while they press, give it back
//! once they are gone, and keep answering a neighbouring route meanwhile.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

use crate::report::{Goal, Summary, Table, millis, percentile};
use crate::servers::Server;
use crate::wire::{Client, round_trip, ws};
use crate::{Bench, LIMIT};

/// The size of each message an attacker sends.
const MESSAGE: usize = 64 * 1024;
/// Messages each attacker tries to send (70 MB).
const MESSAGES: usize = 1_100;
/// An attacker stops once one message has waited this long to be taken.
const STALLED: Duration = Duration::from_millis(500);
/// The gap between the neighbour's round trips.
const PACE: Duration = Duration::from_millis(5);
/// The neighbour's round trips before the attack, for its quiet latency.
const QUIET_TRIPS: usize = 400;
/// How often the server's memory is read during the attack.
const SAMPLE: Duration = Duration::from_millis(20);
/// How long berth is left after the attackers are gone before its memory
/// is read: longer than `close-timeout` and the allocator's return of memory.
const SETTLE: Duration = Duration::from_secs(3);

/// One attack's figures.
struct Figures {
    attackers: usize,
    sent_mib: f64,
    closed_1013: usize,
    before_kib: u64,
    peak_kib: u64,
    gone_kib: u64,
    quiet: Vec<Duration>,
    pressed: Vec<Duration>,
}

impl Figures {
    fn growth_mib(&self) -> f64 {
        (self.peak_kib as f64 - self.before_kib as f64) / 1024.0
    }

    fn left_mib(&self) -> f64 {
        (self.gone_kib as f64 - self.before_kib as f64) / 1024.0
    }

    fn cells(&self) -> Vec<String> {
        let p = |trips: &[Duration], q| millis(percentile(trips, q));
        vec![
            self.attackers.to_string(),
            format!("{:.0} MiB", self.sent_mib),
            format!("{}/{}", self.closed_1013, self.attackers),
            format!("{} MiB", self.before_kib / 1024),
            format!("{:+.0} MiB", self.growth_mib()),
            format!("{:+.0} MiB", self.left_mib()),
            format!("{} / {}", p(&self.quiet, 0.5), p(&self.quiet, 0.99)),
            format!("{} / {}", p(&self.pressed, 0.5), p(&self.pressed, 0.99)),
        ]
    }
}

/// An attacker's connection with a 4 KiB receive buffer: the echoes stay in
/// berth rather than in this machine's socket buffers.
async fn attacker(server: &Server) -> Client {
    let addr = server.addr();
    let open = async {
        let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket
            .set_recv_buffer_size(4096)
            .map_err(|e| e.to_string())?;
        let stream = socket.connect(addr).await.map_err(|e| e.to_string())?;
        tokio_tungstenite::client_async(format!("ws://{addr}/echo"), stream)
            .await
            .map(|(client, _)| client)
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(LIMIT, open)
        .await
        .map_err(|_| "no handshake in time".to_string())
        .and_then(|r| r)
        .unwrap_or_else(|e| panic!("{}: an attacker could not connect: {e}", server.name()))
}

/// Sends up to [`MESSAGES`] until berth stops taking them; returns the bytes sent.
async fn press(client: &mut Client, messages: usize) -> usize {
    let payload = bytes::Bytes::from(vec![0x42; MESSAGE]);
    let mut sent = 0;
    for _ in 0..messages {
        let send = client.send(Message::Binary(payload.clone()));
        match tokio::time::timeout(STALLED, send).await {
            Ok(Ok(())) => sent += MESSAGE,
            // berth closed the connection, or stopped reading it.
            Ok(Err(_)) | Err(_) => break,
        }
    }
    sent
}

/// Reads what berth queued, then its close frame: the close code, if any.
async fn close_code(client: &mut Client) -> Option<u16> {
    let read = async {
        while let Some(Ok(msg)) = client.next().await {
            if let Message::Close(frame) = msg {
                return frame.map(|f| u16::from(f.code));
            }
        }
        None
    };
    tokio::time::timeout(LIMIT, read).await.ok().flatten()
}

/// Round trips on the neighbouring route, [`PACE`] apart, until `until`
/// says stop (and at least `at_least`); returns each one's time, sorted.
async fn neighbour(client: &mut Client, at_least: usize, until: &AtomicBool) -> Vec<Duration> {
    let message = Message::text("neighbour");
    let mut trips = Vec::new();
    let deadline = Instant::now() + 3 * LIMIT;
    while (trips.len() < at_least || !until.load(Ordering::Relaxed)) && Instant::now() < deadline {
        let began = Instant::now();
        if let Err(e) = round_trip(client, &message).await {
            panic!("the neighbouring route stopped answering: {e}");
        }
        trips.push(began.elapsed());
        tokio::time::sleep(PACE).await;
    }
    trips.sort();
    trips
}

/// The neighbour's quiet round trips, then (once `ready` has said they are
/// done) its round trips until `done`. It runs on a thread and runtime of its
/// own, so that the attackers' sending cannot delay its turns here.
fn spawn_neighbour(
    addr: SocketAddr,
    ready: std::sync::mpsc::Sender<()>,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<Duration>, Vec<Duration>)> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the neighbour");
        runtime.block_on(async {
            let mut near = ws(addr, "/echo-conn", None)
                .await
                .unwrap_or_else(|e| panic!("berth: the neighbour could not connect: {e}"));
            // Making the route's instance is not part of any round trip.
            round_trip(&mut near, &Message::text("warm-up"))
                .await
                .unwrap_or_else(|e| panic!("berth: no neighbour warm-up echo: {e}"));
            let quiet = neighbour(&mut near, QUIET_TRIPS, &AtomicBool::new(true)).await;
            let _ = ready.send(());
            let pressed = neighbour(&mut near, 1, &done).await;
            (quiet, pressed)
        })
    })
}

async fn attack(bench: &Bench, attackers: usize, messages: usize) -> Figures {
    let server = bench.start_berth();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let finished = Arc::new(AtomicBool::new(false));
    let near = spawn_neighbour(server.addr(), ready_tx, finished.clone());
    let mut clients = Vec::with_capacity(attackers);
    for _ in 0..attackers {
        clients.push(attacker(&server).await);
    }
    ready
        .recv_timeout(3 * LIMIT)
        .expect("the neighbour's quiet round trips end in time");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before_kib = server.rss_kib();

    let peak = Cell::new(before_kib);
    let sent = async {
        let sent = futures_util::future::join_all(clients.iter_mut().map(|c| press(c, messages)));
        let total: usize = sent.await.iter().sum();
        finished.store(true, Ordering::Relaxed);
        total
    };
    let sampler = async {
        while !finished.load(Ordering::Relaxed) {
            peak.set(peak.get().max(server.rss_kib()));
            tokio::time::sleep(SAMPLE).await;
        }
    };
    let (sent, ()) = tokio::join!(sent, sampler);
    let (quiet, pressed) = near.join().expect("the neighbour's thread");
    let peak_kib = peak.get().max(server.rss_kib());

    let codes = futures_util::future::join_all(clients.iter_mut().map(close_code)).await;
    let closed_1013 = codes.iter().filter(|&&code| code == Some(1013)).count();
    drop(clients);
    tokio::time::sleep(SETTLE).await;
    let gone_kib = server.rss_kib();
    let mut after = ws(server.addr(), "/echo-conn", None)
        .await
        .unwrap_or_else(|e| {
            panic!("berth: the neighbouring route refused a client after the attack: {e}")
        });
    round_trip(&mut after, &Message::text("after"))
        .await
        .unwrap_or_else(|e| panic!("berth: no neighbour echo after the attack: {e}"));
    if let Some(notes) = server.stop() {
        println!("  its stderr:\n{notes}");
    }
    Figures {
        attackers,
        sent_mib: sent as f64 / (1 << 20) as f64,
        closed_1013,
        before_kib,
        peak_kib,
        gone_kib,
        quiet,
        pressed,
    }
}

/// Scenario 9: 10 and then 100 attackers, each against a fresh berth.
pub async fn scenario(bench: &Bench, summary: &mut Summary) {
    let smoke = bench.plan.smoke;
    let (sizes, messages): (&[usize], usize) = if smoke {
        (&[2, 10], 40)
    } else {
        (&[10, 100], MESSAGES)
    };
    println!();
    println!(
        "9. never-reading clients: each sends /echo up to {messages} messages of 64 KiB with a \
         4 KiB receive buffer and reads nothing until it stops; meanwhile a neighbour does a \
         round trip on /echo-conn every {} ms. Memory: VmRSS before, its peak growth during \
         the attack, and what is left {} s after the attackers are gone. Latency: the \
         neighbour's p50 / p99, quiet and under attack. Fresh berth per row.",
        PACE.as_millis(),
        SETTLE.as_secs()
    );
    let table = Table::new(&[
        "attackers",
        "sent",
        "closed 1013",
        "rss before",
        "growth",
        "left after",
        "quiet p50 / p99",
        "attack p50 / p99",
    ]);
    for &attackers in sizes {
        let figures = attack(bench, attackers, messages).await;
        table.row("berth (route model)", "1", &figures.cells());
        if smoke {
            continue;
        }
        let what = format!("9. {attackers} never-reading clients");
        let growth = summary.check(
            &what,
            "growth",
            figures.growth_mib(),
            Goal::AtMost(if attackers <= 10 { 32.0 } else { 256.0 }),
            "MiB",
        );
        let left = summary.check(
            &what,
            "left after",
            figures.left_mib(),
            Goal::AtMost(64.0),
            "MiB",
        );
        let p99 = percentile(&figures.pressed, 0.99).as_secs_f64() * 1e3;
        let latency = summary.check(&what, "neighbour p99", p99, Goal::AtMost(50.0), "ms");
        println!("  {attackers} attackers: {growth}; {left}; {latency}");
        if figures.closed_1013 != attackers {
            println!(
                "  only {} of {attackers} were closed with 1013",
                figures.closed_1013
            );
        }
    }
}
