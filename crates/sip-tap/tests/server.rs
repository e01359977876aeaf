//! The tokio layer on loopback: HEP over UDP and TCP, raw SIP over UDP, into the channel.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use correlation::LegUpdate;
use sip_tap::{SipTap, SipTapConfig};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};

fn sample(path: &str) -> Vec<u8> {
    std::fs::read(format!("{}/../../testdata/samples/sip/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

async fn next(rx: &mut mpsc::Receiver<LegUpdate>) -> LegUpdate {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("a leg update within 10 s").unwrap()
}

fn call_id(u: &LegUpdate) -> String {
    u.facts().sip_call_id.clone().unwrap()
}

#[tokio::test]
async fn hep_udp_tcp_and_raw_sip_on_loopback() {
    let dir = std::env::temp_dir().join(format!("sip-tap-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("hep.key");
    std::fs::write(&key_file, "myHepPassword\n").unwrap();
    let loopback = "127.0.0.1:0".parse().unwrap();
    let config = SipTapConfig {
        hep_udp_listen: Some(loopback),
        hep_tcp_listen: Some(loopback),
        sip_udp_listen: Some(loopback),
        hep_auth_key_file: Some(key_file),
        ..SipTapConfig::default()
    };
    let tap = SipTap::bind(config).await.unwrap();
    let (hep_udp, hep_tcp, sip_udp) =
        (tap.hep_udp_addr().unwrap(), tap.hep_tcp_addr().unwrap(), tap.sip_udp_addr().unwrap());
    let stats = tap.stats_handle();
    let (tx, mut rx) = mpsc::channel(16);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(tap.run(tx, async move {
        let _ = stopped.await;
    }));

    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // A packet without the key first: refused, nothing comes out for it.
    client.send_to(&sample("hep/hep3_sip_invite_ipv6_vendorchunk.bin"), hep_udp).await.unwrap();
    client.send_to(&sample("hep/hep3_sip_invite_ipv4.bin"), hep_udp).await.unwrap();
    let u = next(&mut rx).await;
    assert!(matches!(u, LegUpdate::Learned(_)));
    assert_eq!(call_id(&u), "b1e9c2d4-5f60-4a7b-8c9d-0e1f2a3b4c5d");

    // Raw SIP: the compact, folded B-leg INVITE.
    client.send_to(&sample("synthetic/bleg_invite_compact_folded.sip"), sip_udp).await.unwrap();
    let u = next(&mut rx).await;
    assert_eq!(call_id(&u), "c2fac2d4-5f60-4a7b-8c9d-0e1f2a3b4c5d");
    assert_eq!(u.facts().parent_call_sid.unwrap().to_string(), "2a3b4c5d-6e7f-4809-9a1b-2c3d4e5f6a7b");

    // HEP over TCP, written in small pieces: a BYE for the first leg (with the key).
    let bye = b"BYE sip:gw1@203.0.113.10 SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.50;branch=z9hG4bK-bye\r\n\
        From: <sip:+15551230100@pbx.example.com>;tag=pbx1\r\nTo: <sip:+15557654321@cpaas>;tag=cp-7f3a9c\r\n\
        Call-ID: b1e9c2d4-5f60-4a7b-8c9d-0e1f2a3b4c5d\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
    let packet = sip_tap::hep::encode(&[
        (sip_tap::hep::chunk::AUTH_KEY, b"myHepPassword"),
        (sip_tap::hep::chunk::PROTO_TYPE, &[1]),
        (sip_tap::hep::chunk::IP_PROTO, &[6]),
        (sip_tap::hep::chunk::PAYLOAD, bye),
    ]);
    let mut tcp = TcpStream::connect(hep_tcp).await.unwrap();
    for piece in packet.chunks(50) {
        tcp.write_all(piece).await.unwrap();
        tcp.flush().await.unwrap();
    }
    let u = next(&mut rx).await;
    assert!(matches!(u, LegUpdate::Ended(_)), "{u:?}");
    assert_eq!(call_id(&u), "b1e9c2d4-5f60-4a7b-8c9d-0e1f2a3b4c5d");
    // Garbage on the stream closes that connection only.
    tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();

    let s = stats.stats();
    assert_eq!((s.hep_unauthorized, s.leg_updates), (1, 3));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn bind_errors_name_the_key() {
    let taken = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let config = SipTapConfig { hep_udp_listen: Some(taken.local_addr().unwrap()), ..SipTapConfig::default() };
    let err = SipTap::bind(config).await.unwrap_err().to_string();
    assert!(err.starts_with("hep_udp_listen = 127.0.0.1:"), "{err}");
    let config = SipTapConfig { hep_auth_key_file: Some("/nonexistent/hep.key".into()), ..SipTapConfig::default() };
    let err = SipTap::bind(config).await.unwrap_err().to_string();
    assert!(err.starts_with("hep_auth_key_file = /nonexistent/hep.key:"), "{err}");
}
