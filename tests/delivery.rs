//! Issue 3, end to end: the real binary reads a simulated IP Office over DevLink3 and delivers
//! to a simulated platform that misbehaves as scripted.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use generic_event::{GenericEvent, Status, validate_json};
use pbx_sim::avaya_r11::Scenario;
use pbx_sim::platform::{Delivery, Platform, SignatureCheck};
use support::{NO_CORRELATION_WAIT, Rig, SCENARIOS, Sims, eventually, run_bounded, start_sims, terminate};

const LIMIT: Duration = Duration::from_secs(120);

/// Plays every scenario once, after the daemon subscribed.
fn play_all(sims: &Sims) -> tokio::task::JoinHandle<()> {
    let pbx = sims.pbx.clone();
    sims.rt.spawn(async move {
        pbx.wait_for_subscriptions(1).await;
        for (i, name) in SCENARIOS.iter().enumerate() {
            let scenario = Scenario::named(name, 1 + 2 * i as u64).expect("scenario");
            pbx.play(&scenario).await;
        }
    })
}

/// The accepted events, parsed and validated, in order of first acceptance.
fn accepted_events(platform: &Platform) -> Vec<(Delivery, GenericEvent)> {
    platform
        .accepted()
        .into_iter()
        .map(|d| {
            let e = validate_json(&d.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&d.body)));
            (d, e)
        })
        .collect()
}

/// Whether at least `calls` PBX calls arrived and every device of every call ended with
/// `disconnected` (the contract's closing rule): then everything the scenarios produce is in.
fn all_calls_closed(events: &[(Delivery, GenericEvent)], calls: usize) -> bool {
    let mut last: BTreeMap<(uuid::Uuid, Option<String>), Status> = BTreeMap::new();
    for (_, e) in events {
        if let Some(child) = e.child_sid {
            last.insert((child, e.extension.clone()), e.status);
        }
    }
    let distinct_calls: std::collections::BTreeSet<_> = last.keys().map(|(c, _)| *c).collect();
    distinct_calls.len() >= calls && last.values().all(|s| *s == Status::Disconnected)
}

fn outbox_stats(rig: &Rig) -> serde_json::Value {
    let out = run_bounded(
        support::cmd().args(["outbox", "stats", "--json", "--config"]).arg(&rig.config),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("stats JSON")
}

#[test]
fn platform_outage_with_retry_after_then_everything_arrives_in_order() {
    let sims = start_sims("503*4,429:retry-after=1,503*2,429:retry-after=1");
    let rig = Rig::new(sims.pbx.addr(), &sims.platform.url(), NO_CORRELATION_WAIT);
    let mut daemon = rig.spawn("run");
    let play = play_all(&sims);
    sims.rt.block_on(play).expect("scenarios played");
    let events = eventually(LIMIT, "every call delivered and closed", || {
        let events = accepted_events(&sims.platform);
        all_calls_closed(&events, 7).then_some(events)
    });
    let stats = eventually(LIMIT, "an empty outbox", || {
        let s = outbox_stats(&rig);
        (s["pendingEvents"] == 0).then_some(s)
    });
    // SIGHUP does not kill the daemon (it says a restart applies changes); SIGTERM stops it cleanly.
    std::process::Command::new("kill").args(["-HUP", &daemon.id().to_string()]).status().expect("kill -HUP");
    eventually(LIMIT, "the SIGHUP warning", || rig.log("run").contains("SIGHUP").then_some(()));
    assert_eq!(terminate(&mut daemon, LIMIT).code(), Some(0), "{}", rig.log("run"));

    // The platform failed first: the script was played.
    let failures = sims.platform.deliveries().iter().filter(|d| matches!(d.status, Some(503 | 429))).count();
    assert_eq!(failures, 8, "every scripted failure was answered");
    // Nothing quarantined, nothing lost, every signature valid.
    assert_eq!(stats["quarantinedEvents"], 0, "{stats}");
    assert_eq!(stats["appendedTotal"].as_u64(), Some(events.len() as u64), "{stats}");
    assert!(sims.platform.deliveries().iter().all(|d| d.signature == SignatureCheck::Valid));
    // In order per call: each call's events arrive in the order they happened.
    let mut per_call: BTreeMap<uuid::Uuid, Vec<&GenericEvent>> = BTreeMap::new();
    for (_, e) in &events {
        per_call.entry(e.child_sid.expect("Level 3")).or_default().push(e);
    }
    for (call, seq) in &per_call {
        assert!(seq.windows(2).all(|w| w[0].timestamp <= w[1].timestamp), "call {call} out of order: {seq:#?}");
        for ext in seq.iter().filter_map(|e| e.extension.as_deref()) {
            let statuses: Vec<Status> =
                seq.iter().filter(|e| e.extension.as_deref() == Some(ext)).map(|e| e.status).collect();
            let first_connected = statuses.iter().position(|s| *s == Status::Connected);
            let first_ringing = statuses.iter().position(|s| *s == Status::Ringing);
            if let (Some(r), Some(c)) = (first_ringing, first_connected) {
                assert!(r < c, "call {call} extension {ext}: connected before ringing: {statuses:?}");
            }
        }
    }
    sims.rt.block_on(sims.platform.stop());
}

#[test]
fn a_rejected_event_is_quarantined_and_visible_in_outbox_list() {
    let sims = start_sims("400");
    let rig = Rig::new(sims.pbx.addr(), &sims.platform.url(), NO_CORRELATION_WAIT);
    let mut daemon = rig.spawn("run");
    let play = play_all(&sims);
    sims.rt.block_on(play).expect("scenarios played");
    let rejected =
        eventually(LIMIT, "the 400", || sims.platform.deliveries().into_iter().find(|d| d.status == Some(400)));
    eventually(LIMIT, "the rest delivered", || {
        let s = outbox_stats(&rig);
        (s["pendingEvents"] == 0 && s["quarantinedEvents"] == 1).then_some(())
    });
    // The call of the rejected event went on: its later events were delivered.
    let rejected_event = validate_json(&rejected.body).expect("valid event");
    let same_call =
        accepted_events(&sims.platform).into_iter().filter(|(_, e)| e.child_sid == rejected_event.child_sid).count();
    assert!(same_call > 0, "the rejected event's call kept flowing");

    let out = run_bounded(
        support::cmd().args(["outbox", "list", "--quarantined", "--config"]).arg(&rig.config),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listing = String::from_utf8_lossy(&out.stdout);
    let row = listing.lines().find(|l| l.contains(&rejected.id)).unwrap_or_else(|| panic!("not listed:\n{listing}"));
    assert!(row.contains("quarantined") && row.contains("HTTP 400"), "{row}");
    assert_eq!(terminate(&mut daemon, LIMIT).code(), Some(0), "{}", rig.log("run"));
    sims.rt.block_on(sims.platform.stop());
}
