//! Participant bodies and snapshots on arbitrary bytes, and the tracker fed with them.
//!
//! Properties, beyond "no panic":
//! - a body that reads writes out and reads back to the same participant (a fixpoint);
//! - fed to the tracker (bodies split on `\n`, each the answer to an Upsert of one of a few
//!   participants, with Removes and time passing in between), the tracker never reports a
//!   device leaving, or a call ending, for a call it never announced; and it always drains.
#![no_main]

use std::collections::BTreeSet;

use adapter_3cx::participant::{Participant, parse_snapshot};
use adapter_3cx::tracker::{Fetched, Output, Tracker, TrackerSettings};
use adapter_3cx::ws::{EventType, parse_frame, participant_path, render_frame};
use libfuzzer_sys::fuzz_target;
use listener_core::{AdapterEvent, CallChange, PbxId, PbxType, SignalBody, UnixMillis};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Participant::from_json(data) {
        let again = serde_json::to_vec(&p).expect("a participant serialises");
        assert_eq!(Participant::from_json(&again).as_ref(), Ok(&p));
    }
    let _ = parse_snapshot(data);

    let mut tracker = Tracker::new(PbxId::new("fuzz", PbxType::new("3cx")), TrackerSettings::default());
    let mut now = UnixMillis(1_000);
    tracker.handle_connected(now);
    tracker.handle_snapshot(now, Vec::new());
    let mut announced: BTreeSet<String> = BTreeSet::new();
    for (i, piece) in data.split(|b| *b == b'\n').enumerate() {
        let id = (i % 3).to_string();
        let dn = if i % 5 == 4 { "102" } else { "101" };
        let path = participant_path(dn, &id);
        match piece.first().map(|b| b % 4) {
            Some(0) => tracker.handle_ws_event(now, parse_frame(&render_frame(i as i64, EventType::Remove, &path), 1 << 16).expect("our frame")),
            Some(1) => now = now.plus_ms(u64::from(piece.len() as u16) * 10),
            _ => {
                tracker.handle_ws_event(now, parse_frame(&render_frame(i as i64, EventType::Upsert, &path), 1 << 16).expect("our frame"));
                let answer = match Participant::from_json(piece) {
                    Ok(p) => Fetched::Found(p),
                    Err(_) if piece.len() % 2 == 0 => Fetched::Gone,
                    Err(_) => Fetched::Failed,
                };
                tracker.handle_fetched(now, dn, &id, answer);
            }
        }
        if i % 11 == 10 {
            tracker.handle_link_down(now);
            tracker.handle_connected(now);
            tracker.handle_snapshot(now, Vec::new());
        }
        tracker.handle_timeout(now);
        let mut drained = 0;
        loop {
            drained += 1;
            assert!(drained < 100_000, "outputs drain");
            match tracker.poll_output() {
                Output::Event(AdapterEvent::Signal(s)) => {
                    let SignalBody::Call(c) = s.body else { panic!("no extension signals from 3CX") };
                    match c.change {
                        CallChange::Ringing | CallChange::Connected | CallChange::Queued { .. } => {
                            announced.insert(c.call.0.clone());
                        }
                        _ => assert!(announced.contains(&c.call.0), "{:?} for unannounced call {}", c.change, c.call),
                    }
                }
                Output::Timeout(_) => break,
                _ => {}
            }
        }
    }
});
