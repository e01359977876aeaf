//! CDR framing and records: the real samples, every split, both vocabularies, limits.

use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

use super::*;
use crate::testdata;

/// Frames `chunks` (fed in turn) and returns every item, end of stream included.
fn frame(max: usize, chunks: &[&[u8]]) -> Vec<CdrLine> {
    let mut codec = CdrLineCodec::new(max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            out.push(item);
        }
    }
    while let Some(item) = codec.decode_eof(&mut buf).unwrap() {
        out.push(item);
    }
    out
}

#[test]
fn the_27_field_sample() {
    let line = testdata::CDR_LINE.trim_end_matches(['\r', '\n']);
    let r = parse_record(line, &FieldOrder::default()).unwrap();
    let t = |s| CivilTime::parse(s).unwrap();
    assert_eq!(
        r,
        CdrRecord {
            history_id: Some("288831"),
            call_id: Some("4cc2c72490010000_26808"),
            duration_secs: Some(25),
            time_start: Some(t("2024/06/17 05:59:49")),
            time_answered: Some(t("2024/06/17 05:59:58")),
            time_end: Some(t("2024/06/17 06:00:23")),
            termination: Termination::BySource,
            reason_terminated: Some("TerminatedBySrc"),
            from_no: Some("Ext.10016"),
            to_no: Some("+46703014082"),
            from_dn: Some("10016"),
            to_dn: Some("10020"),
            dial_no: Some("+46703014082"),
            reason_changed: None,
            final_number: Some("+46703014082"),
            final_dn: Some("10020"),
            chain: Some("Chain: Ext.10016;+46703014082;"),
            from_type: DnType::Extension,
            to_type: DnType::Line,
            final_type: DnType::Line,
            from_dispname: Some("Backup no2"),
            to_dispname: Some("+46703014082"),
            final_dispname: Some("+46703014082"),
            missed_queue_calls: None,
        }
    );
    assert_eq!(r.call_counter(), Some(26808));
    assert_eq!(r.chain_entries().collect::<Vec<_>>(), ["Ext.10016", "+46703014082"]);
    assert_eq!(r.dedup_key(), "h288831");
    assert_eq!(ext_number(r.from_no.unwrap()), "10016");
}

/// The V16 record an integrator re-keyed to JSON, put back into a line in the default order:
/// its values (ConfPlace, ReplacedSrc, ISO times) read as the legacy vocabulary says.
#[test]
fn the_v16_record_vocabulary() {
    let v: serde_json::Value = serde_json::from_str(testdata::CDR_V16_JSON).unwrap();
    let s = |k: &str| {
        let text = v[k].as_str().unwrap_or("").trim().to_owned();
        if k.starts_with("time") { text.replace(".000Z", "").replace('T', " ") } else { text }
    };
    let fields = [
        s("historyId"),
        s("callId"),
        s("duration"),
        s("timeStart"),
        s("timeAnswered"),
        s("timeEnd"),
        s("reasonTerminated"),
        s("fromNo"),
        s("toNo"),
        s("fromDn"),
        s("toDn"),
        s("dialNo"),
        s("reasonChanged"),
        s("finalNumber"),
        s("finalDn"),
        s("billCode"),
        s("billRate"),
        s("billCost"),
        s("billName"),
        s("chain"),
        s("fromType"),
        s("toType"),
        s("finalType"),
        s("fromDispname"),
        s("toDispname"),
        s("finalDispname"),
        s("missedQueueCalls"),
    ];
    let line = fields.join(",");
    let r = parse_record(&line, &FieldOrder::default()).unwrap();
    assert_eq!(r.history_id, Some("3268379"));
    assert_eq!(r.call_counter(), Some(549589));
    assert_eq!(r.time_start, CivilTime::parse("2020-10-11 20:39:13"));
    assert_eq!(r.time_answered, CivilTime::parse("2020/10/11 20:39:16"));
    assert_eq!(r.duration_secs, Some(24));
    assert_eq!(r.termination, Termination::BySource);
    assert_eq!(r.reason_changed, Some("ReplacedSrc"));
    assert_eq!((r.from_type, r.to_type, r.final_type), (DnType::Extension, DnType::Extension, DnType::Conference));
    assert_eq!(r.final_dn, Some("990"));
    assert_eq!(r.from_dispname, Some("Marcel Cruz"));
    assert_eq!(r.chain_entries().collect::<Vec<_>>(), ["Ext.141", "Ext.314", "Ext.990"]);
}

#[test]
fn both_vocabularies_case_insensitively() {
    for (text, t) in [
        ("TerminatedBySrc", Termination::BySource),
        ("terminatedbysrc", Termination::BySource),
        ("SRC_PARTICIPANT_TERMINATED", Termination::BySource),
        ("TerminatedByDst", Termination::ByDestination),
        ("dst_participant_terminated", Termination::ByDestination),
        ("continued_in", Termination::Continued),
        ("Redirected", Termination::Continued),
        ("rejected", Termination::Rejected),
        ("cancelled", Termination::Cancelled),
        ("Failed", Termination::Other),
        ("", Termination::Other),
    ] {
        assert_eq!(Termination::parse(text), t, "{text}");
    }
    for (text, t) in [
        ("Extension", DnType::Extension),
        ("EXTENSION", DnType::Extension),
        ("Line", DnType::Line),
        ("external_line", DnType::Line),
        ("provider", DnType::Line),
        ("queue", DnType::Queue),
        ("ring_group_ring_all", DnType::RingGroup),
        ("RingGroup", DnType::RingGroup),
        ("IVR", DnType::Ivr),
        ("voicemail", DnType::Voicemail),
        ("parking_orbit", DnType::Parking),
        ("shared_parking", DnType::Parking),
        ("ParkPlace", DnType::Parking),
        ("ConfPlace", DnType::Conference),
        ("fax", DnType::Other),
        // Found by the fuzzer: a prefix test must not slice inside a character.
        ("+4670\u{fffd}\u{fffd}10016", DnType::Other),
        ("ri\u{fffd}", DnType::Other),
        ("pa\u{e9}", DnType::Other),
    ] {
        assert_eq!(DnType::parse(text), t, "{text}");
    }
}

#[test]
fn field_orders() {
    assert_eq!(FieldOrder::default().len(), 27);
    let o = FieldOrder::new(&["time_start", "from_no", "TimeEnd", "custom-thing"]).unwrap();
    assert_eq!(o.unknown_names(), ["custom-thing"]);
    let r = parse_record("2024/01/02 03:04:05,Ext.100,2024/01/02 03:05:00,x", &o).unwrap();
    assert_eq!(r.from_no, Some("Ext.100"));
    assert_eq!(r.time_end, CivilTime::parse("2024/01/02 03:05:00"));
    assert_eq!(FieldOrder::new::<&str>(&[]), Err(FieldOrderError::Empty));
    assert_eq!(FieldOrder::new(&["time-start", "time_start"]), Err(FieldOrderError::Duplicate("time_start".into())));
    assert_eq!(FieldOrder::new(&["from-no"]), Err(FieldOrderError::NoTime));
}

#[test]
fn records_that_do_not_fit_the_order() {
    let o = FieldOrder::new(&["time-start", "from-no"]).unwrap();
    assert_eq!(parse_record("2024/01/02 03:04:05", &o), Err(CdrError::TooFewFields { got: 1, want: 2 }));
    assert_eq!(parse_record("2024/01/02 03:04:05,1,2", &o), Err(CdrError::TooManyFields { got: 3, want: 2 }));
    assert!(parse_record("2024/01/02 03:04:05,1,,", &o).is_ok(), "trailing empty fields are fine");
    assert!(matches!(parse_record("yesterday,1", &o), Err(CdrError::BadTime { field: "time-start", .. })));
    assert_eq!(parse_record(",1", &o), Err(CdrError::NoTime));
    let long = format!("{},1", "9".repeat(100));
    let Err(CdrError::BadTime { value, .. }) = parse_record(&long, &o) else { panic!() };
    assert_eq!(value.len(), 40);
    assert_eq!(CdrError::NoTime.label(), "no-time");
}

#[test]
fn times_and_durations() {
    let t = CivilTime::parse("2024/06/17 05:59:49").unwrap();
    assert_eq!((t.year, t.month, t.day, t.hour, t.minute, t.second), (2024, 6, 17, 5, 59, 49));
    assert_eq!(CivilTime::parse("2024-06-17T05:59:49.123"), Some(t));
    for bad in
        ["2024/13/17 05:59:49", "2024/06/17 24:00:00", "2024/06/17", "2024/06/17 05:59:4x", "2024/06/17 05:59:49Z"]
    {
        assert_eq!(CivilTime::parse(bad), None, "{bad}");
    }
    assert_eq!(parse_duration("00:00:25"), Some(25));
    assert_eq!(parse_duration("100:01:02"), Some(360_062));
    assert_eq!(parse_duration("1:2"), None);
    assert_eq!(parse_duration("00:61:00"), None);
}

#[test]
fn framing_lf_crlf_blank_and_the_last_record_without_newline() {
    let items = frame(1024, &[b"a,b\r\n\r\nc\n\nlast"]);
    assert_eq!(items, [CdrLine::Line("a,b".into()), CdrLine::Line("c".into()), CdrLine::Line("last".into())]);
}

#[test]
fn the_sample_framed_whole_split_everywhere_and_byte_by_byte() {
    let bytes = testdata::CDR_LINE.as_bytes();
    let crlf = format!("{}\r\n", testdata::CDR_LINE.trim_end());
    let want = vec![CdrLine::Line(testdata::CDR_LINE.trim_end().to_owned())];
    for input in [bytes, crlf.as_bytes()] {
        assert_eq!(frame(4096, &[input]), want);
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            assert_eq!(frame(4096, &[a, b]), want, "split at {at}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(frame(4096, &bytes), want);
    }
}

#[test]
fn over_long_lines_are_skipped_once_and_the_stream_goes_on() {
    let mut input = vec![b'x'; 100];
    input.extend_from_slice(b"\nok\n");
    let items = frame(10, &[&input]);
    assert_eq!(items, [CdrLine::TooLong { bytes: 100 }, CdrLine::Line("ok".into())]);
    // Fed in small pieces, the same.
    let chunks: Vec<&[u8]> = input.chunks(3).collect();
    assert_eq!(frame(10, &chunks), items);
    // A line of exactly the limit passes, with CRLF too.
    assert_eq!(frame(3, &[b"abc\r\n"]), [CdrLine::Line("abc".into())]);
    // An unterminated over-long tail is reported at the end.
    assert_eq!(frame(3, &[b"abcdefgh"]), [CdrLine::TooLong { bytes: 8 }]);
}

proptest! {
    /// Framing does not depend on how the bytes arrive.
    #[test]
    fn framing_is_independent_of_splits(data in proptest::collection::vec(prop_oneof![any::<u8>(), Just(b'\n'), Just(b'\r'), Just(b',')], 0..300), at in any::<prop::sample::Index>(), max in 1usize..64) {
        let whole = frame(max, &[&data]);
        let i = at.index(data.len() + 1);
        let (a, b) = data.split_at(i);
        prop_assert_eq!(&frame(max, &[a, b]), &whole);
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        prop_assert_eq!(&frame(max, &bytes), &whole);
        for item in &whole {
            if let CdrLine::Line(l) = item {
                prop_assert!(!l.contains('\n'));
                prop_assert!(!l.is_empty());
            }
        }
    }

    /// A record we write in any field order reads back field by field.
    #[test]
    fn records_read_back_in_any_order(perm in Just(DEFAULT_FIELDS.to_vec()).prop_shuffle(), from in "[0-9]{1,8}", to in "[0-9]{1,8}", secs in 0u32..86_400) {
        let order = FieldOrder::new(&perm).unwrap();
        let start = format!("2024/01/02 {:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
        let values: Vec<String> = perm.iter().map(|name| match *name {
            "time-start" => start.clone(),
            "from-dn" => from.clone(),
            "to-dn" => to.clone(),
            "reason-terminated" => "dst_participant_terminated".to_owned(),
            "to-type" => "queue".to_owned(),
            _ => String::new(),
        }).collect();
        let line = values.join(",");
        let r = parse_record(&line, &order).unwrap();
        prop_assert_eq!(r.time_start, CivilTime::parse(&start));
        prop_assert_eq!(r.from_dn, Some(from.as_str()));
        prop_assert_eq!(r.to_dn, Some(to.as_str()));
        prop_assert_eq!(r.termination, Termination::ByDestination);
        prop_assert_eq!(r.to_type, DnType::Queue);
    }

    /// Any text: a record or an error, never a panic.
    #[test]
    fn any_line_reads_or_errs(line in "\\PC{0,300}") {
        let _ = parse_record(&line, &FieldOrder::default());
        let _ = CivilTime::parse(&line);
        let _ = parse_duration(&line);
    }
}

/// The vendor samples of V20-era add-ons: their V20 vocabulary (`termination_reason_details`)
/// reads as ours does, and their `chid` (a V20 `call_history_id`) holds the call manager's
/// counter that their own ids (`YYMMDDhhmmss_<n>-<leg>`) show.
#[test]
fn the_competitors_samples_agree_with_our_reading() {
    let mut checked = 0;
    for line in testdata::CREOMATE_BUNDLE.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(t) = v["termination_reason_details"].as_str() {
            let want = if t == "declined" { Termination::Rejected } else { Termination::Other };
            assert_eq!(Termination::parse(t), want, "{t}");
        }
        if let (Some(chid), Some(id)) = (v["chid"].as_str(), v["id"].as_str()) {
            let n: i64 = id.split('_').nth(1).unwrap().split('-').next().unwrap().parse().unwrap();
            assert_eq!(call_history_counter(chid), Some(n), "{chid} {id}");
            let r = CdrRecord { call_id: Some(chid), ..CdrRecord::default() };
            assert_eq!(r.call_counter(), Some(n));
            checked += 1;
        }
    }
    assert_eq!(checked, 5);
    // Their ringing/answer/end events of one call share its counter; a new call has a new one.
    let ids = |text: &str, key: &str| -> Vec<i64> {
        text.lines()
            .filter_map(|l| {
                let id =
                    l.split(['&', ',']).find_map(|kv| kv.trim().trim_start_matches(['{', ' ']).strip_prefix(key))?;
                let id = id.trim_matches(['"', ' ', ':', '=']);
                id.split('_').nth(1)?.split('-').next()?.parse().ok()
            })
            .collect()
    };
    assert_eq!(ids(testdata::CREOMATE_GET, "id"), [2, 4, 4, 4, 4]);
    assert_eq!(ids(testdata::K2M, "\"Id\""), [10, 10, 10, 35, 35, 40]);
    assert_eq!(call_history_counter("not-a-uuid"), None);
    assert_eq!(call_history_counter("12345678-01dc-27dd-cc8a-799100000029"), None);
}

/// The V16/V18 management console's active calls are not Call Control's snapshot: the reader
/// takes nothing from them (that interface is for the `3cx-v18` type, not built).
#[test]
fn the_console_api_sample_is_not_a_call_control_snapshot() {
    let (dns, skipped) = crate::participant::parse_snapshot(testdata::V16_ACTIVE_CALLS.as_bytes()).unwrap();
    assert!(dns.is_empty());
    assert_eq!(skipped, 1);
    assert!(
        crate::participant::Participant::from_json(testdata::V16_ACTIVE_CALLS.as_bytes()).unwrap().status.is_none()
    );
}
