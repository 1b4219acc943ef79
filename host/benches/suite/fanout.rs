//! Scenario 3: one publisher, many subscribers. A burst of publishes gives the
//! delivery rate; paced publishes give the delivery latency.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::report::{
    CPU_MEANINGFUL, Goal, Summary, Table, median, median_duration, median_share, micros, percent,
    percentile, ratio, ratio_of, share, whole,
};
use crate::servers::own_cpu;
use crate::wire::{Raw, ws};
use crate::{Bench, LIMIT, Plan};

/// One server's fan-out set-up: where subscribers and the publisher connect,
/// and what they send.
pub struct Target<'a> {
    /// Its name in tables.
    pub name: &'static str,
    /// The server processes' CPU time so far, all of them together.
    pub cpu: &'a dyn Fn() -> Duration,
    /// Where subscribers connect, in turn (several nodes, or one server).
    pub subscribe_addrs: Vec<SocketAddr>,
    /// The path subscribers connect to.
    pub subscribe_path: &'static str,
    /// Sent by each subscriber to join the topic, with the answer it waits for.
    pub subscribe: Option<(String, &'static str)>,
    /// Run after every subscriber has joined, before the first publish: what
    /// the target needs to be ready (other nodes subscribing in Redis).
    pub settle: Option<&'a dyn Fn()>,
    /// Where the publisher connects.
    pub publish_addr: SocketAddr,
    /// The path the publisher connects to.
    pub publish_path: &'static str,
    /// Turns a payload into the publisher's message.
    pub publish_prefix: String,
}

/// One round's figures.
#[derive(Clone, Copy)]
pub struct Figures {
    /// Deliveries per second during the burst.
    pub rate: f64,
    /// Delivery latency of the paced publishes: median...
    pub p50: Duration,
    /// ...99th percentile...
    pub p99: Duration,
    /// ...and worst.
    pub max: Duration,
    /// Server CPU per delivery during the burst, when it was long enough to tell.
    pub cpu_per_delivery: Option<Duration>,
    /// The load generator's share of its core during the burst.
    pub generator: Option<f64>,
}

impl Figures {
    /// The medians of several rounds' figures.
    pub fn median_of(rounds: &[Figures]) -> Figures {
        Figures {
            rate: median(&rounds.iter().map(|f| f.rate).collect::<Vec<_>>()),
            p50: median_duration(&rounds.iter().map(|f| f.p50).collect::<Vec<_>>()),
            p99: median_duration(&rounds.iter().map(|f| f.p99).collect::<Vec<_>>()),
            max: median_duration(&rounds.iter().map(|f| f.max).collect::<Vec<_>>()),
            cpu_per_delivery: rounds
                .iter()
                .map(|f| f.cpu_per_delivery)
                .collect::<Option<Vec<_>>>()
                .map(|v| median_duration(&v)),
            generator: median_share(rounds.iter().map(|f| f.generator)),
        }
    }

    /// The table cells: rate, latencies, CPU per delivery, load generator share.
    pub fn cells(&self) -> Vec<String> {
        vec![
            whole(self.rate),
            micros(self.p50),
            micros(self.p99),
            micros(self.max),
            self.cpu_per_delivery.map_or("-".into(), micros),
            self.generator.map_or("-".into(), percent),
        ]
    }
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The start of the next message a subscriber must get, `PHASE:SEQ:`, kept
/// as bytes and counted up in place: a subscriber checks every message's
/// order at the cost of one short comparison, where parsing each one was a
/// fifth of the load generator's time.
struct Expected {
    prefix: Vec<u8>,
}

impl Expected {
    /// Expects `phase:0:` next.
    fn new(phase: u8) -> Expected {
        Expected {
            prefix: vec![phase, b':', b'0', b':'],
        }
    }

    /// Checks that `payload` is the message expected next and returns what
    /// follows its sequence number (the send time); expects the next one.
    fn check<'a>(&mut self, payload: &'a [u8]) -> &'a [u8] {
        assert!(
            payload.starts_with(&self.prefix),
            "expected a message starting {:?}, got {:?}: out of order or lost",
            String::from_utf8_lossy(&self.prefix),
            String::from_utf8_lossy(payload)
        );
        let rest = &payload[self.prefix.len()..];
        // Add one to the decimal digits between the two colons.
        let digits = 2..self.prefix.len() - 1;
        for at in digits.clone().rev() {
            if self.prefix[at] == b'9' {
                self.prefix[at] = b'0';
            } else {
                self.prefix[at] += 1;
                return rest;
            }
        }
        self.prefix.insert(digits.start, b'1');
        rest
    }
}

/// One round: subscribers join, a burst gives the rate, paced publishes the latency.
pub async fn fanout(target: &Target<'_>, plan: &Plan) -> Figures {
    let (subscribers_wanted, burst, paced) = (plan.subscribers, plan.burst, plan.paced);
    let mut subscribers = Vec::with_capacity(subscribers_wanted);
    for seed in 0..subscribers_wanted {
        // The lean client: with tungstenite's, reading a thousand sockets
        // saturated the load generator's core before either server's.
        let addr = target.subscribe_addrs[seed % target.subscribe_addrs.len()];
        let mut client = Raw::connect(addr, target.subscribe_path, seed as u32).await;
        if let Some((command, answer)) = &target.subscribe {
            client.queue_text(command.as_bytes());
            client.flush().await;
            let reply = client.next_data().await;
            assert_eq!(client.payload(reply), answer.as_bytes());
        }
        subscribers.push(client);
    }
    if let Some(settle) = target.settle {
        settle();
    }
    // Each subscriber reads both phases, checks that every message arrives
    // once and in order, and notes when the burst's last one arrived and each
    // paced one's latency. Per burst message it does no more than the check:
    // with a clock read and a shared counter per message, the generator's
    // core saturated before either server's, and the rate measured the
    // generator.
    // Subscribers that have read the whole burst.
    let burst_done = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|mut client| {
            let burst_done = burst_done.clone();
            tokio::spawn(async move {
                let mut burst_last = Instant::now();
                let mut latencies = Vec::with_capacity(paced);
                let mut expected = Expected::new(b'b');
                for i in 0..burst + paced {
                    if i == burst {
                        expected = Expected::new(b'p');
                    }
                    let payload = client.next_data().await;
                    let sent = expected.check(client.payload(payload));
                    if i + 1 == burst {
                        burst_last = Instant::now();
                        burst_done.fetch_add(1, Ordering::Relaxed);
                    } else if i >= burst {
                        let sent: u128 = std::str::from_utf8(sent)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .expect("a send time");
                        let nanos = now_nanos().saturating_sub(sent);
                        latencies.push(Duration::from_nanos(nanos as u64));
                    }
                }
                client.close().await;
                (burst_last, latencies)
            })
        })
        .collect();

    let publisher = ws(target.publish_addr, target.publish_path, None)
        .await
        .unwrap_or_else(|e| panic!("{}: the publisher cannot connect: {e}", target.name));
    let (mut sink, mut answers) = publisher.split();
    // berth answers each publish; drain the answers so they never back up.
    let mut drain = tokio::spawn(async move { while let Some(Ok(_)) = answers.next().await {} });
    let cpu_before = (target.cpu)();
    let own_before = own_cpu();
    let start = Instant::now();
    for seq in 0..burst {
        let text = format!("{}b:{seq}:{}", target.publish_prefix, now_nanos());
        sink.feed(Message::text(text)).await.unwrap();
    }
    sink.flush().await.unwrap();
    // Let the whole burst land before the paced phase, so that its latency is
    // delivery, not the burst's queue.
    let waited = Instant::now();
    while burst_done.load(Ordering::Relaxed) < subscribers_wanted {
        assert!(waited.elapsed() < LIMIT, "the burst did not arrive in time");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let burst_time = start.elapsed();
    let cpu = (target.cpu)().saturating_sub(cpu_before);
    let generator = share(own_cpu() - own_before, burst_time);
    let cpu_per_delivery =
        (burst_time >= CPU_MEANINGFUL).then(|| cpu / (subscribers_wanted * burst) as u32);
    for seq in 0..paced {
        let text = format!("{}p:{seq}:{}", target.publish_prefix, now_nanos());
        sink.send(Message::text(text)).await.unwrap();
        tokio::time::sleep(plan.pace).await;
    }
    let mut last = start;
    let mut latencies = Vec::with_capacity(subscribers_wanted * paced);
    for reader in readers {
        let (burst_last, mine) = reader.await.expect("a subscriber got every message");
        last = last.max(burst_last);
        latencies.extend(mine);
    }
    let _ = sink.close().await;
    // The drain ends with the server's close answer.
    if tokio::time::timeout(LIMIT, &mut drain).await.is_err() {
        drain.abort();
    }
    latencies.sort_unstable();
    Figures {
        rate: (subscribers_wanted * burst) as f64 / (last - start).as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        max: *latencies.last().unwrap(),
        cpu_per_delivery,
        generator,
    }
}

/// A table with a column per [`Figures::cells`] entry.
pub fn figures_table() -> Table {
    Table::new(&[
        "deliveries/s",
        "p50",
        "p99",
        "max",
        "server cpu/delivery",
        "load gen cpu",
    ])
}

/// Prints the medians of two targets' rounds, and the second's figures over
/// the first's on a row named `label`; returns the two medians.
pub fn medians(
    table: &Table,
    names: [&str; 2],
    rounds: [Vec<Figures>; 2],
    label: &str,
) -> [Figures; 2] {
    let [first, second] = rounds.map(|r| Figures::median_of(&r));
    table.row(&format!("median {}", names[0]), "", &first.cells());
    table.row(&format!("median {}", names[1]), "", &second.cells());
    table.row(
        label,
        "",
        &[
            ratio(second.rate, first.rate),
            ratio_of(second.p50, first.p50),
            ratio_of(second.p99, first.p99),
            ratio_of(second.max, first.max),
            match (second.cpu_per_delivery, first.cpu_per_delivery) {
                (Some(b), Some(a)) => ratio_of(b, a),
                _ => "-".into(),
            },
        ],
    );
    [first, second]
}

/// Scenario 3: fan-out through berth's testkit plugin and the baseline's broadcast channel.
pub async fn scenario(bench: &Bench, summary: &mut Summary) {
    let plan = &bench.plan;
    println!();
    println!(
        "3. fan-out: 1 publisher -> {} subscribers; {} burst publishes give the delivery rate, \
         {} paced ones ({} ms apart) the delivery latency",
        plan.subscribers,
        plan.burst,
        plan.paced,
        plan.pace.as_millis()
    );
    let baseline_cpu = || bench.baseline.cpu();
    let berth_cpu = || bench.berth.cpu();
    let targets = [
        Target {
            name: "baseline (tokio broadcast)",
            cpu: &baseline_cpu,
            subscribe_addrs: vec![bench.baseline.addr()],
            subscribe_path: "/sub",
            subscribe: None,
            settle: None,
            publish_addr: bench.baseline.addr(),
            publish_path: "/pub",
            publish_prefix: String::new(),
        },
        Target {
            name: "berth route model (testkit)",
            cpu: &berth_cpu,
            subscribe_addrs: vec![bench.berth.addr()],
            subscribe_path: "/kit",
            subscribe: Some(("subscribe bench".into(), "subscribed")),
            settle: None,
            publish_addr: bench.berth.addr(),
            publish_path: "/kit",
            publish_prefix: "publish bench ".into(),
        },
    ];
    let table = figures_table();
    // Alternate the two servers, so that a noisy moment hurts both alike.
    let mut rounds = [Vec::new(), Vec::new()];
    for round in 1..=plan.rounds {
        for (target, results) in targets.iter().zip(&mut rounds) {
            let figures = fanout(target, plan).await;
            table.row(target.name, &round.to_string(), &figures.cells());
            results.push(figures);
        }
    }
    let [base, berth] = medians(
        &table,
        [targets[0].name, targets[1].name],
        rounds,
        "  berth / baseline",
    );
    let rate = summary.check(
        "3. fan-out, route model",
        "delivery rate",
        berth.rate / base.rate,
        Goal::RatioAtLeast(1.0),
        "",
    );
    println!("  route model: {rate}");
}
