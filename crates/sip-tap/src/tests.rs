//! The SIP and HEP readers against every sample in `testdata/samples/sip` (expected values
//! from its SOURCES.md), split at every offset, plus the tap core end to end.

use correlation::LegUpdate;
use listener_core::UnixMillis;
use proptest::prelude::*;

use crate::hep;
use crate::sip::{self, Framing, SipError, StartLine, parse_datagram, parse_stream, uui_bytes};
use crate::*;

const MAX: usize = 65_535;

fn sample(path: &str) -> Vec<u8> {
    let full = format!("{}/../../testdata/samples/sip/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

const BLEG_CALL_SID: &str = "7c1f0d2e-9a4b-4c3d-8e5f-6a7b8c9d0e1f";
const BLEG_PARENT: &str = "2a3b4c5d-6e7f-4809-9a1b-2c3d4e5f6a7b";

/// Every RFC 4475 message that the RFC calls valid (and the RFC 2543 one it asks us to
/// accept), with what must be read from it.
#[test]
fn rfc4475_valid_messages() {
    /// (file, start, Call-ID, CSeq, body length)
    type Case<'a> = (&'a str, &'a str, &'a str, (u32, &'a str), usize);
    let cases: &[Case<'_>] = &[
        ("wsinv.dat", "INVITE", "wsinv.ndaksdj@192.0.2.1", (9, "INVITE"), 150),
        (
            "intmeth.dat",
            "!interesting-Method0123456789_*+`.%indeed'~",
            "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
            (139122385, "!interesting-Method0123456789_*+`.%indeed'~"),
            0,
        ),
        ("dblreq.dat", "REGISTER", "dblreq.0ha0isndaksdj99sdfafnl3lk233412", (8, "REGISTER"), 0),
        ("semiuri.dat", "OPTIONS", "semiuri.0ha0isndaksdj", (8, "OPTIONS"), 0),
        ("mpart01.dat", "MESSAGE", "3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..", (1, "MESSAGE"), 553),
        ("unreason.dat", "200", "unreason.1234ksdfak3j2erwedfsASdf", (35, "INVITE"), 154),
        ("noreason.dat", "100", "noreason.asndj203insdf99223ndf", (35, "INVITE"), 0),
        ("inv2543.dat", "INVITE", "inv2543.1717@ift.client.example.com", (56, "INVITE"), 105),
    ];
    for &(file, start, call_id, (seq, method), body) in cases {
        let bytes = sample(&format!("rfc4475/{file}"));
        let m = parse_datagram(&bytes, MAX).unwrap_or_else(|e| panic!("{file}: {e}"));
        let got_start = match &m.start {
            StartLine::Request { method, .. } => (*method).to_owned(),
            StartLine::Response { status, .. } => status.to_string(),
        };
        assert_eq!(got_start, start, "{file}");
        assert_eq!(m.call_id(), call_id, "{file}");
        let cseq = m.cseq().unwrap();
        assert_eq!((cseq.seq, cseq.method), (seq, method), "{file}");
        assert_eq!(m.body.len(), body, "{file}");
        assert!(m.from().is_ok() && m.to().is_ok(), "{file}");
    }
}

#[test]
fn wsinv_folding_whitespace_and_compact_forms() {
    let bytes = sample("rfc4475/wsinv.dat");
    let m = parse_datagram(&bytes, MAX).unwrap();
    let to = m.to().unwrap();
    assert_eq!((to.uri.as_str(), to.tag.as_deref()), ("sip:vivekg@chair-dnrc.example.com", Some("1918181833n")));
    let from = m.from().unwrap();
    assert_eq!(from.display.as_deref(), Some("J Rosenberg \\\""));
    assert_eq!((from.uri.as_str(), from.tag.as_deref()), ("sip:jdrosen@example.com", Some("98asjd8")));
    assert_eq!(m.header("newfangledheader"), Some("newfangled value continued newfangled value"));
    assert_eq!(m.header("UnknownHeaderWithUnusualValue"), Some(";;,,;;,;"));
    assert_eq!(m.header("Max-Forwards"), Some("0068"));
    assert_eq!(m.header("Subject"), Some(""));
    assert_eq!(m.header("s"), Some(""));
    assert_eq!(
        m.header("Contact"),
        Some("\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam = newvalue ; secondparam ; q = 0.33")
    );
    let vias = m.vias().unwrap();
    let got: Vec<_> = vias.iter().map(|v| (v.transport.as_str(), v.sent_by.as_str(), v.branch.as_deref())).collect();
    assert_eq!(
        got,
        [
            ("UDP", "192.0.2.2", Some("390skdjuw")),
            ("TCP", "spindle.example.com", Some("z9hG4bK9ikj8")),
            ("UDP", "192.168.255.111", Some("z9hG4bK30239")),
        ]
    );
    assert_eq!(m.request_uri_user(), Some("vivekg"));
    assert_eq!(m.content_length(), Some(150));
}

#[test]
fn intmeth_semiuri_dblreq_details() {
    let bytes = sample("rfc4475/intmeth.dat");
    let m = parse_datagram(&bytes, MAX).unwrap();
    assert_eq!(m.request_uri_user(), Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"));
    assert_eq!(m.from().unwrap().tag.as_deref(), Some("_token~1'+`*%!-."));
    assert_eq!(m.from().unwrap().display.as_deref(), Some("token1~` token2'+_ token3*%!.-"));
    assert_eq!(m.to().unwrap().display.as_deref(), Some("BEL:\u{7} NUL:\0 DEL:\u{7f}"));
    assert_eq!(m.header("extensionHeader-!.%*+_`'~"), Some("\u{feff}大停電"));

    let bytes = sample("rfc4475/semiuri.dat");
    let m = parse_datagram(&bytes, MAX).unwrap();
    assert_eq!(m.request_uri_user(), Some("user;par=u%40example.net"));
    assert_eq!(
        m.header("accept"),
        Some(
            "application/sdp, application/pkcs7-mime, multipart/mixed, multipart/signed, message/sip, message/sipfrag"
        )
    );

    // Only the first of the two requests in the datagram is read …
    let bytes = sample("rfc4475/dblreq.dat");
    let m = parse_datagram(&bytes, MAX).unwrap();
    assert_eq!(m.header("i"), Some("dblreq.0ha0isndaksdj99sdfafnl3lk233412"));
    assert_eq!(m.consumed, 300);
    assert_eq!(&bytes[300..310], b"\r\nINVITE s");
    // … though on a stream the second is a message of its own.
    let second = parse_stream(&bytes[m.consumed..], MAX).unwrap().unwrap();
    assert_eq!(second.call_id(), "dblreq.0ha0isnda977644900765@192.0.2.15");
    assert_eq!(second.body.len(), 150);

    let bytes = sample("rfc4475/unreason.dat");
    let m = parse_datagram(&bytes, MAX).unwrap();
    let StartLine::Response { reason, .. } = &m.start else { panic!() };
    assert!(reason.starts_with("= 2**3 * 5**2 но сто"), "{reason}");
}

#[test]
fn rfc4475_invalid_messages_are_rejected() {
    for (file, err) in [
        ("badinv01.dat", SipError::BadVia),
        ("clerr.dat", SipError::BodyTruncated),
        ("ncl.dat", SipError::BadContentLength),
        ("mcl01.dat", SipError::ConflictingContentLength),
    ] {
        let bytes = sample(&format!("rfc4475/{file}"));
        assert_eq!(parse_datagram(&bytes, MAX), Err(err), "{file}");
    }
}

#[test]
fn synthetic_bleg_invites() {
    let bytes = sample("synthetic/bleg_invite_longform.sip");
    let m = parse_datagram(&bytes, MAX).unwrap();
    assert_eq!(m.call_id(), "b1e9c2d4-5f60-4a7b-8c9d-0e1f2a3b4c5d");
    assert_eq!(m.header("X-Call-Sid"), Some(BLEG_CALL_SID));
    assert_eq!(m.header("x-parent-call-sid"), Some(BLEG_PARENT));
    assert_eq!(m.body.len(), 226);
    let uui = uui_bytes(m.user_to_user().unwrap()).unwrap();
    assert_eq!(uui[0], 0x04);
    assert_eq!(std::str::from_utf8(&uui[1..]).unwrap(), format!("CSID={BLEG_CALL_SID}"));
    let from = m.from().unwrap();
    assert_eq!(
        (from.user(), from.tag.as_deref(), from.display.as_deref()),
        (Some("+15557654321"), Some("cp-7f3a9c"), Some("Acme Support"))
    );
    assert_eq!(m.to().unwrap().user(), Some("+15551230100"));
    assert_eq!(m.request_uri_user(), Some("+15551230100"));

    let bytes = sample("synthetic/bleg_invite_compact_folded.sip");
    let m = parse_datagram(&bytes, MAX).unwrap();
    assert_eq!(m.call_id(), "c2fac2d4-5f60-4a7b-8c9d-0e1f2a3b4c5d");
    assert_eq!(m.header("X-Call-Sid"), Some(BLEG_CALL_SID));
    assert_eq!(m.header("X-Parent-Call-Sid"), Some(BLEG_PARENT));
    let vias = m.vias().unwrap();
    assert_eq!(vias.len(), 2);
    assert_eq!(vias[0].branch.as_deref(), Some("z9hG4bK-sbc-0002"));
    assert_eq!(vias[1].branch.as_deref(), Some("z9hG4bK-bleg-0002"));
    assert_eq!(m.from().unwrap().tag.as_deref(), Some("cp-7f3a9d"));
    assert_eq!(m.header("Content-Type"), Some("application/sdp"));
    assert_eq!(m.body.len(), 226);

    let bytes = sample("synthetic/invite_avaya_ucid_uui.sip");
    let m = parse_datagram(&bytes, MAX).unwrap();
    let uui = uui_bytes(m.user_to_user().unwrap()).unwrap();
    assert_eq!(uui, [0x00, 0xFA, 0x08, 0x00, 0x19, 0x00, 0x10, 0x38, 0xF7, 0x25, 0xB3]);
    let node = u16::from_be_bytes([uui[3], uui[4]]);
    let seq = u16::from_be_bytes([uui[5], uui[6]]);
    let time = u32::from_be_bytes([uui[7], uui[8], uui[9], uui[10]]);
    assert_eq!(format!("{node:05}{seq:05}{time:010}"), "00025000160955721139");
}

/// Reads a stream buffer the way the tap does: every complete message, then what is left.
fn read_stream(buf: &[u8]) -> (Vec<(usize, String)>, usize) {
    let mut at = 0;
    let mut out = Vec::new();
    while let Some(m) = parse_stream(&buf[at..], MAX).unwrap() {
        let start = at + sip::keepalive_len(&buf[at..]);
        out.push((start, m.call_id().to_owned()));
        at += m.consumed;
    }
    (out, at)
}

#[test]
fn tcp_stream_is_framed_by_content_length_at_every_split() {
    let bytes = sample("synthetic/tcp_stream_180_200.bin");
    let (msgs, used) = read_stream(&bytes);
    assert_eq!(msgs.iter().map(|(o, _)| *o).collect::<Vec<_>>(), [4, 373]);
    assert_eq!(used, bytes.len());
    let first = parse_stream(&bytes, MAX).unwrap().unwrap();
    assert_eq!(first.status(), Some(180));
    let second = parse_stream(&bytes[first.consumed..], MAX).unwrap().unwrap();
    assert_eq!((second.status(), second.body.len()), (Some(200), 112));
    // Arriving in two pieces, cut anywhere: the same messages, none early, none twice.
    for cut in 0..=bytes.len() {
        let (a, used_a) = read_stream(&bytes[..cut]);
        let mut rest = bytes[used_a..cut].to_vec();
        rest.extend_from_slice(&bytes[cut..]);
        let (b, _) = read_stream(&rest);
        let all: Vec<String> = a.into_iter().chain(b).map(|(_, c)| c).collect();
        assert_eq!(all.len(), 2, "cut at {cut}");
        assert!(all.iter().all(|c| c == &msgs[0].1));
    }
    // Fed byte by byte.
    let mut buf = Vec::new();
    let mut seen = 0;
    for b in &bytes {
        buf.push(*b);
        while let Some(m) = parse_stream(&buf, MAX).unwrap() {
            let n = m.consumed;
            seen += 1;
            buf.drain(..n);
        }
    }
    assert_eq!(seen, 2);
}

#[test]
fn limits_are_enforced() {
    let bytes = sample("synthetic/bleg_invite_longform.sip");
    assert_eq!(parse_datagram(&bytes, 500), Err(SipError::TooLarge(500)));
    // A stream that never ends its headers fails once past the limit, not before.
    let endless = b"INVITE sip:a@b SIP/2.0\r\nX: ".repeat(40);
    assert_eq!(parse_stream(&endless[..500], 1000), Ok(None));
    assert_eq!(parse_stream(&endless, 1000), Err(SipError::TooLarge(1000)));
    assert_eq!(parse_datagram(b"\r\n\r\n", MAX), Err(SipError::Empty));
    assert_eq!(parse_datagram(b"hello world\r\n\r\n", MAX), Err(SipError::BadStartLine));
}

#[test]
fn hep_spec_example() {
    let bytes = sample("hep/hep3_spec_example.bin");
    let p = hep::decode(&bytes).unwrap();
    assert_eq!((p.ip_family, p.ip_proto, p.proto_type, p.capture_id), (Some(2), Some(17), Some(1), Some(228)));
    assert_eq!(p.src_ip, Some("212.202.0.1".parse().unwrap()));
    assert_eq!(p.dst_ip, Some("82.116.0.211".parse().unwrap()));
    assert_eq!((p.src_port, p.dst_port), (Some(12010), Some(5060)));
    assert_eq!((p.time_secs, p.time_usecs), (Some(1313440459), Some(120000)));
    assert_eq!(p.captured_at_ms(), Some(1_313_440_459_120));
    assert_eq!(p.payload, Some(&b"INVITE sip:bob"[..]));
}

#[test]
fn hep_ipv4_and_ipv6_samples() {
    let sip = sample("synthetic/bleg_invite_longform.sip");
    let bytes = sample("hep/hep3_sip_invite_ipv4.bin");
    let p = hep::decode(&bytes).unwrap();
    assert_eq!(p.src_ip, Some("203.0.113.10".parse().unwrap()));
    assert_eq!(p.dst_ip, Some("192.0.2.50".parse().unwrap()));
    assert_eq!((p.src_port, p.dst_port, p.capture_id, p.vlan), (Some(5060), Some(5060), Some(2001), Some(0)));
    assert_eq!(p.captured_at_ms(), Some(1_795_500_000_250));
    assert_eq!(p.auth_key, Some(&b"myHepPassword"[..]));
    assert!(p.has_auth_key(b"myHepPassword") && !p.has_auth_key(b"myHepPassworx"));
    assert_eq!(p.correlation_id, Some(&b"b1e9c2d4-5f60-4a7b-8c9d-0e1f2a3b4c5d"[..]));
    assert_eq!(p.node_name, Some(&b"pbx-site-1"[..]));
    assert_eq!(p.payload, Some(sip.as_slice()));

    let bytes = sample("hep/hep3_sip_invite_ipv6_vendorchunk.bin");
    let p = hep::decode(&bytes).unwrap();
    assert_eq!((p.ip_family, p.ip_proto), (Some(10), Some(6)));
    assert_eq!(p.src_ip, Some("2001:db8::10".parse().unwrap()));
    assert_eq!(p.dst_ip, Some("2001:db8::50".parse().unwrap()));
    assert_eq!((p.src_port, p.dst_port), (Some(40312), Some(5060)));
    assert_eq!(p.skipped_chunks, 1);
    assert_eq!(p.correlation_id, None);
    assert_eq!(p.payload, Some(sip.as_slice()));
}

#[test]
fn hep_tcp_stream_splits_at_the_length() {
    let bytes = sample("hep/hep3_tcp_stream_2pkts.bin");
    assert_eq!(hep::frame_len(&bytes, MAX), Ok(Some(1226)));
    assert_eq!(hep::frame_len(&bytes[1226..], MAX), Ok(Some(113)));
    assert!(hep::decode(&bytes[..1226]).is_ok() && hep::decode(&bytes[1226..]).is_ok());
    // The whole stream is not one packet.
    assert!(matches!(hep::decode(&bytes), Err(hep::HepError::BadLength { declared: 1226, .. })));
    for cut in 0..bytes.len() {
        let r = hep::frame_len(&bytes[..cut], MAX).unwrap();
        assert_eq!(r, if cut < 6 { None } else { Some(1226) }, "cut {cut}");
    }
}

#[test]
fn hep_malformed_packets_are_refused() {
    let good = sample("hep/hep3_spec_example.bin");
    assert_eq!(hep::decode(&good[..5]), Err(hep::HepError::Truncated));
    let mut eep = good.clone();
    eep[..4].copy_from_slice(b"EEP1");
    assert_eq!(hep::decode(&eep), Err(hep::HepError::BadMagic));
    assert_eq!(hep::frame_len(b"GET / HTTP/1.1", MAX), Err(hep::HepError::BadMagic));
    assert_eq!(hep::frame_len(b"GE", MAX), Err(hep::HepError::BadMagic));
    let mut short_chunk = good.clone();
    short_chunk[6 + 4..6 + 6].copy_from_slice(&[0, 5]); // first chunk length 5 < 6
    assert!(matches!(hep::decode(&short_chunk), Err(hep::HepError::BadChunk { .. })));
    let mut long_chunk = good.clone();
    long_chunk[6 + 4..6 + 6].copy_from_slice(&[0, 200]);
    assert!(matches!(hep::decode(&long_chunk), Err(hep::HepError::BadChunk { .. })));
    let wrong_size = hep::encode(&[(hep::chunk::SRC_PORT, &[1, 2, 3])]);
    assert_eq!(hep::decode(&wrong_size), Err(hep::HepError::BadChunkSize(hep::chunk::SRC_PORT)));
    assert!(matches!(hep::frame_len(b"HEP3\x00\x05", MAX), Err(hep::HepError::BadLength { declared: 5, .. })));
    assert!(matches!(hep::frame_len(b"HEP3\xff\xff", 1000), Err(hep::HepError::BadLength { declared: 65535, .. })));
}

fn core(key: Option<&str>) -> TapCore {
    TapCore::new(TapSettings {
        learner: LearnerConfig::default(),
        hep_auth_key: key.map(|k| k.as_bytes().to_vec()),
        max_message_bytes: MAX,
    })
}

fn updates(c: &mut TapCore) -> Vec<LegUpdate> {
    std::iter::from_fn(|| c.poll_update()).collect()
}

#[test]
fn tap_learns_the_leg_once_from_hep() {
    let bytes = sample("hep/hep3_sip_invite_ipv4.bin");
    let mut c = core(Some("myHepPassword"));
    c.handle_hep(UnixMillis(5), Transport::HepUdp, &bytes);
    // The proxy's second copy (what it forwarded) and a retransmission: nothing new.
    c.handle_hep(UnixMillis(6), Transport::HepUdp, &bytes);
    c.handle_hep(UnixMillis(7), Transport::HepTcp, &bytes);
    let u = updates(&mut c);
    assert_eq!(u.len(), 1);
    let LegUpdate::Learned(f) = &u[0] else { panic!("{u:?}") };
    assert_eq!(f.sip_call_id.as_deref(), Some("b1e9c2d4-5f60-4a7b-8c9d-0e1f2a3b4c5d"));
    assert_eq!(f.call_sid.map(|s| s.to_string()).as_deref(), Some(BLEG_CALL_SID));
    assert_eq!(f.parent_call_sid.map(|s| s.to_string()).as_deref(), Some(BLEG_PARENT));
    assert_eq!((f.from.as_deref(), f.to.as_deref()), (Some("15557654321"), Some("15551230100")));
    // The HEP capture time, not the receipt time.
    assert_eq!(f.started, Some(UnixMillis(1_795_500_000_250)));
    assert_eq!(c.stats().sip_messages, 3);

    // IPv6/TCP packet with a vendor chunk: same Call-ID, so already known.
    c.handle_hep(UnixMillis(8), Transport::HepUdp, &sample("hep/hep3_sip_invite_ipv6_vendorchunk.bin"));
    assert_eq!(c.stats().hep_unauthorized, 1, "no auth key in that one");
    let mut open = core(None);
    open.handle_hep(UnixMillis(8), Transport::HepUdp, &sample("hep/hep3_sip_invite_ipv6_vendorchunk.bin"));
    assert!(matches!(updates(&mut open).as_slice(), [LegUpdate::Learned(_)]));
}

#[test]
fn tap_refuses_bad_keys_and_counts_malformed_input() {
    let bytes = sample("hep/hep3_sip_invite_ipv4.bin");
    let mut c = core(Some("other"));
    c.handle_hep(UnixMillis(0), Transport::HepUdp, &bytes);
    c.handle_hep(UnixMillis(0), Transport::HepUdp, &bytes[..100]);
    c.handle_hep(UnixMillis(0), Transport::HepUdp, b"HEP3");
    // The spec example's payload is a truncated request line.
    let mut open = core(None);
    open.handle_hep(UnixMillis(0), Transport::HepUdp, &sample("hep/hep3_spec_example.bin"));
    open.handle_sip_datagram(UnixMillis(0), &sample("rfc4475/clerr.dat"));
    open.handle_sip_datagram(UnixMillis(0), b"\r\n\r\n");
    let rtcp = hep::encode(&[(hep::chunk::PROTO_TYPE, &[5]), (hep::chunk::PAYLOAD, b"\x80\xc8")]);
    open.handle_hep(UnixMillis(0), Transport::HepUdp, &rtcp);
    assert!(updates(&mut c).is_empty() && updates(&mut open).is_empty());
    let s = c.stats();
    assert_eq!((s.packets, s.hep_unauthorized, s.hep_malformed), (3, 1, 2));
    let s = open.stats();
    assert_eq!((s.packets, s.sip_malformed, s.hep_not_sip, s.sip_messages), (4, 2, 1, 0));
}

fn msg(start: &str, call_id: &str, cseq: &str, extra: &str) -> Vec<u8> {
    format!(
        "{start}\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:+15557654321@cpaas>;tag=a\r\n\
         To: <sip:+15551230100@pbx>\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn learner_follows_the_dialog() {
    let mut c = core(None);
    let invite = msg("INVITE sip:+15551230100@pbx SIP/2.0", "d1", "1 INVITE", "");
    c.handle_sip_datagram(UnixMillis(1), &invite);
    c.handle_sip_datagram(UnixMillis(2), &msg("SIP/2.0 100 Trying", "d1", "1 INVITE", ""));
    // The platform answers with the sids.
    c.handle_sip_datagram(
        UnixMillis(3),
        &msg("SIP/2.0 200 OK", "d1", "1 INVITE", &format!("X-Call-Sid: {BLEG_CALL_SID}\r\n")),
    );
    c.handle_sip_datagram(
        UnixMillis(3),
        &msg("SIP/2.0 200 OK", "d1", "1 INVITE", &format!("X-Call-Sid: {BLEG_CALL_SID}\r\n")),
    );
    c.handle_sip_datagram(UnixMillis(4), &msg("ACK sip:x@y SIP/2.0", "d1", "1 ACK", ""));
    c.handle_sip_datagram(UnixMillis(5), &msg("BYE sip:x@y SIP/2.0", "d1", "2 BYE", ""));
    c.handle_sip_datagram(UnixMillis(6), &msg("BYE sip:x@y SIP/2.0", "d1", "2 BYE", ""));
    // A call that fails, and a failure of a call we never saw.
    c.handle_sip_datagram(UnixMillis(7), &msg("INVITE sip:+15551230100@pbx SIP/2.0", "d2", "1 INVITE", ""));
    c.handle_sip_datagram(UnixMillis(8), &msg("SIP/2.0 486 Busy Here", "d2", "1 INVITE", ""));
    c.handle_sip_datagram(UnixMillis(8), &msg("SIP/2.0 486 Busy Here", "d3", "1 INVITE", ""));
    let kinds: Vec<String> = updates(&mut c)
        .iter()
        .map(|u| {
            let (k, f) = match u {
                LegUpdate::Learned(f) => ("learned", f),
                LegUpdate::Updated(f) => ("updated", f),
                LegUpdate::Ended(f) => ("ended", f),
            };
            format!(
                "{k} {} {}",
                f.sip_call_id.as_deref().unwrap_or("-"),
                f.call_sid.map_or("-".into(), |s| s.to_string())
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "learned d1 -".to_owned(),
            format!("updated d1 {BLEG_CALL_SID}"),
            "ended d1 -".to_owned(),
            "learned d2 -".to_owned(),
            "ended d2 -".to_owned(),
        ]
    );
}

/// Issue 9 item 12: a leg learned without a callSid is counted apart (it cannot bind until
/// the sids come), and still reported.
#[test]
fn a_leg_without_sids_is_counted_apart() {
    let mut c = core(None);
    c.handle_sip_datagram(UnixMillis(1), &msg("INVITE sip:+15551230100@pbx SIP/2.0", "n1", "1 INVITE", ""));
    let with_sid = format!("X-Call-Sid: {BLEG_CALL_SID}\r\n");
    c.handle_sip_datagram(UnixMillis(2), &msg("INVITE sip:+15551230100@pbx SIP/2.0", "n2", "1 INVITE", &with_sid));
    // The sids on the answer to the first: an update, not another leg without sids.
    c.handle_sip_datagram(UnixMillis(3), &msg("SIP/2.0 200 OK", "n1", "1 INVITE", &with_sid));
    assert_eq!(updates(&mut c).len(), 3);
    let s = c.stats();
    assert_eq!((s.leg_updates, s.legs_without_sid), (3, 1));
}

/// Issue 9 item 12: the learner forgets Call-IDs on its own timer, so its memory falls when
/// SIP stops coming (it used to forget only when the next message came).
#[test]
fn the_tap_forgets_dialogs_on_its_timer() {
    let mut c = TapCore::new(TapSettings {
        learner: LearnerConfig { dialog_ttl_ms: 1_000, ..LearnerConfig::default() },
        hep_auth_key: None,
        max_message_bytes: MAX,
    });
    assert_eq!(c.poll_timeout(), None);
    c.handle_sip_datagram(UnixMillis(0), &msg("INVITE sip:1@pbx SIP/2.0", "t1", "1 INVITE", ""));
    c.handle_sip_datagram(UnixMillis(500), &msg("INVITE sip:1@pbx SIP/2.0", "t2", "1 INVITE", ""));
    assert_eq!((c.dialogs(), c.poll_timeout()), (2, Some(UnixMillis(1_000))));
    c.handle_timeout(UnixMillis(1_000));
    assert_eq!((c.dialogs(), c.poll_timeout()), (1, Some(UnixMillis(1_500))));
    c.handle_timeout(UnixMillis(1_500));
    assert_eq!((c.dialogs(), c.poll_timeout()), (0, None));
}

#[test]
fn learner_bounds_its_memory() {
    let mut l = LegLearner::new(LearnerConfig { max_dialogs: 3, dialog_ttl_ms: 1_000, ..LearnerConfig::default() });
    for i in 0..10 {
        let bytes = msg("INVITE sip:1@pbx SIP/2.0", &format!("c{i}"), "1 INVITE", "");
        let m = parse_datagram(&bytes, MAX).unwrap();
        assert!(l.learn(UnixMillis(i), None, &m).is_some());
    }
    assert_eq!(l.dialogs(), 3);
    let bytes = msg("BYE sip:1@pbx SIP/2.0", "c9", "2 BYE", "");
    let m = parse_datagram(&bytes, MAX).unwrap();
    assert!(l.learn(UnixMillis(5_000), None, &m).is_some());
    assert_eq!(l.dialogs(), 1);
}

/// Issue 9 item 11: escaped characters in a URI user are the same characters (RFC 3261
/// §19.1.4): `+%344%31234567890` and `%2B441234567890` are the number 441234567890. An invalid
/// escape keeps the user as it is.
#[test]
fn percent_encoded_users_are_numbers() {
    assert_eq!(sip::as_number("+%344%31234567890").as_deref(), Some("441234567890"));
    assert_eq!(sip::as_number("%2B441234567890").as_deref(), Some("441234567890"));
    assert_eq!(sip::as_number("%2b44%2D1234").as_deref(), Some("441234"));
    assert_eq!(sip::as_number("+44%G1234"), None);
    assert_eq!(sip::as_number("+44123%4"), None);
    assert_eq!(sip::unescape_user("alice%40home"), "alice@home");
    assert_eq!(sip::unescape_user("bad%zz"), "bad%zz");
    assert_eq!(sip::unescape_user("not-utf8%FF"), "not-utf8%FF");

    let invite = b"INVITE sip:%2B15551230100@pbx SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
        From: <sip:+%31555%37654321@cpaas>;tag=a\r\nTo: <sip:+1555%3123%30100@pbx>\r\nCall-ID: esc1\r\n\
        CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let mut c = core(None);
    c.handle_sip_datagram(UnixMillis(1), invite);
    let bad = b"INVITE sip:+1555%G230100@pbx SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK2\r\n\
        From: <sip:+1555%7654321@cpaas>;tag=a\r\nTo: <sip:+1555%G230100@pbx>\r\nCall-ID: esc2\r\n\
        CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    c.handle_sip_datagram(UnixMillis(2), bad);
    let got: Vec<(Option<String>, Option<String>)> =
        updates(&mut c).into_iter().map(|u| (u.facts().from.clone(), u.facts().to.clone())).collect();
    assert_eq!(
        got,
        [
            (Some("15557654321".to_owned()), Some("15551230100".to_owned())),
            // Kept raw: the URIs as they were written.
            (Some("sip:+1555%7654321@cpaas".to_owned()), Some("sip:+1555%G230100@pbx".to_owned())),
        ]
    );
}

#[test]
fn config_defaults_and_unknown_keys() {
    let c: SipTapConfig = toml::from_str("hep_udp_listen = \"127.0.0.1:9060\"").unwrap();
    assert_eq!(c.call_sid_header, "X-Call-Sid");
    assert_eq!(c.hep_udp_listen, Some("127.0.0.1:9060".parse().unwrap()));
    assert!(
        toml::from_str::<SipTapConfig>("hep_port = 1").unwrap_err().to_string().contains("unknown field `hep_port`")
    );
}

/// A valid INVITE with the Call-ID and sid headers in randomly chosen spellings.
fn spelled_invite() -> impl Strategy<Value = (Vec<u8>, String)> {
    ("[a-zA-Z0-9.!%*_+`'~-]{1,30}(@[a-z0-9.]{1,10})?", any::<[bool; 6]>()).prop_map(|(call_id, f)| {
        let cid_name = if f[0] { "i" } else if f[1] { "CALL-id" } else { "Call-ID" };
        let colon = if f[2] { " \t: " } else { ": " };
        let cid_value = if f[3] { format!("\r\n  {call_id}") } else { call_id.clone() };
        let eol = if f[4] { "\n" } else { "\r\n" };
        let sid_name = if f[5] { "x-CALL-sid" } else { "X-Call-Sid" };
        let text = format!(
            "INVITE sip:+1555@pbx SIP/2.0{eol}v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1, SIP/2.0/TCP h{eol}f: <sip:a@b>;tag=1{eol}\
             t: <sip:c@d>{eol}{cid_name}{colon}{cid_value}{eol}CSeq: 1 INVITE{eol}{sid_name}: {BLEG_CALL_SID}{eol}l: 4{eol}{eol}bodyEXTRA"
        );
        (text.into_bytes(), call_id)
    })
}

proptest! {
    #[test]
    fn any_spelling_reads_the_same((bytes, call_id) in spelled_invite()) {
        let m = parse_datagram(&bytes, MAX).unwrap();
        prop_assert_eq!(m.call_id(), call_id.as_str());
        prop_assert_eq!(m.header("X-Call-Sid"), Some(BLEG_CALL_SID));
        prop_assert_eq!(m.body, b"body");
        prop_assert_eq!(m.vias().unwrap().len(), 2);
        // On a stream the same bytes give the same message, and the rest stays unread.
        let s = parse_stream(&bytes, MAX).unwrap().unwrap();
        prop_assert_eq!(s.consumed, bytes.len() - 5);
    }

    #[test]
    fn escaped_users_read_as_written(user in "[+0-9a-zA-Z.()-]{0,24}", escape in prop::collection::vec(any::<bool>(), 24), junk in "[%0-9a-zA-Z]{0,12}") {
        // Escaping any of the characters changes nothing (RFC 3261 §19.1.4) ...
        let escaped: String = user
            .chars()
            .zip(escape.iter().chain(std::iter::repeat(&false)))
            .map(|(c, &e)| if e { format!("%{:02X}", c as u32) } else { c.to_string() })
            .collect();
        prop_assert_eq!(sip::unescape_user(&escaped), user.as_str());
        prop_assert_eq!(sip::as_number(&escaped), sip::as_number(&user));
        // ... and anything else is kept or decoded, never lost or panicked over.
        let out = sip::unescape_user(&junk);
        prop_assert!(out.len() <= junk.len());
    }

    #[test]
    fn sip_reader_never_panics_and_stays_in_bounds(bytes in prop::collection::vec(any::<u8>(), 0..600), stream in any::<bool>()) {
        let framing = if stream { Framing::Stream } else { Framing::Datagram };
        let r = match framing { Framing::Stream => parse_stream(&bytes, 400).map(|o| o.map(|m| (m.consumed, m.body.len()))), Framing::Datagram => parse_datagram(&bytes, 400).map(|m| Some((m.consumed, m.body.len()))) };
        if let Ok(Some((consumed, body))) = r {
            prop_assert!(consumed <= bytes.len() && body <= consumed);
        }
    }

    #[test]
    fn hep_round_trip_and_stream_framing(payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..5), cut in any::<prop::sample::Index>()) {
        let packets: Vec<Vec<u8>> = payloads.iter().map(|p| hep::encode(&[(hep::chunk::PROTO_TYPE, &[1]), (hep::chunk::SRC_PORT, &[0x13, 0xc4]), (hep::chunk::PAYLOAD, p)])).collect();
        for (p, payload) in packets.iter().zip(&payloads) {
            let d = hep::decode(p).unwrap();
            prop_assert_eq!(d.payload, Some(payload.as_slice()));
            prop_assert_eq!(d.src_port, Some(5060));
        }
        // Concatenated and delivered in two reads cut anywhere: the same packets come out.
        let stream: Vec<u8> = packets.concat();
        let cut = cut.index(stream.len() + 1);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in [&stream[..cut], &stream[cut..]] {
            buf.extend_from_slice(piece);
            while let Some(len) = hep::frame_len(&buf, MAX).unwrap() {
                if buf.len() < len { break; }
                out.push(buf.drain(..len).collect::<Vec<u8>>());
            }
        }
        prop_assert_eq!(out, packets);
    }

    #[test]
    fn hep_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut with_header = b"HEP3".to_vec();
        with_header.extend_from_slice(&u16::try_from(bytes.len() + 6).unwrap().to_be_bytes());
        with_header.extend_from_slice(&bytes);
        if let Ok(p) = hep::decode(&with_header) {
            prop_assert!(p.payload.is_none_or(|x| x.len() < with_header.len()));
        }
        let _ = hep::decode(&bytes);
    }
}
