//! Internal events: each struct's `emit` logs and counts together (Vector style).
//!
//! Metrics are `pbx_listener_<name>_<unit>_total` with the `pbx` label (the configured name:
//! bounded by the configuration) and, where present, a `kind`/`reason` label from a fixed set.
//! Per-record warnings are rate-limited to one per second per event type; the log line says
//! how many were suppressed in between.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use metrics::counter;
use tracing::{debug, error, info, warn};

/// One-per-second gate for a warning, with a count of what it suppressed.
struct RateLimit {
    last_sec: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimit {
    const fn new() -> RateLimit {
        RateLimit { last_sec: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// `Some(suppressed since the last log)` when this one may be logged.
    fn allow(&self) -> Option<u64> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let last = self.last_sec.load(Ordering::Relaxed);
        if now != last && self.last_sec.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Connecting to the PBX.
pub struct DevLinkConnecting<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// Host.
    pub host: &'a str,
    /// Port.
    pub port: u16,
    /// TLS or not.
    pub tls: bool,
}

impl DevLinkConnecting<'_> {
    /// Logs and counts.
    pub fn emit(&self) {
        debug!(pbx = self.pbx, host = self.host, port = self.port, tls = self.tls, "Connecting to DevLink3.");
        counter!("pbx_listener_devlink_connection_attempts_total", "pbx" => self.pbx.to_owned()).increment(1);
    }
}

/// The link is up: authenticated and subscribed.
pub struct DevLinkSubscribed<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// The PBX type tuple of the auth result.
    pub pbx_type: Option<&'a str>,
    /// The flags the PBX accepted.
    pub accepted_flags: &'a str,
    /// Whether the PBX answered PARTIAL SUCCESS.
    pub partial: bool,
    /// The flags we asked for.
    pub requested_flags: &'a str,
}

impl DevLinkSubscribed<'_> {
    /// Logs and counts.
    pub fn emit(&self) {
        if self.partial {
            warn!(
                pbx = self.pbx,
                requested = self.requested_flags,
                accepted = self.accepted_flags,
                "DevLink3 accepted only some event flags (PARTIAL SUCCESS); check the licence and the flags."
            );
        } else {
            info!(
                pbx = self.pbx,
                pbx_type = self.pbx_type.unwrap_or("unknown"),
                flags = self.accepted_flags,
                "DevLink3 link up."
            );
        }
        counter!("pbx_listener_devlink_subscriptions_total", "pbx" => self.pbx.to_owned()).increment(1);
    }
}

/// The link went down (or never came up).
pub struct DevLinkLinkDown<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// Why.
    pub reason: &'a str,
    /// A bounded label for the metric.
    pub kind: &'static str,
    /// Delay before the next attempt, in ms.
    pub retry_in_ms: u64,
}

impl DevLinkLinkDown<'_> {
    /// Logs and counts.
    pub fn emit(&self) {
        warn!(pbx = self.pbx, reason = self.reason, retry_in_ms = self.retry_in_ms, "DevLink3 link down.");
        counter!("pbx_listener_devlink_link_down_total", "pbx" => self.pbx.to_owned(), "kind" => self.kind)
            .increment(1);
    }
}

/// The PBX refused the credentials or the licence.
pub struct DevLinkAuthError<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// The user.
    pub username: &'a str,
    /// The PBX's answer.
    pub result: &'a str,
    /// Delay before the next attempt, in seconds.
    pub retry_in_secs: u64,
}

impl DevLinkAuthError<'_> {
    /// Logs and counts.
    pub fn emit(&self) {
        error!(
            pbx = self.pbx,
            username = self.username,
            result = self.result,
            retry_in_secs = self.retry_in_secs,
            "DevLink3 authentication failed. Check the service user, its password file and its rights group \
             (DevLink3 ticked) and the CTI Link Pro licence. Waiting before retrying: the IP Office may lock \
             the account after repeated failures."
        );
        counter!("pbx_listener_devlink_auth_failures_total", "pbx" => self.pbx.to_owned()).increment(1);
    }
}

/// The link was declared dead (no data for `dead_link_secs`).
pub struct DevLinkKeepaliveTimeout<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// Seconds of silence.
    pub silent_secs: u64,
}

impl DevLinkKeepaliveTimeout<'_> {
    /// Logs and counts.
    pub fn emit(&self) {
        warn!(pbx = self.pbx, silent_secs = self.silent_secs, "DevLink3 link silent too long; reconnecting.");
        counter!("pbx_listener_devlink_keepalive_timeouts_total", "pbx" => self.pbx.to_owned()).increment(1);
    }
}

/// Frames were received.
pub struct DevLinkFramesReceived<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// How many.
    pub count: u64,
}

impl DevLinkFramesReceived<'_> {
    /// Counts.
    pub fn emit(&self) {
        counter!("pbx_listener_devlink_frames_received_total", "pbx" => self.pbx.to_owned()).increment(self.count);
    }
}

static GARBAGE: RateLimit = RateLimit::new();

/// Bytes between frames were skipped.
pub struct DevLinkGarbageSkipped<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// How many.
    pub bytes: usize,
    /// Why the decoder left frame boundaries.
    pub reason: &'a str,
}

impl DevLinkGarbageSkipped<'_> {
    /// Logs (rate-limited) and counts.
    pub fn emit(&self) {
        if let Some(suppressed) = GARBAGE.allow() {
            warn!(
                pbx = self.pbx,
                bytes = self.bytes,
                reason = self.reason,
                suppressed,
                "Skipped bytes that are not DevLink3 frames."
            );
        }
        counter!("pbx_listener_devlink_garbage_bytes_total", "pbx" => self.pbx.to_owned()).increment(self.bytes as u64);
    }
}

static MALFORMED: RateLimit = RateLimit::new();

/// A frame or record could not be read; skipped.
pub struct DevLinkRecordMalformed<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// `packet`, `delta3`, `siptrack`, `unknown-delta3`, `unknown-packet`.
    pub kind: &'static str,
    /// Why.
    pub reason: &'a str,
}

impl DevLinkRecordMalformed<'_> {
    /// Logs (rate-limited) and counts.
    pub fn emit(&self) {
        if let Some(suppressed) = MALFORMED.allow() {
            warn!(
                pbx = self.pbx,
                kind = self.kind,
                reason = self.reason,
                suppressed,
                "Skipped a DevLink3 record that cannot be read."
            );
        }
        counter!("pbx_listener_devlink_records_malformed_total", "pbx" => self.pbx.to_owned(), "kind" => self.kind)
            .increment(1);
    }
}

/// A record was read.
pub struct DevLinkRecordReceived<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// `Detail`, `CallLost`, `LinkLost`, `AttemptReject`, `SIPTrack`, `CMExtn`.
    pub kind: &'static str,
}

impl DevLinkRecordReceived<'_> {
    /// Counts.
    pub fn emit(&self) {
        counter!("pbx_listener_devlink_records_received_total", "pbx" => self.pbx.to_owned(), "kind" => self.kind)
            .increment(1);
    }
}

/// The snapshot after a subscription is complete.
pub struct DevLinkResynced<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// How many calls the PBX lists as live.
    pub live_calls: usize,
}

impl DevLinkResynced<'_> {
    /// Logs and counts.
    pub fn emit(&self) {
        info!(pbx = self.pbx, live_calls = self.live_calls, "DevLink3 snapshot of live calls complete.");
        counter!("pbx_listener_devlink_resyncs_total", "pbx" => self.pbx.to_owned()).increment(1);
    }
}
