//! [`LogGate`]: one log line per interval for a repeated event, with a count of the rest.

use std::sync::atomic::{AtomicU64, Ordering};

use listener_core::UnixMillis;

/// Lets one log line through per interval and counts what it held back, so that a flood of
/// malformed records or refused connections costs one line a second, and that line says how
/// many were suppressed. Lock-free and `const`-constructible, so each event type keeps one in a
/// `static`; time is an argument ([`LogGate::allow`]) or the wall clock ([`LogGate::allow_now`]).
/// Metrics still count every occurrence: the gate only thins the log.
#[derive(Debug)]
pub struct LogGate {
    interval_ms: u64,
    /// The earliest time (ms) the next line may go out.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogGate {
    /// One line per `interval_ms`.
    pub const fn every(interval_ms: u64) -> LogGate {
        LogGate { interval_ms, next_ms: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// One line per second.
    pub const fn per_second() -> LogGate {
        LogGate::every(1_000)
    }

    /// `Some(suppressed since the last line)` when a line may be logged at `now`.
    pub fn allow(&self, now: UnixMillis) -> Option<u64> {
        self.allow_weighted(now, 1)
    }

    /// Like [`LogGate::allow`], counting `weight` occurrences when held back (one event that
    /// stands for several, e.g. a batch of dropped events).
    pub fn allow_weighted(&self, now: UnixMillis, weight: u64) -> Option<u64> {
        let next = self.next_ms.load(Ordering::Relaxed);
        if now.0 >= next
            && self
                .next_ms
                .compare_exchange(next, now.0.saturating_add(self.interval_ms), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(weight, Ordering::Relaxed);
            None
        }
    }

    /// [`LogGate::allow`] at the wall clock's now.
    pub fn allow_now(&self) -> Option<u64> {
        self.allow(crate::clock::now())
    }

    /// [`LogGate::allow_weighted`] at the wall clock's now.
    pub fn allow_weighted_now(&self, weight: u64) -> Option<u64> {
        self.allow_weighted(crate::clock::now(), weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_of_the_rest() {
        let gate = LogGate::every(1_000);
        let t = |ms: u64| UnixMillis(1_000_000 + ms);
        assert_eq!(gate.allow(t(0)), Some(0));
        assert_eq!(gate.allow(t(1)), None);
        assert_eq!(gate.allow_weighted(t(999), 5), None);
        assert_eq!(gate.allow(t(1_000)), Some(6));
        assert_eq!(gate.allow(t(1_500)), None);
        assert_eq!(gate.allow(t(5_000)), Some(1));
        assert_eq!(gate.allow(t(5_000)), None);
    }

    #[test]
    fn a_clock_that_goes_back_never_floods() {
        let gate = LogGate::every(1_000);
        assert_eq!(gate.allow(UnixMillis(50_000)), Some(0));
        assert_eq!(gate.allow(UnixMillis(10_000)), None, "a step back waits for the interval");
    }
}
