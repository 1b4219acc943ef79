//! Scenario 7: the echo plugin written in Rust, JavaScript and Python, served
//! side by side by one berth. What each language's connection-model instance
//! costs in memory and in time to open, and what one message costs in the
//! route model, small and 64 KiB, text and binary. Rust is the baseline.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::report::{
    CPU_MEANINGFUL, Table, median, median_duration, micros, percentile, ratio, ratio_of,
};
use crate::servers::{Server, has_taskset};
use crate::wire::{Client, round_trip, ws};
use crate::{Bench, LIMIT};

/// The longest a guest build or the compile warm-up may take: on a cold cache
/// they install tools or compile 12-18 MB components for a minute or more; on
/// a warm one, a second.
const TOOL_LIMIT: Duration = Duration::from_secs(600);
/// The small payload's size: a chat line.
const SMALL: usize = 16;
/// The large payload's size: the default `max-message-size`.
const LARGE: usize = 64 * 1024;
/// The route-model routes' `max-message-size`: room above [`LARGE`], so the
/// limit's exact edge plays no part.
const MAX_MESSAGE: usize = 2 * LARGE;
/// Round trips of each payload on a fresh client before any is timed.
const WARM_UP: usize = 10;
/// The pause before reading the server's memory, for freed instances and
/// closed connections to be gone.
const SETTLE: Duration = Duration::from_millis(500);
/// At most this many times a payload's least count of round trips: a guest
/// that keeps binary messages' bytes grows with the count (see [`MAX_MEMORY`]).
const MOST_FACTOR: usize = 10;
/// berth's `max-memory`, raised from 64 MiB: a guest runtime's heap may keep
/// something of every message (kept/msg shows it; the JavaScript engine's
/// heap grows a little with each), and a route-model instance that reaches
/// the limit traps and loses the message in hand, which would end the run
/// rather than measure it. A full run sends each language some 6,000 large
/// messages.
const MAX_MEMORY: &str = "1GiB";
/// berth's `max-instances`: the pool reserves address space for `max-memory`
/// per slot, and 50 connection-model instances at a time are all it needs.
const MAX_INSTANCES: usize = 200;

/// A language the echo plugin is written in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lang {
    Rust,
    Js,
    Python,
}

impl Lang {
    const ALL: [Lang; 3] = [Lang::Rust, Lang::Js, Lang::Python];

    /// Its name in tables, and the folder of its build script under plugins/.
    fn name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Js => "js",
            Lang::Python => "python",
        }
    }

    /// The route serving it in the route model.
    fn route(self) -> &'static str {
        match self {
            Lang::Rust => "/rust",
            Lang::Js => "/js",
            Lang::Python => "/python",
        }
    }

    /// The route serving it in the connection model.
    fn conn_route(self) -> &'static str {
        match self {
            Lang::Rust => "/rust-conn",
            Lang::Js => "/js-conn",
            Lang::Python => "/python-conn",
        }
    }
}

/// One of the four messages sent in the call-cost part.
#[derive(Clone, Copy)]
struct Shape {
    label: &'static str,
    size: usize,
    binary: bool,
}

/// The payloads, small ones first: a large one is compared with its small kin.
const SHAPES: [Shape; 4] = [
    Shape {
        label: "16 B text",
        size: SMALL,
        binary: false,
    },
    Shape {
        label: "16 B binary",
        size: SMALL,
        binary: true,
    },
    Shape {
        label: "64 KiB text",
        size: LARGE,
        binary: false,
    },
    Shape {
        label: "64 KiB binary",
        size: LARGE,
        binary: true,
    },
];

impl Shape {
    /// The message: ASCII text (one byte per character in every language's
    /// string type) or bytes of every value.
    fn message(self) -> Message {
        if self.binary {
            Message::binary((0..self.size).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
        } else {
            Message::text(
                (0..self.size)
                    .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
                    .collect::<String>(),
            )
        }
    }

    /// The small shape of the same kind, which a large one is compared with.
    fn small(self) -> usize {
        usize::from(self.binary)
    }
}

/// Runs `command` to its end within [`TOOL_LIMIT`], its output in files
/// under `logs` (a pipe nobody reads could fill and stall it); returns its
/// stdout, or panics with what it wrote.
fn run_tool(mut command: Command, name: &str, logs: &Path) -> String {
    let (out, err) = (
        logs.join(format!("{name}.out")),
        logs.join(format!("{name}.err")),
    );
    let mut child = command
        .stdin(Stdio::null())
        .stdout(File::create(&out).expect("a log file"))
        .stderr(File::create(&err).expect("a log file"))
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: cannot start {command:?}: {e}"));
    let began = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("the tool's status") {
            break status;
        }
        if began.elapsed() > TOOL_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name}: {command:?} took more than {TOOL_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    if !status.success() {
        let stderr = std::fs::read_to_string(&err).unwrap_or_default();
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{name}: {command:?} failed ({status}):\n{stdout}{}",
            tail.join("\n")
        );
    }
    stdout
}

/// The echo plugin of each language: Rust's from the build, the others built
/// by their scripts (cached by source hash) into the target folder.
fn plugins(logs: &Path) -> [PathBuf; 3] {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-languages");
    Lang::ALL.map(|lang| {
        if lang == Lang::Rust {
            return Path::new(berth::demo::BUILT_PLUGIN_DIR).join("echo.wasm");
        }
        let dir = out.join(lang.name());
        let script = root.join("plugins").join(lang.name()).join("build");
        let mut command = Command::new(&script);
        command.arg(&dir);
        let began = Instant::now();
        let said = run_tool(command, &format!("build-{}", lang.name()), logs);
        let line = said
            .lines()
            .find(|l| l.contains(" echo.wasm"))
            .unwrap_or("(no line for echo.wasm)");
        println!(
            "  {}: {} ({:.1} s with the script's start)",
            lang.name(),
            line.split_whitespace().collect::<Vec<_>>().join(" "),
            began.elapsed().as_secs_f64()
        );
        dir.join("echo.wasm")
    })
}

/// Starts berth on `config` once, on every core (nothing is measured yet),
/// and stops it when it listens: the compile cache then holds every plugin,
/// compiled for this config's engine settings (`max-memory` is one of them).
/// The measured berth, on one core, would otherwise compile a 12-18 MB
/// component for about a minute, beyond [`LIMIT`]. Returns how long it took.
fn warm_cache(config: &Path, logs: &Path) -> Duration {
    let berth = env!("CARGO_BIN_EXE_berth");
    let mut command = if has_taskset() {
        // SAFETY: sysconf only reads a system constant.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1);
        let mut c = Command::new("taskset");
        c.args(["-c", &format!("0-{}", cpus - 1), berth]);
        c
    } else {
        Command::new(berth)
    };
    let errors = logs.join("warm-up.err");
    command
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(&errors).expect("a log file"));
    let began = Instant::now();
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let stdout = BufReader::new(child.stdout.take().expect("berth's stdout"));
    let (first, line) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = stdout.lines();
        let _ = first.send(lines.next());
        for _ in lines {}
    });
    let line = line.recv_timeout(TOOL_LIMIT);
    let took = began.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    match line {
        Ok(Some(Ok(line))) if line.contains("listening on") => took,
        other => panic!(
            "the warm-up berth did not listen within {TOOL_LIMIT:?} ({other:?}); its stderr:\n{}",
            std::fs::read_to_string(&errors).unwrap_or_default()
        ),
    }
}

/// berth's config: each language's echo at `/LANG` (route model) and
/// `/LANG-conn` (connection model).
fn write_config(dir: &Path, cache: &Path, plugins: &[PathBuf; 3]) -> PathBuf {
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\nplugin-dir = {dir:?}\ncache-dir = {cache:?}\n\
         max-memory = \"{MAX_MEMORY}\"\nmax-instances = {MAX_INSTANCES}\n"
    );
    for (lang, plugin) in Lang::ALL.iter().zip(plugins) {
        text.push_str(&format!(
            "\n[[route]]\npath = {:?}\nplugin = {plugin:?}\nmax-message-size = {MAX_MESSAGE}\n\
             \n[[route]]\npath = {:?}\nplugin = {plugin:?}\ninstance = \"connection\"\n",
            lang.route(),
            lang.conn_route(),
        ));
    }
    let config = dir.join("berth.toml");
    std::fs::write(&config, text).expect("the config written");
    config
}

/// Starts berth on `config`, pinned like the other servers, logging each
/// instance it makes and each plugin it loads.
fn start_berth(config: &Path) -> Server {
    Server::start(
        "berth (languages)",
        env!("CARGO_BIN_EXE_berth"),
        &["serve", "--config", config.to_str().unwrap()],
        &[("RUST_LOG", "warn,berth::instance=trace,berth::reload=info")],
    )
}

/// Opens a client on `path` or panics saying which language failed.
async fn open(server: &Server, lang: Lang, path: &str, config: Option<WebSocketConfig>) -> Client {
    ws(server.addr(), path, config)
        .await
        .unwrap_or_else(|e| panic!("{}: cannot open {path}: {e}", lang.name()))
}

/// Sends a close and waits briefly for the server's, so that the server
/// drops the connection (and its instance) now rather than at a timeout.
async fn close(mut client: Client) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        if client.close(None).await.is_ok() {
            while let Some(Ok(_)) = client.next().await {}
        }
    })
    .await;
}

async fn close_all(clients: Vec<Client>) {
    futures_util::future::join_all(clients.into_iter().map(close)).await;
}

/// One round of the memory part for one language.
#[derive(Clone, Copy)]
struct Memory {
    opened: usize,
    /// Connect, upgrade and first echo, per connection.
    open_p50: Duration,
    /// berth's own time to make an instance, from its trace log.
    made_p50: Option<Duration>,
    before_kib: u64,
    after_kib: u64,
}

impl Memory {
    fn per_instance_mib(&self) -> f64 {
        (self.after_kib as f64 - self.before_kib as f64) / 1024.0 / self.opened.max(1) as f64
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.opened.to_string(),
            micros(self.open_p50),
            self.made_p50.map_or("-".to_string(), micros),
            format!("{:.1} MiB", self.before_kib as f64 / 1024.0),
            format!("{:.1} MiB", self.after_kib as f64 / 1024.0),
            format!("{:.2}", self.per_instance_mib()),
        ]
    }
}

/// Opens `count` connections to the language's connection-model route one
/// after another, each checked by an echo, and reads the server's memory
/// before and after; then closes them.
async fn instances(server: &Server, lang: Lang, count: usize) -> Memory {
    // Only this batch's instance timings.
    server.take_made(0);
    tokio::time::sleep(SETTLE).await;
    let before_kib = server.rss_kib();
    let mut clients = Vec::with_capacity(count);
    let mut times = Vec::with_capacity(count);
    // Idle connections need little buffer; berth's side is what is measured.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let began = Instant::now();
    for index in 0..count {
        assert!(
            began.elapsed() < LIMIT,
            "{}: connections take too long",
            lang.name()
        );
        let started = Instant::now();
        let mut client = open(server, lang, lang.conn_route(), Some(config)).await;
        round_trip(&mut client, &Message::text(format!("instance {index}")))
            .await
            .unwrap_or_else(|e| panic!("{}: connection {index}: {e}", lang.name()));
        times.push(started.elapsed());
        clients.push(client);
    }
    let mut made = server.take_made(count);
    tokio::time::sleep(SETTLE).await;
    let after_kib = server.rss_kib();
    close_all(clients).await;
    times.sort_unstable();
    made.sort_unstable();
    Memory {
        opened: count,
        open_p50: percentile(&times, 0.5),
        made_p50: (!made.is_empty()).then(|| Duration::from_micros(percentile(&made, 0.5))),
        before_kib,
        after_kib,
    }
}

/// One payload's run on one language's route-model client.
#[derive(Clone, Copy)]
struct Calls {
    trips: usize,
    p50: Duration,
    elapsed: Duration,
    /// The server's CPU time over the run, per round trip.
    cpu: Duration,
    /// The server's VmRSS growth over the run per round trip, in KiB: what
    /// the plugin keeps of each message shows here once its freed memory is used up.
    kept_kib: f64,
}

impl Calls {
    fn meaningful(&self) -> bool {
        self.elapsed >= CPU_MEANINGFUL
    }

    fn cpu_cell(&self) -> String {
        if self.meaningful() {
            micros(self.cpu)
        } else {
            "(too short)".to_string()
        }
    }

    fn cells(&self) -> Vec<String> {
        let blank = String::new;
        vec![
            self.trips.to_string(),
            micros(self.p50),
            blank(),
            self.cpu_cell(),
            blank(),
            blank(),
            blank(),
            kib(self.kept_kib),
        ]
    }
}

/// A size in KiB to a tenth.
fn kib(value: f64) -> String {
    format!("{value:.1} KiB")
}

/// Round trips of `message`, one at a time, until there have been `least`
/// and `min_time` has passed, or `most`.
async fn calls(
    server: &Server,
    client: &mut Client,
    message: &Message,
    least: usize,
    min_time: Duration,
) -> Result<Calls, String> {
    let most = least * MOST_FACTOR;
    let mut times = Vec::with_capacity(least);
    let rss_before = server.rss_kib();
    let cpu_before = server.cpu();
    let start = Instant::now();
    while times.len() < most && (times.len() < least || start.elapsed() < min_time) {
        let sent = Instant::now();
        round_trip(client, message).await?;
        times.push(sent.elapsed());
        if start.elapsed() > LIMIT {
            return Err(format!("{} round trips took over {LIMIT:?}", times.len()));
        }
    }
    let elapsed = start.elapsed();
    let cpu = server.cpu().saturating_sub(cpu_before);
    let grown = server.rss_kib() as f64 - rss_before as f64;
    times.sort_unstable();
    Ok(Calls {
        trips: times.len(),
        p50: percentile(&times, 0.5),
        elapsed,
        cpu: cpu / times.len() as u32,
        kept_kib: grown / times.len() as f64,
    })
}

/// `value` microseconds, signed: per-KiB differences may come out below
/// zero in noise; `-` for no figure.
fn signed_micros(value: f64) -> String {
    if !value.is_finite() {
        "-".to_string()
    } else if value.abs() < 10.0 {
        format!("{value:.2} µs")
    } else {
        format!("{value:.0} µs")
    }
}

/// `value / rust`, or `-` when there is nothing to divide by.
fn times_rust(value: f64, rust: f64) -> String {
    if rust > 0.0 && value.is_finite() {
        ratio(value, rust)
    } else {
        "-".to_string()
    }
}

/// The medians of one language's payload runs.
#[derive(Clone, Copy)]
struct CallMedians {
    trips: usize,
    p50: Duration,
    cpu: Option<Duration>,
    kept_kib: f64,
}

/// Scenario 7: the echo plugin in three languages on one berth.
pub async fn scenario(bench: &Bench) {
    let dir = tempfile::Builder::new()
        .prefix("berth-bench-languages-")
        .tempdir()
        .expect("a temporary folder");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("a folder for tool output");
    // Kept across runs: each component is compiled once per content, not per run.
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-languages/compiled");
    println!();
    println!(
        "7. languages: the echo plugin in Rust, JavaScript and Python on one berth, at /LANG \
         (route model, max-message-size {MAX_MESSAGE}) and /LANG-conn (connection model); \
         max-memory raised to {MAX_MEMORY}: guest runtimes may keep binary messages' bytes \
         (see kept/msg), and a route instance at the limit traps; Rust is the baseline"
    );
    let plugins = plugins(&logs);
    let config = write_config(dir.path(), &cache, &plugins);
    let warm = warm_cache(&config, &logs);
    println!(
        "  compile cache {} filled by a berth started beforehand on every core ({:.1} s): \
         on a cold cache it compiles, which the measured berth, on one core, could not do \
         within {LIMIT:?}",
        cache.display(),
        warm.as_secs_f64()
    );
    let began = Instant::now();
    let server = start_berth(&config);
    let start_time = began.elapsed();
    let loads: Vec<String> = Lang::ALL
        .iter()
        .zip(&plugins)
        .map(|(&lang, file)| {
            let bytes = std::fs::read(file).expect("the plugin file");
            let hash = blake3::hash(&bytes).to_hex()[..12].to_string();
            let size = if bytes.len() < 1 << 20 {
                format!("{} KiB", bytes.len() >> 10)
            } else {
                format!("{:.1} MiB", bytes.len() as f64 / f64::from(1 << 20))
            };
            // Both routes load the file; the second finds it in memory.
            let first = server.take_load(&hash);
            let second = server.take_load(&hash);
            match [first, second]
                .into_iter()
                .flatten()
                .find(|l| l.from != "memory")
            {
                Some(load) => format!(
                    "{} {size} from {} in {:.0} ms",
                    lang.name(),
                    load.from,
                    load.compile_ms
                ),
                None => format!("{} {size} (no load line)", lang.name()),
            }
        })
        .collect();
    println!(
        "  berth started in {:.1} s: {}",
        start_time.as_secs_f64(),
        loads.join("; ")
    );
    // Every route answers before anything is timed, and each route-model
    // instance has had its first messages.
    for lang in Lang::ALL {
        for path in [lang.route(), lang.conn_route()] {
            let mut client = open(&server, lang, path, None).await;
            for shape in SHAPES {
                round_trip(&mut client, &shape.message())
                    .await
                    .unwrap_or_else(|e| panic!("{}: {path}: {}: {e}", lang.name(), shape.label));
            }
            close(client).await;
        }
    }

    let memory = memory_part(bench, &server).await;
    let calls = calls_part(bench, &server).await;

    println!("  summary (x Rust in brackets):");
    let (rust_mib, rust_open) = memory[0];
    for (index, lang) in Lang::ALL.iter().enumerate() {
        let (mib, open) = memory[index];
        let versus = |value: f64, rust: f64| {
            if index == 0 {
                String::new()
            } else {
                format!(" ({})", times_rust(value, rust))
            }
        };
        let cpu = |lang: usize, shape: usize| {
            calls[lang][shape]
                .cpu
                .map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
        };
        let mut line = format!(
            "    {}: {mib:.2} MiB per instance{}, opened in {}{}; cpu/rtt",
            lang.name(),
            versus(mib, rust_mib),
            micros(open),
            versus(open.as_secs_f64(), rust_open.as_secs_f64()),
        );
        for (shape, label) in [(0, "16 B text"), (1, "binary")] {
            line.push_str(&format!(
                " {label} {}{}",
                signed_micros(cpu(index, shape)),
                versus(cpu(index, shape), cpu(0, shape))
            ));
            line.push(if shape == 0 { ',' } else { ';' });
        }
        line.push_str(" extra cpu/KiB");
        for (shape, label) in [(2, "64 KiB text"), (3, "binary")] {
            let small = SHAPES[shape].small();
            let kib = (LARGE - SMALL) as f64 / 1024.0;
            let extra = (cpu(index, shape) - cpu(index, small)) / kib;
            let rust_extra = (cpu(0, shape) - cpu(0, small)) / kib;
            line.push_str(&format!(
                " {label} {}{}",
                signed_micros(extra),
                versus(extra, rust_extra)
            ));
            if shape == 2 {
                line.push(',');
            }
        }
        line.push_str(&format!(
            "; kept per 64 KiB binary message {}",
            kib(calls[index][3].kept_kib)
        ));
        println!("{line}");
    }
    match server.stop() {
        Some(notes) => println!("  berth (languages)'s stderr besides timings:\n{notes}"),
        None => println!("  berth (languages)'s stderr besides timings: (nothing)"),
    }
}

/// Part 1: memory and open time per connection-model instance, in
/// alternating rounds; returns each language's median MiB per instance and
/// open time.
async fn memory_part(bench: &Bench, server: &Server) -> Vec<(f64, Duration)> {
    let plan = &bench.plan;
    let count = plan.language_instances;
    println!();
    println!(
        "  7a. instance memory: {count} connections to /LANG-conn opened one after another, \
         each checked by an echo and held; MiB per instance = growth of berth's VmRSS / \
         connections (pages of a plugin's memory image that several instances map count \
         once per instance, as VmRSS counts them); open = connect + upgrade + first echo, \
         made = berth's instance-made time from its log"
    );
    let table = Table::new(&[
        "instances",
        "open p50",
        "made p50",
        "rss before",
        "rss after",
        "MiB/inst",
        "x Rust",
    ]);
    let mut rounds = vec![Vec::new(); Lang::ALL.len()];
    for round in 1..=plan.rounds {
        for (lang, results) in Lang::ALL.iter().zip(&mut rounds) {
            let figures = instances(server, *lang, count).await;
            table.row(lang.conn_route(), &round.to_string(), &figures.cells());
            results.push(figures);
        }
    }
    let medians: Vec<(f64, Duration, Option<Duration>)> = rounds
        .iter()
        .map(|r| {
            let made: Option<Vec<Duration>> = r.iter().map(|m| m.made_p50).collect();
            (
                median(&r.iter().map(Memory::per_instance_mib).collect::<Vec<_>>()),
                median_duration(&r.iter().map(|m| m.open_p50).collect::<Vec<_>>()),
                made.map(|m| median_duration(&m)),
            )
        })
        .collect();
    let rust = medians[0];
    for (lang, &(mib, open, made)) in Lang::ALL.iter().zip(&medians) {
        table.row(
            &format!("median {}", lang.conn_route()),
            "",
            &[
                String::new(),
                micros(open),
                made.map_or("-".to_string(), micros),
                String::new(),
                String::new(),
                format!("{mib:.2}"),
                times_rust(mib, rust.0),
            ],
        );
        if *lang != Lang::Rust {
            table.row(
                "  open, made x Rust",
                "",
                &[
                    String::new(),
                    ratio_of(open, rust.1),
                    match (made, rust.2) {
                        (Some(made), Some(base)) if !base.is_zero() => ratio_of(made, base),
                        _ => "-".to_string(),
                    },
                ],
            );
        }
    }
    medians.iter().map(|&(mib, open, _)| (mib, open)).collect()
}

/// Part 2: the per-message cost in the route model, in alternating rounds;
/// returns each language's medians per shape.
async fn calls_part(bench: &Bench, server: &Server) -> Vec<Vec<CallMedians>> {
    let plan = &bench.plan;
    println!();
    println!(
        "  7b. call cost, route model: one client per language sends and waits for each echo; \
         16 B payloads at least {} round trips, 64 KiB ones at least {}, each for at least \
         {:.1} s (at most {MOST_FACTOR}x the count); every echo compared whole; cpu/rtt = \
         server cpu per round trip of this lone client, from /proc/PID/stat (10 ms ticks, \
         shown for runs of 0.5 s or more): with nothing to batch, mostly the wake-ups of \
         the session task and the route thread, not the per-message cost under load that \
         the pipelined scenario gives; \
         cpu/KiB = the 64 KiB message's extra cpu over the 16 B one of the same kind, per \
         KiB; kept/msg = growth of berth's VmRSS over the run / round trips",
        plan.language_small,
        plan.language_large,
        plan.language_min_time.as_secs_f64()
    );
    let table = Table::new(&[
        "round trips",
        "rtt p50",
        "x Rust",
        "cpu/rtt",
        "x Rust",
        "cpu/KiB",
        "x Rust",
        "kept/msg",
    ]);
    let messages: Vec<Message> = SHAPES.iter().map(|s| s.message()).collect();
    // rounds[lang][shape]: one entry per round.
    let mut rounds = vec![vec![Vec::new(); SHAPES.len()]; Lang::ALL.len()];
    for round in 1..=plan.rounds {
        let mut clients = Vec::with_capacity(Lang::ALL.len());
        for lang in Lang::ALL {
            let mut client = open(server, lang, lang.route(), None).await;
            for message in &messages {
                for _ in 0..WARM_UP {
                    round_trip(&mut client, message)
                        .await
                        .unwrap_or_else(|e| panic!("{}: warm-up: {e}", lang.name()));
                }
            }
            clients.push(client);
        }
        // Shape by shape, the languages take turns: a slow spell on this
        // shared machine falls on all three alike.
        for (index, (shape, message)) in SHAPES.iter().zip(&messages).enumerate() {
            let least = if shape.size == SMALL {
                plan.language_small
            } else {
                plan.language_large
            };
            for (lang, client) in Lang::ALL.iter().zip(&mut clients) {
                let figures = calls(server, client, message, least, plan.language_min_time)
                    .await
                    .unwrap_or_else(|e| panic!("{} {}: {e}", lang.name(), shape.label));
                table.row(
                    &format!("{} {}", lang.route(), shape.label),
                    &round.to_string(),
                    &figures.cells(),
                );
                rounds[*lang as usize][index].push(figures);
            }
        }
        close_all(clients).await;
    }
    let medians: Vec<Vec<CallMedians>> = rounds
        .iter()
        .map(|shapes| {
            shapes
                .iter()
                .map(|runs| {
                    let cpu: Option<Vec<Duration>> = runs
                        .iter()
                        .map(|c| c.meaningful().then_some(c.cpu))
                        .collect();
                    let mut trips: Vec<usize> = runs.iter().map(|c| c.trips).collect();
                    trips.sort_unstable();
                    CallMedians {
                        trips: trips[trips.len() / 2],
                        p50: median_duration(&runs.iter().map(|c| c.p50).collect::<Vec<_>>()),
                        cpu: cpu.map(|c| median_duration(&c)),
                        kept_kib: median(&runs.iter().map(|c| c.kept_kib).collect::<Vec<_>>()),
                    }
                })
                .collect()
        })
        .collect();
    let rust = &medians[0];
    for (index, shape) in SHAPES.iter().enumerate() {
        for (lang, mine) in Lang::ALL.iter().zip(&medians) {
            let m = mine[index];
            let base = rust[index];
            let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
            let mut cells = vec![
                m.trips.to_string(),
                micros(m.p50),
                times_rust(m.p50.as_secs_f64(), base.p50.as_secs_f64()),
                m.cpu.map_or("-".to_string(), micros),
                times_rust(secs(m.cpu), secs(base.cpu)),
            ];
            if shape.size == LARGE {
                let small = shape.small();
                let extra = secs(m.cpu) - secs(mine[small].cpu);
                let rust_extra = secs(base.cpu) - secs(rust[small].cpu);
                let kib = (LARGE - SMALL) as f64 / 1024.0;
                cells.push(if extra.is_finite() {
                    signed_micros(extra * 1e6 / kib)
                } else {
                    "-".to_string()
                });
                cells.push(times_rust(extra, rust_extra));
            } else {
                cells.extend([String::new(), String::new()]);
            }
            cells.push(kib(m.kept_kib));
            table.row(
                &format!("median {} {}", lang.route(), shape.label),
                "",
                &cells,
            );
        }
    }
    medians
}
