//! The DevLink3 link, sans-IO: when to connect, Test → authenticate → subscribe, keepalives,
//! the dead-link timer, the reconnect backoff (a long one after the PBX refused us), and every
//! received packet through tuple → record ([`crate::delta3`], SIPTrack, CMExtn) → [`Tracker`],
//! in one place.
//!
//! [`DevLink3Link`] owns no socket, task, clock or RNG (str0m style): the driver
//! ([`crate::client`]) feeds it what happened — `handle_connected`, `handle_incoming`,
//! `handle_failed`, `handle_timeout`, each with the time and, where a delay may be drawn, a
//! random `unit` in `[0, 1)` — and carries out what [`DevLink3Link::poll_output`] says: open a
//! connection, send a packet, close it, or pass an event to the pipeline. It sleeps until
//! [`DevLink3Link::poll_timeout`].
//!
//! ```
//! use adapter_avaya_r11::session::{DevLink3Link, LinkOutput};
//! use adapter_avaya_r11::{Config, PBX_TYPE};
//! use listener_core::{PbxId, UnixMillis};
//! # let dir = std::env::temp_dir().join(format!("session-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! # let password = dir.join("pw");
//! # std::fs::write(&password, "secret").unwrap();
//! let settings = Config::new("192.0.2.10", "devlink", password).load().unwrap();
//! let mut link = DevLink3Link::new(PbxId::new("hq", PBX_TYPE), &settings, 1);
//! let now = UnixMillis(1_000);
//! link.handle_timeout(now, 0.5);
//! assert!(std::iter::from_fn(|| link.poll_output()).any(|o| matches!(o, LinkOutput::Connect)));
//! link.handle_connected(now);
//! assert!(matches!(link.poll_output(), Some(LinkOutput::Send(_))), "a Test packet first");
//! ```

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use listener_core::{AdapterEvent, LinkState, PbxId, Secret, UnixMillis};
use listener_kit::Backoff;

use crate::codec::{CodecError, Incoming};
use crate::config::LoadedConfig;
use crate::delta3;
use crate::events::{
    DevLinkAuthError, DevLinkConnecting, DevLinkFramesReceived, DevLinkGarbageSkipped, DevLinkKeepaliveTimeout,
    DevLinkLinkDown, DevLinkRecordMalformed, DevLinkRecordReceived, DevLinkResynced, DevLinkSubscribed,
};
use crate::packet::{
    Challenge, ChallengeResponse, EventTuple, Packet, ResultCode, SipTrack, plain_response, sha1_response,
};
use crate::tracker::{Output, Tracker, TrackerSettings};

/// What the driver must do.
// `Event` is by far the most common; boxing it would cost an allocation per signal.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOutput {
    /// Open the TCP (and TLS) connection now, then call [`DevLink3Link::handle_connected`] or
    /// [`DevLink3Link::handle_failed`].
    Connect,
    /// Write this packet.
    Send(Packet),
    /// Close the connection: the session is over (the reason is already logged and counted).
    Close,
    /// Hand this to the pipeline.
    Event(AdapterEvent),
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The TCP connection failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] io::Error),
    /// The PBX did not answer in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// Framing failed or the socket broke.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The PBX closed the connection.
    #[error("the PBX closed the connection")]
    Closed,
    /// The PBX answered a Test with an error (e.g. STREAM INTEGRITY LOST).
    #[error("the PBX answered the test with {0}")]
    Test(ResultCode),
    /// The PBX refused the authentication.
    #[error("authentication refused: {0}")]
    Auth(ResultCode),
    /// The PBX asked for a PLAIN password over an unencrypted connection.
    #[error("the PBX asked for the password in plain text over an unencrypted connection; refused")]
    PlainWithoutTls,
    /// The event request was refused.
    #[error("event request refused: {0}")]
    Subscribe(ResultCode),
    /// No data for longer than `dead_link_secs`.
    #[error("no data from the PBX for {0} s")]
    DeadLink(u64),
    /// A packet that does not belong in the handshake.
    #[error("unexpected {got} while waiting for {waiting}")]
    Unexpected {
        /// What came.
        got: &'static str,
        /// What we waited for.
        waiting: &'static str,
    },
}

impl SessionError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SessionError::Connect { .. } => "connect",
            SessionError::Tls(_) => "tls",
            SessionError::Timeout(_) => "timeout",
            SessionError::Codec(_) => "codec",
            SessionError::Closed => "closed",
            SessionError::Test(_) => "test",
            SessionError::Auth(_) => "auth",
            SessionError::PlainWithoutTls => "plain-without-tls",
            SessionError::Subscribe(_) => "subscribe",
            SessionError::DeadLink(_) => "dead-link",
            SessionError::Unexpected { .. } => "protocol",
        }
    }

    /// Whether this is the PBX refusing our credentials or licence: back off hard.
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self,
            SessionError::Auth(ResultCode::AUTHENTICATION_FAILED | ResultCode::LICENCE_MISSING)
                | SessionError::PlainWithoutTls
        )
    }
}

/// Where the link is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Not connected; the next attempt is at `reconnect_at`.
    Disconnected {
        /// When to connect again.
        reconnect_at: UnixMillis,
    },
    /// [`LinkOutput::Connect`] went out; waiting for the driver to say how it went.
    Connecting,
    /// Test sent; waiting for its answer until `deadline`.
    Testing {
        /// When waiting gives up.
        deadline: UnixMillis,
    },
    /// Authentication under way until `deadline`.
    Authenticating {
        /// When waiting gives up.
        deadline: UnixMillis,
    },
    /// Event request sent; waiting for its answer until `deadline`.
    Subscribing {
        /// When waiting gives up.
        deadline: UnixMillis,
    },
    /// Records flow.
    Subscribed {
        /// When the next keepalive Test goes out.
        next_keepalive: UnixMillis,
    },
}

/// The DevLink3 link of one IP Office, sans-IO. See the module documentation.
#[derive(Debug)]
pub struct DevLink3Link {
    pbx: PbxId,
    host: String,
    port: u16,
    username: String,
    password: Secret,
    /// The PBX type and version the last successful authentication reported.
    pbx_version: Option<String>,
    application_name: String,
    flags: String,
    tls: bool,
    keepalive_ms: u64,
    dead_link_ms: u64,
    handshake_ms: u64,
    auth_failure_wait: Duration,
    backoff: Backoff,
    phase: Phase,
    /// The public state last told to the pipeline.
    told: Option<LinkState>,
    tracker: Tracker,
    out: VecDeque<LinkOutput>,
    request_id: u32,
    /// When anything last arrived (for the dead-link timer).
    last_rx: UnixMillis,
    /// Frames received and not yet counted in the metric (counted in batches).
    frames: u64,
    /// Whether this session got as far as subscribed (a reconnect then starts from the first
    /// delay again).
    came_up: bool,
}

impl DevLink3Link {
    /// A link for `pbx` with `settings`, disconnected, due to connect at once. Request ids
    /// start after `first_request_id` (any non-zero value; the driver picks it at random so
    /// ids differ across restarts).
    pub fn new(pbx: PbxId, settings: &LoadedConfig, first_request_id: u32) -> DevLink3Link {
        let tracker_settings = TrackerSettings {
            resync_settle_ms: settings.resync_settle_ms,
            vanish_grace_ms: settings.vanish_grace_ms,
            ..TrackerSettings::default()
        };
        DevLink3Link {
            tracker: Tracker::new(pbx.clone(), tracker_settings),
            pbx,
            host: settings.host.clone(),
            port: settings.port,
            username: settings.username.clone(),
            password: settings.password.clone(),
            pbx_version: None,
            application_name: settings.application_name.clone(),
            flags: settings.flags.clone(),
            tls: settings.tls.is_some(),
            keepalive_ms: millis(settings.keepalive),
            dead_link_ms: millis(settings.dead_link),
            handshake_ms: millis(settings.connect_timeout),
            auth_failure_wait: settings.auth_failure_backoff,
            backoff: Backoff::new(settings.reconnect_min, settings.reconnect_max),
            phase: Phase::Disconnected { reconnect_at: UnixMillis(0) },
            told: None,
            out: VecDeque::new(),
            request_id: first_request_id.max(1),
            last_rx: UnixMillis(0),
            frames: 0,
            came_up: false,
        }
    }

    /// Where the link is.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The call tracker (for tests and counters).
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// The next thing to do; `None` when there is nothing until an input or
    /// [`DevLink3Link::poll_timeout`].
    pub fn poll_output(&mut self) -> Option<LinkOutput> {
        let next = self.out.pop_front();
        if next.is_none() && self.frames > 0 {
            DevLinkFramesReceived { pbx: &self.pbx.name, count: self.frames }.emit();
            self.frames = 0;
        }
        next
    }

    /// When [`DevLink3Link::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        let own = match self.phase {
            Phase::Disconnected { reconnect_at } => Some(reconnect_at),
            Phase::Connecting => None,
            Phase::Testing { deadline } | Phase::Authenticating { deadline } | Phase::Subscribing { deadline } => {
                Some(deadline)
            }
            Phase::Subscribed { next_keepalive } => Some(next_keepalive.min(self.dead_at())),
        };
        match (own, self.tracker.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time passed: connect when due, give up a handshake step, send a keepalive, declare a
    /// silent link dead, fire the tracker's timers.
    pub fn handle_timeout(&mut self, now: UnixMillis, unit: f64) {
        match self.phase {
            Phase::Disconnected { reconnect_at } if now >= reconnect_at => {
                DevLinkConnecting { pbx: &self.pbx.name, host: &self.host, port: self.port, tls: self.tls }.emit();
                self.phase = Phase::Connecting;
                self.tell(LinkState::Connecting, false);
                self.out.push_back(LinkOutput::Connect);
            }
            Phase::Testing { deadline } if now >= deadline => self.fail(now, SessionError::Timeout(TEST), unit),
            Phase::Authenticating { deadline } if now >= deadline => self.fail(now, SessionError::Timeout(AUTH), unit),
            Phase::Subscribing { deadline } if now >= deadline => {
                self.fail(now, SessionError::Timeout(SUBSCRIBE), unit)
            }
            Phase::Subscribed { .. } if now >= self.dead_at() => {
                let silent_secs = now.since(self.last_rx) / 1000;
                DevLinkKeepaliveTimeout { pbx: &self.pbx.name, silent_secs }.emit();
                self.fail(now, SessionError::DeadLink(silent_secs), unit);
            }
            Phase::Subscribed { next_keepalive } if now >= next_keepalive => {
                self.phase = Phase::Subscribed { next_keepalive: now.plus_ms(self.keepalive_ms) };
                let request_id = self.next_request_id();
                self.out.push_back(LinkOutput::Send(Packet::TestRequest { request_id, data: Bytes::new() }));
            }
            _ => {}
        }
        if self.tracker.poll_timeout().is_some_and(|t| t <= now) {
            self.tracker.handle_timeout(now);
            self.drain_tracker();
        }
    }

    /// The connection asked for by [`LinkOutput::Connect`] is open: the handshake starts with a
    /// Test (the PBX stays silent until the client speaks; its answer shows it speaks DevLink3).
    pub fn handle_connected(&mut self, now: UnixMillis) {
        if self.phase != Phase::Connecting {
            return;
        }
        self.last_rx = now;
        self.came_up = false;
        self.phase = Phase::Testing { deadline: now.plus_ms(self.handshake_ms) };
        let request_id = self.next_request_id();
        self.out.push_back(LinkOutput::Send(Packet::TestRequest { request_id, data: Bytes::new() }));
    }

    /// The connection failed, broke or was closed by the PBX (an IO error, a codec error,
    /// end of stream). Ends the session and schedules the next attempt.
    pub fn handle_failed(&mut self, now: UnixMillis, error: SessionError, unit: f64) {
        if matches!(self.phase, Phase::Disconnected { .. }) {
            return;
        }
        self.fail(now, error, unit);
    }

    /// One item read from the connection.
    pub fn handle_incoming(&mut self, now: UnixMillis, item: Incoming, unit: f64) {
        if matches!(self.phase, Phase::Disconnected { .. } | Phase::Connecting) {
            return;
        }
        self.last_rx = now;
        self.frames += 1;
        let packet = match item {
            Incoming::Packet(p) => p,
            Incoming::Malformed { reason } => {
                DevLinkRecordMalformed { pbx: &self.pbx.name, kind: "packet", reason: &reason.to_string() }.emit(now);
                return;
            }
            Incoming::Skipped { bytes, reason } => {
                DevLinkGarbageSkipped { pbx: &self.pbx.name, bytes, reason: &reason.to_string() }.emit(now);
                return;
            }
        };
        // A failed Test answer ends the session whatever the phase (STREAM INTEGRITY LOST).
        if let Packet::TestResponse { result, .. } = &packet
            && *result != ResultCode::SUCCESS
        {
            self.fail(now, SessionError::Test(*result), unit);
            return;
        }
        match self.phase.clone() {
            Phase::Testing { .. } => match packet {
                Packet::TestResponse { .. } => {
                    let request_id = self.next_request_id();
                    self.phase = Phase::Authenticating { deadline: now.plus_ms(self.handshake_ms) };
                    self.out.push_back(LinkOutput::Send(Packet::AuthRequest {
                        request_id,
                        username: self.username.clone(),
                        application_name: Some(self.application_name.clone()),
                    }));
                }
                other => self.handshake_stray(now, other, TEST, unit),
            },
            Phase::Authenticating { .. } => match packet {
                Packet::AuthChallenge { challenge: Challenge::Sha1(c), .. } => {
                    let digest = sha1_response(&c, self.password.expose());
                    let request_id = self.next_request_id();
                    self.out.push_back(LinkOutput::Send(Packet::AuthResponse {
                        request_id,
                        response: ChallengeResponse::Sha1(digest),
                    }));
                }
                Packet::AuthChallenge { challenge: Challenge::Plain, .. } if !self.tls => {
                    self.fail(now, SessionError::PlainWithoutTls, unit)
                }
                Packet::AuthChallenge { challenge: Challenge::Plain, .. } => {
                    let pw = plain_response(self.password.expose());
                    let request_id = self.next_request_id();
                    self.out.push_back(LinkOutput::Send(Packet::AuthResponse {
                        request_id,
                        response: ChallengeResponse::Plain(pw),
                    }));
                }
                Packet::AuthResult { result, pbx_type, .. } if result == ResultCode::SUCCESS => {
                    self.pbx_version = pbx_type;
                    let request_id = self.next_request_id();
                    self.phase = Phase::Subscribing { deadline: now.plus_ms(self.handshake_ms) };
                    self.out
                        .push_back(LinkOutput::Send(Packet::EventRequest { request_id, flags: self.flags.clone() }));
                }
                Packet::AuthResult { result, .. } => self.fail(now, SessionError::Auth(result), unit),
                // A keepalive answer during the handshake: nothing to do.
                Packet::TestResponse { .. } => {}
                other => self.handshake_stray(now, other, AUTH, unit),
            },
            Phase::Subscribing { .. } => match packet {
                Packet::EventResponse { result, accepted_flags, .. } if result.is_success() => {
                    DevLinkSubscribed {
                        pbx: &self.pbx.name,
                        pbx_type: self.pbx_version.as_deref(),
                        accepted_flags: &accepted_flags,
                        partial: result == ResultCode::PARTIAL_SUCCESS,
                        requested_flags: &self.flags,
                    }
                    .emit();
                    self.came_up = true;
                    self.phase = Phase::Subscribed { next_keepalive: now.plus_ms(self.keepalive_ms) };
                    self.tracker.handle_subscribed(now);
                    self.tell(LinkState::Up, false);
                }
                Packet::EventResponse { result, .. } => self.fail(now, SessionError::Subscribe(result), unit),
                Packet::TestResponse { .. } => {}
                other => self.handshake_stray(now, other, SUBSCRIBE, unit),
            },
            Phase::Subscribed { .. } => {
                let pbx = &*self.pbx.name;
                match packet {
                    Packet::Event(event) => {
                        for tuple in &event.tuples {
                            handle_tuple(pbx, now, tuple, &mut self.tracker);
                        }
                        self.drain_tracker();
                    }
                    Packet::TestResponse { .. } => {}
                    Packet::Unknown { packet_type, .. } => {
                        let reason = format!("packet type {packet_type:#010x}");
                        DevLinkRecordMalformed { pbx, kind: "unknown-packet", reason: &reason }.emit(now);
                    }
                    other => {
                        let reason = format!("{} after subscribing", packet_name(&other));
                        DevLinkRecordMalformed { pbx, kind: "unexpected-packet", reason: &reason }.emit(now);
                    }
                }
            }
            Phase::Disconnected { .. } | Phase::Connecting => {}
        }
    }

    /// A packet that does not belong in this handshake step: an event before the subscription
    /// is counted and skipped (nothing should stream yet); anything else ends the session.
    fn handshake_stray(&mut self, now: UnixMillis, packet: Packet, waiting: &'static str, unit: f64) {
        match packet {
            Packet::Event(_) => {
                DevLinkRecordMalformed { pbx: &self.pbx.name, kind: "early-event", reason: waiting }.emit(now);
            }
            other => self.fail(now, SessionError::Unexpected { got: packet_name(&other), waiting }, unit),
        }
    }

    /// Ends the session: the tracker stops collecting a snapshot, the reason is logged and
    /// counted, the pipeline told, and the next attempt scheduled.
    fn fail(&mut self, now: UnixMillis, error: SessionError, unit: f64) {
        let connected = !matches!(self.phase, Phase::Disconnected { .. } | Phase::Connecting);
        self.tracker.handle_link_down(now);
        self.drain_tracker();
        if self.came_up {
            self.backoff.reset();
            self.came_up = false;
        }
        let reason = error.to_string();
        let auth = error.is_auth_failure();
        let delay = if auth {
            let delay = self.backoff.after_auth_failure(self.auth_failure_wait, unit);
            DevLinkAuthError {
                pbx: &self.pbx.name,
                username: &self.username,
                result: &reason,
                retry_in_secs: delay.as_secs(),
            }
            .emit(now);
            delay
        } else {
            let delay = self.backoff.next_delay(unit);
            DevLinkLinkDown { pbx: &self.pbx.name, reason: &reason, kind: error.kind(), retry_in_ms: millis(delay) }
                .emit();
            delay
        };
        if connected {
            self.out.push_back(LinkOutput::Close);
        }
        self.phase = Phase::Disconnected { reconnect_at: now.plus_ms(millis(delay)) };
        let state = if auth { LinkState::AuthFailed { reason } } else { LinkState::Down { reason } };
        self.tell(state, true);
    }

    /// Tells the pipeline the link's public state when it changed (always for a failure, so
    /// each reason is seen).
    fn tell(&mut self, state: LinkState, always: bool) {
        if always || self.told.as_ref() != Some(&state) {
            self.told = Some(state.clone());
            self.out.push_back(LinkOutput::Event(AdapterEvent::Link { pbx: self.pbx.clone(), state }));
        }
    }

    /// Moves what the tracker has into the output, logging each snapshot's summary.
    fn drain_tracker(&mut self) {
        while let Output::Event(event) = self.tracker.poll_output() {
            if let AdapterEvent::Resync { live_calls, .. } = &event {
                let summary = self.tracker.last_snapshot().unwrap_or_default();
                DevLinkResynced { pbx: &self.pbx.name, live_calls: live_calls.len(), summary }.emit();
            }
            self.out.push_back(LinkOutput::Event(event));
        }
    }

    fn dead_at(&self) -> UnixMillis {
        self.last_rx.plus_ms(self.dead_link_ms)
    }

    fn next_request_id(&mut self) -> u32 {
        self.request_id = self.request_id.wrapping_add(1).max(1);
        self.request_id
    }
}

const TEST: &str = "the test response";
const AUTH: &str = "the authentication answer";
const SUBSCRIBE: &str = "the event response";

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Feeds one event tuple to the tracker, counting what it is: the one path from a tuple's text
/// to the tracker.
pub fn handle_tuple(pbx: &str, now: UnixMillis, tuple: &EventTuple, tracker: &mut Tracker) {
    match tuple {
        EventTuple::CallDelta3(text) => match trace_record("Delta3", pbx, text, delta3::parse) {
            Ok(record) => {
                DevLinkRecordReceived { pbx, kind: record.kind() }.emit();
                tracker.handle_delta3(now, &record);
            }
            Err(e) => {
                let kind = if e.is_unknown_record() { "unknown-delta3" } else { "delta3" };
                DevLinkRecordMalformed { pbx, kind, reason: &e.to_string() }.emit(now);
            }
        },
        EventTuple::SipTrack(text) => match trace_record("SIPTrack", pbx, text, SipTrack::parse) {
            Ok(track) => {
                DevLinkRecordReceived { pbx, kind: "SIPTrack" }.emit();
                tracker.handle_sip_track(now, &track);
            }
            Err(e) => DevLinkRecordMalformed { pbx, kind: "siptrack", reason: &e.to_string() }.emit(now),
        },
        EventTuple::CmExtn(record) => {
            DevLinkRecordReceived { pbx, kind: "CMExtn" }.emit();
            tracker.handle_cm_extn(now, record);
        }
        EventTuple::CallDelta2(_) => {
            DevLinkRecordMalformed { pbx, kind: "delta2", reason: "Delta2 record (not requested)" }.emit(now);
        }
        EventTuple::Unknown { code, .. } => {
            let reason = format!("tuple code {code:#010x}");
            DevLinkRecordMalformed { pbx, kind: "unknown-tuple", reason: &reason }.emit(now);
        }
    }
}

/// Logs a record at trace level (what arrives, for verifying the protocol on a live system),
/// then parses it.
fn trace_record<'t, T>(kind: &str, pbx: &str, text: &'t str, parse: impl FnOnce(&'t str) -> T) -> T {
    tracing::trace!(pbx, kind, record = %text, "DevLink3 record.");
    parse(text)
}

fn packet_name(p: &Packet) -> &'static str {
    match p {
        Packet::TestRequest { .. } => "a test request",
        Packet::TestResponse { .. } => "a test response",
        Packet::AuthRequest { .. } => "an authenticate request",
        Packet::AuthChallenge { .. } => "an authentication challenge",
        Packet::AuthResponse { .. } => "a challenge response",
        Packet::AuthResult { .. } => "an authentication result",
        Packet::EventRequest { .. } => "an event request",
        Packet::EventResponse { .. } => "an event response",
        Packet::Event(_) => "an event",
        Packet::Unknown { .. } => "an unknown packet",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests unwrap what they built themselves.
mod tests;
