//! 3CX V20 through the conformance suite: the real `pbx-listener` binary reads the 3CX
//! simulator (token, snapshot, WebSocket, participant GETs; the CDR socket) over loopback and
//! delivers to the platform receiver. Each scenario's Level 3 sequence per extension is exactly
//! what the contract says — no phantom and no missing event — across a token expiry and a
//! WebSocket drop, and the contract's rules hold (`pbx_sim::conformance`).

#![allow(clippy::unwrap_used)] // Tests unwrap what they built themselves.

use adapter_3cx::participant::Participant;
use pbx_sim::conformance::{Conformance, ListenerRig, PbxBlock, SequenceKey};
use pbx_sim::threecx::{CallSpec, Scenario, SimConfig, ThreeCxSim};

const CLIENT: &str = "pbxlistener";
const SECRET: &str = "conformance-3cx-key";

/// A 3CX simulator and the daemon reading it, past its first snapshot.
async fn rig(config: SimConfig, extra_keys: &str) -> (ThreeCxSim, ListenerRig) {
    let sim = ThreeCxSim::start("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
    let keys = format!(
        "url = {:?}\nclient_id = {CLIENT:?}\nclient_secret_file = \"3cx-secret\"\nextensions = [\"101\", \"102\", \"103\"]\n\
         reconnect_min_ms = 100\nreconnect_max_secs = 1\nremoval_grace_ms = 300\n{extra_keys}",
        sim.url()
    );
    let block = PbxBlock::new("sim", "3cx", &keys);
    let mut rig = ListenerRig::prepare(env!("CARGO_BIN_EXE_pbx-listener").as_ref(), &[block], "").await.unwrap();
    rig.write_file("3cx-secret", SECRET).unwrap();
    rig.spawn().unwrap();
    tokio::time::timeout(rig.limit(), sim.wait_for_snapshots(1)).await.expect("the daemon takes a snapshot");
    (sim, rig)
}

/// Plays `scenario`, waits for what `expected` adds up to, stops the daemon, and checks.
async fn conforms(config: SimConfig, scenario: Scenario, expected: Conformance) {
    let (sim, mut rig) = rig(config, "").await;
    sim.play(&scenario).await;
    let events = rig.wait_for_events(expected.event_count()).await.unwrap();
    rig.stop().unwrap();
    // Nothing more arrived after the expected count: a phantom event would show here.
    let after = rig.events().unwrap();
    assert_eq!(after.len(), events.len(), "more events than expected arrived");
    expected.check(&after).assert_ok();
    for e in &after {
        assert_eq!(e.meta.get("pbxType").map(String::as_str), Some("3cx"));
        assert_eq!(e.meta.get("source").map(String::as_str), Some("callcontrol"));
    }
    sim.stop().await;
}

fn fast() -> SimConfig {
    SimConfig::fast(CLIENT, SECRET)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_trunk_call_to_a_queue_two_agents_ring_one_answers() {
    conforms(
        fast(),
        Scenario::QueueAnswer(CallSpec::numbered(1)),
        Conformance::new(SequenceKey::Extension)
            .expect("101", "ringing, disconnected:answered-elsewhere")
            .expect("102", "ringing, connected, disconnected:normal"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer() {
    conforms(
        fast(),
        Scenario::Transfer(CallSpec::numbered(2)),
        Conformance::new(SequenceKey::Extension)
            .expect("101", "ringing, connected, transferred, disconnected:transferred")
            .expect("102", "ringing, connected, disconnected:normal"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_hangs_up_while_ringing() {
    conforms(
        fast(),
        Scenario::CallerAbandon(CallSpec::numbered(3)),
        Conformance::new(SequenceKey::Extension)
            .expect("101", "ringing, disconnected:caller-abandoned")
            .expect("102", "ringing, disconnected:caller-abandoned"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_call() {
    conforms(
        fast(),
        Scenario::Outbound(CallSpec::numbered(4)),
        Conformance::new(SequenceKey::Extension).expect("101", "connected, disconnected:normal"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_mid_call() {
    conforms(
        fast(),
        Scenario::TokenExpiry(CallSpec::numbered(5)),
        Conformance::new(SequenceKey::Extension).expect("101", "ringing, connected, disconnected:normal"),
    )
    .await;
}

/// Tokens living two seconds, refreshed at half-life while a queue call goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_tokens_are_refreshed_without_a_gap() {
    let config = SimConfig { token_lifetime: std::time::Duration::from_secs(2), ..fast() };
    let (sim, mut rig) = rig(config, "").await;
    // Past a couple of refreshes (bounded by the rig's limit).
    let deadline = tokio::time::Instant::now() + rig.limit();
    while sim.stats().tokens < 3 {
        assert!(tokio::time::Instant::now() < deadline, "the daemon does not refresh its token");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    sim.play(&Scenario::QueueAnswer(CallSpec::numbered(6))).await;
    let expected = Conformance::new(SequenceKey::Extension)
        .expect("101", "ringing, disconnected:answered-elsewhere")
        .expect("102", "ringing, connected, disconnected:normal");
    rig.wait_for_events(expected.event_count()).await.unwrap();
    rig.stop().unwrap();
    expected.check(&rig.events().unwrap()).assert_ok();
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_dropped_mid_call_with_changes_while_down() {
    conforms(
        fast(),
        Scenario::WsDrop {
            ends_while_down: CallSpec::numbered(7),
            answered_while_down: CallSpec::numbered(8),
            starts_while_down: CallSpec::numbered(9),
        },
        Conformance::new(SequenceKey::Extension)
            .expect("101", "ringing, connected, disconnected:unknown (reconciled)")
            .expect("102", "ringing, connected (reconciled), disconnected:normal")
            .expect("103", "ringing (reconciled), disconnected:caller-abandoned"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_get_remove_race_makes_no_phantom() {
    conforms(
        fast(),
        Scenario::GetRemoveRace(CallSpec::numbered(10)),
        Conformance::new(SequenceKey::Extension).expect("101", "ringing, connected, disconnected:normal"),
    )
    .await;
}

/// A restart mid-call: the call's events before and after keep one childSid, nothing is
/// repeated, and the call the daemon could not see end is closed (reconciled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_call_repeats_nothing() {
    use adapter_3cx::participant::Status;
    use pbx_sim::threecx::{Step, inbound};
    let (sim, mut rig) = rig(fast(), "").await;
    let spec = CallSpec::numbered(11);
    let a = inbound(1, "101", Status::Ringing, 77, &spec);
    let b = inbound(2, "102", Status::Ringing, 78, &spec);
    sim.step(Step::Upsert { participant: a.clone(), await_fetch: true }).await;
    sim.step(Step::Upsert {
        participant: Participant { status: Some(Status::Connected), ..a.clone() },
        await_fetch: true,
    })
    .await;
    sim.step(Step::Upsert { participant: b.clone(), await_fetch: true }).await;
    rig.wait_for_events(3).await.unwrap();
    rig.stop().unwrap();
    // While it is stopped, 102's call ends; 101's goes on.
    sim.step(Step::RemoveSilently { dn: "102".into(), id: 2 }).await;
    rig.spawn().unwrap();
    tokio::time::timeout(rig.limit(), sim.wait_for_snapshots(2)).await.unwrap();
    sim.step(Step::Remove { dn: "101".into(), id: 1 }).await;
    let expected = Conformance::new(SequenceKey::CallAndExtension)
        .expect("77 101", "ringing, connected, disconnected:normal")
        .expect("78 102", "ringing, disconnected:unknown (reconciled)");
    rig.wait_for_events(expected.event_count()).await.unwrap();
    rig.stop().unwrap();
    let events = rig.events().unwrap();
    expected.check(&events).assert_ok();
    let sids: std::collections::BTreeSet<_> = events
        .iter()
        .filter(|e| e.meta.get("pbxCallId").map(String::as_str) == Some("77"))
        .map(|e| e.child_sid)
        .collect();
    assert_eq!(sids.len(), 1, "one childSid for the call across the restart");
    sim.stop().await;
}

/// The CDR feed across a restart: a call the live feed missed (the WebSocket was down) is
/// rebuilt from its record once; 3CX sending the record again after the daemon restarted
/// changes nothing (the records processed are checkpointed with the events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_call_is_rebuilt_from_the_cdr_once_across_a_restart() {
    use pbx_sim::threecx::Step;
    let config = SimConfig { cdr_listen: Some("127.0.0.1:0".parse().unwrap()), ..fast() };
    let sim = ThreeCxSim::start("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
    let keys = format!(
        "url = {:?}\nclient_id = {CLIENT:?}\nclient_secret_file = \"3cx-secret\"\nextensions = [\"101\", \"102\", \"103\"]\n\
         reconnect_min_ms = 100\nreconnect_max_secs = 1\nremoval_grace_ms = 300\n\n[pbx.cdr]\nconnect = \"{}\"\n",
        sim.url(),
        sim.cdr_addr().unwrap()
    );
    let block = PbxBlock::new("sim", "3cx", &keys);
    let mut rig = ListenerRig::prepare(env!("CARGO_BIN_EXE_pbx-listener").as_ref(), &[block], "").await.unwrap();
    rig.write_file("3cx-secret", SECRET).unwrap();
    rig.spawn().unwrap();
    tokio::time::timeout(rig.limit(), sim.wait_for_snapshots(1)).await.unwrap();
    // The WebSocket goes down; a call rings 101 and the caller gives up meanwhile.
    sim.step(Step::DropWebSocket).await;
    let now = jiff::Timestamp::now();
    let at = |secs: i64| (now - jiff::SignedDuration::from_secs(secs)).strftime("%Y/%m/%d %H:%M:%S").to_string();
    let line = format!(
        "Call 9001,00000190aa_7001,00:00:10,{},,{},TerminatedBySrc,447700900555,Ext.101,10007,101,441234567890,,Ext.101,101,,,,,Chain: 447700900555;Ext.101;,Line,Extension,Extension,Caller,Agent,Agent,",
        at(15),
        at(5)
    );
    let expected = Conformance::new(SequenceKey::Extension).expect("101", "ringing, disconnected:caller-abandoned");
    // The daemon's CDR client may still be connecting: resend (duplicates are dropped) until
    // the events are there, bounded by the rig's limit.
    let deadline = tokio::time::Instant::now() + rig.limit();
    while rig.events().unwrap().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the CDR record was not turned into events:\n{}", rig.log());
        sim.send_cdr(&line);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    rig.stop().unwrap();
    // Restarted, with the WebSocket still down: 3CX repeats the record.
    rig.spawn().unwrap();
    for _ in 0..20 {
        sim.send_cdr(&line);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    sim.step(Step::AwaitReconnect).await;
    // A live call after it: once it is delivered, anything the repeat caused would be too.
    sim.play(&Scenario::Outbound(CallSpec::numbered(12))).await;
    let expected = expected.expect("101", "ringing, disconnected:caller-abandoned, connected, disconnected:normal");
    rig.wait_for_events(expected.event_count()).await.unwrap();
    rig.stop().unwrap();
    let events = rig.events().unwrap();
    expected.check(&events).assert_ok();
    let sources: Vec<&str> = events.iter().map(|e| e.meta["source"].as_str()).collect();
    assert_eq!(sources, ["cdr", "cdr", "callcontrol", "callcontrol"]);
    sim.stop().await;
}
