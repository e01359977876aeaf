//! The link with simulated time: each test feeds what the connection did and compares what the
//! link says to do (rust-analyzer style: one `Drive` helper, many small checks).

use std::path::PathBuf;

use listener_core::{AdapterEvent, LinkState, PbxId, UnixMillis};

use super::*;
use crate::codec::Incoming;
use crate::config::Config;
use crate::packet::{Event, EventHeader};

fn settings(tweak: impl FnOnce(&mut Config)) -> LoadedConfig {
    let dir = std::env::temp_dir().join(format!("devlink3-session-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let password: PathBuf = dir.join("pw");
    std::fs::write(&password, "secret").unwrap();
    let mut c = Config::new("192.0.2.10", "devlink", password);
    c.reconnect_min_ms = 1_000;
    c.reconnect_max_secs = 8;
    tweak(&mut c);
    c.load().unwrap()
}

/// A link and a clock.
struct Drive {
    link: DevLink3Link,
    now: u64,
}

impl Drive {
    fn new(tweak: impl FnOnce(&mut Config)) -> Drive {
        let pbx = PbxId::new("hq", crate::PBX_TYPE);
        Drive { link: DevLink3Link::new(pbx, &settings(tweak), 1), now: 1_000_000 }
    }

    /// What the link says, one word each (`connect`, `send test`, `link up`, …).
    fn outputs(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.link.poll_output())
            .map(|o| match o {
                LinkOutput::Connect => "connect".to_owned(),
                LinkOutput::Close => "close".to_owned(),
                LinkOutput::Send(p) => format!(
                    "send {}",
                    match p {
                        Packet::TestRequest { .. } => "test",
                        Packet::AuthRequest { .. } => "auth",
                        Packet::AuthResponse { .. } => "response",
                        Packet::EventRequest { .. } => "subscribe",
                        _ => "other",
                    }
                ),
                LinkOutput::Event(AdapterEvent::Link { state, .. }) => match state {
                    LinkState::Connecting => "link connecting".to_owned(),
                    LinkState::Up => "link up".to_owned(),
                    LinkState::Down { reason } => format!("link down: {reason}"),
                    LinkState::AuthFailed { reason } => format!("link auth-failed: {reason}"),
                },
                LinkOutput::Event(AdapterEvent::Resync { live_calls, .. }) => format!("resync {}", live_calls.len()),
                LinkOutput::Event(_) => "event".to_owned(),
            })
            .collect()
    }

    fn at(&self) -> UnixMillis {
        UnixMillis(self.now)
    }

    /// Moves the clock to the link's next deadline and fires it.
    fn advance_to_next_timeout(&mut self) -> u64 {
        let t = self.link.poll_timeout().expect("a deadline");
        let waited = t.0.saturating_sub(self.now);
        self.now = self.now.max(t.0);
        self.link.handle_timeout(self.at(), 0.5);
        waited
    }

    fn feed(&mut self, packet: Packet) {
        self.link.handle_incoming(self.at(), Incoming::Packet(packet), 0.5);
    }

    /// Connects and completes the handshake with a SHA-1 challenge.
    fn up(&mut self) {
        self.advance_to_next_timeout();
        assert_eq!(self.outputs(), ["link connecting", "connect"]);
        self.link.handle_connected(self.at());
        assert_eq!(self.outputs(), ["send test"]);
        self.feed(Packet::TestResponse { request_id: 2, result: ResultCode::SUCCESS, data: Bytes::new() });
        assert_eq!(self.outputs(), ["send auth"]);
        self.feed(Packet::AuthChallenge { request_id: 3, challenge: Challenge::Sha1([7; 16]) });
        assert_eq!(self.outputs(), ["send response"]);
        self.feed(Packet::AuthResult { request_id: 4, result: ResultCode::SUCCESS, pbx_type: None, variant: None });
        assert_eq!(self.outputs(), ["send subscribe"]);
        self.feed(Packet::EventResponse {
            request_id: 5,
            result: ResultCode::SUCCESS,
            accepted_flags: "-SIPTrack -CMExtn".into(),
        });
        assert_eq!(self.outputs(), ["link up"]);
    }
}

#[test]
fn handshake_then_keepalives_then_a_silent_link_is_declared_dead() {
    let mut d = Drive::new(|_| {});
    d.up();
    // The snapshot window closes (empty snapshot), then a Test every 30 s while data arrives.
    assert_eq!(d.advance_to_next_timeout(), 2_000);
    assert_eq!(d.outputs(), ["resync 0"]);
    assert_eq!(d.advance_to_next_timeout(), 28_000);
    assert_eq!(d.outputs(), ["send test"]);
    d.feed(Packet::TestResponse { request_id: 6, result: ResultCode::SUCCESS, data: Bytes::new() });
    assert_eq!(d.advance_to_next_timeout(), 30_000);
    assert_eq!(d.outputs(), ["send test"]);
    // Silence: 75 s after the last answer the link is dead and closed, and a reconnect is due
    // after a jittered delay below the first ceiling (1 s).
    assert_eq!(d.advance_to_next_timeout(), 30_000);
    assert_eq!(d.outputs(), ["send test"]);
    assert_eq!(d.advance_to_next_timeout(), 15_000);
    assert_eq!(d.outputs(), ["close", "link down: no data from the PBX for 75 s"]);
    assert_eq!(d.advance_to_next_timeout(), 500, "full jitter at 0.5 of the 1 s ceiling");
    assert_eq!(d.outputs(), ["link connecting", "connect"]);
}

#[test]
fn reconnect_delays_grow_to_the_cap_and_reset_after_a_session_that_came_up() {
    let mut d = Drive::new(|_| {});
    d.advance_to_next_timeout();
    d.outputs();
    let mut waits = Vec::new();
    for _ in 0..6 {
        d.link.handle_failed(d.at(), SessionError::Closed, 1.0);
        d.outputs();
        waits.push(d.advance_to_next_timeout());
        assert_eq!(d.outputs(), ["link connecting", "connect"]);
    }
    assert_eq!(waits, [1_000, 2_000, 4_000, 8_000, 8_000, 8_000]);
    // A session that subscribes resets the schedule.
    d.link.handle_connected(d.at());
    d.outputs();
    d.feed(Packet::TestResponse { request_id: 2, result: ResultCode::SUCCESS, data: Bytes::new() });
    d.feed(Packet::AuthChallenge { request_id: 3, challenge: Challenge::Sha1([7; 16]) });
    d.feed(Packet::AuthResult { request_id: 4, result: ResultCode::SUCCESS, pbx_type: None, variant: None });
    d.feed(Packet::EventResponse { request_id: 5, result: ResultCode::SUCCESS, accepted_flags: String::new() });
    d.outputs();
    d.link.handle_failed(d.at(), SessionError::Closed, 1.0);
    d.outputs();
    assert_eq!(d.advance_to_next_timeout(), 1_000);
}

/// Issue 9, item 1: a refused login is retried only after `auth_failure_backoff_secs` (never
/// sooner, whatever the jitter), however often it fails.
#[test]
fn a_refused_login_waits_the_configured_time_every_time() {
    let mut d = Drive::new(|c| c.auth_failure_backoff_secs = 60);
    d.advance_to_next_timeout();
    for _ in 0..5 {
        assert_eq!(d.outputs(), ["link connecting", "connect"]);
        d.link.handle_connected(d.at());
        d.feed(Packet::TestResponse { request_id: 2, result: ResultCode::SUCCESS, data: Bytes::new() });
        d.feed(Packet::AuthChallenge { request_id: 3, challenge: Challenge::Sha1([7; 16]) });
        d.feed(Packet::AuthResult {
            request_id: 4,
            result: ResultCode::AUTHENTICATION_FAILED,
            pbx_type: None,
            variant: None,
        });
        let out = d.outputs();
        assert_eq!(out[..3], ["send test", "send auth", "send response"]);
        assert_eq!(out[3], "close");
        assert!(out[4].starts_with("link auth-failed: authentication refused"), "{out:?}");
        let waited = d.advance_to_next_timeout();
        assert!((60_000..=75_000).contains(&waited), "{waited}");
    }
}

#[test]
fn a_plain_password_is_never_sent_without_tls() {
    let mut d = Drive::new(|_| {});
    d.advance_to_next_timeout();
    d.outputs();
    d.link.handle_connected(d.at());
    d.feed(Packet::TestResponse { request_id: 2, result: ResultCode::SUCCESS, data: Bytes::new() });
    d.feed(Packet::AuthChallenge { request_id: 3, challenge: Challenge::Plain });
    let out = d.outputs();
    assert_eq!(out[..3], ["send test", "send auth", "close"]);
    assert!(out[3].starts_with("link auth-failed: the PBX asked for the password in plain text"), "{out:?}");
}

#[test]
fn a_handshake_step_that_gets_no_answer_times_out() {
    let mut d = Drive::new(|c| c.connect_timeout_secs = 10);
    d.advance_to_next_timeout();
    d.outputs();
    d.link.handle_connected(d.at());
    assert_eq!(d.outputs(), ["send test"]);
    assert_eq!(d.advance_to_next_timeout(), 10_000);
    assert_eq!(d.outputs(), ["close", "link down: timed out waiting for the test response"]);
}

#[test]
fn events_before_the_subscription_are_skipped_and_records_flow_after_it() {
    let mut d = Drive::new(|_| {});
    d.advance_to_next_timeout();
    d.outputs();
    d.link.handle_connected(d.at());
    let early = Event { header: EventHeader::Short, pbx_address: [192, 168, 42, 3].into(), counter: 1, tuples: vec![] };
    d.feed(Packet::Event(early));
    assert_eq!(d.outputs(), ["send test"], "an early event is counted, not fatal");
    d.feed(Packet::TestResponse { request_id: 2, result: ResultCode::SUCCESS, data: Bytes::new() });
    d.feed(Packet::AuthChallenge { request_id: 3, challenge: Challenge::Sha1([7; 16]) });
    d.feed(Packet::AuthResult { request_id: 4, result: ResultCode::SUCCESS, pbx_type: None, variant: None });
    d.feed(Packet::EventResponse { request_id: 5, result: ResultCode::SUCCESS, accepted_flags: String::new() });
    d.outputs();
    // The documentation's records: the ISDN call that rings three phones.
    let records: Vec<String> =
        crate::delta3::parse_many(crate::testdata::DELTA3_EXAMPLES).map(|r| r.unwrap().to_string()).collect();
    let tuples = records.into_iter().map(EventTuple::CallDelta3).collect();
    d.feed(Packet::Event(Event {
        header: EventHeader::Short,
        pbx_address: [192, 168, 42, 3].into(),
        counter: 1,
        tuples,
    }));
    let events = d.outputs().iter().filter(|o| *o == "event").count();
    assert_eq!(events, 5, "every record reached the tracker");
}
