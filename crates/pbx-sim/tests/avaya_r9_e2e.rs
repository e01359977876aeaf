//! The Avaya R9 adapter (`adapter-avaya-r9`) against the simulator over real loopback sockets:
//! SMDR in both directions, the source allow-list, an outage with the buffer replayed, a
//! restart mid-call with the adapter's checkpoints, and Delta2 alongside SMDR. The signals go
//! through `listener_core::CallLifecycle`, and each call's Level 3 sequence is compared
//! exactly, with times relative to the call's start (SMDR's times come from the PBX).
//!
//! Each test is bounded: waits give up after `LIMIT` and fail; nothing asserts on timing. "No
//! duplicate" is checked by playing a marker call last: the adapter's output is ordered, so a
//! duplicate would come before the marker's end.

#![allow(clippy::unwrap_used)] // Tests unwrap what they built themselves.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use adapter_avaya_r9::config::{Delta2Config, SmdrConfig};
use adapter_avaya_r9::{Config, R9Adapter};
use listener_core::{
    AdapterEvent, AdapterState, CallChange, CallLifecycle, CorrelatedSignal, EventContext, LegBinding, PbxId, PbxType,
    SignalBody,
};
use pbx_sim::adapter_run::{AdapterRun, LIMIT};
use pbx_sim::avaya_r9::{CallSpec, R9Sim, R9SimConfig, Scenario, SmdrSide};

fn pbx() -> PbxId {
    PbxId::new("e2e-r9", PbxType::new("avaya-r9"))
}

fn start(config: &Config, state: AdapterState) -> AdapterRun {
    AdapterRun::start(Box::new(R9Adapter::new(pbx(), config.load().unwrap(), state)))
}

fn ended_call(e: &AdapterEvent) -> Option<String> {
    if let AdapterEvent::Signal(s) = e
        && let SignalBody::Call(c) = &s.body
        && c.change == CallChange::Ended
    {
        return Some(c.call.as_str().to_owned());
    }
    None
}

/// What these tests wait for.
trait RunExt {
    /// Waits for the `Ended` of Call ID `call`.
    async fn wait_for_end(&mut self, call: u64);
    /// Stops the adapter (it must stop cleanly) and returns everything it sent.
    async fn stop_all(self) -> Vec<AdapterEvent>;
}

impl RunExt for AdapterRun {
    async fn wait_for_end(&mut self, call: u64) {
        let id = call.to_string();
        if self.events.iter().any(|e| ended_call(e).as_deref() == Some(&id)) {
            return;
        }
        self.wait_until(&format!("the end of call {id}"), |e| ended_call(e).as_deref() == Some(&id)).await.unwrap();
    }

    async fn stop_all(mut self) -> Vec<AdapterEvent> {
        self.stop().await.unwrap().unwrap();
        self.events
    }
}

/// The Level 3 sequence of each call: `ext status[ reason][ flags] +secs`, times relative to
/// the call's start; plus each call's `source`.
fn level3(events: &[AdapterEvent]) -> BTreeMap<String, Vec<String>> {
    let ctx = EventContext { account_id: uuid::Uuid::nil(), account_name: "t".into(), static_meta: BTreeMap::new() };
    let mut lifecycle = CallLifecycle::new(ctx);
    let mut starts: BTreeMap<String, u64> = BTreeMap::new();
    for e in events {
        if let AdapterEvent::Signal(s) = e {
            if let SignalBody::Call(c) = &s.body {
                starts.entry(c.call.as_str().to_owned()).or_insert(c.call_started.0);
            }
            lifecycle.handle_signal(CorrelatedSignal { signal: s.clone(), binding: LegBinding::unmatched() });
        }
    }
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    while let Some(ev) = lifecycle.poll_event() {
        let e = ev.event;
        let call = e.meta.get("pbxCallId").cloned().unwrap_or_default();
        let start = starts.get(&call).copied().unwrap_or(0);
        let mut line = format!("{} {}", e.extension.as_deref().unwrap_or("-"), e.status.as_str());
        if let Some(r) = e.meta.get("reason") {
            line.push(' ');
            line.push_str(r);
        }
        for flag in ["transferTarget", "parkSlot"] {
            if let Some(v) = e.meta.get(flag) {
                line.push_str(&format!(" {flag}={v}"));
            }
        }
        line.push_str(&format!(" +{} [{}]", (e.timestamp.saturating_sub(start)) / 1000, e.meta["source"]));
        out.entry(call).or_default().push(line);
    }
    out
}

fn expect(got: &BTreeMap<String, Vec<String>>, call: u64, want: &str) {
    let want: Vec<String> = want.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    let got = got.get(&call.to_string()).cloned().unwrap_or_default();
    assert_eq!(got, want, "call {call}:\n{got:#?}");
}

fn connect_config(sim: &R9Sim) -> Config {
    let mut smdr = SmdrConfig::connect(sim.smdr_addr().unwrap().port());
    smdr.reconnect_min_ms = 100;
    smdr.reconnect_max_secs = 1;
    Config { host: "127.0.0.1".into(), timezone: "Europe/London".into(), smdr: Some(smdr), delta2: None }
}

/// The Level 3 sequence of every scenario from SMDR alone (hunt group: SMDR shows only the
/// extension that answered).
const SMDR_ONLY: [(&str, &str); 6] = [
    ("answered", "4001 ringing +0 [smdr]\n4001 connected +5 [smdr]\n4001 disconnected normal +25 [smdr]"),
    ("missed", "4001 ringing +0 [smdr]\n4001 disconnected caller-abandoned +10 [smdr]"),
    ("hunt-group", "4002 ringing +0 [smdr]\n4002 connected +4 [smdr]\n4002 disconnected normal +19 [smdr]"),
    (
        "transfer",
        "4001 ringing +0 [smdr]\n4001 connected +3 [smdr]\n4001 held +13 [smdr]\n4001 transferred transferTarget=4002 +18 [smdr]\n4001 disconnected transferred +18 [smdr]\n4002 ringing +18 [smdr]\n4002 connected +20 [smdr]\n4002 disconnected normal +32 [smdr]",
    ),
    (
        "park",
        "4001 ringing +0 [smdr]\n4001 connected +2 [smdr]\n4001 parked +10 [smdr]\n4001 disconnected parked +10 [smdr]\n4002 connected +16 [smdr]\n4002 disconnected normal +26 [smdr]",
    ),
    ("voicemail", "4001 ringing +0 [smdr]\n4001 disconnected voicemail +12 [smdr]"),
];

#[tokio::test]
async fn smdr_connect_mode_every_scenario_in_london_time() {
    let sim = R9Sim::start(R9SimConfig::fast(SmdrSide::Listen("127.0.0.1:0".parse().unwrap()))).await.unwrap();
    let mut run = start(&connect_config(&sim), AdapterState::new());
    sim.wait_for_smdr_collectors(1).await;
    let mut calls = Vec::new();
    for (n, (name, _)) in SMDR_ONLY.iter().enumerate() {
        let script = sim.play(&Scenario::named(name, n as u64).unwrap()).await;
        calls.push(script);
    }
    for s in &calls {
        run.wait_for_end(s.call_id).await;
    }
    let events = run.stop_all().await;
    let got = level3(&events);
    for (s, (_, want)) in calls.iter().zip(SMDR_ONLY) {
        expect(&got, s.call_id, want);
    }
    // The start is the PBX's Call Start, read in its time zone.
    let first = events
        .iter()
        .find_map(|e| match e {
            AdapterEvent::Signal(s) => match &s.body {
                SignalBody::Call(c) => Some(c.call_started.0),
                _ => None,
            },
            _ => None,
        })
        .unwrap();
    let written = match &calls[0].emits.iter().find_map(|(_, e)| match e {
        pbx_sim::avaya_r9::Emit::Smdr(l) => Some(l.clone()),
        _ => None,
    }) {
        Some(l) => l.split(',').next().unwrap().to_owned(),
        None => panic!(),
    };
    assert_eq!(sim.local(first), written);
    sim.stop().await;
}

#[tokio::test]
async fn smdr_listen_mode_with_an_allow_list_in_another_time_zone() {
    // Find a free port for the adapter's listener.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut smdr = SmdrConfig::listen(addr.to_string());
    smdr.allowed_sources = Some(vec!["127.0.0.1".into()]);
    let config =
        Config { host: "192.0.2.1".into(), timezone: "America/New_York".into(), smdr: Some(smdr), delta2: None };
    let mut run = start(&config, AdapterState::new());

    // Someone else (127.0.0.7) is refused: the connection is closed at once.
    let refused = loop {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.7:0".parse().unwrap()).unwrap();
        match tokio::time::timeout(LIMIT, socket.connect(addr)).await.unwrap() {
            Ok(s) => break s,
            // The listener may not be bound yet.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(LIMIT, async {
        use tokio::io::AsyncReadExt;
        let mut refused = refused;
        refused.read(&mut buf).await
    })
    .await
    .unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "a refused peer gets EOF or a reset");

    let sim_config = R9SimConfig { timezone: "America/New_York".into(), ..R9SimConfig::fast(SmdrSide::Push(addr)) };
    let sim = R9Sim::start(sim_config).await.unwrap();
    sim.wait_for_smdr_collectors(1).await;
    let s = sim.play(&Scenario::InboundAnswered(CallSpec::numbered(1))).await;
    run.wait_for_end(s.call_id).await;
    let events = run.stop_all().await;
    expect(&level3(&events), s.call_id, SMDR_ONLY[0].1);
    sim.stop().await;
}

#[tokio::test]
async fn an_outage_replays_the_buffer_without_duplicates() {
    let sim_config =
        R9SimConfig { replay_delivered: 10, ..R9SimConfig::fast(SmdrSide::Listen("127.0.0.1:0".parse().unwrap())) };
    let sim = R9Sim::start(sim_config).await.unwrap();
    let mut run = start(&connect_config(&sim), AdapterState::new());
    sim.wait_for_smdr_collectors(1).await;
    let a = sim.play(&Scenario::Transfer(CallSpec::numbered(1))).await;
    let b = sim.play(&Scenario::Missed(CallSpec::numbered(2))).await;
    run.wait_for_end(b.call_id).await;
    // The link goes down; two calls happen; the PBX buffers them and, when the link is back,
    // re-sends the last records it had delivered and then its buffer.
    sim.outage(true);
    let c = sim.play(&Scenario::ParkUnpark(CallSpec::numbered(3))).await;
    let d = sim.play(&Scenario::Voicemail(CallSpec::numbered(4))).await;
    assert_eq!(sim.buffered(), 4);
    sim.outage(false);
    sim.wait_for_smdr_collectors(2).await;
    let marker = sim.play(&Scenario::InboundAnswered(CallSpec::numbered(5))).await;
    run.wait_for_end(marker.call_id).await;
    let events = run.stop_all().await;
    let ends: Vec<String> = events.iter().filter_map(ended_call).collect();
    let want: Vec<String> = [&a, &b, &c, &d, &marker].iter().map(|s| s.call_id.to_string()).collect();
    assert_eq!(ends, want, "each call once, in order");
    let got = level3(&events);
    expect(&got, a.call_id, SMDR_ONLY[3].1);
    expect(&got, c.call_id, SMDR_ONLY[4].1);
    expect(&got, d.call_id, SMDR_ONLY[5].1);
    sim.stop().await;
}

/// What a daemon would persist: the adapter's checkpoints applied in order.
fn checkpoints(events: &[AdapterEvent], state: &mut AdapterState) {
    for e in events {
        if let AdapterEvent::Checkpoint { key, value, .. } = e {
            match value {
                Some(v) => state.insert(key.clone(), v.clone()),
                None => state.remove(key),
            };
        }
    }
}

#[tokio::test]
async fn a_restart_mid_call_loses_nothing_and_repeats_nothing() {
    let sim_config =
        R9SimConfig { replay_delivered: 10, ..R9SimConfig::fast(SmdrSide::Listen("127.0.0.1:0".parse().unwrap())) };
    let sim = R9Sim::start(sim_config).await.unwrap();
    let config = connect_config(&sim);
    let mut run = start(&config, AdapterState::new());
    sim.wait_for_smdr_collectors(1).await;
    let a = sim.play(&Scenario::InboundAnswered(CallSpec::numbered(1))).await;
    run.wait_for_end(a.call_id).await;
    // The transfer's first segment arrives; then the daemon stops.
    let (start_text, _) = sim.pbx_now();
    let script = pbx_sim::avaya_r9::script(&Scenario::Transfer(CallSpec::numbered(2)), 77, &start_text);
    let segments: Vec<String> = script
        .emits
        .iter()
        .filter_map(|(_, e)| match e {
            pbx_sim::avaya_r9::Emit::Smdr(l) => Some(l.clone()),
            _ => None,
        })
        .collect();
    sim.send_smdr_raw(&segments[0]);
    run.wait_until(
        "the first segment's checkpoint",
        |e| matches!(e, AdapterEvent::Checkpoint { key, value: Some(_), .. } if key.starts_with("smdr-pending/77@")),
    )
    .await
    .unwrap();
    sim.outage(true);
    let first = run.stop_all().await;
    let mut state = AdapterState::new();
    checkpoints(&first, &mut state);
    // The call ends while the daemon is down; it comes back with what it checkpointed, and
    // the PBX replays what it had delivered before and its buffer.
    sim.send_smdr_raw(&segments[1]);
    let mut run = start(&config, state);
    sim.outage(false);
    sim.wait_for_smdr_collectors(2).await;
    let marker = sim.play(&Scenario::Missed(CallSpec::numbered(3))).await;
    run.wait_for_end(marker.call_id).await;
    let second = run.stop_all().await;
    let ends: Vec<String> = first.iter().chain(&second).filter_map(ended_call).collect();
    assert_eq!(ends, [a.call_id.to_string(), "77".to_owned(), marker.call_id.to_string()]);
    let mut all = first.clone();
    all.extend(second);
    let got = level3(&all);
    expect(&got, 77, SMDR_ONLY[3].1);
    sim.stop().await;
}

/// The same calls with Delta2 alongside: Delta2 drives them, SMDR adds nothing; a call during
/// a relay outage comes from SMDR alone, once.
#[tokio::test]
async fn delta2_alongside_smdr_without_duplicates() {
    let sim_config = R9SimConfig {
        delta2_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..R9SimConfig::fast(SmdrSide::Listen("127.0.0.1:0".parse().unwrap()))
    };
    let sim = R9Sim::start(sim_config).await.unwrap();
    let mut config = connect_config(&sim);
    let mut d2 = Delta2Config::new(sim.delta2_addr().unwrap().to_string());
    d2.reconnect_min_ms = 100;
    d2.reconnect_max_secs = 1;
    config.delta2 = Some(d2);
    let mut run = start(&config, AdapterState::new());
    // Both feeds up as the adapter sees them (before that, SMDR rightly reports calls alone).
    run.wait_until("the link up", |e| matches!(e, AdapterEvent::Link { state: listener_core::LinkState::Up, .. }))
        .await
        .unwrap();
    let mut calls = Vec::new();
    for (n, name) in Scenario::NAMES.iter().enumerate() {
        calls.push(sim.play(&Scenario::named(name, n as u64).unwrap()).await);
    }
    for s in &calls {
        run.wait_for_end(s.call_id).await;
    }
    // The relay goes away; a call happens; the relay comes back.
    sim.delta2_outage(true);
    let missed_by_delta2 = sim.play(&Scenario::Transfer(CallSpec::numbered(9))).await;
    run.wait_for_end(missed_by_delta2.call_id).await;
    sim.delta2_outage(false);
    sim.wait_for_delta2_clients(2).await;
    let marker = sim.play(&Scenario::InboundAnswered(CallSpec::numbered(10))).await;
    run.wait_for_end(marker.call_id).await;
    let events = run.stop_all().await;
    let ends: Vec<String> = events.iter().filter_map(ended_call).collect();
    let mut want: Vec<String> = calls.iter().map(|s| s.call_id.to_string()).collect();
    want.push(missed_by_delta2.call_id.to_string());
    want.push(marker.call_id.to_string());
    assert_eq!(ends, want, "each call ended once");
    let got = level3(&events);
    // Delta2's times are when its lines arrived (all at once here), so only the order and the
    // statuses are compared for its calls.
    let statuses = |call: u64| -> Vec<String> {
        got[&call.to_string()].iter().map(|l| l.split(" +").next().unwrap().to_owned()).collect()
    };
    assert_eq!(statuses(calls[0].call_id), ["4001 ringing", "4001 connected", "4001 disconnected normal"]);
    assert_eq!(statuses(calls[1].call_id), ["4001 ringing", "4001 disconnected caller-abandoned"]);
    assert_eq!(
        statuses(calls[2].call_id),
        [
            "4001 ringing",
            "4002 ringing",
            "4003 ringing",
            "4001 disconnected answered-elsewhere",
            "4003 disconnected answered-elsewhere",
            "4002 connected",
            "4002 disconnected normal"
        ]
    );
    assert_eq!(
        statuses(calls[3].call_id),
        [
            "4001 ringing",
            "4001 connected",
            "4001 held",
            "4001 transferred transferTarget=4002",
            "4001 disconnected transferred",
            "4002 ringing",
            "4002 connected",
            "4002 disconnected normal"
        ]
    );
    assert_eq!(
        statuses(calls[4].call_id),
        [
            "4001 ringing",
            "4001 connected",
            "4001 parked parkSlot=1",
            "4001 disconnected parked",
            "4002 connected parkSlot=1",
            "4002 disconnected normal"
        ]
    );
    assert_eq!(statuses(calls[5].call_id), ["4001 ringing", "4001 disconnected voicemail"]);
    for s in &calls {
        assert!(
            got[&s.call_id.to_string()].iter().all(|l| l.ends_with("[delta2]")),
            "{:?}",
            got[&s.call_id.to_string()]
        );
    }
    // The call Delta2 missed: SMDR's exact sequence.
    expect(&got, missed_by_delta2.call_id, SMDR_ONLY[3].1);
    sim.stop().await;
}
