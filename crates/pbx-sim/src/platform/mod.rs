//! The platform simulator: what pbx-listener's forwarder delivers to.
//!
//! - [`receiver`]: an HTTP server that takes Level 3 events (POST, any path), verifies their
//!   Standard Webhooks signatures, records every delivery and answers as scripted;
//! - [`script`]: the scripted answers (`503*3,429:retry-after=1,200`, dropped connections,
//!   delays).
//!
//! Tests, the demo and the benchmarks use the library API ([`Platform::start`]); the
//! `pbx-sim platform` subcommand runs the same server from the command line.

pub mod receiver;
pub mod script;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
pub use receiver::{Arrival, Delivery, Platform, PlatformConfig, SignatureCheck};
pub use script::{Reply, Script, ScriptError};

/// Command-line arguments of `pbx-sim platform`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// A `whsec_` secret to verify signatures with (repeat for a rotation). Without any,
    /// signatures are not checked.
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// A file holding a `whsec_` secret (repeatable).
    #[arg(long = "secret-file")]
    pub secret_files: Vec<PathBuf>,
    /// Scripted answers, e.g. `503*3,429:retry-after=1,drop,200:delay-ms=50`; after the
    /// script, 200 for ever.
    #[arg(long, default_value = "")]
    pub script: String,
    /// Append every delivery to this file as JSON lines.
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Accepted distance between `webhook-timestamp` and now, in seconds.
    #[arg(long, default_value_t = webhook_signature::DEFAULT_TOLERANCE_SECS)]
    pub tolerance_secs: u64,
}

/// Runs `pbx-sim platform` until interrupted.
pub async fn run_cli(args: Args) -> anyhow::Result<()> {
    let secrets = crate::secrets_from_args(&args.secrets, &args.secret_files)?;
    let script: Script = args.script.parse().context("--script")?;
    let config = PlatformConfig { secrets, script, record_to: args.record, tolerance_secs: args.tolerance_secs };
    let platform =
        Platform::start(args.listen, config).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(addr = %platform.addr(), "Platform simulator listening");
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    let deliveries = platform.deliveries();
    tracing::info!(
        requests = deliveries.len(),
        distinct = platform.distinct_accepted(),
        duplicates = platform.duplicates(),
        "Platform simulator stopping"
    );
    platform.stop().await;
    Ok(())
}
