//! Scenario 5: new connections per second (connect, upgrade, close handshake),
//! and the time berth takes to make a connection-model instance.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use crate::report::{
    Goal, Summary, Table, median, median_duration, median_share, micros, percent, percentile,
    ratio, ratio_of, share, whole,
};
use crate::servers::own_cpu;
use crate::wire::Raw;
use crate::{Bench, Kind, LIMIT, Subject};

#[derive(Clone, Copy)]
struct Figures {
    rate: f64,
    p50: Duration,
    p99: Duration,
    /// The load generator's CPU time over the elapsed time, for runs long
    /// enough for /proc's ticks.
    generator: Option<f64>,
}

impl Figures {
    fn cells(&self) -> Vec<String> {
        vec![
            whole(self.rate),
            micros(self.p50),
            micros(self.p99),
            self.generator.map_or("-".to_string(), percent),
        ]
    }
}

/// `total` connections, `concurrency` at a time: each is opened (the
/// handshake is timed), closed, and its close answered before the next.
async fn connects(subject: &Subject<'_>, total: usize, concurrency: usize) -> Figures {
    let addr = subject.server.addr();
    let next = Cell::new(0usize);
    let times = RefCell::new(Vec::with_capacity(total));
    let own_before = own_cpu();
    let start = Instant::now();
    let (next, times) = (&next, &times);
    let workers = (0..concurrency).map(|_| async move {
        while next.get() < total {
            next.set(next.get() + 1);
            assert!(start.elapsed() < LIMIT, "connections take too long");
            let began = Instant::now();
            let client = Raw::connect(addr, subject.path, 0).await;
            times.borrow_mut().push(began.elapsed());
            // Wait for the server's close, so that it frees the connection as we go.
            client.close().await;
        }
    });
    futures_util::future::join_all(workers).await;
    let elapsed = start.elapsed();
    let generator = share(own_cpu() - own_before, elapsed);
    let mut times = times.take();
    times.sort_unstable();
    Figures {
        rate: total as f64 / elapsed.as_secs_f64(),
        p50: percentile(&times, 0.50),
        p99: percentile(&times, 0.99),
        generator,
    }
}

/// Scenario 5: connect rate on the baseline and both berth models.
pub async fn scenario(bench: &Bench, summary: &mut Summary) {
    let plan = &bench.plan;
    println!();
    println!(
        "5. connect rate: {} connections, {} connectors at once; each connects, upgrades \
         (timed as the handshake), sends a close and waits for the server's",
        plan.connects, plan.connectors
    );
    let table = Table::new(&["conns/s", "handshake p50", "handshake p99", "load gen cpu"]);
    let subjects = bench.echo_subjects();
    let mut rounds = vec![Vec::new(); subjects.len()];
    let mut made = Vec::new();
    for round in 1..=plan.rounds {
        for (subject, results) in subjects.iter().zip(&mut rounds) {
            // Only this run's instances: earlier scenarios made some too.
            subject.server.take_made(0);
            let figures = connects(subject, plan.connects, plan.connectors).await;
            if subject.kind == Kind::Connection {
                made.extend(subject.server.take_made(plan.connects));
            }
            table.row(subject.label, &round.to_string(), &figures.cells());
            results.push(figures);
        }
    }
    let medians: Vec<Figures> = rounds
        .iter()
        .map(|r| Figures {
            rate: median(&r.iter().map(|f| f.rate).collect::<Vec<_>>()),
            p50: median_duration(&r.iter().map(|f| f.p50).collect::<Vec<_>>()),
            p99: median_duration(&r.iter().map(|f| f.p99).collect::<Vec<_>>()),
            generator: median_share(r.iter().map(|f| f.generator)),
        })
        .collect();
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
                ratio_of(m.p99, base.p99),
            ],
        );
    }
    let connection_rate = subjects
        .iter()
        .zip(&medians)
        .find(|(s, _)| s.kind == Kind::Connection)
        .map_or(f64::NAN, |(_, m)| m.rate);
    let check = summary.check(
        "5. connect rate, connection model",
        "connections/s",
        connection_rate,
        Goal::AtLeast(5000.0),
        "/s",
    );
    println!("  connection model: {check}");
    made.sort_unstable();
    if made.is_empty() {
        println!("  no `instance made` timings found in berth's log");
    } else {
        println!(
            "  connection-model instance made (pooling allocator), from berth's trace log: \
             p50 {} µs, p99 {} µs, n = {}",
            percentile(&made, 0.50),
            percentile(&made, 0.99),
            made.len()
        );
    }
}
