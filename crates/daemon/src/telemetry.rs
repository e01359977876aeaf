//! The metrics catalogue: every metric any crate of the daemon emits, with its type and help
//! text (Prometheus linters, `promtool check metrics` among them, want `# HELP`), the latency
//! histogram's buckets, and `pbx_listener_build_info`.
//!
//! The components emit through the `metrics` facade without describing anything; the daemon
//! describes them all here, once, when it installs the recorder. A test checks that every
//! `counter!`/`gauge!`/`histogram!` name in the workspace's sources is listed, with its kind.

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use listener_core::MetricKind::{self as Kind, Counter, Gauge, Histogram};

/// Every metric of the daemon and the crates it shares with every PBX type: name, kind, help
/// (labels in the help where there are any). Each PBX type lists its own
/// ([`listener_core::PbxKind::metrics`]); [`all`] is both.
pub const CATALOGUE: &[(&str, Kind, &str)] = &[
    // The daemon.
    ("pbx_listener_build_info", Gauge, "Always 1; the version label says which build runs."),
    ("pbx_listener_uptime_seconds", Gauge, "Seconds since the daemon started."),
    (
        "pbx_listener_config_reloads_total",
        Counter,
        "Configuration reloads (SIGHUP), by result: ok, invalid, needs-restart, partial.",
    ),
    ("pbx_listener_pbx_link_up", Gauge, "1 while the link to the PBX (label pbx) is up and subscribed, else 0."),
    ("pbx_listener_pbx_reconnects_total", Counter, "Times the link to a PBX (label pbx) came back up after failing."),
    ("pbx_listener_signals_received_total", Counter, "PBX signals received from the adapters, by pbx."),
    (
        "pbx_listener_signals_dropped_total",
        Counter,
        "PBX signals dropped by correlation.unmatched = \"drop\", by reason.",
    ),
    ("pbx_listener_events_total", Counter, "Level 3 events committed to the outbox, by pbx and status."),
    ("pbx_listener_lifecycle_state_discarded_total", Counter, "Unreadable persisted call states dropped at start."),
    ("pbx_listener_admin_tail_clients", Gauge, "Clients of /events/tail connected now."),
    (
        "pbx_listener_admin_tail_lagged_events_total",
        Counter,
        "Events tail clients missed because they read too slowly (the pipeline never waits for them).",
    ),
    // Correlation.
    ("pbx_listener_correlation_matched_calls_total", Counter, "PBX calls bound to a platform leg, by method."),
    (
        "pbx_listener_correlation_unmatched_calls_total",
        Counter,
        "PBX calls no platform leg matched (correlation none).",
    ),
    ("pbx_listener_correlation_ambiguous_calls_total", Counter, "PBX calls several legs fitted, forwarded unbound."),
    ("pbx_listener_correlation_late_legs_total", Counter, "Legs that arrived after their call was released unbound."),
    ("pbx_listener_correlation_expired_legs_total", Counter, "Legs that expired without a PBX call."),
    (
        "pbx_listener_correlation_stale_leg_updates_total",
        Counter,
        "Leg updates ignored because the leg had already ended (a replayed or late announcement).",
    ),
    (
        "pbx_listener_correlation_no_leg_expected_calls_total",
        Counter,
        "PBX calls decided at once without a leg because none could come (internal calls, no leg source).",
    ),
    ("pbx_listener_correlation_learned_legs_total", Counter, "Legs learned from announcements and the SIP tap."),
    ("pbx_listener_correlation_legs", Gauge, "Legs known now."),
    ("pbx_listener_correlation_waiting_calls", Gauge, "PBX calls waiting for their leg now."),
    // Outbox.
    (
        "pbx_listener_pipeline_held_batches_total",
        Counter,
        "Batches the pipeline held back because a healthy delivery fell behind (backpressure to the PBX links).",
    ),
    ("pbx_listener_outbox_commits_total", Counter, "Outbox transactions committed (group commits)."),
    ("pbx_listener_outbox_appended_events_total", Counter, "Events accepted into the outbox."),
    ("pbx_listener_outbox_removed_events_total", Counter, "Events removed from the outbox, by reason."),
    ("pbx_listener_outbox_duplicate_events_total", Counter, "Appends of an event id already stored (ignored)."),
    ("pbx_listener_outbox_dropped_events_total", Counter, "Events dropped at the outbox cap, by the when_full policy."),
    ("pbx_listener_outbox_corrupt_events_total", Counter, "Unreadable outbox rows moved to the quarantine."),
    ("pbx_listener_outbox_commit_errors_total", Counter, "Outbox commits that failed."),
    (
        "pbx_listener_outbox_disk_full",
        Gauge,
        "1 while the outbox's filesystem is full and no event is accepted; 0 otherwise.",
    ),
    ("pbx_listener_outbox_disk_full_total", Counter, "Outbox commits refused because the filesystem was full."),
    ("pbx_listener_outbox_pending_events", Gauge, "Events waiting for delivery."),
    ("pbx_listener_outbox_pending_bytes", Gauge, "Bytes of the events waiting for delivery."),
    (
        "pbx_listener_outbox_quarantined_events",
        Gauge,
        "Events in the quarantine (rejected by the platform or corrupt).",
    ),
    (
        "pbx_listener_outbox_oldest_pending_age_seconds",
        Gauge,
        "Age of the oldest event waiting for delivery (0 when none wait).",
    ),
    // Delivery.
    (
        "pbx_listener_forwarder_requests_total",
        Counter,
        "Delivery attempts, by outcome (delivered, retry, quarantined, gone) and status_class.",
    ),
    ("pbx_listener_forwarder_delivered_events_total", Counter, "Events the platform acknowledged (2xx)."),
    ("pbx_listener_forwarder_quarantined_events_total", Counter, "Events the platform rejected (4xx), quarantined."),
    (
        "pbx_listener_forwarder_delivery_latency_seconds",
        Histogram,
        "From an event's commit to the outbox to the platform's 2xx.",
    ),
    (
        "pbx_listener_forwarder_last_success_timestamp_seconds",
        Gauge,
        "Unix time of the last event the platform acknowledged.",
    ),
    ("pbx_listener_forwarder_endpoint_gone", Gauge, "1 after the platform answered 410 Gone (delivery stopped)."),
    ("pbx_listener_forwarder_backing_off", Gauge, "1 while delivery pauses after a failure, else 0."),
    // Leg sources.
    ("pbx_listener_leg_announce_requests_total", Counter, "Leg announcement requests, by result."),
    ("pbx_listener_leg_announce_legs_total", Counter, "Legs received in accepted announcements."),
    (
        "pbx_listener_leg_announce_connections_refused_total",
        Counter,
        "Connections to the leg endpoint refused at once, by reason (per-source: the source holds its maximum).",
    ),
    (
        "pbx_listener_leg_announce_connections_closed_total",
        Counter,
        "Connections to the leg endpoint closed by a deadline, by reason (header-timeout, body-timeout, idle-timeout).",
    ),
    (
        "pbx_listener_leg_announce_replay_ids_evicted_total",
        Counter,
        "Remembered webhook-ids forgotten early because legs.max_remembered_ids was reached.",
    ),
    ("pbx_listener_sip_tap_packets_total", Counter, "Packets received by the SIP tap, by transport."),
    ("pbx_listener_sip_tap_rejected_packets_total", Counter, "SIP tap packets rejected, by transport and reason."),
    (
        "pbx_listener_sip_tap_malformed_messages_total",
        Counter,
        "SIP messages that could not be read, by transport and reason.",
    ),
    ("pbx_listener_sip_tap_messages_total", Counter, "SIP messages read by the tap, by transport."),
    ("pbx_listener_sip_tap_leg_updates_total", Counter, "Leg updates the SIP tap produced, by update."),
    (
        "pbx_listener_sip_tap_tcp_streams_closed_total",
        Counter,
        "HEP/TCP connections closed by the tap, by reason (garbage: framing lost; idle: no complete packet in time).",
    ),
    (
        "pbx_listener_sip_tap_tcp_connections_refused_total",
        Counter,
        "HEP/TCP connections refused at once, by reason (per-source: the source holds its maximum).",
    ),
    (
        "pbx_listener_sip_tap_tcp_accept_errors_total",
        Counter,
        "Errors accepting HEP/TCP connections (e.g. out of file descriptors).",
    ),
];

/// Buckets of `pbx_listener_forwarder_delivery_latency_seconds`: milliseconds on a healthy
/// path, up to an hour during an outage.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// The recorder builder, with the histogram's buckets (without buckets it would be a summary).
pub fn builder() -> anyhow::Result<PrometheusBuilder> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("pbx_listener_forwarder_delivery_latency_seconds".into()),
            LATENCY_BUCKETS,
        )
        .context("setting the delivery latency buckets")
}

/// Every metric: the [`CATALOGUE`] and each PBX type's.
pub fn all() -> Vec<(&'static str, Kind, &'static str)> {
    let kinds = crate::pbx_types::PBX_TYPES.iter().flat_map(|k| k.metrics()).map(|m| (m.name, m.kind, m.help));
    CATALOGUE.iter().copied().chain(kinds).collect()
}

/// Describes every metric and sets `pbx_listener_build_info`.
pub fn describe() {
    for (name, kind, help) in all() {
        match kind {
            Counter => metrics::describe_counter!(name, help),
            Gauge => metrics::describe_gauge!(name, help),
            Histogram => metrics::describe_histogram!(name, help),
        }
    }
    metrics::gauge!("pbx_listener_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Every literal metric name in the workspace's sources, with the macro's kind.
    fn emitted() -> Vec<(String, Kind, String)> {
        let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut found = vec![];
        let mut stack = vec![crates];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if path.is_dir() {
                    if name != "target" && name != "fuzz" {
                        stack.push(path);
                    }
                } else if name.ends_with(".rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for (macro_name, kind) in [("counter!(", Counter), ("gauge!(", Gauge), ("histogram!(", Histogram)] {
                        for (i, _) in text.match_indices(macro_name) {
                            let rest = text[i + macro_name.len()..].trim_start();
                            if let Some(rest) = rest.strip_prefix('"') {
                                let metric = rest.split('"').next().unwrap().to_owned();
                                if metric.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
                                    found.push((metric, kind, path.display().to_string()));
                                }
                            }
                        }
                    }
                }
            }
        }
        found
    }

    #[test]
    fn every_emitted_metric_is_described_with_its_kind() {
        let emitted = emitted();
        assert!(emitted.len() > 40, "the scan found too little: {emitted:?}");
        let all = all();
        for (name, kind, file) in &emitted {
            let entry = all.iter().find(|(n, _, _)| n == name);
            assert!(
                entry.is_some(),
                "{name} ({file}) is described neither in telemetry::CATALOGUE nor by its PbxKind::metrics"
            );
            assert_eq!(entry.unwrap().1, *kind, "{name} ({file}) has another kind in the catalogue");
        }
        for (name, kind, _) in &all {
            assert!(name.starts_with("pbx_listener_"), "{name}");
            assert_eq!(name.ends_with("_total"), *kind == Counter, "{name}: counters and only counters end in _total");
            if *name != "pbx_listener_build_info" && *name != "pbx_listener_uptime_seconds" {
                assert!(emitted.iter().any(|(n, _, _)| n == name), "{name} is catalogued but never emitted");
            }
        }
    }
}
