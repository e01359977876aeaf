//! `pbx-listener outbox …`: inspect and maintain the outbox, safe while the daemon runs (its
//! own SQLite connection; WAL lets it read while the daemon writes).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use outbox::{EventRow, Inspector, Purge, RowState, Selection};

use crate::cli::{OutboxArgs, OutboxCommand, Which};
use listener_kit::clock::now;
use outbox::OUTBOX_FILE;

/// Runs one `outbox` subcommand. `config` is only read for `[outbox] data_dir` (no secrets are
/// loaded, so this works where the daemon's credentials are not readable).
pub fn run(args: &OutboxArgs, config: &Path) -> anyhow::Result<()> {
    let dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => crate::config::outbox_dir(config)?,
    };
    let path = dir.join(OUTBOX_FILE);
    if !path.exists() {
        bail!("no outbox at {} (is `[outbox] data_dir` right? pass --data-dir to choose)", path.display());
    }
    let mut inspector = Inspector::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = std::io::stdout().lock();
    match &args.command {
        OutboxCommand::Stats { json } => {
            let stats = inspector.stats()?;
            if *json {
                writeln!(out, "{}", serde_json::to_string_pretty(&stats)?)?;
            } else {
                let age = stats.oldest_pending_age_ms(now().0).map_or("-".into(), human_ms);
                writeln!(out, "outbox            {}", path.display())?;
                writeln!(out, "schema            v{}", stats.schema_version)?;
                writeln!(out, "pending           {} events, {} bytes", stats.pending_events, stats.pending_bytes)?;
                writeln!(out, "oldest pending    {age}")?;
                writeln!(
                    out,
                    "quarantined       {} events ({} unreadable), {} bytes",
                    stats.quarantined_events, stats.corrupt_quarantined_events, stats.quarantined_bytes
                )?;
                writeln!(out, "file              {} bytes", stats.file_bytes)?;
                writeln!(
                    out,
                    "totals            {} accepted, {} delivered, {} duplicates, {} dropped (oldest), {} refused (newest), {} purged",
                    stats.appended_total,
                    stats.delivered_total,
                    stats.duplicates_total,
                    stats.dropped_oldest_total,
                    stats.dropped_newest_total,
                    stats.purged_total
                )?;
            }
        }
        OutboxCommand::List { which, limit, json } => {
            let rows = inspector.list(selection(which), *limit)?;
            if *json {
                for row in &rows {
                    writeln!(out, "{}", serde_json::to_string(row)?)?;
                }
            } else {
                writeln!(
                    out,
                    "{:>8}  {:<36}  {:>6}  {:>8}  {:<11}  detail",
                    "seq", "id", "bytes", "attempts", "state"
                )?;
                for row in &rows {
                    writeln!(out, "{}", table_row(row))?;
                }
                if rows.is_empty() {
                    writeln!(out, "(none)")?;
                }
            }
        }
        OutboxCommand::Export { which } => {
            let n = inspector.export(selection(which), &mut out)?;
            eprintln!("exported {n} events");
        }
        OutboxCommand::Purge { all, quarantined, older_than, yes } => {
            let what = match (all, quarantined, older_than) {
                (true, false, None) => Purge::All,
                (false, true, None) => Purge::Quarantined,
                (false, false, Some(age)) => Purge::CreatedBefore(now().0.saturating_sub(parse_age_ms(age)?)),
                _ => bail!("choose exactly one of --all, --quarantined, --older-than AGE"),
            };
            if !yes {
                bail!("purging deletes events for good; add --yes to confirm");
            }
            let report = inspector.purge(what)?;
            writeln!(out, "purged {} pending and {} quarantined events", report.pending, report.quarantined)?;
        }
        OutboxCommand::RequeueQuarantined => {
            let n = inspector.requeue_quarantined()?;
            writeln!(out, "requeued {n} quarantined events; the daemon delivers them in order")?;
        }
    }
    Ok(())
}

fn selection(which: &Which) -> Selection {
    match (which.pending, which.quarantined) {
        (true, false) => Selection::Pending,
        (false, true) => Selection::Quarantined,
        _ => Selection::All,
    }
}

fn table_row(row: &EventRow) -> String {
    let (state, detail) = match &row.state {
        RowState::Pending { next_attempt_ms, last_error } => {
            let wait = next_attempt_ms.saturating_sub(now().0);
            let mut d = last_error.clone().unwrap_or_default();
            if wait > 0 {
                d = format!("next attempt in {}; {d}", human_ms(wait));
            }
            ("pending", d)
        }
        RowState::Quarantined { reason, status, detail, .. } => {
            let status = status.map(|s| format!("HTTP {s}: ")).unwrap_or_default();
            ("quarantined", format!("{reason:?}: {status}{}", detail.clone().unwrap_or_default()))
        }
    };
    format!(
        "{:>8}  {:<36}  {:>6}  {:>8}  {:<11}  {}",
        row.seq,
        row.id.as_deref().unwrap_or("?"),
        row.size,
        row.attempts,
        state,
        detail.replace('\n', " ")
    )
}

fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// `30m`, `12h`, `7d`, `90s`.
fn parse_age_ms(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().with_context(|| format!("{text:?} is not an age such as 30m, 12h or 7d"))?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => bail!("{text:?} is not an age such as 30m, 12h or 7d"),
    };
    Ok(n.saturating_mul(unit_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(parse_age_ms("90s").unwrap(), 90_000);
        assert_eq!(parse_age_ms("7d").unwrap(), 7 * 86_400_000);
        assert!(parse_age_ms("7 weeks").is_err());
        assert!(parse_age_ms("d").is_err());
        assert_eq!(human_ms(3_723_000), "1h2m");
    }
}
