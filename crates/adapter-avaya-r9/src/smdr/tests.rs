//! The parser on every real sample, each documented anomaly, and malformed lines.

use proptest::prelude::*;

use super::*;
use crate::codec::{Line, decode_chunks};
use crate::testdata::{SMDR_DOC_EXAMPLES, SMDR_TRUNCATED_EXAMPLES, truncated_examples_dated};

fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    decode_chunks(4096, &[bytes])
        .into_iter()
        .map(|l| match l {
            Line::Text(t) => t.to_vec(),
            Line::TooLong { .. } => panic!("sample line too long"),
        })
        .collect()
}

/// A compact summary of a record, one line each, for golden comparisons.
fn summary(r: &SmdrRecord<'_>) -> String {
    format!(
        "{} id={} cont={} {:?} int={} ring={} conn={} hold={} park={} caller={} called={} dialled={} p1={:?}:{}:{} p2={:?}:{}:{} cause={:?} targeter={:?} fields={}",
        r.call_start,
        r.call_id,
        u8::from(r.continuation),
        r.direction,
        u8::from(r.is_internal),
        r.ring_secs,
        r.connected_secs,
        r.hold_secs,
        r.park_secs,
        r.caller,
        r.called_number,
        r.dialled_number,
        r.party1.kind,
        r.party1.number,
        r.party1.name,
        r.party2.kind,
        r.party2.number,
        r.party2.name,
        r.targeting_cause,
        r.targeter_id,
        r.fields,
    )
}

#[test]
fn every_documentation_example_parses() {
    let lines = lines(SMDR_DOC_EXAMPLES);
    assert_eq!(lines.len(), 11);
    let got: Vec<String> = lines.iter().map(|l| summary(&parse(&line_text(l)).unwrap())).collect();
    let want = [
        "2008/06/28 09:28:41 id=1000014155 cont=0 Inbound int=0 ring=9 conn=0 hold=0 park=0 caller=8004206 called=4324 dialled=4324 p1=Extension:4324:Joe Bloggs p2=Trunk:9161:LINE 5.1 cause=\"\" targeter=\"\" fields=17",
        // Is Internal = "I" and a trailing space (the line's last field is "0 ").
        "2008/10/20 06:43:58 id=28 cont=0 Outbound int=1 ring=21 conn=10 hold=0 park=0 caller=15 called=11 dialled=11 p1=Extension:15:Extn15 p2=Voicemail:9051:VM Channel 1 cause=\"\" targeter=\"\" fields=17",
        "2008/06/28 09:30:57 id=1000014160 cont=1 Inbound int=0 ring=7 conn=13 hold=11 park=0 caller=01707392200 called=299999 dialled=299999 p1=Extension:4750:John Smith p2=Trunk:9002:LINE 1.2 cause=\"\" targeter=\"\" fields=17",
        "2008/06/28 09:30:57 id=1000014160 cont=0 Inbound int=0 ring=0 conn=21 hold=0 park=0 caller=01707392200 called=299999 dialled=299999 p1=Voicemail:9502:VM Channel 2 p2=Trunk:9002:LINE 1.2 cause=\"\" targeter=\"\" fields=17",
        "2008/08/01 15:14:19 id=1000013 cont=0 Inbound int=0 ring=7 conn=5 hold=0 park=0 caller=01707299900 called=23 dialled=390664 p1=Extension:23:Extn23 p2=Trunk:9001:Line 1.2 cause=\"\" targeter=\"\" fields=31",
        "2008/06/26 10:27:44 id=1000013898 cont=0 Outbound int=1 ring=4 conn=44 hold=0 park=0 caller=4688 called=4207 dialled=4207 p1=Extension:4688:Joe Bloggs p2=Extension:4207:John Smith cause=\"\" targeter=\"\" fields=17",
        // Call Start without seconds.
        "2008/07/09 18:00 id=1000038 cont=1 Outbound int=1 ring=8 conn=0 hold=0 park=0 caller=2122 called=2124 dialled=2124 p1=Extension:2122:Extn2122 p2=Extension:2124:Extn2124 cause=\"\" targeter=\"\" fields=30",
        "2008/07/09 18:00 id=1000038 cont=0 Outbound int=1 ring=1 conn=38 hold=0 park=0 caller=2122 called=2124 dialled=2124 p1=Extension:2122:Extn2122 p2=Extension:2121:Extn2121 cause=\"\" targeter=\"\" fields=30",
        "2008/07/09 16:25:26 id=1000037 cont=0 Outbound int=1 ring=7 conn=3 hold=0 park=0 caller=207 called=203 dialled=203 p1=Extension:207:Extn207 p2=Extension:203:Extn203 cause=\"\" targeter=\"\" fields=30",
        "2008/07/09 16:39:11 id=1000052 cont=1 Outbound int=1 ring=2 conn=0 hold=0 park=4 caller=207 called=203 dialled=203 p1=Extension:207:Extn207 p2=Extension:203:Extn203 cause=\"\" targeter=\"\" fields=30",
        "2008/07/09 16:39:11 id=1000052 cont=0 Outbound int=1 ring=0 conn=2 hold=0 park=0 caller=207 called=203 dialled=203 p1=Extension:207:Extn207 p2=Extension:201:Extn201 cause=\"\" targeter=\"\" fields=30",
    ];
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "line {}", i + 1);
    }
    let text = line_text(&lines[6]);
    let seven = parse(&text).unwrap();
    assert!(!seven.call_start.has_seconds);
}

#[test]
fn the_truncated_examples_fail_on_their_elided_date_and_parse_once_dated() {
    for line in lines(SMDR_TRUNCATED_EXAMPLES) {
        let err = parse(&line_text(&line)).unwrap_err();
        assert_eq!(err.kind(), "call-start", "{err}");
        assert!(err.to_string().starts_with("field 1 (call-start) is not valid: \"\u{2026} 16:"), "{err}");
    }
    let dated = truncated_examples_dated();
    let got: Vec<String> = lines(&dated)
        .iter()
        .map(|l| {
            let text = line_text(l);
            let r = parse(&text).unwrap();
            format!(
                "{} {} {} {:?} {:?} {:?}",
                r.call_id,
                u8::from(r.continuation),
                r.party1.number,
                r.targeting_cause,
                r.targeter_id,
                r.targeted_number
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            "1000044 1 203 \"U XfP\" \"Extn207\" \"\"",
            "1000043 0 207 \"\" \"\" \"\"",
            "1000044 0 207 \"U Xfd\" \"Extn203\" \"\"",
            "1000028 0 203 \"U MT\" \"Extn203\" \"9416\"",
            "1000027 0 207 \"\" \"\" \"\"",
        ]
    );
}

#[test]
fn nul_bytes_non_utf8_names_and_sip_callers() {
    let mut line =
        b"2024/03/31 00:59:59,00:01:02,5,9145661757@172.16.2.10,I,201,441234567890,,0,77,0,E201,Jos\xe9 ".to_vec();
    line.extend_from_slice(b"\0\0Smith,T9001,Line 1.1,0,0,,,,,,,,,,,,,,\0\0 \r");
    let text = line_text(&line);
    let r = parse(&text).unwrap();
    assert_eq!(r.party1.name, "Jos\u{fffd} Smith");
    assert_eq!(r.connected_secs, 62);
    assert_eq!(caller_number(&r.caller), "9145661757");
    assert_eq!(caller_number("anonymous@anonymous.invalid"), "anonymous@anonymous.invalid");
    assert_eq!(caller_number("+441234@h"), "+441234");
    assert_eq!(caller_number("201"), "201");
    // Hours past 99 and 35+ fields (the extras ignored).
    let long = format!("2024/01/01 10:00:00,123:00:00,0,201,O,9,9,,0,5,0,E201,A,T9001,L,0,0{}", ",x".repeat(30));
    let r = parse(&long).unwrap();
    assert_eq!(r.connected_secs, 123 * 3600);
    assert_eq!(r.fields, 47);
}

#[test]
fn malformed_lines_name_the_field() {
    let good = "2024/01/01 10:00:00,00:00:05,3,201,O,202,202,,1,5,0,E201,A,E202,B,0,0";
    assert!(parse(good).is_ok());
    let cases: [(&str, &str); 9] = [
        ("a,b,c", "too-few-fields"),
        ("2024/13/01 10:00:00", "call-start"),
        ("2024/01/01", "call-start"),
        ("00:00:05", "connected-time"),
        (",3,201,", "ring-time"),
        (",O,", "direction"),
        (",1,5,0,", "call-id"),
        (",5,0,E201", "continuation"),
        (",0,0", "park-time"),
    ];
    let bad = [
        "a,b,c".to_owned(),
        good.replace("2024/01/01", "2024/13/01"),
        good.replace("2024/01/01 10:00:00", "2024/01/01"),
        good.replace("00:00:05", "00:99:05"),
        good.replace(",3,201,", ",x,201,"),
        good.replace(",O,", ",X,"),
        good.replace(",1,5,0,", ",1,5a,0,"),
        good.replace(",5,0,E201", ",5,2,E201"),
        good.replace(",0,0", ",0,-1"),
    ];
    for ((_, kind), line) in cases.iter().zip(&bad) {
        assert_eq!(parse(line).unwrap_err().kind(), *kind, "{line}");
    }
}

proptest! {
    /// The parser never panics, and a parsed record's Call ID is digits and its start a date.
    #[test]
    fn arbitrary_lines_never_panic(line in proptest::collection::vec(any::<u8>(), 0..400)) {
        let text = line_text(&line);
        if let Ok(r) = parse(&text) {
            prop_assert!(r.call_id.bytes().all(|b| b.is_ascii_digit()));
            prop_assert!((1..=12).contains(&r.call_start.month));
        }
    }

    /// Records built from fields parse back to those fields.
    #[test]
    fn generated_records_round_trip(
        secs in 0u32..360_000, ring in 0u32..100_000, id in 1u64..u64::MAX / 2, cont in any::<bool>(),
        hold in 0u32..1000, park in 0u32..1000, ext in "[0-9]{2,6}", name in "[A-Za-z ]{0,20}",
        trailing in 0usize..20,
    ) {
        let line = format!(
            "2025/10/26 01:30:00,{}:{:02}:{:02},{ring},0123,I,{ext},{ext},,0,{id},{},E{ext},{name},T9001,Line 1.1,{hold},{park}{}",
            secs / 3600, secs / 60 % 60, secs % 60, u8::from(cont), ",".repeat(trailing)
        );
        let r = parse(&line).unwrap();
        prop_assert_eq!(r.connected_secs, secs);
        prop_assert_eq!(r.ring_secs, ring);
        let id_text = id.to_string();
        prop_assert_eq!(&*r.call_id, id_text.as_str());
        prop_assert_eq!(r.continuation, cont);
        prop_assert_eq!(r.party1.extension(), Some(ext.as_str()));
        prop_assert_eq!(&*r.party1.name, name.trim());
        prop_assert_eq!((r.hold_secs, r.park_secs), (hold, park));
    }
}

/// The readers as first written (Call Start and durations with `split` and `str::parse`,
/// `line_text` without its fast path): the reference the faster ones are checked against.
mod reference {
    use std::borrow::Cow;

    use super::CallStart;

    /// `line_text` without its ASCII fast path.
    pub fn line_text(line: &[u8]) -> Cow<'_, str> {
        let text = if line.contains(&0) {
            let clean: Vec<u8> = line.iter().copied().filter(|b| *b != 0).collect();
            Cow::Owned(String::from_utf8_lossy(&clean).into_owned())
        } else {
            String::from_utf8_lossy(line)
        };
        match text {
            Cow::Borrowed(s) => Cow::Borrowed(s.trim_ascii_end()),
            Cow::Owned(s) => Cow::Owned(s.trim_ascii_end().to_owned()),
        }
    }

    fn num<T: std::str::FromStr>(s: &str, max_len: usize) -> Option<T> {
        if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }

    pub fn call_start(s: &str) -> Option<CallStart> {
        let (date, time) = s.split_once(' ')?;
        let mut d = date.split(['/', '-']);
        let year: i16 = num(d.next()?, 4)?;
        let month: i8 = num(d.next()?, 2)?;
        let day: i8 = num(d.next()?, 2)?;
        if d.next().is_some() {
            return None;
        }
        let mut t = time.trim().split(':');
        let hour: i8 = num(t.next()?, 2)?;
        let minute: i8 = num(t.next()?, 2)?;
        let (second, has_seconds) = match t.next() {
            Some(s) => (num(s, 2)?, true),
            None => (0, false),
        };
        if t.next().is_some()
            || !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || !(0..=23).contains(&hour)
            || !(0..=59).contains(&minute)
            || !(0..=60).contains(&second)
            || year < 1970
        {
            return None;
        }
        Some(CallStart { year, month, day, hour, minute, second: second.min(59), has_seconds })
    }

    pub fn hms(s: &str) -> Option<u32> {
        if s.is_empty() {
            return Some(0);
        }
        let mut p = s.split(':');
        let h: u32 = num(p.next()?, 5)?;
        let m: u32 = num(p.next()?, 2)?;
        let sec: u32 = num(p.next()?, 2)?;
        if p.next().is_some() || m > 59 || sec > 59 {
            return None;
        }
        Some(h * 3600 + m * 60 + sec)
    }
}

#[test]
fn call_starts_and_durations_read_as_the_reference_does_on_edge_cases() {
    for s in [
        "2024/05/01 12:00:00",
        "2024-05-01 12:00",
        "2024/5/1 1:2:3",
        "2024/05/01  12:00:00",
        "2024/05/01 12:00:00\u{a0}",
        "2024/05/01/ 12:00",
        "2024//01 12:00",
        "2024/05 12:00",
        "20240/05/01 12:00",
        "2024/05/01 12",
        "2024/05/01 12:00:",
        "2024/05/01 12:00:00:00",
        "2024/05/01 24:00",
        "2024/05/01 23:59:60",
        "2024/05/01 23:60",
        "1969/12/31 23:59",
        "2024/00/10 10:00",
        "2024/12/32 10:00",
        "2024/05/01 +1:00",
        "\u{2026} 16:33:19",
        "",
        " ",
    ] {
        assert_eq!(parse_call_start(s), reference::call_start(s), "{s:?}");
    }
    for s in ["", "0:00:00", "123:00:00", "99999:59:59", "100000:00:00", "1:60:00", "1:00", "1:00:00:00", ":00:00"] {
        assert_eq!(parse_hms(s), reference::hms(s), "{s:?}");
    }
}

proptest! {
    /// The byte-by-byte Call Start reader agrees with the reference on any text made of the
    /// bytes that matter.
    #[test]
    fn call_starts_read_as_the_reference_does(s in "[0-9/: \\-x]{0,24}") {
        prop_assert_eq!(parse_call_start(&s), reference::call_start(&s));
    }

    /// The same for well-formed Call Starts with any field widths.
    #[test]
    fn well_formed_call_starts_read_as_the_reference_does(
        y in 0u32..20_000, mo in 0u32..120, d in 0u32..120, h in 0u32..120, mi in 0u32..120,
        sec in proptest::option::of(0u32..120), dash in any::<bool>(),
    ) {
        let sep = if dash { '-' } else { '/' };
        let mut s = format!("{y}{sep}{mo:02}{sep}{d} {h}:{mi:02}");
        if let Some(sec) = sec {
            s.push_str(&format!(":{sec:02}"));
        }
        prop_assert_eq!(parse_call_start(&s), reference::call_start(&s));
    }

    /// The duration reader agrees with the reference.
    #[test]
    fn durations_read_as_the_reference_does(s in "[0-9:x]{0,12}") {
        prop_assert_eq!(parse_hms(&s), reference::hms(&s));
    }

    /// The same on the `HH:MM:SS` shape read at fixed places, in and out of range.
    #[test]
    fn fixed_shape_durations_read_as_the_reference_does(s in "[0-9x][0-9][:x][0-9][0-9x][:1][0-9][0-9]") {
        prop_assert_eq!(parse_hms(&s), reference::hms(&s));
    }

    /// The same on the `YYYY/MM/DD HH:MM:SS` shape read at fixed places (any digits, either
    /// date separator, a stray byte here and there).
    #[test]
    fn fixed_shape_call_starts_read_as_the_reference_does(
        s in "[0-9]{3}[0-9x][/\\-][0-9]{2}[/\\-x][0-9]{2}[ x][0-9]{2}:[0-9]{2}[:x][0-9]{2}",
    ) {
        prop_assert_eq!(parse_call_start(&s), reference::call_start(&s));
    }

    /// The fast path of `line_text` (ASCII without NUL) reads every line as the general one.
    #[test]
    fn line_text_agrees_with_the_general_reading(
        line in proptest::collection::vec(prop_oneof![Just(0u8), Just(b' '), Just(b'a'), Just(0x7f), Just(0x80), Just(0xc3), Just(0xa9), any::<u8>()], 0..40),
    ) {
        prop_assert_eq!(line_text(&line), reference::line_text(&line));
    }
}
