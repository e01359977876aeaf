//! The admin HTTP endpoint (loopback by default): `/metrics`, `/health/live`, `/health/ready`.
//!
//! Readiness means "what the PBX says reaches the platform": the pipeline runs, delivery is not
//! stopped (a 410 from the platform stops it), and every PBX link is up. The JSON body says which
//! check failed, so `curl localhost:9187/health/ready` answers "why is it red?" directly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::info;

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

#[derive(Clone)]
struct AppState {
    health: Health,
    metrics: PrometheusHandle,
}

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().context("installing the metrics recorder")
}

/// Binds `addr` (before READY, so a port conflict is a startup error) and serves until
/// `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the admin endpoint on {addr} (`[admin] listen`)"))?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/health/live", get(|| async { "ok\n" }))
        .route("/health/ready", get(ready_handler))
        .with_state(AppState { health, metrics });
    info!(address = %addr, "Admin endpoint listening (/metrics, /health/live, /health/ready).");
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(e) = served.await {
            tracing::error!(error = %e, "The admin endpoint failed.");
        }
    }))
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}

async fn ready_handler(State(state): State<AppState>) -> impl IntoResponse {
    let snapshot = state.health.snapshot();
    let code = if snapshot.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::to_string_pretty(&snapshot).unwrap_or_else(|_| "{}".into());
    (code, [(header::CONTENT_TYPE, "application/json")], body + "\n")
}
