//! `pbx-listener demo`: the embedded default a newcomer runs first.
//!
//! It starts simulated PBX feeds in-process, runs the real pipeline, and prints every Level 3
//! event as one JSON line on stdout (logs go to stderr). `--count N` exits 0 after N events.

use anyhow::{Context, bail};
use listener_core::{AdapterEvent, CallLifecycle, EventContext, NumberPlan, PbxId, PbxType};
use pbx_sim::scenario::{CallKind, call_signals};
use std::collections::BTreeMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;
use uuid::Uuid;

use std::time::Duration;

use forwarder::{Forwarder, ForwarderConfig};
use outbox::{Outbox, OutboxConfig};
use webhook_signature::SigningSecret;

use crate::cli::DemoArgs;
use crate::notify::Watchdog;
use crate::pipeline::{self, Cores, Inputs};
use crate::service::OUTBOX_FILE;
use crate::sinks::{OutboxSink, StdoutSink, TeeSink};
use correlation::{CorrelationConfig, Correlator};

/// The demo's account (the seed's example account).
pub const DEMO_ACCOUNT_ID: Uuid = Uuid::from_u128(0x9539ee93_64c8_802b_360b_c6f2f7cf2507);

/// The demo's signing key when no `--signing-secret-file` is given. Public: it only ever signs
/// simulated events.
pub const DEMO_SIGNING_KEY: &[u8] = b"pbx-listener demo signing key (public)";

/// Runs the demo until `--count` events were printed (and, with `--forward-to`, delivered), or
/// until `shutdown`.
pub async fn run(args: DemoArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    if let Some(t) = args.pbx.as_deref() {
        if t != PbxType::AvayaR11.as_str() {
            bail!("--pbx {t:?}: the demo can simulate \"avaya-r11\" (the other PBX types are not supported yet)");
        }
    }
    let ctx = EventContext {
        account_id: DEMO_ACCOUNT_ID,
        account_name: "Demo Account".into(),
        static_meta: BTreeMap::from([("demo".to_owned(), "true".to_owned())]),
    };
    let cores = Cores {
        numbers: NumberPlan::new("GB", 6).context("the demo's number plan")?,
        correlator: Correlator::new(CorrelationConfig::default()).context("the demo's correlation settings")?,
        lifecycle: CallLifecycle::new(ctx),
    };
    let (tx, rx) = mpsc::channel(1024);
    let (_legs_tx, legs_rx) = mpsc::channel(1024);
    let inputs = Inputs { adapters: rx, legs: legs_rx };
    let mut watchdog = Watchdog::from_env();
    // The feed stops on Ctrl-C, or once `--count` events were printed.
    let feed_stop = shutdown.child_token();
    let feed = tokio::spawn(scenario_feed(tx, feed_stop.clone()));
    let stdout = StdoutSink { remaining: args.count, stop: feed_stop.clone() };
    info!(count = ?args.count, "Demo running: simulated PBX calls, Level 3 events on stdout. Ctrl-C to stop.");
    let Some(url) = args.forward_to.clone() else {
        let mut sink = stdout;
        let result = pipeline::run(inputs, cores, &mut sink, &mut watchdog).await;
        feed_stop.cancel();
        feed.await.context("the simulated PBX task")?;
        return result.map(drop);
    };

    // --forward-to: through the real outbox and forwarder.
    let temp = match &args.data_dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("creating a temporary outbox directory")?),
    };
    let data_dir = args.data_dir.clone().or_else(|| temp.as_ref().map(|t| t.path().to_owned())).unwrap_or_default();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let secret_file = match &args.signing_secret_file {
        Some(path) => path.clone(),
        None => {
            let secret = SigningSecret::from_bytes(DEMO_SIGNING_KEY.to_vec()).to_whsec();
            let path = data_dir.join("demo-signing-secret");
            std::fs::write(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
            info!(secret = %secret, "Signing with the public demo secret; pass --signing-secret-file to use yours.");
            path
        }
    };
    let settings = ForwarderConfig::new(url.clone(), vec![secret_file])
        .load()
        .map_err(|e| anyhow::anyhow!("--forward-to / --signing-secret-file: {e}"))?;
    let outbox = Outbox::open(&data_dir.join(OUTBOX_FILE), OutboxConfig::new(64 << 20, outbox::WhenFull::DropNewest))
        .with_context(|| format!("opening the demo outbox in {}", data_dir.display()))?;
    let forwarder = Forwarder::new(outbox.clone(), settings).context("building the HTTP client")?;
    let forwarder_stop = CancellationToken::new();
    let forwarder_task = tokio::spawn(forwarder.run(forwarder_stop.clone().cancelled_owned()));
    info!(url = %url, outbox = %data_dir.display(), "Forwarding the demo's events.");

    let mut sink = TeeSink { outbox: OutboxSink { outbox: outbox.clone() }, stdout };
    let result = pipeline::run(inputs, cores, &mut sink, &mut watchdog).await;
    feed_stop.cancel();
    feed.await.context("the simulated PBX task")?;
    let stats = result?;
    let delivered = match args.count {
        Some(_) if !shutdown.is_cancelled() => wait_delivered(&outbox, args.timeout_secs, &shutdown).await,
        // No count: keep delivering until Ctrl-C.
        _ => {
            shutdown.cancelled().await;
            Ok(())
        }
    };
    forwarder_stop.cancel();
    let forwarder_result = forwarder_task.await;
    tokio::task::spawn_blocking(move || outbox.close()).await.ok();
    delivered?;
    match forwarder_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(anyhow::Error::new(e).context("delivery failed")),
        Err(e) => bail!("the forwarder task panicked: {e}"),
    }
    info!(events = stats.events, "Demo finished.");
    Ok(())
}

/// Waits until the outbox is empty: every event delivered. Fails when one was quarantined
/// (the receiver rejected it) or when `timeout_secs` pass.
async fn wait_delivered(outbox: &Outbox, timeout_secs: u64, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_secs);
    loop {
        let stats = outbox.stats().await.context("reading the outbox")?;
        if stats.quarantined_events > 0 {
            bail!(
                "the receiver rejected {} event(s) with a 4xx (see `pbx-listener outbox list --data-dir {}`)",
                stats.quarantined_events,
                outbox.path().parent().map(|p| p.display().to_string()).unwrap_or_default()
            );
        }
        if stats.pending_events == 0 {
            info!(delivered = stats.delivered_total, "Every event was delivered.");
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{} event(s) not delivered within {timeout_secs} s (is the receiver up? last error in `pbx-listener outbox list --data-dir {}`)",
                stats.pending_events,
                outbox.path().parent().map(|p| p.display().to_string()).unwrap_or_default()
            );
        }
        tokio::select! {
            _ = shutdown.cancelled() => bail!("interrupted with {} event(s) not delivered", stats.pending_events),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Feeds scripted calls "through the core" until cancelled: a new call every 1.5 s, played at
/// ten times real speed so the first events show within a second.
async fn scenario_feed(tx: mpsc::Sender<AdapterEvent>, shutdown: CancellationToken) {
    const SPEEDUP: u64 = 10;
    let pbx = PbxId::new("demo-pbx", PbxType::AvayaR11);
    let mut timeline: Vec<(u64, AdapterEvent)> = Vec::new();
    let start = pipeline::now();
    for n in 0..40u64 {
        let offset = n * 15_000;
        let kind = CallKind::ALL[(n % 4) as usize];
        let caller = format!("0170712{:04}", 3000 + n);
        for (after, signal) in call_signals(&pbx, 1000 + n, kind, start.plus_ms(offset), &caller, "01234567890") {
            timeline.push((offset + after, AdapterEvent::Signal(signal)));
        }
    }
    timeline.sort_by_key(|(t, _)| *t);
    let began = tokio::time::Instant::now();
    for (t, event) in timeline {
        let due = began + std::time::Duration::from_millis(t / SPEEDUP);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(due) => {}
        }
        if tx.send(event).await.is_err() {
            return;
        }
    }
}
