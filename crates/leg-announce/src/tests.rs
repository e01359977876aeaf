//! Announcement bodies → leg updates, using the platform's own seed events.

use correlation::LegUpdate;

use crate::*;

fn seed(name: &str) -> String {
    let path = format!("{}/../generic-event/testdata/seed/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn with(json: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
    edit(&mut v);
    v.to_string()
}

#[test]
fn seed_b_leg_is_an_update_with_its_tags() {
    let body = with(&seed("level2_b_leg.json"), |v| v["meta"]["sipCallId"] = "b1e9@cpaas".into());
    let updates = parse_announcements(body.as_bytes()).unwrap();
    let [LegUpdate::Updated(f)] = updates.as_slice() else { panic!("{updates:?}") };
    assert_eq!(f.call_sid.unwrap().to_string(), "85cb3194-76e2-43e1-ad56-59556af617b9");
    assert_eq!(f.parent_call_sid.unwrap().to_string(), "e5bc544c-2186-47e8-8784-6182cf8190cb");
    assert_eq!(f.account_id.unwrap().to_string(), "9539ee93-64c8-802b-360b-c6f2f7cf2507");
    assert_eq!(f.sip_call_id.as_deref(), Some("b1e9@cpaas"));
    assert_eq!((f.from.as_deref(), f.to.as_deref()), (Some("441234567890"), Some("441234567891")));
    assert_eq!(f.started.map(|t| t.0), Some(1623163324316));
    // sipCallId is a key, not a tag.
    assert_eq!(f.tags.len(), 1);
    assert_eq!(f.tags["key1"], "value");
}

#[test]
fn statuses_map_to_learned_updated_ended() {
    let b = seed("level2_b_leg.json");
    let items: Vec<serde_json::Value> = ["trying", "ringing", "in-progress", "completed", "failed"]
        .iter()
        .map(|s| serde_json::from_str(&with(&b, |v| v["status"] = (*s).into())).unwrap())
        .collect();
    let updates = parse_announcements(serde_json::Value::Array(items).to_string().as_bytes()).unwrap();
    let kinds: Vec<&str> = updates
        .iter()
        .map(|u| match u {
            LegUpdate::Learned(_) => "learned",
            LegUpdate::Updated(_) => "updated",
            LegUpdate::Ended(_) => "ended",
        })
        .collect();
    assert_eq!(kinds, ["learned", "learned", "updated", "ended", "ended"]);
}

#[test]
fn a_leg_and_recordings() {
    let updates = parse_announcements(seed("level1_a_leg.json").as_bytes()).unwrap();
    let [LegUpdate::Updated(f)] = updates.as_slice() else { panic!() };
    assert_eq!(f.call_sid, f.parent_call_sid);
    let array = format!("[{},{}]", seed("level2_recording.json"), seed("level2_b_leg.json"));
    assert_eq!(parse_announcements(array.as_bytes()).unwrap().len(), 1);
}

#[test]
fn malformed_bodies_say_what_is_wrong() {
    let b = seed("level2_b_leg.json");
    let cases: Vec<(String, &str)> = vec![
        ("{".into(), "the body is not JSON: "),
        ("42".into(), "expected a Generic Event object or an array of them"),
        ("[]".into(), "the array is empty"),
        ("[1]".into(), "expected a Generic Event object or an array of them"),
        (with(&b, |v| v["callSid"] = "not-a-uuid".into()), "event 0: "),
        (format!("[{b},{}]", with(&b, |v| v["status"] = "connected".into())), "event 1: "),
        (with(&b, |v| v["surprise"] = 1.into()), "event 0: "),
        (with(&b, |v| v["callSid"] = serde_json::Value::Null), "event 0: a leg announcement needs a callSid"),
        (seed("level3_pbx_connected.json"), "event 0: a Level 3 `phone` event is not a leg announcement"),
    ];
    for (body, prefix) in cases {
        let err = parse_announcements(body.as_bytes()).unwrap_err().to_string();
        assert!(err.starts_with(prefix), "{body}\n=> {err}");
    }
}

#[test]
fn config_requires_listen_and_refuses_unknown_keys() {
    assert!(toml::from_str::<LegsConfig>("signing_secret_files = []").unwrap_err().to_string().contains("listen"));
    let err =
        toml::from_str::<LegsConfig>("listen = \"127.0.0.1:1\"\nsigning_secret_files = []\nport = 1").unwrap_err();
    assert!(err.to_string().contains("unknown field `port`"), "{err}");
}
