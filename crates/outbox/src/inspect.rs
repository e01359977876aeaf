//! Inspection and maintenance for the CLI, on its own connection: WAL lets it read while the
//! daemon writes, and its writes (purge, requeue) wait for the daemon's commits (busy
//! timeout) and keep the same totals and heads the daemon keeps.

use std::io::Write;
use std::path::Path;

use rusqlite::types::Value;
use rusqlite::{Connection, TransactionBehavior, params};
use serde::Serialize;

use crate::error::{OpenError, OutboxError};
use crate::store::{self, REASON_CORRUPT, REASON_REJECTED, Totals};

/// What the outbox holds and what it has done, as persisted (totals survive restarts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// `PRAGMA user_version` of the file.
    pub schema_version: i64,
    /// Events waiting for delivery.
    pub pending_events: u64,
    /// Their bytes, as counted against the cap.
    pub pending_bytes: u64,
    /// Events in the quarantine (rejected or corrupt).
    pub quarantined_events: u64,
    /// Their bytes, as counted against the cap.
    pub quarantined_bytes: u64,
    /// Of the quarantined events, those moved aside as unreadable.
    pub corrupt_quarantined_events: u64,
    /// `created_ms` of the oldest pending event.
    pub oldest_pending_created_ms: Option<u64>,
    /// When the earliest pending head may next be attempted.
    pub next_due_ms: Option<u64>,
    /// Events ever accepted.
    pub appended_total: u64,
    /// Events ever delivered.
    pub delivered_total: u64,
    /// Events evicted by `drop_oldest`.
    pub dropped_oldest_total: u64,
    /// Events refused by `drop_newest` (or larger than the cap).
    pub dropped_newest_total: u64,
    /// Appends of an id already stored.
    pub duplicates_total: u64,
    /// Rows found unreadable and moved to the quarantine.
    pub corrupt_total: u64,
    /// Events removed by `purge`.
    pub purged_total: u64,
    /// Database files found unreadable at open and moved aside.
    pub corrupt_databases_total: u64,
    /// Size of the database file plus its WAL.
    pub file_bytes: u64,
}

impl Stats {
    /// Age of the oldest pending event at `now_ms`.
    pub fn oldest_pending_age_ms(&self, now_ms: u64) -> Option<u64> {
        self.oldest_pending_created_ms.map(|t| now_ms.saturating_sub(t))
    }
}

pub(crate) fn stats(conn: &Connection) -> rusqlite::Result<Stats> {
    let totals = Totals::load(conn)?;
    let schema_version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let oldest: Option<i64> = conn
        .query_row("SELECT CAST(created_ms AS INTEGER) FROM events ORDER BY seq LIMIT 1", [], |r| r.get(0))
        .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })?;
    let corrupt: i64 =
        conn.query_row("SELECT COUNT(*) FROM quarantine WHERE reason = ?1", [REASON_CORRUPT], |r| r.get(0))?;
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let path = conn.path().unwrap_or_default().to_owned();
    let wal = std::fs::metadata(format!("{path}-wal")).map_or(0, |m| m.len());
    let u = |v: i64| v.max(0) as u64;
    Ok(Stats {
        schema_version,
        pending_events: u(totals.pending_events),
        pending_bytes: u(totals.pending_bytes),
        quarantined_events: u(totals.quarantined_events),
        quarantined_bytes: u(totals.quarantined_bytes),
        corrupt_quarantined_events: u(corrupt),
        oldest_pending_created_ms: oldest.map(u),
        next_due_ms: store::next_due_ms(conn)?,
        appended_total: u(totals.appended),
        delivered_total: u(totals.delivered),
        dropped_oldest_total: u(totals.dropped_oldest),
        dropped_newest_total: u(totals.dropped_newest),
        duplicates_total: u(totals.duplicates),
        corrupt_total: u(totals.corrupt),
        purged_total: u(totals.purged),
        corrupt_databases_total: u(totals.corrupt_databases),
        file_bytes: u(pages * page_size) + wal,
    })
}

/// Which rows a listing or export covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Events waiting for delivery.
    Pending,
    /// Events in the quarantine.
    Quarantined,
    /// Both, pending first.
    All,
}

/// Why an event is in the quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuarantineReason {
    /// The platform answered with a non-retryable 4xx.
    Rejected,
    /// The stored row could not be read back intact.
    Corrupt,
}

/// Where a listed row is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum RowState {
    /// Waiting for delivery.
    Pending {
        /// When it may next be attempted (ms since the Unix epoch; 0 = now).
        next_attempt_ms: u64,
        /// Why the last attempt failed.
        last_error: Option<String>,
    },
    /// In the quarantine.
    Quarantined {
        /// Why.
        reason: QuarantineReason,
        /// The HTTP status the platform answered, for rejected events.
        status: Option<u16>,
        /// The response excerpt, or what was wrong with the row.
        detail: Option<String>,
        /// When it was moved there (ms since the Unix epoch).
        quarantined_ms: u64,
    },
}

/// One stored event, for `list`. Fields of a corrupt row may be missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRow {
    /// Position in append order.
    pub seq: i64,
    /// The event id.
    pub id: Option<String>,
    /// The ordering key.
    pub order_key: Option<String>,
    /// Bytes counted against the cap.
    pub size: u64,
    /// When it was created (ms since the Unix epoch).
    pub created_ms: Option<u64>,
    /// Failed attempts.
    pub attempts: u32,
    /// Pending or quarantined, with the details of each.
    #[serde(flatten)]
    pub state: RowState,
}

/// What `purge` removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purge {
    /// Every pending and quarantined event (lifecycle state is kept).
    All,
    /// The quarantine only.
    Quarantined,
    /// Pending and quarantined events created before this time (ms since the Unix epoch).
    CreatedBefore(u64),
}

/// What `purge` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PurgeReport {
    /// Pending events removed.
    pub pending: u64,
    /// Quarantined events removed.
    pub quarantined: u64,
}

/// A connection for the CLI. Opening never creates an outbox.
pub struct Inspector {
    conn: Connection,
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspector").field("path", &self.conn.path()).finish()
    }
}

fn read_row(row: &rusqlite::Row<'_>, quarantined: bool) -> rusqlite::Result<EventRow> {
    let text = |i: usize| -> rusqlite::Result<Option<String>> {
        Ok(match row.get::<_, Value>(i)? {
            Value::Text(t) => Some(t),
            _ => None,
        })
    };
    let int = |i: usize| -> rusqlite::Result<Option<i64>> {
        Ok(match row.get::<_, Value>(i)? {
            Value::Integer(n) => Some(n),
            _ => None,
        })
    };
    let state = if quarantined {
        RowState::Quarantined {
            reason: if text(7)?.as_deref() == Some(REASON_REJECTED) {
                QuarantineReason::Rejected
            } else {
                QuarantineReason::Corrupt
            },
            status: int(8)?.and_then(|s| u16::try_from(s).ok()),
            detail: text(9)?,
            quarantined_ms: int(10)?.unwrap_or(0).max(0) as u64,
        }
    } else {
        RowState::Pending { next_attempt_ms: int(7)?.unwrap_or(0).max(0) as u64, last_error: text(8)? }
    };
    Ok(EventRow {
        seq: row.get(0)?,
        id: text(1)?,
        order_key: text(2)?,
        size: int(3)?.unwrap_or(0).max(0) as u64,
        created_ms: int(4)?.map(|v| v.max(0) as u64),
        attempts: int(5)?.and_then(|a| u32::try_from(a).ok()).unwrap_or(0),
        state,
    })
}

const PENDING_COLUMNS: &str = "seq, id, order_key, size, created_ms, attempts, body, next_attempt_ms, last_error";
const QUARANTINE_COLUMNS: &str =
    "seq, id, order_key, size, created_ms, attempts, body, reason, status, detail, quarantined_ms";

impl Inspector {
    /// Opens an existing outbox (migrating its schema if this build is newer).
    pub fn open(path: &Path) -> Result<Inspector, OpenError> {
        crate::db::open_existing(path).map(|conn| Inspector { conn })
    }

    /// Counts, bytes, ages and totals.
    pub fn stats(&self) -> Result<Stats, OutboxError> {
        stats(&self.conn).map_err(OutboxError::from_query)
    }

    /// Up to `limit` rows, oldest first.
    pub fn list(&self, selection: Selection, limit: usize) -> Result<Vec<EventRow>, OutboxError> {
        let mut out = Vec::new();
        self.each(selection, |row, _| {
            out.push(row);
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// Writes one JSON object per line: the row's fields and, under `body`, the stored bytes
    /// verbatim when they are JSON (else as a string). Returns the number of lines.
    pub fn export(&self, selection: Selection, out: &mut dyn Write) -> Result<u64, OutboxError> {
        let mut lines = 0;
        self.each(selection, |row, body| {
            let mut line = serde_json::to_vec(&row).map_err(|e| std::io::Error::other(e.to_string()))?;
            line.pop(); // the closing brace: the body goes last
            line.extend_from_slice(b",\"body\":");
            if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok() && !body.contains(&b'\n') {
                line.extend_from_slice(&body);
            } else {
                let text = String::from_utf8_lossy(&body);
                line.extend(serde_json::to_vec(&text).map_err(|e| std::io::Error::other(e.to_string()))?);
            }
            line.extend_from_slice(b"}\n");
            out.write_all(&line)?;
            lines += 1;
            Ok(true)
        })?;
        Ok(lines)
    }

    /// Calls `f` for each selected row and its body until it returns false.
    fn each(
        &self,
        selection: Selection,
        mut f: impl FnMut(EventRow, Vec<u8>) -> std::io::Result<bool>,
    ) -> Result<(), OutboxError> {
        let tables: &[(bool, String)] = &[
            (false, format!("SELECT {PENDING_COLUMNS} FROM events ORDER BY seq")),
            (true, format!("SELECT {QUARANTINE_COLUMNS} FROM quarantine ORDER BY seq")),
        ];
        for (quarantined, sql) in tables {
            let wanted = match selection {
                Selection::Pending => !quarantined,
                Selection::Quarantined => *quarantined,
                Selection::All => true,
            };
            if !wanted {
                continue;
            }
            let mut stmt = self.conn.prepare(sql).map_err(OutboxError::from_query)?;
            let mut rows = stmt.query([]).map_err(OutboxError::from_query)?;
            while let Some(row) = rows.next().map_err(OutboxError::from_query)? {
                let parsed = read_row(row, *quarantined).map_err(OutboxError::from_query)?;
                let body = match row.get::<_, Value>(6).map_err(OutboxError::from_query)? {
                    Value::Blob(b) => b,
                    Value::Text(t) => t.into_bytes(),
                    _ => Vec::new(),
                };
                if !f(parsed, body).map_err(OutboxError::Export)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Removes events; keeps totals and heads exact. Safe while the daemon runs (an event it
    /// is sending may still arrive once).
    pub fn purge(&mut self, what: Purge) -> Result<PurgeReport, OutboxError> {
        self.transaction(|tx, totals| {
            let mut report = PurgeReport::default();
            let (pending_where, quarantine_where, cutoff) = match what {
                Purge::All => ("1", "1", 0),
                Purge::Quarantined => ("0", "1", 0),
                Purge::CreatedBefore(ms) => ("created_ms < ?1", "created_ms < ?1", ms as i64),
            };
            let uses_cutoff = matches!(what, Purge::CreatedBefore(_));
            let bind = |stmt: &mut rusqlite::Statement<'_>| -> rusqlite::Result<(i64, i64)> {
                let q = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get(1)?));
                if uses_cutoff { stmt.query_row([cutoff], q) } else { stmt.query_row([], q) }
            };
            let (n, bytes) = bind(&mut tx.prepare(&format!(
                "SELECT COUNT(*), COALESCE(SUM(CAST(size AS INTEGER)), 0) FROM events WHERE {pending_where}"
            ))?)?;
            let (qn, qbytes) = bind(&mut tx.prepare(&format!(
                "SELECT COUNT(*), COALESCE(SUM(CAST(size AS INTEGER)), 0) FROM quarantine WHERE {quarantine_where}"
            ))?)?;
            let delete = |table: &str, cond: &str| -> rusqlite::Result<usize> {
                let sql = format!("DELETE FROM {table} WHERE {cond}");
                if uses_cutoff { tx.execute(&sql, [cutoff]) } else { tx.execute(&sql, []) }
            };
            delete("events", pending_where)?;
            delete("quarantine", quarantine_where)?;
            if n > 0 {
                // Heads of the keys touched: recomputed for all keys at once.
                tx.execute_batch(
                    "DELETE FROM heads WHERE head_seq IS NOT (SELECT MIN(seq) FROM events e WHERE e.order_key = heads.order_key);
                     INSERT OR IGNORE INTO heads(order_key, head_seq, next_attempt_ms)
                         SELECT order_key, MIN(seq), CAST(next_attempt_ms AS INTEGER) FROM events GROUP BY order_key;",
                )?;
            }
            totals.pending_events -= n;
            totals.pending_bytes -= bytes;
            totals.quarantined_events -= qn;
            totals.quarantined_bytes -= qbytes;
            totals.purged += n + qn;
            report.pending = n.max(0) as u64;
            report.quarantined = qn.max(0) as u64;
            Ok(report)
        })
    }

    /// Puts the events the platform rejected back in line (after the platform was fixed).
    /// They are appended anew: after the events of their key that are still pending. Corrupt
    /// rows stay in the quarantine (they cannot be sent). Returns how many were requeued.
    pub fn requeue_quarantined(&mut self) -> Result<u64, OutboxError> {
        self.transaction(|tx, totals| {
            let rows: Vec<(i64, String, String, Vec<u8>, i64, i64)> = {
                let mut stmt = tx.prepare(
                    "SELECT seq, id, order_key, body, CAST(size AS INTEGER), CAST(created_ms AS INTEGER) \
                     FROM quarantine WHERE reason = ?1 ORDER BY seq",
                )?;
                let rows = stmt.query_map([REASON_REJECTED], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
                })?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let mut requeued = 0;
            for (seq, id, order_key, body, size, created_ms) in rows {
                tx.execute("DELETE FROM quarantine WHERE seq = ?1", [seq])?;
                totals.quarantined_events -= 1;
                totals.quarantined_bytes -= size;
                let inserted = tx.execute(
                    "INSERT OR IGNORE INTO events(id, order_key, body, checksum, size, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![id, order_key, body, i64::from(crc32fast::hash(&body)), size, created_ms],
                )?;
                if inserted == 1 {
                    let new_seq = tx.last_insert_rowid();
                    tx.execute(
                        "INSERT OR IGNORE INTO heads(order_key, head_seq, next_attempt_ms) VALUES (?1, ?2, 0)",
                        params![order_key, new_seq],
                    )?;
                    totals.pending_events += 1;
                    totals.pending_bytes += size;
                    requeued += 1;
                }
            }
            Ok(requeued)
        })
    }

    /// The persisted lifecycle state.
    pub fn load_state(&self) -> Result<Vec<(String, Vec<u8>)>, OutboxError> {
        store::load_state(&self.conn).map_err(OutboxError::from_query)
    }

    fn transaction<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>, &mut Totals) -> rusqlite::Result<T>,
    ) -> Result<T, OutboxError> {
        let tx =
            self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(OutboxError::from_query)?;
        let mut before = Totals::load(&tx).map_err(OutboxError::from_query)?;
        let mut totals = before;
        let out = f(&tx, &mut totals).map_err(OutboxError::from_query)?;
        totals.store(&tx, &mut before).map_err(OutboxError::from_query)?;
        tx.commit().map_err(OutboxError::from_query)?;
        Ok(out)
    }
}
