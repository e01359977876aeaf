//! The benchmark's workloads (`benches/decode.rs`) for a fixed number of rounds, for
//! instruction counts and CPU time, which a loaded machine does not inflate the way it does
//! wall time:
//!
//! ```text
//! cargo build --release -p adapter-3cx --example throughput
//! valgrind --tool=callgrind --toggle-collect='*workload::run_*' \
//!     target/release/examples/throughput participant 5
//! target/release/examples/throughput cdr 500
//! ```
//!
//! Workloads: `participant` (1,000 calls' frames and bodies → signals per round), `cdr` (1,000
//! lines of calls the live feed missed → signals), `merged` (1,000 lines of calls the live feed
//! saw); and the decoders alone, `body-parse` (2,000 participant bodies → `Participant`) and
//! `cdr-parse` (1,000 lines → `CdrRecord`), whose count is the items read. The fresh trackers are built before the timed rounds; the `--toggle-collect` above
//! counts only the `run_*` functions, so setup is not in the instruction counts either.
#![allow(clippy::unwrap_used, missing_docs)]

use adapter_3cx::testdata::workload::{
    CALLS, cdr_lines, cdr_tracker, merged_tracker, participant_inputs, participant_tracker, run_body_parse, run_cdr,
    run_cdr_parse, run_merged, run_participants,
};
use adapter_3cx::tracker::Tracker;

/// This thread's CPU time (user + system) in seconds, from `/proc` (Linux; 100 ticks a second,
/// the kernel's `USER_HZ` on every architecture Rust supports there).
fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "participant".into());
    let rounds: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(20);
    let mut sink = |e: &listener_core::AdapterEvent| {
        std::hint::black_box(e);
    };
    let inputs = participant_inputs();
    let lines = cdr_lines();
    let (items, unit, make): (usize, &str, fn() -> Tracker) = match which.as_str() {
        "cdr" | "cdr-parse" => (CALLS, "lines", cdr_tracker),
        "merged" => (CALLS, "lines", merged_tracker),
        _ => (2 * CALLS, "bodies", participant_tracker),
    };
    let mut trackers: Vec<Tracker> = (0..rounds).map(|_| make()).collect();
    let cpu_before = cpu_secs();
    let started = std::time::Instant::now();
    let mut signals = 0;
    while let Some(mut t) = trackers.pop() {
        signals += match which.as_str() {
            "cdr" => run_cdr(&mut t, &lines, &mut sink),
            "merged" => run_merged(&mut t, &lines, &mut sink),
            // The decoders alone (the tracker made for the round is not used).
            "body-parse" => run_body_parse(&inputs),
            "cdr-parse" => run_cdr_parse(&lines),
            _ => run_participants(&mut t, &inputs, &mut sink),
        };
    }
    let wall = started.elapsed().as_secs_f64();
    let n = (items * rounds) as f64;
    let counted = if which.ends_with("-parse") { "read" } else { "signals" };
    print!("{which}: {} {unit}, {signals} {counted}; wall {wall:.3} s = {:.0} {unit}/s", items * rounds, n / wall);
    match cpu_before.zip(cpu_secs()) {
        Some((a, b)) if b > a => println!("; CPU {:.2} s = {:.0} {unit}/s", b - a, n / (b - a)),
        _ => println!(),
    }
}
