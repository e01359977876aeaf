//! Delta2 relay lines and the real-time tracker on arbitrary text.
//!
//! Properties, beyond "no panic":
//! - what parses as a status record keeps its CallID and states whatever its text fields hold;
//! - fed to the tracker (lines split on `\n`, with link drops the input chooses), the tracker
//!   never reports a device leaving or a call ending for a call it never announced, and its
//!   outputs always drain.
#![no_main]

use std::collections::BTreeSet;

use adapter_avaya_r9::clock::PbxClock;
use adapter_avaya_r9::delta2::{self, Delta2Line};
use adapter_avaya_r9::tracker::{Output, Tracker, TrackerSettings};
use libfuzzer_sys::fuzz_target;
use listener_core::{AdapterEvent, CallChange, PbxId, PbxType, SignalBody, UnixMillis};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let settings = TrackerSettings { delta2: true, smdr: false, ..TrackerSettings::default() };
    let mut tracker = Tracker::new(PbxId::new("fuzz", PbxType::new("avaya-r9")), PbxClock::utc(), settings);
    let mut announced: BTreeSet<String> = BTreeSet::new();
    let mut now = UnixMillis(1_000);
    tracker.handle_delta2_link(now, true);
    for (i, line) in text.split('\n').enumerate() {
        if let Ok(Delta2Line::Status(s)) = delta2::parse(line) {
            let _ = (s.a_state(), s.b_state(), s.call_id(), s.b_list().count());
        }
        tracker.handle_delta2_line(now, line.as_bytes());
        if i % 11 == 5 {
            tracker.handle_delta2_link(now, false);
            tracker.handle_delta2_link(now, true);
        }
        now = now.plus_ms(500);
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
                        CallChange::Disconnected { .. }
                        | CallChange::Transferred { .. }
                        | CallChange::Parked { .. } => {
                            assert!(announced.contains(&c.call.0), "a device left an unannounced call {}", c.call);
                        }
                        _ => {
                            announced.insert(c.call.0.clone());
                        }
                    }
                }
                Output::Event(AdapterEvent::Resync { live_calls, .. }) => {
                    let live: BTreeSet<String> = live_calls.into_iter().map(|c| c.0).collect();
                    announced.retain(|c| live.contains(c));
                }
                Output::Event(_) => {}
                Output::Timeout(_) => break,
            }
        }
    }
});
