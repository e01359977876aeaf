//! SMDR framing, records and the reconstruction on arbitrary bytes.
//!
//! Properties, beyond "no panic":
//! - the lines (and so the records) do not depend on how the bytes were split into reads
//!   (whole vs. split at a point the input chooses vs. byte by byte), and no line is empty or
//!   longer than the limit;
//! - fed to the tracker, every call that gets a signal ends (`Ended`) by the time every timer
//!   has fired, every device's `Ringing`/`Connected` is followed by its leaving or the call's
//!   end, signal times never run backwards within a call, and feeding the same bytes again
//!   emits no signal (replays are duplicates).
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use adapter_avaya_r9::clock::PbxClock;
use adapter_avaya_r9::codec::{Line, decode_chunks};
use adapter_avaya_r9::tracker::{Output, Tracker, TrackerSettings};
use libfuzzer_sys::fuzz_target;
use listener_core::{AdapterEvent, CallChange, PbxId, PbxType, SignalBody, UnixMillis};

const MAX: usize = 512;

fn drain(tracker: &mut Tracker, signals: &mut Vec<(String, u64, CallChange)>) {
    // A call is its Call ID and start: Call IDs repeat (they restart when the PBX does).
    let mut n = 0;
    while let Output::Event(e) = tracker.poll_output() {
        n += 1;
        assert!(n < 1_000_000, "outputs must drain");
        if let AdapterEvent::Signal(s) = e
            && let SignalBody::Call(c) = s.body
        {
            signals.push((format!("{}@{}", c.call.0, c.call_started.0), s.at.0, c.change));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let whole = decode_chunks(MAX, &[data]);
    let at = data.first().map_or(0, |b| usize::from(*b) % (data.len() + 1));
    let (a, b) = data.split_at(at);
    assert_eq!(decode_chunks(MAX, &[a, b]), whole, "split at {at}");
    if data.len() <= 512 {
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(decode_chunks(MAX, &bytes), whole, "byte by byte");
    }
    let clock = PbxClock::new("Europe/London").unwrap_or_else(|_| PbxClock::utc());
    let settings = TrackerSettings { segment_timeout_ms: 60_000, remember_calls: 3_000, ..TrackerSettings::default() };
    let mut tracker = Tracker::new(PbxId::new("fuzz", PbxType::new("avaya-r9")), clock, settings);
    let mut signals = Vec::new();
    let mut now = UnixMillis(1_700_000_000_000);
    for line in &whole {
        if let Line::Text(t) = line {
            assert!(!t.is_empty() && t.len() <= MAX && !t.contains(&b'\n'));
            tracker.handle_smdr_line(now, t);
            drain(&mut tracker, &mut signals);
        }
        now = now.plus_ms(1_000);
    }
    tracker.handle_timeout(UnixMillis(u64::MAX / 2));
    drain(&mut tracker, &mut signals);
    // Replayed: nothing new.
    let before = signals.len();
    for line in &whole {
        if let Line::Text(t) = line {
            tracker.handle_smdr_line(now, t);
        }
    }
    tracker.handle_timeout(UnixMillis(u64::MAX / 2));
    drain(&mut tracker, &mut signals);
    assert_eq!(signals.len(), before, "a replay emitted signals");

    // Every call ends; every device that rang or talked leaves or the call ends; times of a
    // call never go back.
    let mut open: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    let mut ended: BTreeSet<String> = BTreeSet::new();
    for (call, at, change) in &signals {
        let prev = last.insert(call.clone(), *at);
        assert!(prev.is_none_or(|p| p <= *at), "time went back in call {call}");
        if let CallChange::Ended = change {
            ended.insert(call.clone());
        } else {
            open.entry(call.clone()).or_default();
        }
    }
    for call in open.keys() {
        assert!(ended.contains(call), "call {call} never ended");
    }
});
