//! Where the pipeline's batches go: the durable outbox, stdout (the demo), or both.

use std::io::Write;

use std::time::Duration;

use anyhow::Context;
use forwarder::{DeliveryState, DeliveryStatus};
use listener_core::{OutgoingEvent, StateChange};
use listener_kit::Backoff;
use outbox::{NewEvent, Outbox, OutboxError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use listener_kit::clock::now;

use crate::admission::Admission;
use crate::notify::Watchdog;
use crate::pipeline::EventSink;

/// Commits batches to the outbox: `Ok` means the events are on disk.
pub struct OutboxSink {
    /// The outbox.
    pub outbox: Outbox,
    /// Whether delivery is healthy, for [`Admission`]; `None`: nothing is held back (the demo).
    pub delivery: Option<watch::Receiver<DeliveryStatus>>,
    /// Holds batches back while a healthy delivery falls behind (see `admission.rs`).
    pub admission: Admission,
}

impl OutboxSink {
    /// A sink that never holds a batch back.
    pub fn new(outbox: Outbox) -> OutboxSink {
        OutboxSink { outbox, delivery: None, admission: Admission::default() }
    }

    /// Waits while [`Admission`] holds the next batch back (feeding the watchdog meanwhile).
    async fn admit(&mut self) {
        let Some(delivery) = &self.delivery else { return };
        let mut watchdog = None;
        let mut held = false;
        loop {
            let delivering = matches!(delivery.borrow().state, DeliveryState::Delivering);
            if self.admission.admits(delivering, self.outbox.pending_events()) {
                break;
            }
            if !held {
                held = true;
                metrics::counter!("pbx_listener_pipeline_held_batches_total").increment(1);
            }
            watchdog.get_or_insert_with(Watchdog::from_env).tick();
            tokio::time::sleep(ADMISSION_POLL).await;
        }
    }
}

/// How often a held batch looks again.
const ADMISSION_POLL: Duration = Duration::from_millis(5);

/// The waits between two tries of a batch the outbox refused because its disk is full.
const DISK_FULL_RETRY_MIN: Duration = Duration::from_millis(100);
const DISK_FULL_RETRY_MAX: Duration = Duration::from_secs(5);

impl EventSink for OutboxSink {
    async fn accept(&mut self, events: Vec<OutgoingEvent>, state: Vec<StateChange>) -> anyhow::Result<()> {
        self.admit().await;
        let created = now().0;
        let mut rows = Vec::with_capacity(events.len());
        for e in &events {
            rows.push(NewEvent::from_outgoing(e, created).context("serialising an event")?);
        }
        // Duplicates and cap drops are counted and logged (rate-limited) by the outbox itself.
        // A full disk is not fatal: the batch waits here (and the adapters behind it, whose
        // links stay up) until a commit goes through; the outbox logs it and sets
        // `pbx_listener_outbox_disk_full`. Waiting for the disk is this loop's work, so it
        // keeps the systemd watchdog fed.
        let mut backoff = Backoff::new(DISK_FULL_RETRY_MIN, DISK_FULL_RETRY_MAX);
        let mut watchdog = None;
        loop {
            match self.outbox.append(rows.clone(), state.clone()).await {
                Ok(_) => return Ok(()),
                Err(OutboxError::DiskFull) => {
                    let watchdog = watchdog.get_or_insert_with(Watchdog::from_env);
                    watchdog.tick();
                    tokio::time::sleep(backoff.next_delay(0.5 + rand_unit() / 2.0)).await;
                }
                Err(e) => return Err(e).context("committing events to the outbox"),
            }
        }
    }
}

/// A number in `[0, 1)` for the backoff's jitter (the clock's nanoseconds are random enough to
/// keep retries from lining up, which is all this needs).
fn rand_unit() -> f64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

/// Prints events as JSON lines; cancels `stop` after `remaining` events (`demo --count`).
pub struct StdoutSink {
    /// Events still to print, or `None` for no limit.
    pub remaining: Option<u64>,
    /// Cancelled when the count is reached or stdout is closed.
    pub stop: CancellationToken,
}

impl StdoutSink {
    fn print(&mut self, events: &[OutgoingEvent]) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        for e in events {
            if self.remaining == Some(0) {
                break;
            }
            let mut line = e.event.to_json_bytes();
            line.push(b'\n');
            if let Err(err) = out.write_all(&line) {
                // A closed pipe (`demo | head`) is a normal way to stop.
                self.stop.cancel();
                self.remaining = Some(0);
                if err.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(err).context("writing to stdout");
            }
            if let Some(r) = self.remaining.as_mut() {
                *r -= 1;
            }
        }
        out.flush().ok();
        if self.remaining == Some(0) {
            self.stop.cancel();
        }
        Ok(())
    }
}

impl EventSink for StdoutSink {
    async fn accept(&mut self, events: Vec<OutgoingEvent>, _state: Vec<StateChange>) -> anyhow::Result<()> {
        self.print(&events)
    }
}

/// Commits to the outbox, then prints (`demo --forward-to`): what is printed is on disk.
pub struct TeeSink {
    /// The durable part.
    pub outbox: OutboxSink,
    /// The printed part.
    pub stdout: StdoutSink,
}

impl EventSink for TeeSink {
    async fn accept(&mut self, events: Vec<OutgoingEvent>, state: Vec<StateChange>) -> anyhow::Result<()> {
        let limit = self.stdout.remaining.map_or(events.len(), |r| events.len().min(r as usize));
        let mut events = events;
        events.truncate(limit);
        if events.is_empty() && state.is_empty() {
            return Ok(());
        }
        self.outbox.accept(events.clone(), state).await?;
        self.stdout.print(&events)
    }
}
