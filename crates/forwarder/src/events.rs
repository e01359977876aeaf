//! Internal events of the forwarder: each `emit` logs and counts together (STYLE.md §9).

use std::time::Duration;

use listener_kit::LogGate;

use metrics::{counter, gauge, histogram};

/// Repeated warnings: the first is logged, then at most one per 10 s, with the count suppressed.
static RETRY_LOG: LogGate = LogGate::every(10_000);
static REJECT_LOG: LogGate = LogGate::every(10_000);

/// The bounded `status_class` label.
pub(crate) fn status_class(status: Option<u16>) -> &'static str {
    match status {
        None => "network",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
    }
}

/// An event reached the platform.
pub(crate) struct EventDelivered {
    pub latency: Duration,
    pub now_secs: f64,
}

impl EventDelivered {
    pub(crate) fn emit(&self) {
        counter!("pbx_listener_forwarder_requests_total", "outcome" => "delivered", "status_class" => "2xx")
            .increment(1);
        counter!("pbx_listener_forwarder_delivered_events_total").increment(1);
        histogram!("pbx_listener_forwarder_delivery_latency_seconds").record(self.latency.as_secs_f64());
        gauge!("pbx_listener_forwarder_last_success_timestamp_seconds").set(self.now_secs);
    }
}

/// An attempt failed in a retryable way.
pub(crate) struct DeliveryRetrying<'a> {
    pub event_id: &'a str,
    pub status: Option<u16>,
    pub error: &'a str,
    pub attempts: u32,
    pub retry_in: Duration,
}

impl DeliveryRetrying<'_> {
    pub(crate) fn emit(&self) {
        counter!("pbx_listener_forwarder_requests_total", "outcome" => "retry", "status_class" => status_class(self.status))
            .increment(1);
        if let Some(suppressed) = RETRY_LOG.allow_now() {
            tracing::warn!(
                event_id = self.event_id,
                status = self.status,
                error = self.error,
                attempts = self.attempts,
                retry_in_ms = self.retry_in.as_millis() as u64,
                suppressed,
                "Delivery to the platform failed; pausing delivery and retrying"
            );
        }
    }
}

/// The platform refused an event (4xx): it went to the quarantine.
pub(crate) struct EventQuarantined<'a> {
    pub event_id: &'a str,
    pub status: u16,
    pub excerpt: &'a str,
}

impl EventQuarantined<'_> {
    pub(crate) fn emit(&self) {
        counter!("pbx_listener_forwarder_requests_total", "outcome" => "quarantined", "status_class" => "4xx")
            .increment(1);
        counter!("pbx_listener_forwarder_quarantined_events_total").increment(1);
        if let Some(suppressed) = REJECT_LOG.allow_now() {
            tracing::error!(
                event_id = self.event_id,
                status = self.status,
                response = self.excerpt,
                suppressed,
                "The platform rejected an event; moved it to the outbox quarantine (see `pbx-listener outbox list`)"
            );
        }
    }
}

/// 410 Gone: delivery stopped.
pub(crate) struct EndpointGone<'a> {
    pub url: &'a str,
    pub event_id: &'a str,
}

impl EndpointGone<'_> {
    pub(crate) fn emit(&self) {
        counter!("pbx_listener_forwarder_requests_total", "outcome" => "gone", "status_class" => "4xx").increment(1);
        gauge!("pbx_listener_forwarder_endpoint_gone").set(1.0);
        tracing::error!(
            url = self.url,
            event_id = self.event_id,
            "The platform answered 410 Gone: the endpoint is disabled. Delivery is STOPPED; events stay in the \
             outbox. Fix the platform endpoint and restart pbx-listener"
        );
    }
}

/// An outage ended.
pub(crate) struct DeliveryRecovered {
    pub after: Duration,
    pub attempts: u64,
}

impl DeliveryRecovered {
    pub(crate) fn emit(&self) {
        gauge!("pbx_listener_forwarder_backing_off").set(0.0);
        tracing::info!(
            after_secs = self.after.as_secs(),
            attempts = self.attempts,
            "Delivery recovered after {} s, {} attempts",
            self.after.as_secs(),
            self.attempts
        );
    }
}

/// Delivery paused (gauge only; the failure itself is logged by [`DeliveryRetrying`]).
pub(crate) fn backing_off() {
    gauge!("pbx_listener_forwarder_backing_off").set(1.0);
}
