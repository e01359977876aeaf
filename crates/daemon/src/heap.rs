//! Keeping the daemon's resident memory near what it holds (issue 13).
//!
//! glibc's malloc keeps what the program frees for later allocations, in one arena per thread
//! that ever contended (up to 8 per core). A burst (the PBX's snapshot after a restart, a
//! reconcile of thousands of calls) therefore leaves its peak resident for good, spread over
//! arenas the steady state no longer uses: on the 10k-live-calls restart, `malloc_trim` called
//! through gdb took the daemon from 128 to 87 MiB of RSS at once. So the daemon (`run` only)
//! caps the arenas at two and gives free pages back every [`TRIM_EVERY`]. Both are glibc's;
//! with another C library, or the `mimalloc` feature, this module does nothing.
//!
//! The only `unsafe` in the workspace: two calls into the C library (decision 0019).
#![allow(unsafe_code)]

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often free heap pages are given back. `malloc_trim` walks the free lists with each
/// arena locked, so seldom enough not to show in the latency tail (p99 at 1k events/s was
/// re-measured with it: docs/PERFORMANCE.md), often enough that a burst's pages go back within
/// half a minute.
pub const TRIM_EVERY: Duration = Duration::from_secs(20);

/// Arenas for a daemon whose busy threads are two runtime workers and the outbox's writer.
#[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
const MAX_ARENAS: libc::c_int = 2;

/// Caps glibc's malloc arenas, unless the admin chose a number with `MALLOC_ARENA_MAX` (glibc
/// reads it itself). Call before any thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a tunable; no thread exists yet to race with it.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MAX_ARENAS);
        }
    }
}

/// Gives free heap pages back to the system every [`TRIM_EVERY`] until `stop`.
pub async fn trim_periodically(stop: CancellationToken) {
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: start-up's restore is done by now.
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        // Off the runtime's workers: the walk takes milliseconds on a large heap.
        if tokio::task::spawn_blocking(trim).await.is_err() {
            return;
        }
    }
}

/// One `malloc_trim(0)`: every arena's free pages, not only the top of the main heap.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
    {
        let started = std::time::Instant::now();
        // SAFETY: malloc_trim is thread-safe (it takes each arena's lock) and has no
        // preconditions.
        let released = unsafe { libc::malloc_trim(0) } == 1;
        tracing::trace!(released, took_us = started.elapsed().as_micros() as u64, "malloc_trim");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_trimmer_stops_when_told() {
        limit_arenas();
        let stop = CancellationToken::new();
        let task = tokio::spawn(trim_periodically(stop.clone()));
        // The first trim runs at once (on a blocking thread); stop meanwhile: the task ends.
        tokio::task::yield_now().await;
        stop.cancel();
        task.await.unwrap();
    }
}
