//! Append throughput of the outbox with group commit (WAL, synchronous = FULL).
//!
//! - `one_by_one`: one event per append, each awaited before the next: one commit (one fsync)
//!   per event; the floor.
//! - `concurrent/N`: N tasks append one event at a time: commits are shared by whatever is
//!   queued, which is how the daemon's adapters and the forwarder's deletes arrive.
//!
//! Each group prints events per commit and commits per second to stderr.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use outbox::{NewEvent, Outbox, OutboxConfig, WhenFull};

/// A body the size of a real Level 3 event (~560 bytes).
fn body(i: u64) -> Vec<u8> {
    format!(
        r#"{{"accountId":"9539ee93-64c8-802b-360b-c6f2f7cf2507","accountName":"Test Account","parentCallSid":"e5bc544c-2186-47e8-8784-6182cf8190cb","callSid":"85cb3194-76e2-43e1-ad56-59556af617b9","childSid":"ea707e77-18c1-4ad8-9072-6c396ee3{i:04}","type":"voice","event":"phone","status":"connected","from":"441234567890","to":"441234567891","extension":"201","meta":{{"pbx":"site-1","pbxType":"avaya-r11","pbxCallId":"{i}","direction":"inbound","correlation":"sip-call-id","source":"devlink3"}},"timestamp":1623163324316}}"#
    )
    .into_bytes()
}

fn event(i: u64) -> NewEvent {
    NewEvent { id: format!("{i:016x}"), order_key: format!("call-{}", i % 1000), body: body(i), created_ms: i }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let outbox =
        Outbox::open(&dir.path().join("bench.sqlite"), OutboxConfig::new(4 << 30, WhenFull::DropOldest)).unwrap();
    let mut next = 0u64;
    let mut group = c.benchmark_group("outbox_append");
    group.sample_size(10).measurement_time(Duration::from_secs(8)).warm_up_time(Duration::from_secs(1));

    group.throughput(Throughput::Elements(1));
    let before = (outbox.writer_stats(), Instant::now());
    group.bench_function("one_by_one", |b| {
        b.iter(|| {
            next += 1;
            rt.block_on(outbox.append(vec![event(next)], vec![])).unwrap()
        })
    });
    report("one_by_one", &outbox, before);

    for tasks in [16u64, 64, 256] {
        const PER_TASK: u64 = 50;
        group.throughput(Throughput::Elements(tasks * PER_TASK));
        let before = (outbox.writer_stats(), Instant::now());
        group.bench_function(format!("concurrent/{tasks}"), |b| {
            b.iter(|| {
                let start = next;
                next += tasks * PER_TASK;
                rt.block_on(async {
                    let handles: Vec<_> = (0..tasks)
                        .map(|t| {
                            let outbox = outbox.clone();
                            tokio::spawn(async move {
                                for k in 0..PER_TASK {
                                    outbox.append(vec![event(start + t * PER_TASK + k)], vec![]).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for h in handles {
                        h.await.unwrap();
                    }
                })
            })
        });
        report(&format!("concurrent/{tasks}"), &outbox, before);
    }
    group.finish();
}

fn report(name: &str, outbox: &Outbox, (before, since): (outbox::WriterStats, Instant)) {
    let after = outbox.writer_stats();
    let commits = after.commits - before.commits;
    let requests = after.requests - before.requests;
    let secs = since.elapsed().as_secs_f64();
    eprintln!(
        "outbox_append/{name}: {requests} appends in {commits} commits ({:.1} appends/commit, {:.0} commits/s, {:.0} appends/s incl. warm-up)",
        requests as f64 / commits.max(1) as f64,
        commits as f64 / secs,
        requests as f64 / secs,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
