//! Internal events: each struct's `emit` logs and counts together (Vector style).
//!
//! Metrics are `pbx_listener_<name>_<unit>_total` with the `pbx` label (the configured name,
//! bounded by the configuration) and, where present, a `feed` (`smdr`, `delta2`) and a `kind`
//! label from a fixed set. Per-record warnings go through a [`LogGate`]: one line a second per
//! event type, saying how many were suppressed.

use listener_core::MetricDescription;
use listener_kit::LogGate;
use metrics::counter;
use tracing::{debug, info, warn};

/// Every metric this adapter emits, for the daemon's `/metrics` descriptions
/// ([`listener_core::PbxKind::metrics`]).
pub const METRICS: &[MetricDescription] = &[
    MetricDescription::counter(
        "pbx_listener_r9_connections_total",
        "Avaya R9 feed connections established, by pbx and feed (smdr, delta2).",
    ),
    MetricDescription::counter("pbx_listener_r9_link_down_total", "Avaya R9 feed connections lost, by pbx and feed."),
    MetricDescription::counter(
        "pbx_listener_smdr_connections_refused_total",
        "SMDR connections refused (not in smdr.allowed_sources), by pbx and reason.",
    ),
    MetricDescription::counter("pbx_listener_r9_lines_received_total", "Avaya R9 lines received, by pbx and feed."),
    MetricDescription::counter(
        "pbx_listener_r9_lines_too_long_total",
        "Avaya R9 lines longer than max_line_bytes, skipped, by pbx and feed.",
    ),
    MetricDescription::counter(
        "pbx_listener_r9_records_malformed_total",
        "Avaya R9 records that could not be read, skipped, by pbx, feed and kind.",
    ),
    MetricDescription::counter(
        "pbx_listener_smdr_records_duplicate_total",
        "SMDR records dropped as replays of records already seen, by pbx.",
    ),
];

/// A feed's connection came up.
pub struct R9LinkUp<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// `smdr` or `delta2`.
    pub feed: &'static str,
    /// The peer.
    pub peer: &'a str,
}

impl R9LinkUp<'_> {
    /// Logs and counts.
    pub fn emit(&self) {
        info!(pbx = self.pbx, feed = self.feed, peer = self.peer, "Avaya R9 feed connected.");
        counter!("pbx_listener_r9_connections_total", "pbx" => self.pbx.to_owned(), "feed" => self.feed).increment(1);
    }
}

/// A feed's connection went down.
pub struct R9LinkDown<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// `smdr` or `delta2`.
    pub feed: &'static str,
    /// Why.
    pub reason: &'a str,
    /// Delay before the next attempt (client modes), ms.
    pub retry_in_ms: Option<u64>,
}

impl R9LinkDown<'_> {
    /// Logs and counts.
    pub fn emit(&self) {
        match self.retry_in_ms {
            Some(ms) => {
                warn!(pbx = self.pbx, feed = self.feed, reason = self.reason, retry_in_ms = ms, "Avaya R9 feed down.")
            }
            None => warn!(pbx = self.pbx, feed = self.feed, reason = self.reason, "Avaya R9 feed down."),
        }
        counter!("pbx_listener_r9_link_down_total", "pbx" => self.pbx.to_owned(), "feed" => self.feed).increment(1);
    }
}

static REFUSED: LogGate = LogGate::per_second();

/// A connection to the SMDR listener from an address not allowed.
pub struct SmdrConnectionRefused<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// The peer.
    pub peer: &'a str,
    /// Why.
    pub reason: &'static str,
}

impl SmdrConnectionRefused<'_> {
    /// Logs (rate-limited) and counts.
    pub fn emit(&self) {
        if let Some(suppressed) = REFUSED.allow_now() {
            warn!(
                pbx = self.pbx,
                peer = self.peer,
                reason = self.reason,
                suppressed,
                "Refused an SMDR connection (smdr.allowed_sources)."
            );
        }
        counter!("pbx_listener_smdr_connections_refused_total", "pbx" => self.pbx.to_owned(), "reason" => self.reason)
            .increment(1);
    }
}

/// Lines were received.
pub struct R9LinesReceived<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// `smdr` or `delta2`.
    pub feed: &'static str,
    /// How many.
    pub count: u64,
}

impl R9LinesReceived<'_> {
    /// Counts.
    pub fn emit(&self) {
        counter!("pbx_listener_r9_lines_received_total", "pbx" => self.pbx.to_owned(), "feed" => self.feed)
            .increment(self.count);
    }
}

static TOO_LONG: LogGate = LogGate::per_second();

/// A line longer than the limit was skipped.
pub struct R9LineTooLong<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// `smdr` or `delta2`.
    pub feed: &'static str,
    /// Its length.
    pub bytes: usize,
    /// The limit.
    pub max: usize,
}

impl R9LineTooLong<'_> {
    /// Logs (rate-limited) and counts.
    pub fn emit(&self) {
        if let Some(suppressed) = TOO_LONG.allow_now() {
            warn!(
                pbx = self.pbx,
                feed = self.feed,
                bytes = self.bytes,
                max = self.max,
                suppressed,
                "Skipped a line longer than max_line_bytes."
            );
        }
        counter!("pbx_listener_r9_lines_too_long_total", "pbx" => self.pbx.to_owned(), "feed" => self.feed)
            .increment(1);
    }
}

static MALFORMED: LogGate = LogGate::per_second();

/// A record that cannot be read was skipped.
pub struct R9RecordMalformed<'a> {
    /// PBX name.
    pub pbx: &'a str,
    /// `smdr` or `delta2`.
    pub feed: &'static str,
    /// A bounded label (the field, or the error kind).
    pub kind: &'static str,
    /// Why.
    pub reason: &'a str,
    /// The raw line (logged at debug only).
    pub raw: &'a str,
}

impl R9RecordMalformed<'_> {
    /// Logs (rate-limited; the raw line at debug) and counts.
    pub fn emit(&self) {
        if let Some(suppressed) = MALFORMED.allow_now() {
            warn!(
                pbx = self.pbx,
                feed = self.feed,
                kind = self.kind,
                reason = self.reason,
                suppressed,
                "Skipped a record that cannot be read."
            );
        }
        debug!(pbx = self.pbx, feed = self.feed, raw = self.raw, "Unreadable record.");
        counter!(
            "pbx_listener_r9_records_malformed_total",
            "pbx" => self.pbx.to_owned(), "feed" => self.feed, "kind" => self.kind
        )
        .increment(1);
    }
}

/// A replayed SMDR record (or segment) was dropped.
pub struct SmdrRecordDuplicate<'a> {
    /// PBX name.
    pub pbx: &'a str,
}

impl SmdrRecordDuplicate<'_> {
    /// Counts (replays after an outage are normal: no log line).
    pub fn emit(&self) {
        counter!("pbx_listener_smdr_records_duplicate_total", "pbx" => self.pbx.to_owned()).increment(1);
    }
}
