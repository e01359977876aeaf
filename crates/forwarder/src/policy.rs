//! The delivery policy, sans IO: how a response is classified, how long to back off, and the
//! global gate that pauses all delivery while the platform is failing. Time is an argument
//! (ms since the Unix epoch, the clock the outbox stores `next_attempt_ms` in) and so is the
//! randomness of the jitter, so all of it is tested with simulated time.

use std::time::{Duration, SystemTime};

/// The longest `Retry-After` honoured; a larger (or bogus) value is cut to this, so a broken
/// proxy cannot stop delivery for days.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: delete the event.
    Delivered,
    /// 408, 429, 5xx, 3xx, a connection error or a timeout: try again later, pausing all
    /// delivery. `retry_after` is the platform's `Retry-After`, if it sent one.
    Retry {
        /// The platform's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// 410: the endpoint is gone; stop all delivery and alert.
    Gone,
    /// Any other 4xx: the platform refuses this event; quarantine it and alert.
    Reject,
}

/// Classifies an HTTP status.
///
/// 3xx is retried rather than followed or quarantined: Standard Webhooks counts it as a
/// failure, and a redirect means the configured URL is wrong, which the admin fixes without
/// any event being lost.
pub fn classify(status: u16, retry_after: Option<Duration>) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        410 => Verdict::Gone,
        408 | 429 => Verdict::Retry { retry_after },
        400..=499 => Verdict::Reject,
        _ => Verdict::Retry { retry_after },
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3), capped at
/// [`RETRY_AFTER_MAX`]. A date in the past means now.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(delay.min(RETRY_AFTER_MAX))
}

pub use listener_kit::Backoff;

/// What the gate allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Deliver as many as the concurrency limit allows.
    All,
    /// Send a single probe (when nothing else is in flight).
    Probe,
    /// Send nothing before this time (ms).
    WaitUntil(u64),
    /// The endpoint is gone: send nothing until restarted.
    Stopped,
}

/// The state of delivery as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateState {
    /// The platform answers: deliver concurrently.
    Open,
    /// The platform fails: nothing is sent before `until_ms`.
    Paused {
        /// When the next probe may go.
        until_ms: u64,
        /// Consecutive failed rounds (drives the backoff).
        failures: u32,
    },
    /// The pause is over: one probe at a time until one succeeds.
    Probing {
        /// Consecutive failed rounds so far.
        failures: u32,
    },
    /// 410 Gone: delivery stopped.
    Stopped {
        /// When it stopped (ms).
        since_ms: u64,
    },
}

/// An outage that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// From the first failure to the success.
    pub after: Duration,
    /// Failed attempts in between.
    pub attempts: u64,
}

/// The global gate: when the platform fails, do not hammer it with N parallel requests, pause
/// everything for the backoff, then probe with one request; the first success reopens it and
/// resets the backoff.
#[derive(Debug, Clone)]
pub struct Gate {
    backoff: Backoff,
    state: GateState,
    outage: Option<(u64, u64)>,
}

impl Gate {
    /// An open gate.
    pub fn new(backoff: Backoff) -> Gate {
        Gate { backoff, state: GateState::Open, outage: None }
    }

    /// A new backoff (the settings were reloaded). After a 410 the gate opens again: the
    /// reload is how an admin points delivery at the new endpoint without a restart.
    pub fn set_backoff(&mut self, backoff: Backoff) {
        self.backoff = backoff;
        if matches!(self.state, GateState::Stopped { .. }) {
            self.state = GateState::Open;
            self.outage = None;
        }
    }

    /// The current state.
    pub fn state(&self) -> GateState {
        self.state
    }

    /// When the current outage started and how many attempts failed in it.
    pub fn outage(&self) -> Option<(u64, u64)> {
        self.outage
    }

    /// What may be sent at `now_ms` (a pause that is over turns into probing).
    pub fn permit(&mut self, now_ms: u64) -> Permit {
        match self.state {
            GateState::Open => Permit::All,
            GateState::Paused { until_ms, failures } if now_ms >= until_ms => {
                self.state = GateState::Probing { failures };
                Permit::Probe
            }
            GateState::Paused { until_ms, .. } => Permit::WaitUntil(until_ms),
            GateState::Probing { .. } => Permit::Probe,
            GateState::Stopped { .. } => Permit::Stopped,
        }
    }

    /// An attempt succeeded (or the platform answered at all, e.g. a 4xx rejection).
    /// Returns the outage it ended, if any.
    pub fn on_answer(&mut self, now_ms: u64) -> Option<Recovered> {
        if matches!(self.state, GateState::Stopped { .. }) {
            return None;
        }
        self.state = GateState::Open;
        self.outage
            .take()
            .map(|(since, attempts)| Recovered { after: Duration::from_millis(now_ms.saturating_sub(since)), attempts })
    }

    /// An attempt failed in a retryable way; returns when the event may be tried again (ms).
    /// `unit` is uniform in `[0, 1)` (the jitter).
    ///
    /// Failures of requests that were already in flight when the gate paused do not grow the
    /// backoff again (one round, one step); they can only lengthen the pause to honour a
    /// longer `Retry-After`.
    pub fn on_retryable(&mut self, now_ms: u64, retry_after: Option<Duration>, unit: f64) -> u64 {
        let outage = self.outage.get_or_insert((now_ms, 0));
        outage.1 += 1;
        let honour = |until: u64| match retry_after {
            Some(d) => until.max(now_ms.saturating_add(d.as_millis() as u64)),
            None => until,
        };
        match self.state {
            GateState::Open | GateState::Probing { .. } => {
                let failures = match self.state {
                    GateState::Probing { failures } => failures.saturating_add(1),
                    _ => 1,
                };
                let until_ms = honour(now_ms.saturating_add(self.backoff.delay(failures, unit).as_millis() as u64));
                self.state = GateState::Paused { until_ms, failures };
                until_ms
            }
            GateState::Paused { until_ms, failures } => {
                let until_ms = honour(until_ms);
                self.state = GateState::Paused { until_ms, failures };
                until_ms
            }
            GateState::Stopped { .. } => now_ms,
        }
    }

    /// 410 Gone: stop.
    pub fn on_gone(&mut self, now_ms: u64) {
        if !matches!(self.state, GateState::Stopped { .. }) {
            self.state = GateState::Stopped { since_ms: now_ms };
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn classification() {
        assert_eq!(classify(200, None), Verdict::Delivered);
        assert_eq!(classify(204, None), Verdict::Delivered);
        assert_eq!(classify(410, None), Verdict::Gone);
        for s in [408, 429, 500, 502, 503, 504, 301, 307] {
            assert_eq!(classify(s, Some(MS(5))), Verdict::Retry { retry_after: Some(MS(5)) }, "{s}");
        }
        for s in [400, 401, 403, 404, 409, 413, 422] {
            assert_eq!(classify(s, None), Verdict::Reject, "{s}");
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21 07:28:00
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("99999999", now), Some(RETRY_AFTER_MAX));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let b = Backoff::new(MS(500), Duration::from_secs(60));
        let ceilings: Vec<u64> = (1..=10).map(|n| b.ceiling(n).as_millis() as u64).collect();
        assert_eq!(ceilings, [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(60));
        assert_eq!(b.delay(3, 0.5), MS(1000));
        assert_eq!(b.delay(3, 0.0), Duration::ZERO);
    }

    #[test]
    fn an_outage_pauses_probes_and_recovers() {
        let mut gate = Gate::new(Backoff::new(MS(1000), Duration::from_secs(8)));
        assert_eq!(gate.permit(0), Permit::All);
        // Three requests were in flight; all fail. One step of backoff, not three.
        assert_eq!(gate.on_retryable(100, None, 0.5), 600);
        assert_eq!(gate.on_retryable(110, None, 0.99), 600);
        assert_eq!(gate.on_retryable(120, Some(MS(2000)), 0.0), 2120, "a longer Retry-After lengthens the pause");
        assert_eq!(gate.permit(2000), Permit::WaitUntil(2120));
        assert_eq!(gate.permit(2120), Permit::Probe);
        // The probe fails: the next step of backoff (ceiling 2 s).
        assert_eq!(gate.on_retryable(2200, None, 0.5), 3200);
        assert_eq!(gate.state(), GateState::Paused { until_ms: 3200, failures: 2 });
        assert_eq!(gate.permit(3200), Permit::Probe);
        let recovered = gate.on_answer(3300);
        assert_eq!(recovered, Some(Recovered { after: MS(3200), attempts: 4 }));
        assert_eq!(gate.permit(3300), Permit::All);
        // Reset: the next outage starts from the initial backoff again.
        assert_eq!(gate.on_retryable(4000, None, 0.5), 4500);
    }

    #[test]
    fn gone_is_final() {
        let mut gate = Gate::new(Backoff::new(MS(100), MS(1000)));
        gate.on_gone(50);
        assert_eq!(gate.permit(60), Permit::Stopped);
        assert_eq!(gate.on_answer(70), None);
        gate.on_retryable(80, None, 0.5);
        assert_eq!(gate.state(), GateState::Stopped { since_ms: 50 });
    }

    proptest! {
        /// Whatever the sequence of outcomes, a pause never exceeds the backoff cap unless a
        /// Retry-After asked for it, and a success always reopens the gate.
        #[test]
        fn pauses_are_bounded(events in prop::collection::vec((0u8..3, 0.0f64..1.0, prop::option::of(0u64..5_000)), 1..60)) {
            let cap = Duration::from_secs(4);
            let mut gate = Gate::new(Backoff::new(MS(100), cap));
            let mut now = 0u64;
            // The latest deadline any failure so far could justify.
            let mut bound = 0u64;
            for (kind, unit, retry_after) in events {
                now += 10;
                let _ = gate.permit(now);
                match kind {
                    0 => {
                        gate.on_answer(now);
                        prop_assert_eq!(gate.permit(now), Permit::All);
                    }
                    _ => {
                        let ra = retry_after.map(MS);
                        let until = gate.on_retryable(now, ra, unit);
                        bound = bound.max(now + cap.as_millis() as u64 + ra.map_or(0, |d| d.as_millis() as u64));
                        prop_assert!(until <= bound, "until {} now {} bound {}", until, now, bound);
                    }
                }
            }
        }
    }
}
