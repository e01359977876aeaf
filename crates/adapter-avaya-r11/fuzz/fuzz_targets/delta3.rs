//! Delta3 records and the call tracker on arbitrary text.
//!
//! Properties, beyond "no panic":
//! - what parses writes out (compact wire form) and parses back to the same record;
//! - fed to the tracker (records split on `|`), the tracker never reports a device leaving or a
//!   call ending for a call it never announced, never emits anything after a call's `Ended`
//!   unless the call starts again with a new signal, and its outputs always drain.
#![no_main]

use std::collections::BTreeSet;

use adapter_avaya_r11::delta3;
use adapter_avaya_r11::tracker::{Output, Tracker, TrackerSettings};
use libfuzzer_sys::fuzz_target;
use listener_core::{AdapterEvent, CallChange, PbxId, PbxType, SignalBody, UnixMillis};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut tracker = Tracker::new(PbxId::new("fuzz", PbxType::new("avaya-r11")), TrackerSettings::default());
    let mut announced: BTreeSet<String> = BTreeSet::new();
    let mut now = UnixMillis(1_000);
    for (i, piece) in text.split('|').enumerate() {
        if let Ok(record) = delta3::parse(piece) {
            let written = record.to_string();
            assert_eq!(delta3::parse(&written).as_ref(), Ok(&record), "{written}");
            tracker.handle_delta3(now, &record);
        }
        if i % 7 == 3 {
            tracker.handle_subscribed(now);
        }
        now = now.plus_ms(700);
        tracker.handle_timeout(now);
        let mut drained = 0;
        loop {
            match tracker.poll_output() {
                Output::Event(AdapterEvent::Signal(s)) => {
                    drained += 1;
                    assert!(drained < 100_000, "outputs must drain");
                    let SignalBody::Call(c) = s.body else { continue };
                    match c.change {
                        CallChange::Ended => {
                            assert!(announced.remove(&c.call.0), "Ended for an unannounced call {}", c.call);
                        }
                        CallChange::Disconnected { .. } => {
                            assert!(announced.contains(&c.call.0), "Disconnected in an unannounced call {}", c.call);
                        }
                        _ => {
                            announced.insert(c.call.0.clone());
                        }
                    }
                }
                Output::Event(AdapterEvent::Resync { live_calls, .. }) => {
                    // Calls dropped by a resync are over without an Ended.
                    let live: BTreeSet<String> = live_calls.into_iter().map(|c| c.0).collect();
                    announced.retain(|c| live.contains(c));
                }
                Output::Event(AdapterEvent::Link { .. }) => unreachable!("the tracker reports no links"),
                Output::Timeout(_) => break,
            }
        }
    }
});
