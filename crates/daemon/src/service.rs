//! `pbx-listener run`: the daemon.
//!
//! Start-up order makes every failure happen before READY: configuration (already validated),
//! outbox open (refuses to start when the cap does not fit on the disk), lifecycle state
//! restored, forwarder built, admin endpoint bound, then adapters and the pipeline start and we
//! tell systemd we are ready. Shutdown runs the other way so nothing is lost: adapters stop
//! first, the pipeline commits what they sent, then the forwarder stops and the outbox closes.
//!
//! A reload (SIGHUP) validates the file as `check-config` does and applies what changed part by
//! part (`crate::reload` decides what): the outbox, the pipeline and its cores' state, the
//! queued events and the links whose block did not change are never touched.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context;
use correlation::{Correlator, LegUpdate};
use forwarder::{DeliveryState, Forwarder, ForwarderReconfigurer};
use leg_announce::{LegAnnounceServer, LegsSettings};
use listener_core::{
    AdapterError, AdapterEvent, AdapterState, BoxFuture, CallLifecycle, EventContext, LinkState, NumberCache,
    SignalSink, SinkClosed,
};
use outbox::{Outbox, StateChange};
use sip_tap::{SipTap, SipTapSettings};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::admin::{self, AdminContext, Check, Health};
use crate::config::{Config, PbxConfig};
use crate::notify::{self, Watchdog};
use crate::pipeline::{self, ChannelSink, CoreSettings, Cores, Inputs, NUMBER_CACHE};
use crate::reload;
use crate::sinks::OutboxSink;
use crate::status::{ReloadResult, StatusBoard};
use crate::tail::{self, EventTap, TapSink};

/// Capacity of the adapters → pipeline channel: a burst this size is absorbed without slowing
/// the PBX readers.
const PIPELINE_CHANNEL: usize = 4096;

/// The shortest interval between two delivery status updates (health, `systemctl status`).
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// How long the platform may fail before `/health/ready` turns red.
const OUTAGE_UNREADY: Duration = Duration::from_secs(300);

/// Runs the daemon until `shutdown` (SIGTERM/SIGINT) or a fatal error; each message on
/// `reloads` (SIGHUP, `systemctl reload`) reloads the configuration file in place.
pub async fn run(config: Config, shutdown: CancellationToken, mut reloads: mpsc::Receiver<()>) -> anyhow::Result<()> {
    let metrics = admin::install_metrics()?;
    let health = Health::default();
    let board = StatusBoard::default();
    let tap = EventTap::new(tail::CAPACITY, tail::MAX_CLIENTS);

    let outbox = open_outbox(&config)?;
    let (lifecycle, adapter_states) = restore_state(&config, &outbox).await?;

    let forwarder = Forwarder::new(outbox.clone(), config.platform.clone()).context("building the HTTP client")?;
    let forwarder_stop = CancellationToken::new();
    let status_task = tokio::spawn(watch_delivery(forwarder.status(), health.clone()));
    let (delivery_status, last_failure) = (forwarder.status(), forwarder.last_failure());
    let admission_status = forwarder.status();
    let reconfigure_forwarder = forwarder.reconfigurer();
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

    let (adapter_tx, rx) = mpsc::channel::<AdapterEvent>(PIPELINE_CHANNEL);
    let (legs_tx, legs_rx) = mpsc::channel::<LegUpdate>(PIPELINE_CHANNEL);
    let (control_tx, control_rx) = mpsc::channel::<CoreSettings>(4);
    let mut parts = Parts {
        adapters: BTreeMap::new(),
        adapter_tx,
        legs: None,
        sip_tap: None,
        legs_tx,
        control: control_tx,
        forwarder: reconfigure_forwarder,
        health: health.clone(),
        board: board.clone(),
        outbox: outbox.clone(),
    };
    if config.pbx.is_empty() {
        warn!("No [[pbx]] block is configured: only events already in the outbox will be delivered.");
    }
    let mut adapter_states = adapter_states;
    for pbx in &config.pbx {
        parts.start_adapter(pbx, adapter_states.remove(&*pbx.id.name).unwrap_or_default());
    }
    // Leg sources: the announcement endpoint and the SIP tap, bound before READY.
    if let Some(legs) = &config.legs {
        parts.legs = Some(start_legs(legs, &parts.legs_tx).await?);
    }
    if let Some(tap_settings) = &config.sip_tap {
        parts.sip_tap = Some(start_sip_tap(tap_settings, &parts.legs_tx).await?);
    }

    let correlator = Correlator::with_settings(config.correlation.clone());
    let cores = Cores::new(NumberCache::new(config.numbers.clone(), NUMBER_CACHE), correlator, lifecycle);
    let inputs = Inputs { adapters: rx, legs: legs_rx, control: Some(control_rx) };
    let mut pipeline_task = tokio::spawn({
        let inner = OutboxSink { delivery: Some(admission_status), ..OutboxSink::new(outbox.clone()) };
        let mut sink = TapSink { inner, tap, board: board.clone() };
        async move { pipeline::run(inputs, cores, &mut sink, &mut Watchdog::from_env()).await }
    });
    health.update(|h| h.pipeline = Check::ok("running"));
    let trimmer = tokio::spawn(crate::heap::trim_periodically(shutdown.child_token()));

    notify::ready(&running_status(&config));
    info!(
        config = %config.path.display(),
        pbx = config.pbx.len(),
        platform = %config.platform.url,
        outbox = %outbox.path().display(),
        "pbx-listener is running."
    );

    // Run until asked to stop, or until a part fails for good.
    let mut config = config;
    let failure: Option<anyhow::Error> = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break None,
            Some(()) = reloads.recv() => {
                if let Some(new) = reload(&config, &mut parts).await {
                    config = new;
                }
                notify::ready(&running_status(&config));
            }
            result = &mut pipeline_task => break Some(match result {
                Ok(Ok(_)) => anyhow::anyhow!("the pipeline stopped unexpectedly"),
                Ok(Err(e)) => e.context("the pipeline failed"),
                Err(e) => anyhow::anyhow!("the pipeline task panicked: {e}"),
            }),
            result = &mut forwarder_task => break Some(match result {
                Ok(Ok(())) => anyhow::anyhow!("the forwarder stopped unexpectedly"),
                Ok(Err(e)) => anyhow::Error::new(e).context("delivery failed"),
                Err(e) => anyhow::anyhow!("the forwarder task panicked: {e}"),
            }),
        }
    };
    notify::stopping();
    health.update(|h| h.pipeline = Check::failing("stopping"));

    // Adapters first; then the pipeline, its last sender gone, drains what they sent and
    // commits it.
    let pipeline_done = pipeline_task.is_finished();
    let Parts { adapters, adapter_tx, legs, sip_tap, legs_tx, control, .. } = parts;
    for (_, adapter) in adapters {
        adapter.stop().await;
    }
    drop((adapter_tx, control));
    if !pipeline_done {
        match tokio::time::timeout(Duration::from_secs(20), &mut pipeline_task).await {
            Ok(Ok(Err(e))) => warn!(error = %format!("{e:#}"), "The pipeline failed while draining."),
            Ok(_) => {}
            Err(_) => warn!("The pipeline did not drain within 20 s; what it held is resent by the PBX snapshot."),
        }
    }
    for source in [legs, sip_tap].into_iter().flatten() {
        source.stop().await;
    }
    drop(legs_tx);
    forwarder_stop.cancel();
    if !forwarder_task.is_finished() {
        let _ = forwarder_task.await;
    }
    admin_stop.cancel();
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    status_task.abort();
    trimmer.abort();
    tokio::task::spawn_blocking(move || outbox.close()).await.ok();
    match failure {
        Some(e) => Err(e),
        None => {
            info!("Stopped cleanly.");
            Ok(())
        }
    }
}

/// The line `systemctl status` shows while running.
fn running_status(config: &Config) -> String {
    format!("Running: {} PBX(s), delivering to {}", config.pbx.len(), config.platform.url)
}

/// What runs and can be restarted one by one on a reload.
struct Parts {
    /// Each PBX's adapter task, by PBX name.
    adapters: BTreeMap<String, Task>,
    /// The pipeline's adapter channel, kept for adapters started by a reload.
    adapter_tx: mpsc::Sender<AdapterEvent>,
    legs: Option<Task>,
    sip_tap: Option<Task>,
    legs_tx: mpsc::Sender<LegUpdate>,
    control: mpsc::Sender<CoreSettings>,
    forwarder: ForwarderReconfigurer,
    health: Health,
    board: StatusBoard,
    outbox: Outbox,
}

/// A task with its own stop switch.
struct Task {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Task {
    async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            error!(error = %e, "A task panicked.");
        }
    }
}

impl Parts {
    /// Builds `pbx`'s adapter (with what it checkpointed) and runs it until its stop switch.
    fn start_adapter(&mut self, pbx: &PbxConfig, state: AdapterState) {
        let adapter = pbx.settings.build(pbx.id.clone(), state);
        self.health.update(|h| {
            h.pbx.insert(pbx.id.name.to_string(), Check::failing("connecting"));
        });
        self.board.add_pbx(pbx.id.name.as_ref());
        let stop = CancellationToken::new();
        let sink = LinkWatch {
            inner: ChannelSink(self.adapter_tx.clone()),
            health: self.health.clone(),
            board: self.board.clone(),
        };
        let (id, until) = (pbx.id.clone(), stop.clone());
        let task = tokio::spawn(async move {
            match adapter.run(&sink, Box::pin(until.cancelled_owned())).await {
                Ok(()) | Err(AdapterError::SinkClosed(_)) => {}
                Err(AdapterError::Fatal(why)) => {
                    error!(pbx = %id, error = %why, "The adapter stopped for good; this PBX is no longer read.")
                }
            }
        });
        self.adapters.insert(pbx.id.name.to_string(), Task { stop, task });
    }

    /// Stops `name`'s adapter (what it sent is in the pipeline's channel) and forgets its link.
    async fn stop_adapter(&mut self, name: &str) {
        if let Some(task) = self.adapters.remove(name) {
            task.stop().await;
        }
        self.health.update(|h| {
            h.pbx.remove(name);
        });
        self.board.remove_pbx(name);
        metrics::gauge!("pbx_listener_pbx_link_up", "pbx" => name.to_owned()).set(0.0);
    }
}

/// Binds the leg announcement endpoint and serves it until its stop switch.
async fn start_legs(settings: &LegsSettings, tx: &mpsc::Sender<LegUpdate>) -> anyhow::Result<Task> {
    let server =
        LegAnnounceServer::bind_loaded(settings).await.context("starting the leg announcement endpoint (`[legs]`)")?;
    let addr = server.local_addr().context("reading the announcement endpoint's address")?;
    info!(address = %addr, "Leg announcement endpoint listening.");
    let (tx, stop) = (tx.clone(), CancellationToken::new());
    let until = stop.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = server.serve(tx, until.cancelled_owned()).await {
            pipeline::leg_source_stopped("legs", Some(&e));
        }
    });
    Ok(Task { stop, task })
}

/// Binds the SIP tap and runs it until its stop switch.
async fn start_sip_tap(settings: &SipTapSettings, tx: &mpsc::Sender<LegUpdate>) -> anyhow::Result<Task> {
    let tap = SipTap::bind_loaded(settings.clone()).await.context("starting the SIP tap (`[sip_tap]`)")?;
    info!(hep_udp = ?tap.hep_udp_addr(), hep_tcp = ?tap.hep_tcp_addr(), sip_udp = ?tap.sip_udp_addr(), "SIP tap listening.");
    let (tx, stop) = (tx.clone(), CancellationToken::new());
    let until = stop.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = tap.run(tx, until.cancelled_owned()).await {
            pipeline::leg_source_stopped("sip_tap", Some(&e));
        }
    });
    Ok(Task { stop, task })
}

/// Reloads the configuration file: validated as `check-config` does (when it is invalid, or
/// changes what needs a restart, the daemon runs on with the running one and says why), then
/// applied part by part. Returns the new configuration when it was applied.
async fn reload(running: &Config, parts: &mut Parts) -> Option<Config> {
    notify::reloading();
    let path = running.path.clone();
    info!(config = %path.display(), "Reloading the configuration (SIGHUP).");
    let loaded = tokio::task::spawn_blocking({
        let path = path.clone();
        move || crate::config::load(&path)
    })
    .await;
    let new = match loaded {
        Ok(Ok(new)) => new,
        Ok(Err(errors)) => {
            for e in &errors.0 {
                error!(error = %e, "Reload refused: the configuration has an error.");
            }
            let summary = format!("{} error(s); running on the previous configuration", errors.0.len());
            reloaded(parts, ReloadResult::Invalid, errors.0.iter().map(ToString::to_string).collect(), &summary);
            return None;
        }
        Err(e) => {
            error!(error = %e, "Reload failed: the configuration could not be read.");
            reloaded(parts, ReloadResult::Invalid, vec![e.to_string()], "the configuration could not be read");
            return None;
        }
    };
    let plan = match reload::plan(running, &new) {
        Ok(plan) => plan,
        Err(reasons) => {
            for why in &reasons {
                error!(reason = %why, "Reload refused: this change needs a restart; running on the previous configuration.");
            }
            reloaded(
                parts,
                ReloadResult::NeedsRestart,
                reasons,
                "needs a restart; running on the previous configuration",
            );
            return None;
        }
    };
    for w in &new.warnings {
        warn!(warning = %w, "Configuration warning.");
    }
    for note in &plan.notes {
        warn!(note = %note, "Reload: applied except this.");
    }
    let mut problems = Vec::new();
    if plan.platform
        && let Err(e) = parts.forwarder.apply(new.platform.clone())
    {
        problems.push(format!("[platform]: {e}"));
    }
    if plan.cores {
        let settings = CoreSettings {
            numbers: new.numbers.clone(),
            correlation: new.correlation.clone(),
            context: event_context(&new),
        };
        if parts.control.send(settings).await.is_err() {
            problems.push("the pipeline is gone".to_owned());
        }
    }
    if plan.legs {
        if let Some(old) = parts.legs.take() {
            old.stop().await;
        }
        if let Some(legs) = &new.legs {
            match start_legs(legs, &parts.legs_tx).await {
                Ok(task) => parts.legs = Some(task),
                Err(e) => problems.push(format!("[legs]: {e:#}")),
            }
        }
    }
    if plan.sip_tap {
        if let Some(old) = parts.sip_tap.take() {
            old.stop().await;
        }
        if let Some(tap) = &new.sip_tap {
            match start_sip_tap(tap, &parts.legs_tx).await {
                Ok(task) => parts.sip_tap = Some(task),
                Err(e) => problems.push(format!("[sip_tap]: {e:#}")),
            }
        }
    }
    for name in &plan.pbx_stop {
        parts.stop_adapter(name).await;
    }
    if !plan.pbx_start.is_empty() {
        let mut states = match parts.outbox.load_state().await {
            Ok(records) => checkpoints(&records),
            Err(e) => {
                problems.push(format!("reading the adapters' checkpoints: {e}"));
                HashMap::new()
            }
        };
        for pbx in new.pbx.iter().filter(|p| plan.pbx_start.iter().any(|n| **n == *p.id.name)) {
            parts.start_adapter(pbx, states.remove(&*pbx.id.name).unwrap_or_default());
        }
    }
    if plan.log_level
        && let Err(e) = crate::logging::set_level(new.log.level.as_deref())
    {
        problems.push(format!("[log] level: {e}"));
    }
    if problems.is_empty() {
        info!(changes = %plan, unchanged_pbx = plan.pbx_unchanged.len(), "Configuration reloaded.");
        reloaded(parts, ReloadResult::Ok, Vec::new(), &plan.to_string());
    } else {
        for p in &problems {
            error!(problem = %p, "Reload: a part could not be applied.");
        }
        reloaded(parts, ReloadResult::Partial, problems, &plan.to_string());
    }
    Some(new)
}

/// Counts and records a reload's outcome.
fn reloaded(parts: &Parts, result: ReloadResult, errors: Vec<String>, summary: &str) {
    metrics::counter!("pbx_listener_config_reloads_total", "result" => result.as_str()).increment(1);
    parts.board.reloaded(result, errors, summary);
}

/// The account and tags every event carries.
fn event_context(config: &Config) -> EventContext {
    EventContext {
        account_id: config.account.id,
        account_name: config.account.name.clone(),
        static_meta: config.meta.clone(),
    }
}

/// The adapters' checkpoints among the outbox's state records, by PBX name.
fn checkpoints(records: &[(String, Vec<u8>)]) -> HashMap<String, AdapterState> {
    let mut adapters: HashMap<String, AdapterState> = HashMap::new();
    for (key, value) in records {
        if let Some((pbx, key)) = key.strip_prefix(pipeline::CHECKPOINT_PREFIX).and_then(|k| k.split_once('/')) {
            adapters.entry(pbx.to_owned()).or_default().insert(key.to_owned(), value.clone());
        }
    }
    adapters
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
    let mut lifecycle = CallLifecycle::new(event_context(config));
    let records = outbox.load_state().await.context("reading the call state from the outbox")?;
    let adapters = checkpoints(&records);
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
