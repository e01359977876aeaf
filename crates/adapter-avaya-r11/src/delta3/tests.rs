use proptest::prelude::*;

use super::*;
use crate::testdata::DELTA3_EXAMPLES;

fn examples() -> Vec<Delta3Record<'static>> {
    parse_many(DELTA3_EXAMPLES).collect::<Result<Vec<_>, _>>().unwrap()
}

#[test]
fn the_documentation_examples_parse() {
    let records = examples();
    let kinds: Vec<&str> = records.iter().map(Delta3Record::kind).collect();
    assert_eq!(kinds, ["Detail", "Detail", "Detail", "CallLost"]);
}

#[test]
fn dial_tone_detail() {
    let Delta3Record::Detail(d) = &examples()[0] else { panic!() };
    assert_eq!((d.call.node.as_ref(), d.call.call_id.as_ref()), ("c0a82a03", "1"));
    assert_eq!(d.call.transfer_cause, Some(0));
    assert_eq!(d.call.queue, None, "missing trailing fields are None");
    let a = &d.party_a;
    assert_eq!(a.end_id, "c0a82a03000003ea");
    assert_eq!((a.direction, a.state, a.audio_path, a.tone), (Some(1), Some(party_state::DIALLING), Some(1), Some(3)));
    assert_eq!((a.equipment_class, a.equipment_type), (Some(equipment::TDM_PHONE), Some(106)));
    assert_eq!(a.identity, "4001");
    assert_eq!(a.cli, "4001");
    assert_eq!(a.cli_presentation, Some(100));
    assert_eq!(a.name, "");
    assert!(d.party_b.is_none());
    assert!(d.targets.is_empty());
}

#[test]
fn incoming_isdn_call_ringing_three_targets_with_the_15_character_end_id() {
    let Delta3Record::Detail(d) = &examples()[1] else { panic!() };
    assert_eq!(d.call.call_id, "3");
    assert_eq!((d.call.original_hunt_group.as_ref(), d.call.target_hunt_group.as_ref()), ("200", "200"));
    let a = &d.party_a;
    assert_eq!(a.end_id, "0a82a0300002329", "the documentation's typo is kept as is");
    assert_eq!(a.end_id.len(), 15);
    assert_eq!((a.state, a.public_line, a.equipment_class), (Some(party_state::RINGBACK), Some(1), Some(2)));
    assert_eq!((a.description.as_ref(), a.did.as_ref(), a.cli.as_ref()), ("5.23", "5678", "01707123456"));
    let targets: Vec<(&str, &str, &str)> =
        d.targets.iter().map(|t| (t.end_id.as_ref(), t.identity.as_ref(), t.purpose.as_ref())).collect();
    assert_eq!(
        targets,
        [("c0a82a03000003fe", "4002", "200"), ("c0a82a03000003ff", "4003", "200"), ("c0a82a0300000407", "4001", "200")]
    );
    assert_eq!(d.targets[0].cli, "901707123456");
    assert_eq!(d.targets[0].called_reason, Some(4));
}

#[test]
fn answered_call_has_party_b() {
    let Delta3Record::Detail(d) = &examples()[2] else { panic!() };
    let b = d.party_b.as_ref().unwrap();
    assert_eq!((b.end_id.as_ref(), b.identity.as_ref()), ("c0a82a0300000413", "4001"));
    assert_eq!((b.direction, b.state, b.audio_path), (Some(0), Some(party_state::CONNECTED), Some(1)));
    assert_eq!(b.purpose, "200");
}

#[test]
fn call_lost() {
    let Delta3Record::CallLost(l) = &examples()[3] else { panic!() };
    assert_eq!(
        l,
        &Lost {
            node: "c0a82a03".into(),
            end_id: "c0a82a0300000413".into(),
            cleared_inbound: Some(1),
            cause: Some(cause::NORMAL),
            timestamp: None,
            link_ref: "".into(),
        }
    );
}

#[test]
fn link_lost_and_attempt_reject() {
    let r = parse("<LinkLost>c0a82a03,c0a82a0300000413,0,16,12345,5.23</LinkLost>").unwrap();
    let Delta3Record::LinkLost(l) = r else { panic!() };
    assert_eq!((l.cause, l.timestamp, l.link_ref.as_ref()), (Some(16), Some(12345), "5.23"));
    let r = parse("<AttemptReject>c0a82a03,c0a82a03000003fe,4002,\"dnd\",999</AttemptReject>").unwrap();
    let Delta3Record::AttemptReject(a) = r else { panic!() };
    assert_eq!(
        (a.end_id.as_ref(), a.user.as_ref(), a.qualifier.as_ref(), a.timestamp),
        ("c0a82a03000003fe", "4002", "dnd", Some(999))
    );
}

#[test]
fn quoted_fields_may_hold_commas_quotes_and_angle_brackets() {
    let text = r#"<Detail><Call>c0a82a03,9,,,,0,,,,,,,,,,,"IVR, ""main"" <1>",5</Call><PartyA>e1,1,2,1,0,0,1,0,0,5,0,sip,,0,0,100,,,,,,441234,0,2,"Smith, John ""JJ"" <acme>",e0</PartyA></Detail>"#;
    let Delta3Record::Detail(d) = parse(text).unwrap() else { panic!() };
    assert_eq!(d.call.ivr_transfer, r#"IVR, "main" <1>"#);
    assert_eq!(d.call.ivr_time, Some(5));
    assert_eq!(d.party_a.name, r#"Smith, John "JJ" <acme>"#);
    assert_eq!(d.party_a.related_end_id, "e0");
    assert!(matches!(d.party_a.name, Cow::Owned(_)), "escaped quotes are the only copies");
    assert!(matches!(d.party_a.cli, Cow::Borrowed(_)));
}

#[test]
fn whitespace_comments_and_nuls_around_the_record() {
    let text = "\n  <!-- a comment -->\n<CallLost>\n   c0a82a03 , c0a82a0300000413 ,1, 16 \n</CallLost>\n\0\0";
    let Delta3Record::CallLost(l) = parse(text).unwrap() else { panic!() };
    assert_eq!((l.node.as_ref(), l.end_id.as_ref(), l.cause), ("c0a82a03", "c0a82a0300000413", Some(16)));
}

#[test]
fn unknown_children_are_skipped() {
    let text = "<Detail><Call>n,1</Call><Extra><Deep>x</Deep>y</Extra><PartyA>e1</PartyA><Target_list><Odd>1</Odd><Target>t1,0,0,8,0,,201</Target></Target_list></Detail>";
    let Delta3Record::Detail(d) = parse(text).unwrap() else { panic!() };
    assert_eq!(d.party_a.end_id, "e1");
    assert_eq!(d.targets.len(), 1);
    assert_eq!(d.targets[0].identity, "201");
}

#[test]
fn errors_are_items_not_panics() {
    let cases: &[(&str, Delta3ErrorKind)] = &[
        ("", Delta3ErrorKind::Empty),
        ("  \n ", Delta3ErrorKind::Empty),
        ("<CallStatus>1,2</CallStatus>", Delta3ErrorKind::UnknownRecord("CallStatus".into())),
        ("CallLost", Delta3ErrorKind::ExpectedElement),
        ("<CallLost", Delta3ErrorKind::UnterminatedTag),
        ("<CallLost>n,e,1,16", Delta3ErrorKind::UnterminatedTag),
        ("<CallLost>n,e,1,16</LinkLost>", Delta3ErrorKind::ExpectedClose("CallLost")),
        ("<CallLost>n,,1,16</CallLost>", Delta3ErrorKind::MissingField("end identifier")),
        ("<Detail><PartyA>e1</PartyA></Detail>", Delta3ErrorKind::MissingElement("Call")),
        ("<Detail><Call>n,1</Call></Detail>", Delta3ErrorKind::MissingElement("PartyA")),
        ("<Detail><Call>n</Call><PartyA>e1</PartyA></Detail>", Delta3ErrorKind::MissingField("call id")),
        ("<Detail><Call>n,1</Call><PartyA>e1,\"open</PartyA></Detail>", Delta3ErrorKind::UnterminatedQuote),
        ("<CallLost>n,e,1,16</CallLost><CallLost>n,e</CallLost>", Delta3ErrorKind::TrailingData),
        ("<Detail><Call>n,1</Call><a><b><c><d><e><f><g><h><i><j>", Delta3ErrorKind::TooDeep),
    ];
    for (text, kind) in cases {
        let err = parse(text).unwrap_err();
        assert_eq!(&err.kind, kind, "{text:?}");
    }
    assert!(parse("<Foo></Foo>").unwrap_err().is_unknown_record());
    assert!(!parse("<CallLost>").unwrap_err().is_unknown_record());
}

#[test]
fn non_numeric_numbers_are_none() {
    let Delta3Record::CallLost(l) = parse("<CallLost>n,e,x,16abc,9</CallLost>").unwrap() else { panic!() };
    assert_eq!((l.cleared_inbound, l.cause, l.timestamp), (None, None, Some(9)));
}

#[test]
fn writing_the_examples_gives_the_compact_wire_form() {
    let records = examples();
    assert_eq!(
        records[0].to_string(),
        "<Detail><Call>c0a82a03,1,,,,0</Call><PartyA>c0a82a03000003ea,1,7,1,3,0,0,0,1,8,106,,4001,0,0,,,,,,,4001,100</PartyA></Detail>"
    );
    assert_eq!(records[3].to_string(), "<CallLost>c0a82a03,c0a82a0300000413,1,16</CallLost>");
    for r in &records {
        assert_eq!(&parse(&r.to_string()).unwrap(), r);
    }
}

fn field() -> impl Strategy<Value = String> {
    // Any text; the writer quotes what needs it. Surrounding whitespace is trimmed by the
    // reader, so none is generated.
    "[a-zA-Z0-9.@*,\"<> -]{0,12}".prop_map(|s| s.trim().to_owned())
}

fn id() -> impl Strategy<Value = String> {
    "[0-9a-f]{1,16}"
}

fn num() -> impl Strategy<Value = Option<u32>> {
    prop::option::of(0u32..200)
}

fn party() -> impl Strategy<Value = Party<'static>> {
    (
        (id(), num(), num(), num(), num(), num(), num(), num(), num(), num(), num()),
        (field(), field(), num(), num(), field(), field(), field(), field(), field(), field()),
        (field(), num(), num(), field(), field()),
    )
        .prop_map(
            |(
                (e, d, s, a, t, r, p, f, el, ec, et),
                (desc, ident, ct, cr, did, dl, ob, tn, ts, pu),
                (cli, cp, nt, name, rel),
            )| Party {
                end_id: e.into(),
                direction: d,
                state: s,
                audio_path: a,
                tone: t,
                remote: r,
                public_line: p,
                flags: f,
                emergency_location: el,
                equipment_class: ec,
                equipment_type: et,
                description: desc.into(),
                identity: ident.into(),
                called_type: ct,
                called_reason: cr,
                did: did.into(),
                dialled: dl.into(),
                on_behalf: ob.into(),
                target_number: tn.into(),
                target_subaddr: ts.into(),
                purpose: pu.into(),
                cli: cli.into(),
                cli_presentation: cp,
                name_type: nt,
                name: name.into(),
                related_end_id: rel.into(),
            },
        )
}

fn target() -> impl Strategy<Value = Target<'static>> {
    (id(), num(), num(), num(), num(), field(), field(), num(), num(), field(), (field(), field(), field(), num()))
        .prop_map(|(e, r, p, ec, et, d, i, ct, cr, tn, (ts, pu, cli, cp))| Target {
            end_id: e.into(),
            remote: r,
            public_line: p,
            equipment_class: ec,
            equipment_type: et,
            description: d.into(),
            identity: i.into(),
            called_type: ct,
            called_reason: cr,
            target_number: tn.into(),
            target_subaddr: ts.into(),
            purpose: pu.into(),
            cli: cli.into(),
            cli_presentation: cp,
        })
}

fn call() -> impl Strategy<Value = CallFields<'static>> {
    (
        (id(), id(), field(), field(), field(), num(), field(), field(), field()),
        (
            field(),
            field(),
            field(),
            num(),
            num(),
            prop::option::of(any::<u64>()),
            field(),
            field(),
            prop::option::of(any::<u64>()),
        ),
    )
        .prop_map(|((node, cid, ac, au, tag, tc, ohg, org, oru), (thg, tu, vm, vl, q, ts, ov, ivr, it))| {
            CallFields {
                node: node.into(),
                call_id: cid.into(),
                account_code: ac.into(),
                auth_code: au.into(),
                tag: tag.into(),
                transfer_cause: tc,
                owner_hunt_group: ohg.into(),
                original_hunt_group: org.into(),
                original_user: oru.into(),
                target_hunt_group: thg.into(),
                target_user: tu.into(),
                vm_message: vm.into(),
                vm_length: vl,
                queue: q,
                timestamp: ts,
                overflow: ov.into(),
                ivr_transfer: ivr.into(),
                ivr_time: it,
            }
        })
}

fn record() -> impl Strategy<Value = Delta3Record<'static>> {
    prop_oneof![
        (call(), party(), prop::option::of(party()), prop::collection::vec(target(), 0..4)).prop_map(
            |(call, party_a, party_b, targets)| Delta3Record::Detail(Detail { call, party_a, party_b, targets })
        ),
        (field(), id(), num(), num(), prop::option::of(any::<u64>())).prop_map(|(n, e, c, ca, ts)| {
            Delta3Record::CallLost(Lost {
                node: n.into(),
                end_id: e.into(),
                cleared_inbound: c,
                cause: ca,
                timestamp: ts,
                link_ref: "".into(),
            })
        }),
        (field(), id(), num(), num(), prop::option::of(any::<u64>()), field()).prop_map(|(n, e, c, ca, ts, lr)| {
            Delta3Record::LinkLost(Lost {
                node: n.into(),
                end_id: e.into(),
                cleared_inbound: c,
                cause: ca,
                timestamp: ts,
                link_ref: lr.into(),
            })
        }),
        (field(), id(), field(), field(), prop::option::of(any::<u64>())).prop_map(|(n, e, u, q, ts)| {
            Delta3Record::AttemptReject(AttemptReject {
                node: n.into(),
                end_id: e.into(),
                user: u.into(),
                qualifier: q.into(),
                timestamp: ts,
            })
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Write → parse gives the record back.
    #[test]
    fn records_round_trip(r in record()) {
        let text = r.to_string();
        prop_assert_eq!(parse(&text), Ok(r), "{}", text);
    }

    /// Whitespace and newlines between elements (as in the documentation) change nothing.
    #[test]
    fn indentation_is_ignored(r in record()) {
        let text = r.to_string();
        let mut indented = text.clone();
        for tag in ["Detail", "Call", "PartyA", "PartyB", "Target_list", "Target", "CallLost", "LinkLost", "AttemptReject"] {
            indented = indented.replace(&format!("<{tag}>"), &format!("\n  <{tag}>\n    ")).replace(&format!("</{tag}>"), &format!("\n  </{tag}>\n"));
        }
        prop_assert_eq!(parse(&indented), Ok(r));
    }

    /// Any text: never a panic; what parses writes out and parses to the same record.
    #[test]
    fn arbitrary_text_parses_to_a_fixpoint(s in "(<|>|/|Detail|Call|PartyA|PartyB|Target|Target_list|CallLost|\"|,|[a-z0-9]| ){0,60}") {
        if let Ok(r) = parse(&s) {
            let again = r.to_string();
            prop_assert_eq!(parse(&again), Ok(r));
        }
    }
}
