//! The pipeline task: adapters → numbers → correlation → lifecycle → sink.
//!
//! One task owns the pure cores and drives them: PBX signals from the adapters, leg updates
//! from the announcement endpoint and the SIP tap, and the correlator's timers. Adapters feed
//! it through a bounded channel (a slow sink slows the PBX readers instead of dropping
//! signals). Everything that arrives while a batch is being committed goes into the next batch:
//! one sink call (one outbox commit) covers a burst.

use std::future::Future;
use std::time::Duration;

use correlation::{CorrelationSettings, CorrelationStats, Correlator, CorrelatorOutput, LegUpdate};
use listener_core::{
    AdapterEvent, BoxFuture, CallLifecycle, EventContext, NumberCache, NumberPlan, OutgoingEvent, PbxId, SignalBody,
    SignalSink, SinkClosed, StateChange, UnixMillis,
};
use listener_kit::clock::now;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::notify::Watchdog;

/// Distinct numbers remembered by the pipeline's number cache (callers and DIDs of live calls).
pub const NUMBER_CACHE: usize = 16_384;

/// The most inputs folded into one batch.
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

    /// Correlation's counters since start, after each batch of inputs (for `/status`). Default:
    /// ignored.
    fn correlation(&mut self, _stats: &CorrelationStats) {}
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
    /// Adapter events and leg updates received.
    pub inputs: u64,
    /// Level 3 events handed to the sink.
    pub events: u64,
}

/// The pure parts the pipeline drives.
pub struct Cores {
    /// Normalises numbers once, before correlation (memoised: a call's signals repeat them).
    pub numbers: NumberCache,
    /// Binds PBX calls to platform legs.
    pub correlator: Correlator,
    /// Keeps the contract and builds events.
    pub lifecycle: CallLifecycle,
    /// Adapter checkpoints not yet committed: each waits until correlation holds no signal of
    /// its PBX, so it is never on disk before the events of the signals sent ahead of it.
    pub checkpoints: Vec<(PbxId, StateChange)>,
}

impl Cores {
    /// The pipeline's cores, with no checkpoint pending.
    pub fn new(numbers: NumberCache, correlator: Correlator, lifecycle: CallLifecycle) -> Cores {
        Cores { numbers, correlator, lifecycle, checkpoints: Vec::new() }
    }
}

/// The outbox state key of an adapter's checkpoint key.
pub fn checkpoint_key(pbx: &str, key: &str) -> String {
    format!("{CHECKPOINT_PREFIX}{pbx}/{key}")
}

/// The prefix of adapters' checkpoints among the outbox's state records.
pub const CHECKPOINT_PREFIX: &str = "adapter/";

/// The pipeline's inputs.
pub struct Inputs {
    /// From the adapters. The pipeline ends when every sender is dropped.
    pub adapters: mpsc::Receiver<AdapterEvent>,
    /// From the leg sources (may close at any time; the pipeline goes on).
    pub legs: mpsc::Receiver<LegUpdate>,
    /// New settings for the cores (a configuration reload), if the caller reloads.
    pub control: Option<mpsc::Receiver<CoreSettings>>,
}

/// What a configuration reload changes in the cores. They keep what they know: open calls,
/// learned legs, bindings, calls waiting for a leg.
pub struct CoreSettings {
    /// `[numbers]`.
    pub numbers: NumberPlan,
    /// `[correlation]`, with whether a leg source is configured.
    pub correlation: CorrelationSettings,
    /// `[account]` and `[meta]`.
    pub context: EventContext,
}

/// Runs until every adapter has dropped its sender; then releases what correlation still
/// holds and returns after the last batch is in the sink. Stop the adapters to stop the
/// pipeline: nothing in the channel is lost.
pub async fn run(
    inputs: Inputs,
    mut cores: Cores,
    sink: &mut impl EventSink,
    watchdog: &mut Watchdog,
) -> anyhow::Result<PipelineStats> {
    let Inputs { adapters: mut rx, legs: mut legs_rx, mut control } = inputs;
    let mut stats = PipelineStats::default();
    let mut correlation_log = CorrelationLog::default();
    let mut legs_open = true;
    let tick = watchdog.interval().unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(1));
    let stall = crate::fault::stall_file();
    loop {
        if let Some(path) = &stall {
            crate::fault::stall_while_present(path).await;
        }
        let deadline = cores.correlator.poll_timeout();
        let sleep = deadline.map_or(tick, |d| Duration::from_millis(d.since(now())).min(tick));
        let mut n = 0;
        let mut adapters_done = false;
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => {
                    // Legs already accepted go first. A call reported after the fact (SMDR,
                    // CDR) is decided on arrival, so a leg announced before it must be known
                    // by then; `select!` alone may pick the signals first when both wait.
                    n += apply_queued_legs(&mut legs_rx, &mut legs_open, &mut cores.correlator);
                    cores.handle(ev);
                    n += 1;
                    while n < MAX_BATCH_INPUTS {
                        let Ok(ev) = rx.try_recv() else { break };
                        cores.handle(ev);
                        n += 1;
                    }
                }
                None => adapters_done = true,
            },
            leg = legs_rx.recv(), if legs_open => match leg {
                Some(leg) => {
                    cores.correlator.handle_leg(now(), leg);
                    n += 1;
                }
                None => legs_open = false,
            },
            Some(settings) = next_settings(&mut control) => {
                cores.reconfigure(settings);
                info!("The pipeline took the reloaded settings (open calls, legs and bindings kept).");
            }
            _ = tokio::time::sleep(sleep) => {}
        }
        watchdog.tick();
        let now = now();
        let timed_out = adapters_done || deadline.is_some_and(|d| d <= now);
        if adapters_done {
            // Shutting down: release every call still waiting for its leg, as the policy says.
            cores.correlator.handle_timeout(UnixMillis(u64::MAX));
        } else if timed_out {
            cores.correlator.handle_timeout(now);
        }
        stats.inputs += n as u64;
        cores.feed_lifecycle();
        // After a timer too: legs swept while nothing arrives must show on the gauges.
        if n > 0 || timed_out {
            let c = cores.correlator.stats();
            export_correlation_metrics(&c);
            correlation_log.observe(&c);
            sink.correlation(&c);
        }
        let events: Vec<OutgoingEvent> = std::iter::from_fn(|| cores.lifecycle.poll_event()).collect();
        let mut state = cores.lifecycle.drain_state_changes();
        cores.release_checkpoints(&mut state);
        if !events.is_empty() || !state.is_empty() {
            stats.events += events.len() as u64;
            debug!(events = events.len(), state_changes = state.len(), inputs = n, "Committing a batch.");
            sink.accept(events, state).await?;
        }
        if adapters_done {
            break;
        }
    }
    info!(inputs = stats.inputs, events = stats.events, open_calls = cores.lifecycle.open_calls(), "Pipeline drained.");
    Ok(stats)
}

/// Applies every leg update already queued; marks the leg sources closed if they are gone.
fn apply_queued_legs(
    legs_rx: &mut mpsc::Receiver<LegUpdate>,
    legs_open: &mut bool,
    correlator: &mut Correlator,
) -> usize {
    let mut n = 0;
    while *legs_open {
        match legs_rx.try_recv() {
            Ok(leg) => {
                correlator.handle_leg(now(), leg);
                n += 1;
            }
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => *legs_open = false,
        }
    }
    n
}

/// The next settings from the reload channel; never, when there is none (or it closed).
async fn next_settings(control: &mut Option<mpsc::Receiver<CoreSettings>>) -> Option<CoreSettings> {
    match control {
        Some(rx) => match rx.recv().await {
            Some(settings) => Some(settings),
            None => {
                *control = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

impl Cores {
    /// Takes reloaded settings.
    pub fn reconfigure(&mut self, settings: CoreSettings) {
        self.numbers = NumberCache::new(settings.numbers, NUMBER_CACHE);
        self.correlator.reconfigure(settings.correlation);
        self.lifecycle.set_context(settings.context);
    }

    fn handle(&mut self, event: AdapterEvent) {
        match event {
            AdapterEvent::Signal(mut signal) => {
                if let SignalBody::Call(call) = &mut signal.body {
                    self.numbers.normalise_call_info(&mut call.info);
                }
                metrics::counter!("pbx_listener_signals_received_total", "pbx" => signal.pbx.name.to_string())
                    .increment(1);
                self.correlator.handle_signal(now(), signal);
            }
            AdapterEvent::Resync { pbx, live_calls, at } => {
                // Correlation first: the signals of a call that is gone but still waiting for its
                // leg must reach the lifecycle before it decides which calls to close, or they
                // would open devices nothing closes.
                self.correlator.release_gone(now(), &pbx, &live_calls);
                self.feed_lifecycle();
                info!(pbx = %pbx, live_calls = live_calls.len(), "PBX snapshot complete; reconciling open calls.");
                self.lifecycle.handle_resync(&pbx, &live_calls, at);
            }
            AdapterEvent::Link { pbx, state } => {
                debug!(pbx = %pbx, state = ?state, "PBX link state.");
            }
            AdapterEvent::Checkpoint { pbx, key, value } => {
                let key = checkpoint_key(&pbx.name, &key);
                self.checkpoints.push((pbx, StateChange { key, value }));
            }
        }
    }

    /// Moves the checkpoints whose PBX has no signal held by correlation into `state`, in the
    /// order they came; the others wait.
    fn release_checkpoints(&mut self, state: &mut Vec<StateChange>) {
        if self.checkpoints.is_empty() {
            return;
        }
        let mut held: Vec<PbxId> = Vec::new();
        let correlator = &self.correlator;
        self.checkpoints.retain(|(pbx, change)| {
            if held.contains(pbx) || correlator.holds_signals_of(pbx) {
                held.push(pbx.clone());
                return true;
            }
            state.push(change.clone());
            false
        });
    }

    /// Moves everything correlation has decided into the lifecycle.
    fn feed_lifecycle(&mut self) {
        while let Some(out) = self.correlator.poll_output() {
            match out {
                CorrelatorOutput::Correlated(signal) => self.lifecycle.handle_signal(signal),
                CorrelatorOutput::Dropped { signal, reason } => {
                    metrics::counter!("pbx_listener_signals_dropped_total", "reason" => reason.as_str()).increment(1);
                    debug!(pbx = %signal.pbx, reason = reason.as_str(), "Dropped an unmatched signal (correlation.unmatched = \"drop\").");
                }
            }
        }
    }
}

/// Logs what correlation decided, as a summary at most every [`CorrelationLog::EVERY`]: a line
/// per call would flood the journal on a busy PBX, silence would hide a broken setup.
#[derive(Default)]
struct CorrelationLog {
    logged: CorrelationStats,
    at: Option<std::time::Instant>,
}

impl CorrelationLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn observe(&mut self, now: &CorrelationStats) {
        if self.at.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        let was = &self.logged;
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let bound = d(now.matched_sip_call_id, was.matched_sip_call_id)
            + d(now.matched_call_id_pattern, was.matched_call_id_pattern)
            + d(now.matched_token, was.matched_token)
            + d(now.matched_number_time, was.matched_number_time);
        let (unmatched, ambiguous) = (d(now.unmatched, was.unmatched), d(now.ambiguous, was.ambiguous));
        let (late, expired) = (d(now.late_legs, was.late_legs), d(now.legs_expired, was.legs_expired));
        let learned = d(now.legs_learned, was.legs_learned);
        if bound + unmatched + late + expired + learned == 0 {
            return;
        }
        info!(
            bound,
            sip_call_id = d(now.matched_sip_call_id, was.matched_sip_call_id),
            call_id_pattern = d(now.matched_call_id_pattern, was.matched_call_id_pattern),
            token = d(now.matched_token, was.matched_token),
            number_time = d(now.matched_number_time, was.matched_number_time),
            legs_learned = learned,
            "Correlation: PBX calls bound to platform legs."
        );
        if unmatched + late + expired > 0 {
            warn!(
                unmatched,
                ambiguous,
                late_legs = late,
                expired_legs = expired,
                "Correlation: some PBX calls found no platform leg (see docs/correlation.md)."
            );
        }
        self.logged = now.clone();
        self.at = Some(std::time::Instant::now());
    }
}

/// Mirrors the correlator's counters into metrics (`pbx_listener_correlation_*`).
fn export_correlation_metrics(s: &CorrelationStats) {
    for (method, n) in [
        ("sip-call-id", s.matched_sip_call_id),
        ("call-id-pattern", s.matched_call_id_pattern),
        ("token", s.matched_token),
        ("number-time", s.matched_number_time),
    ] {
        metrics::counter!("pbx_listener_correlation_matched_calls_total", "method" => method).absolute(n);
    }
    metrics::counter!("pbx_listener_correlation_unmatched_calls_total").absolute(s.unmatched);
    metrics::counter!("pbx_listener_correlation_no_leg_expected_calls_total").absolute(s.no_leg_expected);
    metrics::counter!("pbx_listener_correlation_ambiguous_calls_total").absolute(s.ambiguous);
    metrics::counter!("pbx_listener_correlation_late_legs_total").absolute(s.late_legs);
    metrics::counter!("pbx_listener_correlation_expired_legs_total").absolute(s.legs_expired);
    metrics::counter!("pbx_listener_correlation_learned_legs_total").absolute(s.legs_learned);
    metrics::counter!("pbx_listener_correlation_stale_leg_updates_total").absolute(s.stale_leg_updates);
    metrics::gauge!("pbx_listener_correlation_legs").set(s.legs as f64);
    metrics::gauge!("pbx_listener_correlation_waiting_calls").set(s.pending_calls as f64);
}

/// Logs a leg source that stopped (the pipeline goes on without it).
pub fn leg_source_stopped(name: &str, error: Option<&dyn std::fmt::Display>) {
    match error {
        Some(e) => warn!(source = name, error = %e, "A leg source stopped."),
        None => debug!(source = name, "A leg source stopped."),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use correlation::CorrelationConfig;
    use listener_core::{
        CallChange, CallInfo, CallSignal, EventContext, Extension, Facts, PbxCallId, PbxId, PbxSignal, PbxType,
    };

    use super::*;

    fn cores() -> Cores {
        let ctx =
            EventContext { account_id: uuid::Uuid::nil(), account_name: "T".into(), static_meta: BTreeMap::new() };
        Cores::new(
            NumberCache::new(listener_core::NumberPlan::new("GB", 6).unwrap(), 16),
            Correlator::new(CorrelationConfig::default()).unwrap(),
            CallLifecycle::new(ctx),
        )
    }

    /// A call rings while its leg is awaited, the link drops, the call ends meanwhile: the
    /// snapshot no longer lists it, so its ringing comes out and is closed at once.
    #[test]
    fn a_resync_closes_a_call_that_was_still_waiting_for_its_leg() {
        let mut cores = cores();
        let pbx = PbxId::new("site-1", PbxType::new("test-pbx"));
        cores.handle(AdapterEvent::Signal(PbxSignal {
            pbx: pbx.clone(),
            at: now(),
            source: "test",
            facts: Facts::new(),
            body: SignalBody::Call(CallSignal {
                call: PbxCallId("7".into()),
                call_started: now(),
                extension: Some(Extension("201".into())),
                change: CallChange::Ringing,
                info: CallInfo::default(),
            }),
        }));
        cores.feed_lifecycle();
        assert_eq!(cores.lifecycle.poll_event(), None, "the call waits for its leg");
        cores.handle(AdapterEvent::Resync { pbx, live_calls: vec![], at: now() });
        let events: Vec<_> = std::iter::from_fn(|| cores.lifecycle.poll_event()).map(|e| e.event).collect();
        let seen: Vec<(&str, Option<&str>)> =
            events.iter().map(|e| (e.status.as_str(), e.meta.get("reconciled").map(String::as_str))).collect();
        assert_eq!(seen, [("ringing", None), ("disconnected", Some("true"))]);
        assert_eq!(cores.lifecycle.open_calls(), 0);
    }

    /// Collects what the pipeline commits.
    #[derive(Default)]
    struct Collected(Vec<OutgoingEvent>);

    impl EventSink for Collected {
        async fn accept(&mut self, events: Vec<OutgoingEvent>, _state: Vec<StateChange>) -> anyhow::Result<()> {
            self.0.extend(events);
            Ok(())
        }
    }

    /// A leg accepted before an SMDR record arrives binds it, however the pipeline's wake-up
    /// finds the two queued (a call reported after the fact is decided on arrival).
    #[tokio::test]
    async fn a_leg_queued_before_an_after_the_fact_call_binds_it() {
        let (adapter_tx, adapters) = mpsc::channel(8);
        let (legs_tx, legs) = mpsc::channel(8);
        let started = now();
        let mut leg = correlation::LegFacts::new(correlation::LegSource::Announcement);
        leg.call_sid = Some(uuid::Uuid::from_u128(0xb1));
        leg.parent_call_sid = Some(uuid::Uuid::from_u128(0xa1));
        leg.from = Some("447700900042".into());
        leg.to = Some("441234567890".into());
        leg.started = Some(started);
        legs_tx.send(LegUpdate::Learned(leg)).await.unwrap();
        let info = CallInfo {
            direction: listener_core::Direction::Inbound,
            external_number: Some("447700900042".into()),
            dialled_number: Some("441234567890".into()),
            ..CallInfo::default()
        };
        for change in [CallChange::Ringing, CallChange::Ended] {
            let body = SignalBody::Call(CallSignal {
                call: PbxCallId("1000001".into()),
                call_started: started,
                extension: Some(Extension("4001".into())),
                change,
                info: info.clone(),
            });
            let pbx = PbxId::new("r9", PbxType::new("avaya-r9"));
            let signal = PbxSignal { pbx, at: started, source: "smdr", facts: Facts::new(), body };
            adapter_tx.send(AdapterEvent::Signal(signal)).await.unwrap();
        }
        drop((adapter_tx, legs_tx));

        let mut sink = Collected::default();
        let inputs = Inputs { adapters, legs, control: None };
        run(inputs, cores(), &mut sink, &mut crate::notify::Watchdog::from_env()).await.unwrap();
        use generic_event::Status;
        let bound: Vec<(Status, Option<uuid::Uuid>)> =
            sink.0.iter().map(|e| (e.event.status, e.event.call_sid)).collect();
        let b1 = Some(uuid::Uuid::from_u128(0xb1));
        assert_eq!(bound, [(Status::Ringing, b1), (Status::Disconnected, b1)]);
    }
}
