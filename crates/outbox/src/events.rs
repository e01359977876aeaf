//! Internal events of the outbox: each `emit` logs and counts together (STYLE.md §9).

use listener_kit::LogGate;

use metrics::{counter, gauge};

use crate::store::Totals;

/// Repeated warnings: the first is logged, then at most one per 10 s, with the count of the
/// events suppressed meanwhile.
static DROP_LOG: LogGate = LogGate::every(10_000);
static DUPLICATE_LOG: LogGate = LogGate::every(10_000);
static DISK_FULL_LOG: LogGate = LogGate::every(10_000);

/// The writer's first transaction healed the derived state: the gauges start from the totals.
pub(crate) struct Reconciled<'a> {
    pub totals: &'a Totals,
}

impl Reconciled<'_> {
    pub(crate) fn emit(&self) {
        gauge!("pbx_listener_outbox_pending_events").set(self.totals.pending_events as f64);
        gauge!("pbx_listener_outbox_pending_bytes").set(self.totals.pending_bytes as f64);
        gauge!("pbx_listener_outbox_quarantined_events").set(self.totals.quarantined_events as f64);
        gauge!("pbx_listener_outbox_disk_full").set(0.0);
    }
}

/// A commit failed because the filesystem is full (`full`), or the first commit after that
/// went through (`!full`).
pub(crate) struct DiskFull<'a> {
    pub full: bool,
    pub error: Option<&'a rusqlite::Error>,
}

impl DiskFull<'_> {
    pub(crate) fn emit(&self) {
        gauge!("pbx_listener_outbox_disk_full").set(if self.full { 1.0 } else { 0.0 });
        if !self.full {
            tracing::warn!("The outbox's filesystem has space again; accepting events again");
            return;
        }
        counter!("pbx_listener_outbox_disk_full_total").increment(1);
        if let Some(suppressed) = DISK_FULL_LOG.allow_weighted_now(1) {
            tracing::error!(
                error = self.error.map(ToString::to_string).unwrap_or_default(),
                suppressed,
                "The outbox's filesystem is full: no event is accepted until space returns (the PBX links stay up, \
                 their signals wait); free space on the data disk"
            );
        }
    }
}

/// One group commit went through.
pub(crate) struct GroupCommitted<'a> {
    pub appended: u64,
    pub duplicates: u64,
    pub dropped_oldest: u64,
    pub dropped_newest: u64,
    pub delivered: u64,
    pub moved_aside: u64,
    pub totals: &'a Totals,
}

impl GroupCommitted<'_> {
    pub(crate) fn emit(&self) {
        counter!("pbx_listener_outbox_commits_total").increment(1);
        counter!("pbx_listener_outbox_appended_events_total").increment(self.appended);
        counter!("pbx_listener_outbox_removed_events_total", "reason" => "delivered").increment(self.delivered);
        if self.duplicates > 0 {
            counter!("pbx_listener_outbox_duplicate_events_total").increment(self.duplicates);
            if let Some(suppressed) = DUPLICATE_LOG.allow_weighted_now(self.duplicates) {
                tracing::debug!(
                    duplicates = self.duplicates,
                    suppressed,
                    "Events already in the outbox were appended again; kept one copy"
                );
            }
        }
        for (policy, n) in [("drop_oldest", self.dropped_oldest), ("drop_newest", self.dropped_newest)] {
            if n == 0 {
                continue;
            }
            counter!("pbx_listener_outbox_dropped_events_total", "when_full" => policy).increment(n);
            if let Some(suppressed) = DROP_LOG.allow_weighted_now(n) {
                tracing::error!(
                    when_full = policy,
                    dropped = n,
                    suppressed,
                    pending_bytes = self.totals.pending_bytes,
                    quarantined_bytes = self.totals.quarantined_bytes,
                    "The outbox is full; events were dropped"
                );
            }
        }
        if self.moved_aside > 0 {
            counter!("pbx_listener_outbox_corrupt_events_total").increment(self.moved_aside);
        }
        gauge!("pbx_listener_outbox_pending_events").set(self.totals.pending_events as f64);
        gauge!("pbx_listener_outbox_pending_bytes").set(self.totals.pending_bytes as f64);
        gauge!("pbx_listener_outbox_quarantined_events").set(self.totals.quarantined_events as f64);
    }
}

/// A commit failed: the daemon is about to exit.
pub(crate) struct CommitFailed<'a> {
    pub error: &'a rusqlite::Error,
}

impl CommitFailed<'_> {
    pub(crate) fn emit(&self) {
        counter!("pbx_listener_outbox_commit_errors_total").increment(1);
        tracing::error!(
            error = %self.error,
            "The outbox could not commit; nothing in this group was accepted and the outbox stops accepting writes"
        );
    }
}

/// A damaged pending row was moved to the quarantine.
pub(crate) struct RowMovedAside<'a> {
    pub seq: i64,
    pub detail: &'a str,
}

impl RowMovedAside<'_> {
    pub(crate) fn emit(&self) {
        // Rare and each one is a lost event: always logged, never rate-limited.
        tracing::error!(
            seq = self.seq,
            detail = self.detail,
            "An outbox row is unreadable; moved it to the quarantine (reason \"corrupt\") and went on"
        );
    }
}
