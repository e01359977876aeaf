//! What the platform received during a load run, kept small enough for millions of events:
//! a hash per event id (byte-identical copies), the last status per device (every `connected`
//! and every `ringing` ends in `disconnected`), the last timestamp per call (order), and one
//! latency sample per event, from the moment the PBX phase that caused it left the simulator.
//!
//! Which phase caused an event: for a live feed (DevLink3, Delta2, 3CX's Call Control API) the
//! event's `timestamp` is when the daemon received the signal, so the cause is the call's last
//! phase sent at or before it. A feed that reports after the fact ([`AFTER_THE_FACT`]: SMDR,
//! 3CX's CDR) stamps events with when things *happened* (rebuilt from the record's start and
//! durations), not when the record arrived; such an event is attributed to the call's last phase
//! sent before the event *arrived* — the phase that carried the record — and its latency is
//! record → POST, not "when it happened" → POST (which would only measure how long the call
//! lasted). They are counted apart ([`Ledger::after_the_fact`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use generic_event::Status;

use crate::platform::Arrival;

/// When each phase of a call left the simulator, by the PBX's call id (`meta.pbxCallId`).
#[derive(Debug, Default)]
pub struct SentPhases {
    calls: HashMap<String, Vec<Sent>>,
}

/// One phase, as it left: the instant (for the latency) and the wall clock in ms (to attribute
/// events by their `timestamp`, which the daemon takes when it receives the signal).
#[derive(Debug, Clone, Copy)]
struct Sent {
    at: Instant,
    wall_ms: u64,
}

impl SentPhases {
    /// Records that a phase of the call known by `ids` left now.
    pub fn sent(&mut self, ids: &[String], at: Instant, wall_ms: u64) {
        for id in ids {
            self.calls.entry(id.clone()).or_default().push(Sent { at, wall_ms });
        }
    }

    /// The phase that caused an event of call `id` stamped `timestamp`: the last one sent at or
    /// before it (phases of a call are seconds apart, latencies milliseconds).
    fn cause(&self, id: &str, timestamp: u64) -> Option<Sent> {
        self.calls.get(id)?.iter().rev().find(|s| s.wall_ms <= timestamp).copied()
    }

    /// The phase that carried the record an after-the-fact event of call `id` was rebuilt from:
    /// the last one sent before the event arrived at `arrived`.
    fn carrier(&self, id: &str, arrived: Instant) -> Option<Sent> {
        self.calls.get(id)?.iter().rev().find(|s| s.at <= arrived).copied()
    }
}

/// `meta.source` values of feeds that report a call after the fact, with the times things
/// happened as `timestamp`s (see the module documentation).
pub const AFTER_THE_FACT: [&str; 2] = ["smdr", "cdr"];

/// The receiver's record of a run.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Hash of the first accepted body of each id.
    bodies: HashMap<String, u64>,
    /// Accepted copies beyond the first (the platform deduplicates by id).
    pub duplicates: u64,
    /// Answers other than 2xx, by status (0 = connection dropped).
    pub refused: HashMap<u16, u64>,
    /// Requests whose signature did not verify.
    pub bad_signatures: u64,
    /// Last status of each device of each call (`childSid`, extension), in arrival order.
    devices: HashMap<(String, String), Status>,
    /// Last `timestamp` of each call, in arrival order.
    calls: HashMap<String, u64>,
    /// Latency samples: (when the phase left, microseconds to arrival).
    latencies: Vec<(Instant, u32)>,
    /// Events that could not be attributed to a phase (reconciled or synthesized events).
    pub unattributed: u64,
    /// Events of an after-the-fact feed ([`AFTER_THE_FACT`]) attributed to the phase that
    /// carried their record (their latency is record → POST).
    pub after_the_fact: u64,
    /// Everything found wrong, for the conservation verdict (capped).
    pub problems: Vec<String>,
    problem_count: u64,
}

/// The most problems listed in full; the rest are counted.
const MAX_PROBLEMS: usize = 20;

impl Ledger {
    /// Takes one arrival; `phases` says when what caused it was sent.
    pub fn record(&mut self, arrival: &Arrival, phases: &Mutex<SentPhases>) {
        if !arrival.signature_valid {
            self.bad_signatures += 1;
            return;
        }
        let status = arrival.status.unwrap_or(0);
        if !(200..300).contains(&status) {
            *self.refused.entry(status).or_insert(0) += 1;
            return;
        }
        let hash = fnv1a(&arrival.body);
        if let Some(first) = self.bodies.get(&arrival.id) {
            self.duplicates += 1;
            if *first != hash {
                self.problem(format!("event {} arrived twice with different bytes", arrival.id));
            }
            return;
        }
        self.bodies.insert(arrival.id.clone(), hash);
        let event = match generic_event::validate_json(&arrival.body) {
            Ok(event) => event,
            Err(e) => {
                self.problem(format!("event {} is not a valid Level 3 event: {e}", arrival.id));
                return;
            }
        };
        let Some(child) = event.child_sid.map(|c| c.to_string()) else { return };
        // Order: a call's events are sent in the order the daemon built them, which is the
        // order of their timestamps (receipt times).
        let last = self.calls.entry(child.clone()).or_insert(0);
        if event.timestamp < *last {
            let (was, now) = (*last, event.timestamp);
            self.problem(format!("call {child}: an event stamped {now} arrived after one stamped {was}"));
        } else {
            *last = event.timestamp;
        }
        let device = (child, event.extension.clone().unwrap_or_default());
        self.devices.insert(device, event.status);
        let reconciled = event.meta.get("reconciled").is_some_and(|v| v == "true");
        let late = event.meta.get("source").is_some_and(|s| AFTER_THE_FACT.contains(&s.as_str()));
        let cause = match event.meta.get("pbxCallId") {
            Some(id) if !reconciled && late => lock(phases).carrier(id, arrival.at),
            Some(id) if !reconciled => lock(phases).cause(id, event.timestamp),
            _ => None,
        };
        if late && cause.is_some() {
            self.after_the_fact += 1;
        }
        match cause {
            Some(sent) => {
                let micros = arrival.at.saturating_duration_since(sent.at).as_micros();
                self.latencies.push((sent.at, u32::try_from(micros).unwrap_or(u32::MAX)));
            }
            None => self.unattributed += 1,
        }
    }

    /// Distinct event ids accepted.
    pub fn distinct(&self) -> u64 {
        self.bodies.len() as u64
    }

    /// Devices whose last event is not `disconnected` (a `connected` or `ringing` never
    /// closed), as problems.
    pub fn unclosed_devices(&self) -> Vec<String> {
        let mut open: Vec<String> = self
            .devices
            .iter()
            .filter(|(_, status)| **status != Status::Disconnected)
            .map(|((call, ext), status)| format!("call {call} extension {ext:?} ended {}", status.as_str()))
            .collect();
        open.sort();
        open
    }

    /// Latency percentiles (µs) of the events whose phase left within `[from, to]`.
    pub fn latency(&self, from: Instant, to: Instant) -> Option<Latency> {
        let mut samples: Vec<u32> =
            self.latencies.iter().filter(|(at, _)| *at >= from && *at <= to).map(|(_, us)| *us).collect();
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        // Nearest rank: the smallest sample with at least q of them at or below it.
        let at = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
        Some(Latency {
            samples: samples.len() as u64,
            p50_us: at(0.50),
            p99_us: at(0.99),
            max_us: *samples.last().unwrap_or(&0),
        })
    }

    fn problem(&mut self, text: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(text);
        }
    }

    /// Problems found, including those not listed.
    pub fn problem_count(&self) -> u64 {
        self.problem_count
    }
}

/// Latency from a PBX phase leaving the simulator to its events' POSTs arriving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Latency {
    /// Events measured.
    pub samples: u64,
    /// Median, µs.
    pub p50_us: u32,
    /// 99th percentile, µs.
    pub p99_us: u32,
    /// Largest, µs.
    pub max_us: u32,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// FNV-1a, 64 bits: enough to tell two bodies of one id apart.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Feeds arrivals into the ledger until the platform's observer channel closes.
pub async fn follow(
    mut arrivals: tokio::sync::mpsc::UnboundedReceiver<Arrival>,
    ledger: Arc<Mutex<Ledger>>,
    phases: Arc<Mutex<SentPhases>>,
) {
    while let Some(arrival) = arrivals.recv().await {
        lock(&ledger).record(&arrival, &phases);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn arrival(id: &str, body: &str, at: Instant) -> Arrival {
        Arrival { at, id: id.into(), body: Bytes::from(body.to_owned()), signature_valid: true, status: Some(200) }
    }

    fn event(status: &str, ext: &str, ts: u64) -> String {
        format!(
            r#"{{"accountId":"9539ee93-64c8-802b-360b-c6f2f7cf2507","accountName":"L","parentCallSid":null,"callSid":null,"childSid":"7f1d3c1e-2b7a-5a53-9d5e-3c2f1e0d9c8b","type":"voice","event":"phone","status":"{status}","from":"4401","to":"4402","extension":"{ext}","meta":{{"pbxCallId":"c0a82a03.1"}},"timestamp":{ts}}}"#
        )
    }

    #[test]
    fn attributes_latency_checks_bytes_order_and_closing() {
        let t0 = Instant::now();
        let phases = Mutex::new(SentPhases::default());
        lock(&phases).sent(&["c0a82a03.1".into()], t0, 1_000);
        lock(&phases).sent(&["c0a82a03.1".into()], t0 + std::time::Duration::from_secs(2), 3_000);
        let mut ledger = Ledger::default();
        let ms = std::time::Duration::from_millis;
        ledger.record(&arrival("a", &event("ringing", "201", 1_001), t0 + ms(4)), &phases);
        ledger.record(&arrival("b", &event("connected", "201", 3_002), t0 + ms(2_006)), &phases);
        ledger.record(&arrival("a", &event("ringing", "201", 1_001), t0 + ms(2_007)), &phases);
        assert_eq!((ledger.distinct(), ledger.duplicates, ledger.problem_count()), (2, 1, 0));
        let latency = ledger.latency(t0, t0 + ms(3_000)).expect("samples");
        assert_eq!((latency.samples, latency.p50_us, latency.max_us), (2, 4_000, 6_000));
        assert_eq!(ledger.unclosed_devices().len(), 1, "connected and never disconnected");
        ledger.record(&arrival("c", &event("disconnected", "201", 3_500), t0 + ms(2_600)), &phases);
        assert!(ledger.unclosed_devices().is_empty());
        ledger.record(&arrival("a", &event("held", "201", 1_001), t0 + ms(2_700)), &phases);
        ledger.record(&arrival("d", &event("held", "201", 2_000), t0 + ms(2_800)), &phases);
        assert_eq!(ledger.problem_count(), 2, "{:?}", ledger.problems);
    }

    #[test]
    fn an_after_the_fact_event_is_attributed_to_the_phase_that_carried_its_record() {
        let t0 = Instant::now();
        let ms = std::time::Duration::from_millis;
        let phases = Mutex::new(SentPhases::default());
        // Ring and answer send nothing over SMDR; the hang-up carries the record.
        lock(&phases).sent(&["c0a82a03.1".into()], t0, 1_000);
        lock(&phases).sent(&["c0a82a03.1".into()], t0 + ms(1_000), 2_000);
        lock(&phases).sent(&["c0a82a03.1".into()], t0 + ms(2_000), 3_000);
        let smdr = |status: &str, ext: &str, ts: u64| {
            event(status, ext, ts).replace(r#""pbxCallId":"c0a82a03.1""#, r#""pbxCallId":"c0a82a03.1","source":"smdr""#)
        };
        let mut ledger = Ledger::default();
        // Stamped when the phone rang (before the answer phase), reported after the hang-up.
        ledger.record(&arrival("a", &smdr("ringing", "201", 1_000), t0 + ms(2_005)), &phases);
        ledger.record(&arrival("b", &smdr("connected", "201", 1_500), t0 + ms(2_006)), &phases);
        ledger.record(&arrival("c", &smdr("disconnected", "201", 25_000), t0 + ms(2_007)), &phases);
        assert_eq!((ledger.after_the_fact, ledger.unattributed, ledger.problem_count()), (3, 0, 0));
        let latency = ledger.latency(t0, t0 + ms(3_000)).expect("samples");
        assert_eq!((latency.samples, latency.p50_us, latency.max_us), (3, 6_000, 7_000), "from the hang-up phase");
    }
}
