//! The admin HTTP endpoint (loopback by default): `/metrics`, `/health/live`, `/health/ready`,
//! `/status` (JSON for `pbx-listener status`) and `/events/tail` (server-sent events for
//! `pbx-listener tail`).
//!
//! Readiness means "what the PBX says reaches the platform": the pipeline runs, delivery is not
//! stopped (a 410 from the platform stops it), and every PBX link is up. The JSON body says which
//! check failed, so `curl localhost:9187/health/ready` answers "why is it red?" directly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use forwarder::{DeliveryFailure, DeliveryStatus};
use metrics_exporter_prometheus::PrometheusHandle;
use outbox::Outbox;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::status::{ReportInputs, StatusBoard};
use crate::tail::{EventTap, TailQuery};

/// What the daemon's parts report about themselves. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Health(Arc<Mutex<HealthState>>);

/// The state behind [`Health`], as served on `/health/ready`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HealthState {
    /// The pipeline task is running.
    pub pipeline: Check,
    /// Delivery to the platform.
    pub delivery: Check,
    /// Each PBX link, by PBX name.
    pub pbx: BTreeMap<String, Check>,
}

/// One check: ok, or not with a reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Whether this check passes.
    pub ok: bool,
    /// What is going on, for people.
    pub detail: String,
}

impl Check {
    /// A passing check.
    pub fn ok(detail: impl Into<String>) -> Check {
        Check { ok: true, detail: detail.into() }
    }

    /// A failing check.
    pub fn failing(detail: impl Into<String>) -> Check {
        Check { ok: false, detail: detail.into() }
    }
}

impl Health {
    /// Updates the state.
    pub fn update(&self, f: impl FnOnce(&mut HealthState)) {
        if let Ok(mut state) = self.0.lock() {
            f(&mut state);
        }
    }

    /// A copy of the state.
    pub fn snapshot(&self) -> HealthState {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl HealthState {
    /// Whether every check passes.
    pub fn ready(&self) -> bool {
        self.pipeline.ok && self.delivery.ok && self.pbx.values().all(|c| c.ok)
    }
}

/// Everything the admin endpoint reads. Cheap to clone (shared handles).
#[derive(Clone)]
pub struct AdminContext {
    /// Readiness checks.
    pub health: Health,
    /// The Prometheus recorder's handle.
    pub metrics: PrometheusHandle,
    /// PBX links, correlation, uptime.
    pub board: StatusBoard,
    /// The outbox, for its counts (read on its reader connection).
    pub outbox: Outbox,
    /// The forwarder's status.
    pub delivery: watch::Receiver<DeliveryStatus>,
    /// The forwarder's last failed attempt.
    pub last_failure: watch::Receiver<Option<DeliveryFailure>>,
    /// Committed events, for tail clients.
    pub tap: EventTap,
}

#[derive(Clone)]
struct AppState {
    ctx: AdminContext,
    /// Ends tail streams when the daemon stops (graceful shutdown waits for open responses).
    stop: CancellationToken,
}

/// Installs the Prometheus recorder (once per process), describes every metric and returns
/// the handle.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = crate::telemetry::builder()?.install_recorder().context("installing the metrics recorder")?;
    crate::telemetry::describe();
    Ok(handle)
}

/// Binds `addr` (before READY, so a port conflict is a startup error) and serves until
/// `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    ctx: AdminContext,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the admin endpoint on {addr} (`[admin] listen`)"))?;
    let sampler = ctx.board.spawn_sampler(ctx.delivery.clone(), shutdown.clone());
    let app = router(AppState { ctx, stop: shutdown.clone() });
    info!(address = %addr, "Admin endpoint listening (/metrics, /health/live, /health/ready, /status, /events/tail).");
    Ok(tokio::spawn(async move {
        accept_loop(listener, app, shutdown).await;
        sampler.abort();
    }))
}

/// The most admin connections at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 32;

/// How long a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves connections within the cap, each one request (no keep-alive: scrapers and the CLI
/// connect per request) with a deadline on its head, so a client that connects and says
/// nothing cannot hold the endpoint (DESIGN §7: every listener is bounded). `/events/tail`
/// responses stream for as long as the client reads; the tap caps those clients itself.
async fn accept_loop(listener: tokio::net::TcpListener, app: Router, shutdown: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    warn!(error = %e, "The admin endpoint could not accept a connection.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        connections.spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).keep_alive(false);
            if let Err(e) = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await {
                tracing::debug!(error = %e, "An admin connection ended with an error.");
            }
            drop(permit);
        });
    }
    // Tail streams end on `shutdown` (their handler watches it); the rest are single requests.
    let grace = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), grace).await.is_err() {
        connections.abort_all();
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/health/live", get(|| async { "ok\n" }))
        .route("/health/ready", get(ready_handler))
        .route("/status", get(status_handler))
        .route("/events/tail", get(tail_handler))
        .with_state(state)
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    // Gauges that are a function of the time are set when scraped.
    let ctx = &state.ctx;
    let oldest_secs = match ctx.outbox.stats().await {
        Ok(stats) => stats.oldest_pending_age_ms(listener_kit::clock::now().0).unwrap_or(0) as f64 / 1000.0,
        Err(e) => {
            warn!(error = %e, "Cannot read the outbox counts for /metrics.");
            f64::NAN
        }
    };
    metrics::gauge!("pbx_listener_outbox_oldest_pending_age_seconds").set(oldest_secs);
    metrics::gauge!("pbx_listener_uptime_seconds").set(ctx.board.uptime().as_secs_f64());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], ctx.metrics.render())
}

async fn status_handler(State(state): State<AppState>) -> impl IntoResponse {
    let ctx = &state.ctx;
    let outbox = match ctx.outbox.stats().await {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "Cannot read the outbox counts for /status.");
            None
        }
    };
    let health = ctx.health.snapshot();
    let delivery = *ctx.delivery.borrow();
    let last_failure = ctx.last_failure.borrow().clone();
    let report = ctx.board.report(ReportInputs {
        health: &health,
        delivery: &delivery,
        last_failure: last_failure.as_ref(),
        outbox: outbox.as_ref(),
        tail: ctx.tap.report(),
    });
    let body = serde_json::to_string_pretty(&report).unwrap_or_else(|_| "{}".into());
    ([(header::CONTENT_TYPE, "application/json")], body + "\n")
}

async fn tail_handler(
    State(state): State<AppState>,
    query: Result<Query<TailQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return (StatusCode::BAD_REQUEST, "unknown filter: use extension=, pbx= or status= (comma-separated)\n")
            .into_response();
    };
    match state.ctx.tap.subscribe(query.into(), state.stop.clone()) {
        Some(client) => client.into_sse().into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "too many tail clients\n").into_response(),
    }
}

async fn ready_handler(State(state): State<AppState>) -> impl IntoResponse {
    let snapshot = state.ctx.health.snapshot();
    let code = if snapshot.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::to_string_pretty(&snapshot).unwrap_or_else(|_| "{}".into());
    (code, [(header::CONTENT_TYPE, "application/json")], body + "\n")
}
