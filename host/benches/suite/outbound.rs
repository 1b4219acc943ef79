//! Scenario 12: outbound HTTP. What berth adds to a plugin's request over
//! the same request made directly: a loopback backend (hyper, in this
//! process, on the load generator's CPU) answers `GET /ok` with 5 bytes;
//! - directly: a hyper client (the same pooled, keep-alive client berth
//!   uses) on a thread pinned to CPU 0, where berth runs, makes the GETs one
//!   after another, each timed from the call to the whole body;
//! - through berth: testkit's `time-fetch` makes the same GETs, each started
//!   by the previous one's callback and timed inside the plugin with the
//!   WASI monotonic clock, from `fetch` to its callback (the host's grant
//!   check, the task, the queue into the worker and the `on-events` call).
//!
//! The difference of the p50s is what berth adds per request.
//!
//! Then the route's neighbours: 100 other connections of the same
//! `route`-model instance make round trips (testkit's `whoami`) while one
//! connection's request waits 2 s on a slow backend, beside the same round
//! trips with nothing waiting: the instance is never held by a request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::Bench;
use crate::report::{Goal, Summary, Table, median_duration, micros, percentile};
use crate::wire::{command, next_text, timed_answer, ws};

/// The most added p50 the issue allows, in microseconds.
const TARGET_ADDED_US: f64 = 200.0;
/// How long the slow backend takes to answer.
const SLOW: Duration = Duration::from_secs(2);
/// The neighbours that make round trips meanwhile...
const NEIGHBOURS: usize = 100;
/// ...and how many each makes.
const ROUND_TRIPS: usize = 50;

/// Starts the backend on its own thread and runtime; it runs until the
/// process ends.
fn backend() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the backend");
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|req: hyper::Request<_>| async move {
                        if req.uri().path() == "/slow" {
                            tokio::time::sleep(SLOW).await;
                        }
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"hello",
                        ))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    addr
}

/// Pins the calling thread to CPU 0, where the servers run.
fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is the empty set, and the call only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// p50 and p99 of `count` direct GETs of `url`, one after another, from a
/// thread on CPU 0.
fn direct(url: String, count: usize) -> (Duration, Duration) {
    std::thread::spawn(move || {
        pin_to_cpu0();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            let client: HyperClient<_, Empty<Bytes>> =
                HyperClient::builder(TokioExecutor::new()).build(connector);
            let uri: hyper::Uri = url.parse().unwrap();
            let mut samples = Vec::with_capacity(count);
            for _ in 0..count {
                let started = Instant::now();
                let response: hyper::Response<hyper::body::Incoming> =
                    client.get(uri.clone()).await.expect("the backend answers");
                let body = response.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(&body[..], b"hello");
                samples.push(started.elapsed());
            }
            samples.sort();
            (percentile(&samples, 0.5), percentile(&samples, 0.99))
        })
    })
    .join()
    .expect("the direct client finished")
}

/// p50 and p99 of `count` GETs of `url` made by testkit on `path`.
async fn through_berth(
    addr: SocketAddr,
    path: &str,
    url: &str,
    count: usize,
) -> (Duration, Duration) {
    let mut client = ws(addr, path, None).await.expect("connect to berth");
    let asked = format!("time-fetch {count} {url}");
    assert_eq!(command(&mut client, &asked).await, "timing");
    let answer = next_text(&mut client, &asked).await;
    let (_, p50, p99) = timed_answer(&asked, &answer);
    (p50, p99)
}

/// p50 and p99 of the neighbours' round trips, with a request to the slow
/// backend waiting meanwhile when `slow` is given.
async fn neighbours(addr: SocketAddr, slow: Option<&str>, trips: usize) -> (Duration, Duration) {
    let mut waiting = None;
    if let Some(url) = slow {
        let mut client = ws(addr, "/kit", None).await.expect("connect to berth");
        assert_eq!(
            command(&mut client, &format!("fetch {url}")).await,
            "fetching"
        );
        waiting = Some((client, Instant::now()));
    }
    let mut clients = Vec::with_capacity(NEIGHBOURS);
    for _ in 0..NEIGHBOURS {
        clients.push(ws(addr, "/kit", None).await.expect("connect to berth"));
    }
    let tasks = clients.into_iter().map(|mut client| {
        tokio::spawn(async move {
            let mut samples = Vec::with_capacity(trips);
            for _ in 0..trips {
                let started = Instant::now();
                let answer = command(&mut client, "whoami").await;
                samples.push(started.elapsed());
                assert!(answer.starts_with("id "), "{answer}");
            }
            samples
        })
    });
    let mut samples: Vec<Duration> = Vec::with_capacity(NEIGHBOURS * trips);
    for task in tasks {
        samples.extend(task.await.expect("a neighbour finished"));
    }
    if let Some((mut client, asked)) = waiting {
        if asked.elapsed() >= SLOW {
            println!("  (the round trips outlasted the slow backend: some ran after its answer)");
        }
        let answer = next_text(&mut client, "fetch").await;
        assert!(answer.starts_with("response 200"), "{answer}");
    }
    samples.sort();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

/// Scenario 12: a plugin's outbound request beside a direct one.
pub async fn scenario(bench: &Bench, summary: &mut Summary) {
    let count = if bench.plan.smoke { 50 } else { 5_000 };
    let backend = backend();
    let url = format!("http://{backend}/ok");
    let dir = tempfile::Builder::new()
        .prefix("berth-bench-outbound-")
        .tempdir()
        .expect("a temporary folder");
    let config = dir.path().join("berth.toml");
    let routes = format!(
        "[[route]]\npath = \"/kit\"\nplugin = \"testkit.wasm\"\n\
         allowed-outbound = [\"http://{backend}\"]\ncall-timeout = \"30s\"\n"
    );
    std::fs::write(&config, crate::config_text(&routes)).expect("write the config");
    let server = crate::start_berth(&config);
    println!();
    println!(
        "12. outbound HTTP: {count} GETs of a 5-byte body from a loopback backend (hyper, on \
         CPU 1), one after another per round: directly, from a hyper client on CPU 0; and by \
         testkit on berth (CPU 0), timed inside the plugin from `fetch` to its callback. \
         Medians of the rounds' p50 and p99."
    );
    let table = Table::new(&["requests", "p50", "p99"]);
    let (mut direct_rounds, mut berth_rounds) = (Vec::new(), Vec::new());
    // One unmeasured pass each, so that both pools hold a connection.
    direct(url.clone(), 10);
    through_berth(server.addr(), "/kit", &url, 10).await;
    for round in 1..=bench.plan.rounds {
        let figures = direct(url.clone(), count);
        table.row("direct client", &round.to_string(), &cells(count, figures));
        direct_rounds.push(figures);
        let figures = through_berth(server.addr(), "/kit", &url, count).await;
        table.row("berth plugin", &round.to_string(), &cells(count, figures));
        berth_rounds.push(figures);
    }
    let median = |rounds: &[(Duration, Duration)]| {
        let p50s: Vec<Duration> = rounds.iter().map(|r| r.0).collect();
        let p99s: Vec<Duration> = rounds.iter().map(|r| r.1).collect();
        (median_duration(&p50s), median_duration(&p99s))
    };
    let direct_median = median(&direct_rounds);
    let berth_median = median(&berth_rounds);
    table.row("median direct", "", &cells(count, direct_median));
    table.row("median berth", "", &cells(count, berth_median));
    let added = berth_median.0.saturating_sub(direct_median.0);
    let check = summary.check(
        "12. outbound request, added over a direct client",
        "p50",
        added.as_secs_f64() * 1e6,
        Goal::AtMost(TARGET_ADDED_US),
        "µs",
    );
    println!("  added by berth, p50: {} ({check})", micros(added));

    let trips = if bench.plan.smoke { 5 } else { ROUND_TRIPS };
    println!(
        "  The route's neighbours: {NEIGHBOURS} connections of the same route-model instance, \
         {trips} round trips (testkit `whoami`) each, all at once, with nothing waiting and \
         while one connection's request waits {SLOW:?} on a slow backend."
    );
    let table = Table::new(&["round trips", "p50", "p99"]);
    let slow = format!("http://{backend}/slow");
    let (mut quiet_rounds, mut held_rounds) = (Vec::new(), Vec::new());
    let trips_cell = (NEIGHBOURS * trips).to_string();
    for round in 1..=bench.plan.rounds {
        let quiet = neighbours(server.addr(), None, trips).await;
        table.row(
            "nothing waiting",
            &round.to_string(),
            &[trips_cell.clone(), micros(quiet.0), micros(quiet.1)],
        );
        quiet_rounds.push(quiet);
        let held = neighbours(server.addr(), Some(&slow), trips).await;
        table.row(
            "a request waiting",
            &round.to_string(),
            &[trips_cell.clone(), micros(held.0), micros(held.1)],
        );
        held_rounds.push(held);
    }
    let (quiet, held) = (median(&quiet_rounds), median(&held_rounds));
    table.row(
        "median nothing waiting",
        "",
        &[trips_cell.clone(), micros(quiet.0), micros(quiet.1)],
    );
    table.row(
        "median a request waiting",
        "",
        &[trips_cell, micros(held.0), micros(held.1)],
    );
    server.stop();
}

fn cells(count: usize, (p50, p99): (Duration, Duration)) -> Vec<String> {
    vec![count.to_string(), micros(p50), micros(p99)]
}
