//! [`TapCore`]: the sans-IO SIP tap — HEP packets and raw SIP datagrams in, [`LegUpdate`]s out.

use std::collections::VecDeque;

use correlation::LegUpdate;
use listener_core::UnixMillis;

use listener_kit::LogGate;

use crate::events::{self, Transport};
use crate::hep::{self, PROTO_TYPE_SIP};
use crate::learner::{LearnerConfig, LegLearner};
use crate::sip::{self, SipMessage};

/// IP protocol number of TCP: a HEP payload captured from TCP may hold several SIP messages.
const IPPROTO_TCP: u8 = 6;

/// Counters of what the tap saw (also exported as metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TapStats {
    /// HEP packets and raw SIP datagrams received.
    pub packets: u64,
    /// HEP packets refused: malformed.
    pub hep_malformed: u64,
    /// HEP packets refused: missing or wrong authentication key.
    pub hep_unauthorized: u64,
    /// HEP packets ignored: not SIP, no payload, or a compressed payload.
    pub hep_not_sip: u64,
    /// SIP messages read.
    pub sip_messages: u64,
    /// SIP messages that could not be read.
    pub sip_malformed: u64,
    /// Leg updates produced.
    pub leg_updates: u64,
    /// Legs learned without a callSid (no `call_sid_header` on the INVITE): they cannot be
    /// bound until a response or an announcement brings the sids. Also in `leg_updates`.
    pub legs_without_sid: u64,
    /// HEP-over-TCP streams closed because their framing was lost (garbage on the stream).
    pub tcp_streams_lost: u64,
}

/// The tap's settings that are not about sockets.
#[derive(Debug, Clone)]
pub struct TapSettings {
    /// What the leg learner reads and how long it remembers.
    pub learner: LearnerConfig,
    /// The HEP authentication key every packet must carry, when set.
    pub hep_auth_key: Option<Vec<u8>>,
    /// The largest SIP message read.
    pub max_message_bytes: usize,
}

/// See the module documentation.
#[derive(Debug)]
pub struct TapCore {
    learner: LegLearner,
    auth_key: Option<Vec<u8>>,
    max_message_bytes: usize,
    out: VecDeque<LegUpdate>,
    stats: TapStats,
    hep_log: LogGate,
    sip_log: LogGate,
    sid_log: LogGate,
    call_sid_header: String,
}

impl TapCore {
    /// A tap core.
    pub fn new(settings: TapSettings) -> TapCore {
        TapCore {
            call_sid_header: settings.learner.call_sid_header.clone(),
            learner: LegLearner::new(settings.learner),
            auth_key: settings.hep_auth_key,
            max_message_bytes: settings.max_message_bytes,
            out: VecDeque::new(),
            stats: TapStats::default(),
            hep_log: LogGate::every(10_000),
            sip_log: LogGate::every(10_000),
            sid_log: LogGate::every(10_000),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &TapStats {
        &self.stats
    }

    /// How many Call-IDs the learner remembers.
    pub fn dialogs(&self) -> usize {
        self.learner.dialogs()
    }

    /// When [`TapCore::handle_timeout`] should be called next: the learner's memory of
    /// Call-IDs falls on this timer, not only when the next message comes.
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        self.learner.poll_timeout()
    }

    /// Forgets what is due at `now`.
    pub fn handle_timeout(&mut self, now: UnixMillis) {
        self.learner.handle_timeout(now);
    }

    /// A HEP-over-TCP stream was closed because its framing was lost (garbage on it): counted
    /// and logged (rate-limited).
    pub fn handle_stream_lost(&mut self, now: UnixMillis, transport: Transport, error: &dyn std::fmt::Display) {
        self.stats.tcp_streams_lost += 1;
        events::stream_lost(&self.hep_log, now, transport, error);
    }

    /// The next leg update.
    pub fn poll_update(&mut self) -> Option<LegUpdate> {
        self.out.pop_front()
    }

    /// One whole HEPv3 packet (a UDP datagram, or a frame cut by [`hep::frame_len`]).
    pub fn handle_hep(&mut self, now: UnixMillis, transport: Transport, packet: &[u8]) {
        self.stats.packets += 1;
        events::packet_received(transport);
        let p = match hep::decode(packet) {
            Ok(p) => p,
            Err(e) => {
                self.stats.hep_malformed += 1;
                events::packet_rejected(&self.hep_log, now, transport, e.kind(), &e);
                return;
            }
        };
        if let Some(key) = &self.auth_key
            && !p.has_auth_key(key)
        {
            self.stats.hep_unauthorized += 1;
            events::packet_rejected(&self.hep_log, now, transport, "auth", &"missing or wrong HEP auth key");
            return;
        }
        let payload = match (p.proto_type, p.payload) {
            (Some(PROTO_TYPE_SIP) | None, Some(payload)) => payload,
            _ => {
                // RTCP, logs, QoS reports, compressed payloads: not ours to read.
                self.stats.hep_not_sip += 1;
                return;
            }
        };
        let captured_at = p.captured_at_ms().map(UnixMillis);
        if p.ip_proto == Some(IPPROTO_TCP) {
            self.read_stream_payload(now, transport, captured_at, payload);
        } else {
            self.read_datagram(now, transport, captured_at, payload);
        }
    }

    /// One raw SIP datagram.
    pub fn handle_sip_datagram(&mut self, now: UnixMillis, datagram: &[u8]) {
        self.stats.packets += 1;
        events::packet_received(Transport::SipUdp);
        if sip::keepalive_len(datagram) == datagram.len() {
            // A keep-alive (RFC 5626 CRLF ping), not a message.
            return;
        }
        self.read_datagram(now, Transport::SipUdp, None, datagram);
    }

    fn read_datagram(&mut self, now: UnixMillis, transport: Transport, captured_at: Option<UnixMillis>, bytes: &[u8]) {
        match sip::parse_datagram(bytes, self.max_message_bytes) {
            Ok(msg) => self.learn(now, transport, captured_at, &msg),
            Err(e) => self.malformed(now, transport, &e),
        }
    }

    fn read_stream_payload(
        &mut self,
        now: UnixMillis,
        transport: Transport,
        captured_at: Option<UnixMillis>,
        bytes: &[u8],
    ) {
        let mut rest = bytes;
        // A captured TCP segment holds whole messages (agents reassemble); read every one.
        while sip::keepalive_len(rest) < rest.len() {
            match sip::parse_stream(rest, self.max_message_bytes) {
                Ok(Some(msg)) => {
                    let consumed = msg.consumed;
                    self.learn(now, transport, captured_at, &msg);
                    rest = &rest[consumed..];
                }
                Ok(None) => {
                    self.malformed(now, transport, &sip::SipError::NoHeaderEnd);
                    return;
                }
                Err(e) => {
                    self.malformed(now, transport, &e);
                    return;
                }
            }
        }
    }

    fn malformed(&mut self, now: UnixMillis, transport: Transport, e: &sip::SipError) {
        self.stats.sip_malformed += 1;
        events::message_malformed(&self.sip_log, now, transport, e.kind(), e);
    }

    fn learn(&mut self, now: UnixMillis, transport: Transport, captured_at: Option<UnixMillis>, msg: &SipMessage<'_>) {
        self.stats.sip_messages += 1;
        events::message_read(transport);
        if let Some(update) = self.learner.learn(now, captured_at, msg) {
            self.stats.leg_updates += 1;
            events::leg_update(match &update {
                LegUpdate::Learned(f) if f.call_sid.is_none() => "learned-without-sid",
                LegUpdate::Learned(_) => "learned",
                LegUpdate::Updated(_) => "updated",
                LegUpdate::Ended(_) => "ended",
            });
            if let LegUpdate::Learned(f) = &update
                && f.call_sid.is_none()
            {
                // Learned, but no PBX call can bind to it without its sids: say so, or a
                // missing header looks like a working tap.
                self.stats.legs_without_sid += 1;
                events::leg_without_sid(&self.sid_log, now, msg.call_id(), &self.call_sid_header);
            }
            // The URIs as written (escapes kept): the update has the numbers read out of them.
            tracing::debug!(
                call_id = msg.call_id(),
                from_uri = msg.from().ok().map(|f| f.uri).as_deref(),
                to_uri = msg.to().ok().map(|t| t.uri).as_deref(),
                ?update,
                "SIP tap learned about a leg."
            );
            self.out.push_back(update);
        }
    }
}
