//! Decode throughput on one core: bytes → lines → records → reconstruction → signals.
//!
//! - `smdr_lines_to_records`: the decoder alone (framing and the record parser);
//! - `smdr_lines_to_signals`: a stream of SMDR records as the IP Office sends them (CR LF, 30 fields): per call
//!   either one segment (answered, with a hold) or two (transferred), 1.5 lines per call on
//!   average, through [`LineCodec`] and [`Tracker::handle_smdr_line`], every output drained.
//! - `delta2_lines_to_signals`: a relay's line stream: per call, `CALL: S` ringing, connected, held, resumed and
//!   `CALL: D`, through the tracker's Delta2 path.
//!
//! `cargo bench -p adapter-avaya-r9 --bench decode`
#![allow(clippy::unwrap_used, missing_docs)]

use adapter_avaya_r9::codec::{Line, LineCodec};
use adapter_avaya_r9::smdr;
use adapter_avaya_r9::testdata::workload::{CALLS, delta2_stream, run, smdr_stream};
use bytes::BytesMut;
use tokio_util::codec::Decoder;

/// Lines → records, no tracker: the number of records.
fn decode_records(stream: &[u8]) -> u64 {
    let mut codec = LineCodec::new(4_096);
    let mut buf = BytesMut::from(stream);
    let mut n = 0;
    while let Ok(Some(Line::Text(l))) = codec.decode(&mut buf) {
        let text = smdr::line_text(&l);
        if let Ok(r) = smdr::parse(&text) {
            n += u64::from(r.continuation) + 1;
        }
    }
    n
}
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let (smdr, smdr_lines) = smdr_stream();
    let (delta2, delta2_lines) = delta2_stream();
    // Sanity: every call produced its signals (and checkpoints).
    assert!(run(&smdr, false) > 3 * CALLS);
    assert!(run(&delta2, true) > 4 * CALLS);
    let mut g = c.benchmark_group("r9");
    // The decoder alone: bytes → lines → records.
    g.throughput(Throughput::Elements(smdr_lines));
    g.bench_function("smdr_lines_to_records", |b| b.iter(|| decode_records(&smdr)));
    g.throughput(Throughput::Elements(smdr_lines));
    g.bench_function("smdr_lines_to_signals", |b| b.iter(|| run(&smdr, false)));
    g.throughput(Throughput::Elements(delta2_lines));
    g.bench_function("delta2_lines_to_signals", |b| b.iter(|| run(&delta2, true)));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
