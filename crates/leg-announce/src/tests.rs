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

#[test]
fn replay_guard_remembers_ids_for_the_tolerance_within_its_cap() {
    let mut g = ReplayGuard::new(300, 3);
    assert_eq!(g.check(1_000, "a", 1_000), Seen::New);
    assert_eq!(g.check(1_000, "b", 990), Seen::New);
    assert_eq!(g.check(1_200, "a", 1_000), Seen::Duplicate, "still within the tolerance");
    // b was signed at 990: its signature is refused from 1291 on, so it is forgotten then.
    assert_eq!(g.poll_timeout(), Some(1_291));
    g.handle_timeout(1_291);
    assert_eq!(g.len(), 1);
    assert_eq!(g.check(1_300, "a", 1_000), Seen::Duplicate, "the last second of the tolerance");
    // A retry of a, signed anew, after its first signature expired: new again.
    assert_eq!(g.check(1_301, "a", 1_301), Seen::New);
    // Past the cap the id closest to expiry goes first, counted.
    for id in ["c", "d", "e"] {
        assert_eq!(g.check(1_301, id, 1_301), Seen::New);
    }
    assert_eq!((g.len(), g.evicted()), (3, 1));
    assert_eq!(g.check(1_301, "c", 1_301), Seen::Duplicate);
    // A request that was not applied after all is forgotten, so that its retry is applied.
    g.forget("c");
    assert_eq!(g.check(1_302, "c", 1_301), Seen::New);
    g.handle_timeout(u64::MAX);
    assert!(g.is_empty() && g.poll_timeout().is_none());
}

#[test]
fn limits_have_defaults_and_ranges() {
    let c: LegsConfig = toml::from_str("listen = \"127.0.0.1:1\"\nsigning_secret_files = []").unwrap();
    assert_eq!(c, LegsConfig::new("127.0.0.1:1".parse().unwrap(), vec![]));
    assert_eq!(
        (c.header_timeout_ms, c.body_timeout_ms, c.idle_timeout_ms, c.max_remembered_ids),
        (10_000, 10_000, 60_000, 100_000)
    );
    let bad = |edit: fn(&mut LegsConfig)| {
        let mut c = c.clone();
        edit(&mut c);
        let e = c.load().unwrap_err();
        format!("legs.{}: {e}", e.key().unwrap_or("-"))
    };
    assert_eq!(bad(|c| c.max_connections = 0), "legs.max_connections: must be between 1 and 4096 connections, not 0");
    assert_eq!(
        bad(|c| c.idle_timeout_ms = 600_001),
        "legs.idle_timeout_ms: must be between 100 and 600000 milliseconds, not 600001"
    );
    assert_eq!(
        bad(|c| c.body_timeout_ms = 99),
        "legs.body_timeout_ms: must be between 100 and 300000 milliseconds, not 99"
    );
    assert_eq!(bad(|c| c.max_body_bytes = 10), "legs.max_body_bytes: must be between 1024 and 16777216 bytes, not 10");
    // In range, the next check speaks: the secrets.
    assert_eq!(bad(|_| {}), "legs.signing_secret_files: at least one secret file is required");
}
