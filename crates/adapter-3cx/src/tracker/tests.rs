//! Tracker tests: scripts of notifications, fetch answers and CDR lines in, golden text out,
//! time simulated (the clock jumps to each deadline; nothing sleeps).

use std::collections::{BTreeSet, VecDeque};

use listener_core::{CallLifecycle, EventContext, PbxType};

use super::*;
use crate::cdr::FieldOrder;
use crate::testdata;
use crate::ws::{EventType, parse_frame, participant_path, render_frame};

const T0: u64 = 1_718_600_000_000;

fn pbx() -> PbxId {
    PbxId::new("hq", PbxType::new("3cx"))
}

/// A participant body: `status` on `dn`, in call `callid`, the other party `party`.
fn body(id: i64, dn: &str, status: &str, callid: i64, party: Party) -> Participant {
    let mut p = Participant {
        id: Some(id),
        status: Some(Status::parse(status)),
        dn: Some(dn.into()),
        callid: Some(callid),
        legid: Some(1),
        ..Participant::default()
    };
    match party {
        Party::Trunk => {
            p.party_dn = Some("10007".into());
            p.party_dn_type = Some("Wexternalline".into());
            p.party_caller_id = Some("+441707123456".into());
            p.party_caller_name = Some("ACME Ltd".into());
            p.party_did = Some("441234567890".into());
        }
        Party::Ext(e) => {
            p.party_dn = Some(e.into());
            p.party_dn_type = Some("Wextension".into());
            p.party_caller_id = Some(e.into());
        }
        Party::Dialled(n) => {
            p.party_dn = Some("10007".into());
            p.party_dn_type = Some("Wexternalline".into());
            p.party_caller_id = Some(n.into());
        }
    }
    p
}

#[derive(Clone, Copy)]
enum Party {
    Trunk,
    Ext(&'static str),
    Dialled(&'static str),
}

fn queued(mut p: Participant, queue: &str) -> Participant {
    p.on_behalf_of_dn = Some(queue.into());
    p.on_behalf_of_type = Some("Wqueue".into());
    p
}

fn referred(mut p: Participant, by: &str) -> Participant {
    p.referred_by_dn = Some(by.into());
    p.referred_by_type = Some("Wextension".into());
    p
}

struct Harness {
    tracker: Tracker,
    now: UnixMillis,
    fetches: VecDeque<(String, String)>,
    lines: Vec<String>,
    events: Vec<AdapterEvent>,
    seq: i64,
    resnapshots: usize,
}

impl Harness {
    fn new() -> Harness {
        Harness::with(TrackerSettings { route_point: "ROUTER".into(), ..TrackerSettings::default() })
    }

    fn with(settings: TrackerSettings) -> Harness {
        let mut h = Harness {
            tracker: Tracker::new(pbx(), settings),
            now: UnixMillis(T0),
            fetches: VecDeque::new(),
            lines: Vec::new(),
            events: Vec::new(),
            seq: 0,
            resnapshots: 0,
        };
        h.tracker.handle_connected(h.now);
        h.tracker.handle_snapshot(h.now, Vec::new());
        h.drain();
        h.lines.clear();
        h
    }

    fn drain(&mut self) {
        loop {
            match self.tracker.poll_output() {
                Output::Event(e) => {
                    if let Some(line) = render(&e) {
                        self.lines.push(line);
                    }
                    self.events.push(e);
                }
                Output::Fetch { dn, id } => self.fetches.push_back((dn, id)),
                Output::Resnapshot => self.resnapshots += 1,
                Output::Timeout(_) => return,
            }
        }
    }

    fn frame(&mut self, event_type: EventType, dn: &str, id: i64) {
        self.seq += 1;
        let text = render_frame(self.seq, event_type, &participant_path(dn, &id.to_string()));
        let event = parse_frame(&text, 65_536).unwrap();
        self.tracker.handle_ws_event(self.now, event);
        self.drain();
    }

    /// An Upsert whose fetch is answered at once with `p`.
    fn upsert(&mut self, p: Participant) {
        let (dn, id) = (p.dn.clone().unwrap(), p.id.unwrap());
        self.frame(EventType::Upsert, &dn, id);
        self.answer(p);
    }

    /// Answers the oldest fetch of `p`'s participant with `p`.
    fn answer(&mut self, p: Participant) {
        let key = (p.dn.clone().unwrap(), p.id.unwrap().to_string());
        let i = self
            .fetches
            .iter()
            .position(|f| *f == key)
            .unwrap_or_else(|| panic!("no fetch of {key:?}: {:?}", self.fetches));
        self.fetches.remove(i);
        self.tracker.handle_fetched(self.now, &key.0, &key.1, Fetched::Found(p));
        self.drain();
    }

    fn answer_with(&mut self, dn: &str, id: i64, fetched: Fetched) {
        let key = (dn.to_owned(), id.to_string());
        let i = self.fetches.iter().position(|f| *f == key).unwrap();
        self.fetches.remove(i);
        self.tracker.handle_fetched(self.now, dn, &key.1, fetched);
        self.drain();
    }

    fn remove(&mut self, dn: &str, id: i64) {
        self.frame(EventType::Remove, dn, id);
    }

    /// Lets `ms` pass, firing every deadline on the way.
    fn advance(&mut self, ms: u64) {
        let end = self.now.plus_ms(ms);
        while let Some(t) = self.tracker.poll_timeout().filter(|t| *t <= end) {
            self.now = t.max(self.now);
            self.tracker.handle_timeout(self.now);
            self.drain();
        }
        self.now = end;
    }

    fn take(&mut self) -> String {
        std::mem::take(&mut self.lines).join("\n")
    }

    fn check(&mut self, expected: &str) {
        let got = self.take();
        assert_eq!(got, expected.trim(), "\n--- got ---\n{got}\n");
    }
}

/// `<call> <ext|-> <change>` plus markers; checkpoints are not rendered.
fn render(e: &AdapterEvent) -> Option<String> {
    match e {
        AdapterEvent::Signal(s) => {
            let SignalBody::Call(c) = &s.body else { return None };
            let change = match &c.change {
                CallChange::Ringing => "ringing".to_owned(),
                CallChange::Connected => "connected".to_owned(),
                CallChange::Held => "held".to_owned(),
                CallChange::Resumed => "resumed".to_owned(),
                CallChange::Parked { slot } => format!("parked:{}", slot.as_deref().unwrap_or("-")),
                CallChange::Unparked { slot } => format!("unparked:{}", slot.as_deref().unwrap_or("-")),
                CallChange::Transferred { to } => format!("transferred:{}", to.as_deref().unwrap_or("-")),
                CallChange::Queued { queue } => format!("queued:{}", queue.as_deref().unwrap_or("-")),
                CallChange::Disconnected { reason } => format!("disconnected:{}", reason.as_str()),
                CallChange::Ended => "ended".to_owned(),
            };
            let mut line = format!("{} {} {change}", c.call, c.extension.as_ref().map_or("-", |e| e.0.as_str()));
            if s.facts.get("reconciled").map(String::as_str) == Some("true") {
                line.push_str(" (reconciled)");
            }
            if s.source == CDR_SOURCE {
                line.push_str(" [cdr]");
            }
            Some(line)
        }
        AdapterEvent::Resync { live_calls, .. } => {
            Some(format!("resync [{}]", live_calls.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(",")))
        }
        AdapterEvent::Link { .. } | AdapterEvent::Checkpoint { .. } => None,
    }
}

/// The Level 3 statuses per extension, through the real lifecycle.
fn level3(events: &[AdapterEvent]) -> String {
    let ctx = EventContext { account_id: uuid::Uuid::nil(), account_name: "t".into(), static_meta: Default::default() };
    let mut lines = Vec::new();
    for e in CallLifecycle::level3_unbound(ctx, events) {
        let mut line = format!("{} {}", e.status, e.extension.as_deref().unwrap_or("-"));
        for key in ["reason", "queue", "parkSlot", "transferTarget", "reconciled", "source"] {
            if let Some(v) = e.meta.get(key) {
                line.push_str(&format!(" {key}={v}"));
            }
        }
        lines.push(line);
    }
    lines.join("\n")
}

fn call_info_of(events: &[AdapterEvent]) -> Option<(CallInfo, Facts)> {
    events.iter().find_map(|e| match e {
        AdapterEvent::Signal(s) => match &s.body {
            SignalBody::Call(c) if c.extension.is_some() => Some((c.info.clone(), s.facts.clone())),
            _ => None,
        },
        _ => None,
    })
}

#[test]
fn the_captured_participant_rings_extension_150_with_the_callers_facts() {
    let mut h = Harness::new();
    let p = Participant::from_json(testdata::PARTICIPANT_RINGING.as_bytes()).unwrap();
    h.upsert(p);
    h.check("1264 150 ringing");
    let (info, facts) = call_info_of(&h.events).unwrap();
    assert_eq!(info.direction, Direction::Inbound);
    assert_eq!(info.external_number.as_deref(), Some("0123456789"));
    assert_eq!(info.caller_name.as_deref(), Some("+49123456789"));
    assert_eq!(info.dialled_number, None, "party_did is empty in the capture");
    assert_eq!(facts.get("trunkDn").map(String::as_str), Some("10007"));
    assert_eq!(facts.get("participant").map(String::as_str), Some("150/8106"));
    assert_eq!(facts.get("originatedBy").map(String::as_str), Some("ROUTER"));
}

#[test]
fn queue_call_two_agents_ring_one_answers() {
    for remove_first in [false, true] {
        let mut h = Harness::new();
        h.upsert(queued(body(1, "101", "Ringing", 7, Party::Trunk), "800"));
        h.upsert(queued(body(2, "102", "Ringing", 7, Party::Trunk), "800"));
        if remove_first {
            // The loser's Remove comes before the winner's Upsert is fetched.
            h.frame(EventType::Upsert, "102", 2);
            h.remove("101", 1);
            h.answer(queued(body(2, "102", "Connected", 7, Party::Trunk), "800"));
        } else {
            h.upsert(queued(body(2, "102", "Connected", 7, Party::Trunk), "800"));
            h.remove("101", 1);
        }
        h.advance(2_000);
        h.remove("102", 2);
        h.advance(2_000);
        h.check(
            "
7 - queued:800
7 101 ringing
7 102 ringing
7 102 connected
7 101 disconnected:answered-elsewhere
7 102 disconnected:normal
7 - ended",
        );
        assert_eq!(
            level3(&h.events),
            "ringing 101 queue=800 source=callcontrol
ringing 102 queue=800 source=callcontrol
connected 102 queue=800 source=callcontrol
disconnected 101 reason=answered-elsewhere queue=800 source=callcontrol
disconnected 102 reason=normal queue=800 source=callcontrol"
        );
        assert_eq!((h.tracker.legs(), h.tracker.calls()), (0, 0));
    }
}

/// A stop during a removal's grace decides it at once: the `disconnected` goes out before the
/// daemon exits, instead of waiting for the next start's snapshot to reconcile the leg.
#[test]
fn a_stop_during_the_removal_grace_decides_the_removal() {
    let mut h = Harness::new();
    h.upsert(queued(body(1, "101", "Ringing", 7, Party::Trunk), "800"));
    h.upsert(queued(body(1, "101", "Connected", 7, Party::Trunk), "800"));
    h.remove("101", 1);
    h.advance(100);
    h.check(
        "
7 - queued:800
7 101 ringing
7 101 connected",
    );
    h.tracker.handle_shutdown(h.now);
    h.drain();
    h.check(
        "
7 101 disconnected:normal
7 - ended",
    );
    assert_eq!(
        level3(&h.events),
        "ringing 101 queue=800 source=callcontrol
connected 101 queue=800 source=callcontrol
disconnected 101 reason=normal queue=800 source=callcontrol"
    );
    assert_eq!((h.tracker.legs(), h.tracker.calls()), (0, 0));
}

#[test]
fn the_caller_hangs_up_while_two_phones_ring() {
    let mut h = Harness::new();
    h.upsert(queued(body(1, "101", "Ringing", 8, Party::Trunk), "800"));
    h.upsert(queued(body(2, "102", "Ringing", 8, Party::Trunk), "800"));
    h.remove("101", 1);
    h.advance(100);
    h.remove("102", 2);
    h.advance(2_000);
    h.check(
        "
8 - queued:800
8 101 ringing
8 102 ringing
8 - ended",
    );
    assert_eq!(
        level3(&h.events),
        "ringing 101 queue=800 source=callcontrol
ringing 102 queue=800 source=callcontrol
disconnected 101 reason=caller-abandoned queue=800 source=callcontrol
disconnected 102 reason=caller-abandoned queue=800 source=callcontrol"
    );
}

#[test]
fn a_phone_that_stops_ringing_while_the_call_rings_on_elsewhere_is_no_answer() {
    let mut h = Harness::new();
    h.upsert(body(1, "101", "Ringing", 9, Party::Trunk));
    h.upsert(body(2, "102", "Ringing", 9, Party::Trunk));
    h.remove("101", 1);
    h.advance(2_000);
    h.check("9 101 ringing\n9 102 ringing\n9 101 disconnected:no-answer");
}

#[test]
fn blind_transfer_in_either_order() {
    for upsert_first in [false, true] {
        let mut h = Harness::new();
        h.upsert(body(1, "101", "Ringing", 10, Party::Trunk));
        h.upsert(body(1, "101", "Connected", 10, Party::Trunk));
        if upsert_first {
            h.upsert(referred(body(2, "102", "Ringing", 10, Party::Trunk), "101"));
            h.remove("101", 1);
        } else {
            h.remove("101", 1);
            h.advance(200);
            h.upsert(referred(body(2, "102", "Ringing", 10, Party::Trunk), "101"));
        }
        h.advance(2_000);
        h.upsert(referred(body(2, "102", "Connected", 10, Party::Trunk), "101"));
        h.remove("102", 2);
        h.advance(2_000);
        // Either order: the Remove waits for its explanation.
        let order = "10 101 ringing\n10 101 connected\n10 102 ringing\n10 101 transferred:102";
        h.check(&format!("{order}\n10 102 connected\n10 102 disconnected:normal\n10 - ended"));
        assert_eq!(
            level3(&h.events),
            "ringing 101 source=callcontrol
connected 101 source=callcontrol
ringing 102 source=callcontrol
transferred 101 transferTarget=102 source=callcontrol
disconnected 101 reason=transferred source=callcontrol
connected 102 source=callcontrol
disconnected 102 reason=normal source=callcontrol"
        );
    }
}

#[test]
fn outbound_call_dialing_says_nothing_until_answered() {
    let mut h = Harness::new();
    h.upsert(body(1, "101", "Dialing", 11, Party::Dialled("+46703014082")));
    h.check("");
    h.upsert(body(1, "101", "Connected", 11, Party::Dialled("+46703014082")));
    h.remove("101", 1);
    h.advance(2_000);
    h.check("11 101 connected\n11 101 disconnected:normal\n11 - ended");
    let (info, facts) = call_info_of(&h.events).unwrap();
    assert_eq!(info.direction, Direction::Outbound);
    assert_eq!(info.external_number.as_deref(), Some("+46703014082"));
    assert_eq!(info.dialled_number.as_deref(), Some("+46703014082"));
    assert_eq!(facts.get("trunkDn").map(String::as_str), Some("10007"));
}

#[test]
fn an_unanswered_outbound_call_leaves_no_trace() {
    let mut h = Harness::new();
    h.upsert(body(1, "101", "Dialing", 12, Party::Dialled("123")));
    h.remove("101", 1);
    h.advance(2_000);
    h.check("");
    assert_eq!((h.tracker.legs(), h.tracker.calls()), (0, 0));
}

#[test]
fn internal_call_numbers_from_both_sides() {
    let mut h = Harness::new();
    h.upsert(body(1, "101", "Dialing", 13, Party::Ext("102")));
    h.upsert(body(2, "102", "Ringing", 13, Party::Ext("101")));
    h.check("13 102 ringing");
    let (info, _) = call_info_of(&h.events).unwrap();
    assert_eq!(info.direction, Direction::Internal);
    assert_eq!((info.external_number.as_deref(), info.dialled_number.as_deref()), (Some("101"), Some("102")));
}

#[test]
fn the_get_remove_race() {
    // The GET answers 404: the leg was never seen, nothing is said.
    let mut h = Harness::new();
    h.frame(EventType::Upsert, "101", 1);
    h.remove("101", 1);
    h.answer_with("101", 1, Fetched::Gone);
    h.advance(2_000);
    h.check("");
    assert_eq!(h.tracker.stats().gone, 1);
    // The GET still got the body: it is applied, then the Remove.
    let mut h = Harness::new();
    h.upsert(body(1, "101", "Ringing", 14, Party::Trunk));
    h.frame(EventType::Upsert, "101", 1);
    h.remove("101", 1);
    h.answer(body(1, "101", "Connected", 14, Party::Trunk));
    h.advance(2_000);
    h.check("14 101 ringing\n14 101 connected\n14 101 disconnected:normal\n14 - ended");
    // A 404 for a leg we knew: it ended.
    let mut h = Harness::new();
    h.upsert(body(1, "101", "Connected", 15, Party::Trunk));
    h.frame(EventType::Upsert, "101", 1);
    h.answer_with("101", 1, Fetched::Gone);
    h.advance(2_000);
    h.check("15 101 connected\n15 101 disconnected:normal\n15 - ended");
}

#[test]
fn upsert_bursts_are_coalesced_into_one_more_fetch() {
    let mut h = Harness::new();
    for _ in 0..5 {
        h.frame(EventType::Upsert, "101", 1);
    }
    assert_eq!(h.fetches.len(), 1, "one fetch in flight per participant");
    h.answer(body(1, "101", "Ringing", 16, Party::Trunk));
    assert_eq!(h.fetches.len(), 1, "the burst is one more fetch");
    h.answer(body(1, "101", "Connected", 16, Party::Trunk));
    assert!(h.fetches.is_empty());
    h.check("16 101 ringing\n16 101 connected");
}

#[test]
fn failed_fetches_are_retried_then_left_to_the_next_snapshot() {
    let mut h = Harness::new();
    h.frame(EventType::Upsert, "101", 1);
    h.answer_with("101", 1, Fetched::Failed);
    assert!(h.fetches.is_empty(), "not at once");
    h.advance(600);
    h.answer_with("101", 1, Fetched::Failed);
    h.advance(600);
    h.answer(body(1, "101", "Ringing", 17, Party::Trunk));
    h.check("17 101 ringing");
    h.frame(EventType::Upsert, "101", 1);
    for _ in 0..3 {
        h.answer_with("101", 1, Fetched::Failed);
        h.advance(600);
    }
    assert!(h.fetches.is_empty());
    assert_eq!(h.tracker.stats().fetch_failures, 1);
}

#[test]
fn reconnect_diffs_the_snapshot_and_marks_what_it_synthesizes() {
    let mut h = Harness::new();
    h.upsert(body(1, "101", "Connected", 20, Party::Trunk));
    h.upsert(body(2, "102", "Ringing", 21, Party::Trunk));
    h.upsert(body(3, "104", "Connected", 22, Party::Trunk));
    h.take();
    h.tracker.handle_link_down(h.now);
    h.advance(5_000);
    // While we were away: call 20 ended, 102 answered call 21, 103 rings in a new call 23;
    // call 22 is unchanged.
    h.tracker.handle_connected(h.now);
    // A notification during the snapshot is buffered and applied after it.
    h.frame(EventType::Upsert, "104", 3);
    assert!(h.fetches.is_empty(), "buffered, not fetched yet");
    let dns = vec![
        DnInfo { dn: "101".into(), dn_type: Some("Wextension".into()), participants: vec![] },
        DnInfo {
            dn: "102".into(),
            dn_type: Some("Wextension".into()),
            participants: vec![body(2, "102", "Connected", 21, Party::Trunk)],
        },
        DnInfo {
            dn: "103".into(),
            dn_type: Some("Wextension".into()),
            participants: vec![body(4, "103", "Ringing", 23, Party::Trunk)],
        },
        DnInfo {
            dn: "104".into(),
            dn_type: Some("Wextension".into()),
            participants: vec![body(3, "104", "Connected", 22, Party::Trunk)],
        },
        DnInfo { dn: "ROUTER".into(), dn_type: Some("Wroutepoint".into()), participants: vec![] },
    ];
    h.tracker.handle_snapshot(h.now, dns);
    h.drain();
    h.check(
        "
20 101 disconnected:unknown (reconciled)
20 - ended
21 102 connected (reconciled)
23 103 ringing (reconciled)
resync [21,22,23]",
    );
    assert_eq!(h.fetches.len(), 1, "the buffered Upsert is fetched after the snapshot");
    h.answer(body(3, "104", "Connected", 22, Party::Trunk));
    h.check("");
}

#[test]
fn too_many_notifications_during_a_snapshot_ask_for_another() {
    let mut h = Harness::with(TrackerSettings { max_buffered_events: 2, ..TrackerSettings::default() });
    h.tracker.handle_link_down(h.now);
    h.tracker.handle_connected(h.now);
    for id in 0..5 {
        h.frame(EventType::Upsert, "101", id);
    }
    assert_eq!(h.resnapshots, 1);
}

#[test]
fn nothing_is_applied_while_offline_and_stale_fetch_answers_are_ignored() {
    let mut h = Harness::new();
    h.frame(EventType::Upsert, "101", 1);
    h.tracker.handle_link_down(h.now);
    h.tracker.handle_fetched(h.now, "101", "1", Fetched::Found(body(1, "101", "Ringing", 30, Party::Trunk)));
    h.frame(EventType::Upsert, "102", 2);
    h.drain();
    h.check("");
    assert_eq!(h.tracker.legs(), 0);
}

#[test]
fn a_monitored_park_orbit_gives_parked_live() {
    let settings = TrackerSettings { park_orbits: BTreeSet::from(["SP0".to_owned()]), ..TrackerSettings::default() };
    let mut h = Harness::with(settings);
    h.upsert(body(1, "101", "Connected", 40, Party::Trunk));
    h.remove("101", 1);
    h.upsert(body(9, "SP0", "Connected", 40, Party::Trunk));
    h.advance(2_000);
    h.remove("SP0", 9);
    h.advance(2_000);
    h.check("40 101 connected\n40 101 parked:SP0\n40 - ended");
    assert_eq!(
        level3(&h.events),
        "connected 101 source=callcontrol
parked 101 parkSlot=SP0 source=callcontrol
disconnected 101 reason=parked source=callcontrol"
    );
}

#[test]
fn route_point_legs_are_facts_not_events() {
    let mut h = Harness::new();
    let mut rp = body(5, "ROUTER", "Connected", 50, Party::Trunk);
    rp.party_did = Some("441234567890".into());
    h.upsert(rp);
    h.check("");
    let mut agent = body(6, "101", "Ringing", 50, Party::Trunk);
    agent.party_did = Some(String::new());
    h.upsert(agent);
    h.remove("ROUTER", 5);
    h.advance(2_000);
    h.check("50 101 ringing");
    let (info, _) = call_info_of(&h.events).unwrap();
    assert_eq!(info.dialled_number.as_deref(), Some("441234567890"), "the route point's DID is the call's");
}

#[test]
fn participants_without_an_id_or_a_call_id() {
    let mut h = Harness::new();
    let mut p = body(1, "101", "Ringing", 0, Party::Trunk);
    p.callid = None;
    h.upsert(p);
    h.check("101/1 101 ringing");
    h.tracker.handle_link_down(h.now);
    h.tracker.handle_connected(h.now);
    let mut no_id = body(2, "101", "Ringing", 1, Party::Trunk);
    no_id.id = None;
    h.tracker.handle_snapshot(h.now, vec![DnInfo { dn: "101".into(), dn_type: None, participants: vec![no_id] }]);
    h.drain();
    assert_eq!(h.tracker.stats().unusable_participants, 1);
    h.check("101/1 101 disconnected:unknown (reconciled)\n101/1 - ended\nresync []");
}

#[test]
fn non_participant_notifications_are_counted_and_ignored() {
    let mut h = Harness::new();
    for text in [
        r#"{"sequence":1,"event":{"event_type":0,"entity":"/callcontrol/101/devices/sip%3A101%40pbx"}}"#,
        r#"{"sequence":2,"event":{"event_type":2,"entity":"/callcontrol/ROUTER/participants/4","attached_data":{"dtmf_input":"1"}}}"#,
        r#"{"sequence":3,"event":{"event_type":7,"entity":"/callcontrol/101"}}"#,
    ] {
        h.tracker.handle_ws_event(h.now, parse_frame(text, 4096).unwrap());
    }
    h.remove("101", 99);
    h.drain();
    assert!(h.fetches.is_empty());
    assert_eq!(h.tracker.stats().ignored_events, 3);
    assert_eq!(h.tracker.stats().unknown_removes, 1);
}

// --- CDR ---------------------------------------------------------------------------------

fn cdr_settings() -> TrackerSettings {
    let mut cdr = CdrSettings::new(FieldOrder::default(), jiff::tz::TimeZone::UTC);
    cdr.extensions = ["101", "102", "10016"].iter().map(|s| (*s).to_owned()).collect();
    TrackerSettings { route_point: "ROUTER".into(), cdr: Some(cdr), ..TrackerSettings::default() }
}

/// A CDR line in the default order.
#[allow(clippy::too_many_arguments)]
fn cdr_line(
    history: &str,
    counter: i64,
    start: &str,
    answered: &str,
    end: &str,
    reason: &str,
    from: (&str, &str, &str),
    to: (&str, &str, &str),
) -> String {
    let (from_no, from_dn, from_type) = from;
    let (to_no, to_dn, to_type) = to;
    format!(
        "Call {history},00000190_{counter},00:00:10,{start},{answered},{end},{reason},{from_no},{to_no},{from_dn},{to_dn},{to_no},,{to_no},{to_dn},,,,,Chain: {from_no};{to_no};,{from_type},{to_type},{to_type},Caller,Callee,Callee,"
    )
}

fn civil_ms(s: &str) -> u64 {
    let t = crate::cdr::CivilTime::parse(s).unwrap();
    let dt = jiff::civil::DateTime::new(t.year, t.month, t.day, t.hour, t.minute, t.second, 0).unwrap();
    jiff::tz::TimeZone::UTC.to_ambiguous_timestamp(dt).compatible().unwrap().as_millisecond() as u64
}

fn checkpoints(events: &[AdapterEvent]) -> Vec<(String, Option<Vec<u8>>)> {
    events
        .iter()
        .filter_map(|e| match e {
            AdapterEvent::Checkpoint { key, value, .. } => Some((key.clone(), value.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn the_27_field_sample_is_reconstructed_when_the_live_feed_missed_it() {
    let mut settings = cdr_settings();
    settings.cdr.as_mut().unwrap().extensions = BTreeSet::from(["10016".to_owned()]);
    let mut t = Tracker::new(pbx(), settings);
    // The listener started after the call: the live feed never saw it.
    let now = UnixMillis(civil_ms("2024/06/17 06:01:00"));
    let outcome = t.handle_cdr_line(now, testdata::CDR_LINE.trim_end());
    assert_eq!(outcome, CdrOutcome::Backfilled { call: "26808".into(), signals: 3 });
    let mut events = Vec::new();
    while let Some(Output::Event(e)) = t.poll_output_now() {
        events.push(e);
    }
    let lines: Vec<String> = events.iter().filter_map(render).collect();
    assert_eq!(lines, ["26808 10016 connected [cdr]", "26808 10016 disconnected:normal [cdr]", "26808 - ended [cdr]"]);
    let times: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            AdapterEvent::Signal(s) => Some(s.at.0),
            _ => None,
        })
        .collect();
    assert_eq!(
        times,
        [civil_ms("2024/06/17 05:59:58"), civil_ms("2024/06/17 06:00:23"), civil_ms("2024/06/17 06:00:23")]
    );
    let (info, facts) = call_info_of(&events).unwrap();
    assert_eq!(info.direction, Direction::Outbound);
    assert_eq!(info.external_number.as_deref(), Some("+46703014082"));
    assert_eq!(facts.get("cdrHistoryId").map(String::as_str), Some("288831"));
    assert_eq!(facts.get("trunkDn").map(String::as_str), Some("10020"));
    // The same record again: once.
    assert_eq!(t.handle_cdr_line(now, testdata::CDR_LINE.trim_end()), CdrOutcome::Duplicate);
    let keys: Vec<String> = checkpoints(&events).into_iter().map(|(k, _)| k).collect();
    assert!(keys.contains(&"call/26808".to_owned()) && keys.contains(&"cdr/h288831".to_owned()), "{keys:?}");
}

#[test]
fn a_record_the_live_feed_could_not_have_missed_is_not_invented() {
    let mut h = Harness::with(cdr_settings());
    let line = cdr_line(
        "5",
        5,
        "2024/06/17 05:59:49",
        "",
        "2024/06/17 06:00:00",
        "TerminatedBySrc",
        ("+4412", "10000", "Line"),
        ("Ext.101", "101", "Extension"),
    );
    let now = UnixMillis(civil_ms("2024/06/17 06:00:05"));
    // Live since before the call.
    h.tracker.handle_link_down(UnixMillis(civil_ms("2024/06/17 05:00:00")));
    h.tracker.handle_connected(UnixMillis(civil_ms("2024/06/17 05:00:00")));
    h.tracker.handle_snapshot(UnixMillis(civil_ms("2024/06/17 05:00:01")), vec![]);
    assert_eq!(h.tracker.handle_cdr_line(now, &line), CdrOutcome::Unmatched);
}

#[test]
fn calls_missed_during_an_outage_are_reconstructed_once() {
    let mut h = Harness::with(cdr_settings());
    let start = "2024/06/17 05:59:49";
    h.now = UnixMillis(civil_ms("2024/06/17 05:00:00"));
    h.tracker.handle_link_down(h.now);
    h.tracker.handle_connected(h.now);
    h.tracker.handle_snapshot(h.now, vec![]);
    h.drain();
    h.take();
    // The WebSocket drops; a queue call rings 101 and 102, 102 answers, all while it is down.
    h.tracker.handle_link_down(UnixMillis(civil_ms("2024/06/17 05:59:00")));
    let line = format!(
        "Call 6,00000190_6,00:00:35,{start},2024/06/17 05:59:55,2024/06/17 06:00:30,TerminatedByDst,+441707123456,800,10000,800,441234567890,,Ext.102,102,,,,,Chain: +441707123456;800;Ext.102;,Line,Queue,Extension,ACME,Sales,Agent Two,Ext.101"
    );
    h.now = UnixMillis(civil_ms("2024/06/17 06:00:40"));
    let outcome = h.tracker.handle_cdr_line(h.now, &line);
    assert_eq!(outcome, CdrOutcome::Backfilled { call: "6".into(), signals: 7 }, "{line}");
    h.drain();
    h.check(
        "
6 - queued:800 [cdr]
6 101 ringing [cdr]
6 102 ringing [cdr]
6 102 connected [cdr]
6 101 disconnected:answered-elsewhere [cdr]
6 102 disconnected:normal [cdr]
6 - ended [cdr]",
    );
    assert_eq!(h.tracker.handle_cdr_line(h.now, &line), CdrOutcome::Duplicate);
    assert_eq!(
        level3(&h.events),
        "ringing 101 queue=800 source=cdr
ringing 102 queue=800 source=cdr
connected 102 queue=800 source=cdr
disconnected 101 reason=answered-elsewhere queue=800 source=cdr
disconnected 102 reason=normal queue=800 source=cdr"
    );
}

#[test]
fn an_unanswered_missed_call_says_who_hung_up() {
    let mut t = Tracker::new(pbx(), cdr_settings());
    let now = UnixMillis(civil_ms("2024/06/17 06:01:00"));
    let line = cdr_line(
        "7",
        7,
        "2024/06/17 05:59:49",
        "",
        "2024/06/17 06:00:00",
        "TerminatedBySrc",
        ("+4412", "10000", "Line"),
        ("Ext.101", "101", "Extension"),
    );
    t.handle_cdr_line(now, &line);
    let mut events = Vec::new();
    while let Some(Output::Event(e)) = t.poll_output_now() {
        events.push(e);
    }
    assert_eq!(level3(&events), "ringing 101 source=cdr\ndisconnected 101 reason=caller-abandoned source=cdr");
}

#[test]
fn a_park_after_the_fact_joins_the_live_call_and_survives_a_restart() {
    let mut h = Harness::with(cdr_settings());
    h.now = UnixMillis(civil_ms("2024/06/17 05:59:50"));
    h.upsert(body(1, "101", "Ringing", 1264, Party::Trunk));
    h.upsert(body(1, "101", "Connected", 1264, Party::Trunk));
    h.remove("101", 1);
    h.advance(2_000);
    h.check("1264 101 ringing\n1264 101 connected\n1264 101 disconnected:normal\n1264 - ended");
    // Restart: a new tracker from the checkpoints.
    let mut state = listener_core::AdapterState::new();
    for (k, v) in checkpoints(&h.events) {
        match v {
            Some(v) => state.insert(k, v),
            None => state.remove(&k),
        };
    }
    let mut t = Tracker::new(pbx(), cdr_settings());
    assert_eq!(t.restore(h.now, &state), 0);
    // The record: 101 sent the call to park orbit SP1.
    let line = cdr_line(
        "8",
        1264,
        "2024/06/17 05:59:55",
        "2024/06/17 05:59:55",
        "2024/06/17 06:00:20",
        "TerminatedBySrc",
        ("Ext.101", "101", "Extension"),
        ("SP1", "SP1", "parking_orbit"),
    );
    let outcome = t.handle_cdr_line(h.now.plus_ms(30_000), &line);
    assert_eq!(outcome, CdrOutcome::Merged { call: "1264".into(), parked: 1 });
    let mut after = Vec::new();
    while let Some(Output::Event(e)) = t.poll_output_now() {
        after.push(e);
    }
    let lines: Vec<String> = after.iter().filter_map(render).collect();
    assert_eq!(lines, ["1264 101 parked:SP1 [cdr]", "1264 - ended [cdr]"]);
    // Same call, same childSid: the start time came back from the checkpoint.
    let started = |e: &AdapterEvent| match e {
        AdapterEvent::Signal(s) => match &s.body {
            SignalBody::Call(c) => Some(c.call_started),
            _ => None,
        },
        _ => None,
    };
    assert_eq!(h.events.iter().find_map(started), after.iter().find_map(started));
    let mut all = h.events.clone();
    all.extend(after);
    assert_eq!(
        level3(&all),
        "ringing 101 source=callcontrol
connected 101 source=callcontrol
disconnected 101 reason=normal source=callcontrol
parked 101 parkSlot=SP1 source=cdr"
    );
    // Once: the record again is a duplicate, and a second record of the park adds nothing.
    assert_eq!(t.handle_cdr_line(h.now.plus_ms(31_000), &line), CdrOutcome::Duplicate);
    let again = line.replace("Call 8,", "Call 9,");
    assert_eq!(t.handle_cdr_line(h.now.plus_ms(31_000), &again), CdrOutcome::Merged { call: "1264".into(), parked: 0 });
}

#[test]
fn a_park_reported_while_the_call_is_live_is_told_when_it_ends() {
    let mut h = Harness::with(cdr_settings());
    h.now = UnixMillis(civil_ms("2024/06/17 05:59:50"));
    h.upsert(body(1, "101", "Connected", 77, Party::Trunk));
    h.remove("101", 1);
    h.upsert(body(2, "102", "Connected", 77, Party::Trunk));
    h.advance(2_000);
    let line = cdr_line(
        "10",
        77,
        "2024/06/17 05:59:51",
        "2024/06/17 05:59:51",
        "2024/06/17 05:59:52",
        "TerminatedBySrc",
        ("Ext.101", "101", "Extension"),
        ("SP1", "SP1", "parking_orbit"),
    );
    assert_eq!(h.tracker.handle_cdr_line(h.now, &line), CdrOutcome::Merged { call: "77".into(), parked: 1 });
    h.drain();
    h.remove("102", 2);
    h.advance(2_000);
    h.check(
        "
77 101 connected
77 102 connected
77 101 disconnected:normal
77 102 disconnected:normal
77 - ended
77 101 parked:SP1 [cdr]
77 - ended [cdr]",
    );
}

#[test]
fn checkpoints_are_bounded_and_forgotten() {
    let mut settings = cdr_settings();
    settings.cdr.as_mut().unwrap().max_remembered = 2;
    let mut h = Harness::with(settings);
    for call in 0..4 {
        h.upsert(body(call, "101", "Connected", call, Party::Trunk));
        h.remove("101", call);
        h.advance(2_000);
    }
    let cps = checkpoints(&h.events);
    let deleted: Vec<&str> = cps.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| k.as_str()).collect();
    assert_eq!(deleted, ["call/0", "call/1"]);
    h.advance(3_600_000);
    let cps = checkpoints(&h.events);
    let deleted: BTreeSet<&str> = cps.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| k.as_str()).collect();
    assert_eq!(deleted, BTreeSet::from(["call/0", "call/1", "call/2", "call/3"]));
}

#[test]
fn malformed_and_disabled() {
    let mut t = Tracker::new(pbx(), TrackerSettings::default());
    assert_eq!(t.handle_cdr_line(UnixMillis(T0), "x"), CdrOutcome::Disabled);
    let mut t = Tracker::new(pbx(), cdr_settings());
    assert!(matches!(t.handle_cdr_line(UnixMillis(T0), "a,b,c"), CdrOutcome::Malformed(_)));
    let mut unknown = cdr_settings();
    unknown.cdr.as_mut().unwrap().extensions = BTreeSet::from(["999".to_owned()]);
    let mut t = Tracker::new(pbx(), unknown);
    let line = cdr_line(
        "11",
        11,
        "2024/06/17 05:59:49",
        "",
        "2024/06/17 06:00:00",
        "TerminatedBySrc",
        ("+4412", "10000", "Line"),
        ("Ext.101", "101", "Extension"),
    );
    assert_eq!(t.handle_cdr_line(UnixMillis(civil_ms("2024/06/17 06:01:00")), &line), CdrOutcome::NotMonitored);
    let mut t = Tracker::new(pbx(), cdr_settings());
    assert_eq!(t.handle_cdr_line(UnixMillis(civil_ms("2024/06/19 06:01:00")), &line), CdrOutcome::TooOld);
}

/// The timer table against the simplest model (a map and a sorted set, what it replaced):
/// the same next deadline and the same due timers in the same order after any sequence of
/// sets, resets, removals and polls, and a heap bounded by the timers set.
mod timers {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::super::{Timer, Timers};
    use super::UnixMillis;

    #[derive(Debug, Clone)]
    enum Op {
        Set(u8, u64),
        Remove(u8),
        TakeDue(u64),
    }

    fn timer(n: u8) -> Timer {
        Timer::Removal((format!("{}", 100 + n % 4), format!("{}", n / 4)))
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..12, 0u64..8).prop_map(|(t, at)| Op::Set(t, at)),
            3 => (0u8..12).prop_map(Op::Remove),
            1 => (0u64..8).prop_map(Op::TakeDue),
        ]
    }

    proptest! {
        #[test]
        fn behaves_as_a_sorted_set(ops in proptest::collection::vec(op(), 0..400)) {
            let mut timers = Timers::default();
            let mut by_timer: BTreeMap<Timer, u64> = BTreeMap::new();
            let mut by_deadline: BTreeSet<(u64, Timer)> = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Set(t, at) => {
                        timers.insert(timer(t), UnixMillis(at));
                        if let Some(old) = by_timer.insert(timer(t), at) {
                            by_deadline.remove(&(old, timer(t)));
                        }
                        by_deadline.insert((at, timer(t)));
                    }
                    Op::Remove(t) => {
                        timers.remove(&timer(t));
                        if let Some(at) = by_timer.remove(&timer(t)) {
                            by_deadline.remove(&(at, timer(t)));
                        }
                    }
                    Op::TakeDue(now) => {
                        let mut expected = Vec::new();
                        while let Some((at, _)) = by_deadline.first() && *at <= now {
                            let (_, t) = by_deadline.pop_first().unwrap();
                            by_timer.remove(&t);
                            expected.push(t);
                        }
                        prop_assert_eq!(timers.take_due(UnixMillis(now)), expected);
                    }
                }
                prop_assert_eq!(timers.next(), by_deadline.first().map(|(at, _)| UnixMillis(*at)));
                prop_assert!(timers.heap.len() <= 2 * timers.by_timer.len() + 64);
            }
        }
    }
}
