//! Throughput of the 3CX cores on one core: participant JSON → signals (the frame, the GET
//! body, the tracker), and CDR lines → signals (the line parser, the merge). Numbers and the
//! command are in `docs/PERFORMANCE.md`.

#![allow(clippy::unwrap_used)] // A benchmark unwraps its own fixtures.

use std::hint::black_box;

use adapter_3cx::cdr::{FieldOrder, parse_record};
use adapter_3cx::participant::Participant;
use adapter_3cx::testdata;
use adapter_3cx::tracker::{CdrSettings, Fetched, Output, Tracker, TrackerSettings};
use adapter_3cx::ws::{EventType, parse_frame, participant_path, render_frame};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use listener_core::{AdapterEvent, PbxId, PbxType, UnixMillis};

const CALLS: usize = 1_000;

/// Per call: the Upsert frame and GET body of a ringing leg, of the same leg connected, and
/// the Remove frame (the sample body with the call's ids).
fn call_inputs() -> Vec<(String, Vec<u8>, Vec<u8>, String)> {
    let sample = testdata::PARTICIPANT_RINGING;
    (0..CALLS)
        .map(|i| {
            let id = 10_000 + i;
            let body = sample.replace("8106", &id.to_string()).replace("1264", &(50_000 + i).to_string());
            let connected = body.replace("\"Ringing\"", "\"Connected\"");
            let path = participant_path("150", &id.to_string());
            (render_frame(i as i64, EventType::Upsert, &path), body.into_bytes(), connected.into_bytes(), path)
        })
        .collect()
}

fn drain(t: &mut Tracker) -> usize {
    let mut signals = 0;
    loop {
        match t.poll_output() {
            Output::Event(AdapterEvent::Signal(s)) => {
                black_box(&s);
                signals += 1;
            }
            Output::Timeout(_) => return signals,
            _ => {}
        }
    }
}

fn participants(c: &mut Criterion) {
    let inputs = call_inputs();
    let mut g = c.benchmark_group("participant");
    // Bodies per iteration: two per call (ringing, connected).
    g.throughput(Throughput::Elements((2 * CALLS) as u64));
    g.bench_function("json_to_signals", |b| {
        b.iter_batched(
            || {
                let mut t = Tracker::new(PbxId::new("bench", PbxType::new("3cx")), TrackerSettings::default());
                t.handle_connected(UnixMillis(0));
                t.handle_snapshot(UnixMillis(0), Vec::new());
                drain(&mut t);
                t
            },
            |mut t| {
                let mut now = UnixMillis(1_000);
                let mut signals = 0;
                for (frame, ringing, connected, path) in &inputs {
                    for body in [ringing, connected] {
                        let event = parse_frame(frame, 65_536).unwrap();
                        t.handle_ws_event(now, event);
                        let p = Participant::from_json(body).unwrap();
                        let id = p.id.unwrap().to_string();
                        t.handle_fetched(now, "150", &id, Fetched::Found(p));
                        signals += drain(&mut t);
                    }
                    let remove = render_frame(0, EventType::Remove, path);
                    t.handle_ws_event(now, parse_frame(&remove, 65_536).unwrap());
                    now = now.plus_ms(2_000);
                    t.handle_timeout(now);
                    signals += drain(&mut t);
                }
                assert_eq!(signals, 4 * CALLS, "ringing, connected, disconnected, ended per call");
                signals
            },
            BatchSize::LargeInput,
        );
    });
    let body = testdata::PARTICIPANT_RINGING.as_bytes();
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_body", |b| b.iter(|| Participant::from_json(black_box(body)).unwrap()));
    g.finish();
}

fn cdr(c: &mut Criterion) {
    let order = FieldOrder::default();
    let sample = testdata::CDR_LINE.trim_end();
    let lines: Vec<String> = (0..CALLS)
        .map(|i| {
            // Each record its own call and extension (one extension's calls at the same time
            // would be one call to the merge).
            sample
                .replacen("Call 288831", &format!("Call {}", 300_000 + i), 1)
                .replace("_26808", &format!("_{}", 40_000 + i))
                .replace("10016", &format!("{}", 20_000 + i))
        })
        .collect();
    let mut g = c.benchmark_group("cdr");
    g.throughput(Throughput::Elements(CALLS as u64));
    g.bench_function("lines_to_signals", |b| {
        b.iter_batched(
            || {
                let mut settings = CdrSettings::new(order.clone(), jiff::tz::TimeZone::UTC);
                settings.backfill_max_age_ms = u64::MAX / 4;
                Tracker::new(
                    PbxId::new("bench", PbxType::new("3cx")),
                    TrackerSettings { cdr: Some(settings), ..TrackerSettings::default() },
                )
            },
            |mut t| {
                let now = UnixMillis(1_718_604_000_000);
                let mut signals = 0;
                for line in &lines {
                    black_box(t.handle_cdr_line(now, line));
                    signals += drain(&mut t);
                }
                assert_eq!(signals, 3 * CALLS, "connected, disconnected, ended per record");
                signals
            },
            BatchSize::LargeInput,
        );
    });
    // The common case: records of calls the live feed reported (merged, nothing to add).
    g.bench_function("lines_merged", |b| {
        b.iter_batched(
            || {
                let mut settings = CdrSettings::new(order.clone(), jiff::tz::TimeZone::UTC);
                settings.backfill_max_age_ms = u64::MAX / 4;
                let mut t = Tracker::new(
                    PbxId::new("bench", PbxType::new("3cx")),
                    TrackerSettings { cdr: Some(settings), ..TrackerSettings::default() },
                );
                // The live feed saw each call (first sight = the record's start).
                let start = UnixMillis(1_718_603_989_000);
                t.handle_connected(start);
                t.handle_snapshot(start, Vec::new());
                for i in 0..CALLS {
                    let ext = (20_000 + i).to_string();
                    let body = testdata::PARTICIPANT_RINGING
                        .replace("\"150\"", &format!("\"{ext}\""))
                        .replace("1264", &(40_000 + i).to_string())
                        .replace("\"Ringing\"", "\"Connected\"");
                    let p = Participant::from_json(body.as_bytes()).unwrap();
                    let path = participant_path(&ext, "8106");
                    t.handle_ws_event(start, parse_frame(&render_frame(0, EventType::Upsert, &path), 65_536).unwrap());
                    t.handle_fetched(start, &ext, "8106", Fetched::Found(p));
                    t.handle_ws_event(start, parse_frame(&render_frame(0, EventType::Remove, &path), 65_536).unwrap());
                }
                t.handle_timeout(start.plus_ms(10_000));
                drain(&mut t);
                t
            },
            |mut t| {
                let now = UnixMillis(1_718_604_000_000);
                let mut merged = 0;
                for line in &lines {
                    if let adapter_3cx::tracker::CdrOutcome::Merged { .. } = t.handle_cdr_line(now, line) {
                        merged += 1;
                    }
                    drain(&mut t);
                }
                assert_eq!(merged, CALLS, "every record joins its live call");
                merged
            },
            BatchSize::LargeInput,
        );
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_line", |b| b.iter(|| parse_record(black_box(sample), &order).unwrap()));
    g.finish();
}

criterion_group!(benches, participants, cdr);
criterion_main!(benches);
