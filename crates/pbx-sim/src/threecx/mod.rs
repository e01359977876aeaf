//! The 3CX V20 simulator (issue 11): the Call Control API over HTTP/WS or HTTPS/WSS, and the
//! CDR socket.
//!
//! - `POST /connect/token` (client credentials, form-encoded): one valid token per client id
//!   at a time, as on 3CX — minting one invalidates the previous one; tokens are JWT-shaped
//!   with `iat`/`exp` and `expires_in` in seconds or minutes ([`SimConfig::expires_in_minutes`]);
//! - `GET /callcontrol` (the snapshot: one `DNInfo` per DN), `GET /callcontrol/{dn}/
//!   participants/{id}` (404 when gone), both `Bearer`-checked (401), 403 without the licence;
//! - `GET /callcontrol/ws` upgraded to a WebSocket (Bearer on the upgrade): notification
//!   frames `{"sequence", "event": {"event_type", "entity", "attached_data": null}}` as 3CX
//!   sends them, answering pings;
//! - the CDR socket: 3CX's passive socket (we listen, [`ThreeCxSim::cdr_addr`]) or active one
//!   ([`ThreeCxSim::send_cdr_to`] connects out per record).
//!
//! Scripted [`Scenario`]s change participants and send the notifications; a script step can
//! wait until the client fetched what it announced, so tests need no sleeps.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use pbx_sim::threecx::{CallSpec, Scenario, SimConfig, ThreeCxSim};
//!
//! let sim = ThreeCxSim::start("127.0.0.1:0".parse().unwrap(), SimConfig::fast("pbxlistener", "secret")).await?;
//! println!("3CX on {}", sim.url());
//! sim.wait_for_snapshots(1).await;
//! sim.play(&Scenario::QueueAnswer(CallSpec::numbered(1))).await;
//! sim.stop().await;
//! # Ok(()) }
//! ```

mod scenario;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adapter_3cx::participant::Participant;
use adapter_3cx::ws::{EventType, participant_path, render_frame};
use anyhow::Context as _;
use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

pub use scenario::{CallSpec, EXTENSIONS, Numbering, QUEUE, Scenario, Step, TRUNK_DN, inbound, script};

use crate::avaya_r11::TlsFiles;

/// Command-line arguments of `pbx-sim 3cx`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address the API listens on.
    #[arg(long, default_value = "127.0.0.1:5001")]
    pub listen: SocketAddr,
    /// The API client's id the simulator accepts.
    #[arg(long, default_value = "pbxlistener")]
    pub client_id: String,
    /// The API client's key the simulator accepts.
    #[arg(long, default_value = "secret")]
    pub client_secret: String,
    /// Scenario to play in a loop: one of `queue`, `transfer`, `abandon`, `outbound`,
    /// `token-expiry`, `ws-drop`, `get-remove-race`, `token-thief`, or `mix` (all but the
    /// thief in turn).
    #[arg(long, default_value = "mix")]
    pub scenario: String,
    /// Milliseconds of each pause between the steps of a call (0: as fast as the client
    /// fetches).
    #[arg(long, default_value_t = 1000)]
    pub step_ms: u64,
    /// Token lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub token_lifetime_secs: u64,
    /// Write `expires_in` in minutes, as 3CX up to 20.0.8 did.
    #[arg(long)]
    pub expires_in_minutes: bool,
    /// Also listen for CDR clients here (3CX's passive socket).
    #[arg(long)]
    pub cdr_listen: Option<SocketAddr>,
    /// Serve HTTPS/WSS with this PEM certificate chain (and `--tls-key`).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Runs `pbx-sim 3cx` until interrupted.
pub async fn run_cli(args: Args) -> anyhow::Result<()> {
    if args.scenario != "mix" && !Scenario::ALL.contains(&args.scenario.as_str()) {
        anyhow::bail!("unknown scenario {:?}; expected mix or one of {}", args.scenario, Scenario::ALL.join(", "));
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert: cert.clone(), key: key.clone() }),
        _ => None,
    };
    let config = SimConfig {
        tls,
        step: Duration::from_millis(args.step_ms),
        token_lifetime: Duration::from_secs(args.token_lifetime_secs),
        expires_in_minutes: args.expires_in_minutes,
        cdr_listen: args.cdr_listen,
        ..SimConfig::fast(&args.client_id, &args.client_secret)
    };
    let sim =
        ThreeCxSim::start(args.listen, config).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(url = %sim.url(), cdr = ?sim.cdr_addr(), scenario = %args.scenario, "3CX simulator listening.");
    let names: Vec<&str> = if args.scenario == "mix" { Scenario::NAMES.to_vec() } else { vec![args.scenario.as_str()] };
    let play = async {
        let mut n = 1;
        loop {
            sim.wait_for_snapshots(1).await;
            for name in &names {
                if let Some(s) = Scenario::named(name, n) {
                    tracing::info!(scenario = name, "Playing.");
                    sim.play(&s).await;
                }
                n += 3;
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

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The API client id it accepts.
    pub client_id: String,
    /// Its key.
    pub client_secret: String,
    /// Serve HTTPS/WSS.
    pub tls: Option<TlsFiles>,
    /// The DNs the API client sees: `(dn, DNInfo type)`.
    pub dns: Vec<(String, String)>,
    /// Whether the licence allows Call Control (403 otherwise).
    pub licensed: bool,
    /// Token lifetime.
    pub token_lifetime: Duration,
    /// `expires_in` in minutes (3CX up to 20.0.8) instead of seconds.
    pub expires_in_minutes: bool,
    /// How long a [`Step::Pause`] lasts (zero: a yield).
    pub step: Duration,
    /// The longest a step waits for the client (then it goes on).
    pub await_limit: Duration,
    /// Listen for CDR clients here (3CX's passive socket).
    pub cdr_listen: Option<SocketAddr>,
}

impl SimConfig {
    /// Plain HTTP, every extension and the queue visible, licensed, tokens for an hour in
    /// seconds, no pauses.
    pub fn fast(client_id: &str, client_secret: &str) -> SimConfig {
        let mut dns: Vec<(String, String)> =
            EXTENSIONS.iter().map(|e| ((*e).to_owned(), "Wextension".to_owned())).collect();
        dns.push((client_id.to_owned(), "Wroutepoint".to_owned()));
        SimConfig {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            tls: None,
            dns,
            licensed: true,
            token_lifetime: Duration::from_secs(3600),
            expires_in_minutes: false,
            step: Duration::ZERO,
            await_limit: Duration::from_secs(20),
            cdr_listen: None,
        }
    }
}

/// Counters, for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Tokens minted for our client (the thief's not counted).
    pub tokens: u64,
    /// Token requests refused (wrong credentials).
    pub token_refusals: u64,
    /// Requests answered 401.
    pub unauthorized: u64,
    /// Snapshots served.
    pub snapshots: u64,
    /// Participant GETs served (any status).
    pub participant_gets: u64,
    /// WebSockets opened.
    pub websockets: u64,
}

#[derive(Debug, Default)]
struct Counters {
    tokens: AtomicU64,
    token_refusals: AtomicU64,
    unauthorized: AtomicU64,
    participant_gets: AtomicU64,
    websockets: AtomicU64,
}

#[derive(Debug, Clone)]
enum WsMsg {
    Text(String),
    Drop,
}

/// The simulated PBX's state.
#[derive(Debug, Default)]
struct Pbx {
    /// Live participants by (dn, id), with a version bumped on every change.
    participants: BTreeMap<(String, i64), (Participant, u64)>,
    /// The version of each participant a client fetched last.
    fetched: BTreeMap<(String, i64), u64>,
    version: u64,
    sequence: i64,
    /// The one valid token and its expiry (ms).
    token: Option<(String, u64)>,
    token_counter: u64,
    subscribers: Vec<mpsc::UnboundedSender<WsMsg>>,
    /// WebSockets are refused (a scripted outage).
    outage: bool,
    cdr_clients: Vec<mpsc::UnboundedSender<String>>,
}

#[derive(Debug)]
struct Shared {
    config: SimConfig,
    pbx: Mutex<Pbx>,
    counters: Counters,
    snapshots: watch::Sender<u64>,
    fetches: watch::Sender<u64>,
}

impl Shared {
    fn pbx(&self) -> MutexGuard<'_, Pbx> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.pbx.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A running 3CX simulator. See the module documentation.
#[derive(Debug)]
pub struct ThreeCxSim {
    addr: SocketAddr,
    cdr_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    numbering: Mutex<Numbering>,
}

impl ThreeCxSim {
    /// Listens on `addr` (port 0 picks a free port) and serves until [`ThreeCxSim::stop`].
    pub async fn start(addr: SocketAddr, config: SimConfig) -> std::io::Result<ThreeCxSim> {
        let tls = match &config.tls {
            Some(files) => Some(crate::avaya_r11::tls_acceptor(files)?),
            None => None,
        };
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let cdr_listener = match config.cdr_listen {
            Some(a) => Some(TcpListener::bind(a).await?),
            None => None,
        };
        let cdr_addr = match &cdr_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let shared = Arc::new(Shared {
            config,
            pbx: Mutex::new(Pbx::default()),
            counters: Counters::default(),
            snapshots: watch::channel(0).0,
            fetches: watch::channel(0).0,
        });
        let mut tasks = Vec::new();
        let accept_shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let shared = accept_shared.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                serve(TokioIo::new(stream), shared).await;
                            }
                        }
                        None => serve(TokioIo::new(tcp), shared).await,
                    }
                });
            }
        }));
        if let Some(l) = cdr_listener {
            let cdr_shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((mut tcp, _)) = l.accept().await else { continue };
                    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
                    cdr_shared.pbx().cdr_clients.push(tx);
                    tokio::spawn(async move {
                        while let Some(line) = rx.recv().await {
                            if tcp.write_all(line.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }));
        }
        Ok(ThreeCxSim { addr, cdr_addr, shared, tasks, numbering: Mutex::new(Numbering::default()) })
    }

    /// The address the API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL (`http://127.0.0.1:port` or `https://localhost:port`).
    pub fn url(&self) -> String {
        match self.shared.config.tls {
            Some(_) => format!("https://localhost:{}", self.addr.port()),
            None => format!("http://{}", self.addr),
        }
    }

    /// Where the passive CDR socket listens, if configured.
    pub fn cdr_addr(&self) -> Option<SocketAddr> {
        self.cdr_addr
    }

    /// Counters so far.
    pub fn stats(&self) -> SimStats {
        let c = &self.shared.counters;
        SimStats {
            tokens: c.tokens.load(Ordering::Relaxed),
            token_refusals: c.token_refusals.load(Ordering::Relaxed),
            unauthorized: c.unauthorized.load(Ordering::Relaxed),
            snapshots: *self.shared.snapshots.borrow(),
            participant_gets: c.participant_gets.load(Ordering::Relaxed),
            websockets: c.websockets.load(Ordering::Relaxed),
        }
    }

    /// Waits until at least `n` snapshots were served.
    pub async fn wait_for_snapshots(&self, n: u64) {
        let mut rx = self.shared.snapshots.subscribe();
        let _ = rx.wait_for(|c| *c >= n).await;
    }

    /// The calls with live participants.
    pub fn live_calls(&self) -> Vec<i64> {
        let mut calls: Vec<i64> = self.shared.pbx().participants.values().filter_map(|(p, _)| p.callid).collect();
        calls.sort_unstable();
        calls.dedup();
        calls
    }

    /// Plays one scenario (numbering its calls after the previous ones); returns when over.
    pub async fn play(&self, scenario: &Scenario) {
        let steps = {
            let mut n = self.numbering.lock().unwrap_or_else(|e| e.into_inner());
            script(scenario, &mut n)
        };
        for step in steps {
            self.step(step).await;
        }
    }

    /// Performs one step.
    pub async fn step(&self, step: Step) {
        match step {
            Step::Upsert { participant, await_fetch } => {
                let Some((key, version)) = self.set(participant) else { return };
                self.notify(EventType::Upsert, &key.0, key.1);
                if await_fetch {
                    self.await_fetch(&key, version).await;
                }
            }
            Step::Remove { dn, id } => {
                self.shared.pbx().participants.remove(&(dn.clone(), id));
                self.notify(EventType::Remove, &dn, id);
            }
            Step::SetSilently(p) => {
                self.set(p);
            }
            Step::RemoveSilently { dn, id } => {
                self.shared.pbx().participants.remove(&(dn, id));
            }
            Step::DropWebSocket => {
                let mut pbx = self.shared.pbx();
                pbx.outage = true;
                for tx in pbx.subscribers.drain(..) {
                    let _ = tx.send(WsMsg::Drop);
                }
            }
            Step::AwaitReconnect => {
                let target = {
                    let mut pbx = self.shared.pbx();
                    pbx.outage = false;
                    *self.shared.snapshots.borrow() + 1
                };
                let _ = tokio::time::timeout(self.shared.config.await_limit, self.wait_for_snapshots(target)).await;
            }
            Step::ExpireTokens => self.expire_tokens(),
            Step::StealToken => self.steal_token(),
            Step::Cdr(line) => self.send_cdr(&line),
            Step::Pause => {
                if self.shared.config.step.is_zero() {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(self.shared.config.step).await;
                }
            }
        }
    }

    fn set(&self, p: Participant) -> Option<((String, i64), u64)> {
        let key = (p.dn.clone()?, p.id?);
        let mut pbx = self.shared.pbx();
        pbx.version += 1;
        let version = pbx.version;
        pbx.participants.insert(key.clone(), (p, version));
        Some((key, version))
    }

    fn notify(&self, event_type: EventType, dn: &str, id: i64) {
        let mut pbx = self.shared.pbx();
        pbx.sequence += 1;
        let frame = render_frame(pbx.sequence, event_type, &participant_path(dn, &id.to_string()));
        pbx.subscribers.retain(|tx| tx.send(WsMsg::Text(frame.clone())).is_ok());
    }

    /// Waits (bounded) until a client fetched `version` of the participant (or a later one).
    async fn await_fetch(&self, key: &(String, i64), version: u64) {
        let mut rx = self.shared.fetches.subscribe();
        let seen = |shared: &Shared| shared.pbx().fetched.get(key).is_some_and(|v| *v >= version);
        let wait = async {
            while !seen(&self.shared) {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(self.shared.config.await_limit, wait).await;
    }

    /// Every token expires now (the next request with one gets 401).
    pub fn expire_tokens(&self) {
        if let Some((_, exp)) = self.shared.pbx().token.as_mut() {
            *exp = 0;
        }
    }

    /// Another program with the same client id takes a token: ours is invalid from now on.
    pub fn steal_token(&self) {
        let mut pbx = self.shared.pbx();
        let (token, exp) = mint(&mut pbx, &self.shared.config);
        pbx.token = Some((token, exp));
    }

    /// Sends a CDR line (a newline is added) to every client of the passive socket.
    pub fn send_cdr(&self, line: &str) {
        let text = format!("{}\r\n", line.trim_end());
        self.shared.pbx().cdr_clients.retain(|tx| tx.send(text.clone()).is_ok());
    }

    /// 3CX's active socket: connects to `addr`, writes one record, closes.
    pub async fn send_cdr_to(&self, addr: SocketAddr, line: &str) -> std::io::Result<()> {
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.write_all(format!("{}\r\n", line.trim_end()).as_bytes()).await?;
        tcp.shutdown().await
    }

    /// Closes every WebSocket (no outage: the client may reconnect at once).
    pub fn drop_websockets(&self) {
        for tx in self.shared.pbx().subscribers.drain(..) {
            let _ = tx.send(WsMsg::Drop);
        }
    }

    /// Stops listening and closes every connection.
    pub async fn stop(self) {
        self.drop_websockets();
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// A new JWT-shaped token for the client (invalidating the previous one).
fn mint(pbx: &mut Pbx, config: &SimConfig) -> (String, u64) {
    pbx.token_counter += 1;
    let iat = now_ms() / 1000;
    let exp = iat + config.token_lifetime.as_secs();
    let enc = |s: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let token = format!(
        "{}.{}.{}",
        enc(r#"{"alg":"none","typ":"JWT"}"#.to_owned()),
        enc(format!(r#"{{"iat":{iat},"exp":{exp},"client_id":"{}","n":{}}}"#, config.client_id, pbx.token_counter)),
        enc(format!("sim-{}", pbx.token_counter))
    );
    (token, now_ms() + config.token_lifetime.as_millis() as u64)
}

type Body = Full<Bytes>;

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

async fn serve<I>(io: I, shared: Arc<Shared>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(req, shared).await) }
    });
    let _ = http1::Builder::new().serve_connection(io, service).with_upgrades().await;
}

fn authorized(req: &Request<Incoming>, shared: &Shared) -> bool {
    let bearer = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let ok = {
        let pbx = shared.pbx();
        matches!((&pbx.token, bearer), (Some((t, exp)), Some(b)) if *t == b && now_ms() < *exp)
    };
    if !ok {
        shared.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
    }
    ok
}

async fn handle(mut req: Request<Incoming>, shared: Arc<Shared>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<String> = path.split('/').filter(|s| !s.is_empty()).map(decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (req.method().as_str(), segments.as_slice()) {
        ("POST", ["connect", "token"]) => token(req, &shared).await,
        ("GET", ["callcontrol", "ws"]) => {
            if !authorized(&req, &shared) {
                return reply(StatusCode::UNAUTHORIZED, "");
            }
            if !shared.config.licensed {
                return reply(StatusCode::FORBIDDEN, r#"{"error":"Call Control API is not licensed"}"#);
            }
            if shared.pbx().outage {
                return reply(StatusCode::SERVICE_UNAVAILABLE, "");
            }
            let Some(key) = req.headers().get("sec-websocket-key").map(|k| derive_accept_key(k.as_bytes())) else {
                return reply(StatusCode::BAD_REQUEST, "not a WebSocket upgrade");
            };
            let upgrade = hyper::upgrade::on(&mut req);
            // Subscribed before the 101 goes out: a notification sent after the client saw
            // the upgrade succeed is never lost.
            let (tx, rx) = mpsc::unbounded_channel();
            shared.pbx().subscribers.push(tx);
            shared.counters.websockets.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
                    websocket(ws, rx).await;
                }
            });
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = r.headers_mut();
            h.insert(hyper::header::UPGRADE, hyper::header::HeaderValue::from_static("websocket"));
            h.insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("Upgrade"));
            if let Ok(v) = hyper::header::HeaderValue::from_str(&key) {
                h.insert("sec-websocket-accept", v);
            }
            r
        }
        ("GET", ["callcontrol"]) => {
            if !authorized(&req, &shared) {
                return reply(StatusCode::UNAUTHORIZED, "");
            }
            if !shared.config.licensed {
                return reply(StatusCode::FORBIDDEN, r#"{"error":"Call Control API is not licensed"}"#);
            }
            let body = {
                let pbx = shared.pbx();
                let dns: Vec<serde_json::Value> = shared
                    .config
                    .dns
                    .iter()
                    .map(|(dn, t)| {
                        let ps: Vec<&Participant> =
                            pbx.participants.iter().filter(|((d, _), _)| d == dn).map(|(_, (p, _))| p).collect();
                        serde_json::json!({"dn": dn, "type": t, "devices": [], "participants": ps})
                    })
                    .collect();
                serde_json::to_vec(&dns).unwrap_or_default()
            };
            shared.snapshots.send_modify(|n| *n += 1);
            reply(StatusCode::OK, body)
        }
        ("GET", ["callcontrol", dn, "participants", id]) => {
            shared.counters.participant_gets.fetch_add(1, Ordering::Relaxed);
            if !authorized(&req, &shared) {
                return reply(StatusCode::UNAUTHORIZED, "");
            }
            let Ok(id) = id.parse::<i64>() else { return reply(StatusCode::NOT_FOUND, "") };
            let key = ((*dn).to_owned(), id);
            let found = {
                let mut pbx = shared.pbx();
                let found = pbx.participants.get(&key).cloned();
                if let Some((_, v)) = &found {
                    pbx.fetched.insert(key.clone(), *v);
                }
                found
            };
            shared.fetches.send_modify(|n| *n += 1);
            match found {
                Some((p, _)) => reply(StatusCode::OK, serde_json::to_vec(&p).unwrap_or_default()),
                None => reply(StatusCode::NOT_FOUND, ""),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, ""),
    }
}

async fn token(req: Request<Incoming>, shared: &Shared) -> Response<Body> {
    let Ok(body) = Limited::new(req.into_body(), 64 * 1024).collect().await else {
        return reply(StatusCode::BAD_REQUEST, r#"{"error":"invalid_request"}"#);
    };
    let body = body.to_bytes();
    let form: BTreeMap<String, String> = String::from_utf8_lossy(&body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(&v.replace('+', " "))))
        .collect();
    let cfg = &shared.config;
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return reply(StatusCode::BAD_REQUEST, r#"{"error":"unsupported_grant_type"}"#);
    }
    if form.get("client_id") != Some(&cfg.client_id) || form.get("client_secret") != Some(&cfg.client_secret) {
        shared.counters.token_refusals.fetch_add(1, Ordering::Relaxed);
        return reply(StatusCode::UNAUTHORIZED, r#"{"error":"invalid_client"}"#);
    }
    let (token, exp) = {
        let mut pbx = shared.pbx();
        let (token, exp) = mint(&mut pbx, cfg);
        pbx.token = Some((token.clone(), exp));
        (token, exp)
    };
    let _ = exp;
    shared.counters.tokens.fetch_add(1, Ordering::Relaxed);
    let lifetime = cfg.token_lifetime.as_secs();
    let expires_in = if cfg.expires_in_minutes { lifetime.div_ceil(60) } else { lifetime };
    let body = serde_json::json!({
        "token_type": "Bearer", "expires_in": expires_in, "access_token": token, "refresh_token": null
    });
    reply(StatusCode::OK, body.to_string())
}

async fn websocket<S>(mut ws: WebSocketStream<S>, mut rx: mpsc::UnboundedReceiver<WsMsg>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(WsMsg::Text(t)) => {
                    if ws.send(Message::Text(t.into())).await.is_err() {
                        return;
                    }
                }
                // A dropped link: the socket closes without a goodbye.
                Some(WsMsg::Drop) | None => return,
            },
            incoming = ws.next() => match incoming {
                // Pings are answered by tungstenite on the next write or read.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {
                    if ws.flush().await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `pbx-listener demo --pbx 3cx`: the simulator with a pace people can follow, and the keys
/// that point the real adapter at it. Each inbound call's B leg is announced first; the calls
/// carry the leg's caller and DID, so the events are correlated by number and time.
pub async fn demo(
    dir: &std::path::Path,
    platform: crate::demo::DemoPlatform,
    stop: crate::demo::DemoFuture,
) -> anyhow::Result<crate::demo::DemoPbx> {
    const CLIENT: &str = "pbxlistener";
    const SECRET: &str = "demo-3cx-client-secret";
    let config = SimConfig { step: Duration::from_millis(700), ..SimConfig::fast(CLIENT, SECRET) };
    let sim =
        ThreeCxSim::start(SocketAddr::from(([127, 0, 0, 1], 0)), config).await.context("starting the simulated 3CX")?;
    let secret_file = crate::demo::write_file(dir, "3cx-client-secret", SECRET)?;
    let block = format!(
        "url = {:?}\nclient_id = {CLIENT:?}\nclient_secret_file = {:?}\nextensions = [\"101\", \"102\", \"103\"]\n",
        sim.url(),
        secret_file.display().to_string()
    );
    let play = async move {
        let mut n: u64 = 1;
        let run = async {
            loop {
                sim.wait_for_snapshots(1).await;
                // Inbound calls only: the platform dials them in, so each has a B leg to bind.
                for name in ["queue", "transfer", "abandon"] {
                    let Some(scenario) = Scenario::named(name, n) else { continue };
                    for spec in scenario.inbound_specs() {
                        platform.announce(&platform.leg(n, None, &spec.caller, &spec.did)).await;
                    }
                    sim.play(&scenario).await;
                    n += 3;
                }
            }
        };
        tokio::select! {
            () = run => {}
            () = stop => {}
        }
        sim.stop().await;
    };
    Ok(crate::demo::DemoPbx { name: "demo-3cx", block, play: Box::pin(play) })
}
