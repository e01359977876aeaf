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

use crate::cli::DemoArgs;
use crate::pipeline::{self, Cores};
use crate::sinks::StdoutSink;

/// The demo's account (the seed's example account).
pub const DEMO_ACCOUNT_ID: Uuid = Uuid::from_u128(0x9539ee93_64c8_802b_360b_c6f2f7cf2507);

/// Runs the demo until `--count` events were printed, or until `shutdown`.
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
        lifecycle: CallLifecycle::new(ctx),
    };
    let (tx, rx) = mpsc::channel(1024);
    let feed = tokio::spawn(scenario_feed(tx, shutdown.clone()));
    let mut sink = StdoutSink { remaining: args.count, stop: shutdown.clone() };
    info!(count = ?args.count, "Demo running: simulated PBX calls, Level 3 events on stdout. Ctrl-C to stop.");
    let result = pipeline::run(rx, cores, &mut sink).await;
    shutdown.cancel();
    feed.await.context("the simulated PBX task")?;
    result.map(|_| ())
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
