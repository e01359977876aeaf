//! The Avaya IP Office R11 DevLink3 simulator (issue 4). Not built yet.

/// Command-line arguments of `pbx-sim avaya-r11`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50797")]
    pub listen: std::net::SocketAddr,
}

/// Runs `pbx-sim avaya-r11` until interrupted.
pub async fn run_cli(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("the DevLink3 simulator is not built yet")
}
