//! Scenario 6: hot reload. How long after a new plugin file is renamed into
//! berth's plugin folder the first reply comes from the new version on a new
//! connection: with the plugin compiled afresh, with it loaded from the
//! compile cache, and, as the baseline, with berth restarted instead (what a
//! server without in-process reload has to do).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::Bench;
use crate::report::{Goal, Summary, Table, millis, percentile, ratio_of};
use crate::servers::{Load, Server};
use crate::wire::tcp;

/// The route the swapped plugin is served at, from [`FILE`] in the plugin folder.
const ROUTE: &str = "/bench";
/// The drop-in plugin's file name.
const FILE: &str = "bench.wasm";
/// Where each version is written before it is renamed to [`FILE`]: berth
/// ignores dotfiles, so it never sees a half-written plugin.
const TEMP: &str = ".bench.wasm.tmp";
/// The name of the custom section that makes each version's bytes unique.
const NONCE_SECTION: &str = "berth-bench-nonce";
/// What each probe sends: echo answers the same, counter `1` (it counts the
/// messages its single route-model instance has had, and a probe stops at the
/// new version's first reply).
const PROBE: &str = "x";
/// The longest a new version may take to answer before the scenario fails.
const WAIT: Duration = Duration::from_secs(10);
/// The pause after a probe that found no route or the old version.
const RETRY: Duration = Duration::from_millis(1);
/// At most this many probes per version: [`WAIT`] runs out long before.
const MAX_PROBES: usize = 20_000;
/// The target for a reload whose compiled plugin is in the cache.
const TARGET: Duration = Duration::from_millis(300);
/// berth's file watcher waits this long after a file's last event (watch.rs).
const DEBOUNCE_MS: u64 = 100;

/// The cases' names in the table.
const COMPILED: &str = "hot reload, compiled";
const CACHED: &str = "hot reload, from cache";
const RESTART: &str = "restart, from cache";

/// The plugin a version is built from. Consecutive versions alternate, so
/// that a reply tells which version answered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Base {
    /// Replies with the number of messages its instance has had.
    Counter,
    /// Replies with the message itself.
    Echo,
}

impl Base {
    /// Round `round`'s base: counter for even rounds, echo for odd ones.
    fn of_round(round: usize) -> Base {
        if round.is_multiple_of(2) {
            Base::Counter
        } else {
            Base::Echo
        }
    }

    /// The built plugin's file name.
    fn file(self) -> &'static str {
        match self {
            Base::Counter => "counter.wasm",
            Base::Echo => "echo.wasm",
        }
    }

    /// Which base gave `reply` to [`PROBE`], if either could have.
    fn of_reply(reply: &str) -> Option<Base> {
        if reply == PROBE {
            Some(Base::Echo)
        } else if reply.parse::<u64>().is_ok() {
            Some(Base::Counter)
        } else {
            None
        }
    }
}

/// One version of the plugin: a base with a nonce section appended.
struct Version {
    base: Base,
    bytes: Vec<u8>,
    /// The content hash as berth's log shows it: its first 12 hex digits.
    hash: String,
}

impl Version {
    /// `base` made unique by `nonce`.
    fn new(base: Base, nonce: &str) -> Version {
        let file = Path::new(berth::demo::BUILT_PLUGIN_DIR).join(base.file());
        let component =
            std::fs::read(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let bytes = with_nonce(&component, nonce);
        let hash = blake3::hash(&bytes).to_hex()[..12].to_string();
        Version { base, bytes, hash }
    }
}

/// `component` with a custom section appended whose payload is `nonce`: the
/// same program under another content hash, so berth has nothing compiled
/// for it. A custom section may follow any section of a component; that berth
/// compiles and serves the result is checked by every cold round.
fn with_nonce(component: &[u8], nonce: &str) -> Vec<u8> {
    // `\0asm`, version 0x0d, layer 1: a component, not a core module.
    assert!(
        component.starts_with(b"\0asm\x0d\0\x01\0"),
        "the built plugin is not a component"
    );
    let mut body = Vec::new();
    leb128(NONCE_SECTION.len(), &mut body);
    body.extend_from_slice(NONCE_SECTION.as_bytes());
    body.extend_from_slice(nonce.as_bytes());
    let mut bytes = component.to_vec();
    // Section id 0: custom.
    bytes.push(0);
    leb128(body.len(), &mut bytes);
    bytes.extend_from_slice(&body);
    bytes
}

/// Appends `value` as an unsigned LEB128 u32, as section sizes and name
/// lengths are written.
fn leb128(value: usize, out: &mut Vec<u8>) {
    let mut value = u32::try_from(value).expect("a section under 4 GiB");
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The scenario's temporary folder: berth's config, its plugin folder and
/// compile cache, and a place to set cache entries aside.
struct Folders {
    _root: tempfile::TempDir,
    config: PathBuf,
    plugins: PathBuf,
    cache: PathBuf,
    aside: PathBuf,
}

impl Folders {
    fn new() -> Folders {
        let root = tempfile::Builder::new()
            .prefix("berth-bench-reload-")
            .tempdir()
            .expect("a temporary folder");
        let path = |name: &str| {
            let path = root.path().join(name);
            std::fs::create_dir(&path).expect("a folder in the temporary folder");
            path
        };
        let (plugins, cache, aside) = (path("plugins"), path("cache"), path("aside"));
        let config = root.path().join("berth.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\nplugin-dir = {plugins:?}\nauto-routes = true\n\
                 cache-dir = {cache:?}\n"
            ),
        )
        .unwrap();
        Folders {
            _root: root,
            config,
            plugins,
            cache,
            aside,
        }
    }

    /// Starts berth on this folder's config, pinned like the other servers,
    /// logging each plugin load.
    fn start_berth(&self) -> Server {
        Server::start(
            "berth (reload)",
            env!("CARGO_BIN_EXE_berth"),
            &["serve", "--config", self.config.to_str().unwrap()],
            // Info from the reload thread only: its `plugin loaded` lines are
            // the figures. Other info lines (a version stopping, a shutdown)
            // would crowd warnings out of the few stderr lines the report quotes.
            &[("RUST_LOG", "warn,berth::reload=info")],
        )
    }

    /// Writes `version` under a temporary name, then renames it into place
    /// (as build tools and deploy scripts do) and returns the moment of the
    /// rename, from which the reload is timed.
    fn install(&self, version: &Version) -> Instant {
        let temp = self.plugins.join(TEMP);
        std::fs::write(&temp, &version.bytes).expect("write the plugin");
        let renamed = Instant::now();
        std::fs::rename(&temp, self.plugins.join(FILE)).expect("rename the plugin into place");
        renamed
    }

    /// Moves every compile cache entry aside: the next load finds an empty cache.
    fn set_cache_aside(&self) {
        move_all(&self.cache, &self.aside);
    }

    /// Puts the entries set aside back in the cache.
    fn restore_cache(&self) {
        move_all(&self.aside, &self.cache);
    }
}

/// Moves every file in `from` into `to`.
fn move_all(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("list the folder") {
        let entry = entry.expect("a folder entry");
        std::fs::rename(entry.path(), to.join(entry.file_name())).expect("move a cache entry");
    }
}

/// Opens a new connection to [`ROUTE`], sends [`PROBE`] and returns the
/// reply, or `None` if the route is not served (404). The connection is
/// closed in an orderly way before this returns, so that the server lets go
/// of the version that served it.
async fn probe(addr: SocketAddr) -> Result<Option<String>, String> {
    let stream = tcp(addr).await.map_err(|e| format!("connect: {e}"))?;
    let url = format!("ws://{addr}{ROUTE}");
    let mut client = match tokio_tungstenite::client_async(url, stream).await {
        Ok((client, _)) => client,
        Err(WsError::Http(response)) if response.status().as_u16() == 404 => return Ok(None),
        Err(e) => return Err(format!("handshake: {e}")),
    };
    client
        .send(Message::text(PROBE))
        .await
        .map_err(|e| format!("send: {e}"))?;
    let reply = loop {
        match client.next().await {
            Some(Ok(Message::Text(text))) => break text.as_str().to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(other)) => return Err(format!("unexpected answer {other:?}")),
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err("closed by the server".to_string()),
        }
    };
    // Our close, then the server's: by the end of the stream the server's
    // session has ended too.
    let _ = client.close(None).await;
    while let Some(Ok(_)) = client.next().await {}
    Ok(Some(reply))
}

/// Probes [`ROUTE`] with new connections until `version` answers; returns
/// the time from `since` and the number of probes. Fails the scenario if
/// another plugin answers, or nothing new within [`WAIT`].
async fn first_reply(addr: SocketAddr, version: &Version, since: Instant) -> (Duration, usize) {
    for probes in 1..=MAX_PROBES {
        let left = WAIT.saturating_sub(since.elapsed());
        let answer = tokio::time::timeout(left, probe(addr))
            .await
            .unwrap_or_else(|_| Err("no answer in time".to_string()))
            .unwrap_or_else(|e| panic!("probe {probes} of {ROUTE}: {e}"));
        if let Some(reply) = answer {
            let base = Base::of_reply(&reply)
                .unwrap_or_else(|| panic!("{ROUTE} answered {reply:?}: neither echo nor counter"));
            if base == version.base {
                let latency = since.elapsed();
                // Nothing else talks to the new version before this probe.
                assert!(
                    base != Base::Counter || reply == "1",
                    "the new counter's first reply was {reply:?}, not \"1\""
                );
                return (latency, probes);
            }
        }
        assert!(
            since.elapsed() < WAIT,
            "{ROUTE} did not answer as {} ({}) within {WAIT:?} ({probes} probes)",
            version.base.file(),
            version.hash
        );
        tokio::time::sleep(RETRY).await;
    }
    panic!(
        "{ROUTE} did not answer as {} in {MAX_PROBES} probes",
        version.base.file()
    );
}

/// One round: how long the new version took, and how berth made it.
struct Round {
    latency: Duration,
    probes: usize,
    load: Load,
}

impl Round {
    fn cells(&self) -> Vec<String> {
        vec![
            millis(self.latency),
            self.probes.to_string(),
            self.load.from.clone(),
            format!("{:.1}", self.load.compile_ms),
            format!("{:.1}", self.load.ready_ms),
        ]
    }
}

/// The `plugin loaded` line berth logged for `version`, checked to say `from`.
fn load_of(server: &Server, version: &Version, from: &str, why: &str) -> Load {
    let load = server.take_load(&version.hash).unwrap_or_else(|| {
        panic!(
            "berth logged no `plugin loaded` line for {} (RUST_LOG must let berth::reload's info through)",
            version.hash
        )
    });
    assert_eq!(
        load.from, from,
        "berth loaded {} from {:?}, not {from:?}: {why}",
        version.hash, load.from
    );
    load
}

/// Times `version`'s first reply on `server` from `since`, and checks that
/// berth's log says it made the version `from` where it should have (`why`).
async fn round(server: &Server, version: &Version, since: Instant, from: &str, why: &str) -> Round {
    let (latency, probes) = first_reply(server.addr(), version, since).await;
    let load = load_of(server, version, from, why);
    Round {
        latency,
        probes,
        load,
    }
}

/// Prints a case's p50 and max rows; returns its p50 latency.
fn summarize(table: &Table, label: &str, rounds: &[Round]) -> Duration {
    let sorted = |f: &dyn Fn(&Round) -> f64| {
        let mut values: Vec<f64> = rounds.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values
    };
    let mut latencies: Vec<Duration> = rounds.iter().map(|r| r.latency).collect();
    latencies.sort();
    let probes = sorted(&|r| r.probes as f64);
    let compile = sorted(&|r| r.load.compile_ms);
    let ready = sorted(&|r| r.load.ready_ms);
    for (name, p) in [("p50", 0.5), ("max", 1.0)] {
        table.row(
            &format!("{name} {label}"),
            "",
            &[
                millis(percentile(&latencies, p)),
                format!("{:.0}", percentile(&probes, p)),
                String::new(),
                format!("{:.1}", percentile(&compile, p)),
                format!("{:.1}", percentile(&ready, p)),
            ],
        );
    }
    percentile(&latencies, 0.5)
}

/// Scenario 6: hot reload, compiled and from the cache, against a restart.
pub async fn scenario(bench: &Bench, summary: &mut Summary) {
    let rounds = bench.plan.reload_rounds;
    // The cached case starts on the cold case's last version: an even count
    // makes its first version the other base, so the swap can be told.
    assert!(
        rounds.is_multiple_of(2) && rounds > 0,
        "reload rounds must be even"
    );
    println!();
    println!(
        "6. hot reload: {rounds} versions of {ROUTE} per case, alternately counter.wasm and \
         echo.wasm, each made unique by a custom section; latency from the rename into berth's \
         plugin folder (watched, {} ms debounce) to the first reply from the new version on a \
         new connection (a new probe every ~{} ms). \"compiled\": compile cache emptied first; \
         \"from cache\": the same versions again; \"restart\": SIGTERM, then a new berth with the \
         version in place and the warm cache, timed from the start command",
        DEBOUNCE_MS,
        RETRY.as_millis()
    );
    let folders = Folders::new();
    let versions: Vec<Version> = (0..rounds)
        .map(|round| Version::new(Base::of_round(round), &format!("round {round}")))
        .collect();
    let mut server = folders.start_berth();
    // A first version, untimed, so that every timed round replaces a running
    // one rather than adding a route, and berth's one-time set-up is done.
    let warm_up = Version::new(Base::Echo, "warm-up");
    assert_ne!(warm_up.base, versions[0].base);
    let renamed = folders.install(&warm_up);
    first_reply(server.addr(), &warm_up, renamed).await;

    let table = Table::new(&["latency", "probes", "from", "compile_ms", "ready_ms"]);
    let mut compiled = Vec::with_capacity(rounds);
    for (index, version) in versions.iter().enumerate() {
        folders.set_cache_aside();
        let renamed = folders.install(version);
        let why = "its bytes are new and the compile cache was emptied";
        let figures = round(&server, version, renamed, "compiled", why).await;
        table.row(COMPILED, &(index + 1).to_string(), &figures.cells());
        compiled.push(figures);
    }

    // Every version's entry goes back in the cache. None of them is in
    // berth's memory any more, or it would be reused from there: each was
    // replaced at least one round ago, and every probe it served was closed
    // (the server's close awaited) before the next, so its workers have ended.
    folders.restore_cache();
    let mut cached = Vec::with_capacity(rounds);
    for (index, version) in versions.iter().enumerate() {
        let renamed = folders.install(version);
        let why = "its entry is in the cache and no running version uses these bytes";
        let figures = round(&server, version, renamed, "cache", why).await;
        table.row(CACHED, &(index + 1).to_string(), &figures.cells());
        cached.push(figures);
    }

    // The baseline: the same versions, each brought in by a restart.
    let mut restarted = Vec::with_capacity(rounds);
    let mut stops = Vec::with_capacity(rounds + 1);
    let mut notes = Vec::new();
    for (index, version) in versions.iter().enumerate() {
        let (stopped_in, stopped_notes) = server.terminate();
        stops.push(stopped_in);
        notes.extend(stopped_notes);
        // Nothing watches the folder now: the new berth finds the file there.
        folders.install(version);
        let started = Instant::now();
        server = folders.start_berth();
        let why = "a restart with a warm cache loads from it";
        let figures = round(&server, version, started, "cache", why).await;
        table.row(RESTART, &(index + 1).to_string(), &figures.cells());
        restarted.push(figures);
    }
    let (stopped_in, stopped_notes) = server.terminate();
    stops.push(stopped_in);
    notes.extend(stopped_notes);

    summarize(&table, COMPILED, &compiled);
    let cached_p50 = summarize(&table, CACHED, &cached);
    let restart_p50 = summarize(&table, RESTART, &restarted);
    table.row(
        &format!("  {CACHED} / restart"),
        "",
        &[ratio_of(cached_p50, restart_p50)],
    );
    stops.sort();
    println!(
        "  stopping berth for a restart (SIGTERM until it exited; not counted above): \
         p50 {}, max {}",
        millis(percentile(&stops, 0.5)),
        millis(percentile(&stops, 1.0))
    );
    summary.check(
        "6. hot reload from cache",
        "latency p50",
        cached_p50.as_secs_f64() * 1e3,
        Goal::AtMost(TARGET.as_secs_f64() * 1e3),
        "ms",
    );
    println!(
        "  reload with cache p50 <= {} ms: {}",
        TARGET.as_millis(),
        if cached_p50 <= TARGET {
            "met"
        } else {
            "NOT met"
        }
    );
    if !notes.is_empty() {
        println!("  berth's stderr in this scenario besides plugin loads:");
        for note in notes {
            println!("{note}");
        }
    }
}
