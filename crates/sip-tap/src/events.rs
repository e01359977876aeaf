//! Internal events of the SIP tap: each logs (rate-limited where it is per message) and counts
//! together. Metrics are `pbx_listener_sip_tap_*_total` with small, fixed label sets.

use listener_core::UnixMillis;
use listener_kit::LogGate;
use metrics::counter;

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
    limiter: &LogGate,
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
    limiter: &LogGate,
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

/// `SipTapLegWithoutSid`: a leg was learned without a callSid; it cannot be bound until a
/// response or an announcement brings the sids.
pub(crate) fn leg_without_sid(limiter: &LogGate, now: UnixMillis, call_id: &str, header: &str) {
    // Counted with the leg updates (`update = "learned-without-sid"`).
    if let Some(suppressed) = limiter.allow(now) {
        tracing::warn!(
            call_id,
            header,
            suppressed,
            "SIP tap learned a leg without a callSid: no PBX call can bind to it until its sids arrive. \
             Check that the platform sends the sids in this header (sip_tap.call_sid_header)."
        );
    }
}

/// `SipTapTcpStreamLost`: garbage on a HEP-over-TCP stream; the connection was closed.
pub(crate) fn stream_lost(limiter: &LogGate, now: UnixMillis, transport: Transport, detail: &dyn std::fmt::Display) {
    counter!("pbx_listener_sip_tap_tcp_streams_closed_total", "reason" => "garbage").increment(1);
    if let Some(suppressed) = limiter.allow(now) {
        tracing::warn!(
            transport = transport.as_str(),
            %detail,
            suppressed,
            "SIP tap closed a HEP stream: not HEP framing (is the sender speaking HEPv3?)."
        );
    }
}

/// `SipTapTcpConnectionIdle`: a HEP-over-TCP connection delivered no packet within
/// `tcp_idle_timeout_secs` and was closed (normal for an idle agent; it reconnects).
pub(crate) fn connection_idle(peer: std::net::SocketAddr) {
    counter!("pbx_listener_sip_tap_tcp_streams_closed_total", "reason" => "idle").increment(1);
    tracing::debug!(%peer, "HEP TCP connection closed: no packet within sip_tap.tcp_idle_timeout_secs.");
}

/// `SipTapTcpConnectionRefused`: a source already holds `max_tcp_connections_per_source`
/// connections; one more was closed at once.
pub(crate) fn connection_refused(limiter: &LogGate, now: UnixMillis, peer: std::net::SocketAddr, max: usize) {
    counter!("pbx_listener_sip_tap_tcp_connections_refused_total", "reason" => "per-source").increment(1);
    if let Some(suppressed) = limiter.allow(now) {
        tracing::warn!(
            %peer,
            max,
            suppressed,
            "HEP TCP connection refused: its source holds sip_tap.max_tcp_connections_per_source connections."
        );
    }
}

/// `SipTapTcpAcceptError`: accepting a HEP-over-TCP connection failed (out of file
/// descriptors, a reset before accept); the listener goes on.
pub(crate) fn accept_failed(limiter: &LogGate, now: UnixMillis, error: &std::io::Error) {
    counter!("pbx_listener_sip_tap_tcp_accept_errors_total").increment(1);
    if let Some(suppressed) = limiter.allow(now) {
        tracing::warn!(%error, suppressed, "SIP tap cannot accept a HEP TCP connection.");
    }
}
