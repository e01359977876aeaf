//! Issue 11: the 3CX correlation recipes end to end. 3CX shows no SIP Call-ID, so a 3CX call
//! is bound to the platform's leg by what it does show (`docs/correlation.md`, "3CX"): a token
//! in the caller's display name, a DID from a pool, or the caller and DID a SIP tap in front of
//! 3CX saw on the B leg's INVITE. Each runs the real binary against `pbx-sim 3cx` over
//! loopback; the legs come from signed announcements or from SIPp through Kamailio (HEPv3).

#![allow(clippy::unwrap_used)] // Tests unwrap what they built themselves.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use generic_event::{GenericEvent, Status};
use pbx_sim::announce::{BLeg, announce, b_leg_event};
use pbx_sim::conformance::{ListenerRig, PbxBlock};
use pbx_sim::sip_peers::place_bleg_calls_from;
use pbx_sim::threecx::{CallSpec, Scenario, SimConfig, ThreeCxSim};
use uuid::Uuid;
use webhook_signature::SigningSecret;

const CLIENT: &str = "pbxlistener";
const SECRET: &str = "correlation-3cx-key";

fn legs_secret() -> SigningSecret {
    SigningSecret::from_bytes(b"pbx-listener 3cx legs secret 0001".to_vec())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The simulator and the daemon with `sections` (legs, correlation, sip_tap).
async fn rig(sections: &str) -> (ThreeCxSim, ListenerRig) {
    let sim = ThreeCxSim::start("127.0.0.1:0".parse().unwrap(), SimConfig::fast(CLIENT, SECRET)).await.unwrap();
    let keys = format!(
        "url = {:?}\nclient_id = {CLIENT:?}\nclient_secret_file = \"3cx-secret\"\nextensions = [\"101\", \"102\", \"103\"]\n\
         reconnect_min_ms = 100\nreconnect_max_secs = 1\nremoval_grace_ms = 300\n",
        sim.url()
    );
    let block = PbxBlock::new("sim", "3cx", &keys);
    let mut rig = ListenerRig::prepare(env!("CARGO_BIN_EXE_pbx-listener").as_ref(), &[block], sections).await.unwrap();
    rig.write_file("3cx-secret", SECRET).unwrap();
    rig.write_file("legs-secret", &legs_secret().to_whsec()).unwrap();
    rig.write_file("hep-key", "3cx-hep-key").unwrap();
    rig.spawn().unwrap();
    tokio::time::timeout(rig.limit(), sim.wait_for_snapshots(1)).await.expect("the daemon takes a snapshot");
    (sim, rig)
}

fn legs_section(port: u16) -> String {
    format!("[legs]\nlisten = \"127.0.0.1:{port}\"\nsigning_secret_files = [\"legs-secret\"]\n\n")
}

fn leg(n: u128, from: &str, to: &str, tags: &[(&str, &str)]) -> BLeg {
    BLeg {
        account_id: Uuid::from_u128(0x9539ee93_64c8_802b_360b_c6f2f7cf2507),
        account_name: "Conformance".into(),
        call_sid: Uuid::from_u128(0x7c1f0d2e_9a4b_4c3d_8e5f_000000000000 + n),
        parent_call_sid: Uuid::from_u128(0x2a3b4c5d_6e7f_4809_9a1b_000000000000 + n),
        sip_call_id: None,
        from: from.into(),
        to: to.into(),
        meta: tags.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
    }
}

/// Announces `leg`, retrying while the leg endpoint is still starting (bounded).
async fn announce_leg(port: u16, leg: &BLeg, limit: std::time::Duration) {
    let url = format!("http://127.0.0.1:{port}/legs");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let event = b_leg_event(leg, Status::Ringing, now);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match announce(&url, &[legs_secret()], std::slice::from_ref(&event)).await {
            Ok((200, _)) => return,
            Ok((status, body)) => panic!("the leg endpoint answered {status}: {body}"),
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            Err(e) => panic!("the leg endpoint never answered: {e:#}"),
        }
    }
}

/// The events of each PBX call, after the daemon stopped.
async fn events_by_call(rig: &mut ListenerRig, n: usize) -> BTreeMap<String, Vec<GenericEvent>> {
    rig.wait_for_events(n).await.unwrap();
    rig.stop().unwrap();
    let mut out: BTreeMap<String, Vec<GenericEvent>> = BTreeMap::new();
    for e in rig.events().unwrap() {
        out.entry(e.meta["pbxCallId"].clone()).or_default().push(e);
    }
    out
}

fn assert_bound(events: &[GenericEvent], leg: &BLeg, method: &str) {
    assert!(!events.is_empty());
    for e in events {
        assert_eq!(e.call_sid, Some(leg.call_sid), "{e:?}");
        assert_eq!(e.parent_call_sid, Some(leg.parent_call_sid), "{e:?}");
        assert_eq!(e.meta["correlation"], method, "{e:?}");
        assert_eq!((e.from.as_str(), e.to.as_str()), (leg.from.as_str(), leg.to.as_str()), "the B leg's numbers");
    }
}

/// Recipe 1: the platform puts a short token in the B leg's From display name (3CX maps it to
/// `party_caller_name`) and announces it in the leg's `meta.correlationToken`. The numbers
/// differ from the leg's (3CX rewrote the caller), so only the token can bind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_the_display_name() {
    let port = free_port();
    let sections = format!(
        "{}[correlation]\ntoken_pattern = 'CSID=(?P<token>[0-9a-f]{{8}})'\ntoken_fields = [\"caller-name\"]\n",
        legs_section(port)
    );
    let (sim, mut rig) = rig(&sections).await;
    let leg = leg(1, "441000000001", "441000000002", &[("correlationToken", "a1b2c3d4")]);
    announce_leg(port, &leg, rig.limit()).await;
    let spec = CallSpec {
        caller: "447700900111".into(),
        caller_name: "CSID=a1b2c3d4 Jane".into(),
        did: "441234567890".into(),
    };
    sim.play(&Scenario::QueueAnswer(spec)).await;
    let by_call = events_by_call(&mut rig, 5).await;
    assert_eq!(by_call.len(), 1, "{by_call:#?}");
    assert_bound(by_call.values().next().unwrap(), &leg, "token");
    sim.stop().await;
}

/// Recipe 2: each platform call dials a DID from a pool routed to the monitored extensions
/// (3CX's `party_did`); the pool index is the token, announced with the leg.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_did_from_a_pool() {
    let port = free_port();
    let sections = format!(
        "{}[correlation]\ntoken_pattern = '(?P<token>\\d{{2}})$'\ntoken_fields = [\"dialled-number\"]\n",
        legs_section(port)
    );
    let (sim, mut rig) = rig(&sections).await;
    let first = leg(2, "441000000003", "441000000004", &[("correlationToken", "41")]);
    let second = leg(3, "441000000003", "441000000004", &[("correlationToken", "42")]);
    announce_leg(port, &first, rig.limit()).await;
    announce_leg(port, &second, rig.limit()).await;
    // The same caller twice, to two DIDs of the pool: only the DID tells them apart.
    let spec = |did: &str| CallSpec { caller: "447700900222".into(), caller_name: "Bob".into(), did: did.into() };
    sim.play(&Scenario::Transfer(spec("441234567842"))).await;
    sim.play(&Scenario::CallerAbandon(spec("441234567841"))).await;
    let by_call = events_by_call(&mut rig, 7 + 4).await;
    assert_eq!(by_call.len(), 2, "{by_call:#?}");
    let calls: Vec<&Vec<GenericEvent>> = by_call.values().collect();
    assert_bound(calls[0], &second, "token");
    assert_bound(calls[1], &first, "token");
    sim.stop().await;
}

/// Recipe 3: a SIP tap in front of 3CX. SIPp places the B legs through Kamailio, whose
/// siptrace mirrors them to the daemon (HEPv3); the tap learns each leg's caller, DID and sids
/// from the INVITE. 3CX shows the same caller and DID at about the same time: bound by number
/// and time (a 5 s window here: Kamailio's start-up sits between the two in this test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sip_tap_in_front_of_3cx() {
    let hep_port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let sections = format!(
        "[sip_tap]\nhep_udp_listen = \"127.0.0.1:{hep_port}\"\nhep_auth_key_file = \"hep-key\"\n\n\
         [correlation]\nnumber_window_ms = 5000\nwait_for_leg_ms = 20000\n"
    );
    let (sim, mut rig) = rig(&sections).await;
    let peers = rig.dir().join("peers");
    std::fs::create_dir_all(&peers).unwrap();
    let csv = peers.join("calls.csv");
    let calls = [
        (
            "7c1f0d2e-9a4b-4c3d-8e5f-6a7b8c9d0e11",
            "2a3b4c5d-6e7f-4809-9a1b-2c3d4e5f6a11",
            "447700900301",
            "441234567801",
        ),
        (
            "7c1f0d2e-9a4b-4c3d-8e5f-6a7b8c9d0e12",
            "2a3b4c5d-6e7f-4809-9a1b-2c3d4e5f6a12",
            "447700900302",
            "441234567802",
        ),
    ];
    let mut text = "SEQUENTIAL\n".to_owned();
    for (sid, parent, caller, did) in calls {
        text.push_str(&format!("{sid};{parent};{caller};{did};\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let hep = SocketAddr::from(([127, 0, 0, 1], hep_port));
    // The platform dials while 3CX shows the calls: both within the number window.
    let sipp = tokio::task::spawn_blocking(move || place_bleg_calls_from(&peers, hep, "3cx-hep-key", &csv, 2));
    for (i, (_, _, caller, did)) in calls.iter().enumerate() {
        let spec = CallSpec { caller: (*caller).into(), caller_name: format!("SIPp {i}"), did: (*did).into() };
        sim.play(&Scenario::QueueAnswer(spec)).await;
    }
    sipp.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    let by_call = events_by_call(&mut rig, 10).await;
    assert_eq!(by_call.len(), 2, "{by_call:#?}");
    for (events, (sid, parent, caller, did)) in by_call.values().zip(calls) {
        for e in events {
            assert_eq!(e.call_sid.map(|u| u.to_string()).as_deref(), Some(sid), "{e:?}");
            assert_eq!(e.parent_call_sid.map(|u| u.to_string()).as_deref(), Some(parent), "{e:?}");
            assert_eq!(e.meta["correlation"], "number-time", "{e:?}");
            assert_eq!((e.from.as_str(), e.to.as_str()), (caller, did), "{e:?}");
        }
    }
    sim.stop().await;
}
