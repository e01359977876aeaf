//! `pbx-listener status`: the running daemon's state from its admin endpoint (`/status`),
//! readable or as JSON, with Nagios exit codes: 0 ok, 1 degraded, 2 down, 3 unknown (the
//! daemon cannot be reached).

use std::fmt::Write as _;
use std::time::Duration;

use crate::admin_client;
use crate::cli::StatusArgs;
use crate::status::StatusReport;

/// Nagios UNKNOWN.
pub const EXIT_UNKNOWN: u8 = 3;

/// How long to wait for the daemon.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the command; returns the exit code.
pub async fn run(args: &StatusArgs, config: &std::path::Path) -> u8 {
    let addr = match admin_client::admin_addr(args.admin, config) {
        Ok(a) => a,
        Err(e) => {
            println!("pbx-listener UNKNOWN: {e:#}");
            return EXIT_UNKNOWN;
        }
    };
    let text = match admin_client::get_text(addr, "/status", TIMEOUT).await {
        Ok(t) => t,
        Err(e) => {
            println!("pbx-listener UNKNOWN: cannot reach the daemon's admin endpoint at {addr}: {e:#}");
            return EXIT_UNKNOWN;
        }
    };
    let report: StatusReport = match serde_json::from_str(&text) {
        Ok(r) => r,
        Err(e) => {
            println!("pbx-listener UNKNOWN: {addr}/status is not a status report ({e}); is that pbx-listener?");
            return EXIT_UNKNOWN;
        }
    };
    if args.json {
        print!("{text}");
    } else {
        print!("{}", render(&report));
    }
    report.verdict.exit_code()
}

/// The readable report. The first line is the Nagios summary.
pub fn render(r: &StatusReport) -> String {
    let mut out = String::new();
    let first = match r.problems.first() {
        Some(p) if r.problems.len() > 1 => format!("{p} (and {} more)", r.problems.len() - 1),
        Some(p) => p.clone(),
        None => format!("{} PBX link(s) up, delivering", r.pbx.len()),
    };
    let _ = writeln!(out, "pbx-listener {}: {first}", r.verdict.label());
    let _ = writeln!(out, "  version {}, up {}", r.version, duration(r.uptime_secs));
    if !r.problems.is_empty() {
        let _ = writeln!(out, "\nProblems");
        for p in &r.problems {
            let _ = writeln!(out, "  - {p}");
        }
    }
    let ago = |ms: u64| format!("{} ago", duration(r.now_ms.saturating_sub(ms) / 1000));
    let _ = writeln!(out, "\nPBX links");
    if r.pbx.is_empty() {
        let _ = writeln!(out, "  (none configured)");
    }
    for (name, l) in &r.pbx {
        let state = match l.up_since_ms {
            Some(t) => format!("up for {}", duration(r.now_ms.saturating_sub(t) / 1000)),
            None => format!("{} for {}", l.state.as_str(), duration(r.now_ms.saturating_sub(l.since_ms) / 1000)),
        };
        let _ = write!(out, "  {name}: {state}, {} reconnect(s)", l.reconnects);
        match (&l.last_error, l.last_error_ms) {
            (Some(e), Some(t)) => {
                let _ = writeln!(out, ", last error {}: {e}", ago(t));
            }
            _ => out.push('\n'),
        }
    }
    let c = &r.correlation;
    let _ = writeln!(out, "\nCorrelation (calls since start)");
    let methods: Vec<String> = c.matched.iter().map(|(m, n)| format!("{m} {n}")).collect();
    let _ = writeln!(out, "  bound: {}", methods.join(", "));
    let _ = writeln!(
        out,
        "  no leg found: {} (of which ambiguous {}), late legs {}; no leg expected (internal, no leg source): {}",
        c.unmatched, c.ambiguous, c.late_legs, c.no_leg_expected
    );
    let _ = writeln!(
        out,
        "  legs learned {}, known now {}, expired {}; calls waiting for a leg {}",
        c.legs_learned, c.legs_known, c.expired_legs, c.calls_waiting
    );
    let _ = writeln!(out, "\nOutbox");
    match &r.outbox {
        Some(o) => {
            let oldest = o.oldest_pending_age_secs.map_or_else(|| "none".to_owned(), duration);
            let _ = writeln!(
                out,
                "  {} pending ({}), oldest {oldest}; {} quarantined; {} dropped at the cap since created",
                o.pending_events,
                bytes(o.pending_bytes),
                o.quarantined_events,
                o.dropped_total
            );
        }
        None => {
            let _ = writeln!(out, "  (its counts could not be read; see the daemon's log)");
        }
    }
    let d = &r.delivery;
    let _ = writeln!(out, "\nDelivery");
    let _ = writeln!(out, "  {}", d.detail);
    let last = d.last_success_ms.map_or_else(|| "never".to_owned(), ago);
    let _ = writeln!(
        out,
        "  {} delivered ({:.2}/s over the last minute), {} retried, {} rejected; last success {last}",
        d.delivered, d.rate_per_sec, d.retried, d.quarantined
    );
    if let Some(e) = &d.last_error {
        let status = e.status.map_or_else(|| "network".to_owned(), |s| format!("HTTP {s}"));
        let _ = writeln!(out, "  last error {} ({status}, {}): {}", ago(e.at_ms), e.outcome, e.error);
    }
    let _ =
        writeln!(out, "\nTail: {} client(s), {} event(s) missed by slow clients", r.tail.clients, r.tail.lagged_events);
    out
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_well() {
        assert_eq!(duration(12), "12s");
        assert_eq!(duration(250), "4m 10s");
        assert_eq!(duration(7500), "2h 5m");
        assert_eq!(duration(3 * 86_400 + 4 * 3600 + 5), "3d 4h");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3584), "3.5 KiB");
        assert_eq!(bytes(5 * 1_048_576), "5.0 MiB");
    }
}
