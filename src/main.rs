//! The `switchboard` command: `serve` (default) and `check`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use switchboard::config::{self, LogFormat};
use tracing::{error, info};

/// SIP-over-WebSocket gateway and B2BUA: registrar, proxy, media mixer and
/// TURN in one binary.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about)]
struct Cli {
    /// Configuration file (default: ./switchboard.yaml when present, else built-in defaults).
    #[arg(long, short = 'c', global = true, env = "SWITCHBOARD_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `info,switchboard::sip=debug` (RUST_LOG wins when set).
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// Log format.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Validate the configuration and report every problem as FILE:LINE:COLUMN.
    Check,
    /// Check dialplans, dry-run calls through them, print their JSON Schema.
    Dialplan {
        #[command(subcommand)]
        command: switchboard::dialplan::cli::DialplanCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.as_ref().unwrap_or(&Command::Serve) {
        Command::Check => check(&cli),
        Command::Dialplan { command } => switchboard::dialplan::cli::run(command, cli.config.as_deref()),
        Command::Serve => match serve(&cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!("{e:#}");
                eprintln!("switchboard: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn check(cli: &Cli) -> ExitCode {
    match config::load(cli.config.as_deref()) {
        Ok(loaded) => {
            println!("{}: configuration OK", loaded.source);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(cli: &Cli) -> anyhow::Result<()> {
    let loaded = match config::load(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            anyhow::bail!("invalid configuration");
        }
    };
    let level = cli.log_level.clone().unwrap_or_else(|| loaded.config.log.level.clone());
    switchboard::logging::init(&level, cli.log_format.unwrap_or(loaded.config.log.format));
    info!(version = env!("CARGO_PKG_VERSION"), config = %loaded.source, "starting switchboard");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let running = switchboard::server::start(&loaded).await?;
        info!(listeners = running.listeners.len(), "ready");
        wait_for_shutdown().await;
        info!("shutting down");
        running.shutdown();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        Ok(())
    })
}

async fn wait_for_shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
