//! Internal events of the SIP tap: each logs (rate-limited where it is per message) and counts
//! together. Metrics are `pbx_listener_sip_tap_*_total` with small, fixed label sets.

use listener_core::UnixMillis;
use metrics::counter;

/// Lets one warning through per interval and counts what it held back.
#[derive(Debug, Clone)]
pub struct LogLimiter {
    interval_ms: u64,
    last: Option<UnixMillis>,
    suppressed: u64,
}

impl LogLimiter {
    /// One warning per `interval_ms`.
    pub fn new(interval_ms: u64) -> LogLimiter {
        LogLimiter { interval_ms, last: None, suppressed: 0 }
    }

    /// `Some(n)` when a warning may be logged now (`n` were held back since the last one).
    pub fn allow(&mut self, now: UnixMillis) -> Option<u64> {
        match self.last {
            Some(last) if now.since(last) < self.interval_ms => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Where a packet came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HEPv3 over UDP.
    HepUdp,
    /// HEPv3 over TCP.
    HepTcp,
    /// Raw SIP over UDP.
    SipUdp,
}

impl Transport {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::HepUdp => "hep-udp",
            Transport::HepTcp => "hep-tcp",
            Transport::SipUdp => "sip-udp",
        }
    }
}

/// `SipTapPacketsReceived`: one HEP packet or raw SIP datagram arrived.
pub(crate) fn packet_received(transport: Transport) {
    counter!("pbx_listener_sip_tap_packets_total", "transport" => transport.as_str()).increment(1);
}

/// `SipTapPacketRejected`: a HEP packet was refused (malformed, wrong key, not SIP).
pub(crate) fn packet_rejected(
    limiter: &mut LogLimiter,
    now: UnixMillis,
    transport: Transport,
    reason: &'static str,
    detail: &dyn std::fmt::Display,
) {
    counter!("pbx_listener_sip_tap_rejected_packets_total", "transport" => transport.as_str(), "reason" => reason)
        .increment(1);
    if let Some(suppressed) = limiter.allow(now) {
        tracing::warn!(transport = transport.as_str(), reason, %detail, suppressed, "SIP tap rejected a packet.");
    }
}

/// `SipTapMessageMalformed`: a SIP message could not be read.
pub(crate) fn message_malformed(
    limiter: &mut LogLimiter,
    now: UnixMillis,
    transport: Transport,
    reason: &'static str,
    detail: &dyn std::fmt::Display,
) {
    counter!("pbx_listener_sip_tap_malformed_messages_total", "transport" => transport.as_str(), "reason" => reason)
        .increment(1);
    if let Some(suppressed) = limiter.allow(now) {
        tracing::warn!(transport = transport.as_str(), reason, %detail, suppressed, "SIP tap could not read a SIP message.");
    }
}

/// `SipTapMessagesRead`: a SIP message was read.
pub(crate) fn message_read(transport: Transport) {
    counter!("pbx_listener_sip_tap_messages_total", "transport" => transport.as_str()).increment(1);
}

/// `SipTapLegUpdated`: a leg update left the tap.
pub(crate) fn leg_update(kind: &'static str) {
    counter!("pbx_listener_sip_tap_leg_updates_total", "update" => kind).increment(1);
}
