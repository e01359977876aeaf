//! The tracker by data, with simulated time: scripts of SMDR and Delta2 lines at given
//! instants, timers fired as the clock passes them (never sleeping), outputs as golden text
//! with UTC times.

use listener_core::{AdapterEvent, AdapterState, CallChange, PbxId, PbxType, SignalBody, UnixMillis};

use super::*;
use crate::clock::PbxClock;
use crate::delta2::status_line;

fn pbx() -> PbxId {
    PbxId::new("branch", PbxType::new("avaya-r9"))
}

/// Milliseconds of a UTC time written `2008-06-28T08:28:50`.
fn utc(s: &str) -> UnixMillis {
    let ts: jiff::Timestamp = format!("{s}Z").parse().unwrap();
    UnixMillis(ts.as_millisecond() as u64)
}

fn hms(t: UnixMillis) -> String {
    let ts = jiff::Timestamp::from_millisecond(t.0 as i64).unwrap();
    ts.strftime("%H:%M:%S").to_string()
}

enum In {
    Smdr(&'static str),
    SmdrOwned(String),
    Delta2(String),
    Delta2Link(bool),
}

struct Run {
    tracker: Tracker,
    out: Vec<String>,
    state: AdapterState,
    checkpoints: bool,
}

impl Run {
    fn new(settings: TrackerSettings) -> Run {
        Run {
            tracker: Tracker::new(pbx(), PbxClock::new("Europe/London").unwrap(), settings),
            out: Vec::new(),
            state: AdapterState::new(),
            checkpoints: false,
        }
    }

    fn restarted(&self, settings: TrackerSettings, now: UnixMillis) -> Run {
        let mut run = Run::new(settings);
        run.tracker.restore(now, &self.state);
        run.state = self.state.clone();
        run.drain();
        run.out.clear();
        run
    }

    fn drain(&mut self) {
        loop {
            match self.tracker.poll_output() {
                Output::Event(AdapterEvent::Signal(s)) => {
                    let SignalBody::Call(c) = &s.body else { panic!("no extension signals here") };
                    let change = match &c.change {
                        CallChange::Ringing => "ringing".to_owned(),
                        CallChange::Connected => "connected".to_owned(),
                        CallChange::Held => "held".to_owned(),
                        CallChange::Resumed => "resumed".to_owned(),
                        CallChange::Parked { slot } => format!("parked {}", slot.as_deref().unwrap_or("-")),
                        CallChange::Unparked { slot } => format!("unparked {}", slot.as_deref().unwrap_or("-")),
                        CallChange::Transferred { to } => format!("transferred {}", to.as_deref().unwrap_or("-")),
                        CallChange::Queued { queue } => format!("queued {}", queue.as_deref().unwrap_or("-")),
                        CallChange::Disconnected { reason } => format!("disconnected {}", reason.as_str()),
                        CallChange::Ended => "ended".to_owned(),
                    };
                    let facts: Vec<String> = s.facts.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let facts = if facts.is_empty() { String::new() } else { format!(" {{{}}}", facts.join(" ")) };
                    self.out.push(format!(
                        "{} {} {} {} {change}{facts}",
                        hms(s.at),
                        s.source,
                        c.call,
                        c.extension.as_ref().map_or("-", |e| e.0.as_str())
                    ));
                }
                Output::Event(AdapterEvent::Checkpoint { key, value, .. }) => {
                    if self.checkpoints {
                        self.out.push(format!("checkpoint {key} {}", if value.is_some() { "set" } else { "del" }));
                    }
                    match value {
                        Some(v) => self.state.insert(key, v),
                        None => self.state.remove(&key),
                    };
                }
                Output::Event(AdapterEvent::Resync { live_calls, .. }) => {
                    self.out.push(format!("resync {live_calls:?}"));
                }
                Output::Event(other) => panic!("unexpected {other:?}"),
                Output::Timeout(_) => return,
            }
        }
    }

    fn fire_until(&mut self, until: UnixMillis) {
        for _ in 0..10_000 {
            match self.tracker.poll_output() {
                Output::Timeout(Some(t)) if t <= until => {
                    self.tracker.handle_timeout(t);
                    self.drain();
                }
                Output::Timeout(_) => return,
                Output::Event(_) => panic!("drain first"),
            }
        }
        panic!("timers never settle");
    }

    fn feed(&mut self, steps: Vec<(UnixMillis, In)>) -> &mut Run {
        for (t, input) in steps {
            self.fire_until(t);
            match input {
                In::Smdr(l) => {
                    self.tracker.handle_smdr_line(t, l.as_bytes());
                }
                In::SmdrOwned(l) => {
                    self.tracker.handle_smdr_line(t, l.as_bytes());
                }
                In::Delta2(l) => {
                    self.tracker.handle_delta2_line(t, l.as_bytes());
                }
                In::Delta2Link(up) => self.tracker.handle_delta2_link(t, up),
            }
            self.drain();
        }
        self
    }

    fn finish(&mut self) -> &mut Run {
        self.fire_until(UnixMillis(u64::MAX));
        self
    }

    fn check(&self, want: &str) {
        let got = self.out.join("\n");
        let want: Vec<&str> = want.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        assert_eq!(got, want.join("\n"), "\n--- got ---\n{got}\n");
    }
}

const LOST: &str =
    "2008/06/28 09:28:41,00:00:00,9,8004206,I,4324,4324,,0,1000014155,0,E4324,Joe Bloggs,T9161,LINE 5.1,0,0";
const XFER_1: &str =
    "2008/06/28 09:30:57,00:00:13,7,01707392200,I,299999,299999,,0,1000014160,1,E4750,John Smith,T9002,LINE 1.2,11,0";
const XFER_2: &str =
    "2008/06/28 09:30:57,00:00:21,0,01707392200,I,299999,299999,,0,1000014160,0,V9502,VM Channel 2,T9002,LINE 1.2,0,0";

fn smdr_only() -> TrackerSettings {
    TrackerSettings { segment_timeout_ms: 600_000, ..TrackerSettings::default() }
}

#[test]
fn summer_time_calls_are_placed_in_london_time() {
    // 09:28:41 BST is 08:28:41 UTC; records arrive when their segment ends.
    let mut run = Run::new(smdr_only());
    run.feed(vec![
        (utc("2008-06-28T08:28:50"), In::Smdr(LOST)),
        (utc("2008-06-28T08:31:28"), In::Smdr(XFER_1)),
        (utc("2008-06-28T08:31:49"), In::Smdr(XFER_2)),
    ])
    .finish()
    .check(
        "08:28:41 smdr 1000014155 4324 ringing
         08:28:50 smdr 1000014155 4324 disconnected caller-abandoned
         08:28:50 smdr 1000014155 - ended
         08:30:57 smdr 1000014160 4750 ringing
         08:31:04 smdr 1000014160 4750 connected
         08:31:17 smdr 1000014160 4750 held {timeReconstructed=true}
         08:31:28 smdr 1000014160 4750 transferred voicemail
         08:31:49 smdr 1000014160 - ended",
    );
}

#[test]
fn replays_and_repeated_segments_emit_nothing_twice() {
    let mut run = Run::new(smdr_only());
    run.feed(vec![
        (utc("2008-06-28T08:28:50"), In::Smdr(LOST)),
        (utc("2008-06-28T08:31:28"), In::Smdr(XFER_1)),
        // The link broke and the IP Office replays its buffer.
        (utc("2008-06-28T08:40:00"), In::Smdr(LOST)),
        (utc("2008-06-28T08:40:00"), In::Smdr(XFER_1)),
        (utc("2008-06-28T08:40:01"), In::Smdr(XFER_2)),
        (utc("2008-06-28T08:40:02"), In::Smdr(XFER_2)),
    ])
    .finish();
    assert_eq!(run.out.len(), 8, "{:#?}", run.out);
    assert_eq!(run.out.iter().filter(|l| l.ends_with("ended")).count(), 2);
    assert_eq!(run.tracker.handle_smdr_line(utc("2008-06-28T09:00:00"), LOST.as_bytes()), SmdrHandled::Duplicate);
}

#[test]
fn a_restart_mid_call_loses_nothing_and_repeats_nothing() {
    let mut one = Run::new(smdr_only());
    one.feed(vec![
        (utc("2008-06-28T08:28:50"), In::Smdr(LOST)),
        (utc("2008-06-28T08:31:28"), In::Smdr(XFER_1)),
        (utc("2008-06-28T08:31:49"), In::Smdr(XFER_2)),
    ])
    .finish();
    // The same stream, with a restart after the first segment of the second call; the PBX
    // then replays everything it still has buffered.
    let mut before = Run::new(smdr_only());
    before.checkpoints = true;
    before.feed(vec![(utc("2008-06-28T08:28:50"), In::Smdr(LOST)), (utc("2008-06-28T08:31:28"), In::Smdr(XFER_1))]);
    assert!(
        before.out.contains(&"checkpoint smdr-pending/1000014160@2008/06/28 09:30:57 set".to_owned()),
        "{:#?}",
        before.out
    );
    let mut after = before.restarted(smdr_only(), utc("2008-06-28T08:31:40"));
    after
        .feed(vec![
            (utc("2008-06-28T08:31:49"), In::Smdr(LOST)),
            (utc("2008-06-28T08:31:49"), In::Smdr(XFER_1)),
            (utc("2008-06-28T08:31:49"), In::Smdr(XFER_2)),
        ])
        .finish();
    let signals = |r: &Run| r.out.iter().filter(|l| !l.starts_with("checkpoint")).cloned().collect::<Vec<_>>();
    let mut joined = signals(&before);
    joined.extend(signals(&after));
    assert_eq!(joined, one.out);
    // What is left to remember: the two calls, nothing pending.
    let keys: Vec<&String> = after.state.keys().collect();
    assert_eq!(keys, ["smdr-done/1000014155@2008/06/28 09:28:41", "smdr-done/1000014160@2008/06/28 09:30:57"]);
}

#[test]
fn remembered_calls_are_bounded_and_their_checkpoints_deleted() {
    let settings = TrackerSettings { remember_calls: 2, ..smdr_only() };
    let mut run = Run::new(settings);
    let lines: Vec<String> =
        (1..=4).map(|i| format!("2024/01/0{i} 10:00:00,00:00:05,2,201,O,202,202,,1,{i},0,E201,A,E202,B,0,0")).collect();
    run.feed(lines.iter().map(|l| (utc("2024-01-05T00:00:00"), In::SmdrOwned(l.clone()))).collect());
    let keys: Vec<&String> = run.state.keys().collect();
    assert_eq!(keys, ["smdr-done/3@2024/01/03 10:00:00", "smdr-done/4@2024/01/04 10:00:00"]);
}

#[test]
fn a_missing_last_segment_times_out_flagged() {
    let mut run = Run::new(smdr_only());
    run.feed(vec![(utc("2008-06-28T08:31:28"), In::Smdr(XFER_1))]).finish().check(
        "08:30:57 smdr 1000014160 4750 ringing {smdrIncomplete=true}
         08:31:04 smdr 1000014160 4750 connected {smdrIncomplete=true}
         08:31:17 smdr 1000014160 4750 held {smdrIncomplete=true timeReconstructed=true}
         08:31:28 smdr 1000014160 4750 disconnected unknown {smdrIncomplete=true}
         08:31:28 smdr 1000014160 - ended {smdrIncomplete=true}",
    );
    // The late last segment is then a duplicate of an emitted call.
    assert_eq!(run.tracker.handle_smdr_line(utc("2008-06-28T09:00:00"), XFER_2.as_bytes()), SmdrHandled::Duplicate);
}

#[test]
fn dst_gap_and_repeated_hour() {
    let mut run = Run::new(smdr_only());
    // 2024-03-31 01:30 London does not exist (read as 01:30 GMT = 01:30 UTC); 2024-10-27 01:30
    // happens twice: a record arriving at 01:31 UTC (the second 01:30) is the later one.
    run.feed(vec![
        (
            utc("2024-03-31T01:31:00"),
            In::Smdr("2024/03/31 01:30:00,00:00:50,5,0123,I,201,201,,0,5,0,E201,A,T9001,L,0,0"),
        ),
        (
            utc("2024-10-27T01:31:00"),
            In::Smdr("2024/10/27 01:30:00,00:00:50,5,0123,I,201,201,,0,6,0,E201,A,T9001,L,0,0"),
        ),
        (
            utc("2024-10-27T00:31:00"),
            In::Smdr("2024/10/27 01:30:00,00:00:50,5,0123,I,201,201,,0,7,0,E201,A,T9001,L,0,0"),
        ),
    ])
    .finish()
    .check(
        "01:30:00 smdr 5 201 ringing {smdrLocalTime=dst-gap}
         01:30:05 smdr 5 201 connected {smdrLocalTime=dst-gap}
         01:30:55 smdr 5 201 disconnected normal {smdrLocalTime=dst-gap}
         01:30:55 smdr 5 - ended {smdrLocalTime=dst-gap}
         01:30:00 smdr 6 201 ringing {smdrLocalTime=dst-repeated}
         01:30:05 smdr 6 201 connected {smdrLocalTime=dst-repeated}
         01:30:55 smdr 6 201 disconnected normal {smdrLocalTime=dst-repeated}
         01:30:55 smdr 6 - ended {smdrLocalTime=dst-repeated}
         00:30:00 smdr 7 201 ringing {smdrLocalTime=dst-repeated}
         00:30:05 smdr 7 201 connected {smdrLocalTime=dst-repeated}
         00:30:55 smdr 7 201 disconnected normal {smdrLocalTime=dst-repeated}
         00:30:55 smdr 7 - ended {smdrLocalTime=dst-repeated}",
    );
}

#[test]
fn malformed_lines_are_items_and_a_start_without_seconds_is_flagged() {
    let mut run = Run::new(smdr_only());
    assert!(matches!(run.tracker.handle_smdr_line(UnixMillis(0), b"garbage"), SmdrHandled::Malformed(_)));
    let feb30 = "2024/02/30 10:00:00,00:00:05,2,201,O,202,202,,1,9,0,E201,A,E202,B,0,0";
    let SmdrHandled::Malformed(e) = run.tracker.handle_smdr_line(UnixMillis(0), feb30.as_bytes()) else { panic!() };
    assert_eq!(e.kind(), "call-start");
    run.feed(vec![(
        utc("2008-07-09T17:01:00"),
        In::Smdr("2008/07/09 18:00,00:00:03,7,207,O,203,203,,1,1000037,0,E207,Extn207,E203,Extn203,0,0"),
    )])
    .check(
        "17:00:00 smdr 1000037 203 ringing {smdrStartPrecision=minute}
         17:00:07 smdr 1000037 203 connected {smdrStartPrecision=minute}
         17:00:07 smdr 1000037 207 connected {smdrStartPrecision=minute}
         17:00:10 smdr 1000037 207 disconnected normal {smdrStartPrecision=minute}
         17:00:10 smdr 1000037 203 disconnected normal {smdrStartPrecision=minute}
         17:00:10 smdr 1000037 - ended {smdrStartPrecision=minute}",
    );
}

// ------------------------------------------------------------------ Delta2

/// A Delta2 status line: A end `a` (name `a_name`, state), B end (0 = none), targets, cause.
fn s(call: &str, a_state: u32, b: (&str, &str, u32), list: &str, cause: u32, extra: &[(usize, &str)]) -> In {
    let (a_state, b_state, cause) = (a_state.to_string(), b.2.to_string(), cause.to_string());
    let mut values: Vec<(usize, &str)> = vec![
        (1, "11"),
        (2, b.0),
        (3, a_state.as_str()),
        (4, b_state.as_str()),
        (9, "Line 5"),
        (10, b.1),
        (11, list),
        (15, "441234567890"),
        (17, "447700900123"),
        (25, cause.as_str()),
        (50, call),
    ];
    values.extend_from_slice(extra);
    In::Delta2(status_line(&values))
}

fn with_delta2() -> TrackerSettings {
    TrackerSettings { delta2: true, ..smdr_only() }
}

#[test]
fn delta2_hunt_group_answered_by_another_extension() {
    let t = utc("2024-05-01T10:00:00");
    let mut run = Run::new(TrackerSettings { smdr: false, ..with_delta2() });
    run.feed(vec![
        (t, s("501", 10, ("0", "", 0), "", 0, &[(29, "Sales")])),
        (t.plus_ms(1000), s("501", 1, ("0", "", 0), "Alice (4001);Bob (4002);4003", 0, &[])),
        (t.plus_ms(5000), s("501", 2, ("12", "Bob (4002)", 2), "", 0, &[])),
        (t.plus_ms(9000), s("501", 2, ("12", "Bob (4002)", 12), "", 0, &[])),
        (t.plus_ms(12000), s("501", 2, ("12", "Bob (4002)", 2), "", 0, &[])),
        (t.plus_ms(20000), In::Delta2("CALL: D 11,12,501".into())),
    ])
    .finish()
    .check(
        "10:00:00 delta2 501 - queued Sales
         10:00:01 delta2 501 4001 ringing
         10:00:01 delta2 501 4002 ringing
         10:00:01 delta2 501 4003 ringing
         10:00:05 delta2 501 4001 disconnected answered-elsewhere
         10:00:05 delta2 501 4003 disconnected answered-elsewhere
         10:00:05 delta2 501 4002 connected
         10:00:09 delta2 501 4002 held
         10:00:12 delta2 501 4002 resumed
         10:00:20 delta2 501 4002 disconnected normal
         10:00:20 delta2 501 - ended",
    );
}

#[test]
fn delta2_park_and_unpark_and_transfer() {
    let t = utc("2024-05-01T10:00:00");
    let mut run = Run::new(TrackerSettings { smdr: false, ..with_delta2() });
    run.feed(vec![
        (t, s("502", 2, ("21", "Alice (4001)", 2), "", 0, &[])),
        (t.plus_ms(3000), s("502", 11, ("0", "", 0), "", 117, &[(42, "1")])),
        (t.plus_ms(6000), In::Delta2("CALL: A 21,11,502".into())),
        (t.plus_ms(6000), s("502", 2, ("22", "Bob (4002)", 2), "", 118, &[])),
        (t.plus_ms(9000), s("502", 2, ("23", "Carol (4003)", 2), "", 126, &[])),
        (t.plus_ms(15000), In::Delta2("CALL:D 11,23,502".into())),
    ])
    .finish()
    .check(
        "10:00:00 delta2 502 4001 connected
         10:00:03 delta2 502 4001 parked 1
         10:00:06 delta2 502 4002 unparked 1
         10:00:09 delta2 502 4002 transferred 4003
         10:00:09 delta2 502 4003 connected
         10:00:15 delta2 502 4003 disconnected normal
         10:00:15 delta2 502 - ended",
    );
}

const D2_CALL_SMDR: &str =
    "2024/05/01 11:00:00,00:00:10,4,447700900123,I,441234567890,441234567890,,0,777,0,E4001,Alice,T9005,Line 5.1,0,0";

#[test]
fn smdr_adds_nothing_to_a_call_delta2_showed_whole() {
    let t = utc("2024-05-01T10:00:00");
    let mut run = Run::new(with_delta2());
    run.feed(vec![
        (t, s("777", 1, ("21", "Alice (4001)", 1), "", 0, &[])),
        (t.plus_ms(4000), s("777", 2, ("21", "Alice (4001)", 2), "", 0, &[])),
        (t.plus_ms(14000), In::Delta2("CALL: D 11,21,777".into())),
        (t.plus_ms(14500), In::Smdr(D2_CALL_SMDR)),
    ])
    .finish()
    .check(
        "10:00:00 delta2 777 4001 ringing
         10:00:04 delta2 777 4001 connected
         10:00:14 delta2 777 4001 disconnected normal
         10:00:14 delta2 777 - ended",
    );
    // SMDR's record first, Delta2's end a moment later: the record waits for it.
    let mut race = Run::new(with_delta2());
    race.feed(vec![
        (t, s("777", 1, ("21", "Alice (4001)", 1), "", 0, &[])),
        (t.plus_ms(4000), s("777", 2, ("21", "Alice (4001)", 2), "", 0, &[])),
        (t.plus_ms(14000), In::Smdr(D2_CALL_SMDR)),
        (t.plus_ms(14300), In::Delta2("CALL: D 11,21,777".into())),
    ])
    .finish();
    assert_eq!(race.out.len(), 4, "{:#?}", race.out);
    assert!(race.out.iter().all(|l| l.contains(" delta2 ")));
}

#[test]
fn smdr_completes_a_call_delta2_lost_and_emits_one_it_never_saw() {
    let t = utc("2024-05-01T10:00:00");
    let mut run = Run::new(with_delta2());
    run.feed(vec![
        (t, s("777", 1, ("21", "Alice (4001)", 1), "", 0, &[])),
        (t.plus_ms(4000), s("777", 2, ("21", "Alice (4001)", 2), "", 0, &[])),
        // The relay link drops; the call ends meanwhile; SMDR says how.
        (t.plus_ms(6000), In::Delta2Link(false)),
        (t.plus_ms(14000), In::Smdr(D2_CALL_SMDR)),
        // A call during the outage, which Delta2 never saw.
        (
            t.plus_ms(30000),
            In::Smdr("2024/05/01 11:00:20,00:00:00,6,447700900999,I,441234567890,441234567890,,0,778,0,E4002,Bob,T9005,Line 5.2,0,0"),
        ),
        (t.plus_ms(31000), In::Delta2Link(true)),
    ])
    .finish()
    .check(
        "10:00:00 delta2 777 4001 ringing
         10:00:04 delta2 777 4001 connected
         10:00:14 smdr 777 4001 disconnected normal {completedBy=smdr}
         10:00:14 smdr 777 - ended {completedBy=smdr}
         10:00:20 smdr 778 4002 ringing
         10:00:26 smdr 778 4002 disconnected caller-abandoned
         10:00:26 smdr 778 - ended",
    );
}

#[test]
fn delta2_without_smdr_resyncs_on_the_relays_snapshot() {
    let t = utc("2024-05-01T10:00:00");
    let mut run = Run::new(TrackerSettings { smdr: false, ..with_delta2() });
    run.feed(vec![
        (t, s("801", 2, ("21", "Alice (4001)", 2), "", 0, &[])),
        (t.plus_ms(1000), s("802", 2, ("22", "Bob (4002)", 2), "", 0, &[])),
        (t.plus_ms(2000), In::Delta2Link(false)),
        (t.plus_ms(9000), In::Delta2Link(true)),
        (t.plus_ms(9001), s("802", 2, ("22", "Bob (4002)", 2), "", 0, &[])),
        (t.plus_ms(9002), In::Delta2("RELAY: SNAPSHOT END".into())),
        // A late status of the call that is gone changes nothing.
        (t.plus_ms(9003), s("801", 2, ("21", "Alice (4001)", 2), "", 0, &[])),
    ])
    .finish()
    .check(
        "10:00:00 delta2 801 4001 connected
         10:00:01 delta2 802 4002 connected
         resync [PbxCallId(\"802\")]",
    );
}

#[test]
fn delta2_state_survives_a_restart_and_smdr_completes_it() {
    let t = utc("2024-05-01T10:00:00");
    let mut before = Run::new(with_delta2());
    before.feed(vec![
        (t, s("777", 1, ("21", "Alice (4001)", 1), "", 0, &[])),
        (t.plus_ms(4000), s("777", 2, ("21", "Alice (4001)", 2), "", 0, &[])),
    ]);
    let mut after = before.restarted(with_delta2(), t.plus_ms(8000));
    after.feed(vec![(t.plus_ms(14000), In::Smdr(D2_CALL_SMDR))]).finish().check(
        "10:00:14 smdr 777 4001 disconnected normal {completedBy=smdr}
         10:00:14 smdr 777 - ended {completedBy=smdr}",
    );
}

#[test]
fn relay_comms_trouble_is_a_gap() {
    let t = utc("2024-05-01T10:00:00");
    let mut run = Run::new(with_delta2());
    run.feed(vec![
        (t, s("777", 1, ("21", "Alice (4001)", 1), "", 0, &[])),
        (t.plus_ms(2000), In::Delta2("RELAY: COMMS 3 7".into())),
        (t.plus_ms(14000), In::Smdr(D2_CALL_SMDR)),
    ])
    .finish()
    .check(
        "10:00:00 delta2 777 4001 ringing
         10:00:04 smdr 777 4001 connected {completedBy=smdr}
         10:00:14 smdr 777 4001 disconnected normal {completedBy=smdr}
         10:00:14 smdr 777 - ended {completedBy=smdr}",
    );
}

#[test]
fn smdr_waits_for_a_healthy_delta2_that_lags_and_late_delta2_lines_are_dropped() {
    let t = utc("2024-05-01T10:00:00");
    // SMDR's record comes before Delta2's first line of the call: it waits; Delta2 shows the
    // call whole within the grace time; SMDR adds nothing.
    let mut run = Run::new(with_delta2());
    run.feed(vec![
        (t, In::Delta2Link(true)),
        (t.plus_ms(14_000), In::Smdr(D2_CALL_SMDR)),
        (t.plus_ms(14_100), s("777", 1, ("21", "Alice (4001)", 1), "", 0, &[])),
        (t.plus_ms(14_200), s("777", 2, ("21", "Alice (4001)", 2), "", 0, &[])),
        (t.plus_ms(14_300), In::Delta2("CALL: D 11,21,777".into())),
    ])
    .finish();
    assert!(run.out.iter().all(|l| l.contains(" delta2 ")), "{:#?}", run.out);
    assert_eq!(run.out.len(), 4);
    // Delta2 lags more than the grace time: SMDR emits the call, Delta2's late lines are dropped.
    let mut late = Run::new(with_delta2());
    late.feed(vec![
        (t, In::Delta2Link(true)),
        (t.plus_ms(14_000), In::Smdr(D2_CALL_SMDR)),
        (t.plus_ms(30_000), s("777", 2, ("21", "Alice (4001)", 2), "", 0, &[])),
        (t.plus_ms(30_100), In::Delta2("CALL: D 11,21,777".into())),
    ])
    .finish()
    .check(
        "10:00:00 smdr 777 4001 ringing
         10:00:04 smdr 777 4001 connected
         10:00:14 smdr 777 4001 disconnected normal
         10:00:14 smdr 777 - ended",
    );
}

mod split {
    use proptest::prelude::*;

    use super::*;
    use crate::codec::{Line, decode_chunks};
    use crate::testdata::{SMDR_DOC_EXAMPLES, truncated_examples_dated};

    /// Every event the tracker emits for `chunks` of an SMDR byte stream.
    fn events(chunks: &[&[u8]]) -> Vec<AdapterEvent> {
        let mut tracker = Tracker::new(pbx(), PbxClock::new("Europe/London").unwrap(), smdr_only());
        let mut out = Vec::new();
        for line in decode_chunks(4096, chunks) {
            if let Line::Text(t) = line {
                tracker.handle_smdr_line(UnixMillis(1_300_000_000_000), &t);
            }
        }
        tracker.handle_timeout(UnixMillis(u64::MAX / 2));
        while let Output::Event(e) = tracker.poll_output() {
            out.push(e);
        }
        out
    }

    proptest! {
        /// Any split of the byte stream gives the same records, and so the same events.
        #[test]
        fn any_split_of_the_samples_gives_the_same_events(cuts in proptest::collection::vec(0usize..2000, 0..10)) {
            let mut stream = SMDR_DOC_EXAMPLES.to_vec();
            stream.extend_from_slice(&truncated_examples_dated());
            let whole = events(&[&stream]);
            prop_assert!(whole.len() > 40);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(stream.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts {
                chunks.push(&stream[at..c]);
                at = c;
            }
            chunks.push(&stream[at..]);
            prop_assert_eq!(events(&chunks), whole);
        }
    }
}

#[test]
fn a_delta2_call_lost_in_a_gap_that_nothing_completes_is_closed() {
    let t = utc("2024-05-01T10:00:00");
    let mut run = Run::new(with_delta2());
    run.feed(vec![
        (t, In::Delta2Link(true)),
        (t.plus_ms(1000), s("901", 2, ("21", "Alice (4001)", 2), "", 0, &[])),
        (t.plus_ms(2000), In::Delta2Link(false)),
    ])
    .finish()
    .check(
        "10:00:01 delta2 901 4001 connected
         10:10:02 delta2 901 4001 disconnected unknown {delta2Lost=true}
         10:10:02 delta2 901 - ended {delta2Lost=true}",
    );
}

mod digits {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn decimal_digits_edge_cases_read_as_to_string() {
        for n in [0, 1, 9, 10, 11, 99, 100, 101, 999, 1_000, 1_000_000, 1_000_014_155, u64::MAX - 1, u64::MAX] {
            assert_eq!(decimal(n), n.to_string());
        }
    }

    proptest! {
        /// Digits, keys and values written by hand read as `to_string` and `format!` write them.
        #[test]
        fn hand_written_numbers_and_keys_read_as_fmt_writes_them(
            n in any::<u64>(),
            small in 0u64..100_000,
            call_id in any::<u64>(),
            (year, month, day) in (1970i16..=9999, 1i8..=12, 1i8..=31),
            (hour, minute, second, has_seconds) in (0i8..=23, 0i8..=59, 0i8..=59, any::<bool>()),
        ) {
            prop_assert_eq!(decimal(n), n.to_string());
            prop_assert_eq!(decimal(small), small.to_string());
            // A start without seconds has 0 there (as the parser makes it).
            let second = if has_seconds { second } else { 0 };
            let start = CallStart { year, month, day, hour, minute, second, has_seconds };
            let key = SmdrKey { call_id, start };
            prop_assert_eq!(key.with_prefix(SMDR_DONE), format!("{SMDR_DONE}{call_id}@{start}"));
            prop_assert_eq!(SmdrKey::parse(&key.to_string()), Some(key));
        }
    }
}
