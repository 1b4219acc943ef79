//! The `berth` command line.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use berth::{Config, Server};
use clap::{Parser, Subcommand};
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
        /// The TOML config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The address to listen on, overriding the config file.
        #[arg(long, short)]
        listen: Option<SocketAddr>,
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
    let Command::Serve { config, listen } = cli.command;
    let mut config = match &config {
        Some(path) => Config::load(path)?,
        None => berth::demo::config(berth::config::DEFAULT_LISTEN.parse()?),
    };
    if let Some(listen) = listen {
        config.listen = listen;
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let routes: Vec<(String, String)> = config
        .routes
        .iter()
        .map(|r| (r.path.clone(), r.plugin.display_name()))
        .collect();
    let server = Server::bind(config).await?;
    let addr = server.local_addr();
    let mut banner = format!("berth {} listening on {addr}\n", env!("CARGO_PKG_VERSION"));
    for (path, plugin) in &routes {
        banner.push_str(&format!("  ws://{addr}{path}  ->  {plugin}\n"));
    }
    if routes.is_empty() {
        banner.push_str("  (no routes configured)\n");
    }
    banner.push_str(&format!("  health: http://{addr}/healthz\n"));
    // A closed stdout (say, piped into `head`) must not take the server down.
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(banner.as_bytes())
        .and_then(|()| stdout.flush());
    drop(stdout);
    server.run(shutdown_signal()).await;
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("can install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
