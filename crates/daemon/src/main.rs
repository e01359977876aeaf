//! `pbx-listener`: the binary. Parses the command line, sets up logging and signals, and hands
//! over to the subcommand. Errors are printed with their whole chain (`{:#}`); a configuration
//! error exits 78 (EX_CONFIG), as systemd and `check-config` users expect.

/// With the `mimalloc` feature, mimalloc instead of the system allocator. Off by default: on
/// the daemon's loads glibc's malloc kept the smaller RSS (docs/decisions/0018,
/// docs/PERFORMANCE.md "Memory").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod admin_client;
mod admission;
mod cli;
mod config;
mod demo;
mod fault;
mod heap;
mod logging;
mod notify;
mod outbox_cli;
mod pbx_types;
mod pipeline;
mod reload;
mod reload_cli;
mod service;
mod sinks;
mod status;
mod status_cli;
mod tail;
mod tail_cli;
mod telemetry;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cli::{Cli, Command};

/// EX_CONFIG from sysexits.h.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Completions { shell }) => {
            clap_complete::generate(shell, &mut Cli::command(), "pbx-listener", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Some(Command::Man { ref out_dir }) => match man(out_dir.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pbx-listener: {e:#}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Status(ref args)) => {
            ExitCode::from(on_small_runtime(status_cli::run(args, &cli.config)).unwrap_or(status_cli::EXIT_UNKNOWN))
        }
        Some(Command::Reload(ref args)) => {
            ExitCode::from(on_small_runtime(reload_cli::run(args, &cli.config)).unwrap_or(1))
        }
        Some(Command::Tail(ref args)) => {
            ExitCode::from(on_small_runtime(tail_cli::run(args, &cli.config)).unwrap_or(status_cli::EXIT_UNKNOWN))
        }
        Some(Command::CheckConfig { ref path }) => {
            let path = path.clone().unwrap_or_else(|| cli.config.clone());
            check_config(&path)
        }
        Some(Command::Outbox(ref args)) => match outbox_cli::run(args, &cli.config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pbx-listener: {e:#}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Demo(ref args)) => {
            logging::init(cli.log_format.unwrap_or_default(), cli.log_level.as_deref());
            let args = args.clone();
            with_runtime(|shutdown| demo::run(args, shutdown))
        }
        None | Some(Command::Run) => {
            heap::limit_arenas();
            let config = match config::load(&cli.config) {
                Ok(c) => c,
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!("pbx-listener: the configuration has errors; nothing was started");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            logging::init(
                cli.log_format.unwrap_or(config.log.format),
                cli.log_level.as_deref().or(config.log.level.as_deref()),
            );
            for w in &config.warnings {
                warn!(warning = %w, "Configuration warning.");
            }
            let (reload_tx, reloads) = tokio::sync::mpsc::channel(1);
            with_runtime_and_reloads(Some(reload_tx), |shutdown| service::run(config, shutdown, reloads))
        }
    }
}

/// `man`: the man page from the command line's own definition, so it never drifts from
/// `--help`.
fn man(out_dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    use anyhow::Context;
    let command = Cli::command();
    match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(command, dir).with_context(|| format!("writing man pages to {}", dir.display()))
        }
        None => match clap_mangen::Man::new(command).render(&mut std::io::stdout()) {
            // `pbx-listener man | head` is fine.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            other => other.context("writing the man page"),
        },
    }
}

/// Runs a client command (`status`, `tail`) on a single-threaded runtime; `None` if the
/// runtime cannot start.
fn on_small_runtime<F: Future<Output = u8>>(f: F) -> Option<u8> {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => Some(rt.block_on(f)),
        Err(e) => {
            eprintln!("pbx-listener: cannot start the async runtime: {e}");
            None
        }
    }
}

/// `check-config`: offline, prints what would run, exit 0 or 78.
fn check_config(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            println!("{}: OK", path.display());
            print!("{}", config.summary());
            for w in &config.warnings {
                eprintln!("warning: {w}");
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            let n = errors.0.len();
            eprintln!("{}: {n} error{}", path.display(), if n == 1 { "" } else { "s" });
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Runs `f` on a multi-threaded runtime with SIGINT/SIGTERM wired to a cancellation token.
/// A second signal while shutting down exits at once. SIGHUP is ignored (with a word in the
/// log): only `run` reloads.
fn with_runtime<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    with_runtime_and_reloads(None, f)
}

/// [`with_runtime`], with each SIGHUP sent to `reloads` (a reload already waiting absorbs
/// another: the file is read once, as it is then).
fn with_runtime_and_reloads<F, Fut>(reloads: Option<tokio::sync::mpsc::Sender<()>>, f: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pbx-listener: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = tokio::spawn(watch_signals(shutdown.clone(), reloads));
        let result = f(shutdown).await;
        signals.abort();
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pbx-listener: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn watch_signals(shutdown: CancellationToken, reloads: Option<tokio::sync::mpsc::Sender<()>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        warn!("Cannot install signal handlers; stop with SIGKILL.");
        return;
    };
    let name = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            // Without a handler SIGHUP would kill us.
            _ = hup.recv() => match &reloads {
                Some(tx) => {
                    let _ = tx.try_send(());
                }
                None => warn!("SIGHUP: nothing to reload here."),
            },
        }
    };
    info!(signal = name, "Shutting down.");
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    warn!("Second signal: exiting now.");
    std::process::exit(130);
}
