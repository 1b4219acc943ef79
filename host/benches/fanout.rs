//! Fan-out and connection benchmark: berth beside a plain tokio broadcast
//! server, both pinned to CPU 0 while this load generator runs on CPU 1.
//!
//! `cargo bench --bench fanout` prints, for each server:
//! - fan-out to 1,000 subscribers: delivery rate for a burst of publishes, and
//!   delivery latency (p50/p99/max) for paced publishes;
//! - new connections per second and handshake latency, for berth's `route` and
//!   `connection` models;
//! - the time berth takes to make a connection's instance (p50/p99), read from
//!   its own trace log.
//!
//! Traffic stays on 127.0.0.1; every loop is bounded in count and time.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use std::io::{BufRead, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const SUBSCRIBERS: usize = 1000;
const BURST: usize = 200;
const PACED: usize = 100;
const PACE: Duration = Duration::from_millis(25);
const CONNECTS: usize = 500;
/// Fan-out rounds per server; the medians are compared.
const ROUNDS: usize = 3;
/// No single step of the benchmark may take longer than this.
const LIMIT: Duration = Duration::from_secs(60);

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--baseline-server") {
        // The same runtime berth's binary uses: tokio's default multi-thread
        // scheduler, sized by the CPUs the process may use (one, when pinned).
        let runtime = tokio::runtime::Runtime::new().unwrap();
        return runtime.block_on(baseline_server());
    }
    // Re-run this load generator on CPU 1 so that it never shares a core with
    // the servers on CPU 0.
    if std::env::var_os("BERTH_BENCH_PINNED").is_none() && has_taskset() {
        let status = Command::new("taskset")
            .args(["-c", "1"])
            .arg(std::env::current_exe().unwrap())
            .env("BERTH_BENCH_PINNED", "1")
            .status()
            .expect("re-run pinned");
        std::process::exit(status.code().unwrap_or(1));
    }
    runtime().block_on(run());
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn has_taskset() -> bool {
    Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts `program args` on CPU 0 (when taskset exists), returning the child
/// and the address from the first `listening on ADDR` line of its stdout.
async fn start_server(program: &str, args: &[&str], env: &[(&str, &str)]) -> (Child, SocketAddr) {
    let mut command = if has_taskset() {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", program]);
        c
    } else {
        Command::new(program)
    };
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("server starts");
    // Both servers print their address first, as soon as they listen.
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("server prints its address");
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (child, addr)
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

async fn connect(url: &str) -> Client {
    // Nagle off, as on the servers: small messages must not wait for ACKs.
    tokio::time::timeout(
        LIMIT,
        tokio_tungstenite::connect_async_with_config(url, None, true),
    )
    .await
    .expect("connect in time")
    .expect("connect")
    .0
}

/// One server's fan-out set-up: where subscribers and the publisher connect,
/// and what they send.
struct Target {
    name: &'static str,
    subscribe_url: String,
    /// Sent by each subscriber to join the topic, with the answer it waits for.
    subscribe: Option<(&'static str, &'static str)>,
    publish_url: String,
    /// Turns a payload into the publisher's message.
    publish_prefix: &'static str,
}

struct FanoutFigures {
    rate: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

async fn fanout(target: &Target) -> FanoutFigures {
    let mut subscribers = Vec::with_capacity(SUBSCRIBERS);
    for _ in 0..SUBSCRIBERS {
        let mut client = connect(&target.subscribe_url).await;
        if let Some((command, answer)) = target.subscribe {
            client.send(Message::text(command)).await.unwrap();
            let reply = client.next().await.unwrap().unwrap();
            assert_eq!(reply.to_text().unwrap(), answer);
        }
        subscribers.push(client);
    }
    // Each subscriber reads both phases and notes, per message, its latency
    // and when it arrived.
    let burst_seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|mut client| {
            let burst_seen = burst_seen.clone();
            tokio::spawn(async move {
                let mut burst_last = Instant::now();
                let mut latencies = Vec::with_capacity(PACED);
                for i in 0..BURST + PACED {
                    let msg = tokio::time::timeout(LIMIT, client.next())
                        .await
                        .expect("delivery in time")
                        .unwrap()
                        .unwrap();
                    let text = msg.to_text().unwrap();
                    let sent: u128 = text.rsplit(':').next().unwrap().parse().unwrap();
                    if i < BURST {
                        burst_last = Instant::now();
                        burst_seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    } else {
                        let nanos = now_nanos().saturating_sub(sent);
                        latencies.push(Duration::from_nanos(nanos as u64));
                    }
                }
                (burst_last, latencies)
            })
        })
        .collect();

    let publisher = connect(&target.publish_url).await;
    let (mut sink, mut answers) = publisher.split();
    // berth answers each publish; drain the answers so they never back up.
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = answers.next().await {} });
    let start = Instant::now();
    for seq in 0..BURST {
        let text = format!("{}b:{seq}:{}", target.publish_prefix, now_nanos());
        sink.feed(Message::text(text)).await.unwrap();
    }
    sink.flush().await.unwrap();
    // Let the whole burst land before the paced phase, so that its latency is
    // delivery, not the burst's queue.
    let waited = Instant::now();
    while burst_seen.load(std::sync::atomic::Ordering::Relaxed) < SUBSCRIBERS * BURST {
        assert!(waited.elapsed() < LIMIT, "the burst did not arrive in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for seq in 0..PACED {
        let text = format!("{}p:{seq}:{}", target.publish_prefix, now_nanos());
        sink.send(Message::text(text)).await.unwrap();
        tokio::time::sleep(PACE).await;
    }
    let mut last = start;
    let mut latencies = Vec::with_capacity(SUBSCRIBERS * PACED);
    for reader in readers {
        let (burst_last, mine) = reader.await.unwrap();
        last = last.max(burst_last);
        latencies.extend(mine);
    }
    drain.abort();
    latencies.sort();
    FanoutFigures {
        rate: (SUBSCRIBERS * BURST) as f64 / (last - start).as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        max: *latencies.last().unwrap(),
    }
}

struct ConnectFigures {
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// Opens and closes `CONNECTS` connections one after another.
async fn connects(url: &str) -> ConnectFigures {
    let mut times = Vec::with_capacity(CONNECTS);
    let start = Instant::now();
    for _ in 0..CONNECTS {
        let began = Instant::now();
        let mut client = connect(url).await;
        times.push(began.elapsed());
        let _ = client.close(None).await;
        // Wait for the server's close so instances are freed as we go.
        let _ = tokio::time::timeout(LIMIT, async {
            while let Some(Ok(_)) = client.next().await {}
        })
        .await;
    }
    let elapsed = start.elapsed();
    times.sort();
    ConnectFigures {
        per_second: CONNECTS as f64 / elapsed.as_secs_f64(),
        p50: percentile(&times, 0.5),
        p99: percentile(&times, 0.99),
    }
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

async fn run() {
    let plugin_dir = berth::demo::BUILT_PLUGIN_DIR;
    let dir = std::env::temp_dir().join(format!("berth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("berth.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:0"
plugin-dir = {plugin_dir:?}
max-instances = 2000
max-connections = 5000

[[route]]
path = "/kit"
plugin = "testkit.wasm"
write-queue = 4096

[[route]]
path = "/echo"
plugin = "echo.wasm"

[[route]]
path = "/echo-conn"
plugin = "echo.wasm"
instance = "connection"
"#
        ),
    )
    .unwrap();

    let berth_bin = env!("CARGO_BIN_EXE_berth");
    let (mut berth, berth_addr) = start_server(
        berth_bin,
        &["serve", "--config", config.to_str().unwrap()],
        &[("RUST_LOG", "warn,berth::instance=trace")],
    )
    .await;
    let me = std::env::current_exe().unwrap();
    let (mut baseline, baseline_addr) =
        start_server(me.to_str().unwrap(), &["--baseline-server"], &[]).await;

    println!("berth fan-out and connection benchmark");
    println!(
        "servers pinned to CPU 0, load generator to CPU 1 ({}); {SUBSCRIBERS} subscribers, \
         {BURST} burst + {PACED} paced publishes ({} ms apart)",
        if has_taskset() {
            "taskset"
        } else {
            "no taskset: unpinned"
        },
        PACE.as_millis()
    );

    let berth_target = Target {
        name: "berth (route model, testkit)",
        subscribe_url: format!("ws://{berth_addr}/kit"),
        subscribe: Some(("subscribe bench", "subscribed")),
        publish_url: format!("ws://{berth_addr}/kit"),
        publish_prefix: "publish bench ",
    };
    let baseline_target = Target {
        name: "tokio broadcast baseline",
        subscribe_url: format!("ws://{baseline_addr}/sub"),
        subscribe: None,
        publish_url: format!("ws://{baseline_addr}/pub"),
        publish_prefix: "",
    };
    println!();
    println!("fan-out to {SUBSCRIBERS} subscribers   deliveries/s   latency p50    p99     max");
    // Alternate the two servers, so that a noisy moment hurts both alike, and
    // compare medians.
    let mut rates = [Vec::new(), Vec::new()];
    for round in 1..=ROUNDS {
        for (index, target) in [&baseline_target, &berth_target].into_iter().enumerate() {
            let f = fanout(target).await;
            rates[index].push(f.rate);
            println!(
                "{:<36} {:>12.0}   {:>8} {:>8} {:>8}   (round {round})",
                target.name,
                f.rate,
                micros(f.p50),
                micros(f.p99),
                micros(f.max)
            );
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (baseline_rate, berth_rate) = (median(&mut rates[0]), median(&mut rates[1]));
    println!(
        "median delivery rate: baseline {baseline_rate:.0}/s, berth {berth_rate:.0}/s, \
         berth / baseline {:.2}",
        berth_rate / baseline_rate
    );

    println!();
    println!("connect + close, {CONNECTS} in a row        conns/s   handshake p50    p99");
    for (name, url) in [
        (
            "tokio broadcast baseline",
            format!("ws://{baseline_addr}/sub"),
        ),
        (
            "berth, route model (echo)",
            format!("ws://{berth_addr}/echo"),
        ),
        (
            "berth, connection model (echo)",
            format!("ws://{berth_addr}/echo-conn"),
        ),
    ] {
        let c = connects(&url).await;
        println!(
            "{name:<36} {:>8.0}   {:>8} {:>8}",
            c.per_second,
            micros(c.p50),
            micros(c.p99)
        );
    }

    let _ = berth.kill();
    let _ = baseline.kill();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut berth.stderr.take().unwrap(), &mut log).unwrap();
    let _ = berth.wait();
    let _ = baseline.wait();
    let mut made: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("instance made"))
        .filter_map(|l| l.split("micros=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .collect();
    made.sort_unstable();
    if made.is_empty() {
        println!("\nno instance timings found in berth's log");
    } else {
        let at = |p: f64| made[((made.len() - 1) as f64 * p).round() as usize];
        println!(
            "\nconnection-model instance made (pooling allocator): p50 {} µs, p99 {} µs, n = {}",
            at(0.5),
            at(0.99),
            made.len()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The baseline: a plain tokio-tungstenite server where each text message sent
/// on `/pub` goes to every connection on `/sub` through a tokio broadcast channel.
async fn baseline_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("baseline listening on {}", listener.local_addr().unwrap());
    std::io::Write::flush(&mut std::io::stdout()).unwrap();
    let (tx, _) = broadcast::channel::<Message>(BURST * 2);
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = stream.set_nodelay(true);
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut path = String::new();
            // The callback's signature, large error included, is tungstenite's.
            #[allow(clippy::result_large_err)]
            let callback = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                            resp| {
                path = req.uri().path().to_string();
                Ok(resp)
            };
            let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                return;
            };
            let (mut sink, mut stream) = ws.split();
            if path == "/pub" {
                while let Some(Ok(msg)) = stream.next().await {
                    if msg.is_text() {
                        let _ = tx.send(msg);
                    }
                }
                return;
            }
            let mut rx = tx.subscribe();
            loop {
                tokio::select! {
                    msg = rx.recv() => match msg {
                        Ok(msg) => {
                            // Write everything already broadcast, then flush once.
                            let mut batch = vec![msg];
                            while let Ok(more) = rx.try_recv() {
                                batch.push(more);
                            }
                            for msg in batch {
                                if sink.feed(msg).await.is_err() {
                                    return;
                                }
                            }
                            if sink.flush().await.is_err() {
                                return;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    frame = stream.next() => match frame {
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                            let _ = sink.close().await;
                            return;
                        }
                        _ => {}
                    },
                }
            }
        });
    }
}
