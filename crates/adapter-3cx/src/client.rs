//! The 3CX client: the only module of this crate that does IO.
//!
//! [`ThreeCxAdapter`] implements [`listener_core::Adapter`]. Per session it: gets a token
//! ([`TokenManager`] decides when), opens the WebSocket `/callcontrol/ws` with the token in
//! the `Authorization` header of the upgrade, takes the snapshot `GET /callcontrol` while the
//! notifications that arrive meanwhile are buffered by the [`Tracker`], checks that every
//! configured extension is visible, then streams: notifications into the tracker, one
//! `GET /callcontrol/{dn}/participants/{id}` per [`Output::Fetch`] (concurrently), WebSocket
//! pings every `keepalive_secs`, a dead-link timeout, token refreshes at half-life. Between
//! sessions it waits with jittered backoff (or, after a refusal, as long as the token machine
//! says), and all along it reads the CDR socket (`cdr_socket`), so that the CDR feed fills in
//! what happens while the WebSocket is down.

mod cdr_socket;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use listener_core::{
    Adapter, AdapterError, AdapterEvent, AdapterState, BoxFuture, LinkState, PbxId, SignalSink, SinkClosed, UnixMillis,
};
use listener_kit::{Backoff, clock};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::config::LoadedConfig;
use crate::events::{
    CdrRecordProcessed, ThreeCxConnecting, ThreeCxEventReceived, ThreeCxExtensionsMissing, ThreeCxFetchFailed,
    ThreeCxFrameMalformed, ThreeCxKeepaliveTimeout, ThreeCxLicenceError, ThreeCxLinkDown, ThreeCxLinkUp,
    ThreeCxTokenConflict, ThreeCxTokenInvalidated, ThreeCxTokenObtained, ThreeCxTokenRejected,
};
use crate::participant::{DnInfo, Participant, parse_snapshot};
use crate::token::{BlockCause, FetchError, TokenEvent, TokenManager, TokenResponse, TokenSettings};
use crate::tracker::{CdrOutcome, CdrSettings, Fetched, Output, Tracker, TrackerSettings};
use crate::ws::{self, parse_frame};

pub use cdr_socket::CdrMsg;

/// The link as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Not connected; the next attempt is after `backoff`.
    Disconnected {
        /// The delay before the next attempt.
        backoff: Duration,
    },
    /// Token, WebSocket, snapshot.
    Connecting,
    /// Notifications flow.
    Up,
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The token machine waits (a refused secret, a conflict, failed requests).
    #[error("{reason}")]
    TokenBlocked {
        /// Why, for people.
        reason: String,
        /// A refusal or a conflict (not a network failure).
        auth: bool,
    },
    /// The PBX refused a request with 401 (the token is renewed before the next attempt).
    #[error("the PBX answered 401 to {0}")]
    Unauthorized(&'static str),
    /// The API client may not use Call Control (403).
    #[error("{0}")]
    Licence(String),
    /// TCP connect failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    /// No answer in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The WebSocket failed.
    #[error("WebSocket: {0}")]
    WebSocket(String),
    /// A REST request failed.
    #[error("{what}: {reason}")]
    Http {
        /// Which request.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The PBX closed the WebSocket.
    #[error("the PBX closed the WebSocket")]
    Closed,
    /// No frame for `dead_link_secs`.
    #[error("no data from the PBX for {0} s")]
    DeadLink(u64),
    /// The pipeline is gone.
    #[error(transparent)]
    Sink(#[from] SinkClosed),
}

impl SessionError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SessionError::TokenBlocked { .. } => "token",
            SessionError::Unauthorized(_) => "unauthorized",
            SessionError::Licence(_) => "licence",
            SessionError::Connect { .. } => "connect",
            SessionError::Tls(_) => "tls",
            SessionError::Timeout(_) => "timeout",
            SessionError::WebSocket(_) => "websocket",
            SessionError::Http { .. } => "http",
            SessionError::Closed => "closed",
            SessionError::DeadLink(_) => "dead-link",
            SessionError::Sink(_) => "sink",
        }
    }
}

/// The 3CX adapter for one PBX. See the module documentation.
#[derive(Debug)]
pub struct ThreeCxAdapter {
    pbx: PbxId,
    config: LoadedConfig,
    state: AdapterState,
    link: Link,
}

/// A stream the WebSocket runs over (TCP or TLS).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Ws = WebSocketStream<Box<dyn Io>>;
type SnapshotFuture = Pin<Box<dyn Future<Output = Result<Vec<DnInfo>, SessionError>> + Send>>;

/// A participant fetch's answer.
struct FetchDone {
    dn: String,
    id: String,
    generation: u64,
    result: FetchResult,
}

#[allow(clippy::large_enum_variant)] // Moved once per fetch; `Fetched` is the common case.
enum FetchResult {
    Fetched(Fetched),
    Unauthorized,
    Failed(String),
}

/// What lives across sessions.
struct Ctx {
    http: reqwest::Client,
    tracker: Tracker,
    tokens: TokenManager,
    fetches: JoinSet<FetchDone>,
    cdr_rx: mpsc::Receiver<CdrMsg>,
    cdr_open: bool,
    resnapshot: bool,
    /// The extensions reported missing last time (logged again only when it changes).
    missing: Option<Vec<String>>,
}

fn now() -> UnixMillis {
    clock::now()
}

fn unit() -> f64 {
    rand::random::<f64>()
}

impl ThreeCxAdapter {
    /// An adapter for `pbx` (whose type should be `3cx`), with what it checkpointed before.
    pub fn new(pbx: PbxId, config: LoadedConfig, state: AdapterState) -> ThreeCxAdapter {
        ThreeCxAdapter { pbx, config, state, link: Link::Disconnected { backoff: Duration::ZERO } }
    }

    fn tracker_settings(&self) -> TrackerSettings {
        let cdr = self.config.cdr.as_ref().map(|c| {
            let mut s = CdrSettings::new(c.order.clone(), c.time_zone.clone());
            s.extensions = self.config.extensions.iter().cloned().collect();
            s.park_orbits = self.config.park_orbits.clone();
            s.match_window_ms = c.match_window.as_millis() as u64;
            s.backfill = c.backfill;
            s.backfill_max_age_ms = c.backfill_max_age.as_millis() as u64;
            s
        });
        TrackerSettings {
            route_point: self.config.client_id.clone(),
            park_orbits: self.config.park_orbits.clone(),
            removal_grace_ms: self.config.removal_grace_ms,
            cdr,
            ..TrackerSettings::default()
        }
    }

    fn token_settings(&self) -> TokenSettings {
        TokenSettings {
            expires_in_unit: self.config.expires_in_unit,
            auth_failure_backoff: self.config.auth_failure_backoff,
            conflict_backoff: self.config.token_conflict_backoff,
            conflict_backoff_max: Duration::from_secs(3600),
            retry: Backoff::new(self.config.reconnect_min, self.config.reconnect_max),
        }
    }

    async fn set_link(
        &mut self,
        sink: &dyn SignalSink,
        link: Link,
        reason: Option<(&str, bool)>,
    ) -> Result<(), SinkClosed> {
        let before = public_state(&self.link, None);
        let after = public_state(&link, reason);
        self.link = link;
        if before != after || matches!(after, LinkState::Down { .. } | LinkState::AuthFailed { .. }) {
            sink.send(AdapterEvent::Link { pbx: self.pbx.clone(), state: after }).await?;
        }
        Ok(())
    }

    async fn run_inner(mut self, sink: &dyn SignalSink, mut shutdown: BoxFuture<'_, ()>) -> Result<(), AdapterError> {
        let http = self.http_client().map_err(|e| AdapterError::Fatal(format!("cannot build the HTTP client: {e}")))?;
        let mut tracker = Tracker::new(self.pbx.clone(), self.tracker_settings());
        let unreadable = tracker.restore(now(), &self.state);
        if unreadable > 0 {
            tracing::warn!(pbx = %self.pbx, unreadable, "Skipped unreadable 3CX adapter state from the last run.");
        }
        let (cdr_tx, cdr_rx) = mpsc::channel(1024);
        let _cdr_task = match self.config.cdr.clone() {
            Some(cdr) => Some(AbortOnDrop(tokio::spawn(cdr_socket::run(self.pbx.name.to_string(), cdr, cdr_tx)))),
            None => {
                drop(cdr_tx);
                None
            }
        };
        let mut ctx = Ctx {
            http,
            tracker,
            tokens: TokenManager::new(self.token_settings()),
            fetches: JoinSet::new(),
            cdr_open: self.config.cdr.is_some(),
            cdr_rx,
            resnapshot: false,
            missing: None,
        };
        let mut backoff = Backoff::new(self.config.reconnect_min, self.config.reconnect_max);
        loop {
            self.set_link(sink, Link::Connecting, None).await?;
            let mut came_up = false;
            let outcome = tokio::select! {
                r = self.session(&mut ctx, sink, &mut came_up) => r,
                () = &mut shutdown => return self.stop(&mut ctx, sink).await,
            };
            // Fetches already under way tell what the PBX said before the link went: apply
            // them (bounded by the request timeout), then go offline.
            let drained = timeout(self.config.request_timeout, async {
                while let Some(done) = ctx.fetches.join_next().await {
                    if let Ok(done) = done {
                        self.handle_fetch_done(&mut ctx, done);
                    }
                }
            });
            tokio::select! {
                _ = drained => {}
                () = &mut shutdown => return self.stop(&mut ctx, sink).await,
            }
            self.token_events(&mut ctx);
            ctx.tracker.handle_link_down(now());
            ctx.fetches.abort_all();
            while ctx.fetches.try_join_next().is_some() {}
            self.drain(&mut ctx, sink).await?;
            if came_up {
                backoff.reset();
                ctx.tokens.handle_healthy();
            }
            let err = match outcome {
                Ok(()) => SessionError::Closed,
                Err(SessionError::Sink(e)) => return Err(e.into()),
                Err(e) => e,
            };
            let reason = err.to_string();
            let n = now();
            let (delay, auth) = match &err {
                SessionError::TokenBlocked { auth, .. } => {
                    let until = ctx.tokens.blocked_until(n).unwrap_or(n);
                    (Duration::from_millis(until.since(n)), *auth)
                }
                SessionError::Licence(_) => {
                    let d = backoff.after_auth_failure(self.config.auth_failure_backoff, unit());
                    ThreeCxLicenceError {
                        pbx: &self.pbx.name,
                        client_id: &self.config.client_id,
                        reason: &reason,
                        retry_in_secs: d.as_secs(),
                    }
                    .emit();
                    (d, true)
                }
                _ => (backoff.next_delay(unit()), false),
            };
            if !auth {
                ThreeCxLinkDown {
                    pbx: &self.pbx.name,
                    reason: &reason,
                    kind: err.kind(),
                    retry_in_ms: delay.as_millis() as u64,
                }
                .emit();
            }
            self.set_link(sink, Link::Disconnected { backoff: delay }, Some((&reason, auth))).await?;
            let deadline = Instant::now() + delay;
            tokio::select! {
                r = self.idle(&mut ctx, sink, deadline) => r?,
                () = &mut shutdown => return self.stop(&mut ctx, sink).await,
            }
        }
    }

    fn http_client(&self) -> Result<reqwest::Client, reqwest::Error> {
        let mut tls = (*self.config.tls.client_config).clone();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(self.config.request_timeout)
            .connect_timeout(self.config.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .user_agent(concat!("pbx-listener/", env!("CARGO_PKG_VERSION")))
            .build()
    }

    /// Between sessions: CDR lines and the tracker's timers go on.
    async fn idle(&mut self, ctx: &mut Ctx, sink: &dyn SignalSink, deadline: Instant) -> Result<(), SinkClosed> {
        loop {
            self.drain(ctx, sink).await?;
            let timer = ctx.tracker.poll_timeout().map(instant_at);
            tokio::select! {
                () = sleep_until(deadline) => return Ok(()),
                msg = ctx.cdr_rx.recv(), if ctx.cdr_open => self.handle_cdr(ctx, msg),
                () = sleep_until(timer.unwrap_or(deadline)), if timer.is_some() => ctx.tracker.handle_timeout(now()),
            }
        }
    }

    /// The daemon stops: removals still in their grace are decided and handed over.
    async fn stop(&mut self, ctx: &mut Ctx, sink: &dyn SignalSink) -> Result<(), AdapterError> {
        ctx.fetches.abort_all();
        ctx.tracker.handle_shutdown(now());
        // Fetches are not started any more: the tracker's fetch requests are dropped.
        loop {
            match ctx.tracker.poll_output() {
                Output::Event(event) => sink.send(event).await?,
                Output::Fetch { .. } | Output::Resnapshot => {}
                Output::Timeout(_) => return Ok(()),
            }
        }
    }

    /// Sends what the tracker has, starts the fetches it asks for.
    async fn drain(&mut self, ctx: &mut Ctx, sink: &dyn SignalSink) -> Result<(), SinkClosed> {
        loop {
            match ctx.tracker.poll_output() {
                Output::Event(event) => sink.send(event).await?,
                Output::Fetch { dn, id } => self.spawn_fetch(ctx, dn, id),
                Output::Resnapshot => ctx.resnapshot = true,
                Output::Timeout(_) => return Ok(()),
            }
        }
    }

    fn spawn_fetch(&self, ctx: &mut Ctx, dn: String, id: String) {
        let n = now();
        let Some(token) = ctx.tokens.current(n).cloned() else {
            // No usable token right now: the tracker retries shortly, after the refresh.
            ctx.tracker.handle_fetched(n, &dn, &id, Fetched::Failed);
            return;
        };
        let url = format!(
            "{}/callcontrol/{}/participants/{}",
            self.config.url.as_str().trim_end_matches('/'),
            ws::percent_encode(&dn),
            ws::percent_encode(&id)
        );
        let http = ctx.http.clone();
        let max = self.config.max_body_bytes;
        ctx.fetches.spawn(async move {
            let result = fetch_participant(&http, &url, token.secret.expose(), max).await;
            FetchDone { dn, id, generation: token.generation, result }
        });
    }

    fn handle_fetch_done(&self, ctx: &mut Ctx, done: FetchDone) {
        let n = now();
        let entity = format!("{}/{}", done.dn, done.id);
        let fetched = match done.result {
            FetchResult::Fetched(f) => f,
            FetchResult::Unauthorized => {
                ctx.tokens.handle_unauthorized(n, done.generation, unit());
                Fetched::Failed
            }
            FetchResult::Failed(reason) => {
                ThreeCxFetchFailed { pbx: &self.pbx.name, entity: &entity, reason: &reason }.emit();
                Fetched::Failed
            }
        };
        ctx.tracker.handle_fetched(n, &done.dn, &done.id, fetched);
    }

    fn handle_cdr(&self, ctx: &mut Ctx, msg: Option<CdrMsg>) {
        match msg {
            None => ctx.cdr_open = false,
            Some(CdrMsg::TooLong(bytes)) => {
                let reason = format!("line of {bytes} bytes exceeds cdr.max_line_bytes");
                CdrRecordProcessed { pbx: &self.pbx.name, outcome: "too-long", reason: Some(&reason) }.emit();
            }
            Some(CdrMsg::Line(line)) => {
                tracing::trace!(pbx = %self.pbx, line = %line, "CDR line.");
                let outcome = ctx.tracker.handle_cdr_line(now(), &line);
                let reason = match &outcome {
                    CdrOutcome::Malformed(e) => Some(e.to_string()),
                    _ => None,
                };
                CdrRecordProcessed { pbx: &self.pbx.name, outcome: outcome.label(), reason: reason.as_deref() }.emit();
            }
        }
    }

    /// Logs what the token machine says.
    fn token_events(&self, ctx: &mut Ctx) {
        let n = now();
        while let Some(e) = ctx.tokens.poll_event() {
            match e {
                TokenEvent::Obtained { lifetime_ms, basis, expires_in, .. } => ThreeCxTokenObtained {
                    pbx: &self.pbx.name,
                    lifetime_secs: lifetime_ms / 1000,
                    basis: basis.as_str(),
                    expires_in,
                }
                .emit(),
                TokenEvent::Rejected { reason, retry_at } => ThreeCxTokenRejected {
                    pbx: &self.pbx.name,
                    client_id: &self.config.client_id,
                    reason: &reason,
                    retry_in_secs: retry_at.since(n) / 1000,
                }
                .emit(),
                TokenEvent::Failed { reason, retry_at } => tracing::warn!(
                    pbx = %self.pbx,
                    reason = %reason,
                    retry_in_ms = retry_at.since(n),
                    "Cannot get a 3CX access token."
                ),
                TokenEvent::Invalidated { recent, .. } => {
                    ThreeCxTokenInvalidated { pbx: &self.pbx.name, recent }.emit()
                }
                TokenEvent::Conflict { recent, retry_at } => ThreeCxTokenConflict {
                    pbx: &self.pbx.name,
                    client_id: &self.config.client_id,
                    invalidations: recent,
                    retry_in_secs: retry_at.since(n) / 1000,
                }
                .emit(),
            }
        }
    }

    /// Requests a token if the machine says so (one request at a time).
    async fn refresh_token(&self, ctx: &mut Ctx) {
        if !ctx.tokens.poll_fetch(now()) {
            return;
        }
        let result = request_token(&ctx.http, &self.config).await;
        ctx.tokens.handle_fetched(now(), result, unit());
        self.token_events(ctx);
    }

    /// A valid token, fetching one if needed.
    async fn token(&self, ctx: &mut Ctx) -> Result<crate::token::Token, SessionError> {
        loop {
            let n = now();
            if let Some(t) = ctx.tokens.current(n) {
                return Ok(t.clone());
            }
            if let Some(until) = ctx.tokens.blocked_until(n) {
                let secs = until.since(n).div_ceil(1000);
                let why = match ctx.tokens.blocked_cause(n) {
                    Some(BlockCause::Rejected(r)) => format!(
                        "3CX refused the API client's credentials ({r}): check client_id and client_secret_file"
                    ),
                    Some(BlockCause::Conflict) => format!(
                        "another program is using API client id {:?}: 3CX keeps one token per client id, so each \
                         takes the other's; give each program its own API client",
                        self.config.client_id
                    ),
                    Some(BlockCause::Failed(r)) => format!("cannot get an access token: {r}"),
                    None => "no usable access token".to_owned(),
                };
                let auth = !matches!(ctx.tokens.blocked_cause(n), Some(BlockCause::Failed(_)) | None);
                return Err(SessionError::TokenBlocked { reason: format!("{why}; next attempt in {secs} s"), auth });
            }
            self.refresh_token(ctx).await;
        }
    }

    async fn session(&mut self, ctx: &mut Ctx, sink: &dyn SignalSink, came_up: &mut bool) -> Result<(), SessionError> {
        ThreeCxConnecting { pbx: &self.pbx.name, url: self.config.url.as_str() }.emit();
        let token = self.token(ctx).await?;
        let mut ws = match self.open_ws(token.secret.expose()).await {
            Ok(ws) => ws,
            Err(e @ SessionError::Unauthorized(_)) => {
                ctx.tokens.handle_unauthorized(now(), token.generation, unit());
                self.token_events(ctx);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        ctx.tracker.handle_connected(now());
        ctx.resnapshot = false;
        let mut snapshot: Option<(SnapshotFuture, u64)> = Some((self.snapshot_future(ctx, &token), token.generation));
        let keepalive = self.config.keepalive;
        let dead_link = self.config.dead_link;
        let mut next_ping = Instant::now() + keepalive;
        let mut last_rx = Instant::now();
        loop {
            self.drain(ctx, sink).await?;
            if ctx.resnapshot && snapshot.is_none() {
                ctx.resnapshot = false;
                ctx.tracker.handle_connected(now());
                let t = self.token(ctx).await?;
                snapshot = Some((self.snapshot_future(ctx, &t), t.generation));
            }
            if ctx.tokens.current(now()).is_none() && ctx.tokens.blocked_until(now()).is_some() {
                // A conflict or a refusal: the session cannot go on without a token.
                return self.token(ctx).await.map(|_| ());
            }
            let timer = ctx.tracker.poll_timeout().map(instant_at);
            let refresh = ctx.tokens.poll_timeout().map(instant_at);
            tokio::select! {
                msg = ws.next() => {
                    let msg = msg.ok_or(SessionError::Closed)?.map_err(|e| SessionError::WebSocket(e.to_string()))?;
                    last_rx = Instant::now();
                    match msg {
                        Message::Text(text) => self.handle_text(ctx, text.as_str()),
                        Message::Binary(b) => ThreeCxFrameMalformed {
                            pbx: &self.pbx.name,
                            kind: "binary",
                            reason: &format!("binary message of {} bytes", b.len()),
                        }
                        .emit(),
                        Message::Close(_) => return Err(SessionError::Closed),
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                }
                r = async { match snapshot.as_mut() { Some((f, _)) => f.await, None => std::future::pending().await } } => {
                    let generation = snapshot.take().map_or(0, |(_, g)| g);
                    let dns = match r {
                        Ok(dns) => dns,
                        Err(e @ SessionError::Unauthorized(_)) => {
                            ctx.tokens.handle_unauthorized(now(), generation, unit());
                            self.token_events(ctx);
                            return Err(e);
                        }
                        Err(e) => return Err(e),
                    };
                    self.check_extensions(ctx, &dns);
                    let n_dns = dns.len();
                    ctx.tracker.handle_snapshot(now(), dns);
                    if !*came_up {
                        *came_up = true;
                        ThreeCxLinkUp { pbx: &self.pbx.name, dns: n_dns, live_calls: ctx.tracker.calls() }.emit();
                        self.set_link(sink, Link::Up, None).await?;
                    }
                }
                Some(done) = ctx.fetches.join_next(), if !ctx.fetches.is_empty() => {
                    if let Ok(done) = done {
                        self.handle_fetch_done(ctx, done);
                        self.token_events(ctx);
                    }
                }
                msg = ctx.cdr_rx.recv(), if ctx.cdr_open => self.handle_cdr(ctx, msg),
                () = sleep_until(next_ping) => {
                    next_ping = Instant::now() + keepalive;
                    timeout(self.config.request_timeout, ws.send(Message::Ping(b"pbx-listener".to_vec().into())))
                        .await
                        .map_err(|_| SessionError::Timeout("the WebSocket ping to be sent"))?
                        .map_err(|e| SessionError::WebSocket(e.to_string()))?;
                }
                () = sleep_until(last_rx + dead_link) => {
                    let silent_secs = last_rx.elapsed().as_secs();
                    ThreeCxKeepaliveTimeout { pbx: &self.pbx.name, silent_secs }.emit();
                    return Err(SessionError::DeadLink(silent_secs));
                }
                () = sleep_until(timer.unwrap_or(last_rx + dead_link)), if timer.is_some() => {
                    ctx.tracker.handle_timeout(now());
                }
                () = sleep_until(refresh.unwrap_or(last_rx + dead_link)), if refresh.is_some() => {
                    self.refresh_token(ctx).await;
                }
            }
        }
    }

    fn handle_text(&self, ctx: &mut Ctx, text: &str) {
        match parse_frame(text, self.config.max_frame_bytes) {
            Ok(event) => {
                ThreeCxEventReceived { pbx: &self.pbx.name, kind: event.event_type.label() }.emit();
                tracing::trace!(pbx = %self.pbx, frame = %text, "3CX notification.");
                ctx.tracker.handle_ws_event(now(), event);
            }
            Err(e) => ThreeCxFrameMalformed { pbx: &self.pbx.name, kind: e.label(), reason: &e.to_string() }.emit(),
        }
    }

    fn check_extensions(&self, ctx: &mut Ctx, dns: &[DnInfo]) {
        let missing: Vec<String> =
            self.config.extensions.iter().filter(|e| !dns.iter().any(|d| &d.dn == *e)).cloned().collect();
        if ctx.missing.as_ref() != Some(&missing) {
            if !missing.is_empty() {
                ThreeCxExtensionsMissing { pbx: &self.pbx.name, client_id: &self.config.client_id, missing: &missing }
                    .emit();
            } else if ctx.missing.is_some() {
                tracing::info!(pbx = %self.pbx, "Every configured extension is now visible to the 3CX API client.");
            }
            ctx.missing = Some(missing);
        }
    }

    fn snapshot_future(&self, ctx: &Ctx, token: &crate::token::Token) -> SnapshotFuture {
        let http = ctx.http.clone();
        let url = format!("{}/callcontrol", self.config.url.as_str().trim_end_matches('/'));
        let bearer = token.secret.expose().to_owned();
        let max = self.config.max_body_bytes;
        let pbx = self.pbx.name.to_string();
        Box::pin(async move {
            let response = http
                .get(&url)
                .bearer_auth(&bearer)
                .send()
                .await
                .map_err(|e| SessionError::Http { what: "GET /callcontrol", reason: describe(&e) })?;
            let status = response.status().as_u16();
            match status {
                200 => {}
                401 => return Err(SessionError::Unauthorized("GET /callcontrol")),
                402 | 403 => {
                    let body = excerpt(response).await;
                    return Err(SessionError::Licence(format!(
                        "GET /callcontrol answered {status} ({body}): the API client lacks Call Control access"
                    )));
                }
                _ => {
                    let body = excerpt(response).await;
                    return Err(SessionError::Http {
                        what: "GET /callcontrol",
                        reason: format!("answered {status}: {body}"),
                    });
                }
            }
            let body = read_limited(response, max)
                .await
                .map_err(|reason| SessionError::Http { what: "GET /callcontrol", reason })?;
            let (dns, skipped) = parse_snapshot(&body)
                .map_err(|e| SessionError::Http { what: "GET /callcontrol", reason: e.to_string() })?;
            if skipped > 0 {
                ThreeCxFrameMalformed { pbx: &pbx, kind: "snapshot", reason: &format!("{skipped} entries skipped") }
                    .emit();
            }
            Ok(dns)
        })
    }

    async fn open_ws(&self, bearer: &str) -> Result<Ws, SessionError> {
        let url = &self.config.url;
        let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        let tls = url.scheme() == "https";
        let addr = format!("{host}:{port}");
        let wait = self.config.connect_timeout;
        let tcp = timeout(wait, TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| SessionError::Timeout("the TCP connection"))?
            .map_err(|source| SessionError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = if tls {
            let mut config = (*self.config.tls.client_config).clone();
            // The upgrade is HTTP/1.1: never let ALPN pick h2 here.
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = rustls_pki_types::ServerName::try_from(host.clone())
                .map_err(|e| SessionError::Tls(std::io::Error::other(e.to_string())))?;
            let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
            let s = timeout(wait, connector.connect(name, tcp))
                .await
                .map_err(|_| SessionError::Timeout("the TLS handshake"))?
                .map_err(SessionError::Tls)?;
            Box::new(s)
        } else {
            Box::new(tcp)
        };
        let mut ws_url = url.clone();
        let _ = ws_url.set_scheme(if tls { "wss" } else { "ws" });
        let path = format!("{}/callcontrol/ws", url.path().trim_end_matches('/'));
        ws_url.set_path(&path);
        let mut request = ws_url.as_str().into_client_request().map_err(|e| SessionError::WebSocket(e.to_string()))?;
        let value = HeaderValue::from_str(&format!("Bearer {bearer}"))
            .map_err(|_| SessionError::WebSocket("the token is not a valid header value".into()))?;
        request.headers_mut().insert(header::AUTHORIZATION, value);
        let config = WebSocketConfig::default()
            .max_message_size(Some(self.config.max_frame_bytes))
            .max_frame_size(Some(self.config.max_frame_bytes));
        match timeout(wait, tokio_tungstenite::client_async_with_config(request, stream, Some(config))).await {
            Err(_) => Err(SessionError::Timeout("the WebSocket upgrade")),
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(tungstenite::Error::Http(response))) => match response.status().as_u16() {
                401 => Err(SessionError::Unauthorized("the WebSocket upgrade")),
                s @ (402 | 403) => Err(SessionError::Licence(format!(
                    "the WebSocket upgrade answered {s}: the API client lacks Call Control access"
                ))),
                s => Err(SessionError::WebSocket(format!("the upgrade answered {s}"))),
            },
            Ok(Err(e)) => Err(SessionError::WebSocket(e.to_string())),
        }
    }
}

/// `POST /connect/token` (client credentials, form-encoded).
async fn request_token(http: &reqwest::Client, config: &LoadedConfig) -> Result<TokenResponse, FetchError> {
    let url = format!("{}/connect/token", config.url.as_str().trim_end_matches('/'));
    let body = format!(
        "client_id={}&client_secret={}&grant_type=client_credentials",
        ws::percent_encode(&config.client_id),
        ws::percent_encode(config.client_secret.expose())
    );
    let response = http
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| FetchError::Failed(describe(&e)))?;
    let status = response.status().as_u16();
    match status {
        200 => {
            let body = read_limited(response, 65_536).await.map_err(FetchError::Failed)?;
            TokenResponse::from_json(&body).map_err(FetchError::Failed)
        }
        400 | 401 | 403 => {
            // OAuth errors: {"error": "invalid_client", "error_description": …}.
            let body = read_limited(response, 4_096).await.unwrap_or_default();
            let error = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str().map(str::to_owned)))
                .unwrap_or_default();
            if status == 400 && !matches!(error.as_str(), "invalid_client" | "unauthorized_client" | "invalid_grant") {
                return Err(FetchError::Failed(format!("the token endpoint answered 400 {error}")));
            }
            Err(FetchError::Rejected(format!("the token endpoint answered {status} {error}").trim().to_owned()))
        }
        _ => Err(FetchError::Failed(format!("the token endpoint answered {status}"))),
    }
}

async fn fetch_participant(http: &reqwest::Client, url: &str, bearer: &str, max: usize) -> FetchResult {
    let response = match http.get(url).bearer_auth(bearer).send().await {
        Ok(r) => r,
        Err(e) => return FetchResult::Failed(describe(&e)),
    };
    match response.status().as_u16() {
        200 => match read_limited(response, max).await {
            Ok(body) => match Participant::from_json(&body) {
                Ok(p) => FetchResult::Fetched(Fetched::Found(p)),
                Err(e) => FetchResult::Failed(e.to_string()),
            },
            Err(e) => FetchResult::Failed(e),
        },
        404 => FetchResult::Fetched(Fetched::Gone),
        401 => FetchResult::Unauthorized,
        403 => FetchResult::Failed("403: the DN is not monitored by this API client".into()),
        s => FetchResult::Failed(format!("answered {s}")),
    }
}

/// The body, refusing more than `max` bytes.
async fn read_limited(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(format!("the answer exceeds {max} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
        if body.len() + chunk.len() > max {
            return Err(format!("the answer exceeds {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The first 200 bytes of an error body, for logs.
async fn excerpt(response: reqwest::Response) -> String {
    let body = read_limited(response, 65_536).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    text.replace(['\r', '\n'], " ")
}

fn describe(error: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut s = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        s.push_str(": ");
        s.push_str(&e.to_string());
        source = e.source();
    }
    s
}

/// A wall-clock time as a tokio instant (for sleeping until a core's deadline).
fn instant_at(t: UnixMillis) -> Instant {
    Instant::now() + Duration::from_millis(t.since(now()))
}

fn public_state(link: &Link, reason: Option<(&str, bool)>) -> LinkState {
    match link {
        Link::Connecting => LinkState::Connecting,
        Link::Up => LinkState::Up,
        Link::Disconnected { .. } => match reason {
            Some((reason, true)) => LinkState::AuthFailed { reason: reason.to_owned() },
            Some((reason, false)) => LinkState::Down { reason: reason.to_owned() },
            None => LinkState::Down { reason: String::new() },
        },
    }
}

/// Aborts a task when dropped (the CDR socket task ends with the adapter).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Adapter for ThreeCxAdapter {
    fn pbx(&self) -> &PbxId {
        &self.pbx
    }

    fn run<'a>(
        self: Box<Self>,
        sink: &'a dyn SignalSink,
        shutdown: BoxFuture<'a, ()>,
    ) -> BoxFuture<'a, Result<(), AdapterError>> {
        Box::pin(self.run_inner(sink, shutdown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_link_states() {
        assert_eq!(public_state(&Link::Connecting, None), LinkState::Connecting);
        assert_eq!(public_state(&Link::Up, None), LinkState::Up);
        let down = Link::Disconnected { backoff: Duration::from_secs(1) };
        assert_eq!(public_state(&down, Some(("x", true))), LinkState::AuthFailed { reason: "x".into() });
        assert_eq!(public_state(&down, Some(("y", false))), LinkState::Down { reason: "y".into() });
    }

    #[test]
    fn session_error_kinds_are_bounded() {
        assert_eq!(SessionError::Closed.kind(), "closed");
        assert_eq!(SessionError::Licence("x".into()).kind(), "licence");
        assert_eq!(SessionError::Unauthorized("x").kind(), "unauthorized");
    }
}
