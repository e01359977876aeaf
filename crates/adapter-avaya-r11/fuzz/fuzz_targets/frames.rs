//! DevLink3 framing and packets on arbitrary bytes.
//!
//! Properties, beyond "no panic":
//! - the decoded items do not depend on how the bytes were split into reads (whole vs. split
//!   at a point the input chooses vs. byte by byte);
//! - every frame payload re-encodes to a frame that decodes to the same payload;
//! - every packet that parses re-encodes to a packet that parses to itself (a fixpoint).
#![no_main]

use adapter_avaya_r11::codec::{Frame, FrameCodec};
use adapter_avaya_r11::packet::Packet;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Encoder;

const MAX: usize = 4096;

fn decode(chunks: &[&[u8]]) -> Result<Vec<Frame>, String> {
    adapter_avaya_r11::testdata::decode_chunks(MAX, chunks)
}

fuzz_target!(|data: &[u8]| {
    let whole = decode(&[data]);
    let at = data.first().map_or(0, |b| usize::from(*b) % (data.len() + 1));
    let (a, b) = data.split_at(at);
    assert_eq!(decode(&[a, b]), whole, "split at {at}");
    if data.len() <= 512 {
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(decode(&bytes), whole, "byte by byte");
    }
    let Ok(items) = whole else { return };
    for item in items {
        let Frame::Payload(payload) = item else { continue };
        let mut framed = BytesMut::new();
        FrameCodec::new(MAX).encode(&payload[..], &mut framed).expect("a decoded payload fits");
        assert_eq!(decode(&[&framed]), Ok(vec![Frame::Payload(payload.clone())]));
        if let Ok(packet) = Packet::parse(&payload) {
            let mut again = BytesMut::new();
            packet.encode(&mut again);
            assert_eq!(Packet::parse(&again).as_ref(), Ok(&packet), "encode ∘ parse is a fixpoint");
        }
    }
});
