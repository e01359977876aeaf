//! The SQL of the outbox, on a plain [`Connection`] or transaction: no threads, no async.
//!
//! Every write keeps three things exact in the same transaction: the `heads` row of the order
//! key it touches, the `counters` totals (through [`Totals`]), and the byte cap.

use listener_core::StateChange;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};

use crate::{AppendReceipt, NewEvent, OutboxConfig, PendingEvent, WhenFull};

/// Why a quarantined row is there.
pub(crate) const REASON_REJECTED: &str = "rejected";
/// A row that could not be read back intact.
pub(crate) const REASON_CORRUPT: &str = "corrupt";

/// The totals kept in the `counters` table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub pending_events: i64,
    pub pending_bytes: i64,
    pub quarantined_events: i64,
    pub quarantined_bytes: i64,
    pub appended: i64,
    pub delivered: i64,
    pub dropped_oldest: i64,
    pub dropped_newest: i64,
    pub duplicates: i64,
    pub corrupt: i64,
    pub purged: i64,
    pub corrupt_databases: i64,
}

impl Totals {
    const NAMES: [&'static str; 12] = [
        "pending_events",
        "pending_bytes",
        "quarantined_events",
        "quarantined_bytes",
        "appended",
        "delivered",
        "dropped_oldest",
        "dropped_newest",
        "duplicates",
        "corrupt",
        "purged",
        "corrupt_databases",
    ];

    fn slots(&mut self) -> [&mut i64; 12] {
        [
            &mut self.pending_events,
            &mut self.pending_bytes,
            &mut self.quarantined_events,
            &mut self.quarantined_bytes,
            &mut self.appended,
            &mut self.delivered,
            &mut self.dropped_oldest,
            &mut self.dropped_newest,
            &mut self.duplicates,
            &mut self.corrupt,
            &mut self.purged,
            &mut self.corrupt_databases,
        ]
    }

    /// Reads the totals; a missing or unreadable counter reads as 0.
    pub(crate) fn load(conn: &Connection) -> rusqlite::Result<Totals> {
        let mut totals = Totals::default();
        let mut stmt = conn.prepare_cached("SELECT name, CAST(value AS INTEGER) FROM counters")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let (Ok(name), Ok(value)) = (row.get::<_, String>(0), row.get::<_, i64>(1)) else { continue };
            if let Some(i) = Totals::NAMES.iter().position(|n| *n == name) {
                *totals.slots()[i] = value;
            }
        }
        Ok(totals)
    }

    /// Writes the counters that differ from `before`.
    pub(crate) fn store(&mut self, conn: &Connection, before: &mut Totals) -> rusqlite::Result<()> {
        let mut stmt = conn.prepare_cached(
            "INSERT INTO counters(name, value) VALUES (?1, ?2) \
             ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        )?;
        let old = before.slots().map(|v| *v);
        for (i, value) in self.slots().into_iter().enumerate() {
            if old[i] != *value {
                stmt.execute(params![Totals::NAMES[i], *value])?;
            }
        }
        Ok(())
    }

    /// Stored bytes that count against the cap.
    fn stored_bytes(&self) -> i64 {
        self.pending_bytes + self.quarantined_bytes
    }
}

/// Recomputes what can be derived from the tables (stored counts and bytes, the `heads`
/// index), so an outbox whose counters drifted (an interrupted older version, a manual edit)
/// heals at open.
pub(crate) fn reconcile(conn: &Connection) -> rusqlite::Result<()> {
    let mut before = Totals::load(conn)?;
    let mut totals = before;
    (totals.pending_events, totals.pending_bytes) =
        conn.query_row("SELECT COUNT(*), COALESCE(SUM(CAST(size AS INTEGER)), 0) FROM events", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    (totals.quarantined_events, totals.quarantined_bytes) =
        conn.query_row("SELECT COUNT(*), COALESCE(SUM(CAST(size AS INTEGER)), 0) FROM quarantine", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    totals.store(conn, &mut before)?;
    // A head must point at the oldest pending event of its key. SQLite returns the other
    // columns of the row that holds MIN(seq).
    conn.execute_batch(
        "DELETE FROM heads WHERE head_seq IS NOT (SELECT MIN(seq) FROM events e WHERE e.order_key = heads.order_key);
         INSERT OR IGNORE INTO heads(order_key, head_seq, next_attempt_ms)
             SELECT order_key, MIN(seq), CAST(next_attempt_ms AS INTEGER) FROM events GROUP BY order_key;",
    )
}

/// The size an event counts for against the cap.
pub(crate) fn event_size(id: &str, order_key: &str, body: &[u8]) -> i64 {
    (id.len() + order_key.len() + body.len()) as i64
}

fn now_ms() -> i64 {
    i64::try_from(listener_kit::clock::now().0).unwrap_or(i64::MAX)
}

fn checksum(body: &[u8]) -> i64 {
    i64::from(crc32fast::hash(body))
}

/// Inserts one event, applying the duplicate check and the cap.
pub(crate) fn insert_event(
    conn: &Connection,
    totals: &mut Totals,
    config: &OutboxConfig,
    event: &NewEvent,
    receipt: &mut AppendReceipt,
) -> rusqlite::Result<()> {
    let known: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM events WHERE id = ?1 UNION ALL SELECT 1 FROM quarantine WHERE id = ?1 LIMIT 1")?
        .query_row([&event.id], |r| r.get(0))
        .optional()?;
    if known.is_some() {
        totals.duplicates += 1;
        receipt.duplicates += 1;
        return Ok(());
    }
    let size = event_size(&event.id, &event.order_key, &event.body);
    let max = i64::try_from(config.max_bytes).unwrap_or(i64::MAX);
    while totals.stored_bytes() + size > max {
        if size > max || config.when_full == WhenFull::DropNewest || !evict_oldest(conn, totals)? {
            totals.dropped_newest += 1;
            receipt.dropped_newest += 1;
            return Ok(());
        }
        receipt.dropped_oldest += 1;
    }
    conn.prepare_cached(
        "INSERT INTO events(id, order_key, body, checksum, size, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        event.id,
        event.order_key,
        event.body,
        checksum(&event.body),
        size,
        event.created_ms as i64
    ])?;
    let seq = conn.last_insert_rowid();
    conn.prepare_cached("INSERT OR IGNORE INTO heads(order_key, head_seq, next_attempt_ms) VALUES (?1, ?2, 0)")?
        .execute(params![event.order_key, seq])?;
    totals.pending_events += 1;
    totals.pending_bytes += size;
    totals.appended += 1;
    receipt.accepted += 1;
    Ok(())
}

/// Evicts the oldest stored event (pending first, then quarantined). False when empty.
fn evict_oldest(conn: &Connection, totals: &mut Totals) -> rusqlite::Result<bool> {
    let oldest: Option<(i64, String, i64)> = conn
        .prepare_cached("SELECT seq, CAST(order_key AS TEXT), CAST(size AS INTEGER) FROM events ORDER BY seq LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get::<_, Option<String>>(1)?.unwrap_or_default(), r.get(2)?)))
        .optional()?;
    if let Some((seq, order_key, size)) = oldest {
        remove_pending(conn, totals, seq, &order_key, size)?;
        totals.dropped_oldest += 1;
        return Ok(true);
    }
    let oldest: Option<(i64, i64)> = conn
        .prepare_cached("SELECT seq, CAST(size AS INTEGER) FROM quarantine ORDER BY seq LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((seq, size)) = oldest {
        conn.prepare_cached("DELETE FROM quarantine WHERE seq = ?1")?.execute([seq])?;
        totals.quarantined_events -= 1;
        totals.quarantined_bytes -= size;
        totals.dropped_oldest += 1;
        return Ok(true);
    }
    Ok(false)
}

/// Deletes a pending event and moves its key's head on.
fn remove_pending(
    conn: &Connection,
    totals: &mut Totals,
    seq: i64,
    order_key: &str,
    size: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM events WHERE seq = ?1")?.execute([seq])?;
    totals.pending_events -= 1;
    totals.pending_bytes -= size;
    let head: Option<i64> = conn
        .prepare_cached("SELECT head_seq FROM heads WHERE order_key = ?1")?
        .query_row([order_key], |r| r.get(0))
        .optional()?;
    if head.is_none_or(|h| h == seq) {
        repair_head(conn, order_key)?;
    }
    Ok(())
}

/// Points the head of `order_key` at its oldest pending event, or removes it.
pub(crate) fn repair_head(conn: &Connection, order_key: &str) -> rusqlite::Result<()> {
    let next: Option<(i64, i64)> = conn
        .prepare_cached(
            "SELECT seq, CAST(next_attempt_ms AS INTEGER) FROM events WHERE order_key = ?1 ORDER BY seq LIMIT 1",
        )?
        .query_row([order_key], |r| Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0))))
        .optional()?;
    match next {
        Some((seq, next_attempt_ms)) => conn
            .prepare_cached("INSERT OR REPLACE INTO heads(order_key, head_seq, next_attempt_ms) VALUES (?1, ?2, ?3)")?
            .execute(params![order_key, seq, next_attempt_ms])?,
        None => conn.prepare_cached("DELETE FROM heads WHERE order_key = ?1")?.execute([order_key])?,
    };
    Ok(())
}

/// The row of a pending event found by id: `(seq, order_key, size)`.
fn find(conn: &Connection, id: &str) -> rusqlite::Result<Option<(i64, String, i64)>> {
    conn.prepare_cached("SELECT seq, CAST(order_key AS TEXT), CAST(size AS INTEGER) FROM events WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get::<_, Option<String>>(1)?.unwrap_or_default(), r.get(2)?)))
        .optional()
}

/// Deletes a delivered event. False when it was not there (already purged or evicted).
pub(crate) fn delivered(conn: &Connection, totals: &mut Totals, id: &str) -> rusqlite::Result<bool> {
    let Some((seq, order_key, size)) = find(conn, id)? else { return Ok(false) };
    remove_pending(conn, totals, seq, &order_key, size)?;
    totals.delivered += 1;
    Ok(true)
}

/// Records a failed attempt and when to try again.
pub(crate) fn retry_later(
    conn: &Connection,
    id: &str,
    next_attempt_ms: u64,
    attempts: u32,
    last_error: &str,
) -> rusqlite::Result<bool> {
    let Some((seq, order_key, _)) = find(conn, id)? else { return Ok(false) };
    conn.prepare_cached("UPDATE events SET next_attempt_ms = ?1, attempts = ?2, last_error = ?3 WHERE seq = ?4")?
        .execute(params![next_attempt_ms as i64, attempts, last_error, seq])?;
    conn.prepare_cached("UPDATE heads SET next_attempt_ms = ?1 WHERE order_key = ?2 AND head_seq = ?3")?
        .execute(params![next_attempt_ms as i64, order_key, seq])?;
    Ok(true)
}

/// Moves a pending event the platform rejected to the quarantine.
pub(crate) fn quarantine(
    conn: &Connection,
    totals: &mut Totals,
    id: &str,
    status: Option<u16>,
    detail: &str,
) -> rusqlite::Result<bool> {
    let Some((seq, order_key, size)) = find(conn, id)? else { return Ok(false) };
    conn.prepare_cached(
        "INSERT OR REPLACE INTO quarantine(seq, id, order_key, body, size, created_ms, attempts, reason, status, detail, quarantined_ms) \
         SELECT seq, id, order_key, body, size, created_ms, attempts, ?2, ?3, ?4, ?5 FROM events WHERE seq = ?1",
    )?
    .execute(params![seq, REASON_REJECTED, status, detail, now_ms()])?;
    remove_pending(conn, totals, seq, &order_key, size)?;
    totals.quarantined_events += 1;
    totals.quarantined_bytes += size;
    Ok(true)
}

/// Moves an unreadable pending row aside, copying whatever can be read of it.
pub(crate) fn move_aside(conn: &Connection, totals: &mut Totals, seq: i64, detail: &str) -> rusqlite::Result<bool> {
    let row: Option<(Option<String>, i64)> = conn
        .prepare_cached(
            "SELECT CAST(order_key AS TEXT), COALESCE(CAST(size AS INTEGER), 0) FROM events WHERE seq = ?1",
        )?
        .query_row([seq], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((order_key, size)) = row else { return Ok(false) };
    conn.prepare_cached(
        "INSERT OR REPLACE INTO quarantine(seq, id, order_key, body, size, created_ms, attempts, reason, status, detail, quarantined_ms) \
         SELECT seq, CAST(id AS TEXT), CAST(order_key AS TEXT), CAST(body AS BLOB), ?2, CAST(created_ms AS INTEGER), \
                COALESCE(CAST(attempts AS INTEGER), 0), ?3, NULL, ?4, ?5 FROM events WHERE seq = ?1",
    )?
    .execute(params![seq, size, REASON_CORRUPT, detail, now_ms()])?;
    remove_pending(conn, totals, seq, order_key.as_deref().unwrap_or_default(), size)?;
    totals.quarantined_events += 1;
    totals.quarantined_bytes += size;
    totals.corrupt += 1;
    Ok(true)
}

/// Writes lifecycle state changes.
pub(crate) fn apply_state(conn: &Connection, changes: &[StateChange]) -> rusqlite::Result<()> {
    for change in changes {
        match &change.value {
            Some(value) => conn
                .prepare_cached("INSERT OR REPLACE INTO pipeline_state(key, value) VALUES (?1, ?2)")?
                .execute(params![change.key, value])?,
            None => conn.prepare_cached("DELETE FROM pipeline_state WHERE key = ?1")?.execute([&change.key])?,
        };
    }
    Ok(())
}

/// All lifecycle state records. Rows whose key is not text are skipped (they cannot be ours).
pub(crate) fn load_state(conn: &Connection) -> rusqlite::Result<Vec<(String, Vec<u8>)>> {
    let mut stmt = conn.prepare_cached("SELECT key, value FROM pipeline_state ORDER BY key")?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let value = match row.get::<_, Value>(1)? {
            Value::Blob(b) => b,
            Value::Text(t) => t.into_bytes(),
            _ => continue,
        };
        if let Value::Text(key) = row.get::<_, Value>(0)? {
            out.push((key, value));
        }
    }
    Ok(out)
}

/// A head that could not be used as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Damage {
    /// The row at `seq` is unreadable or its body fails its checksum.
    Row { seq: i64, detail: String },
    /// The `heads` row of this key points at no event.
    StaleHead { order_key: String },
}

/// The oldest pending event of each order key whose next attempt is due, oldest first, plus
/// whatever was found damaged on the way (for the writer to move aside or repair). Keys for
/// which `busy` is true (the forwarder has their head in flight) are skipped before their
/// event is read: the walk reads the `heads_due` index alone, and a body only for a head that
/// is handed out.
pub(crate) fn ready_heads(
    conn: &Connection,
    now_ms: u64,
    limit: usize,
    busy: &dyn Fn(&str) -> bool,
) -> rusqlite::Result<(Vec<PendingEvent>, Vec<Damage>)> {
    let mut heads = conn.prepare_cached(
        "SELECT order_key, head_seq FROM heads WHERE next_attempt_ms <= ?1 ORDER BY next_attempt_ms, head_seq",
    )?;
    let mut event = conn.prepare_cached(
        "SELECT seq, id, order_key, body, checksum, created_ms, attempts, next_attempt_ms, last_error \
         FROM events WHERE seq = ?1",
    )?;
    let mut rows = heads.query(params![now_ms.min(i64::MAX as u64) as i64])?;
    let mut ready = Vec::new();
    let mut damage = Vec::new();
    while ready.len() < limit {
        let Some(row) = rows.next()? else { break };
        let head_key: String = match row.get::<_, Value>(0)? {
            Value::Text(t) => t,
            _ => continue,
        };
        if busy(&head_key) {
            continue;
        }
        let head_seq: i64 = row.get::<_, Option<i64>>(1)?.unwrap_or(-1);
        let mut found = event.query(params![head_seq])?;
        match found.next()? {
            None => damage.push(Damage::StaleHead { order_key: head_key }),
            Some(row) => match decode_pending(row, head_seq) {
                Ok(event) => ready.push(event),
                Err(detail) => damage.push(Damage::Row { seq: head_seq, detail }),
            },
        }
    }
    Ok((ready, damage))
}

/// Reads a pending row defensively: every column is checked for its type, and the body
/// against its checksum.
fn decode_pending(row: &rusqlite::Row<'_>, seq: i64) -> Result<PendingEvent, String> {
    let get = |i: usize| row.get::<_, Value>(i).map_err(|e| format!("column {i} unreadable: {e}"));
    let text = |i: usize, name: &str| match get(i)? {
        Value::Text(t) if !t.is_empty() => Ok(t),
        other => Err(format!("{name} is {}", type_name(&other))),
    };
    let int = |i: usize, name: &str| match get(i)? {
        Value::Integer(n) if n >= 0 => Ok(n),
        other => Err(format!("{name} is {}", type_name(&other))),
    };
    let id = text(1, "id")?;
    let order_key = text(2, "order_key")?;
    let body = match get(3)? {
        Value::Blob(b) => b,
        other => return Err(format!("body is {}", type_name(&other))),
    };
    let stored = int(4, "checksum")?;
    if stored != checksum(&body) {
        return Err(format!("body fails its checksum ({} bytes)", body.len()));
    }
    let created_ms = int(5, "created_ms")? as u64;
    let attempts = u32::try_from(int(6, "attempts")?).unwrap_or(u32::MAX);
    let next_attempt_ms = int(7, "next_attempt_ms")? as u64;
    let last_error = match get(8)? {
        Value::Text(t) => Some(t),
        _ => None,
    };
    Ok(PendingEvent { seq, id, order_key, body, created_ms, attempts, next_attempt_ms, last_error })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Integer(_) => "an integer",
        Value::Real(_) => "a real",
        Value::Text(_) => "text (or empty)",
        Value::Blob(_) => "a blob",
    }
}

/// When the earliest head is due (`None` when nothing is pending).
pub(crate) fn next_due_ms(conn: &Connection) -> rusqlite::Result<Option<u64>> {
    conn.prepare_cached("SELECT MIN(next_attempt_ms) FROM heads")?
        .query_row([], |r| r.get::<_, Option<i64>>(0))
        .map(|v| v.map(|v| v.max(0) as u64))
}
