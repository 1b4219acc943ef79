//! Scenario 11: state. What the host calls for state cost a plugin, timed
//! inside the plugin: testkit's `time-*` commands loop in one call, read the
//! WASI monotonic clock around each iteration and answer the p50 and p99, so
//! a figure is the host call as a plugin sees it (the crossing into the host
//! and back included, the WebSocket round trip not):
//! - a `set` of a 64-byte value and a `get` of the same key, keys cycled,
//!   beside two `config-get`s: a pair of cheap host calls, the crossing alone;
//! - a history read of the newest 50 messages of a topic that keeps 100 of
//!   ~200 bytes;
//! - a ~200-byte publish to a topic of a route that keeps history (full: each
//!   publish also drops the oldest) beside the same publish on a route that
//!   keeps none, with no subscriber, one that reads and a hundred.
//!
//! One berth with its store in a temporary folder, two testkit routes (their
//! own namespaces): `/hist` keeps history, `/plain` does not.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::report::{Goal, Summary, Table, median_duration, micros, ratio_of};
use crate::servers::Server;
use crate::wire::{Client, command, timed_answer, ws};
use crate::{Bench, LIMIT, QUEUE_DEPTH};

/// The route that keeps history, and the one that keeps none.
const HISTORY: &str = "/hist";
const PLAIN: &str = "/plain";
/// Messages a `/hist` topic keeps.
const HISTORY_SIZE: usize = 1000;
/// The size of a published message.
const MESSAGE: usize = 200;
/// Messages a history read asks for...
const PAGE: usize = 50;
/// ...of a topic that holds this many.
const KEPT: usize = 100;

/// Iterations of each timing command.
struct Counts {
    store: usize,
    config: usize,
    history: usize,
    /// At most `QUEUE_DEPTH`: the subscriber's queue holds a whole run.
    publish: usize,
}

impl Counts {
    fn new(smoke: bool) -> Counts {
        if smoke {
            return Counts {
                store: 100,
                config: 100,
                history: 100,
                publish: 100,
            };
        }
        Counts {
            store: 20_000,
            config: 20_000,
            history: 10_000,
            publish: 10_000,
        }
    }
}

/// The two testkit routes; the store lives in `state_dir`. Each route's
/// queue holds a whole publish run for one subscriber, and a call may run
/// long enough for a whole timing loop.
fn config(state_dir: &Path) -> String {
    let route = |path: &str, history: usize| {
        format!(
            r#"
[[route]]
path = "{path}"
plugin = "testkit.wasm"
history-size = {history}
write-queue = {QUEUE_DEPTH}
write-queue-bytes = "64MiB"
call-timeout = "30s"

[route.config]
bench = "a value for config-get"
"#
        )
    };
    format!(
        "state-dir = {state_dir:?}\n{}{}",
        route(HISTORY, HISTORY_SIZE),
        route(PLAIN, 0)
    )
}

/// What a timing command answered.
#[derive(Clone, Copy)]
struct Timed {
    count: usize,
    p50: Duration,
    p99: Duration,
}

impl Timed {
    fn cells(&self) -> Vec<String> {
        vec![self.count.to_string(), micros(self.p50), micros(self.p99)]
    }

    fn median_of(rounds: &[Timed]) -> Timed {
        let of =
            |f: fn(&Timed) -> Duration| median_duration(&rounds.iter().map(f).collect::<Vec<_>>());
        Timed {
            count: rounds.iter().map(|r| r.count).sum(),
            p50: of(|r| r.p50),
            p99: of(|r| r.p99),
        }
    }
}

/// Runs a timing command and reads its `timed N P50_NS P99_NS`.
async fn timed(client: &mut Client, text: &str) -> Timed {
    let answer = command(client, text).await;
    let (count, p50, p99) = timed_answer(text, &answer);
    Timed { count, p50, p99 }
}

async fn open(server: &Server, path: &str) -> Client {
    ws(server.addr(), path, None)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A client subscribed to `topic` on `path`, reading until it has had
/// `expected` messages; the task answers how many came.
async fn subscriber(
    server: &Server,
    path: &str,
    topic: &str,
    expected: usize,
) -> JoinHandle<usize> {
    let mut client = open(server, path).await;
    let answer = command(&mut client, &format!("subscribe {topic}")).await;
    assert_eq!(answer, "subscribed", "{path}: subscribe {topic}");
    tokio::spawn(async move {
        let mut received = 0;
        let read = async {
            while received < expected {
                match client.next().await {
                    Some(Ok(Message::Text(_))) => received += 1,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    _ => break,
                }
            }
        };
        let _ = tokio::time::timeout(LIMIT, read).await;
        let _ = client.close(None).await;
        received
    })
}

/// How many subscribers read the publishes, in turn: none, one, and a room's worth.
const FAN_OUTS: [usize; 3] = [0, 1, 100];

/// Times `publish` runs of topic `p{subscribers}` on `path`, with that many
/// reading subscribers; also answers berth's CPU time per publish, from the
/// first publish until every subscriber has read the last (the fan-out and
/// the socket writes included).
async fn publish(
    server: &Server,
    client: &mut Client,
    path: &str,
    subscribers: usize,
    count: usize,
) -> (Timed, Duration) {
    let topic = format!("p{subscribers}");
    let mut readers = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        readers.push(subscriber(server, path, &topic, count).await);
    }
    let cpu = server.cpu();
    let figures = timed(client, &format!("time-publish {topic} {count} {MESSAGE}")).await;
    for reader in readers {
        let received = reader.await.expect("the subscriber finished");
        assert_eq!(received, count, "{path}: the subscriber's deliveries");
    }
    let per_publish = server.cpu().saturating_sub(cpu) / count.max(1) as u32;
    (figures, per_publish)
}

/// Prints the median row of `rounds` under `label`, with p50 and p99 over
/// `baseline`'s when given.
fn median_row(table: &Table, label: &str, rounds: &[Timed], baseline: Option<Timed>) -> Timed {
    let median = Timed::median_of(rounds);
    let mut cells = median.cells();
    if let Some(base) = baseline {
        cells.push(ratio_of(median.p50, base.p50));
        cells.push(ratio_of(median.p99, base.p99));
    }
    table.row(label, "", &cells);
    median
}

/// Scenario 11: state calls timed inside testkit.
pub async fn scenario(bench: &Bench, summary: &mut Summary) {
    let plan = &bench.plan;
    let counts = Counts::new(plan.smoke);
    let dir = tempfile::Builder::new()
        .prefix("berth-bench-state-")
        .tempdir()
        .expect("a temporary folder");
    let state_dir = dir.path().join("state");
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, crate::config_text(&self::config(&state_dir)))
        .expect("write the config");
    // Not `crate::start_berth`, which names a store folder of its own: this
    // one is the config's `state-dir`.
    let server = Server::start(
        "berth (state)",
        env!("CARGO_BIN_EXE_berth"),
        &["serve", "--config", config.to_str().unwrap()],
        &[("RUST_LOG", "warn")],
    );
    println!();
    println!(
        "11. state: host calls timed inside testkit (route model, store in a temporary \
         folder): each iteration of a loop in one plugin call between two reads of the WASI \
         monotonic clock, so a figure includes the crossing into the host and back, and no \
         WebSocket round trip; p50 and p99 per iteration, medians of the rounds' figures. \
         {HISTORY} keeps {HISTORY_SIZE} messages per topic, {PLAIN} none."
    );

    let mut hist = open(&server, HISTORY).await;
    let mut plain = open(&server, PLAIN).await;
    // The store holds every key before the clock starts, the history topic
    // its messages, and each publish topic of /hist a full history.
    timed(&mut hist, "time-store 1000").await;
    let answer = command(&mut hist, &format!("publish-many h 0 {KEPT} {MESSAGE}")).await;
    assert_eq!(answer, "published");
    for client in [&mut hist, &mut plain] {
        for topic in FAN_OUTS.map(|n| format!("p{n}")) {
            timed(
                client,
                &format!("time-publish {topic} {HISTORY_SIZE} {MESSAGE}"),
            )
            .await;
        }
    }

    println!(
        "  set + get: a 64-byte value (a different one each time) set under one of 1,000 \
         keys, then read back and compared, {} per round; beside two config-gets, {} per \
         round. History: `history(h, none, {PAGE})` on a topic holding {KEPT} messages of \
         {MESSAGE} B, {} per round. Publish: {} publishes of {MESSAGE} B text per round to a \
         topic with no subscriber (p0), one that reads every message (p1) or a hundred \
         (p100), on {HISTORY} (full history) and {PLAIN}. The base of a ratio: the config-gets for set + get \
         and history, the same publish without history for a publish with it.",
        counts.store, counts.config, counts.history, counts.publish
    );
    let table = Table::new(&["iterations", "p50", "p99", "p50 / base", "p99 / base"]);
    let names = [
        "2 x config-get (baseline)",
        "set + get, 64 B",
        "history, 50 of 200 B",
        "publish, 0 subs, no history",
        "publish, 0 subs, history",
        "publish, 1 sub, no history",
        "publish, 1 sub, history",
        "publish, 100 subs, no history",
        "publish, 100 subs, history",
    ];
    let mut rounds: [Vec<Timed>; 9] = Default::default();
    // Berth's CPU per publish, by fan-out, without and with history.
    let mut cpu: [[Vec<Duration>; 2]; 3] = Default::default();
    for round in 1..=plan.rounds {
        let mut figures = Vec::with_capacity(names.len());
        figures.push(timed(&mut hist, &format!("time-config {}", counts.config)).await);
        figures.push(timed(&mut hist, &format!("time-store {}", counts.store)).await);
        figures.push(
            timed(
                &mut hist,
                &format!("time-history h {} {PAGE}", counts.history),
            )
            .await,
        );
        for (fan_out, subscribers) in FAN_OUTS.into_iter().enumerate() {
            for (kept, (path, client)) in [(PLAIN, &mut plain), (HISTORY, &mut hist)]
                .into_iter()
                .enumerate()
            {
                let (timed, per_publish) =
                    publish(&server, client, path, subscribers, counts.publish).await;
                figures.push(timed);
                cpu[fan_out][kept].push(per_publish);
            }
        }
        for ((name, figure), results) in names.iter().zip(figures).zip(&mut rounds) {
            table.row(name, &round.to_string(), &figure.cells());
            results.push(figure);
        }
    }

    let config_pair = median_row(&table, &format!("median {}", names[0]), &rounds[0], None);
    let store = median_row(
        &table,
        &format!("median {}", names[1]),
        &rounds[1],
        Some(config_pair),
    );
    let history = median_row(
        &table,
        &format!("median {}", names[2]),
        &rounds[2],
        Some(config_pair),
    );
    let mut publishes = Vec::new();
    for pair in [[3, 4], [5, 6], [7, 8]] {
        let without = median_row(
            &table,
            &format!("median {}", names[pair[0]]),
            &rounds[pair[0]],
            None,
        );
        let with = median_row(
            &table,
            &format!("median {}", names[pair[1]]),
            &rounds[pair[1]],
            Some(without),
        );
        publishes.push((without, with));
    }
    let micros_of = |d: Duration| d.as_secs_f64() * 1e6;
    let checks = [
        (
            "set + get",
            summary.check(
                "11. state, set + get of a 64 B value",
                "p50",
                micros_of(store.p50),
                Goal::AtMost(20.0),
                "µs",
            ),
        ),
        (
            "history",
            summary.check(
                "11. state, history read of 50 messages",
                "p50",
                micros_of(history.p50),
                Goal::AtMost(50.0),
                "µs",
            ),
        ),
        (
            "publish, 0 subscribers",
            summary.check(
                "11. state, publish, 0 subscribers",
                "p50 with history / without",
                publishes[0].1.p50.as_secs_f64() / publishes[0].0.p50.as_secs_f64(),
                Goal::RatioAtMost(1.5),
                "",
            ),
        ),
        (
            "publish, 1 subscriber",
            summary.check(
                "11. state, publish, 1 subscriber",
                "p50 with history / without",
                publishes[1].1.p50.as_secs_f64() / publishes[1].0.p50.as_secs_f64(),
                Goal::RatioAtMost(1.5),
                "",
            ),
        ),
        (
            "publish, 100 subscribers",
            summary.check(
                "11. state, publish, 100 subscribers",
                "p50 with history / without",
                publishes[2].1.p50.as_secs_f64() / publishes[2].0.p50.as_secs_f64(),
                Goal::RatioAtMost(1.5),
                "",
            ),
        ),
    ];
    for (what, check) in checks {
        println!("  {what}: {check}");
    }
    println!(
        "  berth's CPU time per publish, from the first publish until every subscriber read \
         the last (fan-out and socket writes included; /proc counts in 10 ms ticks, so the \
         figure without subscribers is coarse), medians of the rounds:"
    );
    let cpu_table = Table::new(&["no history", "history", "history / none"]);
    let mut cpu_ratios = Vec::new();
    for (subscribers, [without, with]) in FAN_OUTS.iter().zip(&cpu) {
        let (without, with) = (median_duration(without), median_duration(with));
        cpu_table.row(
            &format!("publish, {subscribers} subscribers"),
            "",
            &[micros(without), micros(with), ratio_of(with, without)],
        );
        cpu_ratios.push(with.as_secs_f64() / without.as_secs_f64().max(1e-9));
    }
    let cpu_check = summary.check(
        "11. state, publish to 100 subscribers",
        "berth CPU per publish, history / none",
        cpu_ratios[2],
        Goal::RatioAtMost(1.5),
        "",
    );
    println!("  publish to 100 subscribers, CPU: {cpu_check}");
    for ((without, with), subscribers) in
        publishes
            .iter()
            .zip(["0 subscribers", "1 subscriber", "100 subscribers"])
    {
        println!(
            "  publish, {subscribers}: history adds {} at p50, {} at p99",
            micros(with.p50.saturating_sub(without.p50)),
            micros(with.p99.saturating_sub(without.p99))
        );
    }
    let _ = hist.close(None).await;
    let _ = plain.close(None).await;
    if let Some(notes) = server.stop() {
        println!("  berth's stderr:\n{notes}");
    }
    shared(bench, &counts, dir.path()).await;
}

/// The same calls with the store in Redis (`[broker]`, loopback), where each
/// is a round trip: set + get, the history read, a publish with history.
async fn shared(bench: &Bench, counts: &Counts, dir: &Path) {
    println!();
    let Some(redis) = crate::cluster::Redis::start(dir) else {
        println!("  the same in Redis: skipped, redis-server is not installed");
        return;
    };
    let config = dir.join("shared.toml");
    let text = format!(
        "{}\n[broker]\nurl = \"{}\"\n",
        self::config(&dir.join("unused")),
        redis.url()
    );
    std::fs::write(&config, crate::config_text(&text)).expect("write the config");
    let server = Server::start(
        "berth (state in Redis)",
        env!("CARGO_BIN_EXE_berth"),
        &["serve", "--config", config.to_str().unwrap()],
        &[("RUST_LOG", "warn")],
    );
    println!(
        "  the same with the store in Redis on loopback (`[broker]`; Redis pinned to CPU 0): \
         every call is a round trip to Redis, and a change a Lua script"
    );
    let mut hist = open(&server, HISTORY).await;
    timed(&mut hist, "time-store 1000").await;
    let answer = command(&mut hist, &format!("publish-many h 0 {KEPT} {MESSAGE}")).await;
    assert_eq!(answer, "published");
    timed(
        &mut hist,
        &format!("time-publish p0 {HISTORY_SIZE} {MESSAGE}"),
    )
    .await;
    let table = Table::new(&["iterations", "p50", "p99"]);
    let names = [
        "Redis: set + get, 64 B",
        "Redis: history, 50 of 200 B",
        "Redis: publish, 0 subs, history",
    ];
    let mut rounds: [Vec<Timed>; 3] = Default::default();
    for round in 1..=bench.plan.rounds {
        let figures = [
            timed(&mut hist, &format!("time-store {}", counts.store / 4)).await,
            timed(
                &mut hist,
                &format!("time-history h {} {PAGE}", counts.history / 4),
            )
            .await,
            timed(
                &mut hist,
                &format!("time-publish p0 {} {MESSAGE}", counts.publish / 4),
            )
            .await,
        ];
        for ((name, figure), results) in names.iter().zip(figures).zip(&mut rounds) {
            table.row(name, &round.to_string(), &figure.cells());
            results.push(figure);
        }
    }
    for (name, results) in names.iter().zip(&rounds) {
        median_row(&table, &format!("median {name}"), results, None);
    }
    let _ = hist.close(None).await;
    if let Some(notes) = server.stop() {
        println!("  berth's stderr:\n{notes}");
    }
}
