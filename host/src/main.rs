//! The `berth` command line.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use berth::config::Overrides;
use berth::{Config, ServeOptions, Server};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;

/// jemalloc, so that what a burst of traffic made berth allocate goes back to
/// the system once it is freed; the README's Performance section has the
/// measurements that chose it over the system allocator and mimalloc.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read when it starts: a background thread returns
/// freed pages after a second (`dirty_decay_ms`) instead of the default ten,
/// and skips the lazy "muzzy" stage, so that memory comes back even when the
/// threads that freed it go quiet.
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// berth: a WebSocket port listener whose handlers are WebAssembly components.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve WebSocket routes (the built-in demo when no config file is given).
    Serve(ServeArgs),
    /// Check that a plugin implements berth's world and list what it imports.
    /// Exits 0 when it fits, 1 when it does not, 2 when the file is not a component.
    Check {
        /// The plugin file (.wasm).
        file: PathBuf,
        /// Where compiled plugins are cached (default: ~/.cache/berth).
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
    /// Write a new plugin project that builds with one command.
    New {
        /// The plugin's name: lower-case letters, digits and '-'.
        name: String,
        /// The language to write it in.
        #[arg(long, value_enum, default_value_t = Lang::Rust)]
        lang: Lang,
        /// The folder to create the project in (default: ./NAME).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// The options of `berth serve`.
#[derive(Args)]
struct ServeArgs {
    /// The TOML config file (watched: a valid change applies at once).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The address to listen on, overriding the config file.
    #[arg(long, short)]
    listen: Option<SocketAddr>,
    /// The demo's drop-in folder: NAME.wasm put there is served at /NAME
    /// (default: ~/.local/share/berth/plugins). With a config file, set
    /// `plugin-dir` and `auto-routes` in it instead.
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    plugin_dir: Option<PathBuf>,
    /// Where compiled plugins are cached (default: ~/.cache/berth).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Where topic history and the plugins' key-value stores are kept
    /// (default: `state` beside the plugin folder; `state-dir` in a config).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Do not watch plugin files and the config file; reload only on SIGHUP.
    #[arg(long)]
    no_watch: bool,
    /// How log lines are written to stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// One readable line per event, as a terminal shows it.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve_command(args),
        Command::Check { file, cache_dir } => {
            // Only problems are worth a log line here; the report is the output.
            init_logging(LogFormat::Human, LevelFilter::WARN);
            check(&file, cache_dir)
        }
        Command::New { name, lang, dir } => {
            init_logging(LogFormat::Human, LevelFilter::WARN);
            new(&name, lang, dir).map_or_else(
                |error| {
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                },
                |()| ExitCode::SUCCESS,
            )
        }
    }
}

/// `berth serve`: the config, then logging as it asks, then the server.
fn serve_command(args: ServeArgs) -> ExitCode {
    let log_format = args.log_format;
    // The config names the log level, so it is read before logging starts;
    // an error reading it is logged like any other, in the chosen format.
    let prepared = prepare(args);
    let level = prepared
        .as_ref()
        .map_or(LevelFilter::INFO, |(config, _)| config.startup.log_level);
    init_logging(log_format, level);
    match prepared.and_then(|(config, options)| run(config, options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if log_format == LogFormat::Json && tracing::enabled!(tracing::Level::ERROR) {
                tracing::error!("{error:#}");
            } else {
                eprintln!("error: {error:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Sets up logging to stderr in `format`: at the level `RUST_LOG` asks for
/// when it is set, else at `level` (the config's `log-level`).
fn init_logging(format: LogFormat, level: LevelFilter) {
    // The state store's database reports every keyspace it opens or
    // recovers at info; berth says once that the store is open, so the
    // database speaks only of trouble unless RUST_LOG asks for more.
    let quiet = level.min(LevelFilter::WARN);
    let from_config = || EnvFilter::new(format!("{level},fjall={quiet},lsm_tree={quiet}"));
    let mut bad_env = None;
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|error| {
            bad_env = Some(format!(
                "RUST_LOG={spec:?} is not valid ({error}); logging at {level} instead"
            ));
            from_config()
        }),
        _ => from_config(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => {
            let subscriber = builder.with_ansi(std::io::stderr().is_terminal()).finish();
            tracing::subscriber::set_global_default(subscriber).expect("the first subscriber");
        }
        LogFormat::Json => {
            // The connection span (debug level) is the only span: its fields
            // once under "span" are enough, without a list of one.
            let subscriber = builder
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("the first subscriber");
        }
    }
    // Dependencies that log through the `log` crate reach the same output, but
    // only up to debug: tungstenite logs several trace lines per frame, which
    // any trace directive in RUST_LOG (berth's own included) would otherwise
    // forward, at a cost per frame of every connection.
    tracing_log::LogTracer::builder()
        .with_max_level(tracing_log::log::LevelFilter::Debug)
        .init()
        .expect("the first logger");
    if let Some(warning) = bad_env {
        tracing::warn!("{warning}");
    }
}

/// Reads the config (or makes the demo's) and the options to serve it with.
fn prepare(args: ServeArgs) -> anyhow::Result<(Config, ServeOptions)> {
    let ServeArgs {
        config: config_file,
        listen,
        plugin_dir,
        cache_dir,
        state_dir,
        no_watch,
        log_format: _,
    } = args;
    let overrides = Overrides {
        listen,
        cache_dir,
        state_dir,
    };
    let mut config = match &config_file {
        Some(path) => Config::load(path)?,
        None => {
            let dir = plugin_dir.unwrap_or_else(berth::demo::default_plugin_dir);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create the plugin folder {}", dir.display()))?;
            berth::demo::config(berth::config::DEFAULT_LISTEN.parse()?, dir)
        }
    };
    overrides.apply(&mut config);
    let options = ServeOptions {
        config_file,
        overrides,
        watch: !no_watch,
    };
    Ok((config, options))
}

fn run(config: Config, options: ServeOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(serve(config, options))
}

async fn serve(config: Config, options: ServeOptions) -> anyhow::Result<()> {
    let server = Server::bind_with(config, options).await?;
    let addr = server.local_addr();
    let routes = server.routes();
    let mut banner = format!("berth {} listening on {addr}\n", env!("CARGO_PKG_VERSION"));
    if server.serves_demo_page() {
        banner.push_str(&format!(
            "  open http://{addr}/ in a browser for the chat demo\n"
        ));
    }
    for (other, tls) in server.local_addrs().into_iter().skip(1) {
        let scheme = if tls { "wss" } else { "ws" };
        banner.push_str(&format!("  also listening on {other} ({scheme}://)\n"));
    }
    let scheme = if server.local_addrs()[0].1 {
        "wss"
    } else {
        "ws"
    };
    for (path, plugin) in &routes {
        banner.push_str(&format!("  {scheme}://{addr}{path}  ->  {plugin}\n"));
    }
    if routes.is_empty() {
        banner.push_str("  (no routes yet)\n");
    }
    if let Some(folder) = server.drop_in_folder() {
        banner.push_str(&format!(
            "  drop NAME.wasm into {} to serve it at ws://{addr}/NAME\n",
            std::path::absolute(folder)
                .unwrap_or_else(|_| folder.to_path_buf())
                .display()
        ));
    }
    if server.serves_publish_api() {
        let scheme = if scheme == "wss" { "https" } else { "http" };
        banner.push_str(&format!(
            "  publish: POST {scheme}://{addr}/publish/NAMESPACE/TOPIC with a bearer token\n"
        ));
    }
    let admin = server.admin_addr().unwrap_or(addr);
    banner.push_str(&format!("  health: http://{admin}/healthz\n"));
    banner.push_str(&format!("  metrics: http://{admin}/metrics\n"));
    // A closed stdout (say, piped into `head`) must not take the server down.
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(banner.as_bytes())
        .and_then(|()| stdout.flush());
    drop(stdout);
    let reload = server.reload_handle();
    tokio::spawn(async move {
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config and plugins");
            reload.reload();
        }
    });
    server.run(shutdown_signal()).await;
    Ok(())
}

/// `berth check`: prints the verdict and what the plugin imports; the exit
/// code is 0 when it fits, 1 when it does not, 2 when it is not a component.
fn check(file: &Path, cache_dir: Option<PathBuf>) -> ExitCode {
    let shown = file.display();
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(error) => {
            eprintln!("{shown}: cannot read: {error}");
            return ExitCode::from(2);
        }
    };
    let mut report = match berth::check::check(&bytes) {
        Ok(report) => report,
        Err(error) => {
            println!("{shown}: {error}");
            return ExitCode::from(2);
        }
    };
    if report.fits() {
        // The decoded types say it fits; linking it as `serve` would is the
        // final word (a WASI function newer than this berth's, say).
        let cache_dir = cache_dir.or_else(berth::folders::default_cache_dir);
        if let Err(error) = berth::runtime::link_check(&shown.to_string(), &bytes, cache_dir) {
            report.problems.push(error.to_string());
        }
    }
    let mut out = String::new();
    if report.fits() {
        out.push_str(&format!("{shown}: fits {}\n", berth::check::WORLD));
    } else {
        out.push_str(&format!("{shown}: does not fit {}\n", berth::check::WORLD));
        for problem in &report.problems {
            out.push_str(&format!("  - {problem}\n"));
        }
    }
    out.push_str("It asks the host for:\n");
    out.push_str(&describe(&report.imports));
    out.push_str("It offers:\n");
    out.push_str(&describe(&report.exports));
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    if report.fits() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// One line per capability, with the interfaces that ask for it: an operator
/// reads "files" once, not once per WASI interface that deals in files.
/// berth's own interfaces also name the functions used.
fn describe(items: &[berth::check::Item]) -> String {
    let mut lines: Vec<(String, Vec<&str>)> = Vec::new();
    for item in items {
        let mut what = item.meaning.unwrap_or("not provided by berth").to_string();
        if item.name.starts_with("berth:") && !item.functions.is_empty() {
            what = format!("{what}: {}", item.functions.join(", "));
        }
        match lines.iter_mut().find(|(line, _)| *line == what) {
            Some((_, names)) => names.push(&item.name),
            None => lines.push((what, vec![&item.name])),
        }
    }
    if lines.is_empty() {
        return "  (nothing)\n".to_string();
    }
    lines
        .iter()
        .map(|(what, names)| format!("  {what}\n      {}\n", names.join(", ")))
        .collect()
}

/// `berth new`: writes the project and says how to build it.
fn new(name: &str, lang: Lang, dir: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    let project = berth::scaffold::write(name, lang.into(), &dir)?;
    let mut out = format!("wrote {} ({}):\n", dir.display(), project.lang);
    for file in &project.files {
        out.push_str(&format!("  {}\n", file.display()));
    }
    out.push_str(&format!(
        "build it:\n  cd {} && {}\ncheck it (in that folder):\n  berth check {}\n",
        dir.display(),
        project.build_command,
        project.output.display()
    ));
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(())
}

/// The languages `berth new` writes projects in.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Lang {
    Rust,
    Js,
    Python,
}

impl From<Lang> for berth::scaffold::Lang {
    fn from(lang: Lang) -> Self {
        match lang {
            Lang::Rust => berth::scaffold::Lang::Rust,
            Lang::Js => berth::scaffold::Lang::JavaScript,
            Lang::Python => berth::scaffold::Lang::Python,
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
