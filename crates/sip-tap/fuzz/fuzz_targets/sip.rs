//! SIP: whatever the bytes, the reader stays in bounds, reads the same message from the bytes
//! it said it used, and frames a stream the same however it is cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_tap::sip::{parse_datagram, parse_stream};

const MAX: usize = 8_192;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else { return };
    if let Ok(m) = parse_datagram(data, MAX) {
        assert!(m.consumed <= data.len());
        assert!(!m.call_id().is_empty());
        assert!(m.cseq().is_ok() && m.from().is_ok() && m.to().is_ok());
        // The bytes it used are the message: read again, they give the same one.
        let again = parse_datagram(&data[..m.consumed], MAX).expect("a message reads again from its own bytes");
        assert_eq!(again.call_id(), m.call_id());
        assert_eq!(again.body, m.body);
    }
    let whole = parse_stream(data, MAX);
    if let Ok(Some(m)) = &whole {
        assert!(m.consumed <= data.len() && m.body.len() <= m.consumed);
        // A prefix of the stream yields nothing yet, or the same message.
        let at = usize::from(cut) * data.len() / 255;
        match parse_stream(&data[..at], MAX) {
            Ok(None) => assert!(at < m.consumed),
            Ok(Some(p)) => assert_eq!((p.consumed, p.call_id()), (m.consumed, m.call_id())),
            Err(_) => panic!("a prefix of a good stream is not an error"),
        }
    }
});
