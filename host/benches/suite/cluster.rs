//! Scenario 8: fan-out across nodes. Three berth nodes share topics through
//! a `redis-server`; the subscribers are spread over the three and the
//! publisher is on the first, so two thirds of the deliveries cross Redis.
//! The single berth of the other scenarios runs the same fan-out in the same
//! run, in alternating rounds, for comparison.
//!
//! Every server process, Redis included, is pinned to CPU 0 like the single
//! node: the figures show what sharing topics costs on one core, not how far
//! several machines scale. Skipped, saying so, when `redis-server` is not
//! installed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fanout::{Target, fanout, figures_table, medians};
use crate::servers::{Server, cpu_time, has_taskset};
use crate::{Bench, LIMIT};

/// The nodes sharing the topics.
const NODES: usize = 3;

/// A `redis-server` on a free loopback port, killed when dropped.
pub(crate) struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    /// Starts Redis (pinned to CPU 0 where taskset exists) with nothing
    /// written to disk, and waits until it answers; `None` if it is not installed.
    pub(crate) fn start(dir: &Path) -> Option<Redis> {
        // Asked first: behind taskset, a missing program would only show as
        // taskset failing.
        Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut command = if has_taskset() {
            let mut c = Command::new("taskset");
            c.args(["-c", "0", "redis-server"]);
            c
        } else {
            Command::new("redis-server")
        };
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let redis = Redis {
            child: command.spawn().expect("redis-server starts"),
            port,
        };
        let began = Instant::now();
        while redis
            .command(&["PING"])
            .is_none_or(|r| !r.starts_with("+PONG"))
        {
            assert!(began.elapsed() < LIMIT, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }

    /// Its URL.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One command in Redis's wire format; the raw reply.
    fn command(&self, args: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(LIMIT)).ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut reply = [0u8; 1024];
        let n = stream.read(&mut reply).ok()?;
        Some(String::from_utf8_lossy(&reply[..n]).into_owned())
    }

    /// Waits until every node has subscribed to `channel` in Redis.
    fn await_subscribers(&self, channel: &str, count: usize) {
        let began = Instant::now();
        loop {
            let now = self
                .command(&["PUBSUB", "NUMSUB", channel])
                .and_then(|r| r.rsplit(':').next()?.trim().parse::<usize>().ok());
            if now == Some(count) {
                return;
            }
            assert!(
                began.elapsed() < LIMIT,
                "{channel}: {now:?} nodes subscribed in Redis, not {count}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn cpu(&self) -> Duration {
        cpu_time(&self.child.id().to_string())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Scenario 8: the single node beside three nodes and Redis.
pub async fn scenario(bench: &Bench) {
    let plan = &bench.plan;
    println!();
    println!(
        "8. cross-node fan-out: 1 publisher on node 1 -> {} subscribers spread over {NODES} berth \
         nodes sharing topics through Redis, beside the single berth; {} burst publishes, {} paced",
        plan.subscribers, plan.burst, plan.paced
    );
    let dir = tempfile::Builder::new()
        .prefix("berth-bench-cluster-")
        .tempdir()
        .expect("a temporary folder");
    let Some(redis) = Redis::start(dir.path()) else {
        println!("  skipped: redis-server is not installed (apt-get install redis-server)");
        return;
    };
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:0"
plugin-dir = {plugins:?}
max-instances = 2000
max-connections = 20000

[broker]
url = "redis://127.0.0.1:{port}"

[[route]]
path = "/kit"
plugin = "testkit.wasm"
write-queue = {queue}
"#,
            plugins = berth::demo::BUILT_PLUGIN_DIR,
            port = redis.port,
            queue = crate::QUEUE_DEPTH,
        ),
    )
    .expect("write the node config");
    let nodes: Vec<Server> = (0..NODES)
        .map(|_| {
            // An embedded store takes one process: each node gets a folder.
            let state_dir = crate::fresh_state_dir(&config);
            Server::start(
                "berth node",
                env!("CARGO_BIN_EXE_berth"),
                &[
                    "serve",
                    "--config",
                    config.to_str().unwrap(),
                    "--state-dir",
                    &state_dir,
                ],
                &[("RUST_LOG", "warn")],
            )
        })
        .collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(Server::addr).collect();
    let single_cpu = || bench.berth.cpu();
    let cluster_cpu = || nodes.iter().map(Server::cpu).sum::<Duration>() + redis.cpu();

    let table = figures_table();
    let single_name = "berth, one node";
    let cluster_name = "berth, 3 nodes + Redis";
    let mut rounds = [Vec::new(), Vec::new()];
    for round in 1..=plan.rounds {
        let single = Target {
            name: single_name,
            cpu: &single_cpu,
            subscribe_addrs: vec![bench.berth.addr()],
            subscribe_path: "/kit",
            subscribe: Some((format!("subscribe one{round}"), "subscribed")),
            settle: None,
            publish_addr: bench.berth.addr(),
            publish_path: "/kit",
            publish_prefix: format!("publish one{round} "),
        };
        // A fresh topic per round, so that the last round's unsubscribes
        // can never race this round's subscribes in Redis.
        let topic = format!("cross{round}");
        let channel = format!("berth:/kit:{topic}");
        let settle = || redis.await_subscribers(&channel, NODES.min(plan.subscribers));
        let cluster = Target {
            name: cluster_name,
            cpu: &cluster_cpu,
            subscribe_addrs: addrs.clone(),
            subscribe_path: "/kit",
            subscribe: Some((format!("subscribe {topic}"), "subscribed")),
            settle: Some(&settle),
            publish_addr: addrs[0],
            publish_path: "/kit",
            publish_prefix: format!("publish {topic} "),
        };
        for (target, results) in [single, cluster].iter().zip(&mut rounds) {
            let figures = fanout(target, plan).await;
            table.row(target.name, &round.to_string(), &figures.cells());
            results.push(figures);
        }
    }
    medians(
        &table,
        [single_name, cluster_name],
        rounds,
        "  3 nodes / one node",
    );
    for node in nodes {
        if let Some(notes) = node.stop() {
            println!("  a node's stderr:\n{notes}");
        }
    }
}
