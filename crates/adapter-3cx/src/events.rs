//! Internal events: each struct's `emit` logs and counts together (Vector style).
//!
//! Metrics are `pbx_listener_threecx_<name>_total` (and `…_cdr_…`) with the `pbx` label (the
//! configured name: bounded by the configuration) and, where present, a `kind`/`outcome` label
//! from a fixed set. Per-record warnings are rate-limited with [`listener_kit::LogGate`]; the
//! line says how many were suppressed.

use listener_core::MetricDescription;
use listener_kit::LogGate;
use metrics::counter;
use tracing::{debug, error, info, warn};

/// Every metric this adapter emits, for the daemon's `/metrics` descriptions.
pub const METRICS: &[MetricDescription] = &[
    MetricDescription::counter("pbx_listener_threecx_connection_attempts_total", "3CX sessions started, by pbx."),
    MetricDescription::counter("pbx_listener_threecx_tokens_total", "3CX access tokens obtained, by pbx."),
    MetricDescription::counter(
        "pbx_listener_threecx_auth_failures_total",
        "3CX refusals, by pbx and kind (credentials, licence, conflict: another program uses the client id).",
    ),
    MetricDescription::counter(
        "pbx_listener_threecx_token_invalidations_total",
        "3CX access tokens refused before they expired, by pbx.",
    ),
    MetricDescription::counter(
        "pbx_listener_threecx_extensions_missing_total",
        "Configured extensions the 3CX API client could not see at a snapshot, by pbx.",
    ),
    MetricDescription::counter("pbx_listener_threecx_snapshots_total", "3CX links up (snapshot applied), by pbx."),
    MetricDescription::counter("pbx_listener_threecx_link_down_total", "3CX links lost, by pbx and kind."),
    MetricDescription::counter(
        "pbx_listener_threecx_malformed_total",
        "3CX frames, bodies or snapshot entries that could not be read, by pbx and kind.",
    ),
    MetricDescription::counter(
        "pbx_listener_threecx_events_received_total",
        "3CX WebSocket notifications received, by pbx and kind (upsert, remove, …).",
    ),
    MetricDescription::counter(
        "pbx_listener_threecx_fetch_failures_total",
        "3CX participant GETs that failed, by pbx.",
    ),
    MetricDescription::counter(
        "pbx_listener_threecx_keepalive_timeouts_total",
        "3CX WebSockets declared dead after silence, by pbx.",
    ),
    MetricDescription::counter("pbx_listener_threecx_cdr_connections_total", "3CX CDR connections opened, by pbx."),
    MetricDescription::counter(
        "pbx_listener_threecx_cdr_refused_total",
        "3CX CDR connections refused, by pbx and reason (peer, limit).",
    ),
    MetricDescription::counter("pbx_listener_threecx_cdr_socket_errors_total", "3CX CDR socket failures, by pbx."),
    MetricDescription::counter(
        "pbx_listener_threecx_cdr_records_total",
        "3CX CDR lines processed, by pbx and outcome (merged, backfilled, duplicate, unmatched, malformed, …).",
    ),
];

/// Connecting to the PBX (token, WebSocket).
pub struct ThreeCxConnecting<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// The base URL.
    pub url: &'a str,
}

impl ThreeCxConnecting<'_> {
    /// Logs and counts.
    pub fn emit(&self) {
        debug!(pbx = self.pbx, url = self.url, "Connecting to the 3CX Call Control API.");
        counter!("pbx_listener_threecx_connection_attempts_total", "pbx" => self.pbx.to_owned()).increment(1);
    }
}

/// A token was obtained.
pub struct ThreeCxTokenObtained<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// Its lifetime in seconds.
    pub lifetime_secs: u64,
    /// How the lifetime was read (`jwt`, `seconds`, `minutes`, `default`).
    pub basis: &'static str,
    /// `expires_in` as sent.
    pub expires_in: Option<u64>,
}

impl ThreeCxTokenObtained<'_> {
    /// Logs and counts.
    pub fn emit(&self) {
        debug!(
            pbx = self.pbx,
            lifetime_secs = self.lifetime_secs,
            basis = self.basis,
            expires_in = self.expires_in,
            "3CX access token obtained."
        );
        counter!("pbx_listener_threecx_tokens_total", "pbx" => self.pbx.to_owned()).increment(1);
    }
}

/// The token endpoint refused the client id or secret.
pub struct ThreeCxTokenRejected<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// The client id.
    pub client_id: &'a str,
    /// What the PBX said.
    pub reason: &'a str,
    /// Seconds until the next attempt.
    pub retry_in_secs: u64,
}

impl ThreeCxTokenRejected<'_> {
    /// Logs and counts.
    pub fn emit(&self) {
        error!(
            pbx = self.pbx,
            client_id = self.client_id,
            reason = self.reason,
            retry_in_secs = self.retry_in_secs,
            "3CX refused the API client's credentials. Check client_id and the key in client_secret_file \
             (Admin console → Integrations → API; the key is shown once: regenerate it if lost)."
        );
        counter!("pbx_listener_threecx_auth_failures_total", "pbx" => self.pbx.to_owned(), "kind" => "credentials")
            .increment(1);
    }
}

/// The API client may not use Call Control (licence or the tick box).
pub struct ThreeCxLicenceError<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// The client id.
    pub client_id: &'a str,
    /// What the PBX answered.
    pub reason: &'a str,
    /// Seconds until the next attempt.
    pub retry_in_secs: u64,
}

impl ThreeCxLicenceError<'_> {
    /// Logs and counts.
    pub fn emit(&self) {
        error!(
            pbx = self.pbx,
            client_id = self.client_id,
            reason = self.reason,
            retry_in_secs = self.retry_in_secs,
            "3CX does not let this API client use Call Control. Tick \"3CX Call Control API Access\" for the \
             client (Admin console → Integrations → API), and check the licence: Call Control needs an \
             Enterprise (8SC+) licence."
        );
        counter!("pbx_listener_threecx_auth_failures_total", "pbx" => self.pbx.to_owned(), "kind" => "licence")
            .increment(1);
    }
}

/// Our token keeps being invalidated: another program uses the same client id.
pub struct ThreeCxTokenConflict<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// The client id.
    pub client_id: &'a str,
    /// Invalidations seen in the window.
    pub invalidations: usize,
    /// Seconds until the next attempt.
    pub retry_in_secs: u64,
}

impl ThreeCxTokenConflict<'_> {
    /// Logs and counts.
    pub fn emit(&self) {
        error!(
            pbx = self.pbx,
            client_id = self.client_id,
            invalidations = self.invalidations,
            retry_in_secs = self.retry_in_secs,
            "Another program is using the same 3CX API client id: 3CX keeps one token per client id, so each \
             new token invalidates the other's. Give this listener its own API client (Integrations → API → \
             Add) and stop the other program or second listener using this one. Waiting before retrying, so \
             as not to knock the other program out in a loop."
        );
        counter!("pbx_listener_threecx_auth_failures_total", "pbx" => self.pbx.to_owned(), "kind" => "conflict")
            .increment(1);
    }
}

static TOKEN_INVALIDATED: LogGate = LogGate::per_second();

/// A token that had not expired was refused.
pub struct ThreeCxTokenInvalidated<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// Invalidations in the window.
    pub recent: usize,
}

impl ThreeCxTokenInvalidated<'_> {
    /// Logs (rate-limited) and counts.
    pub fn emit(&self) {
        if let Some(suppressed) = TOKEN_INVALIDATED.allow_now() {
            warn!(
                pbx = self.pbx,
                recent = self.recent,
                suppressed,
                "3CX invalidated our access token; getting a new one."
            );
        }
        counter!("pbx_listener_threecx_token_invalidations_total", "pbx" => self.pbx.to_owned()).increment(1);
    }
}

/// Configured extensions the API client cannot see.
pub struct ThreeCxExtensionsMissing<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// The client id.
    pub client_id: &'a str,
    /// The missing extensions.
    pub missing: &'a [String],
}

impl ThreeCxExtensionsMissing<'_> {
    /// Logs and counts.
    pub fn emit(&self) {
        error!(
            pbx = self.pbx,
            client_id = self.client_id,
            missing = %self.missing.join(", "),
            "Configured extensions are not visible to the 3CX API client, so their calls cannot be reported. \
             In the Admin console open Integrations → API → this client and tick them under \"Extensions to \
             monitor\" (queues and ring groups cannot be ticked as a whole: tick each agent)."
        );
        counter!("pbx_listener_threecx_extensions_missing_total", "pbx" => self.pbx.to_owned())
            .increment(self.missing.len() as u64);
    }
}

/// The link is up: WebSocket open, snapshot applied.
pub struct ThreeCxLinkUp<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// DNs in the snapshot.
    pub dns: usize,
    /// Live calls in the snapshot.
    pub live_calls: usize,
}

impl ThreeCxLinkUp<'_> {
    /// Logs and counts.
    pub fn emit(&self) {
        info!(pbx = self.pbx, dns = self.dns, live_calls = self.live_calls, "3CX Call Control link up.");
        counter!("pbx_listener_threecx_snapshots_total", "pbx" => self.pbx.to_owned()).increment(1);
    }
}

/// The link went down (or never came up).
pub struct ThreeCxLinkDown<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// Why.
    pub reason: &'a str,
    /// A bounded label.
    pub kind: &'static str,
    /// Delay before the next attempt, in ms.
    pub retry_in_ms: u64,
}

impl ThreeCxLinkDown<'_> {
    /// Logs and counts.
    pub fn emit(&self) {
        warn!(pbx = self.pbx, reason = self.reason, retry_in_ms = self.retry_in_ms, "3CX Call Control link down.");
        counter!("pbx_listener_threecx_link_down_total", "pbx" => self.pbx.to_owned(), "kind" => self.kind)
            .increment(1);
    }
}

static FRAME_MALFORMED: LogGate = LogGate::per_second();

/// A WebSocket frame or a participant body could not be read; skipped.
pub struct ThreeCxFrameMalformed<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// `frame`, `binary`, `participant`, `snapshot`.
    pub kind: &'static str,
    /// Why.
    pub reason: &'a str,
}

impl ThreeCxFrameMalformed<'_> {
    /// Logs (rate-limited) and counts.
    pub fn emit(&self) {
        if let Some(suppressed) = FRAME_MALFORMED.allow_now() {
            warn!(
                pbx = self.pbx,
                kind = self.kind,
                reason = self.reason,
                suppressed,
                "Skipped 3CX data that cannot be read."
            );
        }
        counter!("pbx_listener_threecx_malformed_total", "pbx" => self.pbx.to_owned(), "kind" => self.kind)
            .increment(1);
    }
}

/// A notification was received.
pub struct ThreeCxEventReceived<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// `upsert`, `remove`, `dtmf`, …
    pub kind: &'static str,
}

impl ThreeCxEventReceived<'_> {
    /// Counts.
    pub fn emit(&self) {
        counter!("pbx_listener_threecx_events_received_total", "pbx" => self.pbx.to_owned(), "kind" => self.kind)
            .increment(1);
    }
}

static FETCH_FAILED: LogGate = LogGate::per_second();

/// A participant GET failed.
pub struct ThreeCxFetchFailed<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// The entity.
    pub entity: &'a str,
    /// Why.
    pub reason: &'a str,
}

impl ThreeCxFetchFailed<'_> {
    /// Logs (rate-limited) and counts.
    pub fn emit(&self) {
        if let Some(suppressed) = FETCH_FAILED.allow_now() {
            warn!(
                pbx = self.pbx,
                entity = self.entity,
                reason = self.reason,
                suppressed,
                "Fetching a 3CX participant failed."
            );
        }
        counter!("pbx_listener_threecx_fetch_failures_total", "pbx" => self.pbx.to_owned()).increment(1);
    }
}

/// The WebSocket was silent too long.
pub struct ThreeCxKeepaliveTimeout<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// Seconds of silence.
    pub silent_secs: u64,
}

impl ThreeCxKeepaliveTimeout<'_> {
    /// Logs and counts.
    pub fn emit(&self) {
        warn!(pbx = self.pbx, silent_secs = self.silent_secs, "3CX WebSocket silent too long; reconnecting.");
        counter!("pbx_listener_threecx_keepalive_timeouts_total", "pbx" => self.pbx.to_owned()).increment(1);
    }
}

/// The CDR socket connected (either way).
pub struct CdrConnected<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// The peer.
    pub peer: &'a str,
}

impl CdrConnected<'_> {
    /// Logs and counts.
    pub fn emit(&self) {
        debug!(pbx = self.pbx, peer = self.peer, "3CX CDR connection open.");
        counter!("pbx_listener_threecx_cdr_connections_total", "pbx" => self.pbx.to_owned()).increment(1);
    }
}

static CDR_REFUSED: LogGate = LogGate::per_second();

/// A CDR connection was refused (not an allowed peer, too many connections).
pub struct CdrConnectionRefused<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// The peer.
    pub peer: &'a str,
    /// `peer`, `limit`.
    pub reason: &'static str,
}

impl CdrConnectionRefused<'_> {
    /// Logs (rate-limited) and counts.
    pub fn emit(&self) {
        if let Some(suppressed) = CDR_REFUSED.allow_now() {
            warn!(pbx = self.pbx, peer = self.peer, reason = self.reason, suppressed, "Refused a CDR connection.");
        }
        counter!("pbx_listener_threecx_cdr_refused_total", "pbx" => self.pbx.to_owned(), "reason" => self.reason)
            .increment(1);
    }
}

static CDR_DOWN: LogGate = LogGate::every(10_000);

/// The CDR socket failed (bind, connect, read).
pub struct CdrSocketError<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// Why.
    pub reason: &'a str,
    /// Delay before the next attempt, in ms.
    pub retry_in_ms: u64,
}

impl CdrSocketError<'_> {
    /// Logs (rate-limited) and counts.
    pub fn emit(&self) {
        if let Some(suppressed) = CDR_DOWN.allow_now() {
            warn!(
                pbx = self.pbx,
                reason = self.reason,
                retry_in_ms = self.retry_in_ms,
                suppressed,
                "3CX CDR socket failed."
            );
        }
        counter!("pbx_listener_threecx_cdr_socket_errors_total", "pbx" => self.pbx.to_owned()).increment(1);
    }
}

static CDR_MALFORMED: LogGate = LogGate::per_second();

/// A CDR line was processed (`outcome`: merged, backfilled, duplicate, malformed, …).
pub struct CdrRecordProcessed<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// The outcome label.
    pub outcome: &'static str,
    /// For a malformed line: why.
    pub reason: Option<&'a str>,
}

impl CdrRecordProcessed<'_> {
    /// Logs (malformed lines, rate-limited) and counts.
    pub fn emit(&self) {
        if let Some(reason) = self.reason
            && let Some(suppressed) = CDR_MALFORMED.allow_now()
        {
            warn!(pbx = self.pbx, outcome = self.outcome, reason, suppressed, "Skipped a CDR line.");
        }
        counter!("pbx_listener_threecx_cdr_records_total", "pbx" => self.pbx.to_owned(), "outcome" => self.outcome)
            .increment(1);
    }
}
