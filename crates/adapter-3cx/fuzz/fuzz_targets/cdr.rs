//! CDR framing, records and the merge on arbitrary bytes.
//!
//! Properties, beyond "no panic":
//! - the lines framed do not depend on how the bytes arrive (whole, split at a point the input
//!   chooses, byte by byte), and none is longer than the limit (in characters: raw bytes
//!   that are not UTF-8 become U+FFFD) or holds a newline;
//! - each line reads or is a malformed item; fed to a tracker with a CDR feed, a record is
//!   processed once (the same line again is a duplicate or still not a record).
#![no_main]

use adapter_3cx::cdr::{CdrLine, CdrLineCodec, FieldOrder, parse_record};
use adapter_3cx::tracker::{CdrOutcome, CdrSettings, Output, Tracker, TrackerSettings};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use listener_core::{PbxId, PbxType, UnixMillis};
use tokio_util::codec::Decoder;

const MAX: usize = 512;

fn frame(chunks: &[&[u8]]) -> Vec<CdrLine> {
    let mut codec = CdrLineCodec::new(MAX);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        while let Some(item) = codec.decode(&mut buf).expect("framing never fails") {
            out.push(item);
        }
    }
    while let Some(item) = codec.decode_eof(&mut buf).expect("framing never fails") {
        out.push(item);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let whole = frame(&[data]);
    let at = data.first().map_or(0, |b| usize::from(*b) % (data.len() + 1));
    let (a, b) = data.split_at(at);
    assert_eq!(frame(&[a, b]), whole, "split at {at}");
    if data.len() <= 512 {
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(frame(&bytes), whole, "byte by byte");
    }
    let order = FieldOrder::default();
    let mut settings = CdrSettings::new(order.clone(), jiff::tz::TimeZone::UTC);
    settings.backfill_max_age_ms = u64::MAX / 4;
    let mut tracker =
        Tracker::new(PbxId::new("fuzz", PbxType::new("3cx")), TrackerSettings { cdr: Some(settings), ..TrackerSettings::default() });
    let now = UnixMillis(1_800_000_000_000);
    for item in whole {
        let CdrLine::Line(line) = item else { continue };
        // Bounded in raw bytes: lossy UTF-8 turns each bad byte sequence into one U+FFFD (3
        // bytes), so the bound holds for chars, not for the String's byte length.
        assert!(!line.contains('\n') && line.chars().count() <= MAX + 1);
        let _ = parse_record(&line, &order);
        let first = tracker.handle_cdr_line(now, &line);
        let second = tracker.handle_cdr_line(now, &line);
        match first {
            CdrOutcome::Malformed(_) => assert!(matches!(second, CdrOutcome::Malformed(_))),
            CdrOutcome::Ambiguous => {}
            _ => assert_eq!(second, CdrOutcome::Duplicate, "{line}"),
        }
        while !matches!(tracker.poll_output(), Output::Timeout(_)) {}
    }
});
