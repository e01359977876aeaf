//! The platform simulator (issue 3). Not built yet.

/// Command-line arguments of `pbx-sim platform`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
}

/// Runs `pbx-sim platform` until interrupted.
pub async fn run_cli(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("the platform simulator is not built yet")
}
