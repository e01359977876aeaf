//! The receiving side of the platform simulator: takes POSTed events, verifies signatures,
//! records, answers as scripted.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use webhook_signature::SigningSecret;

use super::script::{Reply, RetryAfter, Script};

/// The largest body accepted; larger requests are answered 413.
const MAX_BODY_BYTES: usize = 1 << 20;

/// How the platform is set up.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    /// Secrets to verify `webhook-signature` with; empty: signatures are not checked.
    pub secrets: Vec<SigningSecret>,
    /// The answers to give.
    pub script: Script,
    /// Append each delivery to this file as a JSON line.
    pub record_to: Option<PathBuf>,
    /// Accepted distance between `webhook-timestamp` and now, in seconds.
    pub tolerance_secs: u64,
}

impl Default for PlatformConfig {
    /// No signature check, always 200, nothing recorded to a file, and the Standard Webhooks
    /// reference tolerance (a zero tolerance would refuse a request signed in the previous
    /// second).
    fn default() -> Self {
        PlatformConfig {
            secrets: Vec::new(),
            script: Script::default(),
            record_to: None,
            tolerance_secs: webhook_signature::DEFAULT_TOLERANCE_SECS,
        }
    }
}

/// What the signature check said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureCheck {
    /// A signature matched one of the secrets.
    Valid,
    /// No signature matched (the reason); the request was answered 401.
    Invalid(String),
    /// No secrets are configured.
    NotChecked,
}

/// One request the platform received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`, as sent.
    pub timestamp: String,
    /// The request path.
    pub path: String,
    /// The body, byte for byte.
    #[serde(serialize_with = "body_as_text")]
    pub body: Vec<u8>,
    /// The `authorization` header, if any.
    pub authorization: Option<String>,
    /// The `content-type` header, if any.
    pub content_type: Option<String>,
    /// The signature check.
    pub signature: SignatureCheck,
    /// 1 for the first request with this id, 2 for the second, ….
    pub attempt: u32,
    /// The status answered; `None` when the connection was dropped.
    pub status: Option<u16>,
    /// Requests being handled when this one arrived, itself included (1 = it was alone).
    pub concurrent: u32,
}

fn body_as_text<S: serde::Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(body))
}

/// One request as an observer sees it ([`Platform::observe`]): when it arrived (taken before
/// the body was read and verified) and what was answered.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// When the request's head had arrived.
    pub at: Instant,
    /// `webhook-id`.
    pub id: String,
    /// The body, byte for byte.
    pub body: Bytes,
    /// Whether the signature matched (always true when no secret is configured).
    pub signature_valid: bool,
    /// The status answered; `None` when the connection was dropped.
    pub status: Option<u16>,
}

#[derive(Debug, Default)]
struct Record {
    deliveries: Vec<Delivery>,
    attempts: HashMap<String, u32>,
    accepted: HashMap<String, u32>,
}

struct Shared {
    config: PlatformConfig,
    script: Mutex<Script>,
    record: Mutex<Record>,
    file: Option<Mutex<std::fs::File>>,
    distinct: watch::Sender<usize>,
    active: AtomicU32,
    /// Keep every [`Delivery`] in memory (tests); off for long load runs.
    keep: AtomicBool,
    observer: Mutex<Option<mpsc::UnboundedSender<Arrival>>>,
}

/// Counts a request as active until dropped (also when hyper drops a scripted-drop future).
struct Active<'a>(&'a AtomicU32);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running platform simulator. Stops when [`Platform::stop`] is called or it is dropped.
pub struct Platform {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Platform {
    /// Binds `addr` (port 0 picks a free port) and serves until stopped.
    pub async fn start(addr: SocketAddr, config: PlatformConfig) -> std::io::Result<Platform> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let file = match &config.record_to {
            Some(path) => Some(Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?)),
            None => None,
        };
        let shared = Arc::new(Shared {
            script: Mutex::new(config.script.clone()),
            config,
            record: Mutex::new(Record::default()),
            file,
            distinct: watch::Sender::new(0),
            active: AtomicU32::new(0),
            keep: AtomicBool::new(true),
            observer: Mutex::new(None),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(listener, Arc::clone(&shared), stopped));
        Ok(Platform { addr, shared, stop, task: Some(task) })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>/events`.
    pub fn url(&self) -> String {
        format!("http://{}/events", self.addr)
    }

    /// Every request from now on, as it is answered (a load run measures latency from these and
    /// checks what arrived). One observer at a time: a second call replaces the first.
    pub fn observe(&self) -> mpsc::UnboundedReceiver<Arrival> {
        let (tx, rx) = mpsc::unbounded_channel();
        *lock(&self.shared.observer) = Some(tx);
        rx
    }

    /// Whether [`Platform::deliveries`] keeps every request (the default). A load run of
    /// millions of events turns it off and keeps its own ledger from [`Platform::observe`];
    /// the counts ([`Platform::distinct_accepted`], [`Platform::duplicates`]) are kept either way.
    pub fn keep_deliveries(&self, keep: bool) {
        self.shared.keep.store(keep, Ordering::Relaxed);
    }

    /// Replaces the answers still to come (e.g. `503*1000000` for an outage, then `""` when the
    /// platform is back).
    pub fn set_script(&self, script: Script) {
        *lock(&self.shared.script) = script;
    }

    /// Every request received so far, in arrival order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.shared.record).deliveries.clone()
    }

    /// Distinct ids answered with a 2xx.
    pub fn distinct_accepted(&self) -> usize {
        lock(&self.shared.record).accepted.len()
    }

    /// 2xx answers beyond the first for the same id (what the platform must deduplicate).
    pub fn duplicates(&self) -> usize {
        lock(&self.shared.record).accepted.values().map(|n| (*n as usize).saturating_sub(1)).sum()
    }

    /// Ids answered with a 2xx, in the order of their first acceptance, with the body.
    pub fn accepted(&self) -> Vec<Delivery> {
        let record = lock(&self.shared.record);
        let mut seen = std::collections::HashSet::new();
        record
            .deliveries
            .iter()
            .filter(|d| d.status.is_some_and(|s| (200..300).contains(&s)) && seen.insert(d.id.clone()))
            .cloned()
            .collect()
    }

    /// Waits until at least `n` distinct ids were accepted, or `timeout` passed. Returns the
    /// number accepted when it returns.
    pub async fn wait_for_distinct(&self, n: usize, timeout: Duration) -> usize {
        let mut rx = self.shared.distinct.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|count| *count >= n)).await;
        self.distinct_accepted()
    }

    /// Stops accepting, closes open connections, and waits for the server task.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let shared = Arc::clone(&shared);
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(req, Arc::clone(&shared)));
                    // An error here is a client going away or a scripted drop: nothing to do.
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

/// The error that makes hyper close the connection without an answer (a scripted drop).
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("scripted connection drop")
    }
}

impl std::error::Error for Dropped {}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn reply(code: u16, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<Full<Bytes>>, Dropped> {
    let arrived = Instant::now();
    let concurrent = shared.active.fetch_add(1, Ordering::SeqCst) + 1;
    let _active = Active(&shared.active);
    let id = header(&req, "webhook-id").unwrap_or_default();
    let timestamp = header(&req, "webhook-timestamp").unwrap_or_default();
    let signature_header = header(&req, "webhook-signature").unwrap_or_default();
    let authorization = header(&req, "authorization");
    let content_type = header(&req, "content-type");
    let path = req.uri().path().to_owned();
    let Ok(body) = Limited::new(req.into_body(), MAX_BODY_BYTES).collect().await else {
        return Ok(reply(413, "body too large or unreadable"));
    };
    let body = body.to_bytes();
    let signature = if shared.config.secrets.is_empty() {
        SignatureCheck::NotChecked
    } else {
        let now = listener_kit::clock::now().0 / 1000;
        let tolerance = shared.config.tolerance_secs;
        match webhook_signature::verify(
            &shared.config.secrets,
            &id,
            &timestamp,
            &signature_header,
            &body,
            now,
            tolerance,
        ) {
            Ok(()) => SignatureCheck::Valid,
            Err(e) => SignatureCheck::Invalid(e.to_string()),
        }
    };
    let observed = body.clone();
    let mut delivery = Delivery {
        id,
        timestamp,
        path,
        body: body.to_vec(),
        authorization,
        content_type,
        signature,
        attempt: 0,
        status: None,
        concurrent,
    };
    if let SignatureCheck::Invalid(_) = delivery.signature {
        delivery.status = Some(401);
        record(&shared, delivery, arrived, observed);
        return Ok(reply(401, "{\"error\":\"invalid signature\"}"));
    }
    let scripted = lock(&shared.script).next_reply();
    match scripted {
        Reply::Drop { delay } => {
            tokio::time::sleep(delay).await;
            record(&shared, delivery, arrived, observed);
            Err(Dropped)
        }
        Reply::Status { code, retry_after, delay } => {
            tokio::time::sleep(delay).await;
            delivery.status = Some(code);
            record(&shared, delivery, arrived, observed);
            let mut response = reply(code, if (200..300).contains(&code) { "{}" } else { "{\"error\":\"scripted\"}" });
            if let Some(retry_after) = retry_after {
                let value = match retry_after {
                    RetryAfter::Seconds(s) => s.to_string(),
                    RetryAfter::DateIn(s) => httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(s)),
                };
                if let Ok(value) = value.parse() {
                    response.headers_mut().insert("retry-after", value);
                }
            }
            Ok(response)
        }
    }
}

fn record(shared: &Shared, mut delivery: Delivery, at: Instant, body: Bytes) {
    if let Some(observer) = lock(&shared.observer).as_ref() {
        let _ = observer.send(Arrival {
            at,
            id: delivery.id.clone(),
            body,
            signature_valid: !matches!(delivery.signature, SignatureCheck::Invalid(_)),
            status: delivery.status,
        });
    }
    let mut record = lock(&shared.record);
    let attempt = record.attempts.entry(delivery.id.clone()).or_insert(0);
    *attempt += 1;
    delivery.attempt = *attempt;
    if delivery.status.is_some_and(|s| (200..300).contains(&s)) {
        *record.accepted.entry(delivery.id.clone()).or_insert(0) += 1;
        shared.distinct.send_replace(record.accepted.len());
    }
    if let Some(file) = &shared.file
        && let Ok(mut line) = serde_json::to_vec(&delivery)
    {
        line.push(b'\n');
        if let Err(e) = lock(file).write_all(&line) {
            tracing::warn!(error = %e, "Cannot append to the platform simulator's record file");
        }
    }
    if shared.keep.load(Ordering::Relaxed) {
        record.deliveries.push(delivery);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    /// One raw HTTP/1.1 POST; returns the status line, or `None` when the connection closed
    /// without an answer.
    async fn post(addr: SocketAddr, id: &str, signature: &str, body: &str) -> Option<String> {
        let ts = listener_kit::clock::now().0 / 1000;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "POST /events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nwebhook-id: {id}\r\n\
             webhook-timestamp: {ts}\r\nwebhook-signature: {signature}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer).await;
        answer.lines().next().map(str::to_owned)
    }

    fn sign(id: &str, body: &str) -> String {
        let ts = listener_kit::clock::now().0 / 1000;
        webhook_signature::sign_header(&[SigningSecret::parse(SECRET).unwrap()], id, ts, body.as_bytes())
    }

    #[tokio::test]
    async fn verifies_records_and_follows_the_script() {
        let dir = std::env::temp_dir().join(format!("pbx-sim-platform-{}", std::process::id()));
        let config = PlatformConfig {
            secrets: vec![SigningSecret::parse(SECRET).unwrap()],
            script: "503:retry-after=7,drop".parse().unwrap(),
            record_to: Some(dir.clone()),
            tolerance_secs: 300,
        };
        let platform = Platform::start("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
        let addr = platform.addr();
        assert_eq!(post(addr, "a", "v1,bm90IGl0", "{}").await.as_deref(), Some("HTTP/1.1 401 Unauthorized"));
        assert_eq!(post(addr, "a", &sign("a", "{}"), "{}").await.as_deref(), Some("HTTP/1.1 503 Service Unavailable"));
        assert_eq!(post(addr, "a", &sign("a", "{}"), "{}").await, None, "scripted drop");
        assert_eq!(post(addr, "a", &sign("a", "{\"x\":1}"), "{\"x\":1}").await.as_deref(), Some("HTTP/1.1 200 OK"));
        assert_eq!(post(addr, "a", &sign("a", "{}"), "{}").await.as_deref(), Some("HTTP/1.1 200 OK"));
        assert_eq!(post(addr, "b", &sign("b", "{}"), "{}").await.as_deref(), Some("HTTP/1.1 200 OK"));
        assert_eq!(platform.wait_for_distinct(2, Duration::from_secs(5)).await, 2);
        assert_eq!(platform.duplicates(), 1);
        let deliveries = platform.deliveries();
        let summary: Vec<(&str, u32, Option<u16>)> =
            deliveries.iter().map(|d| (d.id.as_str(), d.attempt, d.status)).collect();
        assert_eq!(
            summary,
            [
                ("a", 1, Some(401)),
                ("a", 2, Some(503)),
                ("a", 3, None),
                ("a", 4, Some(200)),
                ("a", 5, Some(200)),
                ("b", 1, Some(200))
            ]
        );
        assert!(matches!(deliveries[0].signature, SignatureCheck::Invalid(_)));
        assert_eq!(deliveries[3].signature, SignatureCheck::Valid);
        assert_eq!(deliveries[3].body, b"{\"x\":1}");
        assert_eq!(deliveries[3].content_type.as_deref(), Some("application/json"));
        assert_eq!(platform.accepted().iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        platform.stop().await;
        let lines = std::fs::read_to_string(&dir).unwrap();
        let _ = std::fs::remove_file(&dir);
        assert_eq!(lines.lines().count(), 6);
        let first: serde_json::Value = serde_json::from_str(lines.lines().nth(3).unwrap()).unwrap();
        assert_eq!(first["body"], "{\"x\":1}");
        assert_eq!(first["signature"], "valid");
    }
}
