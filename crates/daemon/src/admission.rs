//! Admission: how the pipeline degrades when events come in faster than the platform takes
//! them although the platform answers (the machine's CPU is the limit, not the platform).
//!
//! Without it the backlog would grow until the outbox cap, where `when_full` drops accepted
//! events. With it, while delivery is healthy the backlog may not grow past a ceiling: the
//! pipeline waits before committing its next batch, so the adapters wait, and the PBX sockets
//! fill (backpressure to the PBX, which holds or slows its feed). The ceiling starts at
//! [`HIGH_WATER`], or at the backlog found when delivery (re)started after an outage, and only
//! moves down as delivery drains it: after an outage the queue drains while new events still
//! come in, as long as delivery outpaces them. While the platform fails, nothing is held back:
//! the outbox is there to queue for the outage (up to its cap).

/// The backlog (events) below which nothing is ever held back.
pub const HIGH_WATER: u64 = 20_000;

/// How far above the ceiling a batch may take the backlog (a few batches' worth), so that a
/// draining queue does not hold every batch for the deliveries of the last one.
pub const SLACK: u64 = 2_000;

/// The admission state (pure: the caller says whether delivery is healthy and how many events
/// are pending).
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// The backlog delivery is known to bring down to, while it is healthy.
    ceiling: Option<u64>,
}

impl Admission {
    /// Whether a batch may be committed now. `delivering`: the platform answers; `pending`:
    /// events in the outbox.
    pub fn admits(&mut self, delivering: bool, pending: u64) -> bool {
        if !delivering {
            self.ceiling = None;
            return true;
        }
        let ceiling = self.ceiling.get_or_insert(pending.max(HIGH_WATER));
        *ceiling = (*ceiling).min(pending.max(HIGH_WATER));
        pending <= *ceiling + SLACK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_the_high_water_everything_is_admitted() {
        let mut a = Admission::default();
        assert!(a.admits(true, 0));
        assert!(a.admits(true, HIGH_WATER + SLACK));
        assert!(!a.admits(true, HIGH_WATER + SLACK + 1), "the backlog grows past the ceiling");
    }

    #[test]
    fn after_an_outage_the_queue_drains_while_events_come_in() {
        let mut a = Admission::default();
        assert!(a.admits(false, 500_000), "during the outage nothing is held back");
        assert!(a.admits(true, 1_000_000), "delivery is back: the ceiling is the backlog");
        assert!(a.admits(true, 990_000));
        assert!(a.admits(true, 991_000), "new events within the slack");
        assert!(!a.admits(true, 993_000), "growing again while delivering: held back");
        assert!(a.admits(true, 900_000), "delivery drained it");
        assert!(a.admits(false, 950_000), "a new outage: queued");
    }
}
