//! `examples/throughput.rs` with mimalloc, the daemon's global allocator
//! (docs/decisions/0018): what the adapter costs inside the daemon. Most of the SMDR path's
//! time is allocating and freeing the owned signals, so the allocator matters.
//!
//! `perf stat -e task-clock target/release/examples/throughput_mimalloc smdr 20`
#![allow(missing_docs)]

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    adapter_avaya_r9::testdata::workload::throughput_main();
}
