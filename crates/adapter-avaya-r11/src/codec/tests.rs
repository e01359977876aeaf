use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

use super::*;
use crate::testdata::{decode_chunks, long_header_example, sample_frames};

const MAX: usize = 64 * 1024;

fn whole(bytes: &[u8]) -> Result<Vec<Frame>, String> {
    decode_chunks(MAX, &[bytes])
}

fn byte_by_byte(bytes: &[u8]) -> Result<Vec<Frame>, String> {
    let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
    decode_chunks(MAX, &chunks)
}

fn all_samples() -> Vec<u8> {
    sample_frames().into_iter().flat_map(|(_, b)| b).collect()
}

#[test]
fn every_sample_is_one_frame() {
    let frames = sample_frames();
    assert_eq!(frames.len(), 10, "the sample file has 10 complete frames");
    for (title, bytes) in frames {
        let items = whole(&bytes).unwrap();
        assert_eq!(items, vec![Frame::Payload(Bytes::copy_from_slice(&bytes[3..]))], "{title}");
        // The declared length is the whole frame.
        assert_eq!(usize::from(u16::from_be_bytes([bytes[1], bytes[2]])), bytes.len(), "{title}");
    }
}

#[test]
fn every_sample_reencodes_byte_for_byte() {
    for (title, bytes) in sample_frames() {
        let mut codec = FrameCodec::new(MAX);
        let mut out = BytesMut::new();
        codec.encode(&bytes[3..], &mut out).unwrap();
        assert_eq!(&out[..], &bytes[..], "{title}");
    }
}

#[test]
fn samples_whole_byte_by_byte_and_split_at_every_offset() {
    let stream = all_samples();
    let expected: Vec<Frame> =
        sample_frames().into_iter().map(|(_, b)| Frame::Payload(Bytes::copy_from_slice(&b[3..]))).collect();
    assert_eq!(whole(&stream).unwrap(), expected);
    assert_eq!(byte_by_byte(&stream).unwrap(), expected);
    for at in 0..=stream.len() {
        let (a, b) = stream.split_at(at);
        assert_eq!(decode_chunks(MAX, &[a, b]).unwrap(), expected, "split at {at}");
    }
}

#[test]
fn three_byte_length_form() {
    // The sample's header: 49 81 1c 44 = 40004 bytes in total, the 4 header bytes included.
    let example = long_header_example();
    assert_eq!(&example[..4], &[0x49, 0x81, 0x1c, 0x44]);
    let payload: Vec<u8> = example[4..].iter().copied().chain((0..40_000 - 4).map(|i| i as u8)).collect();
    assert_eq!(payload.len(), 40_000);
    let mut out = BytesMut::new();
    FrameCodec::new(MAX).encode(&payload[..], &mut out).unwrap();
    assert_eq!(&out[..4], &example[..4]);
    assert_eq!(out.len(), 40_004);
    assert_eq!(whole(&out).unwrap(), vec![Frame::Payload(Bytes::from(payload.clone()))]);
    assert_eq!(byte_by_byte(&out).unwrap(), vec![Frame::Payload(Bytes::from(payload))]);
}

#[test]
fn a_small_frame_in_the_long_form_is_accepted() {
    // 49 | 80 00 0c | type + 4 bytes: a peer may use the 3-byte form for any length.
    let frame = [0x49, 0x80, 0x00, 0x0c, 0x00, 0x2a, 0x00, 0x01, 1, 2, 3, 4];
    assert_eq!(whole(&frame).unwrap(), vec![Frame::Payload(Bytes::copy_from_slice(&frame[4..]))]);
}

#[test]
fn the_two_byte_form_is_used_up_to_its_limit() {
    let mut out = BytesMut::new();
    let mut codec = FrameCodec::new(MAX);
    codec.encode(&vec![0u8; MAX_SHORT_FRAME - 3][..], &mut out).unwrap();
    assert_eq!(&out[..3], &[0x49, 0x7f, 0xff]);
    out.clear();
    codec.encode(&vec![0u8; MAX_SHORT_FRAME - 2][..], &mut out).unwrap();
    assert_eq!(out[1] & 0x80, 0x80, "one more byte needs the long form");
    assert_eq!(out.len(), MAX_SHORT_FRAME - 2 + 4);
}

#[test]
fn garbage_before_a_frame_is_skipped_and_counted() {
    let frames = all_samples();
    let mut stream = b"hello\x49\x00".to_vec();
    stream.extend_from_slice(&frames);
    let items = whole(&stream).unwrap();
    assert_eq!(items[0], Frame::Skipped { bytes: 7, reason: SkipReason::BadStartByte(b'h') });
    assert_eq!(items.len(), 11);
    assert_eq!(byte_by_byte(&stream).unwrap(), items);
}

#[test]
fn garbage_between_frames_resynchronises_on_a_known_packet_type() {
    let samples = sample_frames();
    let mut stream = samples[0].1.clone();
    // A 0x49 followed by a plausible length but an unknown type is not taken as a frame.
    stream.extend_from_slice(&[0x13, 0x49, 0x00, 0x0f, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0]);
    stream.extend_from_slice(&samples[1].1);
    let items = whole(&stream).unwrap();
    assert_eq!(
        items,
        vec![
            Frame::Payload(Bytes::copy_from_slice(&samples[0].1[3..])),
            Frame::Skipped { bytes: 15, reason: SkipReason::BadStartByte(0x13) },
            Frame::Payload(Bytes::copy_from_slice(&samples[1].1[3..])),
        ]
    );
    assert_eq!(byte_by_byte(&stream).unwrap(), items);
}

#[test]
fn an_over_limit_length_is_skipped_without_reserving() {
    let samples = sample_frames();
    // Declares 0x7fff bytes with a 1 KiB limit.
    let mut stream = vec![0x49, 0x7f, 0xff, 0, 0];
    stream.extend_from_slice(&samples[0].1);
    let items = decode_chunks(1024, &[&stream]).unwrap();
    assert_eq!(
        items,
        vec![
            Frame::Skipped { bytes: 5, reason: SkipReason::TooLong { length: 0x7fff, max: 1024 } },
            Frame::Payload(Bytes::copy_from_slice(&samples[0].1[3..])),
        ]
    );
    // Nothing was reserved for the 32 KiB the header announced.
    let mut codec = FrameCodec::new(1024);
    let mut buf = BytesMut::from(&[0x49u8, 0x7f, 0xff][..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(buf.capacity() < 1024);
}

#[test]
fn a_too_short_length_is_skipped() {
    let samples = sample_frames();
    let mut stream = vec![0x49, 0x00, 0x05, 0xaa, 0xbb];
    stream.extend_from_slice(&samples[2].1);
    let items = whole(&stream).unwrap();
    assert_eq!(items[0], Frame::Skipped { bytes: 5, reason: SkipReason::TooShort(5) });
    assert_eq!(items[1], Frame::Payload(Bytes::copy_from_slice(&samples[2].1[3..])));
}

#[test]
fn endless_garbage_is_an_error() {
    let garbage = vec![0x16u8; 2_000];
    assert_eq!(
        decode_chunks(1024, &[&garbage]),
        Err("no DevLink3 frame found in 1024 bytes; the peer does not speak DevLink3".into())
    );
    // The same split byte by byte.
    let chunks: Vec<&[u8]> = garbage.chunks(1).collect();
    assert!(decode_chunks(1024, &chunks).is_err());
}

#[test]
fn a_truncated_frame_at_eof_is_reported() {
    let frame = &sample_frames()[0].1;
    let cut = &frame[..frame.len() - 2];
    assert_eq!(whole(cut).unwrap(), vec![Frame::Skipped { bytes: cut.len(), reason: SkipReason::TruncatedAtEof }]);
    assert_eq!(whole(&frame[..2]).unwrap(), vec![Frame::Skipped { bytes: 2, reason: SkipReason::TruncatedAtEof }]);
}

#[test]
fn outgoing_payload_over_the_limit_is_refused() {
    let mut out = BytesMut::new();
    let err = FrameCodec::new(1024).encode(&[0u8; 1024][..], &mut out).unwrap_err();
    assert!(matches!(err, CodecError::PayloadTooLong { len: 1024, max: 1024 }));
    assert!(out.is_empty());
}

#[test]
fn packet_codec_yields_packets_and_malformed_items() {
    let samples = sample_frames();
    let mut stream = samples[0].1.clone();
    // A frame with a known type but a truncated body.
    stream.extend_from_slice(&[0x49, 0x00, 0x09, 0x00, 0x30, 0x00, 0x01, 0x12, 0x34]);
    let mut codec = PacketCodec::new(MAX);
    let mut buf = BytesMut::from(&stream[..]);
    let first = codec.decode(&mut buf).unwrap().unwrap();
    assert!(matches!(first, Incoming::Packet(Packet::TestRequest { request_id: 0x1234_5678, .. })));
    let second = codec.decode(&mut buf).unwrap().unwrap();
    assert!(matches!(second, Incoming::Malformed { .. }), "{second:?}");
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
}

fn payloads() -> impl Strategy<Value = Vec<Vec<u8>>> {
    // Payloads start with a packet type; some are long enough for the 3-byte form.
    let payload = (
        prop::sample::select(vec![0x002A_0001u32, 0x1030_0011, 0x8030_0011, 0x0123_4567]),
        prop_oneof![
            8 => prop::collection::vec(any::<u8>(), 0..200),
            1 => prop::collection::vec(any::<u8>(), 32_760..33_000),
        ],
    )
        .prop_map(|(t, mut body)| {
            let mut p = t.to_be_bytes().to_vec();
            p.append(&mut body);
            p
        });
    prop::collection::vec(payload, 0..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Encode ↔ decode: any payloads, framed and split anywhere, come back unchanged.
    #[test]
    fn encode_decode_round_trip(payloads in payloads(), splits in prop::collection::vec(any::<prop::sample::Index>(), 0..4)) {
        let mut codec = FrameCodec::new(MAX);
        let mut stream = BytesMut::new();
        for p in &payloads {
            codec.encode(&p[..], &mut stream).unwrap();
        }
        let mut cuts: Vec<usize> = splits.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut from = 0;
        for c in cuts {
            chunks.push(&stream[from..c]);
            from = c;
        }
        chunks.push(&stream[from..]);
        let expected: Vec<Frame> = payloads.iter().map(|p| Frame::Payload(Bytes::copy_from_slice(p))).collect();
        prop_assert_eq!(decode_chunks(MAX, &chunks), Ok(expected));
    }

    /// Any bytes: never a panic, and the outcome does not depend on how the bytes were split.
    #[test]
    fn arbitrary_bytes_decode_the_same_however_split(bytes in prop::collection::vec(any::<u8>(), 0..600), at in any::<prop::sample::Index>()) {
        let once = decode_chunks(512, &[&bytes]);
        let by_byte: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(&decode_chunks(512, &by_byte), &once);
        let (a, b) = bytes.split_at(at.index(bytes.len() + 1));
        prop_assert_eq!(&decode_chunks(512, &[a, b]), &once);
    }

    /// Valid frames after garbage are all found once the garbage is skipped, and the skipped
    /// bytes are counted exactly.
    #[test]
    fn frames_after_garbage_are_recovered(garbage in prop::collection::vec(any::<u8>().prop_filter("not a start byte", |b| *b != 0x49), 1..50), payloads in payloads()) {
        // Resynchronisation looks for documented packet types; the first frame must have one.
        prop_assume!(payloads.first().is_some_and(|p| crate::packet::is_known_type(u32::from_be_bytes([p[0], p[1], p[2], p[3]]))));
        let mut codec = FrameCodec::new(MAX);
        let mut stream = BytesMut::from(&garbage[..]);
        for p in &payloads {
            codec.encode(&p[..], &mut stream).unwrap();
        }
        let mut expected = vec![Frame::Skipped { bytes: garbage.len(), reason: SkipReason::BadStartByte(garbage[0]) }];
        expected.extend(payloads.iter().map(|p| Frame::Payload(Bytes::copy_from_slice(p))));
        let by_byte: Vec<&[u8]> = stream.chunks(1).collect();
        prop_assert_eq!(decode_chunks(MAX, &by_byte), Ok(expected.clone()));
        prop_assert_eq!(decode_chunks(MAX, &[&stream]), Ok(expected));
    }
}
