//! berth's benchmark suite: each figure is measured on berth and on a plain
//! tokio-tungstenite baseline in the same run, in alternating rounds, and the
//! medians are compared. The servers are pinned to CPU 0 and this load
//! generator to CPU 1.
//!
//! `cargo bench --bench suite` runs, 3 rounds each:
//! 0. crossing: the cost of one call into a plugin, per message, for each
//!    shape a batched contract could take, in this process;
//! 1. echo one message at a time per connection: rate and latency;
//! 2. pipelined echo: rate and server CPU time per message;
//! 3. fan-out from 1 publisher to 1,000 subscribers: delivery rate and latency;
//! 4. idle connections: server memory per connection;
//! 5. connect rate, and the time berth takes to make a connection's instance;
//! 6. hot reload: from a plugin file renamed into berth's plugin folder to the
//!    new version's first reply, compiled or from the compile cache, beside a
//!    restart (10 versions per case);
//! 7. languages: the echo plugin in Rust, JavaScript and Python on one berth:
//!    memory and open time per connection-model instance, and the round trip
//!    of a lone client and the server CPU time it costs in the route model,
//!    16 B and 64 KiB, text and binary, beside Rust's;
//! 8. cross-node fan-out: scenario 3 with the subscribers spread over three
//!    berth nodes that share topics through a `redis-server` (skipped when it
//!    is not installed), beside the single node;
//! 9. attack: 10, then 100 clients that send the echo 64 KiB messages and
//!    never read: berth's memory during and after, the 1013 closes, and a
//!    neighbouring route's latency quiet and under attack;
//! 10. compression: the same berth routes with clients that negotiate
//!     permessage-deflate beside clients that offer none (here the baseline is
//!     berth uncompressed), the same ~1 KiB JSON chat messages both ways:
//!     pipelined echo (bytes on the wire each way, server CPU per message),
//!     fan-out to 1,000 subscribers (delivery rate, server CPU per delivery),
//!     and 1,000 idle connections after one 4 KiB message each way (memory
//!     per connection).
//! 11. state: host calls for state timed inside the testkit plugin (the
//!     crossing included, no WebSocket round trip), p50 and p99: a `set` and
//!     a `get` of a 64-byte value beside two `config-get`s, a history read of
//!     50 messages, and a ~200-byte publish on a route that keeps history
//!     beside one that keeps none, with no subscriber, one and a hundred.
//! 12. outbound: a plugin's HTTP request to a loopback backend, timed inside
//!     the plugin from `fetch` to its callback, beside the same request from
//!     a direct hyper client on berth's CPU: what berth adds, p50 and p99.
//!
//! `cargo bench --bench suite -- --smoke` (or `BERTH_BENCH_SMOKE=1`) runs every
//! scenario once with tiny counts: it proves each completes, not how fast.
//! Scenario names as arguments (`crossing echo pipelined fanout idle connect reload
//! languages cluster attack compression state outbound`) run only those (with `--smoke` too: tiny counts for just
//! those);
//! `BERTH_BENCH_IDLE=N` sets the number of scenario 4's idle connections, and
//! `BERTH_BENCH_ROUNDS=N` the rounds each scenario alternates (3 by default;
//! more narrow the medians when two builds are compared).
//!
//! Traffic stays on loopback; every loop is bounded in count and time.

mod attack;
mod baseline;
mod cluster;
mod compression;
mod connect;
mod crossing;
mod echo;
mod fanout;
mod idle;
mod languages;
mod outbound;
mod reload;
mod report;
mod servers;
mod state;
mod wire;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use servers::{Server, has_taskset};

/// No single step of the benchmark may take longer than this.
pub const LIMIT: Duration = Duration::from_secs(60);

/// The scenarios, by the names that select them on the command line.
const SCENARIOS: [&str; 13] = [
    "crossing",
    "echo",
    "pipelined",
    "fanout",
    "idle",
    "connect",
    "reload",
    "languages",
    "cluster",
    "attack",
    "compression",
    "state",
    "outbound",
];

/// How many messages may wait for one subscriber, in both servers (berth's
/// `write-queue`, the baseline's broadcast ring): a whole fan-out burst, so
/// that neither drops one.
pub const QUEUE_DEPTH: usize = 16_384;

/// How much each scenario does.
pub struct Plan {
    /// Tiny counts and one round: proves the scenarios work, measures nothing.
    pub smoke: bool,
    /// Alternating rounds per scenario; medians are compared.
    pub rounds: usize,
    /// Scenario 1: connections, each in lock-step.
    pub echo_connections: usize,
    /// Scenario 1: messages per connection.
    pub echo_messages: usize,
    /// Scenario 2: connections.
    pub pipelined_connections: usize,
    /// Scenario 2: messages per connection.
    pub pipelined_messages: usize,
    /// Scenario 2: messages in flight per connection.
    pub window: usize,
    /// Scenarios 3 and 8: subscribers.
    pub subscribers: usize,
    /// Scenario 3: publishes sent back to back, for the delivery rate.
    pub burst: usize,
    /// Scenario 3: publishes sent one by one, for the delivery latency.
    pub paced: usize,
    /// Scenario 3: the gap between paced publishes.
    pub pace: Duration,
    /// Scenario 4: idle connections wanted.
    pub idle: usize,
    /// Scenario 5: connections per run.
    pub connects: usize,
    /// Scenario 5: connections being made at once.
    pub connectors: usize,
    /// Scenario 6: plugin versions per case (even: consecutive ones alternate).
    pub reload_rounds: usize,
    /// Scenario 7: connection-model instances opened per language.
    pub language_instances: usize,
    /// Scenario 7: round trips of each 16 B payload, at least.
    pub language_small: usize,
    /// Scenario 7: round trips of each 64 KiB payload, at least.
    pub language_large: usize,
    /// Scenario 7: the shortest run of one payload, long beside /proc's CPU ticks.
    pub language_min_time: Duration,
    /// Scenario 10: echo messages per connection (over `pipelined_connections`,
    /// `window` in flight).
    pub compression_messages: usize,
    /// Scenario 10: publishes to `subscribers`, back to back.
    pub compression_burst: usize,
    /// Scenario 10: idle connections wanted.
    pub compression_idle: usize,
}

impl Plan {
    fn new(smoke: bool) -> Plan {
        let idle = std::env::var("BERTH_BENCH_IDLE")
            .ok()
            .and_then(|v| v.parse().ok());
        // More rounds narrow the medians when comparing two builds.
        let rounds = std::env::var("BERTH_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n| n > 0);
        if smoke {
            return Plan {
                smoke,
                rounds: rounds.unwrap_or(1),
                echo_connections: 4,
                echo_messages: 20,
                pipelined_connections: 4,
                pipelined_messages: 200,
                window: 16,
                subscribers: 20,
                burst: 10,
                paced: 5,
                pace: Duration::from_millis(5),
                idle: idle.unwrap_or(200),
                connects: 50,
                connectors: 16,
                reload_rounds: 2,
                language_instances: 5,
                language_small: 20,
                language_large: 5,
                language_min_time: Duration::ZERO,
                compression_messages: 50,
                compression_burst: 10,
                compression_idle: 50,
            };
        }
        Plan {
            smoke,
            rounds: rounds.unwrap_or(3),
            echo_connections: 50,
            echo_messages: 2000,
            pipelined_connections: 50,
            // A million messages: about a second at 0.9 M/s, long enough
            // for /proc's 10 ms CPU ticks to matter little.
            pipelined_messages: 20_000,
            window: 16,
            subscribers: 1000,
            // Sixteen million deliveries: at up to 20 M/s, a burst outlasts
            // CPU_MEANINGFUL, so each round reads the server's CPU time.
            // Each subscriber's queue (QUEUE_DEPTH) holds a whole burst.
            burst: 16_000,
            paced: 100,
            pace: Duration::from_millis(25),
            idle: idle.unwrap_or(19_000),
            connects: 6000,
            connectors: 16,
            reload_rounds: 10,
            language_instances: 50,
            language_small: 2000,
            language_large: 200,
            // 0.5 s of server CPU or so: /proc's 10 ms ticks matter little.
            language_min_time: Duration::from_secs(1),
            // 300,000 echoes of ~1 KiB: uncompressed, close to a second at
            // up to 0.4 M/s, long enough for /proc's ticks.
            compression_messages: 6000,
            // Two million deliveries of ~1 KiB.
            compression_burst: 4000,
            compression_idle: 1000,
        }
    }
}

/// Which server and instance model a route stands for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The baseline server.
    Baseline,
    /// berth, one instance for the route.
    Route,
    /// berth, one instance per connection.
    Connection,
}

impl Kind {
    /// The name used in target lines.
    pub fn model(self) -> &'static str {
        match self {
            Kind::Baseline => "baseline",
            Kind::Route => "route model",
            Kind::Connection => "connection model",
        }
    }
}

/// One echo route on one server.
pub struct Subject<'a> {
    /// Its name in tables.
    pub label: &'static str,
    /// What it stands for.
    pub kind: Kind,
    /// The server serving it.
    pub server: &'a Server,
    /// The URL path.
    pub path: &'static str,
}

/// The running servers and what the scenarios need to start more.
pub struct Bench {
    /// The amounts for this run.
    pub plan: Plan,
    /// berth, serving `/kit`, `/echo` and `/echo-conn`.
    pub berth: Server,
    /// The baseline, serving `/echo`, `/sub` and `/pub`.
    pub baseline: Server,
    /// This process's open-file limit, after raising it.
    pub open_files: u64,
    config: PathBuf,
}

impl Bench {
    /// Starts another berth on the same config.
    pub fn start_berth(&self) -> Server {
        start_berth(&self.config)
    }

    /// Starts another baseline.
    pub fn start_baseline(&self) -> Server {
        start_baseline()
    }

    /// The baseline's echo and berth's, in both instance models.
    pub fn echo_subjects(&self) -> [Subject<'_>; 3] {
        [
            Subject {
                label: "baseline (/echo)",
                kind: Kind::Baseline,
                server: &self.baseline,
                path: "/echo",
            },
            Subject {
                label: "berth route model (/echo)",
                kind: Kind::Route,
                server: &self.berth,
                path: "/echo",
            },
            Subject {
                label: "berth connection model (/echo-conn)",
                kind: Kind::Connection,
                server: &self.berth,
                path: "/echo-conn",
            },
        ]
    }
}

/// A berth config: loopback, the built plugins, room for every scenario's
/// connections, and `routes`.
fn config_text(routes: &str) -> String {
    let plugin_dir = berth::demo::BUILT_PLUGIN_DIR;
    format!(
        r#"listen = "127.0.0.1:0"
plugin-dir = {plugin_dir:?}
max-instances = 2000
max-connections = 20000
{routes}"#
    )
}

/// Starts berth on the generated config, with instance timings in its log
/// and its state store in a folder of its own.
fn start_berth(config: &Path) -> Server {
    let state_dir = fresh_state_dir(config);
    Server::start(
        "berth",
        env!("CARGO_BIN_EXE_berth"),
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            &state_dir,
        ],
        &[("RUST_LOG", "warn,berth::instance=trace")],
    )
}

/// A new folder name beside `config` for one berth's state store: a store
/// takes one process, and servers started on one config run side by side.
pub fn fresh_state_dir(config: &Path) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = config.with_file_name(format!("state-{n}"));
    dir.to_str().expect("a UTF-8 path").to_string()
}

/// Starts the baseline: this executable in `--baseline-server` mode.
fn start_baseline() -> Server {
    let me = std::env::current_exe().unwrap();
    Server::start(
        "baseline",
        me.to_str().unwrap(),
        &["--baseline-server"],
        &[],
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--baseline-server") {
        // The same runtime berth's binary uses: tokio's default multi-thread
        // scheduler, sized by the CPUs the process may use (one, when pinned).
        let runtime = tokio::runtime::Runtime::new().unwrap();
        return runtime.block_on(baseline::serve());
    }
    // Re-run this load generator on CPU 1 so that it never shares a core with
    // the servers on CPU 0.
    if std::env::var_os("BERTH_BENCH_PINNED").is_none() && has_taskset() {
        let status = Command::new("taskset")
            .args(["-c", "1"])
            .arg(std::env::current_exe().unwrap())
            .args(&args)
            .env("BERTH_BENCH_PINNED", "1")
            .status()
            .expect("re-run pinned");
        std::process::exit(status.code().unwrap_or(1));
    }
    let smoke = args.iter().any(|a| a == "--smoke")
        || std::env::var("BERTH_BENCH_SMOKE").is_ok_and(|v| v == "1");
    // Cargo adds `--bench`; other flags are not ours either.
    let only: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    for name in &only {
        assert!(
            SCENARIOS.contains(name),
            "unknown scenario {name:?}; the scenarios are {SCENARIOS:?}"
        );
    }
    servers::report_servers_on_panic();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(Plan::new(smoke), &only));
}

/// Raises this process's soft open-file limit to its hard limit (the servers,
/// started from here, inherit it) and returns the limit in force.
fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    limit.rlim_cur
}

async fn run(plan: Plan, only: &[&str]) {
    let began = Instant::now();
    let open_files = raise_open_file_limit();
    let dir = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir()
        .expect("a temporary folder");
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        config_text(&format!(
            r#"
[[route]]
path = "/kit"
plugin = "testkit.wasm"
write-queue = {QUEUE_DEPTH}

[[route]]
path = "/echo"
plugin = "echo.wasm"

[[route]]
path = "/echo-conn"
plugin = "echo.wasm"
instance = "connection"
"#
        )),
    )
    .unwrap();

    let smoke = plan.smoke;
    let bench = Bench {
        plan,
        berth: start_berth(&config),
        baseline: start_baseline(),
        open_files,
        config,
    };

    println!(
        "berth benchmark suite{}",
        if smoke {
            " -- smoke run: tiny counts, 1 round; figures mean nothing"
        } else {
            ""
        }
    );
    println!(
        "servers on CPU 0, load generator on CPU 1 ({}); {} round(s) alternating servers, \
         medians compared; open-file limit {open_files}",
        if has_taskset() {
            "taskset"
        } else {
            "no taskset: unpinned"
        },
        bench.plan.rounds
    );
    println!("berth: {}", env!("CARGO_BIN_EXE_berth"));
    println!("baseline: {}", baseline::describe());

    let wants = |name: &str| only.is_empty() || only.contains(&name);
    let mut summary = report::Summary::new(smoke);
    if wants("crossing") {
        crossing::scenario(smoke);
    }
    if wants("echo") {
        echo::one_at_a_time(&bench, &mut summary).await;
    }
    if wants("pipelined") {
        echo::pipelined_echo(&bench, &mut summary).await;
    }
    if wants("fanout") {
        fanout::scenario(&bench, &mut summary).await;
    }
    if wants("idle") {
        idle::scenario(&bench, &mut summary).await;
    }
    if wants("connect") {
        connect::scenario(&bench, &mut summary).await;
    }
    if wants("reload") {
        reload::scenario(&bench, &mut summary).await;
    }
    if wants("languages") {
        languages::scenario(&bench).await;
    }
    if wants("cluster") {
        cluster::scenario(&bench).await;
    }
    if wants("attack") {
        attack::scenario(&bench, &mut summary).await;
    }
    if wants("compression") {
        compression::scenario(&bench, &mut summary).await;
    }
    if wants("state") {
        state::scenario(&bench, &mut summary).await;
    }
    if wants("outbound") {
        outbound::scenario(&bench, &mut summary).await;
    }
    summary.print();

    let Bench {
        berth, baseline, ..
    } = bench;
    for (name, server) in [("berth", berth), ("baseline", baseline)] {
        println!(
            "{name}'s stderr besides instance timings:\n{}",
            server.stop().unwrap_or_else(|| "  (nothing)".to_string())
        );
    }
    println!("total time {:.1} s", began.elapsed().as_secs_f64());
}
