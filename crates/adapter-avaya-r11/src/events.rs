//! Internal events: each struct's `emit` logs and counts together (Vector style).
//!
//! Metrics are `pbx_listener_<name>_<unit>_total` with the `pbx` label (the configured name:
//! bounded by the configuration) and, where present, a `kind`/`reason` label from a fixed set.
//! Per-record warnings are rate-limited ([`LogGate`], time passed in by the sans-IO link) to
//! one per second per event type; the log line says how many were suppressed in between.

use listener_core::{MetricDescription, UnixMillis};
use listener_kit::LogGate;
use metrics::counter;
use tracing::{debug, error, info, warn};

use crate::tracker::SnapshotSummary;

/// Every metric this adapter emits, for the daemon's `/metrics` descriptions.
pub const METRICS: &[MetricDescription] = &[
    MetricDescription::counter(
        "pbx_listener_devlink_connection_attempts_total",
        "DevLink3 connection attempts, by pbx.",
    ),
    MetricDescription::counter(
        "pbx_listener_devlink_subscriptions_total",
        "DevLink3 event subscriptions established, by pbx.",
    ),
    MetricDescription::counter("pbx_listener_devlink_link_down_total", "DevLink3 links lost, by pbx and kind."),
    MetricDescription::counter(
        "pbx_listener_devlink_auth_failures_total",
        "DevLink3 logins the IP Office refused, by pbx.",
    ),
    MetricDescription::counter(
        "pbx_listener_devlink_keepalive_timeouts_total",
        "DevLink3 links declared dead after silence, by pbx.",
    ),
    MetricDescription::counter("pbx_listener_devlink_frames_received_total", "DevLink3 frames received, by pbx."),
    MetricDescription::counter(
        "pbx_listener_devlink_garbage_bytes_total",
        "Bytes skipped to resynchronise DevLink3 framing, by pbx.",
    ),
    MetricDescription::counter(
        "pbx_listener_devlink_records_malformed_total",
        "DevLink3 records that could not be read, by pbx and kind.",
    ),
    MetricDescription::counter(
        "pbx_listener_devlink_records_received_total",
        "DevLink3 event records received, by pbx and kind.",
    ),
    MetricDescription::counter(
        "pbx_listener_devlink_resyncs_total",
        "DevLink3 call snapshots taken after (re)connecting, by pbx.",
    ),
];

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

/// Authentication failures repeat for as long as the password is wrong: one ERROR line per
/// ten minutes at most (with the count of the attempts in between), each attempt at debug.
static AUTH_FAILED: LogGate = LogGate::every(600_000);

impl DevLinkAuthError<'_> {
    /// Logs (rate-limited) and counts.
    pub fn emit(&self, now: UnixMillis) {
        counter!("pbx_listener_devlink_auth_failures_total", "pbx" => self.pbx.to_owned()).increment(1);
        let Some(suppressed) = AUTH_FAILED.allow(now) else {
            debug!(
                pbx = self.pbx,
                result = self.result,
                retry_in_secs = self.retry_in_secs,
                "DevLink3 authentication failed again."
            );
            return;
        };
        error!(
            suppressed,
            pbx = self.pbx,
            username = self.username,
            result = self.result,
            retry_in_secs = self.retry_in_secs,
            "DevLink3 authentication failed. Check the service user, its password file and its rights group \
             (DevLink3 ticked) and the CTI Link Pro licence. Waiting before retrying: the IP Office may lock \
             the account after repeated failures."
        );
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

static GARBAGE: LogGate = LogGate::per_second();

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
    pub fn emit(&self, now: UnixMillis) {
        if let Some(suppressed) = GARBAGE.allow(now) {
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

static MALFORMED: LogGate = LogGate::per_second();

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
    pub fn emit(&self, now: UnixMillis) {
        if let Some(suppressed) = MALFORMED.allow(now) {
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
    /// Calls live when the settle window closed (the snapshot's and those started meanwhile).
    pub live_calls: usize,
    /// What the snapshot showed.
    pub summary: SnapshotSummary,
}

impl DevLinkResynced<'_> {
    /// Logs and counts.
    pub fn emit(&self) {
        let s = &self.summary;
        info!(
            pbx = self.pbx,
            snapshot_calls = s.held(),
            confirmed = s.confirmed,
            ended_while_down = s.ended_unseen,
            started_meanwhile = s.first_seen_new,
            live_calls = self.live_calls,
            "DevLink3 snapshot of live calls complete."
        );
        counter!("pbx_listener_devlink_resyncs_total", "pbx" => self.pbx.to_owned()).increment(1);
    }
}
