//! Scenarios 1 and 2: echo one message at a time per connection (rate and
//! latency), and pipelined echo (rate and the server's CPU time per message).

use std::time::{Duration, Instant};

use crate::report::{
    CPU_MEANINGFUL, Goal, Summary, Table, median, median_duration, median_share, micros, percent,
    percentile, ratio, ratio_of, share, whole,
};
use crate::servers::own_cpu;
use crate::wire::{Payload, Raw};
use crate::{Bench, Kind, LIMIT, Subject};

/// Every so many echoes, every byte is compared, not only the sequence number.
const FULL_CHECK_EVERY: u32 = 1024;

/// One round of echo-one-at-a-time on one server.
#[derive(Clone, Copy)]
struct Lockstep {
    rate: f64,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
    /// The load generator's CPU time over the elapsed time, for runs long
    /// enough for /proc's ticks.
    generator: Option<f64>,
}

impl Lockstep {
    fn cells(&self) -> Vec<String> {
        vec![
            whole(self.rate),
            micros(self.p50),
            micros(self.p90),
            micros(self.p99),
            micros(self.max),
            self.generator.map_or("-".to_string(), percent),
        ]
    }

    fn median(rounds: &[Lockstep]) -> Lockstep {
        let of = |f: fn(&Lockstep) -> Duration| {
            median_duration(&rounds.iter().map(f).collect::<Vec<_>>())
        };
        Lockstep {
            rate: median(&rounds.iter().map(|r| r.rate).collect::<Vec<_>>()),
            p50: of(|r| r.p50),
            p90: of(|r| r.p90),
            p99: of(|r| r.p99),
            max: of(|r| r.max),
            generator: median_share(rounds.iter().map(|r| r.generator)),
        }
    }
}

/// Connects `count` hand-framed clients to one route.
async fn connect_all(subject: &Subject<'_>, count: usize) -> Vec<Raw> {
    let mut clients = Vec::with_capacity(count);
    for conn in 0..count {
        clients.push(Raw::connect(subject.server.addr(), subject.path, conn as u32).await);
    }
    clients
}

async fn close_all(clients: Vec<Raw>) {
    futures_util::future::join_all(clients.into_iter().map(Raw::close)).await;
}

/// Every connection sends a message and waits for its echo before the next,
/// all connections at once.
async fn lockstep(subject: &Subject<'_>, connections: usize, messages: usize) -> Lockstep {
    let clients = connect_all(subject, connections).await;
    let own_before = own_cpu();
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(conn, mut raw)| {
            tokio::spawn(async move {
                let mut payload = Payload::new(conn);
                let mut latencies = Vec::with_capacity(messages);
                for seq in 0..messages as u32 {
                    raw.queue_text(payload.set(seq));
                    let sent = Instant::now();
                    raw.flush().await;
                    let echo = raw.next_data().await;
                    latencies.push(sent.elapsed());
                    assert!(start.elapsed() < LIMIT, "echoes take too long");
                    payload.check(raw.payload(echo), seq, seq.is_multiple_of(FULL_CHECK_EVERY));
                }
                (latencies, Instant::now(), raw)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(connections * messages);
    let mut last = start;
    let mut clients = Vec::with_capacity(connections);
    for task in tasks {
        let (mine, done, raw) = task.await.expect("a client finished");
        latencies.extend(mine);
        last = last.max(done);
        clients.push(raw);
    }
    let generator = share(own_cpu() - own_before, last - start);
    close_all(clients).await;
    latencies.sort_unstable();
    Lockstep {
        generator,
        rate: latencies.len() as f64 / (last - start).as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p90: percentile(&latencies, 0.90),
        p99: percentile(&latencies, 0.99),
        max: *latencies.last().unwrap(),
    }
}

/// Scenario 1: echo one message at a time, on the baseline and both berth models.
pub async fn one_at_a_time(bench: &Bench, summary: &mut Summary) {
    let plan = &bench.plan;
    println!();
    println!(
        "1. echo one at a time: {} connections x {} messages of 64 B text; each connection \
         waits for its echo before sending the next",
        plan.echo_connections, plan.echo_messages
    );
    let table = Table::new(&["msgs/s", "p50", "p90", "p99", "max", "load gen cpu"]);
    let subjects = bench.echo_subjects();
    let mut rounds = vec![Vec::new(); subjects.len()];
    for round in 1..=plan.rounds {
        for (subject, results) in subjects.iter().zip(&mut rounds) {
            let figures = lockstep(subject, plan.echo_connections, plan.echo_messages).await;
            table.row(subject.label, &round.to_string(), &figures.cells());
            results.push(figures);
        }
    }
    let medians: Vec<Lockstep> = rounds.iter().map(|r| Lockstep::median(r)).collect();
    let base = medians[0];
    table.row(&format!("median {}", subjects[0].label), "", &base.cells());
    for (subject, m) in subjects.iter().zip(&medians).skip(1) {
        table.row(&format!("median {}", subject.label), "", &m.cells());
        table.row(
            "  berth / baseline",
            "",
            &[
                ratio(m.rate, base.rate),
                ratio_of(m.p50, base.p50),
                ratio_of(m.p90, base.p90),
                ratio_of(m.p99, base.p99),
                ratio_of(m.max, base.max),
            ],
        );
        let what = format!("1. echo one at a time, {}", subject.kind.model());
        let rate = summary.check(
            &what,
            "rate",
            m.rate / base.rate,
            Goal::RatioAtLeast(0.9),
            "",
        );
        let p99 = summary.check(
            &what,
            "p99",
            m.p99.as_secs_f64() / base.p99.as_secs_f64(),
            Goal::RatioAtMost(1.3),
            "",
        );
        println!("  {}: {rate}; {p99}", subject.kind.model());
    }
}

/// One round of pipelined echo on one server.
#[derive(Clone, Copy)]
struct Pipelined {
    rate: f64,
    elapsed: Duration,
    cpu_per_message: Duration,
    /// The load generator's CPU time over the elapsed time, for runs long
    /// enough for /proc's ticks.
    generator: Option<f64>,
}

impl Pipelined {
    fn cells(&self) -> Vec<String> {
        vec![
            whole(self.rate),
            format!("{:.3} s", self.elapsed.as_secs_f64()),
            if self.elapsed >= CPU_MEANINGFUL {
                micros(self.cpu_per_message)
            } else {
                "(too short)".to_string()
            },
            self.generator.map_or("-".to_string(), percent),
        ]
    }
}

/// Every connection keeps `window` messages in flight until `messages` have
/// come back; echoes are counted, their sequence checked, a sample compared whole.
async fn pipelined(
    subject: &Subject<'_>,
    connections: usize,
    messages: usize,
    window: usize,
) -> Pipelined {
    let clients = connect_all(subject, connections).await;
    let cpu_before = subject.server.cpu();
    let own_before = own_cpu();
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(conn, mut raw)| {
            tokio::spawn(async move {
                let mut outgoing = Payload::new(conn);
                let mut expected = Payload::new(conn);
                let (mut sent, mut received) = (0usize, 0usize);
                loop {
                    while let Some(echo) = raw.frame() {
                        let seq = received as u32;
                        let full = seq.is_multiple_of(FULL_CHECK_EVERY) || received + 1 == messages;
                        expected.check(raw.payload(echo), seq, full);
                        received += 1;
                    }
                    if received == messages {
                        break;
                    }
                    while sent < messages && sent - received < window {
                        raw.queue_text(outgoing.set(sent as u32));
                        sent += 1;
                    }
                    raw.flush().await;
                    assert!(start.elapsed() < LIMIT, "echoes take too long");
                    raw.fill().await;
                }
                (Instant::now(), raw)
            })
        })
        .collect();
    let mut last = start;
    let mut clients = Vec::with_capacity(connections);
    for task in tasks {
        let (done, raw) = task.await.expect("a client finished");
        last = last.max(done);
        clients.push(raw);
    }
    let cpu = subject.server.cpu().saturating_sub(cpu_before);
    let elapsed = last - start;
    let generator = share(own_cpu() - own_before, elapsed);
    close_all(clients).await;
    let total = connections * messages;
    Pipelined {
        generator,
        rate: total as f64 / elapsed.as_secs_f64(),
        elapsed,
        cpu_per_message: cpu / total as u32,
    }
}

/// Scenario 2: pipelined echo, on the baseline and both berth models.
pub async fn pipelined_echo(bench: &Bench, summary: &mut Summary) {
    let plan = &bench.plan;
    println!();
    println!(
        "2. pipelined echo: {} connections x {} messages of 64 B text, {} in flight per \
         connection; server CPU per message from /proc/PID/stat (10 ms ticks, shown for runs \
         of 0.5 s or more)",
        plan.pipelined_connections, plan.pipelined_messages, plan.window
    );
    let table = Table::new(&["msgs/s", "time", "server cpu/msg", "load gen cpu"]);
    let subjects = bench.echo_subjects();
    let mut rounds = vec![Vec::new(); subjects.len()];
    for round in 1..=plan.rounds {
        for (subject, results) in subjects.iter().zip(&mut rounds) {
            let figures = pipelined(
                subject,
                plan.pipelined_connections,
                plan.pipelined_messages,
                plan.window,
            )
            .await;
            table.row(subject.label, &round.to_string(), &figures.cells());
            results.push(figures);
        }
    }
    let medians: Vec<Pipelined> = rounds
        .iter()
        .map(|r| Pipelined {
            rate: median(&r.iter().map(|f| f.rate).collect::<Vec<_>>()),
            elapsed: median_duration(&r.iter().map(|f| f.elapsed).collect::<Vec<_>>()),
            cpu_per_message: median_duration(
                &r.iter().map(|f| f.cpu_per_message).collect::<Vec<_>>(),
            ),
            generator: median_share(r.iter().map(|f| f.generator)),
        })
        .collect();
    let base = medians[0];
    table.row(&format!("median {}", subjects[0].label), "", &base.cells());
    for (subject, m) in subjects.iter().zip(&medians).skip(1) {
        table.row(&format!("median {}", subject.label), "", &m.cells());
        let cpu_ratio = if base.cpu_per_message.is_zero() {
            "-".to_string()
        } else {
            ratio_of(m.cpu_per_message, base.cpu_per_message)
        };
        table.row(
            "  berth / baseline",
            "",
            &[
                ratio(m.rate, base.rate),
                ratio_of(m.elapsed, base.elapsed),
                cpu_ratio,
            ],
        );
        let goal = if subject.kind == Kind::Route {
            0.8
        } else {
            0.7
        };
        let what = format!("2. pipelined echo, {}", subject.kind.model());
        let rate = summary.check(
            &what,
            "rate",
            m.rate / base.rate,
            Goal::RatioAtLeast(goal),
            "",
        );
        println!("  {}: {rate}", subject.kind.model());
    }
}
