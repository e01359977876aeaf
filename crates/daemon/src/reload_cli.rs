//! `pbx-listener reload`: sends SIGHUP to the running daemon and waits until its admin endpoint
//! reports the reload's outcome (`/status`, `lastReload`), so that `systemctl reload` fails when
//! the file has errors, with the errors in the journal. The daemon checks and applies the file
//! itself: only it can read the service's credentials.

use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};

use crate::admin_client;
use crate::cli::ReloadArgs;
use crate::status::{ReloadResult, StatusReport};

/// EX_CONFIG: the file has errors.
const EXIT_CONFIG: u8 = 78;

/// Runs the command; returns the exit code.
pub async fn run(args: &ReloadArgs, config: &std::path::Path) -> u8 {
    let admin = admin_client::admin_addr(args.admin, config).ok();
    // The reload answered before this one started must not be taken for this one's.
    let before = match admin {
        Some(addr) => last_reload_at(addr).await,
        None => None,
    };
    let Some(pid) = i32::try_from(args.pid).ok().and_then(Pid::from_raw) else {
        eprintln!("pbx-listener reload: {} is not a process id", args.pid);
        return 1;
    };
    if let Err(e) = kill_process(pid, Signal::HUP) {
        eprintln!("pbx-listener reload: cannot signal process {}: {e}", args.pid);
        return 1;
    }
    let Some(addr) = admin else {
        eprintln!("pbx-listener reload: SIGHUP sent; no admin endpoint to read the outcome from (see the log)");
        return 0;
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_secs);
    loop {
        if let Some(report) = status(addr).await
            && let Some(r) = report.last_reload
            && before.is_none_or(|b| r.at_ms > b)
        {
            for e in &r.errors {
                eprintln!("{e}");
            }
            println!("reload {}: {}", r.result.as_str(), r.summary);
            return match r.result {
                ReloadResult::Ok => 0,
                ReloadResult::Invalid => EXIT_CONFIG,
                ReloadResult::NeedsRestart | ReloadResult::Partial => 1,
            };
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "pbx-listener reload: SIGHUP sent; no outcome on {addr} within {} s (see the log)",
                args.timeout_secs
            );
            return 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status(addr: std::net::SocketAddr) -> Option<StatusReport> {
    let text = admin_client::get_text(addr, "/status", Duration::from_secs(5)).await.ok()?;
    serde_json::from_str(&text).ok()
}

async fn last_reload_at(addr: std::net::SocketAddr) -> Option<u64> {
    status(addr).await.and_then(|r| r.last_reload).map(|r| r.at_ms)
}
