//! The tokio layer on loopback: HEP over UDP and TCP, raw SIP over UDP, into the channel;
//! idle, dripping and garbage TCP streams closed (and counted), one source held to its share
//! while a real capture agent still gets through.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use correlation::LegUpdate;
use sip_tap::{SipTap, SipTapConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
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
    // Garbage on the stream closes that connection only, counted.
    tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert_closed(&mut tcp).await;

    let s = stats.stats();
    assert_eq!((s.hep_unauthorized, s.leg_updates, s.tcp_streams_lost), (1, 3, 1));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn bind_errors_name_the_key() {
    let taken = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let config = SipTapConfig { hep_udp_listen: Some(taken.local_addr().unwrap()), ..SipTapConfig::default() };
    let err = SipTap::bind(config).await.unwrap_err();
    assert_eq!(err.key(), Some("hep_udp_listen"));
    assert!(err.to_string().starts_with("127.0.0.1:"), "{err}");
    let config = SipTapConfig { hep_auth_key_file: Some("/nonexistent/hep.key".into()), ..SipTapConfig::default() };
    let err = SipTap::bind(config).await.unwrap_err();
    assert_eq!(err.key(), Some("hep_auth_key_file"));
    assert!(err.to_string().starts_with("/nonexistent/hep.key:"), "{err}");
}

/// A tap with only HEP over TCP, as `edit` configures it.
async fn tcp_tap(edit: impl FnOnce(&mut SipTapConfig)) -> Tap {
    let mut config = SipTapConfig { hep_tcp_listen: Some("127.0.0.1:0".parse().unwrap()), ..SipTapConfig::default() };
    edit(&mut config);
    let tap = SipTap::bind(config).await.unwrap();
    let addr = tap.hep_tcp_addr().unwrap();
    let stats = tap.stats_handle();
    let (tx, rx) = mpsc::channel(16);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(tap.run(tx, async move {
        let _ = stopped.await;
    }));
    Tap { addr, stats, rx, stop, server }
}

struct Tap {
    addr: SocketAddr,
    stats: sip_tap::StatsHandle,
    rx: mpsc::Receiver<LegUpdate>,
    stop: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), sip_tap::SipTapError>>,
}

impl Tap {
    async fn finish(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.server).await.unwrap().unwrap().unwrap();
    }
}

/// A connection from `source` (Linux routes all of 127/8 to the loopback interface).
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// The tap closes `stream` (end of stream or reset) before a bound that only keeps a broken
/// build from hanging (the idle timeouts under test are 1 s).
async fn assert_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the tap did not close the connection");
}

/// A HEP packet carrying a B-leg INVITE with Call-ID `call_id`.
fn invite_packet(call_id: &str) -> Vec<u8> {
    let sip = format!(
        "INVITE sip:+15551230100@pbx SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.50;branch=z9hG4bK-{call_id}\r\n\
         From: <sip:+15557654321@cpaas>;tag=a\r\nTo: <sip:+15551230100@pbx>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
         X-Call-Sid: 7c1f0d2e-9a4b-4c3d-8e5f-6a7b8c9d0e1f\r\nContent-Length: 0\r\n\r\n"
    );
    sip_tap::hep::encode(&[
        (sip_tap::hep::chunk::PROTO_TYPE, &[1]),
        (sip_tap::hep::chunk::IP_PROTO, &[6]),
        (sip_tap::hep::chunk::PAYLOAD, sip.as_bytes()),
    ])
}

/// Issue 9 item 9: a silent connection, and one that drips a packet a byte at a time, are
/// closed by the idle timeout (no complete packet within it); a capture agent is served.
#[tokio::test]
async fn idle_and_dripping_hep_streams_are_closed() {
    let mut tap = tcp_tap(|c| c.tcp_idle_timeout_secs = 1).await;
    let mut silent = TcpStream::connect(tap.addr).await.unwrap();
    let mut drip = TcpStream::connect(tap.addr).await.unwrap();
    let packet = invite_packet("drip@cpaas");
    let dripping = async {
        // At most one byte every 200 ms: the packet would take minutes.
        for byte in &packet {
            if drip.write_all(std::slice::from_ref(byte)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let closed = tokio::time::timeout(Duration::from_secs(8), dripping).await;
    assert!(closed.is_ok(), "the dripping connection was not closed");
    assert_closed(&mut silent).await;
    let mut agent = TcpStream::connect(tap.addr).await.unwrap();
    agent.write_all(&invite_packet("agent@cpaas")).await.unwrap();
    assert_eq!(call_id(&next(&mut tap.rx).await), "agent@cpaas");
    assert_eq!(tap.stats.stats().tcp_streams_lost, 0, "idle is not garbage");
    tap.finish().await;
}

/// Issue 9 item 9: one source holds the most connections it may (silent ones, kept: the idle
/// timeout is long here); one more from it is closed at once; a capture agent from another
/// address connects and its leg is learned.
#[tokio::test]
async fn a_capture_agent_gets_through_while_one_source_holds_its_maximum() {
    let mut tap = tcp_tap(|c| {
        c.max_tcp_connections = 4;
        c.max_tcp_connections_per_source = 2;
        c.tcp_idle_timeout_secs = 600;
    })
    .await;
    let held = [connect_from("127.0.0.1", tap.addr).await, connect_from("127.0.0.1", tap.addr).await];
    let mut third = connect_from("127.0.0.1", tap.addr).await;
    assert_closed(&mut third).await;
    let mut agent = connect_from("127.0.0.2", tap.addr).await;
    agent.write_all(&invite_packet("agent2@cpaas")).await.unwrap();
    assert_eq!(call_id(&next(&mut tap.rx).await), "agent2@cpaas");
    drop(held);
    tap.finish().await;
}

/// Issue 9 item 9: silent connections from several sources fill every place; the agent's
/// connection waits in the accept queue and is served once the idle timeout frees a place.
#[tokio::test]
async fn at_the_global_cap_an_agent_is_served_when_an_idle_connection_goes() {
    let mut tap = tcp_tap(|c| {
        c.max_tcp_connections = 2;
        c.max_tcp_connections_per_source = 1;
        c.tcp_idle_timeout_secs = 1;
    })
    .await;
    let mut silent = [connect_from("127.0.0.3", tap.addr).await, connect_from("127.0.0.4", tap.addr).await];
    let mut agent = connect_from("127.0.0.2", tap.addr).await;
    agent.write_all(&invite_packet("queued@cpaas")).await.unwrap();
    assert_eq!(call_id(&next(&mut tap.rx).await), "queued@cpaas");
    for s in &mut silent {
        assert_closed(s).await;
    }
    tap.finish().await;
}

#[tokio::test]
async fn connection_limits_are_checked() {
    let bad = SipTapConfig { max_tcp_connections: 4, max_tcp_connections_per_source: 5, ..SipTapConfig::default() };
    let err = SipTap::bind(bad).await.unwrap_err();
    assert_eq!(err.to_string(), "must be between 1 and 4 connections (at most max_tcp_connections), not 5");
    assert_eq!(err.key(), Some("max_tcp_connections_per_source"));
    let bad = SipTapConfig { tcp_idle_timeout_secs: 0, ..SipTapConfig::default() };
    assert_eq!(SipTap::bind(bad).await.unwrap_err().to_string(), "must be between 1 and 86400 seconds, not 0");
    let bad = SipTapConfig { max_tcp_connections: 0, ..SipTapConfig::default() };
    assert!(bad.validate().unwrap_err().to_string().starts_with("must be between 1 and 4096"));
}
