//! `pbx-listener run`: the daemon.
//!
//! Start-up order makes every failure happen before READY: configuration (already validated),
//! outbox open (refuses to start when the cap does not fit on the disk), lifecycle state
//! restored, forwarder built, admin endpoint bound, then adapters and the pipeline start and we
//! tell systemd we are ready. Shutdown runs the other way so nothing is lost: adapters stop
//! first, the pipeline commits what they sent, then the forwarder stops and the outbox closes.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use correlation::{Correlator, LegUpdate};
use forwarder::{DeliveryState, Forwarder};
use leg_announce::LegAnnounceServer;
use listener_core::{
    AdapterError, AdapterEvent, AdapterState, BoxFuture, CallLifecycle, EventContext, LinkState, NumberCache,
    SignalSink, SinkClosed,
};
use outbox::{Outbox, StateChange};
use sip_tap::SipTap;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::admin::{self, AdminContext, Check, Health};
use crate::config::Config;
use crate::notify::{self, Watchdog};
use crate::pipeline::{self, ChannelSink, Cores, Inputs, NUMBER_CACHE};
use crate::sinks::OutboxSink;
use crate::status::StatusBoard;
use crate::tail::{self, EventTap, TapSink};

/// Capacity of the adapters → pipeline channel: a burst this size is absorbed without slowing
/// the PBX readers.
const PIPELINE_CHANNEL: usize = 4096;

/// The shortest interval between two delivery status updates (health, `systemctl status`).
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// How long the platform may fail before `/health/ready` turns red.
const OUTAGE_UNREADY: Duration = Duration::from_secs(300);

/// Runs the daemon until `shutdown` (SIGTERM/SIGINT) or a fatal error.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = admin::install_metrics()?;
    let health = Health::default();
    let board = StatusBoard::default();
    let tap = EventTap::new(tail::CAPACITY, tail::MAX_CLIENTS);

    let outbox = open_outbox(&config)?;
    let (lifecycle, mut adapter_states) = restore_state(&config, &outbox).await?;

    let forwarder = Forwarder::new(outbox.clone(), config.platform.clone()).context("building the HTTP client")?;
    let forwarder_stop = CancellationToken::new();
    let status_task = tokio::spawn(watch_delivery(forwarder.status(), health.clone()));
    let (delivery_status, last_failure) = (forwarder.status(), forwarder.last_failure());
    let admission_status = forwarder.status();
    let mut forwarder_task = tokio::spawn({
        let stop = forwarder_stop.clone();
        async move { forwarder.run(stop.cancelled_owned()).await }
    });

    let admin_stop = CancellationToken::new();
    let admin_task = match config.admin.listen {
        Some(addr) => {
            let ctx = AdminContext {
                health: health.clone(),
                metrics,
                board: board.clone(),
                outbox: outbox.clone(),
                delivery: delivery_status,
                last_failure,
                tap: tap.clone(),
            };
            Some(admin::serve(addr, ctx, admin_stop.clone()).await?)
        }
        None => None,
    };

    let (tx, rx) = mpsc::channel::<AdapterEvent>(PIPELINE_CHANNEL);
    let adapters_stop = CancellationToken::new();
    let mut adapters: JoinSet<()> = JoinSet::new();
    if config.pbx.is_empty() {
        warn!("No [[pbx]] block is configured: only events already in the outbox will be delivered.");
    }
    for pbx in &config.pbx {
        let state = adapter_states.remove(&*pbx.id.name).unwrap_or_default();
        let adapter = pbx.settings.build(pbx.id.clone(), state);
        health.update(|h| {
            h.pbx.insert(pbx.id.name.to_string(), Check::failing("connecting"));
        });
        board.add_pbx(pbx.id.name.as_ref());
        let (sink, stop, id) = (
            LinkWatch { inner: ChannelSink(tx.clone()), health: health.clone(), board: board.clone() },
            adapters_stop.clone(),
            pbx.id.clone(),
        );
        adapters.spawn(async move {
            match adapter.run(&sink, Box::pin(stop.cancelled_owned())).await {
                Ok(()) => {}
                Err(AdapterError::SinkClosed(_)) => {}
                Err(AdapterError::Fatal(why)) => {
                    error!(pbx = %id, error = %why, "The adapter stopped for good; this PBX is no longer read.")
                }
            }
        });
    }
    drop(tx);

    // Leg sources: the announcement endpoint and the SIP tap, bound before READY.
    let (legs_tx, legs_rx) = mpsc::channel::<LegUpdate>(PIPELINE_CHANNEL);
    let legs_stop = CancellationToken::new();
    let mut leg_tasks = JoinSet::new();
    if let Some(legs) = &config.legs {
        let server =
            LegAnnounceServer::bind(legs).await.context("starting the leg announcement endpoint (`[legs]`)")?;
        let addr = server.local_addr().context("reading the announcement endpoint's address")?;
        info!(address = %addr, "Leg announcement endpoint listening.");
        let (tx, stop) = (legs_tx.clone(), legs_stop.clone());
        leg_tasks.spawn(async move {
            if let Err(e) = server.serve(tx, stop.cancelled_owned()).await {
                pipeline::leg_source_stopped("legs", Some(&e));
            }
        });
    }
    if let Some(tap_config) = &config.sip_tap {
        let tap = SipTap::bind(tap_config.clone()).await.context("starting the SIP tap (`[sip_tap]`)")?;
        info!(hep_udp = ?tap.hep_udp_addr(), hep_tcp = ?tap.hep_tcp_addr(), sip_udp = ?tap.sip_udp_addr(), "SIP tap listening.");
        let (tx, stop) = (legs_tx.clone(), legs_stop.clone());
        leg_tasks.spawn(async move {
            if let Err(e) = tap.run(tx, stop.cancelled_owned()).await {
                pipeline::leg_source_stopped("sip_tap", Some(&e));
            }
        });
    }
    drop(legs_tx);

    let correlator = Correlator::with_settings(config.correlation.clone());
    let cores = Cores::new(NumberCache::new(config.numbers.clone(), NUMBER_CACHE), correlator, lifecycle);
    let inputs = Inputs { adapters: rx, legs: legs_rx };
    let mut pipeline_task = tokio::spawn({
        let inner = OutboxSink { delivery: Some(admission_status), ..OutboxSink::new(outbox.clone()) };
        let mut sink = TapSink { inner, tap, board };
        async move { pipeline::run(inputs, cores, &mut sink, &mut Watchdog::from_env()).await }
    });
    health.update(|h| h.pipeline = Check::ok("running"));

    notify::ready(&format!("Running: {} PBX(s), delivering to {}", config.pbx.len(), config.platform.url));
    info!(
        config = %config.path.display(),
        pbx = config.pbx.len(),
        platform = %config.platform.url,
        outbox = %outbox.path().display(),
        "pbx-listener is running."
    );

    // Run until asked to stop, or until a part fails for good. The pipeline ending on its own is
    // normal only when no adapter feeds it.
    let mut pipeline_done = false;
    let failure: Option<anyhow::Error> = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break None,
            result = &mut pipeline_task, if !pipeline_done => {
                pipeline_done = true;
                match result {
                    Ok(Ok(_)) if config.pbx.is_empty() => {}
                    Ok(Ok(_)) => break Some(anyhow::anyhow!("the pipeline stopped unexpectedly")),
                    Ok(Err(e)) => break Some(e.context("the pipeline failed")),
                    Err(e) => break Some(anyhow::anyhow!("the pipeline task panicked: {e}")),
                }
            }
            result = &mut forwarder_task => break Some(match result {
                Ok(Ok(())) => anyhow::anyhow!("the forwarder stopped unexpectedly"),
                Ok(Err(e)) => anyhow::Error::new(e).context("delivery failed"),
                Err(e) => anyhow::anyhow!("the forwarder task panicked: {e}"),
            }),
        }
    };
    notify::stopping();
    health.update(|h| h.pipeline = Check::failing("stopping"));

    // Adapters first; the pipeline then drains what they sent and commits it.
    adapters_stop.cancel();
    join_all(adapters).await;
    if !pipeline_done {
        match tokio::time::timeout(Duration::from_secs(20), &mut pipeline_task).await {
            Ok(Ok(Err(e))) => warn!(error = %format!("{e:#}"), "The pipeline failed while draining."),
            Ok(_) => {}
            Err(_) => warn!("The pipeline did not drain within 20 s; what it held is resent by the PBX snapshot."),
        }
    }
    legs_stop.cancel();
    while leg_tasks.join_next().await.is_some() {}
    forwarder_stop.cancel();
    if !forwarder_task.is_finished() {
        let _ = forwarder_task.await;
    }
    admin_stop.cancel();
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    status_task.abort();
    tokio::task::spawn_blocking(move || outbox.close()).await.ok();
    match failure {
        Some(e) => Err(e),
        None => {
            info!("Stopped cleanly.");
            Ok(())
        }
    }
}

/// The adapters' sink: forwards to the pipeline and mirrors link states into health, the
/// status board and the `pbx_listener_pbx_link_up` gauge.
struct LinkWatch {
    inner: ChannelSink,
    health: Health,
    board: StatusBoard,
}

impl SignalSink for LinkWatch {
    fn send(&self, event: AdapterEvent) -> BoxFuture<'_, Result<(), SinkClosed>> {
        if let AdapterEvent::Link { pbx, state } = &event {
            let check = match state {
                LinkState::Up => Check::ok("connected"),
                LinkState::Connecting => Check::failing("connecting"),
                LinkState::Down { reason } => Check::failing(format!("down: {reason}")),
                LinkState::AuthFailed { reason } => Check::failing(format!("authentication failed: {reason}")),
            };
            // The adapter logs its own link changes (with what it does next); this only keeps
            // health and the gauge in step.
            metrics::gauge!("pbx_listener_pbx_link_up", "pbx" => pbx.name.to_string())
                .set(if matches!(state, LinkState::Up) { 1.0 } else { 0.0 });
            self.health.update(|h| {
                h.pbx.insert(pbx.name.to_string(), check);
            });
            if self.board.link_changed(pbx.name.as_ref(), state, listener_kit::clock::now().0) {
                metrics::counter!("pbx_listener_pbx_reconnects_total", "pbx" => pbx.name.to_string()).increment(1);
            }
        }
        self.inner.send(event)
    }
}

/// Opens the outbox in `[outbox] data_dir`, creating the directory.
fn open_outbox(config: &Config) -> anyhow::Result<Outbox> {
    let dir = &config.outbox.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the outbox directory {} (`[outbox] data_dir`)", dir.display()))?;
    let path = config.outbox.file();
    Outbox::open(&path, config.outbox.config).with_context(|| format!("opening the outbox {}", path.display()))
}

/// The lifecycle, with the calls that were open when we last stopped, and each PBX's adapter
/// checkpoints by PBX name. Unreadable records are counted, logged and deleted: they must never
/// stop the daemon from starting.
async fn restore_state(
    config: &Config,
    outbox: &Outbox,
) -> anyhow::Result<(CallLifecycle, HashMap<String, AdapterState>)> {
    let ctx = EventContext {
        account_id: config.account.id,
        account_name: config.account.name.clone(),
        static_meta: config.meta.clone(),
    };
    let mut lifecycle = CallLifecycle::new(ctx);
    let records = outbox.load_state().await.context("reading the call state from the outbox")?;
    let mut adapters: HashMap<String, AdapterState> = HashMap::new();
    for (key, value) in &records {
        if let Some((pbx, key)) = key.strip_prefix(pipeline::CHECKPOINT_PREFIX).and_then(|k| k.split_once('/')) {
            adapters.entry(pbx.to_owned()).or_default().insert(key.to_owned(), value.clone());
        }
    }
    let errors = lifecycle.restore(records);
    if !errors.is_empty() {
        for e in &errors {
            warn!(key = %e.key, error = %e.source, "Dropping unreadable call state.");
        }
        metrics::counter!("pbx_listener_lifecycle_state_discarded_total").increment(errors.len() as u64);
        let deletes = errors.into_iter().map(|e| StateChange { key: e.key, value: None }).collect();
        outbox.apply_state(deletes).await.context("deleting unreadable call state")?;
    }
    if lifecycle.open_calls() > 0 {
        info!(
            open_calls = lifecycle.open_calls(),
            "Restored open calls; they are reconciled when each PBX sends its snapshot."
        );
    }
    Ok((lifecycle, adapters))
}

/// Mirrors the forwarder's status into health and `systemctl status`.
async fn watch_delivery(mut status: tokio::sync::watch::Receiver<forwarder::DeliveryStatus>, health: Health) {
    loop {
        let s = *status.borrow_and_update();
        let check = match s.state {
            DeliveryState::Delivering => Check::ok(format!("delivering ({} delivered)", s.delivered)),
            DeliveryState::BackingOff { since_ms, attempts, .. } | DeliveryState::Probing { since_ms, attempts } => {
                // Retrying is not failing while events are safe in the outbox; an outage longer
                // than OUTAGE_UNREADY turns readiness red so monitoring notices.
                let secs = listener_kit::clock::now().0.saturating_sub(since_ms) / 1000;
                let detail = format!("platform failing for {secs} s, retrying ({attempts} failed attempts)");
                if secs >= OUTAGE_UNREADY.as_secs() { Check::failing(detail) } else { Check::ok(detail) }
            }
            DeliveryState::EndpointGone { .. } => {
                Check::failing("the platform answered 410 Gone: delivery stopped until restart")
            }
        };
        notify::status(&check.detail);
        health.update(|h| h.delivery = check);
        // At most one update a second: the status changes with every delivered event, and a
        // notification each (a syscall here, a wake-up of systemd there) cost more than the
        // delivery itself under load; a full notify socket would even block this thread.
        tokio::time::sleep(STATUS_EVERY).await;
        // Re-evaluate at least every 10 s so a long outage is noticed without a state change.
        if let Ok(Err(_)) = tokio::time::timeout(Duration::from_secs(10), status.changed()).await {
            return;
        }
    }
}

async fn join_all(mut set: JoinSet<()>) {
    while let Some(result) = set.join_next().await {
        if let Err(e) = result {
            error!(error = %e, "An adapter task panicked.");
        }
    }
}
