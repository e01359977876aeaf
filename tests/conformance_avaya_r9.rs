//! Avaya IP Office R9 through the conformance suite (issue 10): the real `pbx-listener` binary
//! reads the R9 simulator's SMDR (and a relay's Delta2) over loopback and delivers to the
//! platform receiver. Each scenario's Level 3 sequence per extension is exactly what the
//! contract says, the contract's rules hold (`pbx_sim::conformance`), and the timestamps are
//! the PBX's: its Call Start, read in its time zone, plus SMDR's durations.
//!
//! "No duplicate" is checked by count: the rig waits for the events it expects, stops the
//! daemon (which drains everything it read), and nothing more may have arrived.

#![allow(clippy::unwrap_used)] // Tests unwrap what they built themselves.

use std::collections::BTreeMap;

use generic_event::{GenericEvent, Status};
use pbx_sim::announce::{BLeg, announce, b_leg_event};
use pbx_sim::avaya_r9::{CallScript, CallSpec, Emit, R9Sim, R9SimConfig, Scenario, SmdrSide};
use pbx_sim::conformance::{Conformance, ListenerRig, PbxBlock, SequenceKey};
use uuid::Uuid;
use webhook_signature::SigningSecret;

const TIMEZONE: &str = "Europe/London";

/// Each scenario as SMDR alone shows it: `(scenario, extension, steps with seconds after the
/// call started)`. SMDR shows only the hunt group member that answered.
const SMDR_EXPECTED: [(&str, &[(&str, &str)]); 6] = [
    ("answered", &[("4001", "ringing +0, connected +5, disconnected:normal +25")]),
    ("missed", &[("4001", "ringing +0, disconnected:caller-abandoned +10")]),
    ("hunt-group", &[("4002", "ringing +0, connected +4, disconnected:normal +19")]),
    (
        "transfer",
        &[
            ("4001", "ringing +0, connected +3, held +13, transferred +18, disconnected:transferred +18"),
            ("4002", "ringing +18, connected +20, disconnected:normal +32"),
        ],
    ),
    (
        "park",
        &[
            ("4001", "ringing +0, connected +2, parked +10, disconnected:parked +10"),
            ("4002", "connected +16, disconnected:normal +26"),
        ],
    ),
    ("voicemail", &[("4001", "ringing +0, disconnected:voicemail +12")]),
];

/// The simulator (SMDR in its listen mode, optionally Delta2) and the daemon reading it.
async fn rig(sim_config: R9SimConfig, extra: &str) -> (R9Sim, ListenerRig) {
    let sim = R9Sim::start(sim_config).await.unwrap();
    let mut keys = format!(
        "host = \"127.0.0.1\"\ntimezone = {TIMEZONE:?}\n\
         smdr = {{ mode = \"connect\", port = {}, reconnect_min_ms = 100, reconnect_max_secs = 1 }}\n",
        sim.smdr_addr().unwrap().port()
    );
    if let Some(d2) = sim.delta2_addr() {
        keys.push_str(&format!(
            "delta2 = {{ connect = \"{d2}\", grace_ms = 3000, reconnect_min_ms = 100, reconnect_max_secs = 1 }}\n"
        ));
    }
    let block = PbxBlock::new("r9", "avaya-r9", &keys);
    let mut rig = ListenerRig::prepare(env!("CARGO_BIN_EXE_pbx-listener").as_ref(), &[block], extra).await.unwrap();
    rig.spawn().unwrap();
    tokio::time::timeout(rig.limit(), sim.wait_for_smdr_collectors(1)).await.expect("the daemon connects to SMDR");
    if sim.delta2_addr().is_some() {
        tokio::time::timeout(rig.limit(), sim.wait_for_delta2_clients(1)).await.expect("the daemon connects to Delta2");
        // The relay accepted the connection; wait until the adapter has taken it as up too
        // (before that, SMDR rightly reports calls alone).
        let deadline = std::time::Instant::now() + rig.limit();
        while !rig.log().contains("feed=\"delta2\"") {
            assert!(std::time::Instant::now() < deadline, "the adapter never took Delta2 as up:\n{}", rig.log());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    (sim, rig)
}

fn listen() -> R9SimConfig {
    R9SimConfig { timezone: TIMEZONE.into(), ..R9SimConfig::fast(SmdrSide::Listen("127.0.0.1:0".parse().unwrap())) }
}

/// The instant of a script's Call Start, in ms: its local time read in `TIMEZONE` by jiff (an
/// oracle independent of the adapter's own reading).
fn call_start_ms(script: &CallScript) -> u64 {
    let line = script
        .emits
        .iter()
        .find_map(|(_, e)| match e {
            Emit::Smdr(l) => Some(l.clone()),
            _ => None,
        })
        .unwrap();
    let local = line.split(',').next().unwrap();
    let dt = jiff::civil::DateTime::strptime("%Y/%m/%d %H:%M:%S", local).unwrap();
    let zone = jiff::tz::TimeZone::get(TIMEZONE).unwrap();
    dt.to_zoned(zone).unwrap().timestamp().as_millisecond() as u64
}

/// The timed sequence of each extension in one call: `status[:reason] +seconds`.
fn timed(events: &[GenericEvent], script: &CallScript) -> BTreeMap<String, String> {
    let start = call_start_ms(script);
    let id = script.call_id.to_string();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.meta.get("pbxCallId") == Some(&id)) {
        let mut step = e.status.to_string();
        if let Some(r) = e.meta.get("reason") {
            step.push(':');
            step.push_str(r);
        }
        let secs = (e.timestamp as i64 - start as i64) / 1000;
        out.entry(e.extension.clone().unwrap_or_default()).or_default().push(format!("{step} +{secs}"));
    }
    out.into_iter().map(|(k, v)| (k, v.join(", "))).collect()
}

fn untimed(steps: &str) -> String {
    steps.split(", ").map(|s| s.split(" +").next().unwrap()).collect::<Vec<_>>().join(", ")
}

/// The conformance expectations of `(script, expected)` pairs, keyed by call and extension.
fn expectations(calls: &[(&CallScript, &[(&str, &str)])]) -> Conformance {
    let mut c = Conformance::new(SequenceKey::CallAndExtension);
    for (script, exts) in calls {
        for (ext, steps) in *exts {
            c = c.expect(&format!("{} {ext}", script.call_id), &untimed(steps));
        }
    }
    c
}

fn assert_timed(events: &[GenericEvent], script: &CallScript, expected: &[(&str, &str)]) {
    let got = timed(events, script);
    let want: BTreeMap<String, String> = expected.iter().map(|(e, s)| ((*e).to_owned(), (*s).to_owned())).collect();
    assert_eq!(got, want, "call {} (times after its Call Start)", script.call_id);
    for e in events.iter().filter(|e| e.meta.get("pbxCallId") == Some(&script.call_id.to_string())) {
        assert_eq!(e.meta.get("source").map(String::as_str), Some("smdr"));
        assert_eq!(e.meta.get("pbxType").map(String::as_str), Some("avaya-r9"));
    }
}

/// Waits for the events `expected` adds up to, stops the daemon and returns every event;
/// nothing may arrive beyond the count.
async fn collect(rig: &mut ListenerRig, expected: &Conformance) -> Vec<GenericEvent> {
    let events = rig.wait_for_events(expected.event_count()).await.unwrap();
    rig.stop().unwrap();
    let after = rig.events().unwrap();
    // Differences first: they name any extra event.
    expected.check(&after).assert_ok();
    assert_eq!(after.len(), events.len(), "more events than expected arrived");
    after
}

fn expected(name: &str) -> &'static [(&'static str, &'static str)] {
    SMDR_EXPECTED.iter().find(|(n, _)| *n == name).map(|(_, e)| *e).unwrap()
}

/// Inbound answered, missed, hunt group answered by another extension, transfer, park and
/// unpark, voicemail: exact sequences and times from SMDR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_from_smdr_with_the_pbxs_times() {
    let (sim, mut rig) = rig(listen(), "").await;
    let mut scripts = Vec::new();
    for (n, (name, _)) in SMDR_EXPECTED.iter().enumerate() {
        scripts.push(sim.play(&Scenario::named(name, n as u64).unwrap()).await);
    }
    let pairs: Vec<(&CallScript, &[(&str, &str)])> =
        scripts.iter().zip(SMDR_EXPECTED.iter()).map(|(s, (_, e))| (s, *e)).collect();
    let events = collect(&mut rig, &expectations(&pairs)).await;
    for (s, e) in pairs {
        assert_timed(&events, s, e);
    }
    sim.stop().await;
}

/// The SMDR link goes down; the IP Office buffers, then replays what it had delivered before
/// and its buffer: each call once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_with_the_buffer_replayed_has_no_duplicate() {
    let (sim, mut rig) = rig(R9SimConfig { replay_delivered: 20, ..listen() }, "").await;
    let a = sim.play(&Scenario::Transfer(CallSpec::numbered(1))).await;
    let b = sim.play(&Scenario::Missed(CallSpec::numbered(2))).await;
    sim.outage(true);
    let c = sim.play(&Scenario::ParkUnpark(CallSpec::numbered(3))).await;
    let d = sim.play(&Scenario::Voicemail(CallSpec::numbered(4))).await;
    sim.outage(false);
    let pairs =
        [(&a, expected("transfer")), (&b, expected("missed")), (&c, expected("park")), (&d, expected("voicemail"))];
    let events = collect(&mut rig, &expectations(&pairs)).await;
    for (s, e) in pairs {
        assert_timed(&events, s, e);
    }
    assert!(sim.records_sent() >= 6);
    sim.stop().await;
}

/// The daemon stops between the two segments of a transferred call and the PBX replays its
/// records when it is back: nothing lost (the first segment was checkpointed), nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_restart_mid_stream_loses_nothing_and_repeats_nothing() {
    let (sim, mut rig) = rig(R9SimConfig { replay_delivered: 20, ..listen() }, "").await;
    let a = sim.play(&Scenario::InboundAnswered(CallSpec::numbered(1))).await;
    // The transfer's first segment; then a whole call, whose events prove the segment was
    // read (and checkpointed with them: the adapter's output is in order).
    let (start, _) = sim.pbx_now();
    let t = pbx_sim::avaya_r9::script(&Scenario::Transfer(CallSpec::numbered(2)), 900_001, &start);
    let segments: Vec<String> = t
        .emits
        .iter()
        .filter_map(|(_, e)| match e {
            Emit::Smdr(l) => Some(l.clone()),
            _ => None,
        })
        .collect();
    sim.send_smdr_raw(&segments[0]);
    let b = sim.play(&Scenario::Missed(CallSpec::numbered(3))).await;
    let first = expectations(&[(&a, expected("answered")), (&b, expected("missed"))]);
    rig.wait_for_events(first.event_count()).await.unwrap();
    rig.stop().unwrap();
    // The call ends while the daemon is down.
    sim.outage(true);
    sim.send_smdr_raw(&segments[1]);
    rig.spawn().unwrap();
    sim.outage(false);
    let all = expectations(&[(&a, expected("answered")), (&b, expected("missed")), (&t, expected("transfer"))]);
    let events = collect(&mut rig, &all).await;
    assert_timed(&events, &t, expected("transfer"));
    sim.stop().await;
}

/// The same calls with Delta2 alongside: Delta2 drives them in real time (the hunt group's
/// three phones ring), SMDR adds nothing; a call during a relay outage comes from SMDR, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta2_alongside_smdr_without_duplicates() {
    let config = R9SimConfig { delta2_listen: Some("127.0.0.1:0".parse().unwrap()), ..listen() };
    let (sim, mut rig) = rig(config, "").await;
    let delta2: [(&str, &[(&str, &str)]); 6] = [
        ("answered", &[("4001", "ringing, connected, disconnected:normal")]),
        ("missed", &[("4001", "ringing, disconnected:caller-abandoned")]),
        (
            "hunt-group",
            &[
                ("4001", "ringing, disconnected:answered-elsewhere"),
                ("4002", "ringing, connected, disconnected:normal"),
                ("4003", "ringing, disconnected:answered-elsewhere"),
            ],
        ),
        (
            "transfer",
            &[
                ("4001", "ringing, connected, held, transferred, disconnected:transferred"),
                ("4002", "ringing, connected, disconnected:normal"),
            ],
        ),
        (
            "park",
            &[("4001", "ringing, connected, parked, disconnected:parked"), ("4002", "connected, disconnected:normal")],
        ),
        ("voicemail", &[("4001", "ringing, disconnected:voicemail")]),
    ];
    let mut scripts = Vec::new();
    for (n, (name, _)) in delta2.iter().enumerate() {
        scripts.push(sim.play(&Scenario::named(name, n as u64).unwrap()).await);
    }
    // The relay goes away; a call happens; the relay comes back.
    let first: Vec<(&CallScript, &[(&str, &str)])> =
        scripts.iter().zip(delta2.iter()).map(|(s, (_, e))| (s, *e)).collect();
    rig.wait_for_events(expectations(&first).event_count()).await.unwrap();
    sim.delta2_outage(true);
    let missed = sim.play(&Scenario::Transfer(CallSpec::numbered(9))).await;
    sim.delta2_outage(false);
    let mut all = first.clone();
    all.push((&missed, expected("transfer")));
    let events = collect(&mut rig, &expectations(&all)).await;
    for s in &scripts {
        let id = s.call_id.to_string();
        assert!(
            events.iter().filter(|e| e.meta.get("pbxCallId") == Some(&id)).all(|e| e.meta["source"] == "delta2"),
            "call {id} came from Delta2 alone"
        );
    }
    assert_timed(&events, &missed, expected("transfer"));
    sim.stop().await;
}

/// Issue 10: the platform announced the leg five minutes before SMDR reports the call (the
/// PBX clock is shifted back five minutes instead of waiting them). The call is matched on the
/// PBX's call start, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leg_announced_minutes_before_the_smdr_record_binds() {
    let secret = SigningSecret::from_bytes(b"pbx-listener r9 conformance legs".to_vec());
    let legs_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let extra = format!("[legs]\nlisten = \"127.0.0.1:{legs_port}\"\nsigning_secret_files = [\"legs-secret\"]\n");
    let sim_config = R9SimConfig { clock_offset_ms: -300_000, ..listen() };
    let sim = R9Sim::start(sim_config).await.unwrap();
    let keys = format!(
        "host = \"127.0.0.1\"\ntimezone = {TIMEZONE:?}\nsmdr = {{ mode = \"connect\", port = {}, reconnect_min_ms = 100 }}\n",
        sim.smdr_addr().unwrap().port()
    );
    let block = PbxBlock::new("r9", "avaya-r9", &keys);
    let mut rig = ListenerRig::prepare(env!("CARGO_BIN_EXE_pbx-listener").as_ref(), &[block], &extra).await.unwrap();
    rig.write_file("legs-secret", &secret.to_whsec()).unwrap();
    rig.spawn().unwrap();
    tokio::time::timeout(rig.limit(), sim.wait_for_smdr_collectors(1)).await.unwrap();

    let spec = CallSpec::numbered(42);
    let (_, pbx_now_ms) = sim.pbx_now();
    let leg = BLeg {
        account_id: Uuid::nil(),
        account_name: "Conformance".into(),
        call_sid: Uuid::from_u128(0xb1),
        parent_call_sid: Uuid::from_u128(0xa1),
        sip_call_id: None,
        from: spec.caller.clone(),
        to: spec.did.clone(),
        meta: BTreeMap::from([("campaign".to_owned(), "r9".to_owned())]),
    };
    // The platform announced the leg when the call started, five minutes ago (by its clock).
    let event = b_leg_event(&leg, Status::Ringing, pbx_now_ms);
    let url = format!("http://127.0.0.1:{legs_port}/legs");
    let deadline = tokio::time::Instant::now() + rig.limit();
    loop {
        match announce(&url, std::slice::from_ref(&secret), std::slice::from_ref(&event)).await {
            Ok((200, _)) => break,
            Ok((status, body)) => panic!("the leg endpoint answered {status}: {body}"),
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            Err(e) => panic!("the leg endpoint never answered: {e:#}"),
        }
    }
    let script = sim.play(&Scenario::InboundAnswered(spec)).await;
    let want = expectations(&[(&script, expected("answered"))]);
    let events = collect(&mut rig, &want).await;
    for e in &events {
        assert_eq!(e.call_sid, Some(Uuid::from_u128(0xb1)), "{e:?}");
        assert_eq!(e.parent_call_sid, Some(Uuid::from_u128(0xa1)));
        assert_eq!(e.meta.get("correlation").map(String::as_str), Some("number-time"));
        assert_eq!(e.meta.get("campaign").map(String::as_str), Some("r9"));
    }
    assert_timed(&events, &script, expected("answered"));
    sim.stop().await;
}
