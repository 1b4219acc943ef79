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

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_tungstenite::tungstenite::Message;

use crate::report::{Goal, Summary, Table, median_duration, micros, percentile};
use crate::wire::ws;
use crate::{Bench, LIMIT};

/// The most added p50 the issue allows, in microseconds.
const TARGET_ADDED_US: f64 = 200.0;

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
                    let service = hyper::service::service_fn(|_req| async {
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
    let exchange = async {
        client
            .send(Message::text(format!("time-fetch {count} {url}")))
            .await
            .unwrap();
        loop {
            match client.next().await {
                Some(Ok(Message::Text(text))) if text.as_str() == "timing" => {}
                Some(Ok(Message::Text(text))) => return text.as_str().to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("time-fetch: unexpected answer {other:?}"),
            }
        }
    };
    let answer = tokio::time::timeout(LIMIT, exchange)
        .await
        .expect("time-fetch answers in time");
    let fields: Vec<u64> = answer
        .strip_prefix("timed ")
        .map(|rest| rest.split(' ').filter_map(|f| f.parse().ok()).collect())
        .unwrap_or_default();
    let [_, p50, p99] = fields[..] else {
        panic!("time-fetch answered {answer:?}");
    };
    (Duration::from_nanos(p50), Duration::from_nanos(p99))
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
    server.stop();
}

fn cells(count: usize, (p50, p99): (Duration, Duration)) -> Vec<String> {
    vec![count.to_string(), micros(p50), micros(p99)]
}
