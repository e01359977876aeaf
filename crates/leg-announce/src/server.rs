//! The HTTP(S) endpoint: the only IO of this crate.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use correlation::LegUpdate;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::counter;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use webhook_signature::{DEFAULT_TOLERANCE_SECS, SigningSecret};

use crate::announce::parse_announcements;
use crate::config::LegsConfig;

/// How many connections are served at once (the platform needs a handful).
const MAX_CONNECTIONS: usize = 256;
/// How long a client may take to send its request head, or to finish the TLS handshake.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the endpoint could not start or stopped. Messages name the `[legs]` key.
#[derive(Debug, thiserror::Error)]
pub enum LegsError {
    /// `signing_secret_files` is empty.
    #[error("legs.signing_secret_files: at least one secret file is required")]
    NoSecrets,
    /// A secret file is unreadable or does not hold a `whsec_` secret.
    #[error("legs.signing_secret_files: {path}: {reason}")]
    Secret {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Only one of `tls_cert_file` and `tls_key_file` is set.
    #[error("legs.tls_cert_file and legs.tls_key_file go together: set both or neither")]
    TlsHalf,
    /// The certificate or key cannot be used.
    #[error("legs.{key}: {path}: {reason}")]
    Tls {
        /// `tls_cert_file` or `tls_key_file`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The address cannot be bound.
    #[error("legs.listen = {addr}: cannot listen: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
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
            LegsError::TlsHalf | LegsError::Io(_) => None,
        }
    }
}

/// What the endpoint needs from its files: the secrets and the TLS identity, read and checked
/// ([`LegsConfig::load`]). `Debug` shows no secret.
pub struct LoadedLegs {
    secrets: Vec<SigningSecret>,
    tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for LoadedLegs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedLegs").field("secrets", &self.secrets.len()).field("tls", &self.tls.is_some()).finish()
    }
}

impl LegsConfig {
    /// Reads and checks the secret files and the certificate and key, without binding: what
    /// `check-config` runs, and what [`LegAnnounceServer::bind`] starts with.
    pub fn load(&self) -> Result<LoadedLegs, LegsError> {
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
            _ => return Err(LegsError::TlsHalf),
        };
        Ok(LoadedLegs { secrets, tls })
    }
}

/// The bound endpoint. [`LegAnnounceServer::serve`] runs it.
pub struct LegAnnounceServer {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    secrets: Vec<SigningSecret>,
    max_body_bytes: usize,
}

impl std::fmt::Debug for LegAnnounceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegAnnounceServer")
            .field("local_addr", &self.listener.local_addr().ok())
            .field("tls", &self.tls.is_some())
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

/// What a request handler needs.
struct State {
    secrets: Vec<SigningSecret>,
    max_body_bytes: usize,
    tx: mpsc::Sender<LegUpdate>,
    warn: Mutex<Option<Instant>>,
}

impl LegAnnounceServer {
    /// Loads the secrets (and the certificate), binds the address.
    pub async fn bind(config: &LegsConfig) -> Result<LegAnnounceServer, LegsError> {
        let LoadedLegs { secrets, tls } = config.load()?;
        let listener =
            TcpListener::bind(config.listen).await.map_err(|source| LegsError::Bind { addr: config.listen, source })?;
        Ok(LegAnnounceServer { listener, tls, secrets, max_body_bytes: config.max_body_bytes })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes; verified announcements go into `tx` as leg updates.
    pub async fn serve(self, tx: mpsc::Sender<LegUpdate>, shutdown: impl Future<Output = ()>) -> Result<(), LegsError> {
        let LegAnnounceServer { listener, tls, secrets, max_body_bytes } = self;
        let state = Arc::new(State { secrets, max_body_bytes, tx, warn: Mutex::new(None) });
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        // Dropping the set when we return aborts the connections still open.
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let permit = limit.clone().acquire_owned().await.map_err(|_| std::io::Error::other("semaphore closed"))?;
            let (stream, peer) = tokio::select! {
                r = listener.accept() => r?,
                () = &mut shutdown => return Ok(()),
            };
            let (state, tls) = (state.clone(), tls.clone());
            connections.spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |req| handle(req, state.clone()));
                let mut http = hyper::server::conn::http1::Builder::new();
                http.timer(TokioTimer::new()).header_read_timeout(HEAD_TIMEOUT);
                let result = match tls {
                    Some(acceptor) => match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => http.serve_connection(TokioIo::new(tls_stream), service).await,
                        Ok(Err(e)) => {
                            tracing::info!(%peer, error = %e, "Leg announcement TLS handshake failed.");
                            return;
                        }
                        Err(_) => return,
                    },
                    None => http.serve_connection(TokioIo::new(stream), service).await,
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "Leg announcement connection ended with an error.");
                }
            });
            while connections.try_join_next().is_some() {}
        }
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
    r.headers_mut().insert(CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    r
}

/// Counts a refused request and logs it at most every 10 s.
fn refused(state: &State, status: StatusCode, result: &'static str, message: &str) -> Response<Full<Bytes>> {
    counter!("pbx_listener_leg_announce_requests_total", "result" => result).increment(1);
    let mut last = state.warn.lock().unwrap_or_else(PoisonError::into_inner);
    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
        *last = Some(Instant::now());
        tracing::warn!(status = status.as_u16(), result, message, "Leg announcement refused.");
    }
    reply(status, serde_json::json!({ "error": message }))
}

async fn handle(req: Request<Incoming>, state: Arc<State>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::POST {
        return Ok(refused(&state, StatusCode::METHOD_NOT_ALLOWED, "method", "only POST is accepted"));
    }
    let too_large = format!("the body is larger than {} bytes", state.max_body_bytes);
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes as u64) {
        return Ok(refused(&state, StatusCode::PAYLOAD_TOO_LARGE, "too-large", &too_large));
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let (id, timestamp, signature) = (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
    let body = match Limited::new(req.into_body(), state.max_body_bytes).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return Ok(refused(&state, StatusCode::PAYLOAD_TOO_LARGE, "too-large", &too_large));
        }
        Err(e) => {
            return Ok(refused(&state, StatusCode::BAD_REQUEST, "bad-request", &format!("cannot read the body: {e}")));
        }
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if let Err(e) =
        webhook_signature::verify(&state.secrets, &id, &timestamp, &signature, &body, now, DEFAULT_TOLERANCE_SECS)
    {
        return Ok(refused(&state, StatusCode::UNAUTHORIZED, "unauthorized", &format!("signature refused: {e}")));
    }
    let updates = match parse_announcements(&body) {
        Ok(u) => u,
        Err(e) => return Ok(refused(&state, StatusCode::BAD_REQUEST, "bad-request", &e.to_string())),
    };
    let n = updates.len();
    for update in updates {
        if state.tx.send(update).await.is_err() {
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
