//! The versioned schema: `PRAGMA user_version` names the version, and each step migrates
//! forward from the one before, in one transaction.
//!
//! The layout:
//!
//! - `events`: pending events, `seq` (AUTOINCREMENT, so never reused) is the append order;
//!   `checksum` is the CRC-32 of `body`, so a damaged body is detected before it is sent;
//! - `heads`: one row per order key that has pending events: its oldest event and when that
//!   event may next be attempted. It makes "the ready head of each key" an index range scan
//!   instead of a scan of every event;
//! - `quarantine`: events moved aside, either rejected by the platform (`reason = 'rejected'`,
//!   with the HTTP status and an excerpt of the response) or unreadable (`reason = 'corrupt'`);
//! - `pipeline_state`: the daemon's call lifecycle state, written in the same transactions;
//! - `counters`: totals kept exactly in the same transactions (stored bytes, drops, …) so any
//!   process reads them without scanning.

use rusqlite::Connection;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 1;

/// Each entry migrates from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 → 1: the first schema.
    "CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL,
        order_key TEXT NOT NULL,
        body BLOB NOT NULL,
        checksum INTEGER NOT NULL,
        size INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );
    CREATE UNIQUE INDEX events_id ON events(id);
    CREATE INDEX events_order_key ON events(order_key, seq);
    CREATE TABLE heads (
        order_key TEXT PRIMARY KEY,
        head_seq INTEGER NOT NULL,
        next_attempt_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX heads_due ON heads(next_attempt_ms, head_seq);
    CREATE TABLE quarantine (
        seq INTEGER PRIMARY KEY,
        id TEXT,
        order_key TEXT,
        body BLOB,
        size INTEGER NOT NULL,
        created_ms INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        reason TEXT NOT NULL,
        status INTEGER,
        detail TEXT,
        quarantined_ms INTEGER NOT NULL
    );
    CREATE INDEX quarantine_id ON quarantine(id);
    CREATE TABLE pipeline_state (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;",
];

/// What [`migrate`] found.
pub(crate) enum Migrated {
    /// The file is at [`SCHEMA_VERSION`] (possibly after migrating from `from`).
    Current {
        /// The version before migrating.
        from: i64,
    },
    /// The file is newer than this build.
    TooNew(i64),
}

/// Brings the schema to [`SCHEMA_VERSION`].
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<Migrated> {
    let from: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if from > SCHEMA_VERSION {
        return Ok(Migrated::TooNew(from));
    }
    if from == 0 {
        // Must precede the first table; on an existing file it is a no-op.
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")?;
    }
    for (version, step) in MIGRATIONS.iter().enumerate().skip(usize::try_from(from).unwrap_or(0)) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)?;
        // Another process may have migrated while we waited for the lock.
        let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now > version as i64 {
            tx.commit()?;
            continue;
        }
        tx.execute_batch(step)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", version + 1))?;
        tx.commit()?;
    }
    Ok(Migrated::Current { from })
}
