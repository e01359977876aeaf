//! Internal events of the forwarder: each `emit` logs and counts together (STYLE.md §9).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};

/// Repeated warnings are logged at most once per this interval, with the count suppressed.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The first occurrence is always logged, then at most one per interval.
pub(crate) struct LogLimiter(Mutex<(Option<Instant>, u64)>);

impl LogLimiter {
    pub(crate) const fn new() -> LogLimiter {
        LogLimiter(Mutex::new((None, 0)))
    }

    /// `Some(suppressed since the last log)` when this one should be logged.
    pub(crate) fn allow(&self) -> Option<u64> {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < LOG_INTERVAL => {
                state.1 += 1;
                None
            }
            _ => {
                let suppressed = state.1;
                *state = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

static RETRY_LOG: LogLimiter = LogLimiter::new();
static REJECT_LOG: LogLimiter = LogLimiter::new();

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
        if let Some(suppressed) = RETRY_LOG.allow() {
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
        if let Some(suppressed) = REJECT_LOG.allow() {
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
