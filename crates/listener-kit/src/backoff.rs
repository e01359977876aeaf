//! [`Backoff`]: how long to wait before trying again.

use std::time::Duration;

/// Capped exponential backoff with full jitter ("Exponential Backoff And Jitter", AWS
/// Architecture Blog): after the n-th consecutive failure, a delay drawn uniformly from
/// `[0, min(max, initial · 2^(n-1))]`. Full jitter spreads many clients that failed together
/// (every adapter of a site after a network blip) instead of letting them retry in step.
///
/// It can be used statelessly ([`Backoff::delay`], with the caller counting failures, as the
/// forwarder's gate does) or as a link's schedule ([`Backoff::next_delay`] / [`Backoff::reset`]).
/// Randomness is an argument (`unit` in `[0, 1)`), so schedules are tested without an RNG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff from `initial` doubling up to `max` (`max` is raised to `initial` if lower).
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max: max.max(initial), failures: 0 }
    }

    /// The ceiling after `failures` consecutive failures (0 is treated as 1).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// The delay after `failures` consecutive failures, with `unit` uniform in `[0, 1)`.
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        self.ceiling(failures).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// Counts one more failure and returns the delay before the next attempt.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.delay(self.failures, unit)
    }

    /// The delay after the peer refused our credentials or licence: `wait` stretched by up to
    /// a quarter with `unit`, never shortened (a PBX that locks accounts after repeated
    /// failures must not see us sooner than the admin configured). Counts as a failure.
    pub fn after_auth_failure(&mut self, wait: Duration, unit: f64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        wait.mul_f64(1.0 + 0.25 * unit.clamp(0.0, 1.0))
    }

    /// Consecutive failures counted since the last [`Backoff::reset`].
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Back to the first delay (after a session that came up).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1_000));
        let ceilings: Vec<u128> = (0..7).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_millis(1_000), "no overflow");
    }

    #[test]
    fn a_schedule_counts_failures_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let full: Vec<u128> = (0..4).map(|_| b.next_delay(1.0).as_millis()).collect();
        assert_eq!(full, [100, 200, 400, 800]);
        assert_eq!(b.failures(), 4);
        b.reset();
        assert_eq!(b.next_delay(0.5), Duration::from_millis(50), "full jitter: half the ceiling at 0.5");
        assert_eq!(b.next_delay(0.0), Duration::ZERO);
    }

    #[test]
    fn auth_failures_wait_at_least_the_configured_time() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        assert_eq!(b.after_auth_failure(Duration::from_secs(300), 0.0), Duration::from_secs(300));
        assert_eq!(b.after_auth_failure(Duration::from_secs(300), 1.0), Duration::from_secs(375));
        assert_eq!(b.failures(), 2);
    }

    proptest! {
        #[test]
        fn delays_stay_within_the_ceiling(initial in 1u64..10_000, max in 1u64..1_000_000, n in 0u32..100, unit in -1.0f64..2.0) {
            let b = Backoff::new(Duration::from_millis(initial), Duration::from_millis(max));
            let d = b.delay(n, unit);
            prop_assert!(d <= b.ceiling(n));
            prop_assert!(b.ceiling(n) <= Duration::from_millis(max.max(initial)));
            prop_assert!(b.ceiling(n) >= Duration::from_millis(initial.min(max.max(initial))));
        }
    }
}
