//! The DevLink3 client (`adapter-avaya-r11`) against the simulator over real loopback sockets:
//! every scenario, the exact signals per extension, and the Level 3 statuses per extension
//! after `listener_core::CallLifecycle`.
//!
//! Each test is bounded: waits give up after `LIMIT` and fail; nothing asserts on timing.

#![allow(clippy::unwrap_used)] // Tests unwrap what they built themselves.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use adapter_avaya_r11::packet::{CmExtn, EventHeader, EventTuple};
use adapter_avaya_r11::{Config, DevLink3Adapter};
use bytes::Bytes;
use generic_event::GenericEvent;
use listener_core::{AdapterEvent, CallChange, CallLifecycle, EventContext, LinkState, PbxId, PbxType, SignalBody};
use pbx_sim::adapter_run::{AdapterRun, LIMIT};
use pbx_sim::avaya_r11::{AuthMode, AvayaSim, CallSpec, Scenario, SimConfig, TlsFiles};
use pbx_sim::conformance::{self, SequenceKey};
const TLS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/tls");

/// A password file removed when the test ends.
struct PasswordFile(PathBuf);

impl PasswordFile {
    fn new(password: &str) -> PasswordFile {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("avaya-e2e-{}-{n}.password", std::process::id()));
        std::fs::File::create(&path).unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
        PasswordFile(path)
    }
}

impl Drop for PasswordFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct Rig {
    sim: AvayaSim,
    run: AdapterRun,
    _password: PasswordFile,
}

/// Starts a simulator and the adapter against it. `tweak` adjusts the client configuration.
async fn rig(sim_config: SimConfig, client_password: &str, tweak: impl FnOnce(&mut Config)) -> Rig {
    let sim = AvayaSim::start("127.0.0.1:0".parse().unwrap(), sim_config).await.unwrap();
    let password = PasswordFile::new(client_password);
    let mut config = Config::new("127.0.0.1", "devlink", password.0.clone());
    config.port = Some(sim.addr().port());
    config.resync_settle_ms = 200;
    config.reconnect_min_ms = 100;
    config.reconnect_max_secs = 1;
    config.connect_timeout_secs = 5;
    tweak(&mut config);
    let adapter = DevLink3Adapter::new(PbxId::new("e2e", PbxType::new("avaya-r11")), config.load().unwrap());
    Rig { sim, run: AdapterRun::start(Box::new(adapter)), _password: password }
}

fn is_ended(e: &AdapterEvent, call_count: &mut usize) -> bool {
    if let AdapterEvent::Signal(s) = e
        && let SignalBody::Call(c) = &s.body
        && c.change == CallChange::Ended
    {
        *call_count += 1;
    }
    false
}

impl Rig {
    /// Receives events until `done` says so; fails after the limit.
    async fn wait_until(&mut self, what: &str, done: impl FnMut(&AdapterEvent) -> bool) {
        self.run.wait_until(what, done).await.unwrap();
    }

    async fn wait_for_ended_calls(&mut self, n: usize) {
        let mut seen = self.ended_calls();
        if seen >= n {
            return;
        }
        self.wait_until("ended calls", |e| {
            is_ended(e, &mut seen);
            seen >= n
        })
        .await;
    }

    fn ended_calls(&self) -> usize {
        let mut n = 0;
        for e in &self.run.events {
            is_ended(e, &mut n);
        }
        n
    }

    /// Waits for the resync that follows the `n`-th subscription.
    async fn wait_for_resyncs(&mut self, n: usize) {
        let mut seen = self.run.events.iter().filter(|e| matches!(e, AdapterEvent::Resync { .. })).count();
        if seen >= n {
            return;
        }
        self.wait_until("a resync", |e| {
            if matches!(e, AdapterEvent::Resync { .. }) {
                seen += 1;
            }
            seen >= n
        })
        .await;
    }

    /// Connects, waits for the first (empty) snapshot to settle.
    async fn ready(&mut self) {
        tokio::time::timeout(LIMIT, self.sim.wait_for_subscriptions(1)).await.unwrap();
        self.wait_for_resyncs(1).await;
    }

    /// The tracker's signals per extension: `change[:detail]` in order.
    fn signals(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in &self.run.events {
            let AdapterEvent::Signal(s) = e else { continue };
            assert_eq!(s.source, "devlink3");
            let (key, text) = match &s.body {
                SignalBody::Call(c) => {
                    let text = match &c.change {
                        CallChange::Ringing => "ringing".to_owned(),
                        CallChange::Connected => "connected".to_owned(),
                        CallChange::Held => "held".to_owned(),
                        CallChange::Resumed => "resumed".to_owned(),
                        CallChange::Parked { slot } => format!("parked:{}", slot.as_deref().unwrap_or("")),
                        CallChange::Unparked { slot } => format!("unparked:{}", slot.as_deref().unwrap_or("")),
                        CallChange::Transferred { to } => format!("transferred:{}", to.as_deref().unwrap_or("")),
                        CallChange::Queued { queue } => format!("queued:{}", queue.as_deref().unwrap_or("")),
                        CallChange::Disconnected { reason } => format!("disconnected:{}", reason.as_str()),
                        CallChange::Ended => "ended".to_owned(),
                    };
                    (c.extension.as_ref().map_or("-".to_owned(), |x| x.0.clone()), text)
                }
                SignalBody::Extension(x) => (format!("ext {}", x.extension), format!("{:?}", x.state)),
            };
            out.entry(key).or_default().push(text);
        }
        out
    }

    /// The Level 3 events the real `CallLifecycle` builds from what the adapter sent.
    fn level3(&self) -> Vec<GenericEvent> {
        let ctx =
            EventContext { account_id: uuid::Uuid::nil(), account_name: "e2e".into(), static_meta: Default::default() };
        CallLifecycle::level3_unbound(ctx, &self.run.events)
    }

    /// The Level 3 statuses per extension (the conformance suite's notation), after checking
    /// the contract's rules on them.
    fn statuses(&self) -> BTreeMap<String, Vec<String>> {
        let events = self.level3();
        let broken = conformance::contract_violations(&events);
        assert!(broken.is_empty(), "{broken:#?}");
        conformance::sequences(&events, SequenceKey::Extension)
    }

    fn links(&self) -> Vec<String> {
        self.run
            .events
            .iter()
            .filter_map(|e| match e {
                AdapterEvent::Link { state, .. } => Some(match state {
                    LinkState::Connecting => "connecting".to_owned(),
                    LinkState::Up => "up".to_owned(),
                    LinkState::Down { .. } => "down".to_owned(),
                    LinkState::AuthFailed { .. } => "auth-failed".to_owned(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Every call signal carries the scenario's SIP Call-ID once SIPTrack gave it.
    fn sip_call_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .run
            .events
            .iter()
            .filter_map(|e| match e {
                AdapterEvent::Signal(s) => match &s.body {
                    SignalBody::Call(c) => c.info.sip_call_id.as_deref().map(str::to_owned),
                    SignalBody::Extension(_) => None,
                },
                _ => None,
            })
            .collect();
        ids.dedup();
        ids
    }

    async fn finish(mut self) {
        let result = self.run.stop().await.unwrap();
        assert!(result.is_ok(), "{result:?}");
        self.sim.stop().await;
    }
}

fn map(entries: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
    entries.iter().map(|(k, v)| (k.to_string(), v.split(", ").map(str::to_owned).collect())).collect()
}

fn spec(n: u64) -> CallSpec {
    CallSpec {
        sip_call_id: format!("b-leg-{n}@platform.example"),
        caller: format!("44770090012{n}"),
        did: "441234567890".into(),
        caller_name: format!("Caller {n}"),
    }
}

async fn play_one(scenario: Scenario, sim_config: SimConfig) -> Rig {
    let mut rig = rig(sim_config, "secret", |_| {}).await;
    rig.ready().await;
    rig.sim.play(&scenario).await;
    rig.wait_for_ended_calls(1).await;
    rig
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hunt_group_rings_three_phones_and_one_answers() {
    let rig = play_one(Scenario::HuntGroupAnswer(spec(1)), SimConfig::fast("devlink", "secret")).await;
    assert_eq!(
        rig.signals(),
        map(&[
            ("-", "ended"),
            ("4001", "ringing, disconnected:answered-elsewhere"),
            ("4002", "ringing, connected, disconnected:normal"),
            ("4003", "ringing, disconnected:answered-elsewhere"),
        ])
    );
    assert_eq!(
        rig.statuses(),
        map(&[
            ("4001", "ringing, disconnected:answered-elsewhere"),
            ("4002", "ringing, connected, disconnected:normal"),
            ("4003", "ringing, disconnected:answered-elsewhere"),
        ])
    );
    assert_eq!(rig.sip_call_ids(), ["b-leg-1@platform.example"]);
    // The PBX's view of the call: inbound from the CLI to the DID, with the caller's name.
    let AdapterEvent::Signal(first) = rig.run.events.iter().find(|e| matches!(e, AdapterEvent::Signal(_))).unwrap()
    else {
        unreachable!()
    };
    let SignalBody::Call(c) = &first.body else { panic!() };
    assert_eq!(c.call.as_str(), "c0a82a03.1");
    assert_eq!(c.info.direction, listener_core::Direction::Inbound);
    assert_eq!(c.info.external_number.as_deref(), Some("447700900121"));
    assert_eq!(c.info.dialled_number.as_deref(), Some("441234567890"));
    assert_eq!(c.info.caller_name.as_deref(), Some("Caller 1"));
    assert_eq!(first.facts.get("huntGroup").map(String::as_str), Some("200"));
    assert!(first.facts.contains_key("avayaEndId"));
    assert_eq!(rig.links(), ["connecting", "up"]);
    let stats = rig.sim.stats();
    assert_eq!((stats.connections, stats.auth_attempts, stats.auth_failures, stats.subscriptions), (1, 1, 0, 1));
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_resume() {
    let rig = play_one(Scenario::HoldResume(spec(2)), SimConfig::fast("devlink", "secret")).await;
    assert_eq!(
        rig.signals(),
        map(&[("-", "ended"), ("4001", "ringing, connected, held, resumed, disconnected:normal")])
    );
    assert_eq!(rig.statuses(), map(&[("4001", "ringing, connected, held, connected, disconnected:normal")]));
    assert_eq!(rig.sip_call_ids(), ["b-leg-2@platform.example"]);
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn park_and_unpark() {
    let rig = play_one(Scenario::ParkUnpark(spec(3)), SimConfig::fast("devlink", "secret")).await;
    assert_eq!(
        rig.signals(),
        map(&[("-", "ended"), ("4001", "ringing, connected, parked:1"), ("4002", "unparked:1, disconnected:normal")])
    );
    assert_eq!(
        rig.statuses(),
        map(&[("4001", "ringing, connected, parked, disconnected:parked"), ("4002", "connected, disconnected:normal")])
    );
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blind_transfer() {
    let rig = play_one(Scenario::BlindTransfer(spec(4)), SimConfig::fast("devlink", "secret")).await;
    assert_eq!(
        rig.signals(),
        map(&[
            ("-", "ended"),
            ("4001", "ringing, connected, transferred:4002"),
            ("4002", "ringing, connected, disconnected:normal"),
        ])
    );
    assert_eq!(
        rig.statuses(),
        map(&[
            ("4001", "ringing, connected, transferred, disconnected:transferred"),
            ("4002", "ringing, connected, disconnected:normal"),
        ])
    );
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attended_transfer() {
    let mut rig = rig(SimConfig::fast("devlink", "secret"), "secret", |_| {}).await;
    rig.ready().await;
    rig.sim.play(&Scenario::AttendedTransfer(spec(5))).await;
    // The consultation call and the transferred call both end.
    rig.wait_for_ended_calls(2).await;
    assert_eq!(
        rig.signals(),
        map(&[
            ("-", "ended, ended"),
            // Call 1: answered, held, transferred; then the consultation call 2.
            ("4001", "ringing, connected, held, connected, transferred:4002, transferred:"),
            ("4002", "ringing, connected, connected, disconnected:normal"),
        ])
    );
    assert_eq!(
        rig.statuses(),
        map(&[
            (
                "4001",
                "ringing, connected, held, connected, transferred, disconnected:transferred, transferred, disconnected:transferred"
            ),
            ("4002", "ringing, connected, connected, disconnected:normal, disconnected:normal"),
        ])
    );
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_abandons_a_queued_call() {
    let rig = play_one(Scenario::CallerAbandon(spec(6)), SimConfig::fast("devlink", "secret")).await;
    assert_eq!(
        rig.signals(),
        map(&[
            ("-", "queued:200, ended"),
            ("4001", "ringing, disconnected:caller-abandoned"),
            ("4002", "ringing, disconnected:caller-abandoned"),
            ("4003", "ringing, disconnected:caller-abandoned"),
        ])
    );
    assert_eq!(
        rig.statuses(),
        map(&[
            ("4001", "ringing, disconnected:caller-abandoned"),
            ("4002", "ringing, disconnected:caller-abandoned"),
            ("4003", "ringing, disconnected:caller-abandoned"),
        ])
    );
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_drop_mid_call_is_reconciled() {
    let mut rig = rig(SimConfig::fast("devlink", "secret"), "secret", |_| {}).await;
    rig.ready().await;
    let scenario = Scenario::LinkDrop { ends_while_down: spec(7), survives: spec(8) };
    rig.sim.play(&scenario).await;
    // Call 2 survives and ends live; call 1 ended while we were away.
    rig.wait_for_ended_calls(1).await;
    rig.wait_for_resyncs(2).await;
    assert_eq!(
        rig.signals(),
        map(&[
            ("-", "ended"),
            // Nothing live about 4001 after the drop: its call ended unseen.
            ("4001", "ringing, connected"),
            // The snapshot after reconnecting shows 4002 on hold.
            ("4002", "ringing, connected, held, resumed, disconnected:normal"),
        ])
    );
    assert_eq!(
        rig.statuses(),
        map(&[
            ("4001", "ringing, connected, disconnected:unknown (reconciled)"),
            ("4002", "ringing, connected, held, connected, disconnected:normal"),
        ])
    );
    // The second snapshot does not list the call that ended during the outage.
    let resyncs: Vec<&Vec<listener_core::PbxCallId>> = rig
        .run
        .events
        .iter()
        .filter_map(|e| match e {
            AdapterEvent::Resync { live_calls, .. } => Some(live_calls),
            _ => None,
        })
        .collect();
    assert_eq!(resyncs.len(), 2);
    assert!(resyncs[0].is_empty());
    assert!(!resyncs[1].iter().any(|c| c.as_str() == "c0a82a03.1"), "{resyncs:?}");
    let links = rig.links();
    assert_eq!(&links[..2], ["connecting", "up"]);
    assert_eq!(links.last().map(String::as_str), Some("up"));
    assert!(links.contains(&"down".to_owned()));
    assert!(rig.sim.stats().subscriptions >= 2);
    assert_eq!(rig.sim.stats().auth_failures, 0);
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_in_one_session_closes_every_device() {
    let mut rig = rig(SimConfig::fast("devlink", "secret"), "secret", |_| {}).await;
    rig.ready().await;
    let mut ended = 0;
    for (i, name) in Scenario::NAMES.iter().enumerate() {
        let scenario = Scenario::named(name, 100 + 2 * i as u64).unwrap();
        rig.sim.play(&scenario).await;
        ended += if *name == "attended-transfer" { 2 } else { 1 };
        rig.wait_for_ended_calls(ended).await;
    }
    rig.wait_for_resyncs(2).await;
    // The compliance property: every device that rang or connected ends disconnected.
    let events = rig.level3();
    assert!(events.len() >= 40, "{}", events.len());
    let broken = conformance::contract_violations(&events);
    assert!(broken.is_empty(), "{broken:#?}");
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_an_auth_failure_and_not_retried_at_once() {
    let mut rig = rig(SimConfig::fast("devlink", "secret"), "wrong", |_| {}).await;
    rig.wait_until("the auth failure", |e| matches!(e, AdapterEvent::Link { state: LinkState::AuthFailed { .. }, .. }))
        .await;
    let Some(AdapterEvent::Link { state: LinkState::AuthFailed { reason }, .. }) = rig.run.events.last() else {
        panic!()
    };
    assert!(reason.contains("AUTHENTICATION FAILED"), "{reason}");
    assert_eq!(rig.links(), ["connecting", "auth-failed"]);
    let stats = rig.sim.stats();
    assert_eq!((stats.auth_attempts, stats.auth_failures, stats.subscriptions), (1, 1, 0));
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_password_challenge_over_tcp_is_refused() {
    let sim_config = SimConfig { auth: AuthMode::Plain, ..SimConfig::fast("devlink", "secret") };
    let mut rig = rig(sim_config, "secret", |_| {}).await;
    rig.wait_until("the refusal", |e| matches!(e, AdapterEvent::Link { state: LinkState::AuthFailed { .. }, .. }))
        .await;
    let Some(AdapterEvent::Link { state: LinkState::AuthFailed { reason }, .. }) = rig.run.events.last() else {
        panic!()
    };
    assert!(reason.contains("plain text"), "{reason}");
    // The client never sent the password: the simulator saw no failed response.
    assert_eq!(rig.sim.stats().auth_failures, 0);
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_and_plain_authentication() {
    let sim_config = SimConfig {
        auth: AuthMode::Plain,
        tls: Some(TlsFiles {
            cert: format!("{TLS_DIR}/server.pem").into(),
            key: format!("{TLS_DIR}/server.key").into(),
        }),
        ..SimConfig::fast("devlink", "secret")
    };
    let mut rig = rig(sim_config, "secret", |c| {
        c.tls = true;
        c.ca_file = Some(format!("{TLS_DIR}/ca.pem").into());
        c.tls_server_name = Some("localhost".into());
    })
    .await;
    rig.ready().await;
    rig.sim.play(&Scenario::HoldResume(spec(9))).await;
    rig.wait_for_ended_calls(1).await;
    assert_eq!(
        rig.signals(),
        map(&[("-", "ended"), ("4001", "ringing, connected, held, resumed, disconnected:normal")])
    );
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_byte_event_headers_garbage_and_bad_records_are_survived() {
    let sim_config =
        SimConfig { event_header: EventHeader::Long { request_id: 0 }, ..SimConfig::fast("devlink", "secret") };
    let mut rig = rig(sim_config, "secret", |_| {}).await;
    rig.ready().await;
    rig.sim.send_raw(Bytes::from_static(b"\x16\x03\x01 not DevLink3 \x00\x49\x00"));
    rig.sim.send_tuple(EventTuple::CallDelta3("<CallStatus>1,2</CallStatus>".into()));
    rig.sim.send_tuple(EventTuple::CallDelta3("<Detail><Call>broken".into()));
    rig.sim.send_tuple(EventTuple::SipTrack("nonsense".into()));
    rig.sim.send_tuple(EventTuple::CmExtn(CmExtn::Extended { kind: 1, param1: 2, param2: 0, text: "Extn4001".into() }));
    rig.sim.play(&Scenario::HuntGroupAnswer(spec(10))).await;
    rig.wait_for_ended_calls(1).await;
    let signals = rig.signals();
    assert_eq!(signals["ext 4001"], ["Busy"]);
    assert_eq!(signals["4002"], ["ringing", "connected", "disconnected:normal"]);
    assert_eq!(rig.links(), ["connecting", "up"], "nothing broke the link");
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_pbx_is_declared_dead_and_reconnected() {
    let mut rig = rig(SimConfig::fast("devlink", "secret"), "secret", |c| {
        c.keepalive_secs = 1;
        c.dead_link_secs = 2;
        c.connect_timeout_secs = 1;
    })
    .await;
    rig.ready().await;
    rig.sim.set_silent(true);
    rig.wait_until("the dead link", |e| matches!(e, AdapterEvent::Link { state: LinkState::Down { .. }, .. })).await;
    let Some(AdapterEvent::Link { state: LinkState::Down { reason }, .. }) = rig.run.events.last() else { panic!() };
    assert!(reason.contains("no data from the PBX"), "{reason}");
    rig.sim.set_silent(false);
    rig.wait_until("the link back up", |e| matches!(e, AdapterEvent::Link { state: LinkState::Up, .. })).await;
    assert!(rig.sim.stats().connections >= 2);
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_mix_plays_every_scenario_with_unique_sip_call_ids() {
    let mut rig = rig(SimConfig::fast("devlink", "secret"), "secret", |_| {}).await;
    rig.ready().await;
    let names = Scenario::NAMES.to_vec();
    let sim = &rig.sim;
    // One round of the seven scenarios ends eight calls (the attended transfer ends two, the
    // link drop one live).
    let mix = async {
        sim.play_mix(&names, 1_000).await;
    };
    let mut ended = 0;
    let run = &mut rig.run;
    let wait = async {
        while ended < 8 {
            let e = run.next().await.unwrap();
            is_ended(&e, &mut ended);
        }
    };
    tokio::select! {
        () = mix => panic!("the mix stopped"),
        () = wait => {}
    }
    let ids = rig.sip_call_ids();
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert!(unique.len() >= 8, "{ids:?}");
    assert!(ids.iter().all(|id| id.starts_with("sim-") && id.ends_with("@platform.invalid")));
    rig.finish().await;
}
