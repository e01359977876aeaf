//! The benchmark's workloads for a fixed number of rounds, for `perf stat` (CPU time, which a
//! loaded machine does not inflate the way it does wall time), with the system allocator:
//!
//! `perf stat -e task-clock target/release/examples/throughput smdr 20`
//!
//! `throughput_mimalloc` is the same with the daemon's allocator.
#![allow(missing_docs)]

fn main() {
    adapter_avaya_r9::testdata::workload::throughput_main();
}
