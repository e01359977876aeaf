//! Real SIP peers: SIPp (Debian `sip-tester`) places two B-leg calls carrying the platform's
//! `X-Call-Sid`/`X-Parent-Call-Sid` through Kamailio (Debian `kamailio`) to a SIPp UAS; the
//! proxy's `siptrace` mirrors every message it receives and sends as HEPv3 (with an auth key)
//! to our tap on 127.0.0.1. The tap must learn each leg exactly once despite the proxy's
//! double view, and end it on the BYE.
//!
//! Everything runs on loopback, is bounded by timeouts, and stops its processes itself. When
//! `sipp` or `kamailio` is missing the test fails and says how to install them.

#![allow(clippy::unwrap_used)]

use std::net::UdpSocket as StdUdp;
use std::time::Duration;

use correlation::LegUpdate;
use pbx_sim::sip_peers::{BLEG_CALLS, dump_logs as dump, place_bleg_calls};
use sip_tap::{SipTap, SipTapConfig, hep};
use tokio::sync::{mpsc, oneshot};

const HEP_KEY: &str = "kamailio-test-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_calls_through_kamailio_are_learned_once_each() {
    let dir = std::env::temp_dir().join(format!("sip-tap-kamailio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("hep.key");
    std::fs::write(&key_file, HEP_KEY).unwrap();

    // The tap, on an ephemeral loopback port, requiring Kamailio's auth key.
    let config = SipTapConfig {
        hep_udp_listen: Some("127.0.0.1:0".parse().unwrap()),
        hep_auth_key_file: Some(key_file),
        ..SipTapConfig::default()
    };
    let tap = SipTap::bind(config).await.unwrap();
    let hep_addr = tap.hep_udp_addr().unwrap();
    let stats = tap.stats_handle();
    let (tx, mut rx) = mpsc::channel(64);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(tap.run(tx, async move {
        let _ = stopped.await;
    }));

    // Two B-leg calls through Kamailio; returns once the proxy has stopped, every copy sent.
    let calls_dir = dir.clone();
    tokio::task::spawn_blocking(move || place_bleg_calls(&calls_dir, hep_addr, HEP_KEY))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));

    // A sentinel after everything Kamailio sent: once it is through, nothing else is coming.
    let sentinel =
        b"INVITE sip:1@x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-s\r\nFrom: <sip:s@x>;tag=s\r\n\
        To: <sip:1@x>\r\nCall-ID: sentinel@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let packet = hep::encode(&[(hep::chunk::AUTH_KEY, HEP_KEY.as_bytes()), (hep::chunk::PAYLOAD, sentinel)]);
    StdUdp::bind("127.0.0.1:0").unwrap().send_to(&packet, hep_addr).unwrap();
    let mut got = Vec::new();
    loop {
        let u = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no sentinel; got {got:#?}{}", dump(&dir)))
            .unwrap();
        if u.facts().sip_call_id.as_deref() == Some("sentinel@test") {
            break;
        }
        got.push(u);
    }

    let lines: Vec<String> = got
        .iter()
        .map(|u| {
            let (kind, f) = match u {
                LegUpdate::Learned(f) => ("learned", f),
                LegUpdate::Updated(f) => ("updated", f),
                LegUpdate::Ended(f) => ("ended", f),
            };
            let sid = |s: Option<uuid::Uuid>| s.map_or("-".to_owned(), |s| s.to_string());
            format!(
                "{kind} {} {} {} {} {}",
                f.sip_call_id.as_deref().unwrap_or("-"),
                sid(f.call_sid),
                sid(f.parent_call_sid),
                f.from.as_deref().unwrap_or("-"),
                f.to.as_deref().unwrap_or("-")
            )
        })
        .collect();
    let expected: Vec<String> = BLEG_CALLS
        .iter()
        .flat_map(|c| {
            [
                format!("learned {} {} {} {} {}", c.sip_call_id, c.call_sid, c.parent_call_sid, c.caller, c.did),
                format!("ended {} - - - -", c.sip_call_id),
            ]
        })
        .collect();
    assert_eq!(lines, expected, "{}", dump(&dir));
    // The capture time of a learned leg is Kamailio's HEP timestamp.
    assert!(got.iter().all(|u| !matches!(u, LegUpdate::Learned(f) if f.started.is_none())));
    let s = stats.stats();
    // Each call: INVITE, 100, INVITE, 180 x2, 200 x2, ACK, BYE x2, 200 x2 = 12 messages, more
    // if a slow machine made SIPp retransmit (which dedup absorbs: the updates above are exact).
    assert!(s.sip_messages > 2 * 12, "{s:?}{}", dump(&dir));
    assert_eq!((s.hep_unauthorized, s.hep_malformed, s.sip_malformed), (0, 0, 0));

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
