//! The writer thread: every write of the daemon goes through it, and it commits in groups.
//!
//! It blocks for the first queued request, then takes everything else queued (up to
//! [`MAX_GROUP`]) and runs it all in one transaction: one commit, one fsync, for a burst of
//! appends and deliveries. Requests that queue while a commit runs form the next group, so the
//! group size grows with the load by itself, without any timer. Each request runs inside a
//! savepoint, so a request that fails alone fails alone; a failed commit fails the whole group
//! and poisons the writer (the daemon must exit, see [`OutboxError::is_fatal`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};

use listener_core::StateChange;
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{Notify, oneshot};

use crate::error::{OutboxError, is_corruption, is_disk_full, is_io};
use crate::events;
use crate::store::{self, Totals};
use crate::{AppendReceipt, NewEvent, OutboxConfig};

/// The most requests one commit covers; bounds the latency of the first one in a huge burst.
pub(crate) const MAX_GROUP: usize = 8192;

/// A write.
#[derive(Debug)]
pub(crate) enum Op {
    Append { events: Vec<NewEvent>, state: Vec<StateChange> },
    Delivered { id: String },
    RetryLater { id: String, next_attempt_ms: u64, attempts: u32, last_error: String },
    Quarantine { id: String, status: Option<u16>, detail: String },
    MoveAside { seq: i64, detail: String },
    RepairHead { order_key: String },
}

/// The result of a write.
#[derive(Debug)]
pub(crate) enum Done {
    Appended(AppendReceipt),
    /// Whether the event was found.
    Found(bool),
}

/// A write and where to answer it.
pub(crate) struct Request {
    pub op: Op,
    pub reply: oneshot::Sender<Result<Done, OutboxError>>,
}

/// Counters of the writer, for benchmarks and tests.
#[derive(Debug, Default)]
pub(crate) struct WriterCounters {
    pub commits: AtomicU64,
    pub requests: AtomicU64,
    /// Events pending after the last commit.
    pub pending: AtomicU64,
}

/// Runs the writer until every sender is gone. Its first transaction heals what can be derived
/// from the tables ([`store::reconcile`]): before any write, but after the daemon is READY
/// (with a million events queued it reads them all, which must not delay start-up).
pub(crate) fn run(
    mut conn: Connection,
    config: OutboxConfig,
    requests: Receiver<Request>,
    notify: Arc<Notify>,
    counters: Arc<WriterCounters>,
) {
    let mut poisoned = false;
    match reconcile(&mut conn) {
        Ok(totals) => {
            counters.pending.store(u64::try_from(totals.pending_events).unwrap_or(0), Ordering::Relaxed);
            events::Reconciled { totals: &totals }.emit();
        }
        Err(error) => {
            // The same failure a commit would have: the daemon exits and systemd restarts it.
            poisoned = true;
            events::CommitFailed { error: &error }.emit();
        }
    }
    let mut disk_full = false;
    let mut group = Vec::with_capacity(64);
    while let Ok(first) = requests.recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match requests.try_recv() {
                Ok(next) => group.push(next),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if poisoned {
            for request in group.drain(..) {
                let _ = request.reply.send(Err(OutboxError::WriterPoisoned));
            }
            continue;
        }
        match commit_group(&mut conn, &config, &mut group, &counters) {
            Ok(outcome) => {
                if disk_full {
                    disk_full = false;
                    events::DiskFull { full: false, error: None }.emit();
                }
                outcome.report();
                if outcome.appended > 0 {
                    notify.notify_one();
                }
            }
            Err(error) if is_disk_full(&error) => {
                // Nothing of the group was accepted; the outbox is as it was. Roll back what
                // SQLite did not, answer, and take the next group as if nothing happened.
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                events::DiskFull { full: true, error: Some(&error) }.emit();
                disk_full = true;
                for request in group.drain(..) {
                    let _ = request.reply.send(Err(OutboxError::DiskFull));
                }
            }
            Err(error) => {
                poisoned = true;
                events::CommitFailed { error: &error }.emit();
                let corrupt = is_corruption(&error);
                let error = Arc::new(error);
                for request in group.drain(..) {
                    let failure = if corrupt {
                        OutboxError::DatabaseCorrupt(Arc::clone(&error))
                    } else {
                        OutboxError::CommitFailed(Arc::clone(&error))
                    };
                    let _ = request.reply.send(Err(failure));
                }
            }
        }
    }
}

/// Heals the derived state in one transaction; the totals after it.
fn reconcile(conn: &mut Connection) -> rusqlite::Result<Totals> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    store::reconcile(&tx)?;
    let totals = Totals::load(&tx)?;
    tx.commit()?;
    Ok(totals)
}

/// What one commit did, for metrics and logs.
#[derive(Debug, Default)]
struct GroupOutcome {
    appended: u64,
    duplicates: u64,
    dropped_oldest: u64,
    dropped_newest: u64,
    delivered: u64,
    moved_aside: u64,
    totals: Totals,
}

impl GroupOutcome {
    fn report(&self) {
        events::GroupCommitted {
            appended: self.appended,
            duplicates: self.duplicates,
            dropped_oldest: self.dropped_oldest,
            dropped_newest: self.dropped_newest,
            delivered: self.delivered,
            moved_aside: self.moved_aside,
            totals: &self.totals,
        }
        .emit();
    }
}

/// Runs a group in one transaction and answers every request once the commit returned.
/// `Err` only when the group as a whole failed (nothing was answered yet).
fn commit_group(
    conn: &mut Connection,
    config: &OutboxConfig,
    group: &mut Vec<Request>,
    counters: &WriterCounters,
) -> rusqlite::Result<GroupOutcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut before = Totals::load(&tx)?;
    let mut totals = before;
    let mut outcome = GroupOutcome::default();
    let mut results = Vec::with_capacity(group.len());
    for request in group.iter() {
        tx.execute_batch("SAVEPOINT op")?;
        let saved = totals;
        match apply(&tx, &mut totals, config, &request.op, &mut outcome) {
            Ok(done) => {
                tx.execute_batch("RELEASE op")?;
                results.push(Ok(done));
            }
            Err(e) if is_io(&e) || is_corruption(&e) => return Err(e),
            Err(e) => {
                tx.execute_batch("ROLLBACK TO op; RELEASE op")?;
                totals = saved;
                results.push(Err(OutboxError::Query(e)));
            }
        }
    }
    totals.store(&tx, &mut before)?;
    tx.commit()?;
    outcome.totals = totals;
    // Counted before anyone is answered: a caller that reads the counters after its append
    // resolved sees its own commit.
    counters.commits.fetch_add(1, Ordering::Relaxed);
    counters.requests.fetch_add(group.len() as u64, Ordering::Relaxed);
    counters.pending.store(u64::try_from(totals.pending_events).unwrap_or(0), Ordering::Relaxed);
    for (request, result) in group.drain(..).zip(results) {
        // The caller may have stopped waiting; the write stands either way.
        let _ = request.reply.send(result);
    }
    Ok(outcome)
}

fn apply(
    conn: &Connection,
    totals: &mut Totals,
    config: &OutboxConfig,
    op: &Op,
    outcome: &mut GroupOutcome,
) -> rusqlite::Result<Done> {
    match op {
        Op::Append { events, state } => {
            let mut receipt = AppendReceipt::default();
            for event in events {
                store::insert_event(conn, totals, config, event, &mut receipt)?;
            }
            store::apply_state(conn, state)?;
            outcome.appended += receipt.accepted as u64;
            outcome.duplicates += receipt.duplicates as u64;
            outcome.dropped_oldest += receipt.dropped_oldest as u64;
            outcome.dropped_newest += receipt.dropped_newest as u64;
            Ok(Done::Appended(receipt))
        }
        Op::Delivered { id } => {
            let found = store::delivered(conn, totals, id)?;
            outcome.delivered += u64::from(found);
            Ok(Done::Found(found))
        }
        Op::RetryLater { id, next_attempt_ms, attempts, last_error } => {
            store::retry_later(conn, id, *next_attempt_ms, *attempts, last_error).map(Done::Found)
        }
        Op::Quarantine { id, status, detail } => store::quarantine(conn, totals, id, *status, detail).map(Done::Found),
        Op::MoveAside { seq, detail } => {
            let found = store::move_aside(conn, totals, *seq, detail)?;
            outcome.moved_aside += u64::from(found);
            Ok(Done::Found(found))
        }
        Op::RepairHead { order_key } => store::repair_head(conn, order_key).map(|()| Done::Found(true)),
    }
}
