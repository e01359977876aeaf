//! `pbx-sim`: run one simulator from the command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Simulators of PBX feeds and of the platform, speaking the real protocols over real sockets.
#[derive(Debug, Parser)]
#[command(name = "pbx-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The platform: receives Level 3 events, verifies signatures, answers as scripted.
    Platform(pbx_sim::platform::Args),
    /// An Avaya IP Office R11 DevLink3 server playing scripted call scenarios.
    #[command(name = "avaya-r11")]
    AvayaR11(pbx_sim::avaya_r11::Args),
    /// An Avaya IP Office R9: SMDR (it listens, or connects to the collector) and a DevLink
    /// relay's Delta2 feed, playing scripted calls.
    #[command(name = "avaya-r9")]
    AvayaR9(pbx_sim::avaya_r9::Args),
    /// A 3CX V20 PBX: the Call Control API (HTTP/WS or HTTPS/WSS) and the CDR socket, playing
    /// scripted call scenarios.
    #[command(name = "3cx")]
    ThreeCx(pbx_sim::threecx::Args),
    /// Announce a B leg to pbx-listener as the platform does (a signed Level 2 event).
    Announce(pbx_sim::announce::Args),
    /// Drive the real pbx-listener at a chosen call rate and report throughput, latency,
    /// memory, start-up and the machine's limits; checks that every accepted event arrived.
    Load(pbx_sim::load::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pbx-sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Platform(args) => pbx_sim::platform::run_cli(args).await,
            Command::AvayaR11(args) => pbx_sim::avaya_r11::run_cli(args).await,
            Command::AvayaR9(args) => pbx_sim::avaya_r9::run_cli(args).await,
            Command::ThreeCx(args) => pbx_sim::threecx::run_cli(args).await,
            Command::Announce(args) => pbx_sim::announce::run_cli(args).await,
            Command::Load(args) => pbx_sim::load::run_cli(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pbx-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}
