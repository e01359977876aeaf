use proptest::prelude::*;

use super::*;
use crate::testdata::{sample_frames, tuple_strings};

/// The sample frames by title fragment, payload only.
fn sample(title: &str) -> Vec<u8> {
    let frames = sample_frames();
    let (_, bytes) = frames.iter().find(|(t, _)| t.contains(title)).unwrap_or_else(|| panic!("no sample {title}"));
    bytes[3..].to_vec()
}

fn reencode(p: &Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    p.encode(&mut out);
    out.to_vec()
}

/// Parses a sample, checks it, and checks that encoding gives the same bytes back.
fn check(title: &str, expected: Packet) {
    let payload = sample(title);
    let parsed = Packet::parse(&payload).unwrap_or_else(|e| panic!("{title}: {e}"));
    assert_eq!(parsed, expected, "{title}");
    assert_eq!(reencode(&parsed), payload, "{title}: re-encoded bytes differ");
}

const ID: u32 = 0x1234_5678;

#[test]
fn test_request_and_response() {
    check("Test request", Packet::TestRequest { request_id: ID, data: Bytes::new() });
    check("Test response", Packet::TestResponse { request_id: ID, result: ResultCode::SUCCESS, data: Bytes::new() });
}

#[test]
fn auth_request_with_application_name() {
    check(
        "Authenticate request",
        Packet::AuthRequest {
            request_id: ID,
            username: "devlink".into(),
            application_name: Some("PBXListener 1.0".into()),
        },
    );
}

#[test]
fn sha1_challenge_and_response_match_the_vector() {
    let challenge: [u8; 16] = std::array::from_fn(|i| i as u8);
    check("SHA1 challenge", Packet::AuthChallenge { request_id: ID, challenge: Challenge::Sha1(challenge) });
    let digest = sha1_response(&challenge, "secret");
    assert_eq!(
        digest.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "add1e5c55e9a133efc7337fb271e91b372eb55a4"
    );
    check("Challenge response", Packet::AuthResponse { request_id: ID, response: ChallengeResponse::Sha1(digest) });
}

#[test]
fn sha1_uses_only_the_first_16_password_bytes() {
    let c = [7u8; 16];
    assert_eq!(sha1_response(&c, "0123456789abcdefXYZ"), sha1_response(&c, "0123456789abcdef"));
    assert_ne!(sha1_response(&c, "0123456789abcde"), sha1_response(&c, "0123456789abcdef"));
}

#[test]
fn auth_result_success_with_tuples() {
    check(
        "Authenticate result SUCCESS",
        Packet::AuthResult {
            request_id: ID,
            result: ResultCode::SUCCESS,
            pbx_type: Some("Avaya IP500v2 10.0.2345.67894".into()),
            variant: Some("Standard 1.0".into()),
        },
    );
}

#[test]
fn auth_failure_codes() {
    for (code, name) in [
        (ResultCode::AUTHENTICATION_FAILED, "AUTHENTICATION FAILED"),
        (ResultCode::LIMITS_EXCEEDED, "LIMITS EXCEEDED"),
        (ResultCode::RETRY_LATER, "RETRY LATER"),
        (ResultCode::LICENCE_MISSING, "LICENCE MISSING"),
    ] {
        let p = Packet::AuthResult { request_id: 9, result: code, pbx_type: None, variant: None };
        assert_eq!(Packet::parse(&reencode(&p)), Ok(p));
        assert_eq!(code.name(), Some(name));
        assert!(!code.is_success());
    }
    assert_eq!(ResultCode::AUTHENTICATION_FAILED.to_string(), "AUTHENTICATION FAILED (0x80000041)");
    assert_eq!(format!("{:?}", ResultCode(0x8000_0099)), "0x80000099");
}

#[test]
fn plain_challenge_and_response_are_never_printed() {
    let challenge = Packet::AuthChallenge { request_id: 3, challenge: Challenge::Plain };
    assert_eq!(reencode(&challenge), [0x80, 0x30, 0, 1, 0, 0, 0, 3, 0, 0, 0, 1]);
    assert_eq!(Packet::parse(&reencode(&challenge)), Ok(challenge));
    let response =
        Packet::AuthResponse { request_id: 4, response: ChallengeResponse::Plain(plain_response("hunter2")) };
    let bytes = reencode(&response);
    assert_eq!(&bytes[8..16], &[0, 0, 0, 0x51, 0, 0, 0, 32]);
    assert_eq!(&bytes[16..23], b"hunter2");
    assert!(bytes[23..].iter().all(|&b| b == 0));
    assert_eq!(Packet::parse(&bytes), Ok(response.clone()));
    assert!(!format!("{response:?}").contains("hunter2"));
}

#[test]
fn event_request_and_response() {
    check("Event request", Packet::EventRequest { request_id: ID, flags: "-SIPTrack -CMExtn".into() });
    check(
        "Event response SUCCESS",
        Packet::EventResponse {
            request_id: ID,
            result: ResultCode::SUCCESS,
            accepted_flags: "-SIPTrack -CMExtn".into(),
        },
    );
}

#[test]
fn event_request_with_the_halved_length_of_the_csharp_tutorial() {
    let mut payload = sample("Event request");
    assert_eq!(&payload[8..10], &[0x00, 0x12]);
    payload[9] = 0x09;
    assert_eq!(Packet::parse(&payload), Ok(Packet::EventRequest { request_id: ID, flags: "-SIPTrack -CMExtn".into() }));
}

#[test]
fn event_response_partial_success() {
    let p = Packet::EventResponse {
        request_id: 1,
        result: ResultCode::PARTIAL_SUCCESS,
        accepted_flags: "-SIPTrack".into(),
    };
    let parsed = Packet::parse(&reencode(&p)).unwrap();
    assert_eq!(parsed, p);
    assert!(ResultCode::PARTIAL_SUCCESS.is_success());
}

#[test]
fn event_with_delta3() {
    let Packet::Event(event) = Packet::parse(&sample("carrying one CallDelta3")).unwrap() else {
        panic!("not an event")
    };
    assert_eq!(event.header, EventHeader::Short);
    assert_eq!(event.pbx_address, Ipv4Addr::new(192, 168, 42, 3));
    assert_eq!(event.counter, 1);
    assert_eq!(
        event.tuples,
        vec![EventTuple::CallDelta3(
            "<Detail><Call>c0a82a03,1,,,,0,,,,,</Call><PartyA>c0a82a03000003ea,1,7,1,3,0,0,0,1,8,106,,4001,0,0,,,,,,,4001,100</PartyA></Detail>".into()
        )]
    );
    assert_eq!(reencode(&Packet::Event(event)), sample("carrying one CallDelta3"));
}

#[test]
fn event_with_siptrack_matches_the_documented_string() {
    let Packet::Event(event) = Packet::parse(&sample("carrying one SIPTrack")).unwrap() else { panic!("not an event") };
    assert_eq!(event.pbx_address, Ipv4Addr::new(192, 168, 42, 31));
    assert_eq!(event.tuples, vec![EventTuple::SipTrack(tuple_strings()[0].to_owned())]);
    assert_eq!(reencode(&Packet::Event(event)), sample("carrying one SIPTrack"));
}

#[test]
fn event_header_of_twelve_bytes_is_tolerated() {
    let short = sample("carrying one CallDelta3");
    // Insert a 4-byte id after the type, as calldoc's simulator does.
    let mut long = short[..4].to_vec();
    long.extend_from_slice(&[0, 0, 0, 42]);
    long.extend_from_slice(&short[4..]);
    let Packet::Event(event) = Packet::parse(&long).unwrap() else { panic!("not an event") };
    assert_eq!(event.header, EventHeader::Long { request_id: 42 });
    assert_eq!(event.pbx_address, Ipv4Addr::new(192, 168, 42, 3));
    assert!(matches!(&event.tuples[..], [EventTuple::CallDelta3(s)] if s.starts_with("<Detail>")));
    assert_eq!(reencode(&Packet::Event(event)), long);
}

#[test]
fn cm_extn_plain_and_extended_forms() {
    let strings = tuple_strings();
    assert_eq!(strings[1], "Extn4001: CALL LOST (CMCauseForceIdle)");
    for record in [
        CmExtn::Text(strings[1].to_owned()),
        CmExtn::Extended { kind: 1, param1: 2, param2: 0, text: "Extn865001".into() },
    ] {
        let event = Event {
            header: EventHeader::Short,
            pbx_address: Ipv4Addr::new(10, 0, 0, 1),
            counter: 7,
            tuples: vec![EventTuple::CmExtn(record)],
        };
        let bytes = reencode(&Packet::Event(event.clone()));
        assert_eq!(Packet::parse(&bytes), Ok(Packet::Event(event)));
    }
    // The extended form's length is strlen + 12 (here with the terminating NUL counted).
    let ext = Event {
        header: EventHeader::Short,
        pbx_address: Ipv4Addr::new(10, 0, 0, 1),
        counter: 7,
        tuples: vec![EventTuple::CmExtn(CmExtn::Extended { kind: 1, param1: 2, param2: 0, text: "Extn865001".into() })],
    };
    let bytes = reencode(&Packet::Event(ext));
    assert_eq!(&bytes[16..18], &(10u16 * 2 + 2 + 12).to_be_bytes());
    assert_eq!(&bytes[18..30], &[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0]);
    // And a plain record without its NUL is read too.
    assert_eq!(parse_cm_extn(&[0, 0x45, 0, 0x78]), CmExtn::Text("Ex".into()));
}

#[test]
fn siptrack_strings() {
    let t = SipTrack::parse(tuple_strings()[0]).unwrap();
    assert_eq!(
        t,
        SipTrack {
            started: true,
            end_id: "c0a82a1f000003eb",
            delta2_id: "17.1003.1",
            sip_type: "TRUNK",
            direction: "IN",
            call_id: "0f5757c5c504c74197be9699697eab8d"
        }
    );
    let end = SipTrack::parse("END,c0a82a1f000003eb,17.1003.1,TRUNK,IN,abc@10.0.0.1").unwrap();
    assert!(!end.started);
    assert_eq!(end.call_id, "abc@10.0.0.1");
    assert_eq!(SipTrack::parse("START,x,y,TRUNK,IN,a,b").unwrap().call_id, "a,b", "a Call-ID may hold commas");
    assert_eq!(SipTrack::parse("START,x,y"), Err(SipTrackError::Fields(3)));
    assert_eq!(SipTrack::parse("BEGIN,x,y,TRUNK,IN,z"), Err(SipTrackError::Event("BEGIN".into())));
    assert_eq!(SipTrack::parse("START,,y,TRUNK,IN,z"), Err(SipTrackError::Empty));
}

#[test]
fn malformed_packets_say_what_and_where() {
    assert_eq!(
        Packet::parse(&[0x00, 0x2a]),
        Err(PacketError { packet_type: 0, offset: 0, kind: PacketErrorKind::Truncated("packet type") })
    );
    // An event tuple longer than the payload.
    let mut payload = sample("carrying one CallDelta3");
    payload.truncate(payload.len() - 10);
    let err = Packet::parse(&payload).unwrap_err();
    assert_eq!(err.kind, PacketErrorKind::Truncated("tuple data"));
    assert_eq!(err.packet_type, types::EVENT);
    // No tuple code at 8 or 12.
    let err = Packet::parse(&[0x10, 0x30, 0x00, 0x11, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 9]).unwrap_err();
    assert_eq!(err.kind, PacketErrorKind::NoTuple);
    // An unknown authenticate sub-code.
    let err = Packet::parse(&[0x00, 0x30, 0x00, 0x01, 0, 0, 0, 1, 0, 0, 0, 0x77]).unwrap_err();
    assert_eq!(err.kind, PacketErrorKind::Unexpected { field: "auth code", value: 0x77 });
    assert_eq!(err.to_string(), "packet 0x00300001: unexpected auth code 0x77 at offset 12");
    // A user name without NUL.
    let err = Packet::parse(&[0x00, 0x30, 0x00, 0x01, 0, 0, 0, 1, 0, 0, 0, 1, b'a']).unwrap_err();
    assert_eq!(err.kind, PacketErrorKind::Unterminated("user name"));
}

#[test]
fn unknown_packet_types_are_kept() {
    let p = Packet::parse(&[0x80, 0x30, 0x00, 0x41, 1, 2, 3]).unwrap();
    assert_eq!(p, Packet::Unknown { packet_type: types::READ_FILE_RESPONSE, payload: Bytes::from_static(&[1, 2, 3]) });
}

fn text() -> impl Strategy<Value = String> {
    // No NUL: strings on the wire are NUL-terminated.
    "[^\u{0}]{0,40}"
}

fn packets() -> impl Strategy<Value = Packet> {
    let id = any::<u32>();
    prop_oneof![
        (id, prop::collection::vec(any::<u8>(), 0..50))
            .prop_map(|(request_id, d)| Packet::TestRequest { request_id, data: d.into() }),
        (id, any::<u32>(), prop::collection::vec(any::<u8>(), 0..50))
            .prop_map(|(request_id, r, d)| Packet::TestResponse { request_id, result: ResultCode(r), data: d.into() }),
        (id, text(), prop::option::of(text())).prop_map(|(request_id, username, application_name)| {
            Packet::AuthRequest { request_id, username, application_name }
        }),
        (id, any::<[u8; 16]>())
            .prop_map(|(request_id, c)| Packet::AuthChallenge { request_id, challenge: Challenge::Sha1(c) }),
        (id, any::<[u8; 20]>())
            .prop_map(|(request_id, d)| Packet::AuthResponse { request_id, response: ChallengeResponse::Sha1(d) }),
        (id, prop::option::of(text()), prop::option::of(text())).prop_map(|(request_id, pbx_type, variant)| {
            Packet::AuthResult { request_id, result: ResultCode::SUCCESS, pbx_type, variant }
        }),
        (id, text()).prop_map(|(request_id, flags)| Packet::EventRequest { request_id, flags }),
        (id, prop::sample::select(vec![0u32, 9, 0x8000_0021]), text()).prop_map(|(request_id, r, accepted_flags)| {
            Packet::EventResponse { request_id, result: ResultCode(r), accepted_flags }
        }),
        (any::<u32>(), any::<[u8; 4]>(), prop::collection::vec(tuple(), 0..4), any::<bool>()).prop_map(
            |(counter, ip, tuples, long)| {
                Packet::Event(Event {
                    header: if long { EventHeader::Long { request_id: counter ^ 1 } } else { EventHeader::Short },
                    pbx_address: Ipv4Addr::from(ip),
                    counter,
                    tuples,
                })
            }
        ),
    ]
}

fn tuple() -> impl Strategy<Value = EventTuple> {
    prop_oneof![
        text().prop_map(EventTuple::CallDelta3),
        text().prop_map(EventTuple::SipTrack),
        // A plain CMExtn text never starts with NUL; an extended one may have any numbers.
        "[^\u{0}]{1,20}".prop_map(|s| EventTuple::CmExtn(CmExtn::Text(s))),
        (0u32..0xFFFF, any::<u32>(), any::<u32>(), text()).prop_map(|(kind, param1, param2, text)| EventTuple::CmExtn(
            CmExtn::Extended { kind, param1, param2, text }
        )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Encode → parse gives the packet back.
    #[test]
    fn packets_round_trip(p in packets()) {
        // An event with no tuples cannot say which header it has; skip the Long-without-tuples case.
        if let Packet::Event(Event { header: EventHeader::Long { .. }, tuples, .. }) = &p {
            prop_assume!(!tuples.is_empty());
        }
        prop_assert_eq!(Packet::parse(&reencode(&p)), Ok(p));
    }

    /// Parsing any payload never panics, and what parses is a fixpoint of encode ∘ parse.
    #[test]
    fn arbitrary_payloads_parse_to_a_fixpoint(t in prop::sample::select(vec![types::EVENT, types::AUTH_RESPONSE, types::AUTH_REQUEST, types::EVENT_RESPONSE, types::TEST_RESPONSE]), body in prop::collection::vec(any::<u8>(), 0..120)) {
        let mut payload = t.to_be_bytes().to_vec();
        payload.extend_from_slice(&body);
        if let Ok(p) = Packet::parse(&payload) {
            let again = Packet::parse(&reencode(&p));
            prop_assert_eq!(again.as_ref().ok(), Some(&p), "{:?}", again);
        }
    }
}
