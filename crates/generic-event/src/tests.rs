use serde_json::{Value, json};
use uuid::Uuid;

use super::*;

const SEED: [(&str, &str, Level); 4] = [
    ("level1_a_leg", include_str!("../testdata/seed/level1_a_leg.json"), Level::ALeg),
    ("level2_b_leg", include_str!("../testdata/seed/level2_b_leg.json"), Level::BLeg),
    ("level2_recording", include_str!("../testdata/seed/level2_recording.json"), Level::BLeg),
    ("level3_pbx_connected", include_str!("../testdata/seed/level3_pbx_connected.json"), Level::Pbx),
];

#[test]
fn seed_examples_validate_and_round_trip() {
    for (name, text, level) in SEED {
        let event = validate_json(text.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(event.level(), level, "{name}");
        // Serialising and parsing again gives the same event, and the same JSON value as the seed.
        let bytes = event.to_json_bytes();
        assert_eq!(validate_json(&bytes).unwrap(), event, "{name}");
        let original: Value = serde_json::from_str(text).unwrap();
        let ours: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(ours, original, "{name}");
        // Keys come out in the seed's order.
        let keys = key_order(std::str::from_utf8(&bytes).unwrap());
        let seed_order = key_order(text);
        assert_eq!(keys, seed_order, "{name}");
    }
}

/// The top-level keys of a JSON text in the order they are written (serde_json's Map sorts).
fn key_order(text: &str) -> Vec<&'static str> {
    let mut found: Vec<(usize, &'static str)> =
        validate::KEYS.iter().filter_map(|k| text.find(&format!("\"{k}\"")).map(|pos| (pos, *k))).collect();
    found.sort();
    found.into_iter().map(|(_, k)| k).collect()
}

#[test]
fn level3_seed_is_exactly_typed() {
    let event = validate_json(SEED[3].1.as_bytes()).unwrap();
    assert_eq!(event.account_id, Uuid::parse_str("9539ee93-64c8-802b-360b-c6f2f7cf2507").unwrap());
    assert_eq!(event.child_sid, Some(Uuid::parse_str("ea707e77-18c1-4ad8-9072-6c396ee3fdd5").unwrap()));
    assert_eq!(event.kind, MediaType::Voice);
    assert_eq!(event.event, EventKind::Phone);
    assert_eq!(event.status, Status::Connected);
    assert_eq!(event.extension.as_deref(), Some("201"));
    assert_eq!(event.meta.get("key1").map(String::as_str), Some("value"));
    assert_eq!(event.timestamp, 1_623_163_324_316);
}

fn level3() -> Value {
    serde_json::from_str(SEED[3].1).unwrap()
}

fn errors_of(v: &Value) -> Vec<(String, ValidationErrorKind)> {
    validate_value(v).unwrap_err().0.into_iter().map(|e| (e.key, e.kind)).collect()
}

#[test]
fn nulls_are_kept_not_skipped() {
    let mut v = level3();
    v["parentCallSid"] = Value::Null;
    v["callSid"] = Value::Null;
    let event = validate_value(&v).unwrap();
    let out: Value = serde_json::from_slice(&event.to_json_bytes()).unwrap();
    assert_eq!(out["callSid"], Value::Null);
    assert_eq!(out["parentCallSid"], Value::Null);
    assert!(out.as_object().unwrap().contains_key("callSid"));
}

#[test]
fn wrong_types_are_named() {
    let mut v = level3();
    v["timestamp"] = json!("1623163324316");
    v["meta"] = json!({"n": 5, "ok": "yes"});
    v["extension"] = json!(201);
    v["from"] = Value::Null;
    let errs = errors_of(&v);
    assert!(errs.contains(&("timestamp".into(), ValidationErrorKind::BadTimestamp)));
    assert!(errs.contains(&("meta.n".into(), ValidationErrorKind::WrongType { expected: "a string" })));
    assert!(errs.contains(&("extension".into(), ValidationErrorKind::WrongType { expected: "a string or null" })));
    assert!(errs.contains(&("from".into(), ValidationErrorKind::WrongType { expected: "a string" })));
    assert_eq!(errs.len(), 4, "{errs:?}");
}

#[test]
fn float_and_negative_timestamps_are_rejected() {
    for bad in [json!(1.5), json!(-1), json!(null)] {
        let mut v = level3();
        v["timestamp"] = bad;
        assert_eq!(errors_of(&v), vec![("timestamp".into(), ValidationErrorKind::BadTimestamp)]);
    }
}

#[test]
fn bad_uuids_are_rejected() {
    for (key, bad) in [
        ("accountId", "9539ee93-64c8-802b-360b-c6f2f7cf250"),
        ("callSid", "not-a-uuid"),
        ("childSid", "{ea707e77-18c1-4ad8-9072-6c396ee3fdd5}"),
        ("parentCallSid", "e5bc544c218647e887846182cf8190cb"),
    ] {
        let mut v = level3();
        v[key] = json!(bad);
        assert_eq!(errors_of(&v), vec![(key.into(), ValidationErrorKind::BadUuid(bad.into()))], "{key}");
    }
}

#[test]
fn statuses_must_belong_to_the_event_kind() {
    let mut v = level3();
    v["status"] = json!("in-progress");
    assert_eq!(
        errors_of(&v),
        vec![(
            "status".into(),
            ValidationErrorKind::UnknownStatus { event: EventKind::Phone, status: "in-progress".into() }
        )]
    );
    for status in ["ringing", "connected", "held", "parked", "transferred", "disconnected"] {
        let mut v = level3();
        v["status"] = json!(status);
        assert!(validate_value(&v).is_ok(), "{status}");
    }
    for status in ["available", "busy", "dnd", "logged-out"] {
        let mut v = level3();
        v["event"] = json!("extension");
        v["status"] = json!(status);
        assert!(validate_value(&v).is_ok(), "{status}");
        v["event"] = json!("phone");
        assert!(validate_value(&v).is_err(), "{status} is not a phone status");
    }
}

#[test]
fn call_event_with_childsid_is_level2_shape() {
    // The validator accepts a `call` event with a childSid (only Level 3 requires it).
    let mut v = level3();
    v["event"] = json!("call");
    v["status"] = json!("completed");
    assert_eq!(validate_value(&v).unwrap().level(), Level::BLeg);
}

#[test]
fn seed_typo_trancoded_is_read_and_written_correctly() {
    let mut v: Value = serde_json::from_str(SEED[2].1).unwrap();
    v["status"] = json!("trancoded");
    let event = validate_value(&v).unwrap();
    assert_eq!(event.status, Status::Transcoded);
    let out: Value = serde_json::from_slice(&event.to_json_bytes()).unwrap();
    assert_eq!(out["status"], "transcoded");
}

#[test]
fn unknown_and_missing_keys() {
    let mut v = level3();
    let obj = v.as_object_mut().unwrap();
    obj.remove("to");
    obj.insert("callsid".into(), json!("x"));
    let errs = errors_of(&v);
    assert!(errs.contains(&("to".into(), ValidationErrorKind::Missing)));
    assert!(errs.contains(&("callsid".into(), ValidationErrorKind::Unknown)));
}

#[test]
fn unknown_type_and_event() {
    let mut v = level3();
    v["type"] = json!("video");
    v["event"] = json!("device");
    let errs = errors_of(&v);
    assert!(errs.contains(&("type".into(), ValidationErrorKind::UnknownType("video".into()))));
    assert!(errs.contains(&("event".into(), ValidationErrorKind::UnknownEvent("device".into()))));
}

#[test]
fn level3_needs_child_sid() {
    let mut v = level3();
    v["childSid"] = Value::Null;
    assert_eq!(errors_of(&v), vec![("childSid".into(), ValidationErrorKind::MissingChildSid)]);
}

#[test]
fn not_an_object() {
    assert!(matches!(validate_json(b"[1,2]").unwrap_err().0[0].kind, ValidationErrorKind::NotAnObject(_)));
    assert!(matches!(validate_json(b"{").unwrap_err().0[0].kind, ValidationErrorKind::NotAnObject(_)));
}

#[test]
fn error_messages_read_well() {
    let mut v = level3();
    v["status"] = json!("answered");
    let msg = validate_value(&v).unwrap_err().to_string();
    assert_eq!(
        msg,
        "`status`: \"answered\" is not a status of a phone event (allowed: ringing, connected, held, parked, transferred, disconnected)"
    );
}

#[test]
fn status_spellings_round_trip() {
    for st in Status::ALL {
        assert_eq!(Status::parse(st.as_str()), Some(st));
        assert_eq!(serde_json::to_value(st).unwrap(), json!(st.as_str()));
    }
}

/// Every JSON example in `docs/events.md` is a valid event (the page is the contract's prose).
#[test]
fn docs_examples_validate() {
    let page = include_str!("../../../docs/events.md");
    let mut count = 0;
    for block in page.split("```json").skip(1) {
        let json = block.split("```").next().unwrap();
        let event = validate_json(json.trim().as_bytes())
            .unwrap_or_else(|e| panic!("docs/events.md example {count}: {e}\n{json}"));
        assert_eq!(event.level(), Level::Pbx);
        count += 1;
    }
    assert!(count >= 2, "docs/events.md lost its examples");
}
