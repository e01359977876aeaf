//! `pbx-listener demo`: the embedded default a newcomer runs first.
//!
//! Everything is real but the PBXs and the platform: each simulated PBX (`pbx_sim::demo`)
//! speaks its real protocol over a loopback socket to its real adapter, built through the
//! daemon's PBX-type table from `[[pbx]]` keys exactly as a configuration file's; a simulated
//! platform announces each call's B leg over HTTP to the real leg endpoint, so correlation
//! binds every call; the real pipeline builds the Level 3 events and prints them as JSON lines
//! on stdout (logs go to stderr). `--forward-to URL` also delivers them through the real outbox
//! and forwarder. `--count N` exits 0 after N events (and, when forwarding, once they are all
//! delivered).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use correlation::{CorrelationConfig, Correlator};
use forwarder::{Forwarder, ForwarderConfig};
use leg_announce::{LegAnnounceServer, LegsConfig};
use listener_core::{AdapterState, CallLifecycle, EventContext, NumberCache, NumberPlan};
use outbox::{OUTBOX_FILE, Outbox, OutboxConfig};
use pbx_sim::demo::{DEMO_TYPES, DemoPlatform, write_file};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;
use uuid::Uuid;
use webhook_signature::SigningSecret;

use crate::cli::DemoArgs;
use crate::notify::Watchdog;
use crate::pipeline::{self, ChannelSink, Cores, Inputs, NUMBER_CACHE};
use crate::sinks::{OutboxSink, StdoutSink, TeeSink};

/// The demo's account (the seed's example account).
pub const DEMO_ACCOUNT_ID: Uuid = Uuid::from_u128(0x9539ee93_64c8_802b_360b_c6f2f7cf2507);

/// The demo's signing key when no `--signing-secret-file` is given. Public: it only ever signs
/// simulated events.
pub const DEMO_SIGNING_KEY: &[u8] = b"pbx-listener demo signing key (public)";

/// The key the simulated platform signs its leg announcements with (public, demo only).
const DEMO_LEGS_KEY: &[u8] = b"pbx-listener demo legs key (public) 0001";

/// Runs the demo until `--count` events were printed (and, with `--forward-to`, delivered), or
/// until `shutdown`.
pub async fn run(args: DemoArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let types: Vec<&str> = match args.pbx.as_deref() {
        Some(t) if DEMO_TYPES.contains(&t) => vec![t],
        Some(t) => bail!(
            "--pbx {t:?}: the demo simulates {}",
            DEMO_TYPES.iter().map(|t| format!("{t:?}")).collect::<Vec<_>>().join(", ")
        ),
        None => DEMO_TYPES.to_vec(),
    };
    let scratch = tempfile::tempdir().context("creating a temporary directory")?;

    // The real leg endpoint; the simulated platform announces each call's B leg to it.
    let legs_secret = SigningSecret::from_bytes(DEMO_LEGS_KEY.to_vec());
    let legs_config = LegsConfig::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        vec![write_file(scratch.path(), "legs-secret", &legs_secret.to_whsec())?],
    );
    let legs_server = LegAnnounceServer::bind(&legs_config).await.context("starting the leg endpoint")?;
    let legs_url = format!("http://{}/legs", legs_server.local_addr().context("the leg endpoint's address")?);
    let platform = DemoPlatform {
        legs_url,
        secret: legs_secret,
        account_id: DEMO_ACCOUNT_ID,
        account_name: "Demo Account".into(),
        seed: args.seed,
    };

    // Everything stops on Ctrl-C, or once `--count` events were printed.
    let stop = shutdown.child_token();
    let (tx, rx) = mpsc::channel(1024);
    let (legs_tx, legs_rx) = mpsc::channel(1024);

    // Each simulated PBX, and its real adapter built through the PBX-type table.
    let mut adapters = JoinSet::new();
    let mut players = JoinSet::new();
    for pbx_type in &types {
        let sim =
            pbx_sim::demo::start(pbx_type, scratch.path(), platform.clone(), Box::pin(stop.clone().cancelled_owned()))
                .await?;
        let text = format!("[[pbx]]\nname = {:?}\ntype = {pbx_type:?}\n{}", sim.name, sim.block);
        let pbx = crate::config::load_pbx_blocks(&scratch.path().join("demo.toml"), &text)
            .map_err(|e| anyhow::anyhow!("the demo's [[pbx]] block for {pbx_type}:\n{e}"))?
            .pop()
            .context("the demo's [[pbx]] block")?;
        let adapter = pbx.settings.build(pbx.id.clone(), AdapterState::new());
        let (sink, stop) = (ChannelSink(tx.clone()), stop.clone());
        adapters.spawn(async move { adapter.run(&sink, Box::pin(stop.cancelled_owned())).await });
        players.spawn(sim.play);
    }
    drop(tx);

    let ctx = EventContext {
        account_id: DEMO_ACCOUNT_ID,
        account_name: "Demo Account".into(),
        static_meta: BTreeMap::from([("demo".to_owned(), "true".to_owned())]),
    };
    let cores = Cores::new(
        NumberCache::new(NumberPlan::new("GB", 6).context("the demo's number plan")?, NUMBER_CACHE),
        Correlator::new(CorrelationConfig::default()).context("the demo's correlation settings")?,
        CallLifecycle::new(ctx),
    );

    let legs_task = tokio::spawn({
        let stop = stop.clone();
        async move { legs_server.serve(legs_tx, stop.cancelled_owned()).await }
    });
    info!(
        count = ?args.count,
        pbx = %types.join(", "),
        "Demo running: simulated PBXs and platform; Level 3 events on stdout. Ctrl-C to stop."
    );

    let inputs = Inputs { adapters: rx, legs: legs_rx, control: None };
    let stdout = StdoutSink { remaining: args.count, stop: stop.clone() };
    let mut watchdog = Watchdog::from_env();
    let result = match args.forward_to.clone() {
        None => {
            let mut sink = stdout;
            pipeline::run(inputs, cores, &mut sink, &mut watchdog).await.map(drop)
        }
        Some(url) => forward(&args, &url, inputs, cores, stdout, &shutdown, &mut watchdog).await,
    };
    stop.cancel();
    while let Some(done) = adapters.join_next().await {
        done.context("an adapter task")?.context("a demo adapter")?;
    }
    legs_task.await.context("the leg endpoint task")?.context("the leg endpoint")?;
    while let Some(done) = players.join_next().await {
        done.context("a simulator task")?;
    }
    result
}

/// `--forward-to`: the events go through the real outbox and forwarder as well as to stdout.
async fn forward(
    args: &DemoArgs,
    url: &str,
    inputs: Inputs,
    cores: Cores,
    stdout: StdoutSink,
    shutdown: &CancellationToken,
    watchdog: &mut Watchdog,
) -> anyhow::Result<()> {
    // Without --data-dir the outbox lives in a temporary directory, removed when `_temp` drops.
    let (data_dir, _temp): (PathBuf, Option<tempfile::TempDir>) = match &args.data_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let temp = tempfile::tempdir().context("creating a temporary outbox directory")?;
            (temp.path().to_owned(), Some(temp))
        }
    };
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let secret_file = match &args.signing_secret_file {
        Some(path) => path.clone(),
        None => {
            let secret = SigningSecret::from_bytes(DEMO_SIGNING_KEY.to_vec()).to_whsec();
            info!(secret = %secret, "Signing with the public demo secret; pass --signing-secret-file to use yours.");
            write_file(&data_dir, "demo-signing-secret", &secret)?
        }
    };
    let settings = ForwarderConfig::new(url.to_owned(), vec![secret_file])
        .load()
        .map_err(|e| anyhow::anyhow!("--forward-to / --signing-secret-file: {e}"))?;
    let outbox = Outbox::open(&data_dir.join(OUTBOX_FILE), OutboxConfig::new(64 << 20, outbox::WhenFull::DropNewest))
        .with_context(|| format!("opening the demo outbox in {}", data_dir.display()))?;
    let forwarder = Forwarder::new(outbox.clone(), settings).context("building the HTTP client")?;
    let forwarder_stop = CancellationToken::new();
    let forwarder_task = tokio::spawn(forwarder.run(forwarder_stop.clone().cancelled_owned()));
    info!(url = %url, outbox = %data_dir.display(), "Forwarding the demo's events.");

    let mut sink = TeeSink { outbox: OutboxSink::new(outbox.clone()), stdout };
    let piped = pipeline::run(inputs, cores, &mut sink, watchdog).await;
    let delivered = match (&piped, args.count) {
        (Err(_), _) => Ok(()),
        (Ok(_), Some(_)) if !shutdown.is_cancelled() => wait_delivered(&outbox, args.timeout_secs, shutdown).await,
        // No count: keep delivering until Ctrl-C.
        (Ok(_), _) => {
            shutdown.cancelled().await;
            Ok(())
        }
    };
    forwarder_stop.cancel();
    let forwarded = forwarder_task.await;
    tokio::task::spawn_blocking(move || outbox.close()).await.ok();
    piped?;
    delivered?;
    match forwarded {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context("delivery failed")),
        Err(e) => bail!("the forwarder task panicked: {e}"),
    }
}

/// Waits until the outbox is empty: every event delivered. Fails when one was quarantined
/// (the receiver rejected it) or when `timeout_secs` pass.
async fn wait_delivered(outbox: &Outbox, timeout_secs: u64, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_secs);
    let dir = outbox.path().parent().map(|p| p.display().to_string()).unwrap_or_default();
    loop {
        let stats = outbox.stats().await.context("reading the outbox")?;
        if stats.quarantined_events > 0 {
            bail!(
                "the receiver rejected {} event(s) with a 4xx (see `pbx-listener outbox list --data-dir {dir}`)",
                stats.quarantined_events
            );
        }
        if stats.pending_events == 0 {
            info!(delivered = stats.delivered_total, "Every event was delivered.");
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{} event(s) not delivered within {timeout_secs} s (is the receiver up? the last error is in \
                 `pbx-listener outbox list --data-dir {dir}`)",
                stats.pending_events
            );
        }
        tokio::select! {
            _ = shutdown.cancelled() => bail!("interrupted with {} event(s) not delivered", stats.pending_events),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}
