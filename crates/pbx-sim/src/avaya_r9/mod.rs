//! The Avaya IP Office R9 simulator (issue 10): SMDR, both transport directions, and a
//! DevLink relay's Delta2 feed.
//!
//! - **SMDR** as the IP Office does it: one CR LF record per call segment, written when the
//!   segment ends. Either the simulator listens (the IP Office's "IP Address" `0.0.0.0`) and
//!   the adapter connects, or it connects to the adapter's listener (and reconnects). While no
//!   collector is connected, records wait in a buffer of at most `buffer_records` (oldest
//!   overwritten, like the IP Office's "Records to Buffer"), replayed in order on the next
//!   connection. [`R9Sim::outage`] cuts the link for a while; `replay_delivered` re-sends the
//!   last records delivered before it, as a PBX that does not know what arrived would.
//! - **Delta2**: a relay's TCP line feed (`docs/pbx/avaya-ip-office-r9.md`). On each new
//!   connection it re-sends the last `CALL: S` of every live call, then `RELAY: SNAPSHOT END`.
//! - The PBX clock is the wall clock plus `clock_offset_ms` (to simulate a PBX whose clock is
//!   off, or calls reported minutes late), shown in `timezone`.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use pbx_sim::avaya_r9::{R9Sim, R9SimConfig, Scenario, CallSpec, SmdrSide};
//!
//! let sim = R9Sim::start(R9SimConfig::fast(SmdrSide::Listen("127.0.0.1:0".parse()?))).await?;
//! sim.wait_for_smdr_collectors(1).await;
//! sim.play(&Scenario::InboundAnswered(CallSpec::numbered(1))).await;
//! sim.stop().await;
//! # Ok(()) }
//! ```

mod scenario;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

pub use scenario::{CallScript, CallSpec, EXTENSIONS, Emit, HUNT_GROUP, Scenario, script};

/// Command-line arguments of `pbx-sim avaya-r9`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Listen for the collector on this address (the IP Office's SMDR "IP Address" 0.0.0.0).
    #[arg(long, conflicts_with = "smdr_push")]
    pub smdr_listen: Option<SocketAddr>,
    /// Connect to the collector's SMDR listener at this address (the IP Office's "IP Address").
    #[arg(long)]
    pub smdr_push: Option<SocketAddr>,
    /// Serve a DevLink relay's Delta2 line feed on this address.
    #[arg(long)]
    pub delta2_listen: Option<SocketAddr>,
    /// Scenario to play in a loop: `answered`, `missed`, `hunt-group`, `transfer`, `park`,
    /// `voicemail`, or `mix` (all in turn).
    #[arg(long, default_value = "mix")]
    pub scenario: String,
    /// The PBX's time zone (IANA).
    #[arg(long, default_value = "Europe/London")]
    pub timezone: String,
    /// Play calls in real time (a 30 s call takes 30 s); otherwise as fast as possible.
    #[arg(long)]
    pub real_time: bool,
    /// Milliseconds between calls.
    #[arg(long, default_value_t = 2_000)]
    pub gap_ms: u64,
}

/// Runs `pbx-sim avaya-r9` until interrupted.
pub async fn run_cli(args: Args) -> anyhow::Result<()> {
    if args.scenario != "mix" && !Scenario::NAMES.contains(&args.scenario.as_str()) {
        anyhow::bail!("unknown scenario {:?}; expected mix or one of {}", args.scenario, Scenario::NAMES.join(", "));
    }
    let smdr = match (args.smdr_listen, args.smdr_push) {
        (Some(a), None) => SmdrSide::Listen(a),
        (None, Some(a)) => SmdrSide::Push(a),
        _ => anyhow::bail!("give --smdr-listen or --smdr-push"),
    };
    let config = R9SimConfig {
        timezone: args.timezone.clone(),
        delta2_listen: args.delta2_listen,
        pacing: if args.real_time { Pacing::RealTime } else { Pacing::Fast },
        ..R9SimConfig::fast(smdr)
    };
    let sim = R9Sim::start(config).await?;
    tracing::info!(smdr = ?sim.smdr_addr(), delta2 = ?sim.delta2_addr(), "Avaya R9 simulator running.");
    let names: Vec<&str> = if args.scenario == "mix" { Scenario::NAMES.to_vec() } else { vec![args.scenario.as_str()] };
    let play = async {
        let mut n = 1;
        loop {
            for name in &names {
                if let Some(s) = Scenario::named(name, n) {
                    tracing::info!(scenario = name, "Playing.");
                    sim.play(&s).await;
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
            }
        }
    };
    tokio::select! {
        () = play => {}
        r = tokio::signal::ctrl_c() => r.context("cannot wait for Ctrl-C")?,
    }
    sim.stop().await;
    Ok(())
}

/// The scenarios the demo plays, in turn, for ever.
const DEMO_SCENARIOS: [&str; 6] = ["answered", "hunt-group", "transfer", "park", "voicemail", "missed"];

/// Pause between the demo's calls.
const DEMO_GAP: Duration = Duration::from_millis(1_500);

/// `pbx-listener demo --pbx avaya-r9`: a simulated IP Office R9 whose SMDR the real adapter
/// reads (the IP Office listens, the adapter connects), and the `[[pbx]]` keys for it. Before
/// each call the platform announces its B leg (caller and DID: SMDR has no SIP Call-ID); SMDR
/// reports the call when it ends, and correlation binds it on the PBX's call start.
pub async fn demo(
    platform: crate::demo::DemoPlatform,
    stop: crate::demo::DemoFuture,
) -> anyhow::Result<crate::demo::DemoPbx> {
    let sim = R9Sim::start(R9SimConfig::fast(SmdrSide::Listen(SocketAddr::from(([127, 0, 0, 1], 0)))))
        .await
        .context("starting the simulated IP Office R9")?;
    let port = sim.smdr_addr().map_or(0, |a| a.port());
    let block = format!(
        "host = \"127.0.0.1\"\ntimezone = {:?}\n\
         smdr = {{ mode = \"connect\", port = {port}, reconnect_min_ms = 200, reconnect_max_secs = 2 }}\n",
        sim.shared.config.timezone
    );
    let play = async move {
        let run = async {
            sim.wait_for_smdr_collectors(1).await;
            let mut n: u64 = 100;
            loop {
                for name in DEMO_SCENARIOS {
                    let Some(scenario) = Scenario::named(name, n) else { continue };
                    let spec = CallSpec::numbered(n);
                    platform.announce(&platform.leg(n, None, &spec.caller, &spec.did)).await;
                    // The PBX writes the record when the call ends, long after the platform
                    // announced the leg; half a second stands for that here.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    sim.play(&scenario).await;
                    n += 1;
                    tokio::time::sleep(DEMO_GAP).await;
                }
            }
        };
        tokio::select! {
            () = run => {}
            () = stop => {}
        }
        sim.stop().await;
    };
    Ok(crate::demo::DemoPbx { name: "demo-ipoffice-r9", block, play: Box::pin(play) })
}

/// Who opens the SMDR connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmdrSide {
    /// The simulator listens here; the collector connects.
    Listen(SocketAddr),
    /// The simulator connects to the collector listening here.
    Push(SocketAddr),
}

/// How fast calls play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// Everything at once, in order (tests): the records carry the times, not the sending.
    Fast,
    /// As the calls happen.
    RealTime,
}

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct R9SimConfig {
    /// SMDR transport.
    pub smdr: SmdrSide,
    /// Where the Delta2 relay feed is served, if at all.
    pub delta2_listen: Option<SocketAddr>,
    /// The PBX's IANA time zone.
    pub timezone: String,
    /// The PBX clock minus the wall clock, in ms (negative: the PBX is behind).
    pub clock_offset_ms: i64,
    /// Records kept while no collector is connected (the IP Office keeps 10 to 3000).
    pub buffer_records: usize,
    /// After an outage, re-send this many of the records delivered before it.
    pub replay_delivered: usize,
    /// Pacing.
    pub pacing: Pacing,
    /// The first Call ID.
    pub first_call_id: u64,
}

impl R9SimConfig {
    /// London time, a 500-record buffer (the IP Office's default), no pauses.
    pub fn fast(smdr: SmdrSide) -> R9SimConfig {
        R9SimConfig {
            smdr,
            delta2_listen: None,
            timezone: "Europe/London".into(),
            clock_offset_ms: 0,
            buffer_records: 500,
            replay_delivered: 0,
            pacing: Pacing::Fast,
            first_call_id: 1_000_001,
        }
    }
}

#[derive(Debug, Clone)]
enum Msg {
    Line(String),
    Close,
}

#[derive(Debug, Default)]
struct State {
    /// Records not delivered yet.
    buffer: VecDeque<String>,
    /// The last records delivered (for `replay_delivered`).
    delivered: VecDeque<String>,
    smdr_clients: Vec<mpsc::UnboundedSender<Msg>>,
    delta2_clients: Vec<mpsc::UnboundedSender<Msg>>,
    smdr_outage: bool,
    delta2_outage: bool,
    /// Replay the delivered tail on the next SMDR connection.
    replay_pending: bool,
    /// The last Delta2 status of each live call (the relay's snapshot).
    live: BTreeMap<u64, String>,
    next_call_id: u64,
}

struct Shared {
    config: R9SimConfig,
    tz: jiff::tz::TimeZone,
    state: Mutex<State>,
    smdr_connections: watch::Sender<u64>,
    delta2_connections: watch::Sender<u64>,
    records_sent: AtomicU64,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send_smdr(&self, line: String) {
        let mut st = self.state();
        st.smdr_clients.retain(|c| !c.is_closed());
        if st.smdr_outage || st.smdr_clients.is_empty() {
            st.buffer.push_back(line);
            while st.buffer.len() > self.config.buffer_records {
                st.buffer.pop_front();
            }
            return;
        }
        if deliver(&mut st, &self.config, line) {
            self.records_sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn send_delta2(&self, line: String) {
        let mut st = self.state();
        if st.delta2_outage {
            return;
        }
        st.delta2_clients.retain(|c| c.send(Msg::Line(line.clone())).is_ok());
    }

    /// A collector connected: it gets the replay, the buffer, then what comes.
    fn smdr_connected(&self, tx: mpsc::UnboundedSender<Msg>) {
        let mut st = self.state();
        if st.replay_pending {
            st.replay_pending = false;
            let tail: Vec<String> = st.delivered.iter().cloned().collect();
            for line in tail {
                let _ = tx.send(Msg::Line(line));
            }
        }
        st.smdr_clients.push(tx);
        while let Some(line) = st.buffer.pop_front() {
            if !deliver(&mut st, &self.config, line) {
                break;
            }
            self.records_sent.fetch_add(1, Ordering::Relaxed);
        }
        drop(st);
        self.smdr_connections.send_modify(|n| *n += 1);
    }
}

/// Sends a record to the collectors; keeps it at the head of the buffer when none is left.
fn deliver(st: &mut State, config: &R9SimConfig, line: String) -> bool {
    st.smdr_clients.retain(|c| c.send(Msg::Line(line.clone())).is_ok());
    if st.smdr_clients.is_empty() {
        st.buffer.push_front(line);
        return false;
    }
    st.delivered.push_back(line);
    while st.delivered.len() > config.replay_delivered {
        st.delivered.pop_front();
    }
    true
}

/// A running simulator. See the module documentation.
pub struct R9Sim {
    shared: Arc<Shared>,
    smdr_addr: Option<SocketAddr>,
    delta2_addr: Option<SocketAddr>,
    tasks: JoinSet<()>,
}

impl R9Sim {
    /// Starts listening (and, in push mode, connecting).
    pub async fn start(config: R9SimConfig) -> anyhow::Result<R9Sim> {
        let tz = jiff::tz::db().get(&config.timezone).with_context(|| format!("time zone {:?}", config.timezone))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State { next_call_id: config.first_call_id, ..State::default() }),
            config: config.clone(),
            tz,
            smdr_connections: watch::channel(0).0,
            delta2_connections: watch::channel(0).0,
            records_sent: AtomicU64::new(0),
        });
        let mut tasks = JoinSet::new();
        let smdr_addr = match config.smdr {
            SmdrSide::Listen(addr) => {
                let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
                let local = listener.local_addr()?;
                tasks.spawn(smdr_listen(listener, shared.clone()));
                Some(local)
            }
            SmdrSide::Push(addr) => {
                tasks.spawn(smdr_push(addr, shared.clone()));
                None
            }
        };
        let delta2_addr = match config.delta2_listen {
            Some(addr) => {
                let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
                let local = listener.local_addr()?;
                tasks.spawn(delta2_listen(listener, shared.clone()));
                Some(local)
            }
            None => None,
        };
        Ok(R9Sim { shared, smdr_addr, delta2_addr, tasks })
    }

    /// Where the SMDR listener is (listen mode).
    pub fn smdr_addr(&self) -> Option<SocketAddr> {
        self.smdr_addr
    }

    /// Where the Delta2 feed is served.
    pub fn delta2_addr(&self) -> Option<SocketAddr> {
        self.delta2_addr
    }

    /// Waits until collectors connected `n` times in total.
    pub async fn wait_for_smdr_collectors(&self, n: u64) {
        let _ = self.shared.smdr_connections.subscribe().wait_for(|c| *c >= n).await;
    }

    /// Waits until relay clients connected `n` times in total.
    pub async fn wait_for_delta2_clients(&self, n: u64) {
        let _ = self.shared.delta2_connections.subscribe().wait_for(|c| *c >= n).await;
    }

    /// SMDR records delivered to a collector so far (replays of delivered records excluded).
    pub fn records_sent(&self) -> u64 {
        self.shared.records_sent.load(Ordering::Relaxed)
    }

    /// Records waiting in the buffer.
    pub fn buffered(&self) -> usize {
        self.shared.state().buffer.len()
    }

    /// The PBX's local time now as SMDR writes it, and its instant (ms since the epoch).
    pub fn pbx_now(&self) -> (String, u64) {
        let wall = listener_kit_now();
        let ms = wall.saturating_add_signed(self.shared.config.clock_offset_ms);
        (self.local(ms), ms)
    }

    /// `ms` since the epoch as the PBX's local `YYYY/MM/DD HH:MM:SS`.
    pub fn local(&self, ms: u64) -> String {
        let ts =
            jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(0)).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        ts.to_zoned(self.shared.tz.clone()).strftime("%Y/%m/%d %H:%M:%S").to_string()
    }

    /// Plays one call starting now (PBX clock): returns its script (with its Call ID) when it
    /// is over.
    pub async fn play(&self, scenario: &Scenario) -> CallScript {
        let (start, _) = self.pbx_now();
        self.play_at(scenario, &start).await
    }

    /// Plays one call whose Call Start is `call_start` (PBX local time).
    pub async fn play_at(&self, scenario: &Scenario, call_start: &str) -> CallScript {
        let call_id = {
            let mut st = self.shared.state();
            let id = st.next_call_id;
            st.next_call_id += 1;
            id
        };
        let s = script(scenario, call_id, call_start);
        let started = tokio::time::Instant::now();
        for (at, emit) in &s.emits {
            if self.shared.config.pacing == Pacing::RealTime {
                tokio::time::sleep_until(started + Duration::from_millis(*at)).await;
            }
            self.emit(call_id, emit.clone());
            tokio::task::yield_now().await;
        }
        s
    }

    /// Sends one item of a script.
    pub fn emit(&self, call_id: u64, emit: Emit) {
        match emit {
            Emit::Smdr(line) => self.shared.send_smdr(line),
            Emit::Delta2(line) => {
                if line.starts_with("CALL: S") || line.starts_with("CALL:S") {
                    self.shared.state().live.insert(call_id, line.clone());
                }
                self.shared.send_delta2(line);
            }
            Emit::Over => {
                self.shared.state().live.remove(&call_id);
            }
        }
    }

    /// Sends a raw SMDR line (malformed input tests); CR LF is added.
    pub fn send_smdr_raw(&self, line: &str) {
        self.shared.send_smdr(line.to_owned());
    }

    /// Starts (`true`) or ends an SMDR outage: connections close, records are buffered; at the
    /// end the next connection gets the replay and the buffer.
    pub fn outage(&self, on: bool) {
        let mut st = self.shared.state();
        st.smdr_outage = on;
        if on {
            st.replay_pending = self.shared.config.replay_delivered > 0;
            for c in st.smdr_clients.drain(..) {
                let _ = c.send(Msg::Close);
            }
        }
    }

    /// Starts or ends a Delta2 relay outage (connections close; lines are lost, as on a relay
    /// that lost its DevLink link).
    pub fn delta2_outage(&self, on: bool) {
        let mut st = self.shared.state();
        st.delta2_outage = on;
        if on {
            for c in st.delta2_clients.drain(..) {
                let _ = c.send(Msg::Close);
            }
        }
    }

    /// Stops everything.
    pub async fn stop(mut self) {
        self.outage(true);
        self.delta2_outage(true);
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

fn listener_kit_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Writes lines (CR LF for SMDR, LF for Delta2) until closed.
async fn write_lines(mut stream: TcpStream, mut rx: mpsc::UnboundedReceiver<Msg>, crlf: bool) {
    let _ = stream.set_nodelay(true);
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Line(mut line) => {
                line.push_str(if crlf { "\r\n" } else { "\n" });
                // Batch what is queued already into one write.
                while let Ok(Msg::Line(more)) = rx.try_recv() {
                    line.push_str(&more);
                    line.push_str(if crlf { "\r\n" } else { "\n" });
                }
                if stream.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
            }
            Msg::Close => return,
        }
    }
}

async fn smdr_listen(listener: TcpListener, shared: Arc<Shared>) {
    let mut writers = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        if shared.state().smdr_outage {
            drop(stream);
            continue;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        shared.smdr_connected(tx);
        writers.spawn(write_lines(stream, rx, true));
        while writers.try_join_next().is_some() {}
    }
}

async fn smdr_push(addr: SocketAddr, shared: Arc<Shared>) {
    loop {
        if !shared.state().smdr_outage
            && let Ok(stream) = TcpStream::connect(addr).await
        {
            let (tx, rx) = mpsc::unbounded_channel();
            shared.smdr_connected(tx);
            write_lines(stream, rx, true).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn delta2_listen(listener: TcpListener, shared: Arc<Shared>) {
    let mut writers = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        if shared.state().delta2_outage {
            drop(stream);
            continue;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut st = shared.state();
            for line in st.live.values() {
                let _ = tx.send(Msg::Line(line.clone()));
            }
            let _ = tx.send(Msg::Line("RELAY: SNAPSHOT END".into()));
            st.delta2_clients.push(tx);
        }
        shared.delta2_connections.send_modify(|n| *n += 1);
        writers.spawn(write_lines(stream, rx, false));
        while writers.try_join_next().is_some() {}
    }
}
