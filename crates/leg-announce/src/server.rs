//! The HTTP(S) endpoint: the only IO of this crate.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use listener_kit::LogGate;

use bytes::Bytes;
use correlation::LegUpdate;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use listener_core::SourceLimiter;
use metrics::counter;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use webhook_signature::{DEFAULT_TOLERANCE_SECS, SigningSecret};

use crate::announce::parse_announcements;
use crate::config::LegsConfig;
use crate::replay::{ReplayGuard, Seen};

/// The path the platform POSTs to (what `docs/correlation.md`, the demo and `pbx-sim announce`
/// use); every other path is answered 404.
pub const LEGS_PATH: &str = "/legs";

/// Why the endpoint could not start or stopped. [`LegsError::key`] names the `[legs]` key the
/// error is about; the message says what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum LegsError {
    /// `signing_secret_files` is empty.
    #[error("at least one secret file is required")]
    NoSecrets,
    /// A secret file is unreadable or does not hold a `whsec_` secret.
    #[error("{path}: {reason}")]
    Secret {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Only one of `tls_cert_file` and `tls_key_file` is set.
    #[error("is missing: tls_cert_file and tls_key_file go together, set both or neither")]
    TlsHalf {
        /// The one not set.
        missing: &'static str,
    },
    /// The certificate or key cannot be used.
    #[error("{path}: {reason}")]
    Tls {
        /// `tls_cert_file` or `tls_key_file`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The address cannot be bound.
    #[error("{addr}: cannot listen: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A number is outside its range.
    #[error("must be between {min} and {max} {unit}, not {value}")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// What it says.
        value: u64,
        /// The least allowed.
        min: u64,
        /// The most allowed.
        max: u64,
        /// What it counts.
        unit: &'static str,
    },
    /// Accepting connections failed.
    #[error("leg announcement endpoint: {0}")]
    Io(#[from] std::io::Error),
}

impl LegsError {
    /// The `[legs]` key the error is about (`None` for the key pair and runtime errors), so that
    /// the daemon can point at its line.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            LegsError::NoSecrets | LegsError::Secret { .. } => Some("signing_secret_files"),
            LegsError::Tls { key, .. } => Some(key),
            LegsError::Bind { .. } => Some("listen"),
            LegsError::OutOfRange { key, .. } => Some(key),
            LegsError::TlsHalf { missing } => Some(missing),
            LegsError::Io(_) => None,
        }
    }
}

/// `[legs]` loaded ([`LegsConfig::load`]): the ranges checked, the secrets and the TLS identity
/// read. What the daemon's configuration holds and [`LegAnnounceServer::bind_loaded`] starts
/// from, so nothing is read again at start. `Debug` shows no secret.
#[derive(Clone)]
pub struct LegsSettings {
    config: LegsConfig,
    secrets: Vec<SigningSecret>,
    tls: Option<TlsAcceptor>,
}

impl LegsSettings {
    /// The section as written (paths as resolved by the caller).
    pub fn config(&self) -> &LegsConfig {
        &self.config
    }

    /// Whether the endpoint serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

impl std::fmt::Debug for LegsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegsSettings")
            .field("listen", &self.config.listen)
            .field("secrets", &self.secrets.len())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl LegsConfig {
    /// Checks the numbers' ranges, reads and checks the secret files and the certificate and
    /// key, without binding: what `check-config` runs, and what [`LegAnnounceServer::bind`]
    /// starts with.
    pub fn load(&self) -> Result<LegsSettings, LegsError> {
        if let Some((key, value, min, max, unit)) = self.out_of_range() {
            return Err(LegsError::OutOfRange { key, value, min, max, unit });
        }
        if self.signing_secret_files.is_empty() {
            return Err(LegsError::NoSecrets);
        }
        let mut secrets = Vec::new();
        for path in &self.signing_secret_files {
            let text = std::fs::read_to_string(path)
                .map_err(|e| LegsError::Secret { path: path.clone(), reason: e.to_string() })?;
            let secret = SigningSecret::parse(&text)
                .map_err(|e| LegsError::Secret { path: path.clone(), reason: e.to_string() })?;
            secrets.push(secret);
        }
        let tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            (None, None) => None,
            (Some(_), None) => return Err(LegsError::TlsHalf { missing: "tls_key_file" }),
            (None, Some(_)) => return Err(LegsError::TlsHalf { missing: "tls_cert_file" }),
        };
        Ok(LegsSettings { config: self.clone(), secrets, tls })
    }
}

/// The bound endpoint. [`LegAnnounceServer::serve`] runs it.
pub struct LegAnnounceServer {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    secrets: Vec<SigningSecret>,
    max_body_bytes: usize,
    limits: Limits,
}

impl std::fmt::Debug for LegAnnounceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegAnnounceServer")
            .field("local_addr", &self.listener.local_addr().ok())
            .field("tls", &self.tls.is_some())
            .field("secrets", &self.secrets.len())
            .field("limits", &self.limits)
            .finish()
    }
}

/// The connection bounds of `[legs]`, typed.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_connections: usize,
    max_per_source: usize,
    header: Duration,
    body: Duration,
    idle: Duration,
    max_ids: usize,
}

impl Limits {
    fn of(config: &LegsConfig) -> Limits {
        Limits {
            max_connections: config.max_connections.max(1),
            max_per_source: config.max_connections_per_source.max(1),
            header: Duration::from_millis(config.header_timeout_ms),
            body: Duration::from_millis(config.body_timeout_ms),
            idle: Duration::from_millis(config.idle_timeout_ms),
            max_ids: config.max_remembered_ids,
        }
    }
}

/// What a request handler needs.
struct State {
    secrets: Vec<SigningSecret>,
    max_body_bytes: usize,
    body_timeout: Duration,
    tx: mpsc::Sender<LegUpdate>,
    /// Refusals and cut-off connections: one warning per 10 s for the whole endpoint.
    warn: LogGate,
    replay: Mutex<ReplayGuard>,
}

impl LegAnnounceServer {
    /// Loads `config` ([`LegsConfig::load`]) and binds it.
    pub async fn bind(config: &LegsConfig) -> Result<LegAnnounceServer, LegsError> {
        LegAnnounceServer::bind_loaded(&config.load()?).await
    }

    /// Binds the address of settings loaded earlier.
    pub async fn bind_loaded(settings: &LegsSettings) -> Result<LegAnnounceServer, LegsError> {
        let config = &settings.config;
        let listener =
            TcpListener::bind(config.listen).await.map_err(|source| LegsError::Bind { addr: config.listen, source })?;
        Ok(LegAnnounceServer {
            listener,
            tls: settings.tls.clone(),
            secrets: settings.secrets.clone(),
            max_body_bytes: config.max_body_bytes,
            limits: Limits::of(config),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes; verified announcements go into `tx` as leg updates.
    pub async fn serve(self, tx: mpsc::Sender<LegUpdate>, shutdown: impl Future<Output = ()>) -> Result<(), LegsError> {
        let LegAnnounceServer { listener, tls, secrets, max_body_bytes, limits } = self;
        let state = Arc::new(State {
            secrets,
            max_body_bytes,
            body_timeout: limits.body,
            tx,
            warn: LogGate::every(10_000),
            replay: Mutex::new(ReplayGuard::new(DEFAULT_TOLERANCE_SECS, limits.max_ids)),
        });
        tokio::select! {
            r = accept_loop(listener, tls, state.clone(), limits) => r,
            () = forget_expired_ids(&state) => Ok(()),
            () = shutdown => Ok(()),
        }
    }
}

/// Accepts connections within the caps and serves each on its own task. Dropping it (when
/// `serve` returns) aborts the connections still open.
async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<State>,
    limits: Limits,
) -> Result<(), LegsError> {
    let all = Arc::new(Semaphore::new(limits.max_connections));
    let sources = SourceLimiter::new(limits.max_per_source);
    let mut connections = JoinSet::new();
    loop {
        // At the global cap, new connections wait in the kernel's accept queue: each open one
        // ends by its deadlines at the latest, so a waiting one is served soon.
        let permit = all.clone().acquire_owned().await.map_err(|_| std::io::Error::other("semaphore closed"))?;
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted: the
                // endpoint goes on.
                if may_warn(&state) {
                    tracing::warn!(error = %e, "Leg announcement endpoint cannot accept a connection.");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(place) = sources.try_acquire(peer.ip()) else {
            counter!("pbx_listener_leg_announce_connections_refused_total", "reason" => "per-source").increment(1);
            if may_warn(&state) {
                tracing::warn!(
                    %peer,
                    max = limits.max_per_source,
                    "Leg announcement connection refused: its source holds legs.max_connections_per_source connections."
                );
            }
            continue;
        };
        let (state, tls) = (state.clone(), tls.clone());
        connections.spawn(async move {
            let _held = (permit, place);
            serve_connection(stream, peer, tls, state, limits).await;
        });
        while connections.try_join_next().is_some() {}
    }
}

/// Forgets the `webhook-id`s whose signatures have expired, on time, so that memory falls when
/// announcements stop.
async fn forget_expired_ids(state: &State) {
    loop {
        let next = state.replay.lock().unwrap_or_else(PoisonError::into_inner).poll_timeout();
        // Ids may be remembered while we sleep: look again within a minute at the latest.
        let wait = next.map_or(60, |t| t.saturating_sub(unix_secs()).min(60));
        tokio::time::sleep(Duration::from_secs(wait)).await;
        state.replay.lock().unwrap_or_else(PoisonError::into_inner).handle_timeout(unix_secs());
    }
}

/// Where a connection is in its request cycle: what decides its deadline.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request head (TLS handshake included) since then.
    Head(Instant),
    /// A request is being handled (its body has its own deadline).
    Request,
    /// Answered; kept alive with nothing to do since then.
    Idle(Instant),
}

/// Why a connection was closed by its deadlines.
#[derive(Debug, Clone, Copy)]
enum Expired {
    Header,
    Idle,
}

/// The phase of one connection, shared by its IO wrapper, its service and its watchdog.
#[derive(Debug)]
struct Activity(Mutex<Phase>);

impl Activity {
    fn set(&self, phase: Phase) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = phase;
    }

    /// Bytes arrived: on an idle connection they start the next request head.
    fn bytes_read(&self) {
        let mut phase = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(*phase, Phase::Idle(_)) {
            *phase = Phase::Head(Instant::now());
        }
    }

    fn deadline(&self, limits: &Limits) -> Option<(Instant, Expired)> {
        match *self.0.lock().unwrap_or_else(PoisonError::into_inner) {
            Phase::Head(since) => Some((since + limits.header, Expired::Header)),
            Phase::Request => None,
            Phase::Idle(since) => Some((since + limits.idle, Expired::Idle)),
        }
    }

    /// Completes when the connection's current deadline has passed. Phases only ever move a
    /// deadline later, so sleeping until the one seen and then looking again is never late.
    async fn expired(&self, limits: &Limits) -> Expired {
        loop {
            match self.deadline(limits) {
                Some((at, why)) if at <= Instant::now() => return why,
                Some((at, _)) => tokio::time::sleep_until(at.into()).await,
                // In a request: look again later.
                None => tokio::time::sleep(limits.idle.min(limits.header)).await,
            }
        }
    }
}

/// A stream that tells its connection's [`Activity`] when bytes arrive.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One connection: TLS handshake (if any) and HTTP/1.1 under the header and idle deadlines.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    state: Arc<State>,
    limits: Limits,
) {
    let activity = Arc::new(Activity(Mutex::new(Phase::Head(Instant::now()))));
    let service = {
        let (activity, state) = (activity.clone(), state.clone());
        hyper::service::service_fn(move |req| {
            activity.set(Phase::Request);
            let (activity, state) = (activity.clone(), state.clone());
            async move {
                let answer = handle(req, state).await;
                activity.set(Phase::Idle(Instant::now()));
                answer
            }
        })
    };
    // Our own deadlines replace hyper's header timer, which cannot tell an idle kept-alive
    // connection from a slow request head.
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(None);
    let serve = async {
        match tls {
            Some(acceptor) => match acceptor.accept(stream).await {
                Ok(tls_stream) => {
                    let io = Watched { inner: tls_stream, activity: activity.clone() };
                    http.serve_connection(TokioIo::new(io), service).await
                }
                Err(e) => {
                    tracing::info!(%peer, error = %e, "Leg announcement TLS handshake failed.");
                    Ok(())
                }
            },
            None => {
                let io = Watched { inner: stream, activity: activity.clone() };
                http.serve_connection(TokioIo::new(io), service).await
            }
        }
    };
    tokio::select! {
        result = serve => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "Leg announcement connection ended with an error.");
            }
        }
        why = activity.expired(&limits) => match why {
            Expired::Header => {
                counter!("pbx_listener_leg_announce_connections_closed_total", "reason" => "header-timeout")
                    .increment(1);
                if may_warn(&state) {
                    tracing::warn!(
                        %peer,
                        "Leg announcement connection closed: no request head within legs.header_timeout_ms."
                    );
                }
            }
            Expired::Idle => {
                counter!("pbx_listener_leg_announce_connections_closed_total", "reason" => "idle-timeout").increment(1);
                tracing::debug!(%peer, "Leg announcement connection closed: idle for legs.idle_timeout_ms.");
            }
        },
    }
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, LegsError> {
    let bad = |key_name: &'static str, path: &Path, reason: String| LegsError::Tls {
        key: key_name,
        path: path.to_path_buf(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("tls_cert_file", cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("tls_cert_file", cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("tls_cert_file", cert, "no CERTIFICATE block".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("tls_key_file", key, e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("tls_cert_file", cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| bad("tls_key_file", key, e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Whether a warning may be logged now: at most one every 10 s for the whole endpoint.
fn may_warn(state: &State) -> bool {
    state.warn.allow_now().is_some()
}

/// Counts a refused request and logs it at most every 10 s.
fn refused(state: &State, status: StatusCode, result: &'static str, message: &str) -> Response<Full<Bytes>> {
    counter!("pbx_listener_leg_announce_requests_total", "result" => result).increment(1);
    if may_warn(state) {
        tracing::warn!(status = status.as_u16(), result, message, "Leg announcement refused.");
    }
    reply(status, serde_json::json!({ "error": message }))
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

fn unix_secs() -> u64 {
    listener_kit::clock::now().0 / 1000
}

async fn handle(req: Request<Incoming>, state: Arc<State>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != LEGS_PATH {
        let message = format!("not found: announcements go to POST {LEGS_PATH}");
        return Ok(refused(&state, StatusCode::NOT_FOUND, "not-found", &message));
    }
    if req.method() != Method::POST {
        let mut r = refused(&state, StatusCode::METHOD_NOT_ALLOWED, "method", "only POST is accepted");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
        return Ok(r);
    }
    if !is_json(&req) {
        let message = "the body must be JSON (Content-Type: application/json)";
        return Ok(refused(&state, StatusCode::UNSUPPORTED_MEDIA_TYPE, "media-type", message));
    }
    let too_large = format!("the body is larger than {} bytes", state.max_body_bytes);
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes as u64) {
        return Ok(refused(&state, StatusCode::PAYLOAD_TOO_LARGE, "too-large", &too_large));
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let (id, timestamp, signature) = (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
    let read = tokio::time::timeout(state.body_timeout, Limited::new(req.into_body(), state.max_body_bytes).collect());
    let body = match read.await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return Ok(refused(&state, StatusCode::PAYLOAD_TOO_LARGE, "too-large", &too_large));
        }
        Ok(Err(e)) => {
            return Ok(refused(&state, StatusCode::BAD_REQUEST, "bad-request", &format!("cannot read the body: {e}")));
        }
        Err(_) => {
            let message = "the body did not arrive within legs.body_timeout_ms";
            let mut r = refused(&state, StatusCode::REQUEST_TIMEOUT, "timeout", message);
            r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            return Ok(r);
        }
    };
    let now = unix_secs();
    if let Err(e) =
        webhook_signature::verify(&state.secrets, &id, &timestamp, &signature, &body, now, DEFAULT_TOLERANCE_SECS)
    {
        return Ok(refused(&state, StatusCode::UNAUTHORIZED, "unauthorized", &format!("signature refused: {e}")));
    }
    let updates = match parse_announcements(&body) {
        Ok(u) => u,
        Err(e) => return Ok(refused(&state, StatusCode::BAD_REQUEST, "bad-request", &e.to_string())),
    };
    // `verify` parsed the timestamp already.
    let signed_at = timestamp.trim().parse().unwrap_or(now);
    let (seen, evicted) = {
        let mut replay = state.replay.lock().unwrap_or_else(PoisonError::into_inner);
        let before = replay.evicted();
        (replay.check(now, &id, signed_at), replay.evicted() - before)
    };
    if evicted > 0 {
        counter!("pbx_listener_leg_announce_replay_ids_evicted_total").increment(evicted);
        if may_warn(&state) {
            tracing::warn!(
                evicted,
                "Leg announcements: more webhook-ids within the signature tolerance than legs.max_remembered_ids; the oldest were forgotten."
            );
        }
    }
    if seen == Seen::Duplicate {
        // Standard Webhooks: the id is the idempotency key. Already applied: say so, apply nothing.
        counter!("pbx_listener_leg_announce_requests_total", "result" => "duplicate").increment(1);
        tracing::debug!(webhook_id = %id, "Leg announcement with a webhook-id already accepted; ignored.");
        return Ok(reply(StatusCode::OK, serde_json::json!({ "legs": 0, "duplicate": true })));
    }
    let n = updates.len();
    for update in updates {
        if state.tx.send(update).await.is_err() {
            // Not applied (or not wholly): a retry with this id must be.
            state.replay.lock().unwrap_or_else(PoisonError::into_inner).forget(&id);
            return Ok(refused(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the listener is shutting down",
            ));
        }
    }
    counter!("pbx_listener_leg_announce_requests_total", "result" => "accepted").increment(1);
    counter!("pbx_listener_leg_announce_legs_total").increment(n as u64);
    tracing::debug!(webhook_id = %id, legs = n, "Leg announcement accepted.");
    Ok(reply(StatusCode::OK, serde_json::json!({ "legs": n })))
}
