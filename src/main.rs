//! The `switchboard` command: `serve` (default) and `check`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use switchboard::config::{self, LogFormat};
use tracing::{error, info};

/// mimalloc instead of the system allocator: SIP messages, transactions and
/// per-call state are many small short-lived allocations across threads,
/// where glibc malloc spent about a quarter of the B2BUA's CPU
/// (docs/benchmarks.md, issue 6).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Serve the web front end from this directory instead of the copy built into the binary
    /// (front-end development: `cd web && npm run watch`, then `--web-root web/dist`).
    #[arg(long, global = true, env = "SWITCHBOARD_WEB_ROOT", value_name = "DIR")]
    web_root: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Validate the configuration and report every problem as FILE:LINE:COLUMN.
    Check,
    /// Ask the running server (through its admin listener) to reload the dialplan.
    Reload,
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
        Command::Reload => reload(&cli),
        Command::Dialplan { command } => {
            switchboard::dialplan::cli::run(command, cli.config.as_deref())
        }
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
    let loaded = match config::load(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}: configuration OK", loaded.source);
    if let Some(file) = loaded.config.trunks.file()
        && file.file.exists()
    {
        println!(
            "{}: trunks OK ({} trunks)",
            file.file.display(),
            loaded.trunks.len()
        );
    }
    // The dialplan the configuration names, checked the way the server loads it.
    let trunks: Vec<String> = loaded.trunks.iter().map(|t| t.name.clone()).collect();
    let groups = loaded
        .config
        .domains
        .iter()
        .flat_map(|d| d.users.iter().flat_map(|u| u.value.groups.iter().cloned()))
        .collect();
    match switchboard::routing::Routing::load(
        &loaded.config.dialplan.file,
        trunks,
        groups,
        Default::default(),
    ) {
        Ok(routing) => {
            println!(
                "{}: dialplan OK ({} rules)",
                loaded.config.dialplan.file.display(),
                routing.current().rule_count()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            for diagnostic in &e.0 {
                eprintln!("{diagnostic}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `switchboard reload`: POST /api/reload on the first admin listener.
fn reload(cli: &Cli) -> ExitCode {
    use std::io::{Read, Write};
    let loaded = match config::load(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(admin) = loaded.listeners.admin.first().copied() else {
        eprintln!(
            "switchboard reload: no admin listener configured (listen.admin); send SIGHUP instead"
        );
        return ExitCode::FAILURE;
    };
    let mut stream =
        match std::net::TcpStream::connect_timeout(&admin, std::time::Duration::from_secs(3)) {
            Ok(stream) => stream,
            Err(e) => {
                eprintln!("switchboard reload: cannot reach {admin}: {e}");
                return ExitCode::FAILURE;
            }
        };
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let _ = write!(
        stream,
        "POST /api/reload HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"
    );
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let ok = response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or(&response);
    if ok {
        print!("{body}");
        ExitCode::SUCCESS
    } else {
        eprint!("{body}");
        ExitCode::FAILURE
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
    let level = cli
        .log_level
        .clone()
        .unwrap_or_else(|| loaded.config.log.level.clone());
    switchboard::logging::init(&level, cli.log_format.unwrap_or(loaded.config.log.format));
    info!(version = env!("CARGO_PKG_VERSION"), config = %loaded.source, "starting switchboard");
    if let Some(dir) = &cli.web_root {
        switchboard::http::web::set_web_root(dir)?;
        info!(dir = %dir.display(), "serving the web front end from a directory (--web-root)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let running = switchboard::server::start(&loaded).await?;
        info!(listeners = running.listeners.len(), "ready");
        wait_for_shutdown().await;
        info!("shutting down");
        running.stop_trunks(std::time::Duration::from_secs(5)).await;
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
