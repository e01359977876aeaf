//! An adapter run in-process against a simulator, for tests: what it sends is collected, and
//! every wait is bounded (a hang fails the test with what arrived so far; nothing asserts on
//! time).

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use listener_core::{Adapter, AdapterError, AdapterEvent, BoxFuture, SignalSink, SinkClosed};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How long a wait may last before the test fails.
pub const LIMIT: Duration = Duration::from_secs(20);

/// A running adapter and what it sent so far.
pub struct AdapterRun {
    /// Everything the adapter sent, in order, as far as it was received.
    pub events: Vec<AdapterEvent>,
    rx: mpsc::UnboundedReceiver<AdapterEvent>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), AdapterError>>>,
}

/// The adapter's sink: an unbounded channel (tests read everything).
struct ChannelSink(mpsc::UnboundedSender<AdapterEvent>);

impl SignalSink for ChannelSink {
    fn send(&self, event: AdapterEvent) -> BoxFuture<'_, Result<(), SinkClosed>> {
        let sent = self.0.send(event).map_err(|_| SinkClosed);
        Box::pin(async move { sent })
    }
}

impl AdapterRun {
    /// Runs `adapter` on the current tokio runtime until [`AdapterRun::stop`].
    pub fn start(adapter: Box<dyn Adapter>) -> AdapterRun {
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let sink = ChannelSink(tx);
            let shutdown: BoxFuture<'_, ()> = Box::pin(async move {
                let _ = stop_rx.await;
            });
            adapter.run(&sink, shutdown).await
        });
        AdapterRun { events: Vec::new(), rx, stop: Some(stop_tx), task: Some(task) }
    }

    /// Receives events until `done` says so (the event that satisfied it is kept); fails after
    /// [`LIMIT`] with what arrived.
    pub async fn wait_until(&mut self, what: &str, mut done: impl FnMut(&AdapterEvent) -> bool) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .map_err(|_| anyhow!("timed out waiting for {what}; got so far:\n{:#?}", self.events))?
                .with_context(|| format!("the adapter stopped while waiting for {what}"))?;
            let stop = done(&event);
            self.events.push(event);
            if stop {
                return Ok(());
            }
        }
    }

    /// The next event, bounded by [`LIMIT`] (also kept in [`AdapterRun::events`]).
    pub async fn next(&mut self) -> anyhow::Result<AdapterEvent> {
        let event = tokio::time::timeout(LIMIT, self.rx.recv())
            .await
            .map_err(|_| anyhow!("no event within {LIMIT:?}"))?
            .context("the adapter stopped")?;
        self.events.push(event.clone());
        Ok(event)
    }

    /// The next event if one comes within `wait` (kept in [`AdapterRun::events`]); `None`
    /// when none came, or the adapter stopped.
    pub async fn next_within(&mut self, wait: Duration) -> Option<AdapterEvent> {
        let event = tokio::time::timeout(wait, self.rx.recv()).await.ok().flatten()?;
        self.events.push(event.clone());
        Some(event)
    }

    /// Asks the adapter to stop, waits (bounded) for it, and keeps what was still queued.
    /// Returns what the adapter's `run` returned.
    pub async fn stop(&mut self) -> anyhow::Result<Result<(), AdapterError>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().context("the adapter was already stopped")?;
        let result = tokio::time::timeout(LIMIT, task)
            .await
            .map_err(|_| anyhow!("the adapter did not stop within {LIMIT:?}"))?
            .context("the adapter task panicked")?;
        while let Ok(e) = self.rx.try_recv() {
            self.events.push(e);
        }
        Ok(result)
    }
}
