//! `pbx-listener demo`: the embedded default a newcomer runs first.
//!
//! Everything is real but the PBX and the platform: a simulated IP Office (`pbx-sim`) speaks
//! DevLink3 over a loopback socket to the real Avaya R11 adapter; a simulated platform announces
//! each call's B leg over HTTP to the real leg endpoint, so correlation binds every call by its
//! SIP Call-ID; the real pipeline builds the Level 3 events and prints them as JSON lines on
//! stdout (logs go to stderr). `--forward-to URL` also delivers them through the real outbox
//! and forwarder. `--count N` exits 0 after N events (and, when forwarding, once they are all
//! delivered).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use adapter_avaya_r11::DevLink3Adapter;
use anyhow::{Context, bail};
use correlation::{CorrelationConfig, Correlator};
use forwarder::{Forwarder, ForwarderConfig};
use generic_event::Status;
use leg_announce::{LegAnnounceServer, LegsConfig};
use listener_core::{Adapter, CallLifecycle, EventContext, NumberCache, NumberPlan, PbxId, PbxType};
use outbox::{Outbox, OutboxConfig};
use pbx_sim::announce::{BLeg, announce, b_leg_event};
use pbx_sim::avaya_r11::{AvayaSim, Pacing, SimConfig};
use pbx_sim::avaya_r11::{CallSpec, Scenario};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;
use webhook_signature::SigningSecret;

use crate::cli::DemoArgs;
use crate::notify::Watchdog;
use crate::pipeline::{self, ChannelSink, Cores, Inputs, NUMBER_CACHE};
use crate::service::OUTBOX_FILE;
use crate::sinks::{OutboxSink, StdoutSink, TeeSink};

/// The demo's account (the seed's example account).
pub const DEMO_ACCOUNT_ID: Uuid = Uuid::from_u128(0x9539ee93_64c8_802b_360b_c6f2f7cf2507);

/// The demo's signing key when no `--signing-secret-file` is given. Public: it only ever signs
/// simulated events.
pub const DEMO_SIGNING_KEY: &[u8] = b"pbx-listener demo signing key (public)";

/// The key the simulated platform signs its leg announcements with (public, demo only).
const DEMO_LEGS_KEY: &[u8] = b"pbx-listener demo legs key (public) 0001";

/// The simulated IP Office's service user.
const DEMO_USER: &str = "demo";
const DEMO_PASSWORD: &str = "demo-password";

/// Pause between the simulated PBX's steps: fast enough that events show at once, slow enough
/// to watch.
const DEMO_STEP: Duration = Duration::from_millis(150);

/// The scenarios the demo plays, in turn, for ever.
const DEMO_SCENARIOS: [&str; 6] = ["hunt-group", "hold", "park", "blind-transfer", "attended-transfer", "abandon"];

/// Runs the demo until `--count` events were printed (and, with `--forward-to`, delivered), or
/// until `shutdown`.
pub async fn run(args: DemoArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    if let Some(t) = args.pbx.as_deref()
        && t != PbxType::AvayaR11.as_str()
    {
        bail!("--pbx {t:?}: the demo simulates \"avaya-r11\" (the other PBX types are not supported yet)");
    }
    let scratch = tempfile::tempdir().context("creating a temporary directory")?;

    // The simulated IP Office, and the real adapter reading it over a loopback socket.
    let sim_config =
        SimConfig { pacing: Pacing::RealTime { step: DEMO_STEP }, ..SimConfig::fast(DEMO_USER, DEMO_PASSWORD) };
    let sim = AvayaSim::start(SocketAddr::from(([127, 0, 0, 1], 0)), sim_config)
        .await
        .context("starting the simulated IP Office")?;
    let password_file = write_file(scratch.path(), "avaya-password", DEMO_PASSWORD)?;
    let mut pbx_config = adapter_avaya_r11::Config::new("127.0.0.1", DEMO_USER, password_file);
    pbx_config.port = Some(sim.addr().port());
    let pbx = PbxId::new("demo-ipoffice", PbxType::AvayaR11);
    let adapter = DevLink3Adapter::new(pbx.clone(), pbx_config.load().context("the demo's DevLink3 settings")?);

    // The real leg endpoint; the simulated platform announces each call's B leg to it.
    let legs_secret = SigningSecret::from_bytes(DEMO_LEGS_KEY.to_vec());
    let legs_config = LegsConfig::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        vec![write_file(scratch.path(), "legs-secret", &legs_secret.to_whsec())?],
    );
    let legs_server = LegAnnounceServer::bind(&legs_config).await.context("starting the leg endpoint")?;
    let legs_url = format!("http://{}/legs", legs_server.local_addr().context("the leg endpoint's address")?);

    let ctx = EventContext {
        account_id: DEMO_ACCOUNT_ID,
        account_name: "Demo Account".into(),
        static_meta: BTreeMap::from([("demo".to_owned(), "true".to_owned())]),
    };
    let cores = Cores {
        numbers: NumberCache::new(NumberPlan::new("GB", 6).context("the demo's number plan")?, NUMBER_CACHE),
        correlator: Correlator::new(CorrelationConfig::default()).context("the demo's correlation settings")?,
        lifecycle: CallLifecycle::new(ctx),
    };

    // Everything stops on Ctrl-C, or once `--count` events were printed.
    let stop = shutdown.child_token();
    let (tx, rx) = mpsc::channel(1024);
    let (legs_tx, legs_rx) = mpsc::channel(1024);
    let adapter_task = tokio::spawn({
        let stop = stop.clone();
        async move {
            let sink = ChannelSink(tx);
            Box::new(adapter).run(&sink, Box::pin(stop.cancelled_owned())).await
        }
    });
    let legs_task = tokio::spawn({
        let stop = stop.clone();
        async move { legs_server.serve(legs_tx, stop.cancelled_owned()).await }
    });
    let play_task = tokio::spawn(play(sim, legs_url, legs_secret, stop.clone()));
    info!(
        count = ?args.count,
        "Demo running: a simulated IP Office (DevLink3) and platform; Level 3 events on stdout. Ctrl-C to stop."
    );

    let inputs = Inputs { adapters: rx, legs: legs_rx };
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
    adapter_task.await.context("the adapter task")?.context("the DevLink3 adapter")?;
    legs_task.await.context("the leg endpoint task")?.context("the leg endpoint")?;
    play_task.await.context("the simulator task")?;
    result
}

/// Plays the demo scenarios for ever. Before each call the simulated platform announces the B
/// leg it dialled into the PBX (callSid, parentCallSid, the trunk's SIP Call-ID, numbers), as a
/// real platform would when it sets up the call.
async fn play(sim: AvayaSim, legs_url: String, secret: SigningSecret, stop: CancellationToken) {
    let mut n: u64 = 1;
    let run = async {
        loop {
            sim.wait_for_subscriptions(1).await;
            for name in DEMO_SCENARIOS {
                let Some(scenario) = Scenario::named(name, n) else { continue };
                let leg = BLeg {
                    account_id: DEMO_ACCOUNT_ID,
                    account_name: "Demo Account".into(),
                    call_sid: Uuid::new_v4(),
                    parent_call_sid: Uuid::new_v4(),
                    sip_call_id: Some(CallSpec::numbered(n).sip_call_id),
                    from: CallSpec::numbered(n).caller,
                    to: CallSpec::numbered(n).did,
                    meta: BTreeMap::from([("campaign".to_owned(), "demo".to_owned())]),
                };
                let event = b_leg_event(&leg, Status::Ringing, pipeline::now().0);
                match announce(&legs_url, std::slice::from_ref(&secret), &[event]).await {
                    Ok((200..=299, _)) => {}
                    Ok((status, body)) => {
                        warn!(status, body = %body.trim(), "The leg endpoint refused an announcement.")
                    }
                    Err(e) => warn!(error = %format!("{e:#}"), "Could not announce a leg."),
                }
                sim.play(&scenario).await;
                n += 2;
            }
        }
    };
    tokio::select! {
        () = run => {}
        () = stop.cancelled() => {}
    }
    sim.stop().await;
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

    let mut sink = TeeSink { outbox: OutboxSink { outbox: outbox.clone() }, stdout };
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

/// Writes a small private file (a demo secret) and returns its path.
fn write_file(dir: &Path, name: &str, contents: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
