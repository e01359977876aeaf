//! WebSocket frames on arbitrary text.
//!
//! Properties, beyond "no panic": a frame that reads is within the size limit; a participant
//! notification rendered back (as 3CX would send it) reads back to the same notification.
#![no_main]

use adapter_3cx::ws::{EntityRef, parse_frame, participant_path, render_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let max = 1 + data.first().map_or(0, |b| usize::from(*b) * 8);
    let Ok(event) = parse_frame(&text, max) else { return };
    assert!(text.len() <= max);
    if let EntityRef::Participant { dn, id } = &event.entity {
        let frame = render_frame(event.sequence.unwrap_or(0), event.event_type, &participant_path(dn, id));
        let again = parse_frame(&frame, usize::MAX).expect("our frame reads");
        assert_eq!(again.event_type, event.event_type);
        assert_eq!(again.entity, event.entity);
    }
});
