//! The durable outbox: Level 3 events wait here, on disk, until the platform has them.
//!
//! An SQLite database (WAL, `synchronous = FULL`) written by one thread that commits in groups
//! (see `writer.rs`): [`Outbox::append`] resolves only after the commit that holds its events
//! returned, so an accepted event survives `kill -9` and power loss. The daemon's call
//! lifecycle state ([`StateChange`]) is written in the same transaction as the events it
//! produced, so after a restart the two agree.
//!
//! - [`Outbox`]: the daemon's async handle: append, the forwarder's reads and writes
//!   ([`Outbox::ready_heads`], [`Outbox::delivered`], [`Outbox::retry_later`],
//!   [`Outbox::quarantine`]) and a wake-up when new events commit ([`Outbox::appended`]).
//! - [`Inspector`]: a separate, synchronous connection for the CLI (`stats`, `list`, `export`,
//!   `purge`, `requeue`), safe while the daemon runs.
//!
//! Events with the same `order_key` are delivered in append order: only the oldest pending
//! event of a key (its *head*) is ever handed out. The cap ([`OutboxConfig::max_bytes`]) is
//! enforced with an explicit [`WhenFull`] policy. Damaged rows are moved to the quarantine and
//! counted; a file SQLite cannot read is moved aside and a new one started: recovery never
//! needs a person. A failed commit is fatal ([`OutboxError::is_fatal`]): the daemon exits and
//! systemd restarts it.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use outbox::{NewEvent, Outbox, OutboxConfig, WhenFull};
//!
//! let dir = tempfile::tempdir()?;
//! let outbox = Outbox::open(&dir.path().join("outbox.sqlite"), OutboxConfig::new(1 << 20, WhenFull::DropOldest))?;
//! let event = NewEvent { id: "e1".into(), order_key: "call-1".into(), body: br#"{"status":"ringing"}"#.to_vec(), created_ms: 1 };
//! let receipt = outbox.append(vec![event], vec![]).await?;
//! assert_eq!(receipt.accepted, 1);
//! let heads = outbox.ready_heads(1_000, 10).await?;
//! assert_eq!(heads[0].id, "e1");
//! assert!(outbox.delivered("e1").await?);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod config;
mod db;
mod error;
mod events;
mod inspect;
mod schema;
mod store;
mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub use config::{
    DEFAULT_DATA_DIR, DataDirCheck, MIN_OUTBOX_BYTES, OUTBOX_FILE, OutboxConfig, OutboxSection, OutboxSettings,
    WhenFull,
};
pub use db::SPACE_FACTOR;
pub use error::{OpenError, OutboxError};
pub use inspect::{EventRow, Inspector, Purge, PurgeReport, QuarantineReason, RowState, Selection, Stats};
use listener_core::OutgoingEvent;
pub use listener_core::StateChange;
use rusqlite::Connection;
pub use schema::SCHEMA_VERSION;
use tokio::sync::{Notify, oneshot};

use crate::store::Damage;
use crate::writer::{Done, Op, Request, WriterCounters};

/// An event to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Its unique id (the `webhook-id`); appending an id already stored is a no-op.
    pub id: String,
    /// Events with the same key are delivered in append order (the `childSid`).
    pub order_key: String,
    /// The exact JSON bytes to send; never re-serialised.
    pub body: Vec<u8>,
    /// When it was created (ms since the Unix epoch).
    pub created_ms: u64,
}

impl NewEvent {
    /// Serialises a lifecycle event once, into the bytes that will be signed and sent.
    pub fn from_outgoing(event: &OutgoingEvent, created_ms: u64) -> Result<NewEvent, serde_json::Error> {
        Ok(NewEvent {
            id: event.id.to_string(),
            order_key: event.order_key.to_string(),
            body: serde_json::to_vec(&event.event)?,
            created_ms,
        })
    }
}

/// What an append did with its events. Only `accepted` events are new on disk; duplicates
/// were already there; `dropped_newest` were refused by the cap; `dropped_oldest` counts older
/// events evicted to make room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendReceipt {
    /// Stored by this append.
    pub accepted: usize,
    /// Already stored (same id, pending or quarantined); not stored twice.
    pub duplicates: usize,
    /// Refused because the outbox was full (`drop_newest`, or larger than the whole cap).
    pub dropped_newest: usize,
    /// Older events evicted to make room (`drop_oldest`).
    pub dropped_oldest: usize,
}

/// A pending event, as the forwarder gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    /// Its position in append order.
    pub seq: i64,
    /// Its id (`webhook-id`).
    pub id: String,
    /// Its ordering key.
    pub order_key: String,
    /// The exact bytes to send (checked against the stored checksum).
    pub body: Vec<u8>,
    /// When it was created (ms since the Unix epoch).
    pub created_ms: u64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When it may be attempted (ms since the Unix epoch; 0 = now).
    pub next_attempt_ms: u64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// Counters of the writer thread since open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed (each one fsync of the WAL).
    pub commits: u64,
    /// Requests (appends, deliveries, …) those commits covered.
    pub requests: u64,
}

/// The daemon's handle on the outbox. Cheap to clone; all clones share one writer thread and
/// one read connection. Async methods need a tokio runtime (reads run on its blocking pool).
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("path", &self.inner.path).field("config", &self.inner.config).finish()
    }
}

struct Inner {
    path: PathBuf,
    config: OutboxConfig,
    sender: Mutex<Option<mpsc::Sender<Request>>>,
    reader: Arc<Mutex<Connection>>,
    notify: Arc<Notify>,
    counters: Arc<WriterCounters>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        shutdown(&self.sender, &self.thread);
    }
}

/// Closes the request channel and waits for the writer to finish what is queued.
fn shutdown(sender: &Mutex<Option<mpsc::Sender<Request>>>, thread: &Mutex<Option<JoinHandle<()>>>) {
    drop(sender.lock().unwrap_or_else(|p| p.into_inner()).take());
    if let Some(handle) = thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
        // A panic in the writer was already reported by the panic hook; nothing to add.
        let _ = handle.join();
    }
}

impl Outbox {
    /// Opens (creating or migrating) the outbox at `path` and starts its writer thread.
    ///
    /// Refuses to open when the cap (times [`SPACE_FACTOR`]) does not fit in the free space of
    /// the filesystem, or when the file's schema is newer than this build. A file that SQLite
    /// cannot read is moved aside (`<path>.corrupt-<ms>`) and a new outbox started.
    pub fn open(path: &Path, config: OutboxConfig) -> Result<Outbox, OpenError> {
        // The derived state is healed by the writer's first transaction (writer.rs), not here:
        // start-up must not read every queued event.
        let (conn, opened) = db::open_for_daemon(path, config.max_bytes)?;
        if opened.migrated_from != SCHEMA_VERSION {
            tracing::info!(
                path = %path.display(),
                from = opened.migrated_from,
                to = SCHEMA_VERSION,
                "Outbox schema created or migrated"
            );
        }
        let reader =
            db::connect(path, false).map_err(|source| OpenError::Sqlite { path: path.to_path_buf(), source })?;
        let (sender, receiver) = mpsc::channel();
        let notify = Arc::new(Notify::new());
        let counters = Arc::new(WriterCounters::default());
        let thread = std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn({
                let notify = Arc::clone(&notify);
                let counters = Arc::clone(&counters);
                move || writer::run(conn, config, receiver, notify, counters)
            })
            .map_err(OpenError::Thread)?;
        Ok(Outbox {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                config,
                sender: Mutex::new(Some(sender)),
                reader: Arc::new(Mutex::new(reader)),
                notify,
                counters,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Stores events and lifecycle state changes in one transaction; resolves after its
    /// commit returned (the events are then on disk). Duplicated ids and the cap are reported
    /// in the receipt, not as errors.
    pub async fn append(&self, events: Vec<NewEvent>, state: Vec<StateChange>) -> Result<AppendReceipt, OutboxError> {
        match self.write(Op::Append { events, state }).await? {
            Done::Appended(receipt) => Ok(receipt),
            Done::Found(_) => Ok(AppendReceipt::default()),
        }
    }

    /// Writes lifecycle state changes alone (a `None` value deletes the key).
    pub async fn apply_state(&self, changes: Vec<StateChange>) -> Result<(), OutboxError> {
        self.append(Vec::new(), changes).await.map(drop)
    }

    /// Deletes a delivered event. False when it was no longer there (purged or evicted).
    pub async fn delivered(&self, id: &str) -> Result<bool, OutboxError> {
        self.found(Op::Delivered { id: id.to_owned() }).await
    }

    /// Records a failed attempt: the event (the head of its key) waits until `next_attempt_ms`.
    pub async fn retry_later(
        &self,
        id: &str,
        next_attempt_ms: u64,
        attempts: u32,
        last_error: &str,
    ) -> Result<bool, OutboxError> {
        self.found(Op::RetryLater { id: id.to_owned(), next_attempt_ms, attempts, last_error: last_error.to_owned() })
            .await
    }

    /// Moves an event the platform rejected to the quarantine, with the HTTP status and an
    /// excerpt of the response. The next event of its key becomes its head.
    pub async fn quarantine(&self, id: &str, status: Option<u16>, response_excerpt: &str) -> Result<bool, OutboxError> {
        self.found(Op::Quarantine { id: id.to_owned(), status, detail: response_excerpt.to_owned() }).await
    }

    /// Up to `limit` heads due at `now_ms`: the oldest pending event of each order key whose
    /// next attempt is due, oldest first. Damaged rows met on the way are moved to the
    /// quarantine (counted, logged) and left out.
    pub async fn ready_heads(&self, now_ms: u64, limit: usize) -> Result<Vec<PendingEvent>, OutboxError> {
        self.ready_heads_except(now_ms, limit, Arc::new(HashSet::new())).await
    }

    /// [`Outbox::ready_heads`] without the heads of the keys in `busy` (the forwarder's keys
    /// in flight): they are skipped in the index, their events never read.
    pub async fn ready_heads_except(
        &self,
        now_ms: u64,
        limit: usize,
        busy: Arc<HashSet<String>>,
    ) -> Result<Vec<PendingEvent>, OutboxError> {
        let (ready, damage) =
            self.read(move |conn| store::ready_heads(conn, now_ms, limit, &|key| busy.contains(key))).await?;
        for damage in damage {
            match damage {
                Damage::Row { seq, detail } => {
                    events::RowMovedAside { seq, detail: &detail }.emit();
                    self.found(Op::MoveAside { seq, detail }).await?;
                }
                Damage::StaleHead { order_key } => {
                    tracing::warn!(order_key, "An outbox head pointed at no event; repaired it");
                    self.found(Op::RepairHead { order_key }).await?;
                }
            }
        }
        Ok(ready)
    }

    /// When the earliest pending head is due (ms since the Unix epoch), `None` when empty.
    pub async fn next_due_ms(&self) -> Result<Option<u64>, OutboxError> {
        self.read(store::next_due_ms).await
    }

    /// The persisted lifecycle state, to restore at start.
    pub async fn load_state(&self) -> Result<Vec<(String, Vec<u8>)>, OutboxError> {
        self.read(store::load_state).await
    }

    /// Counts, bytes, ages and totals.
    pub async fn stats(&self) -> Result<Stats, OutboxError> {
        self.read(inspect::stats).await
    }

    /// Resolves when events were committed since the last time it resolved (a stored permit:
    /// a commit while nobody waits is not lost).
    pub async fn appended(&self) {
        self.inner.notify.notified().await;
    }

    /// Events pending after the writer's last commit (no query: the writer keeps it).
    pub fn pending_events(&self) -> u64 {
        self.inner.counters.pending.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Commits and requests served by the writer since open.
    pub fn writer_stats(&self) -> WriterStats {
        use std::sync::atomic::Ordering::Relaxed;
        WriterStats {
            commits: self.inner.counters.commits.load(Relaxed),
            requests: self.inner.counters.requests.load(Relaxed),
        }
    }

    /// A separate connection for inspection (as the CLI would open).
    pub fn inspector(&self) -> Result<Inspector, OpenError> {
        Inspector::open(&self.inner.path)
    }

    /// Stops the writer after the queued work and waits for it; every clone then fails with
    /// [`OutboxError::WriterGone`]. Blocks for at most one commit.
    pub fn close(self) {
        shutdown(&self.inner.sender, &self.inner.thread);
    }

    async fn write(&self, op: Op) -> Result<Done, OutboxError> {
        let (reply, answer) = oneshot::channel();
        {
            let sender = self.inner.sender.lock().unwrap_or_else(|p| p.into_inner());
            let sender = sender.as_ref().ok_or(OutboxError::WriterGone)?;
            sender.send(Request { op, reply }).map_err(|_| OutboxError::WriterGone)?;
        }
        answer.await.map_err(|_| OutboxError::WriterGone)?
    }

    async fn found(&self, op: Op) -> Result<bool, OutboxError> {
        match self.write(op).await? {
            Done::Found(found) => Ok(found),
            Done::Appended(_) => Ok(true),
        }
    }

    async fn read<T, F>(&self, query: F) -> Result<T, OutboxError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let reader = Arc::clone(&self.inner.reader);
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
            query(&conn).map_err(OutboxError::from_query)
        })
        .await
        .map_err(|_| OutboxError::ReaderFailed)?
    }
}
