//! HEPv3: the decoder and the stream framer agree, decoded fields stay inside the packet, and
//! the tap core accounts for every packet exactly once (never a panic, never a stall).
#![no_main]

use libfuzzer_sys::fuzz_target;
use listener_core::UnixMillis;
use sip_tap::{LearnerConfig, TapCore, TapSettings, Transport, hep};

fuzz_target!(|data: &[u8]| {
    match hep::decode(data) {
        Ok(p) => {
            // A packet that decodes is exactly one frame of a stream.
            assert_eq!(hep::frame_len(data, 65_535), Ok(Some(data.len())));
            for field in [p.payload, p.auth_key, p.correlation_id, p.node_name].into_iter().flatten() {
                assert!(field.len() + 12 <= data.len());
            }
        }
        Err(_) => {
            // The framer may wait for more, or fail; it never claims a longer packet than the
            // 16-bit length allows.
            if let Ok(Some(len)) = hep::frame_len(data, 65_535) {
                assert!((6..=65_535).contains(&len));
            }
        }
    }
    let mut core =
        TapCore::new(TapSettings { learner: LearnerConfig::default(), hep_auth_key: None, max_message_bytes: 65_535 });
    core.handle_hep(UnixMillis(0), Transport::HepUdp, data);
    let s = core.stats().clone();
    assert_eq!(s.packets, 1);
    // Refused, ignored, or its SIP read (well or badly): one of them.
    assert!(s.hep_malformed + s.hep_not_sip + s.sip_messages + s.sip_malformed >= 1);
    assert!(s.leg_updates <= s.sip_messages);
    while core.poll_update().is_some() {}
});
