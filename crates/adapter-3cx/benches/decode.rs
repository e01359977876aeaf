//! Throughput of the 3CX cores on one core: participant JSON → signals (the frame, the GET
//! body, the tracker), and CDR lines → signals (the line parser, the merge). Numbers and the
//! command are in `docs/PERFORMANCE.md`; the workloads are `adapter_3cx::testdata::workload`
//! (shared with `examples/throughput.rs`, for instruction counts).

#![allow(clippy::unwrap_used)] // A benchmark unwraps its own fixtures.

use std::hint::black_box;

use adapter_3cx::cdr::{FieldOrder, parse_record};
use adapter_3cx::participant::Participant;
use adapter_3cx::testdata;
use adapter_3cx::testdata::workload::{
    CALLS, cdr_lines, cdr_tracker, merged_tracker, participant_inputs, participant_tracker, run_cdr, run_merged,
    run_participants,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

fn participants(c: &mut Criterion) {
    let inputs = participant_inputs();
    let mut g = c.benchmark_group("participant");
    // Bodies per iteration: two per call (ringing, connected).
    g.throughput(Throughput::Elements((2 * CALLS) as u64));
    g.bench_function("json_to_signals", |b| {
        b.iter_batched(
            participant_tracker,
            |mut t| {
                let signals = run_participants(&mut t, &inputs, &mut |e| {
                    black_box(e);
                });
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
    let lines = cdr_lines();
    let mut g = c.benchmark_group("cdr");
    g.throughput(Throughput::Elements(CALLS as u64));
    g.bench_function("lines_to_signals", |b| {
        b.iter_batched(
            cdr_tracker,
            |mut t| {
                let signals = run_cdr(&mut t, &lines, &mut |e| {
                    black_box(e);
                });
                assert_eq!(signals, 3 * CALLS, "connected, disconnected, ended per record");
                signals
            },
            BatchSize::LargeInput,
        );
    });
    // The common case: records of calls the live feed reported (merged, nothing to add).
    g.bench_function("lines_merged", |b| {
        b.iter_batched(
            merged_tracker,
            |mut t| {
                let merged = run_merged(&mut t, &lines, &mut |e| {
                    black_box(e);
                });
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
