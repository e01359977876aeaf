use std::collections::BTreeMap;

use generic_event::validate_json;

use super::*;
use crate::binding::MatchMethod;
use crate::signal::PbxType;

fn ctx() -> EventContext {
    EventContext {
        account_id: Uuid::parse_str("9539ee93-64c8-802b-360b-c6f2f7cf2507").unwrap(),
        account_name: "Test Account".into(),
        static_meta: BTreeMap::from([("site".to_owned(), "london".to_owned())]),
    }
}

fn pbx() -> PbxId {
    PbxId::new("site-1", PbxType::new("avaya-r11"))
}

/// A compact way to write signals: `"7 201 ringing"`, `"7 - ended"`, `"7 201 disconnected:rejected"`,
/// `"ext 201 busy"`.
fn sig(at: u64, text: &str) -> CorrelatedSignal {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let body = if parts[0] == "ext" {
        let state = match parts[2] {
            "available" => ExtensionState::Available,
            "busy" => ExtensionState::Busy,
            "dnd" => ExtensionState::Dnd,
            "logged-out" => ExtensionState::LoggedOut,
            other => panic!("state {other}"),
        };
        SignalBody::Extension(ExtensionSignal { extension: Extension(parts[1].into()), state })
    } else {
        let (verb, arg) = parts[2].split_once(':').map_or((parts[2], None), |(v, a)| (v, Some(a.to_owned())));
        let change = match verb {
            "ringing" => CallChange::Ringing,
            "connected" => CallChange::Connected,
            "held" => CallChange::Held,
            "resumed" => CallChange::Resumed,
            "parked" => CallChange::Parked { slot: arg },
            "unparked" => CallChange::Unparked { slot: arg },
            "transferred" => CallChange::Transferred { to: arg },
            "queued" => CallChange::Queued { queue: arg },
            "disconnected" => CallChange::Disconnected {
                reason: match arg.as_deref() {
                    Some("rejected") => DisconnectReason::Rejected,
                    Some("answered-elsewhere") => DisconnectReason::AnsweredElsewhere,
                    _ => DisconnectReason::Normal,
                },
            },
            "ended" => CallChange::Ended,
            other => panic!("change {other}"),
        };
        SignalBody::Call(CallSignal {
            call: PbxCallId::new(parts[0]),
            call_started: UnixMillis(1_000),
            extension: (parts[1] != "-").then(|| Extension(parts[1].into())),
            change,
            info: CallInfo {
                direction: Direction::Inbound,
                external_number: Some("441707123456".into()),
                dialled_number: Some("441234567890".into()),
                sip_call_id: None,
                caller_name: Some("Acme".into()),
                queue: None,
            },
        })
    };
    CorrelatedSignal {
        signal: PbxSignal { pbx: pbx(), at: UnixMillis(at), source: "devlink3", facts: Facts::new(), body },
        binding: LegBinding::unmatched(),
    }
}

/// One line per event: `status extension [reason] [other meta markers]`.
fn render(lc: &mut CallLifecycle) -> String {
    let mut lines = Vec::new();
    while let Some(out) = lc.poll_event() {
        // Every event the lifecycle builds is a valid Level 3 Generic Event.
        let parsed = validate_json(&out.event.to_json_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed, out.event);
        let e = &out.event;
        let mut line = format!("{} {}", e.status, e.extension.as_deref().unwrap_or("-"));
        for key in ["reason", "parkSlot", "transferTarget", "resumed", "unparked", "reconciled", "queue"] {
            if let Some(v) = e.meta.get(key) {
                line.push_str(&format!(" {key}={v}"));
            }
        }
        lines.push(line);
    }
    lines.join("\n")
}

fn check(signals: &[&str], expected: &str) {
    let mut lc = CallLifecycle::new(ctx());
    for (i, s) in signals.iter().enumerate() {
        lc.handle_signal(sig(1_000 + i as u64, s));
    }
    assert_eq!(render(&mut lc), expected.trim());
}

#[test]
fn hunt_group_answered() {
    check(
        &[
            "7 - queued:Sales",
            "7 4001 ringing",
            "7 4002 ringing",
            "7 4001 connected",
            "7 4002 disconnected:answered-elsewhere",
            "7 4001 disconnected",
            "7 - ended",
        ],
        "
ringing 4001 queue=Sales
ringing 4002 queue=Sales
connected 4001 queue=Sales
disconnected 4002 reason=answered-elsewhere queue=Sales
disconnected 4001 reason=normal queue=Sales",
    );
}

#[test]
fn ringing_closed_at_call_end_gets_a_reason() {
    check(
        &["7 4001 ringing", "7 4002 ringing", "7 4001 connected", "7 - ended"],
        "
ringing 4001
ringing 4002
connected 4001
disconnected 4001 reason=normal
disconnected 4002 reason=answered-elsewhere",
    );
    check(&["8 4001 ringing", "8 - ended"], "ringing 4001\ndisconnected 4001 reason=caller-abandoned");
}

#[test]
fn repeats_are_suppressed() {
    check(
        &[
            "7 201 ringing",
            "7 201 ringing",
            "7 201 connected",
            "7 201 connected",
            "7 201 disconnected",
            "7 201 disconnected",
        ],
        "ringing 201\nconnected 201\ndisconnected 201 reason=normal",
    );
}

#[test]
fn hold_and_resume() {
    check(
        &["7 201 connected", "7 201 held", "7 201 held", "7 201 resumed", "7 201 held", "7 201 connected", "7 - ended"],
        "
connected 201
held 201
connected 201 resumed=true
held 201
connected 201 resumed=true
disconnected 201 reason=normal",
    );
}

#[test]
fn park_and_unpark_elsewhere() {
    check(
        &["7 201 connected", "7 201 parked:1", "7 201 parked:1", "7 202 unparked:1", "7 - ended"],
        "
connected 201
parked 201 parkSlot=1
disconnected 201 reason=parked
connected 202 parkSlot=1 unparked=true
disconnected 202 reason=normal",
    );
}

#[test]
fn transfer_leaves_the_call() {
    check(
        &[
            "7 201 connected",
            "7 201 held",
            "7 202 ringing",
            "7 201 transferred:202",
            "7 202 connected",
            "7 201 disconnected",
            "7 - ended",
        ],
        "
connected 201
held 201
ringing 202
transferred 201 transferTarget=202
disconnected 201 reason=transferred
connected 202
disconnected 202 reason=normal",
    );
}

#[test]
fn rejected_ring() {
    check(
        &["7 201 ringing", "7 201 disconnected:rejected", "7 - ended"],
        "ringing 201\ndisconnected 201 reason=rejected",
    );
}

#[test]
fn stray_end_of_unknown_call_is_ignored() {
    check(&["9 201 disconnected", "9 - ended"], "");
}

#[test]
fn extension_states_deduplicate() {
    check(&["ext 201 busy", "ext 201 busy", "ext 201 available", "ext 202 dnd"], "busy 201\navailable 201\ndnd 202");
}

#[test]
fn resync_closes_calls_the_pbx_no_longer_lists() {
    let mut lc = CallLifecycle::new(ctx());
    for (i, s) in ["7 201 connected", "8 202 ringing", "9 203 connected"].iter().enumerate() {
        lc.handle_signal(sig(1_000 + i as u64, s));
    }
    let other = PbxId::new("site-2", PbxType::new("avaya-r11"));
    let mut foreign = sig(2_000, "7 301 connected");
    foreign.signal.pbx = other.clone();
    lc.handle_signal(foreign);
    render(&mut lc);
    lc.handle_resync(&pbx(), &[PbxCallId("9".into())], UnixMillis(5_000));
    assert_eq!(
        render(&mut lc),
        "disconnected 201 reason=unknown reconciled=true\ndisconnected 202 reason=unknown reconciled=true"
    );
    // Calls of other PBXs and live calls stay open.
    assert_eq!(lc.open_calls(), 2);
}

#[test]
fn event_ids_are_stable_across_runs_and_count_occurrences() {
    let run = || {
        let mut lc = CallLifecycle::new(ctx());
        for (i, s) in ["7 201 connected", "7 201 held", "7 201 resumed", "7 201 held"].iter().enumerate() {
            lc.handle_signal(sig(1_000 + i as u64, s));
        }
        std::iter::from_fn(|| lc.poll_event()).map(|e| e.id).collect::<Vec<_>>()
    };
    let first = run();
    assert_eq!(first, run());
    let unique: BTreeSet<_> = first.iter().collect();
    assert_eq!(unique.len(), 4, "the second hold is a new event");
}

#[test]
fn restart_restores_open_calls_and_ids_continue() {
    let mut lc = CallLifecycle::new(ctx());
    lc.handle_signal(sig(1_000, "7 201 connected"));
    lc.handle_signal(sig(1_001, "7 201 held"));
    let first: Vec<_> = std::iter::from_fn(|| lc.poll_event()).collect();
    let persisted: Vec<(String, Vec<u8>)> =
        lc.drain_state_changes().into_iter().map(|c| (c.key, c.value.unwrap())).collect();
    assert_eq!(persisted.len(), 1);
    assert_eq!(persisted[0].0, "call/site-1/7");

    // A new process: the PBX re-sends the live call after subscribing; nothing is repeated.
    let mut lc = CallLifecycle::new(ctx());
    assert!(lc.restore(persisted).is_empty());
    lc.handle_signal(sig(2_000, "7 201 held"));
    assert_eq!(render(&mut lc), "");
    lc.handle_signal(sig(2_001, "7 201 resumed"));
    lc.handle_signal(sig(2_002, "7 - ended"));
    let events: Vec<_> = std::iter::from_fn(|| lc.poll_event()).collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event.child_sid, first[0].event.child_sid, "same childSid after restart");
    assert_eq!(events[0].event.meta["resumed"], "true");
    assert_eq!(lc.drain_state_changes(), vec![StateChange { key: "call/site-1/7".into(), value: None }]);
}

#[test]
fn unreadable_state_is_reported_not_fatal() {
    let mut lc = CallLifecycle::new(ctx());
    let errors = lc.restore([("call/site-1/7".to_owned(), b"{not json".to_vec()), ("other".to_owned(), b"x".to_vec())]);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].key, "call/site-1/7");
    assert_eq!(lc.open_calls(), 0);
}

#[test]
fn restart_then_resync_closes_calls_that_ended_while_down() {
    let mut lc = CallLifecycle::new(ctx());
    lc.handle_signal(sig(1_000, "7 201 connected"));
    let persisted: Vec<(String, Vec<u8>)> =
        lc.drain_state_changes().into_iter().map(|c| (c.key, c.value.unwrap())).collect();
    let mut lc = CallLifecycle::new(ctx());
    lc.restore(persisted);
    lc.handle_resync(&pbx(), &[], UnixMillis(9_000));
    assert_eq!(render(&mut lc), "disconnected 201 reason=unknown reconciled=true");
}

#[test]
fn meta_and_numbers() {
    let mut lc = CallLifecycle::new(ctx());
    let mut s = sig(1_000, "7 201 ringing");
    s.signal.facts.insert("avayaEndId".into(), "c0a82a0300000413".into());
    // A platform tag cannot override a standard key.
    s.binding = LegBinding {
        call_sid: Some(Uuid::from_u128(1)),
        parent_call_sid: Some(Uuid::from_u128(2)),
        from: Some("441234567890".into()),
        to: Some("441234567891".into()),
        tags: BTreeMap::from([("campaign".into(), "spring".into()), ("pbx".into(), "spoofed".into())]),
        method: MatchMethod::SipCallId,
    };
    lc.handle_signal(s);
    let e = lc.poll_event().unwrap().event;
    assert_eq!(e.call_sid, Some(Uuid::from_u128(1)));
    assert_eq!(e.parent_call_sid, Some(Uuid::from_u128(2)));
    assert_eq!((e.from.as_str(), e.to.as_str()), ("441234567890", "441234567891"));
    let meta: Vec<(&str, &str)> = e.meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        meta,
        [
            ("avayaEndId", "c0a82a0300000413"),
            ("callerName", "Acme"),
            ("campaign", "spring"),
            ("correlation", "sip-call-id"),
            ("direction", "inbound"),
            ("pbx", "site-1"),
            ("pbxCallId", "7"),
            ("pbxType", "avaya-r11"),
            ("site", "london"),
            ("source", "devlink3"),
        ]
    );
    // Unbound: the PBX's own view of the numbers.
    let mut lc = CallLifecycle::new(ctx());
    lc.handle_signal(sig(1_000, "7 201 ringing"));
    let e = lc.poll_event().unwrap().event;
    assert_eq!((e.from.as_str(), e.to.as_str()), ("441707123456", "441234567890"));
    assert_eq!((e.call_sid, e.parent_call_sid), (None, None));
    assert_eq!(e.meta["correlation"], "none");
}

#[test]
fn a_late_binding_applies_to_later_events_and_is_never_lost() {
    let mut lc = CallLifecycle::new(ctx());
    lc.handle_signal(sig(1_000, "7 201 ringing"));
    let mut bound = sig(1_001, "7 201 connected");
    bound.binding =
        LegBinding { call_sid: Some(Uuid::from_u128(1)), method: MatchMethod::NumberTime, ..LegBinding::default() };
    lc.handle_signal(bound);
    lc.handle_signal(sig(1_002, "7 - ended"));
    let sids: Vec<_> = std::iter::from_fn(|| lc.poll_event()).map(|e| e.event.call_sid).collect();
    assert_eq!(sids, [None, Some(Uuid::from_u128(1)), Some(Uuid::from_u128(1))]);
}

#[test]
fn outbound_numbers() {
    let mut lc = CallLifecycle::new(ctx());
    let mut s = sig(1_000, "7 201 connected");
    if let SignalBody::Call(c) = &mut s.signal.body {
        c.info.direction = Direction::Outbound;
        c.info.external_number = Some("441707123456".into());
    }
    lc.handle_signal(s);
    let e = lc.poll_event().unwrap().event;
    assert_eq!((e.from.as_str(), e.to.as_str()), ("201", "441707123456"));
}

#[test]
fn an_ambiguous_call_is_unbound_and_says_so() {
    let mut lc = CallLifecycle::new(ctx());
    let mut s = sig(1_000, "7 201 ringing");
    s.binding = LegBinding { method: MatchMethod::Ambiguous, ..LegBinding::default() };
    assert!(!s.binding.is_bound());
    lc.handle_signal(s);
    let e = lc.poll_event().unwrap().event;
    assert_eq!((e.call_sid, e.parent_call_sid), (None, None));
    assert_eq!(e.meta["correlation"], "ambiguous");
    assert_eq!((e.from.as_str(), e.to.as_str()), ("441707123456", "441234567890"), "the PBX's numbers");
}

/// Every `meta` key the lifecycle writes itself is in [`STANDARD_META_KEYS`] (which the
/// configuration refuses as tag names), and every listed key is written somewhere.
#[test]
fn standard_meta_keys_are_exactly_those_written() {
    let mut lc = CallLifecycle::new(ctx());
    let script = [
        "7 - queued:Sales",
        "7 201 ringing",
        "7 201 connected",
        "7 201 held",
        "7 201 resumed",
        "7 201 parked:1",
        "7 202 unparked:1",
        "7 202 transferred:203",
        "ext 201 busy",
    ];
    for (i, s) in script.iter().enumerate() {
        let mut sig = sig(1_000 + i as u64, s);
        if let SignalBody::Call(c) = &mut sig.signal.body {
            c.info.sip_call_id = Some("abc@host".into());
        }
        lc.handle_signal(sig);
    }
    lc.handle_signal(sig(2_000, "8 204 connected"));
    lc.handle_resync(&pbx(), &[], UnixMillis(3_000));
    let mut written = BTreeSet::new();
    while let Some(e) = lc.poll_event() {
        written.extend(e.event.meta.into_keys().filter(|k| k != "site"));
    }
    let standard: BTreeSet<String> = STANDARD_META_KEYS.iter().map(|k| (*k).to_owned()).collect();
    assert_eq!(written, standard);
}

#[test]
fn a_call_level_leg_persists_and_restores() {
    // A signal with no extension is the call's own leg (a trunk ringing before any device).
    let mut lc = CallLifecycle::new(ctx());
    lc.handle_signal(sig(1_000, "7 - ringing"));
    lc.handle_signal(sig(1_001, "7 201 connected"));
    let persisted: Vec<(String, Vec<u8>)> =
        lc.drain_state_changes().into_iter().map(|c| (c.key, c.value.unwrap())).collect();
    let mut lc = CallLifecycle::new(ctx());
    assert!(lc.restore(persisted).is_empty());
    lc.handle_resync(&pbx(), &[], UnixMillis(9_000));
    assert_eq!(
        render(&mut lc),
        "disconnected - reason=unknown reconciled=true\ndisconnected 201 reason=unknown reconciled=true"
    );
}

#[test]
fn persisted_state_keeps_the_shape_earlier_versions_wrote() {
    // Earlier versions kept `legs` and `occurrences` in BTreeMaps: JSON objects keyed by
    // extension. A call with device legs only must still be written (and so read) that way.
    let mut lc = CallLifecycle::new(ctx());
    lc.handle_signal(sig(1_000, "7 201 connected"));
    lc.handle_signal(sig(1_001, "7 201 held"));
    let change = lc.drain_state_changes().pop().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&change.value.unwrap()).unwrap();
    assert_eq!(json["legs"], serde_json::json!({"201": "Held"}));
    assert_eq!(json["occurrences"], serde_json::json!({"201\u{1f}connected": 1, "201\u{1f}held": 1}));
    assert_eq!(json["pbx"], "site-1");
    assert!(json.get("call_leg").is_none());
}
