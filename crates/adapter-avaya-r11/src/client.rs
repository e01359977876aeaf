//! The DevLink3 client: the only file of this crate that does IO.
//!
//! [`DevLink3Adapter`] implements [`listener_core::Adapter`]. It connects over TCP or TLS,
//! then: Test → authenticate (SHA-1 challenge; PLAIN only over TLS) → event request → stream.
//! It sends Test packets every `keepalive_secs`, drops the link after `dead_link_secs` of
//! silence, and reconnects with jittered exponential backoff, or after
//! `auth_failure_backoff_secs` when the PBX refused the credentials (the IP Office locks
//! accounts after repeated failures). Records go through [`crate::delta3`] into the
//! [`Tracker`]; what the tracker says goes to the [`SignalSink`].
//!
//! After every successful subscription the PBX re-sends each live call; the tracker collects
//! them for `resync_settle_ms` and then emits [`AdapterEvent::Resync`], so calls that ended
//! while the link was down are closed downstream.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use listener_core::{
    Adapter, AdapterError, AdapterEvent, BoxFuture, LinkState, PbxId, SignalSink, SinkClosed, UnixMillis,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::codec::{Decoder, Encoder};

use crate::codec::{CodecError, Incoming, PacketCodec};
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

/// The link as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Not connected; the next attempt is after `backoff`.
    Disconnected {
        /// The delay before the next attempt.
        backoff: Duration,
    },
    /// Opening the TCP/TLS connection.
    Connecting,
    /// Test and authentication.
    Authenticating,
    /// Event request sent.
    Subscribing,
    /// Records flow.
    Subscribed,
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
    /// The pipeline is gone.
    #[error(transparent)]
    Sink(#[from] SinkClosed),
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
            SessionError::Sink(_) => "sink",
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

/// Exponential backoff with full-range jitter in `[d/2, d]`, doubling from `min` to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff from `min` to `max` (`max` is raised to `min` if smaller).
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max: max.max(min), next: min }
    }

    /// The next delay; `jitter` in `[0, 1]` picks a point in `[d/2, d]`.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(self.max);
        let jitter = jitter.clamp(0.0, 1.0);
        d.mul_f64(0.5 + 0.5 * jitter)
    }

    /// Back to `min` (after a session that came up).
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// The DevLink3 adapter for one IP Office. See the module documentation.
#[derive(Debug)]
pub struct DevLink3Adapter {
    pbx: PbxId,
    config: LoadedConfig,
    link: Link,
    request_id: u32,
}

fn now_ms() -> UnixMillis {
    UnixMillis(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
}

impl DevLink3Adapter {
    /// An adapter for `pbx` (whose type should be `avaya-r11`) with a loaded configuration.
    pub fn new(pbx: PbxId, config: LoadedConfig) -> DevLink3Adapter {
        // Any non-zero start will do; random so that request ids differ across connections.
        let request_id = rand::random::<u32>().max(1);
        DevLink3Adapter { pbx, config, link: Link::Disconnected { backoff: Duration::ZERO }, request_id }
    }

    fn next_request_id(&mut self) -> u32 {
        self.request_id = self.request_id.wrapping_add(1).max(1);
        self.request_id
    }

    /// Moves the link state and tells the pipeline when the public state changes.
    async fn set_link(
        &mut self,
        sink: &dyn SignalSink,
        link: Link,
        reason: Option<(&str, bool)>,
    ) -> Result<(), SinkClosed> {
        let before = public_state(&self.link, None);
        let after = public_state(&link, reason);
        tracing::debug!(pbx = %self.pbx, from = ?self.link, to = ?link, "DevLink3 link state.");
        self.link = link;
        if before != after || matches!(after, LinkState::Down { .. } | LinkState::AuthFailed { .. }) {
            sink.send(AdapterEvent::Link { pbx: self.pbx.clone(), state: after }).await?;
        }
        Ok(())
    }

    async fn run_inner(mut self, sink: &dyn SignalSink, mut shutdown: BoxFuture<'_, ()>) -> Result<(), AdapterError> {
        let settings = TrackerSettings {
            resync_settle_ms: self.config.resync_settle_ms,
            vanish_grace_ms: self.config.vanish_grace_ms,
            ..TrackerSettings::default()
        };
        let mut tracker = Tracker::new(self.pbx.clone(), settings);
        let mut backoff = Backoff::new(self.config.reconnect_min, self.config.reconnect_max);
        loop {
            self.set_link(sink, Link::Connecting, None).await?;
            let mut came_up = false;
            let outcome = tokio::select! {
                r = self.session(&mut tracker, sink, &mut came_up) => r,
                () = &mut shutdown => return Ok(()),
            };
            tracker.handle_link_down(now_ms());
            let err = match outcome {
                Ok(()) => SessionError::Closed,
                Err(SessionError::Sink(e)) => return Err(e.into()),
                Err(e) => e,
            };
            if came_up {
                backoff.reset();
            }
            let reason = err.to_string();
            let delay = if err.is_auth_failure() {
                let delay = self.config.auth_failure_backoff;
                DevLinkAuthError {
                    pbx: &self.pbx.name,
                    username: &self.config.username,
                    result: &reason,
                    retry_in_secs: delay.as_secs(),
                }
                .emit();
                delay
            } else {
                let delay = backoff.next_delay(rand::random::<f64>());
                DevLinkLinkDown {
                    pbx: &self.pbx.name,
                    reason: &reason,
                    kind: err.kind(),
                    retry_in_ms: delay.as_millis() as u64,
                }
                .emit();
                delay
            };
            self.set_link(sink, Link::Disconnected { backoff: delay }, Some((&reason, err.is_auth_failure()))).await?;
            tokio::select! {
                () = sleep(delay) => {}
                () = &mut shutdown => return Ok(()),
            }
        }
    }

    async fn session(
        &mut self,
        tracker: &mut Tracker,
        sink: &dyn SignalSink,
        came_up: &mut bool,
    ) -> Result<(), SessionError> {
        let cfg = &self.config;
        DevLinkConnecting { pbx: &self.pbx.name, host: &cfg.host, port: cfg.port, tls: cfg.tls.is_some() }.emit();
        let addr = format!("{}:{}", cfg.host, cfg.port);
        let tcp = timeout(cfg.connect_timeout, TcpStream::connect((cfg.host.as_str(), cfg.port)))
            .await
            .map_err(|_| SessionError::Timeout("the TCP connection"))?
            .map_err(|source| SessionError::Connect { addr, source })?;
        // Small records: do not wait to coalesce them.
        let _ = tcp.set_nodelay(true);
        match cfg.tls.clone() {
            Some(tls) => {
                let connector = tokio_rustls::TlsConnector::from(tls.client_config);
                let stream = timeout(self.config.connect_timeout, connector.connect(tls.server_name, tcp))
                    .await
                    .map_err(|_| SessionError::Timeout("the TLS handshake"))?
                    .map_err(SessionError::Tls)?;
                self.session_on(stream, true, tracker, sink, came_up).await
            }
            None => self.session_on(tcp, false, tracker, sink, came_up).await,
        }
    }

    async fn session_on<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: S,
        tls: bool,
        tracker: &mut Tracker,
        sink: &dyn SignalSink,
        came_up: &mut bool,
    ) -> Result<(), SessionError> {
        let mut framed = Connection::new(stream, self.config.max_frame_bytes);
        let wait = self.config.connect_timeout;
        self.set_link(sink, Link::Authenticating, None).await?;

        // Test: the PBX stays silent until the client speaks; this checks it speaks DevLink3.
        let id = self.next_request_id();
        framed.send(Packet::TestRequest { request_id: id, data: Bytes::new() }).await?;
        match self.handshake_reply(&mut framed, wait, "the test response").await? {
            Packet::TestResponse { result, .. } if result == ResultCode::SUCCESS => {}
            Packet::TestResponse { result, .. } => return Err(SessionError::Test(result)),
            other => return Err(unexpected(&other, "the test response")),
        }

        // Authenticate.
        let id = self.next_request_id();
        let request = Packet::AuthRequest {
            request_id: id,
            username: self.config.username.clone(),
            application_name: Some(self.config.application_name.clone()),
        };
        framed.send(request).await?;
        let pbx_type = loop {
            match self.handshake_reply(&mut framed, wait, "the authentication answer").await? {
                Packet::AuthChallenge { challenge: Challenge::Sha1(c), .. } => {
                    let digest = sha1_response(&c, self.config.password.expose());
                    let id = self.next_request_id();
                    framed
                        .send(Packet::AuthResponse { request_id: id, response: ChallengeResponse::Sha1(digest) })
                        .await?;
                }
                Packet::AuthChallenge { challenge: Challenge::Plain, .. } => {
                    if !tls {
                        return Err(SessionError::PlainWithoutTls);
                    }
                    let pw = plain_response(self.config.password.expose());
                    let id = self.next_request_id();
                    framed
                        .send(Packet::AuthResponse { request_id: id, response: ChallengeResponse::Plain(pw) })
                        .await?;
                }
                Packet::AuthResult { result, pbx_type, .. } if result == ResultCode::SUCCESS => break pbx_type,
                Packet::AuthResult { result, .. } => return Err(SessionError::Auth(result)),
                other => return Err(unexpected(&other, "the authentication answer")),
            }
        };

        // Subscribe.
        self.set_link(sink, Link::Subscribing, None).await?;
        let id = self.next_request_id();
        framed.send(Packet::EventRequest { request_id: id, flags: self.config.flags.clone() }).await?;
        match self.handshake_reply(&mut framed, wait, "the event response").await? {
            Packet::EventResponse { result, accepted_flags, .. } if result.is_success() => {
                DevLinkSubscribed {
                    pbx: &self.pbx.name,
                    pbx_type: pbx_type.as_deref(),
                    accepted_flags: &accepted_flags,
                    partial: result == ResultCode::PARTIAL_SUCCESS,
                    requested_flags: &self.config.flags,
                }
                .emit();
            }
            Packet::EventResponse { result, .. } => return Err(SessionError::Subscribe(result)),
            other => return Err(unexpected(&other, "the event response")),
        }
        *came_up = true;
        tracker.handle_subscribed(now_ms());
        self.set_link(sink, Link::Subscribed, None).await?;

        // Stream.
        let keepalive = self.config.keepalive;
        let dead_link = self.config.dead_link;
        let mut next_keepalive = Instant::now() + keepalive;
        let mut last_rx = Instant::now();
        let mut frames = 0u64;
        loop {
            let next_timer = loop {
                match tracker.poll_output() {
                    Output::Event(event) => {
                        if let AdapterEvent::Resync { live_calls, .. } = &event {
                            DevLinkResynced { pbx: &self.pbx.name, live_calls: live_calls.len() }.emit();
                        }
                        sink.send(event).await?;
                    }
                    Output::Timeout(t) => break t,
                }
            };
            if frames > 0 {
                DevLinkFramesReceived { pbx: &self.pbx.name, count: frames }.emit();
                frames = 0;
            }
            let timer_at = next_timer.map(|t| Instant::now() + Duration::from_millis(t.since(now_ms())));
            let dead_at = last_rx + dead_link;
            tokio::select! {
                item = framed.next() => {
                    let item = item?.ok_or(SessionError::Closed)?;
                    last_rx = Instant::now();
                    frames += 1;
                    self.handle_incoming(item, tracker)?;
                    // Drain what is already buffered before looking at timers again.
                    while let Some(item) = framed.buffered()? {
                        frames += 1;
                        self.handle_incoming(item, tracker)?;
                    }
                }
                () = sleep_until(next_keepalive) => {
                    next_keepalive = Instant::now() + keepalive;
                    let id = self.next_request_id();
                    framed.send(Packet::TestRequest { request_id: id, data: Bytes::new() }).await?;
                }
                () = sleep_until(dead_at) => {
                    let silent_secs = last_rx.elapsed().as_secs();
                    DevLinkKeepaliveTimeout { pbx: &self.pbx.name, silent_secs }.emit();
                    return Err(SessionError::DeadLink(silent_secs));
                }
                () = sleep_until(timer_at.unwrap_or(dead_at)), if timer_at.is_some() => {
                    tracker.handle_timeout(now_ms());
                }
            }
        }
    }

    /// Waits for the next packet of the handshake, counting and skipping junk.
    async fn handshake_reply<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        framed: &mut Connection<S>,
        wait: Duration,
        waiting: &'static str,
    ) -> Result<Packet, SessionError> {
        let deadline = Instant::now() + wait;
        loop {
            let item = tokio::time::timeout_at(deadline, framed.next())
                .await
                .map_err(|_| SessionError::Timeout(waiting))??
                .ok_or(SessionError::Closed)?;
            match item {
                Incoming::Packet(Packet::Event(_)) => {
                    // Not subscribed yet: nothing should stream; ignore it.
                    DevLinkRecordMalformed { pbx: &self.pbx.name, kind: "early-event", reason: waiting }.emit();
                }
                Incoming::Packet(Packet::TestResponse { result, .. }) if waiting != "the test response" => {
                    if result != ResultCode::SUCCESS {
                        return Err(SessionError::Test(result));
                    }
                }
                Incoming::Packet(p) => return Ok(p),
                other => self.count_junk(&other),
            }
        }
    }

    fn count_junk(&self, item: &Incoming) {
        match item {
            Incoming::Malformed { reason } => {
                DevLinkRecordMalformed { pbx: &self.pbx.name, kind: "packet", reason: &reason.to_string() }.emit();
            }
            Incoming::Skipped { bytes, reason } => {
                DevLinkGarbageSkipped { pbx: &self.pbx.name, bytes: *bytes, reason: &reason.to_string() }.emit();
            }
            Incoming::Packet(_) => {}
        }
    }

    fn handle_incoming(&self, item: Incoming, tracker: &mut Tracker) -> Result<(), SessionError> {
        let pbx = &*self.pbx.name;
        let packet = match item {
            Incoming::Packet(p) => p,
            other => {
                self.count_junk(&other);
                return Ok(());
            }
        };
        match packet {
            Packet::Event(event) => {
                let now = now_ms();
                for tuple in &event.tuples {
                    handle_tuple(pbx, now, tuple, tracker);
                }
            }
            Packet::TestResponse { result, .. } => {
                if result != ResultCode::SUCCESS {
                    return Err(SessionError::Test(result));
                }
            }
            Packet::Unknown { packet_type, .. } => {
                let reason = format!("packet type {packet_type:#010x}");
                DevLinkRecordMalformed { pbx, kind: "unknown-packet", reason: &reason }.emit();
            }
            other => {
                let reason = format!("{} after subscribing", packet_name(&other));
                DevLinkRecordMalformed { pbx, kind: "unexpected-packet", reason: &reason }.emit();
            }
        }
        Ok(())
    }
}

/// Feeds one event tuple to the tracker, counting what it is.
fn handle_tuple(pbx: &str, now: UnixMillis, tuple: &EventTuple, tracker: &mut Tracker) {
    match tuple {
        EventTuple::CallDelta3(text) => match trace_record("Delta3", pbx, text, delta3::parse) {
            Ok(record) => {
                DevLinkRecordReceived { pbx, kind: record.kind() }.emit();
                tracker.handle_delta3(now, &record);
            }
            Err(e) => {
                let kind = if e.is_unknown_record() { "unknown-delta3" } else { "delta3" };
                DevLinkRecordMalformed { pbx, kind, reason: &e.to_string() }.emit();
            }
        },
        EventTuple::SipTrack(text) => match trace_record("SIPTrack", pbx, text, SipTrack::parse) {
            Ok(track) => {
                DevLinkRecordReceived { pbx, kind: "SIPTrack" }.emit();
                tracker.handle_sip_track(now, &track);
            }
            Err(e) => DevLinkRecordMalformed { pbx, kind: "siptrack", reason: &e.to_string() }.emit(),
        },
        EventTuple::CmExtn(record) => {
            DevLinkRecordReceived { pbx, kind: "CMExtn" }.emit();
            tracker.handle_cm_extn(now, record);
        }
        EventTuple::CallDelta2(_) => {
            DevLinkRecordMalformed { pbx, kind: "delta2", reason: "Delta2 record (not requested)" }.emit();
        }
        EventTuple::Unknown { code, .. } => {
            let reason = format!("tuple code {code:#010x}");
            DevLinkRecordMalformed { pbx, kind: "unknown-tuple", reason: &reason }.emit();
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

fn unexpected(p: &Packet, waiting: &'static str) -> SessionError {
    SessionError::Unexpected { got: packet_name(p), waiting }
}

fn public_state(link: &Link, reason: Option<(&str, bool)>) -> LinkState {
    match link {
        Link::Connecting | Link::Authenticating | Link::Subscribing => LinkState::Connecting,
        Link::Subscribed => LinkState::Up,
        Link::Disconnected { .. } => match reason {
            Some((reason, true)) => LinkState::AuthFailed { reason: reason.to_owned() },
            Some((reason, false)) => LinkState::Down { reason: reason.to_owned() },
            None => LinkState::Down { reason: String::new() },
        },
    }
}

impl Adapter for DevLink3Adapter {
    fn pbx(&self) -> &PbxId {
        &self.pbx
    }

    fn run<'a>(
        self: Box<Self>,
        sink: &'a dyn SignalSink,
        shutdown: BoxFuture<'a, ()>,
    ) -> BoxFuture<'a, Result<(), AdapterError>> {
        Box::pin(self.run_inner(sink, shutdown))
    }
}

/// A DevLink3 connection over any byte stream: reads [`Incoming`] items, writes [`Packet`]s.
/// Used by the client and by the simulator. `next` is cancel-safe (bytes are only buffered).
#[derive(Debug)]
pub struct Connection<S> {
    io: S,
    codec: PacketCodec,
    read: BytesMut,
    write: BytesMut,
    eof: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// A connection with frames of at most `max_frame_bytes`.
    pub fn new(io: S, max_frame_bytes: usize) -> Connection<S> {
        Connection {
            io,
            codec: PacketCodec::new(max_frame_bytes),
            read: BytesMut::with_capacity(8192),
            write: BytesMut::new(),
            eof: false,
        }
    }

    /// The next item; `None` when the peer closed the connection.
    pub async fn next(&mut self) -> Result<Option<Incoming>, CodecError> {
        loop {
            if let Some(item) = self.buffered()? {
                return Ok(Some(item));
            }
            if self.eof {
                return Ok(None);
            }
            if self.io.read_buf(&mut self.read).await? == 0 {
                self.eof = true;
            }
        }
    }

    /// An item decodable from what is already buffered, without reading.
    pub fn buffered(&mut self) -> Result<Option<Incoming>, CodecError> {
        if self.eof { self.codec.decode_eof(&mut self.read) } else { self.codec.decode(&mut self.read) }
    }

    /// Queues a packet; [`Connection::flush`] writes it.
    pub fn queue(&mut self, packet: &Packet) -> Result<(), CodecError> {
        self.codec.encode(packet, &mut self.write)
    }

    /// Writes queued packets.
    pub async fn flush(&mut self) -> Result<(), CodecError> {
        if !self.write.is_empty() {
            self.io.write_all(&self.write).await?;
            self.write.clear();
        }
        self.io.flush().await?;
        Ok(())
    }

    /// Queues and writes one packet.
    pub async fn send(&mut self, packet: Packet) -> Result<(), CodecError> {
        self.queue(&packet)?;
        self.flush().await
    }

    /// Writes raw bytes (for tests of the decoder's resynchronisation).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), CodecError> {
        self.flush().await?;
        self.io.write_all(bytes).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// Shuts the write side down.
    pub async fn shutdown(&mut self) -> Result<(), CodecError> {
        self.flush().await?;
        self.io.shutdown().await?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests unwrap what they built themselves.
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1_000));
        let full: Vec<u128> = (0..6).map(|_| b.next_delay(1.0).as_millis()).collect();
        assert_eq!(full, [100, 200, 400, 800, 1_000, 1_000]);
        b.reset();
        assert_eq!(b.next_delay(0.0).as_millis(), 50, "jitter 0 is half the delay");
        assert_eq!(b.next_delay(0.5).as_millis(), 150);
        // Out-of-range jitter is clamped.
        assert_eq!(b.next_delay(7.0).as_millis(), 400);
    }

    #[test]
    fn auth_failures_are_told_apart() {
        assert!(SessionError::Auth(ResultCode::AUTHENTICATION_FAILED).is_auth_failure());
        assert!(SessionError::Auth(ResultCode::LICENCE_MISSING).is_auth_failure());
        assert!(SessionError::PlainWithoutTls.is_auth_failure());
        assert!(!SessionError::Auth(ResultCode::LIMITS_EXCEEDED).is_auth_failure());
        assert!(!SessionError::Closed.is_auth_failure());
    }

    #[test]
    fn public_link_states() {
        assert_eq!(public_state(&Link::Subscribing, None), LinkState::Connecting);
        assert_eq!(public_state(&Link::Subscribed, None), LinkState::Up);
        let down = Link::Disconnected { backoff: Duration::from_secs(1) };
        assert_eq!(public_state(&down, Some(("x", true))), LinkState::AuthFailed { reason: "x".into() });
        assert_eq!(public_state(&down, Some(("y", false))), LinkState::Down { reason: "y".into() });
    }
}
