//! Where the pipeline's batches go: the durable outbox, stdout (the demo), or both.

use std::io::Write;

use anyhow::Context;
use listener_core::{OutgoingEvent, StateChange};
use outbox::{NewEvent, Outbox};
use tokio_util::sync::CancellationToken;

use listener_kit::clock::now;

use crate::pipeline::EventSink;

/// Commits batches to the outbox: `Ok` means the events are on disk.
pub struct OutboxSink {
    /// The outbox.
    pub outbox: Outbox,
}

impl EventSink for OutboxSink {
    async fn accept(&mut self, events: Vec<OutgoingEvent>, state: Vec<StateChange>) -> anyhow::Result<()> {
        let created = now().0;
        let mut rows = Vec::with_capacity(events.len());
        for e in &events {
            rows.push(NewEvent::from_outgoing(e, created).context("serialising an event")?);
        }
        // Duplicates and cap drops are counted and logged (rate-limited) by the outbox itself.
        self.outbox.append(rows, state).await.context("committing events to the outbox")?;
        Ok(())
    }
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
