//! The Avaya IP Office R11 DevLink3 simulator (issue 4).
//!
//! A DevLink3 server speaking the adapter's own codec ([`adapter_avaya_r11::Connection`]):
//! it answers Test packets, authenticates with a SHA-1 challenge (or PLAIN, over TLS), accepts
//! the event request, sends a Delta3 record for every live call right after subscribing (as
//! the IP Office does), then streams what the scripted [`Scenario`]s do.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use pbx_sim::avaya_r11::{AvayaSim, CallSpec, Scenario, SimConfig};
//!
//! let sim = AvayaSim::start("127.0.0.1:0".parse().unwrap(), SimConfig::fast("devlink", "secret")).await?;
//! println!("DevLink3 on {}", sim.addr());
//! sim.wait_for_subscriptions(1).await;
//! sim.play(&Scenario::HuntGroupAnswer(CallSpec::numbered(1))).await;
//! sim.stop().await;
//! # Ok(()) }
//! ```

mod scenario;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use adapter_avaya_r11::Connection;
use adapter_avaya_r11::codec::Incoming;
use adapter_avaya_r11::packet::{
    Challenge, ChallengeResponse, Event, EventHeader, EventTuple, Packet, ResultCode, plain_response, sha1_response,
};
use anyhow::Context as _;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use scenario::{CallSpec, EXTENSIONS, HUNT_GROUP, NODE, Numbering, Scenario, Step, script};

/// Command-line arguments of `pbx-sim avaya-r11`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50797")]
    pub listen: SocketAddr,
    /// Service user name the simulator accepts.
    #[arg(long, default_value = "devlink")]
    pub username: String,
    /// Password the simulator accepts.
    #[arg(long, default_value = "secret")]
    pub password: String,
    /// Scenario to play in a loop: one of `hunt-group`, `hold`, `park`, `blind-transfer`,
    /// `attended-transfer`, `abandon`, `link-drop`, or `mix` (all of them in turn).
    #[arg(long, default_value = "mix")]
    pub scenario: String,
    /// Milliseconds between the steps of a call (0: as fast as possible).
    #[arg(long, default_value_t = 1000)]
    pub step_ms: u64,
    /// Serve TLS with this PEM certificate chain (and `--tls-key`).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Runs `pbx-sim avaya-r11` until interrupted.
pub async fn run_cli(args: Args) -> anyhow::Result<()> {
    if args.scenario != "mix" && !Scenario::NAMES.contains(&args.scenario.as_str()) {
        anyhow::bail!("unknown scenario {:?}; expected mix or one of {}", args.scenario, Scenario::NAMES.join(", "));
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert: cert.clone(), key: key.clone() }),
        _ => None,
    };
    let pacing =
        if args.step_ms == 0 { Pacing::Fast } else { Pacing::RealTime { step: Duration::from_millis(args.step_ms) } };
    let config = SimConfig { tls, pacing, ..SimConfig::fast(&args.username, &args.password) };
    let sim =
        AvayaSim::start(args.listen, config).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(addr = %sim.addr(), scenario = %args.scenario, "DevLink3 simulator listening.");
    let names: Vec<&str> = if args.scenario == "mix" { Scenario::NAMES.to_vec() } else { vec![args.scenario.as_str()] };
    let play = sim.play_mix(&names, 1);
    tokio::select! {
        () = play => {}
        r = tokio::signal::ctrl_c() => r.context("cannot wait for Ctrl-C")?,
    }
    sim.stop().await;
    Ok(())
}

/// How the simulator asks for the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// SHA-1 challenge (the normal case).
    Sha1,
    /// PLAIN challenge (the IP Office allows it over TLS only; the simulator sends it anyway,
    /// so that the client's refusal can be tested).
    Plain,
}

/// How fast scenarios play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// No pauses: tests.
    Fast,
    /// A pause of `step` at each [`Step::Pause`]: the demo.
    RealTime {
        /// The pause.
        step: Duration,
    },
}

/// PEM files of the TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The service user it accepts.
    pub username: String,
    /// Its password.
    pub password: String,
    /// SHA-1 or PLAIN.
    pub auth: AuthMode,
    /// Serve TLS.
    pub tls: Option<TlsFiles>,
    /// Pacing of scenarios.
    pub pacing: Pacing,
    /// The event header layout it sends (8 or 12 bytes before the tuples).
    pub event_header: EventHeader,
    /// The node address in events.
    pub node_address: Ipv4Addr,
    /// Largest frame accepted.
    pub max_frame_bytes: usize,
}

impl SimConfig {
    /// SHA-1, plain TCP, no pauses.
    pub fn fast(username: &str, password: &str) -> SimConfig {
        SimConfig {
            username: username.to_owned(),
            password: password.to_owned(),
            auth: AuthMode::Sha1,
            tls: None,
            pacing: Pacing::Fast,
            event_header: EventHeader::Short,
            node_address: Ipv4Addr::new(192, 168, 42, 3),
            max_frame_bytes: 262_144,
        }
    }
}

/// Counters, for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Connections accepted.
    pub connections: u64,
    /// Authenticate requests received.
    pub auth_attempts: u64,
    /// Authentications refused.
    pub auth_failures: u64,
    /// Event requests accepted.
    pub subscriptions: u64,
    /// Test (keepalive) requests answered.
    pub tests_answered: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    auth_attempts: AtomicU64,
    auth_failures: AtomicU64,
    tests_answered: AtomicU64,
}

/// What a subscribed connection is told.
#[derive(Debug, Clone)]
enum Msg {
    Tuple(EventTuple),
    Raw(Bytes),
    Drop,
}

/// The simulated PBX: live calls (their last `Detail`) and the subscribed connections.
#[derive(Debug, Default)]
struct Pbx {
    calls: BTreeMap<u32, String>,
    subscribers: Vec<mpsc::UnboundedSender<Msg>>,
    numbering: Numbering,
    /// A scripted outage: connections are closed as soon as they are accepted.
    outage: bool,
    /// Subscriptions counted when the outage began.
    subscriptions_at_drop: u64,
}

#[derive(Debug)]
struct Shared {
    config: SimConfig,
    pbx: Mutex<Pbx>,
    counters: Counters,
    subscriptions: watch::Sender<u64>,
    silent: watch::Sender<bool>,
}

impl Shared {
    fn pbx(&self) -> MutexGuard<'_, Pbx> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.pbx.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn broadcast(&self, msg: Msg) {
        let mut pbx = self.pbx();
        pbx.subscribers.retain(|tx| tx.send(msg.clone()).is_ok());
    }
}

/// The demo's service user and password (public: they only open the simulator).
const DEMO_USER: &str = "demo";
const DEMO_PASSWORD: &str = "demo-password";

/// Pause between the demo's steps: fast enough that events show at once, slow enough to watch.
const DEMO_STEP: Duration = Duration::from_millis(150);

/// The scenarios the demo plays, in turn, for ever.
const DEMO_SCENARIOS: [&str; 6] = ["hunt-group", "hold", "park", "blind-transfer", "attended-transfer", "abandon"];

/// `pbx-listener demo --pbx avaya-r11`: a simulated IP Office on loopback, and the `[[pbx]]`
/// keys that point the real adapter at it. Before each call the platform announces its B leg,
/// with the SIP Call-ID the IP Office then reports in SIPTrack.
pub async fn demo(
    dir: &std::path::Path,
    platform: crate::demo::DemoPlatform,
    stop: crate::demo::DemoFuture,
) -> anyhow::Result<crate::demo::DemoPbx> {
    let config =
        SimConfig { pacing: Pacing::RealTime { step: DEMO_STEP }, ..SimConfig::fast(DEMO_USER, DEMO_PASSWORD) };
    let sim = AvayaSim::start(SocketAddr::from(([127, 0, 0, 1], 0)), config)
        .await
        .context("starting the simulated IP Office")?;
    let password_file = crate::demo::write_file(dir, "avaya-password", DEMO_PASSWORD)?;
    let block = format!(
        "host = \"127.0.0.1\"\nport = {}\nusername = {DEMO_USER:?}\npassword_file = {:?}\n",
        sim.addr().port(),
        password_file.display().to_string()
    );
    let play = async move {
        let mut n: u64 = 1;
        let run = async {
            loop {
                sim.wait_for_subscriptions(1).await;
                for name in DEMO_SCENARIOS {
                    let Some(scenario) = Scenario::named(name, n) else { continue };
                    let spec = CallSpec::numbered(n);
                    platform.announce(&platform.leg(n, Some(spec.sip_call_id.clone()), &spec.caller, &spec.did)).await;
                    sim.play(&scenario).await;
                    n += 2;
                }
            }
        };
        tokio::select! {
            () = run => {}
            () = stop => {}
        }
        sim.stop().await;
    };
    Ok(crate::demo::DemoPbx { name: "demo-ipoffice", block, play: Box::pin(play) })
}

/// A running DevLink3 simulator. See the module documentation.
#[derive(Debug)]
pub struct AvayaSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl AvayaSim {
    /// Listens on `addr` (port 0 picks a free port) and serves until [`AvayaSim::stop`].
    pub async fn start(addr: SocketAddr, config: SimConfig) -> std::io::Result<AvayaSim> {
        let tls = match &config.tls {
            Some(files) => Some(tls_acceptor(files)?),
            None => None,
        };
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            pbx: Mutex::new(Pbx::default()),
            counters: Counters::default(),
            subscriptions: watch::channel(0).0,
            silent: watch::channel(false).0,
        });
        let accept_shared = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else { continue };
                accept_shared.counters.connections.fetch_add(1, Ordering::Relaxed);
                if accept_shared.pbx().outage {
                    // The PBX is unreachable during a scripted outage.
                    drop(tcp);
                    continue;
                }
                let shared = accept_shared.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    let result = match tls {
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(stream) => serve(stream, true, &shared).await,
                            Err(e) => Err(anyhow::Error::from(e).context("TLS handshake")),
                        },
                        None => serve(tcp, false, &shared).await,
                    };
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %format!("{e:#}"), "DevLink3 simulator connection ended.");
                    }
                });
            }
        });
        Ok(AvayaSim { addr, shared, accept })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters so far.
    pub fn stats(&self) -> SimStats {
        let c = &self.shared.counters;
        SimStats {
            connections: c.connections.load(Ordering::Relaxed),
            auth_attempts: c.auth_attempts.load(Ordering::Relaxed),
            auth_failures: c.auth_failures.load(Ordering::Relaxed),
            subscriptions: *self.shared.subscriptions.borrow(),
            tests_answered: c.tests_answered.load(Ordering::Relaxed),
        }
    }

    /// Waits until at least `n` event requests were accepted in total.
    pub async fn wait_for_subscriptions(&self, n: u64) {
        let mut rx = self.shared.subscriptions.subscribe();
        let _ = rx.wait_for(|count| *count >= n).await;
    }

    /// The live calls the PBX would re-send to a new subscriber.
    pub fn live_calls(&self) -> Vec<String> {
        self.shared.pbx().calls.keys().map(|id| format!("{NODE}.{id}")).collect()
    }

    /// Plays one scenario to whoever is subscribed; returns when it is over.
    pub async fn play(&self, scenario: &Scenario) {
        let steps = {
            let mut pbx = self.shared.pbx();
            script(scenario, &mut pbx.numbering)
        };
        for step in steps {
            self.step(step).await;
        }
    }

    /// Plays the scenarios called `names` in turn, forever (the demo), numbering calls from
    /// `first_call` so that every call has its own SIP Call-ID, caller and name
    /// ([`CallSpec::numbered`]). Waits for a subscribed client before each round. Unknown names
    /// are skipped.
    pub async fn play_mix(&self, names: &[&str], first_call: u64) {
        let mut n = first_call;
        loop {
            self.wait_for_subscriptions(1).await;
            for name in names {
                if let Some(scenario) = Scenario::named(name, n) {
                    tracing::info!(scenario = name, "Playing.");
                    self.play(&scenario).await;
                }
                n += 2;
            }
            // A round of unknown names only would spin; pause one step.
            self.step(Step::Pause).await;
            if names.iter().all(|name| Scenario::named(name, 0).is_none()) {
                return;
            }
        }
    }

    /// Performs one step.
    pub async fn step(&self, step: Step) {
        match step {
            Step::Delta3 { call, record } => {
                if record.starts_with("<Detail>") {
                    self.shared.pbx().calls.insert(call, record.clone());
                }
                self.shared.broadcast(Msg::Tuple(EventTuple::CallDelta3(record)));
            }
            Step::CallOver { call } => {
                self.shared.pbx().calls.remove(&call);
            }
            Step::SipTrack(s) => self.shared.broadcast(Msg::Tuple(EventTuple::SipTrack(s))),
            Step::DropLink => {
                let subscriptions = *self.shared.subscriptions.borrow();
                let mut pbx = self.shared.pbx();
                pbx.outage = true;
                pbx.subscriptions_at_drop = subscriptions;
                drop(pbx);
                self.drop_link();
            }
            Step::AwaitResubscribe => {
                // The outage ends; wait for a client to subscribe again.
                let target = {
                    let mut pbx = self.shared.pbx();
                    pbx.outage = false;
                    pbx.subscriptions_at_drop + 1
                };
                self.wait_for_subscriptions(target).await;
            }
            Step::Pause => match self.shared.config.pacing {
                Pacing::Fast => tokio::task::yield_now().await,
                Pacing::RealTime { step } => tokio::time::sleep(step).await,
            },
        }
    }

    /// Sends one raw event tuple to the subscribers (e.g. a CMExtn record or a broken Delta3).
    pub fn send_tuple(&self, tuple: EventTuple) {
        self.shared.broadcast(Msg::Tuple(tuple));
    }

    /// Sends raw bytes to the subscribers, between frames (to test resynchronisation).
    pub fn send_raw(&self, bytes: Bytes) {
        self.shared.broadcast(Msg::Raw(bytes));
    }

    /// Closes every client connection (the socket, without a goodbye).
    pub fn drop_link(&self) {
        let mut pbx = self.shared.pbx();
        for tx in pbx.subscribers.drain(..) {
            let _ = tx.send(Msg::Drop);
        }
    }

    /// Stops answering anything (Test packets included) while `silent` is true: a dead link
    /// that stays open.
    pub fn set_silent(&self, silent: bool) {
        self.shared.silent.send_replace(silent);
    }

    /// Stops listening and closes every connection.
    pub async fn stop(self) {
        self.drop_link();
        self.accept.abort();
        let _ = self.accept.await;
    }
}

/// A TLS acceptor (ring provider) for the simulators' certificate and key.
pub(crate) fn tls_acceptor(files: &TlsFiles) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    let invalid = |what: &str, e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what}: {e}"));
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| invalid("certificate", e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("certificate", e.to_string()))?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| invalid("key", e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("TLS", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid("TLS", e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Where a connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ConnState {
    /// Waiting for the authenticate request.
    New,
    /// Challenge sent.
    Challenged { challenge: [u8; 16] },
    /// Authenticated; waiting for the event request.
    Authenticated,
    /// Streaming.
    Subscribed,
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(stream: S, tls: bool, shared: &Shared) -> anyhow::Result<()> {
    let cfg = &shared.config;
    let mut conn = Connection::new(stream, cfg.max_frame_bytes);
    let mut state = ConnState::New;
    let mut counter = 0u32;
    let mut events: Option<mpsc::UnboundedReceiver<Msg>> = None;
    // As an IP Office does, send SIPTrack and CMExtn records only to a client that asked.
    let mut wants = (false, false);
    let mut silent = shared.silent.subscribe();
    loop {
        let incoming = tokio::select! {
            item = conn.next() => match item? {
                Some(item) => item,
                None => return Ok(()),
            },
            msg = async {
                match events.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                match msg {
                    Some(Msg::Tuple(tuple)) => {
                        let requested = match &tuple {
                            EventTuple::SipTrack(_) => wants.0,
                            EventTuple::CmExtn(_) => wants.1,
                            _ => true,
                        };
                        if requested && !*silent.borrow() {
                            counter = counter.wrapping_add(1);
                            conn.send(event(cfg, counter, vec![tuple])).await?;
                        }
                        continue;
                    }
                    Some(Msg::Raw(bytes)) => {
                        conn.send_raw(&bytes).await?;
                        continue;
                    }
                    Some(Msg::Drop) | None => return Ok(()),
                }
            }
            _ = silent.changed() => continue,
        };
        if *silent.borrow() {
            continue;
        }
        let Incoming::Packet(packet) = incoming else { continue };
        match (packet, &state) {
            (Packet::TestRequest { request_id, data }, _) => {
                shared.counters.tests_answered.fetch_add(1, Ordering::Relaxed);
                conn.send(Packet::TestResponse { request_id, result: ResultCode::SUCCESS, data }).await?;
            }
            (Packet::AuthRequest { request_id, username, .. }, ConnState::New) => {
                shared.counters.auth_attempts.fetch_add(1, Ordering::Relaxed);
                let challenge: [u8; 16] = rand::random();
                state = ConnState::Challenged { challenge };
                let challenge = match cfg.auth {
                    AuthMode::Sha1 => Challenge::Sha1(challenge),
                    AuthMode::Plain => Challenge::Plain,
                };
                if username != cfg.username {
                    // Still challenge: the failure comes after the response, as on the PBX.
                    state = ConnState::Challenged { challenge: [0xff; 16] };
                }
                conn.send(Packet::AuthChallenge { request_id, challenge }).await?;
            }
            (Packet::AuthResponse { request_id, response }, ConnState::Challenged { challenge }) => {
                let ok = *challenge != [0xff; 16]
                    && match (response, cfg.auth) {
                        (ChallengeResponse::Sha1(digest), AuthMode::Sha1) => {
                            digest == sha1_response(challenge, &cfg.password)
                        }
                        (ChallengeResponse::Plain(pw), AuthMode::Plain) => pw == plain_response(&cfg.password),
                        _ => false,
                    };
                if ok {
                    state = ConnState::Authenticated;
                    conn.send(Packet::AuthResult {
                        request_id,
                        result: ResultCode::SUCCESS,
                        pbx_type: Some(format!("Avaya IP500v2 11.1.3.0.0 (pbx-sim{})", if tls { ", TLS" } else { "" })),
                        variant: Some("Standard 1.0".into()),
                    })
                    .await?;
                } else {
                    shared.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
                    conn.send(Packet::AuthResult {
                        request_id,
                        result: ResultCode::AUTHENTICATION_FAILED,
                        pbx_type: None,
                        variant: None,
                    })
                    .await?;
                    return Ok(());
                }
            }
            (Packet::EventRequest { request_id, flags }, ConnState::Authenticated) => {
                let known = ["-SIPTrack", "-CMExtn", "-SCN", "-CONN"];
                let accepted: Vec<&str> = flags.split_whitespace().filter(|f| known.contains(f)).collect();
                wants = (accepted.contains(&"-SIPTrack"), accepted.contains(&"-CMExtn"));
                let result = if accepted.len() == flags.split_whitespace().count() {
                    ResultCode::SUCCESS
                } else {
                    ResultCode::PARTIAL_SUCCESS
                };
                // Register and take the snapshot under one lock: nothing is missed or doubled.
                let (rx, snapshot) = {
                    let mut pbx = shared.pbx();
                    let (tx, rx) = mpsc::unbounded_channel();
                    pbx.subscribers.push(tx);
                    (rx, pbx.calls.values().cloned().collect::<Vec<_>>())
                };
                events = Some(rx);
                state = ConnState::Subscribed;
                conn.queue(&Packet::EventResponse { request_id, result, accepted_flags: accepted.join(" ") })?;
                for record in snapshot {
                    counter = counter.wrapping_add(1);
                    conn.queue(&event(cfg, counter, vec![EventTuple::CallDelta3(record)]))?;
                }
                conn.flush().await?;
                shared.subscriptions.send_modify(|n| *n += 1);
            }
            (other, state) => {
                tracing::debug!(?other, ?state, "DevLink3 simulator ignored an out-of-order packet.");
            }
        }
    }
}

fn event(cfg: &SimConfig, counter: u32, tuples: Vec<EventTuple>) -> Packet {
    let header = match cfg.event_header {
        EventHeader::Short => EventHeader::Short,
        EventHeader::Long { .. } => EventHeader::Long { request_id: counter },
    };
    Packet::Event(Event { header, pbx_address: cfg.node_address, counter, tuples })
}
