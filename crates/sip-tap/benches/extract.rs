//! HEP + SIP header extraction throughput (target: ≥ 300k messages/s, DESIGN §9).
//!
//! `cargo bench -p sip-tap --bench extract`. Inputs are the samples: a HEPv3 packet carrying
//! the long-form B-leg INVITE (1226 bytes), and the compact, folded variant as raw SIP.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use listener_core::UnixMillis;
use sip_tap::sip::parse_datagram;
use sip_tap::{LearnerConfig, TapCore, TapSettings, Transport, hep};
use std::hint::black_box;

fn sample(path: &str) -> Vec<u8> {
    let full = format!("{}/../../testdata/samples/sip/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// What the learner needs from one message.
fn extract(packet: &[u8]) -> usize {
    let Ok(p) = hep::decode(packet) else { return 0 };
    let Some(payload) = p.payload else { return 0 };
    let Ok(m) = parse_datagram(payload, 65_535) else { return 0 };
    let from = m.from().ok().and_then(|f| f.user().map(str::len)).unwrap_or(0);
    let to = m.to().ok().and_then(|t| t.user().map(str::len)).unwrap_or(0);
    let cseq = m.cseq().map(|c| c.seq as usize).unwrap_or(0);
    m.call_id().len()
        + m.header("X-Call-Sid").map_or(0, str::len)
        + m.header("X-Parent-Call-Sid").map_or(0, str::len)
        + from
        + to
        + cseq
}

fn benches(c: &mut Criterion) {
    let hep_invite = sample("hep/hep3_sip_invite_ipv4.bin");
    let compact = sample("synthetic/bleg_invite_compact_folded.sip");

    let mut g = c.benchmark_group("sip_tap");
    g.throughput(Throughput::Elements(1));
    g.bench_function("hep_sip_extract_longform_invite", |b| b.iter(|| extract(black_box(&hep_invite))));
    g.bench_function("sip_extract_compact_folded_invite", |b| {
        b.iter(|| {
            let m = parse_datagram(black_box(&compact), 65_535).ok();
            m.map(|m| m.call_id().len() + m.header("X-Parent-Call-Sid").map_or(0, str::len))
        })
    });

    // The whole tap core: decode, parse, learn (each message a new Call-ID, so a leg update
    // comes out of every one), in batches of 1000.
    let payload = String::from_utf8_lossy(&sample("synthetic/bleg_invite_longform.sip")).into_owned();
    let packets: Vec<Vec<u8>> = (0..1000)
        .map(|i| {
            let sip = payload.replace("b1e9c2d4-5f60-4a7b-8c9d-0e1f2a3b4c5d", &format!("bench-{i:06}@cpaas"));
            hep::encode(&[(hep::chunk::PROTO_TYPE, &[1]), (hep::chunk::PAYLOAD, sip.as_bytes())])
        })
        .collect();
    g.throughput(Throughput::Elements(packets.len() as u64));
    g.bench_function("tap_core_learn_1000_invites", |b| {
        b.iter(|| {
            let mut core = TapCore::new(TapSettings {
                learner: LearnerConfig::default(),
                hep_auth_key: None,
                max_message_bytes: 65_535,
            });
            let mut n = 0;
            for p in &packets {
                core.handle_hep(UnixMillis(0), Transport::HepUdp, p);
                while core.poll_update().is_some() {
                    n += 1;
                }
            }
            assert_eq!(n, packets.len());
        })
    });
    g.finish();
}

criterion_group!(extract_benches, benches);
criterion_main!(extract_benches);
