//! The command line (clap derive).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{DEFAULT_PATH, LogFormat};

/// pbx-listener: turns your PBX's call signals into Level 3 Generic Events, correlates them to
/// the platform's legs and forwards them durably.
#[derive(Debug, Parser)]
#[command(name = "pbx-listener", version, propagate_version = true)]
pub struct Cli {
    /// The configuration file.
    #[arg(long, short, global = true, env = "PBX_LISTENER_CONFIG", default_value = DEFAULT_PATH)]
    pub config: PathBuf,

    /// Log format (overrides `[log] format`).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,

    /// Log filter such as `info` or `debug` (overrides `[log] level`; `RUST_LOG` overrides both).
    #[arg(long, global = true)]
    pub log_level: Option<String>,

    /// What to do (default: `run`).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (the default).
    Run,
    /// Check a configuration file offline: exit 0, or 78 with every error (file:line:col).
    CheckConfig {
        /// The file to check (default: `--config`).
        path: Option<PathBuf>,
    },
    /// Run simulated PBXs and print their Level 3 events as JSON lines on stdout. No setup.
    Demo(DemoArgs),
    /// Inspect and maintain the outbox (safe while the daemon runs).
    Outbox(OutboxArgs),
    /// The running daemon's state, from its admin endpoint. Exit code as a Nagios check:
    /// 0 ok, 1 degraded, 2 down, 3 unknown (the daemon cannot be reached).
    Status(StatusArgs),
    /// The Level 3 events the running daemon commits, live, from its admin endpoint.
    Tail(TailArgs),
    /// Reload the running daemon's configuration (SIGHUP) and wait for its verdict: exit 0 when
    /// applied, 78 when the file has errors, 1 when it needs a restart or a part failed (what
    /// `systemctl reload` runs).
    Reload(ReloadArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one per command into a directory (packaging).
    #[command(hide = true)]
    Man {
        /// Write `pbx-listener.1` and `pbx-listener-<command>.1` here instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// `status` options.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The admin endpoint (default: `[admin] listen` of `--config`, else 127.0.0.1:9187).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// Print the report as JSON (the admin endpoint's `/status`).
    #[arg(long)]
    pub json: bool,
}

/// `reload` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ReloadArgs {
    /// The daemon's process id (systemd passes `$MAINPID`).
    #[arg(long, value_name = "PID")]
    pub pid: u32,
    /// The admin endpoint where the verdict is read (default: `[admin] listen` of `--config`,
    /// else 127.0.0.1:9187). Without an admin endpoint the signal is sent and not confirmed.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// How long to wait for the verdict, in seconds.
    #[arg(long = "timeout", value_name = "SECS", default_value_t = 30)]
    pub timeout_secs: u64,
}

/// `tail` options.
#[derive(Debug, Clone, clap::Args)]
pub struct TailArgs {
    /// The admin endpoint (default: `[admin] listen` of `--config`, else 127.0.0.1:9187).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// Only events of these extensions (repeat, or separate with commas).
    #[arg(long, value_delimiter = ',')]
    pub extension: Vec<String>,
    /// Only events of these PBXs (`[[pbx]] name`).
    #[arg(long, value_delimiter = ',')]
    pub pbx: Vec<String>,
    /// Only events with these statuses (`ringing`, `connected`, `disconnected`, …).
    #[arg(long, value_delimiter = ',')]
    pub status: Vec<String>,
    /// Exit 0 after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// `json`: each event as the platform receives it, one per line; `text`: one readable line.
    #[arg(long, value_enum, default_value_t = TailFormat::Json)]
    pub format: TailFormat,
}

/// How `tail` prints events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TailFormat {
    /// JSON lines.
    Json,
    /// Readable lines.
    Text,
}

/// `demo` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Exit 0 after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Only simulate this PBX type (default: every type the demo simulates, at once).
    #[arg(long, value_name = "TYPE")]
    pub pbx: Option<String>,
    /// Derive the platform's call sids from this number, so that two runs give the same sids
    /// (timestamps, and the childSids derived from them, are the clock's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also deliver the events, through the real outbox and forwarder, to this URL (https://,
    /// or http:// to a loopback address), signed per Standard Webhooks.
    #[arg(long, value_name = "URL")]
    pub forward_to: Option<String>,
    /// The `whsec_` secret to sign with (default: the public demo secret, printed at start).
    #[arg(long, value_name = "PATH", requires = "forward_to")]
    pub signing_secret_file: Option<PathBuf>,
    /// Where to keep the outbox (default: a temporary directory, removed at exit).
    #[arg(long, value_name = "DIR", requires = "forward_to")]
    pub data_dir: Option<PathBuf>,
    /// With `--count` and `--forward-to`: fail if the events are not all delivered within this
    /// many seconds.
    #[arg(long = "timeout", value_name = "SECS", default_value_t = 60)]
    pub timeout_secs: u64,
}

/// `outbox` options.
#[derive(Debug, clap::Args)]
pub struct OutboxArgs {
    /// The outbox directory (default: `[outbox] data_dir` of `--config`).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: OutboxCommand,
}

/// `outbox` subcommands.
#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Counts, bytes, the oldest pending event's age, and totals since the outbox was created.
    Stats {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Pending and quarantined events, with attempts and the last error.
    List {
        #[command(flatten)]
        which: Which,
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// As JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Every event as a JSON line, its stored body included, on stdout.
    Export {
        #[command(flatten)]
        which: Which,
    },
    /// Delete events for good.
    Purge {
        /// Every event, pending and quarantined.
        #[arg(long)]
        all: bool,
        /// The quarantined events.
        #[arg(long)]
        quarantined: bool,
        /// Events created longer ago than this (`90s`, `30m`, `12h`, `7d`).
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
    /// Move quarantined events back into delivery (after the platform was fixed).
    RequeueQuarantined,
}

/// Which events a listing covers (default: both).
#[derive(Debug, clap::Args)]
pub struct Which {
    /// Only events waiting for delivery.
    #[arg(long, conflicts_with = "quarantined")]
    pub pending: bool,
    /// Only quarantined events.
    #[arg(long)]
    pub quarantined: bool,
}
