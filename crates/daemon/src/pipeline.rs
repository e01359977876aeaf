//! The pipeline task: adapters → numbers → correlation → lifecycle → sink.
//!
//! One task owns the pure cores and drives them; adapters feed it through a bounded channel
//! (so a slow sink slows the PBX readers instead of dropping signals). Everything that arrives
//! while a batch is being committed goes into the next batch: one sink call (one outbox
//! commit) covers a burst.

use std::future::Future;

use listener_core::{
    AdapterEvent, BoxFuture, CallLifecycle, CorrelatedSignal, LegBinding, NumberPlan, OutgoingEvent, SignalBody,
    SignalSink, SinkClosed, StateChange, UnixMillis,
};
use tokio::sync::mpsc;
use tracing::{debug, info};

/// The most adapter events folded into one batch.
const MAX_BATCH_INPUTS: usize = 1024;

/// Where built events go: stdout for the demo, the outbox for the daemon.
pub trait EventSink {
    /// Takes one batch of events and the lifecycle state changes that go with them. For a
    /// durable sink, `Ok` means committed.
    fn accept(
        &mut self,
        events: Vec<OutgoingEvent>,
        state: Vec<StateChange>,
    ) -> impl Future<Output = anyhow::Result<()>>;
}

/// The adapters' end of the pipeline channel.
#[derive(Clone)]
pub struct ChannelSink(pub mpsc::Sender<AdapterEvent>);

impl SignalSink for ChannelSink {
    fn send(&self, event: AdapterEvent) -> BoxFuture<'_, Result<(), SinkClosed>> {
        Box::pin(async move { self.0.send(event).await.map_err(|_| SinkClosed) })
    }
}

/// What the pipeline did, for the final log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PipelineStats {
    /// Adapter events received.
    pub inputs: u64,
    /// Level 3 events handed to the sink.
    pub events: u64,
}

/// The pure parts the pipeline drives.
pub struct Cores {
    /// Normalises numbers once, before correlation.
    pub numbers: NumberPlan,
    /// Keeps the contract and builds events.
    pub lifecycle: CallLifecycle,
}

/// Runs until every adapter has dropped its sender, then returns after the last batch is in
/// the sink. Stop the adapters to stop the pipeline: nothing in the channel is lost.
pub async fn run(
    mut rx: mpsc::Receiver<AdapterEvent>,
    mut cores: Cores,
    sink: &mut impl EventSink,
) -> anyhow::Result<PipelineStats> {
    let mut stats = PipelineStats::default();
    while let Some(first) = rx.recv().await {
        let mut n = 1;
        cores.handle(first);
        while n < MAX_BATCH_INPUTS {
            match rx.try_recv() {
                Ok(ev) => {
                    cores.handle(ev);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        stats.inputs += n as u64;
        let events: Vec<OutgoingEvent> = std::iter::from_fn(|| cores.lifecycle.poll_event()).collect();
        let state = cores.lifecycle.drain_state_changes();
        if events.is_empty() && state.is_empty() {
            continue;
        }
        stats.events += events.len() as u64;
        debug!(events = events.len(), state_changes = state.len(), inputs = n, "Committing a batch.");
        sink.accept(events, state).await?;
    }
    info!(inputs = stats.inputs, events = stats.events, open_calls = cores.lifecycle.open_calls(), "Pipeline drained.");
    Ok(stats)
}

impl Cores {
    fn handle(&mut self, event: AdapterEvent) {
        match event {
            AdapterEvent::Signal(mut signal) => {
                if let SignalBody::Call(call) = &mut signal.body {
                    self.numbers.normalise_call_info(&mut call.info);
                }
                metrics::counter!("pbx_listener_signals_received_total", "pbx" => signal.pbx.name.to_string())
                    .increment(1);
                // Correlation is wired in by the correlation issue; until then every call is unmatched.
                self.lifecycle.handle_signal(CorrelatedSignal { signal, binding: LegBinding::unmatched() });
            }
            AdapterEvent::Resync { pbx, live_calls, at } => {
                info!(pbx = %pbx, live_calls = live_calls.len(), "PBX snapshot complete; reconciling open calls.");
                self.lifecycle.handle_resync(&pbx, &live_calls, at);
            }
            AdapterEvent::Link { pbx, state } => {
                info!(pbx = %pbx, state = ?state, "PBX link changed.");
            }
        }
    }
}

/// Now, as the cores want it.
pub fn now() -> UnixMillis {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    UnixMillis(u64::try_from(ms).unwrap_or(u64::MAX))
}
