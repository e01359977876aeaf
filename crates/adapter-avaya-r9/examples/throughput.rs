//! The benchmark's workloads for a fixed number of rounds, for `perf stat` (CPU time, which a
//! loaded machine does not inflate the way it does wall time):
//!
//! `perf stat -e task-clock target/release/examples/throughput smdr 20`
#![allow(clippy::unwrap_used, missing_docs)]

use adapter_avaya_r9::testdata::workload::{delta2_stream, run, smdr_stream};

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "smdr".into());
    let rounds: u64 = args.next().and_then(|r| r.parse().ok()).unwrap_or(20);
    let (stream, lines, delta2) = match which.as_str() {
        "delta2" => {
            let (s, l) = delta2_stream();
            (s, l, true)
        }
        _ => {
            let (s, l) = smdr_stream();
            (s, l, false)
        }
    };
    let started = std::time::Instant::now();
    let mut outputs = 0;
    for _ in 0..rounds {
        outputs += run(&stream, delta2);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{which}: {} lines, {outputs} outputs in {secs:.3} s wall = {:.0} lines/s (wall)",
        lines * rounds,
        (lines * rounds) as f64 / secs
    );
}
