//! End-to-end delivery throughput: events appended to a durable outbox (WAL, FULL) are
//! delivered by the forwarder over HTTP on loopback to the platform simulator, which verifies
//! every signature. One iteration = appending a burst of events (in groups of 20, as the
//! pipeline commits them, spread over 500 calls) and waiting until the platform has accepted
//! all of them.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use forwarder::{Forwarder, ForwarderConfig};
use outbox::{NewEvent, Outbox, OutboxConfig, WhenFull};
use pbx_sim::platform::{Platform, PlatformConfig};
use webhook_signature::SigningSecret;

const BURST: u64 = 4_000;

fn body(i: u64) -> Vec<u8> {
    format!(
        r#"{{"accountId":"9539ee93-64c8-802b-360b-c6f2f7cf2507","accountName":"Test Account","parentCallSid":"e5bc544c-2186-47e8-8784-6182cf8190cb","callSid":"85cb3194-76e2-43e1-ad56-59556af617b9","childSid":"ea707e77-18c1-4ad8-9072-6c396ee3{i:04}","type":"voice","event":"phone","status":"connected","from":"441234567890","to":"441234567891","extension":"201","meta":{{"pbx":"site-1","pbxType":"avaya-r11","pbxCallId":"{i}","direction":"inbound","correlation":"sip-call-id","source":"devlink3"}},"timestamp":1623163324316}}"#
    )
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = SigningSecret::from_bytes(vec![5; 32]);
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, secret.to_whsec()).unwrap();
    let mut group = c.benchmark_group("forwarder_end_to_end");
    group.sample_size(10).measurement_time(Duration::from_secs(15)).warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(BURST));
    for concurrency in [16usize, 64] {
        let (platform, outbox, stop, task) = rt.block_on(async {
            let platform = Platform::start(
                "127.0.0.1:0".parse().unwrap(),
                PlatformConfig { secrets: vec![secret.clone()], tolerance_secs: 300, ..PlatformConfig::default() },
            )
            .await
            .unwrap();
            let path = dir.path().join(format!("e2e-{concurrency}.sqlite"));
            let outbox = Outbox::open(&path, OutboxConfig::new(1 << 30, WhenFull::DropOldest)).unwrap();
            let mut config = ForwarderConfig::new(platform.url(), vec![secret_file.clone()]);
            config.max_concurrency = concurrency;
            let forwarder = Forwarder::new(outbox.clone(), config.load().unwrap()).unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(forwarder.run(async move {
                let _ = stopped.await;
            }));
            (platform, outbox, stop, task)
        });
        let mut next = 0u64;
        group.bench_function(format!("concurrency/{concurrency}"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let first = next;
                    next += BURST;
                    rt.block_on(async {
                        let appends: Vec<_> = (first..next)
                            .step_by(20)
                            .map(|s| {
                                let outbox = outbox.clone();
                                tokio::spawn(async move {
                                    let events = (s..s + 20)
                                        .map(|i| NewEvent {
                                            id: format!("{i:016x}"),
                                            order_key: format!("call-{}", i % 500),
                                            body: body(i),
                                            created_ms: 0,
                                        })
                                        .collect();
                                    outbox.append(events, vec![]).await.unwrap();
                                })
                            })
                            .collect();
                        for a in appends {
                            a.await.unwrap();
                        }
                        let got = platform.wait_for_distinct(next as usize, Duration::from_secs(120)).await;
                        assert_eq!(got, next as usize, "every event delivered");
                    });
                }
                start.elapsed()
            })
        });
        let writer = outbox.writer_stats();
        eprintln!(
            "forwarder_end_to_end/concurrency/{concurrency}: {} events delivered, {} duplicates, {} outbox commits for {} requests",
            platform.distinct_accepted(),
            platform.duplicates(),
            writer.commits,
            writer.requests
        );
        rt.block_on(async {
            let _ = stop.send(());
            task.await.unwrap().unwrap();
            platform.stop().await;
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
