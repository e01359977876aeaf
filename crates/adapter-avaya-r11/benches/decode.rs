//! DevLink3 decode throughput on one core: frames → packets → Delta3 → tracker → signals.
//!
//! The input is a realistic stream: hunt-group calls (ring three phones, one answers, hold,
//! resume, both ends hang up: 6 Delta3 records per call) and a SIPTrack START per call, each
//! record in its own DevLink3 event frame, as the IP Office sends them.
//!
//! `cargo bench -p adapter-avaya-r11 --bench decode`
#![allow(clippy::unwrap_used, missing_docs)]

use adapter_avaya_r11::codec::{Incoming, PacketCodec};
use adapter_avaya_r11::delta3;
use adapter_avaya_r11::packet::{Event, EventHeader, EventTuple, Packet, SipTrack};
use adapter_avaya_r11::tracker::{Output, Tracker, TrackerSettings};
use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use listener_core::{PbxId, PbxType, UnixMillis};
use tokio_util::codec::{Decoder, Encoder};

const CALLS: u32 = 5_000;

fn records() -> Vec<EventTuple> {
    let mut out = Vec::new();
    for i in 0..CALLS {
        let trunk = format!("c0a82a03{:08x}", 4 * i);
        let ends: Vec<String> = (1..4).map(|k| format!("c0a82a03{:08x}", 4 * i + k)).collect();
        let call = format!("c0a82a03,{i},,,,0,,200,,200,");
        let a = |state: u32, tone: u32| {
            format!(
                "{trunk},1,{state},1,{tone},0,1,0,0,5,0,sip-{i}@platform,,0,0,441234567890,,,,,,4477009{i:05},0,9,\"Caller {i}\""
            )
        };
        let b = |audio: u32| format!("{},0,2,{audio},0,0,0,0,1,8,106,,4002,0,4,,,,,,200,,100,5", ends[1]);
        let targets: String = ends
            .iter()
            .zip(["4001", "4002", "4003"])
            .map(|(e, x)| format!("<Target>{e},0,0,8,106,,{x},0,4,,,200,4477009{i:05},100</Target>"))
            .collect();
        out.push(EventTuple::SipTrack(format!("START,{trunk},17.{i}.1,TRUNK,IN,sip-{i}@platform")));
        out.push(EventTuple::CallDelta3(format!(
            "<Detail><Call>{call}</Call><PartyA>{}</PartyA><Target_list>{targets}</Target_list></Detail>",
            a(19, 2)
        )));
        for (tone, audio) in [(0, 1), (1, 0), (0, 1)] {
            out.push(EventTuple::CallDelta3(format!(
                "<Detail><Call>{call}</Call><PartyA>{}</PartyA><PartyB>{}</PartyB></Detail>",
                a(2, tone),
                b(audio)
            )));
        }
        out.push(EventTuple::CallDelta3(format!("<CallLost>c0a82a03,{},1,16</CallLost>", ends[1])));
        out.push(EventTuple::CallDelta3(format!("<CallLost>c0a82a03,{trunk},1,16</CallLost>")));
    }
    out
}

fn stream(records: &[EventTuple]) -> BytesMut {
    let mut codec = PacketCodec::new(262_144);
    let mut out = BytesMut::new();
    for (n, tuple) in records.iter().enumerate() {
        let event = Event {
            header: EventHeader::Short,
            pbx_address: [192, 168, 42, 3].into(),
            counter: n as u32,
            tuples: vec![tuple.clone()],
        };
        codec.encode(Packet::Event(event), &mut out).unwrap();
    }
    out
}

/// Decodes the whole stream; returns (records, signals).
fn run(bytes: &[u8], track: bool) -> (u64, u64) {
    let mut codec = PacketCodec::new(262_144);
    let mut buf = BytesMut::from(bytes);
    let mut tracker = Tracker::new(PbxId::new("bench", PbxType::new("avaya-r11")), TrackerSettings::default());
    let (mut records, mut signals) = (0u64, 0u64);
    let now = UnixMillis(1_700_000_000_000);
    while let Some(item) = codec.decode(&mut buf).unwrap() {
        let Incoming::Packet(Packet::Event(event)) = item else { panic!("unexpected item") };
        for tuple in &event.tuples {
            records += 1;
            match tuple {
                EventTuple::CallDelta3(text) => {
                    let record = delta3::parse(text).unwrap();
                    if track {
                        tracker.handle_delta3(now, &record);
                    }
                }
                EventTuple::SipTrack(text) => {
                    let t = SipTrack::parse(text).unwrap();
                    if track {
                        tracker.handle_sip_track(now, &t);
                    }
                }
                _ => {}
            }
            while let Output::Event(_) = tracker.poll_output() {
                signals += 1;
            }
        }
    }
    (records, signals)
}

fn bench(c: &mut Criterion) {
    let records = records();
    let bytes = stream(&records);
    let (n, signals) = run(&bytes, true);
    assert_eq!(n, records.len() as u64);
    // Per call: 3 ringing, connected, 2 answered-elsewhere, held, resumed, disconnected, ended.
    assert_eq!(signals, u64::from(CALLS) * 10);
    let mut group = c.benchmark_group("devlink3");
    group.throughput(Throughput::Elements(n));
    group.bench_function("frames+delta3 parse", |b| b.iter(|| run(&bytes, false)));
    group.bench_function("frames+delta3+tracker → signals", |b| b.iter(|| run(&bytes, true)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
