//! Avaya IP Office R11 through the conformance suite: the real `pbx-listener` binary reads the
//! DevLink3 simulator over loopback and delivers to the platform receiver; each scenario's
//! Level 3 sequence per extension is exactly what the contract says, and the contract's rules
//! hold (`pbx_sim::conformance`).

#![allow(clippy::unwrap_used)] // Tests unwrap what they built themselves.

use pbx_sim::avaya_r11::{AvayaSim, CallSpec, Scenario, SimConfig};
use pbx_sim::conformance::{Conformance, ListenerRig, PbxBlock, SequenceKey};

const USER: &str = "conformance";
const PASSWORD: &str = "conformance-password";

/// A DevLink3 simulator and the daemon reading it, subscribed and past its first snapshot.
async fn rig() -> (AvayaSim, ListenerRig) {
    let sim = AvayaSim::start("127.0.0.1:0".parse().unwrap(), SimConfig::fast(USER, PASSWORD)).await.unwrap();
    let keys = format!(
        "host = \"127.0.0.1\"\nport = {}\nusername = {USER:?}\npassword_file = \"avaya-password\"\n\
         reconnect_min_ms = 100\nreconnect_max_secs = 1\nresync_settle_ms = 200",
        sim.addr().port()
    );
    let block = PbxBlock::new("sim", "avaya-r11", &keys);
    let mut rig = ListenerRig::prepare(env!("CARGO_BIN_EXE_pbx-listener").as_ref(), &[block], "").await.unwrap();
    rig.write_file("avaya-password", PASSWORD).unwrap();
    rig.spawn().unwrap();
    tokio::time::timeout(rig.limit(), sim.wait_for_subscriptions(1)).await.expect("the daemon subscribes");
    (sim, rig)
}

fn spec(n: u64) -> CallSpec {
    CallSpec {
        sip_call_id: format!("conformance-{n}@platform.example"),
        caller: format!("44770090013{n}"),
        did: "441234567890".into(),
        caller_name: format!("Caller {n}"),
    }
}

/// Plays `scenario`, waits for what `expected` adds up to, stops the daemon, and checks.
async fn conforms(scenario: Scenario, expected: Conformance) {
    let (sim, mut rig) = rig().await;
    sim.play(&scenario).await;
    let events = rig.wait_for_events(expected.event_count()).await.unwrap();
    rig.stop().unwrap();
    // Nothing more arrived after the expected count: a phantom event would show here.
    let after = rig.events().unwrap();
    assert_eq!(after.len(), events.len(), "more events than expected arrived");
    expected.check(&after).assert_ok();
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hunt_group_answered_by_one_of_three() {
    conforms(
        Scenario::HuntGroupAnswer(spec(1)),
        Conformance::new(SequenceKey::Extension)
            .expect("4001", "ringing, disconnected:answered-elsewhere")
            .expect("4002", "ringing, connected, disconnected:normal")
            .expect("4003", "ringing, disconnected:answered-elsewhere"),
    )
    .await;
}

/// Issue 9, item 3: `meta.queue` is what `docs/events.md` says: the hunt group the call came
/// through, on every event of a hunt-group call (it was set only while the call was queued).
/// The page's hunt-group example and what the listener sends carry the same meta keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hunt_group_calls_carry_meta_queue_as_the_contract_page_shows() {
    let page = include_str!("../docs/events.md");
    let example = page.split("<!-- hunt-group example").nth(1).unwrap().split("```json").nth(1).unwrap();
    let example: generic_event::GenericEvent = serde_json::from_str(example.split("```").next().unwrap()).unwrap();
    let (sim, mut rig) = rig().await;
    sim.play(&Scenario::HuntGroupAnswer(spec(9))).await;
    let events = rig.wait_for_events(7).await.unwrap();
    rig.stop().unwrap();
    for e in &events {
        assert_eq!(e.meta.get("queue").map(String::as_str), Some("200"), "{e:?}");
        assert_eq!(e.meta.get("queue"), e.meta.get("huntGroup"));
    }
    let ringing = events.iter().find(|e| e.status.as_str() == "ringing").unwrap();
    let keys = |e: &generic_event::GenericEvent| e.meta.keys().cloned().collect::<Vec<_>>();
    // The example is correlated by SIP Call-ID; this rig has no leg source.
    let mut sent = keys(ringing);
    sent.push("sipCallId".into());
    sent.sort();
    sent.dedup();
    assert_eq!(sent, keys(&example));
    assert_eq!(ringing.meta["queue"], example.meta["queue"]);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_resume() {
    conforms(
        Scenario::HoldResume(spec(2)),
        Conformance::new(SequenceKey::Extension)
            .expect("4001", "ringing, connected, held, connected, disconnected:normal"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn park_and_unpark() {
    conforms(
        Scenario::ParkUnpark(spec(3)),
        Conformance::new(SequenceKey::Extension)
            .expect("4001", "ringing, connected, parked, disconnected:parked")
            .expect("4002", "connected, disconnected:normal"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blind_transfer() {
    conforms(
        Scenario::BlindTransfer(spec(4)),
        Conformance::new(SequenceKey::Extension)
            .expect("4001", "ringing, connected, transferred, disconnected:transferred")
            .expect("4002", "ringing, connected, disconnected:normal"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attended_transfer_over_a_consultation_call() {
    conforms(
        Scenario::AttendedTransfer(spec(5)),
        Conformance::new(SequenceKey::CallAndExtension)
            // The original call: answered, held while 4001 consults 4002, then transferred.
            .expect("c0a82a03.1 4001", "ringing, connected, held, transferred, disconnected:transferred")
            .expect("c0a82a03.1 4002", "connected, disconnected:normal")
            // The consultation call: 4001 dials 4002, 4002 answers, 4001 completes the transfer.
            .expect("c0a82a03.2 4001", "connected, transferred, disconnected:transferred")
            .expect("c0a82a03.2 4002", "ringing, connected, disconnected:normal"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_abandons_a_queued_call() {
    conforms(
        Scenario::CallerAbandon(spec(6)),
        Conformance::new(SequenceKey::Extension)
            .expect("4001", "ringing, disconnected:caller-abandoned")
            .expect("4002", "ringing, disconnected:caller-abandoned")
            .expect("4003", "ringing, disconnected:caller-abandoned"),
    )
    .await;
}

/// The link drops mid-call; one call ends while the daemon cannot see it (closed by the
/// snapshot, reconciled), the other is seen again and ends live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_drop_mid_call_is_reconciled() {
    conforms(
        Scenario::LinkDrop { ends_while_down: spec(7), survives: spec(8) },
        Conformance::new(SequenceKey::Extension)
            .expect("4001", "ringing, connected, disconnected:unknown (reconciled)")
            .expect("4002", "ringing, connected, held, connected, disconnected:normal"),
    )
    .await;
}
