//! Scenario 4: the server memory each idle WebSocket connection costs.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::report::{Goal, Summary, Table, median, ratio};
use crate::servers::Server;
use crate::wire::{Client, round_trip, ws};
use crate::{Bench, LIMIT};

/// Connections being opened at once.
pub const CONCURRENCY: usize = 64;
/// Random idle connections checked for an echo at the end, besides the warm-up one.
const VERIFIED: usize = 5;
/// Descriptors the load generator keeps for everything but the idle connections.
pub const SPARE_DESCRIPTORS: u64 = 200;

/// One server's round of the idle scenario.
#[derive(Clone, Copy)]
pub struct Figures {
    /// Connections held open.
    pub opened: usize,
    /// How long opening them took.
    pub open_time: Duration,
    /// The server's VmRSS before they were opened...
    pub before_kib: u64,
    /// ...and while they were held.
    pub after_kib: u64,
}

impl Figures {
    /// Resident memory growth per connection, in KiB.
    pub fn per_connection(&self) -> f64 {
        (self.after_kib as f64 - self.before_kib as f64) / self.opened.max(1) as f64
    }

    /// The table cells: connections, open time, RSS before and after, KiB per connection.
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.opened.to_string(),
            format!("{:.1} s", self.open_time.as_secs_f64()),
            format!("{} KiB", self.before_kib),
            format!("{} KiB", self.after_kib),
            format!("{:.2}", self.per_connection()),
        ]
    }
}

/// The load generator's own buffers stay small: it holds every connection too.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}

/// Sends `text` and waits for it to come back, skipping pings and pongs.
async fn echo_once(client: &mut Client, text: &str) -> Result<(), String> {
    round_trip(client, &Message::text(text)).await
}

/// Opens up to `wanted` connections, [`CONCURRENCY`] at a time; returns them
/// with the number that failed and the first failure.
async fn open(server: &Server, wanted: usize) -> (Vec<Client>, usize, Option<String>) {
    let addr = server.addr();
    let next = Cell::new(0usize);
    let clients = RefCell::new(Vec::with_capacity(wanted));
    let failed = Cell::new(0usize);
    let first_error = RefCell::new(None);
    let deadline = Instant::now() + 3 * LIMIT;
    let (next, clients, failed, first_error) = (&next, &clients, &failed, &first_error);
    let workers = (0..CONCURRENCY).map(|_| async move {
        while next.get() < wanted && Instant::now() < deadline {
            next.set(next.get() + 1);
            match ws(addr, "/echo", Some(client_config())).await {
                Ok(client) => clients.borrow_mut().push(client),
                Err(error) => {
                    failed.set(failed.get() + 1);
                    first_error.borrow_mut().get_or_insert(error);
                }
            }
        }
    });
    futures_util::future::join_all(workers).await;
    let unattempted = wanted - next.get();
    let failed = failed.get() + unattempted;
    if unattempted > 0 {
        first_error
            .borrow_mut()
            .get_or_insert(format!("not all opened within {:?}", 3 * LIMIT));
    }
    (clients.take(), failed, first_error.take())
}

/// A cheap pseudo-random sequence, enough to pick connections to check.
pub fn picks(count: usize, seed: u64) -> Vec<usize> {
    let mut state = seed | 1;
    (0..VERIFIED.min(count))
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % count as u64) as usize
        })
        .collect()
}

async fn idle(server: &Server, wanted: usize, smoke: bool) -> Figures {
    let name = server.name();
    let mut warm = ws(server.addr(), "/echo", Some(client_config()))
        .await
        .unwrap_or_else(|e| panic!("{name}: the warm-up connection failed: {e}"));
    // The first message makes berth's route instance; it is not a connection's cost.
    echo_once(&mut warm, "warm-up")
        .await
        .unwrap_or_else(|e| panic!("{name}: no warm-up echo: {e}"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before_kib = server.rss_kib();

    let began = Instant::now();
    let (mut clients, failed, first_error) = open(server, wanted).await;
    let open_time = began.elapsed();
    if failed > 0 {
        let message = format!(
            "{name}: {failed} of {wanted} idle connections failed; first: {}. The server may \
             be short of file descriptors (its open-file limit) or of max-connections; the \
             figure below counts only the {} that opened.",
            first_error.unwrap_or_default(),
            clients.len()
        );
        assert!(!smoke, "{message}");
        println!("  {message}");
    }
    assert!(!clients.is_empty(), "{name}: no idle connection opened");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_kib = server.rss_kib();

    // Idle must not mean dead: a few connections, picked at random, still echo.
    let seed = Instant::now().duration_since(began).as_nanos() as u64;
    for index in picks(clients.len(), seed) {
        echo_once(&mut clients[index], &format!("still there {index}"))
            .await
            .unwrap_or_else(|e| panic!("{name}: idle connection {index} no longer echoes: {e}"));
    }
    echo_once(&mut warm, "still there")
        .await
        .unwrap_or_else(|e| panic!("{name}: the warm-up connection no longer echoes: {e}"));
    Figures {
        opened: clients.len(),
        open_time,
        before_kib,
        after_kib,
    }
}

/// Scenario 4: K idle connections to a fresh baseline, then to a fresh berth (route model).
pub async fn scenario(bench: &Bench, summary: &mut Summary) {
    let plan = &bench.plan;
    let cap = bench.open_files.saturating_sub(SPARE_DESCRIPTORS) as usize;
    let wanted = plan.idle.min(cap);
    println!();
    println!(
        "4. idle connections: {wanted} WebSocket connections to /echo, opened {CONCURRENCY} at \
         a time from 127.0.0.2-254, held 1 s; KiB per connection = VmRSS growth / connections. \
         Each round starts fresh servers, so memory an earlier round freed cannot hide growth."
    );
    if wanted < plan.idle {
        println!(
            "  (capped from {} by this process's open-file limit of {})",
            plan.idle, bench.open_files
        );
    }
    let table = Table::new(&[
        "connections",
        "open time",
        "rss before",
        "rss after",
        "KiB/conn",
    ]);
    let mut rounds = [Vec::new(), Vec::new()];
    for round in 1..=plan.rounds {
        for (index, results) in rounds.iter_mut().enumerate() {
            let server = if index == 0 {
                bench.start_baseline()
            } else {
                bench.start_berth()
            };
            let figures = idle(&server, wanted, plan.smoke).await;
            table.row(server.name(), &round.to_string(), &figures.cells());
            results.push(figures);
            // Close every connection and let the kernel settle before the next server.
            if let Some(notes) = server.stop() {
                println!("  its stderr:\n{notes}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let [base, berth] =
        rounds.map(|r| median(&r.iter().map(Figures::per_connection).collect::<Vec<_>>()));
    let only_last = |text: String| {
        let mut cells = vec![String::new(); 4];
        cells.push(text);
        cells
    };
    table.row("median baseline", "", &only_last(format!("{base:.2}")));
    table.row(
        "median berth (route model)",
        "",
        &only_last(format!("{berth:.2}")),
    );
    table.row("  berth / baseline", "", &only_last(ratio(berth, base)));
    let check = summary.check(
        "4. idle connections, route model",
        "KiB per connection",
        berth,
        Goal::AtMost(10.0),
        "KiB",
    );
    println!("  route model: {check}");
}
