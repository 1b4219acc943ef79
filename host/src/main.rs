//! The `berth` command line.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use berth::config::Overrides;
use berth::{Config, ServeOptions, Server};
use clap::{Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

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
    Serve {
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
        /// Do not watch plugin files and the config file; reload only on SIGHUP.
        #[arg(long)]
        no_watch: bool,
    },
}

fn main() -> ExitCode {
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the first subscriber");
    // Dependencies that log through the `log` crate reach the same output, but
    // only up to debug: tungstenite logs several trace lines per frame, and
    // with any trace directive in RUST_LOG (berth's own included) forwarding
    // them took a third of a busy server's CPU.
    tracing_log::LogTracer::builder()
        .with_max_level(tracing_log::log::LevelFilter::Debug)
        .init()
        .expect("the first logger");
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Command::Serve {
        config: config_file,
        listen,
        plugin_dir,
        cache_dir,
        no_watch,
    } = cli.command;
    let overrides = Overrides { listen, cache_dir };
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
    banner.push_str(&format!("  health: http://{addr}/healthz\n"));
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

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
