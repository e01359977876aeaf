//! systemd notifications (`Type=notify`): READY, STOPPING, STATUS and the watchdog.
//!
//! All calls are no-ops outside systemd (no `NOTIFY_SOCKET`). The watchdog is pinged from the
//! pipeline's own loop, never from a detached timer, so a stuck pipeline gets us restarted.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// Tells systemd we are ready (configuration read, outbox open, listeners bound).
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd a reload started (`RELOADING=1` with the monotonic time it asks for); the
/// next [`ready`] ends it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now, NotifyState::Status("Reloading the configuration")]),
        Err(_) => send(&[NotifyState::Reloading, NotifyState::Status("Reloading the configuration")]),
    }
}

/// Tells systemd we are stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("Shutting down")]);
}

/// Updates the line `systemctl status` shows.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

fn send(states: &[NotifyState<'_>]) {
    // Failing to notify is not worth stopping for: systemd's own timeouts cover it.
    let _ = sd_notify::notify(states);
}

/// Pings the watchdog at half its interval, when the owner calls [`Watchdog::tick`] from its
/// work loop.
pub struct Watchdog {
    every: Option<Duration>,
    last: Instant,
}

impl Watchdog {
    /// Reads `WATCHDOG_USEC`; inactive when systemd did not ask for a watchdog.
    pub fn from_env() -> Watchdog {
        Watchdog { every: sd_notify::watchdog_enabled().map(|d| d / 2), last: Instant::now() }
    }

    /// The interval at which the loop must call [`Watchdog::tick`], if any.
    pub fn interval(&self) -> Option<Duration> {
        self.every
    }

    /// Called from the work loop: pings when half the interval has passed.
    pub fn tick(&mut self) {
        if let Some(every) = self.every
            && self.last.elapsed() >= every
        {
            send(&[NotifyState::Watchdog]);
            self.last = Instant::now();
        }
    }
}
