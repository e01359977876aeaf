//! The 3CX client (`adapter-3cx`) against the simulator over real loopback sockets (HTTP/WS
//! and HTTPS/WSS, the CDR socket both ways): every scenario, the exact signals per extension,
//! and the Level 3 statuses per extension after `listener_core::CallLifecycle`; the start-up
//! checks and the token's failure modes, each with its own message.
//!
//! Each test is bounded: waits give up after `LIMIT` and fail; nothing asserts on timing.

#![allow(clippy::unwrap_used)] // Tests unwrap what they built themselves.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use adapter_3cx::{CdrConfig, Config, ThreeCxAdapter};
use generic_event::GenericEvent;
use listener_core::{
    AdapterEvent, AdapterState, CallChange, CallLifecycle, EventContext, LinkState, PbxId, PbxType, SignalBody,
};
use pbx_sim::adapter_run::{AdapterRun, LIMIT};
use pbx_sim::avaya_r11::TlsFiles;
use pbx_sim::conformance::{self, SequenceKey};
use pbx_sim::threecx::{CallSpec, Scenario, SimConfig, ThreeCxSim};

const TLS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/tls");
const CLIENT: &str = "pbxlistener";
const SECRET: &str = "s3cr3t-key";

/// A secret file removed when the test ends.
struct SecretFile(PathBuf);

impl SecretFile {
    fn new(secret: &str) -> SecretFile {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("threecx-e2e-{}-{n}.secret", std::process::id()));
        std::fs::File::create(&path).unwrap().write_all(format!("{secret}\n").as_bytes()).unwrap();
        SecretFile(path)
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct Rig {
    sim: ThreeCxSim,
    run: AdapterRun,
    _secret: SecretFile,
}

/// A simulator and the adapter against it; `tweak` adjusts the client configuration.
async fn rig(sim_config: SimConfig, client_secret: &str, tweak: impl FnOnce(&mut Config, &ThreeCxSim)) -> Rig {
    let sim = ThreeCxSim::start("127.0.0.1:0".parse().unwrap(), sim_config).await.unwrap();
    let secret = SecretFile::new(client_secret);
    let mut config = Config::new(sim.url(), CLIENT, secret.0.clone());
    config.extensions = vec!["101".into(), "102".into(), "103".into()];
    config.reconnect_min_ms = 100;
    config.reconnect_max_secs = 1;
    config.connect_timeout_secs = 5;
    config.removal_grace_ms = 300;
    config.auth_failure_backoff_secs = 60;
    tweak(&mut config, &sim);
    let adapter =
        ThreeCxAdapter::new(PbxId::new("e2e", PbxType::new("3cx")), config.load().unwrap(), AdapterState::new());
    Rig { sim, run: AdapterRun::start(Box::new(adapter)), _secret: secret }
}

impl Rig {
    /// Receives events until `done` says so; fails after the limit.
    async fn wait_until(&mut self, what: &str, done: impl FnMut(&AdapterEvent) -> bool) {
        self.run.wait_until(what, done).await.unwrap();
    }

    fn count(&self, f: impl Fn(&AdapterEvent) -> bool) -> usize {
        self.run.events.iter().filter(|e| f(e)).count()
    }

    /// Waits until `n` calls ended (call-level `Ended` signals).
    async fn wait_for_ended_calls(&mut self, n: usize) {
        let mut seen = self.count(is_ended);
        if seen >= n {
            return;
        }
        self.wait_until("ended calls", |e| {
            seen += usize::from(is_ended(e));
            seen >= n
        })
        .await;
    }

    /// Waits for the `n`-th resync (one per snapshot).
    async fn wait_for_resyncs(&mut self, n: usize) {
        let mut seen = self.count(|e| matches!(e, AdapterEvent::Resync { .. }));
        if seen >= n {
            return;
        }
        self.wait_until("a resync", |e| {
            seen += usize::from(matches!(e, AdapterEvent::Resync { .. }));
            seen >= n
        })
        .await;
    }

    async fn wait_for_link(&mut self, want: fn(&LinkState) -> bool) -> LinkState {
        if let Some(s) = self.links().into_iter().find(&want) {
            return s;
        }
        self.wait_until("a link state", |e| matches!(e, AdapterEvent::Link { state, .. } if want(state))).await;
        self.links().into_iter().rev().find(want).unwrap()
    }

    async fn ready(&mut self) {
        self.wait_for_resyncs(1).await;
    }

    /// The tracker's signals per extension: `change[:detail]` in order, `[cdr]` for the CDR's.
    fn signals(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in &self.run.events {
            let AdapterEvent::Signal(s) = e else { continue };
            let SignalBody::Call(c) = &s.body else { panic!("an extension signal from 3CX") };
            let mut text = match &c.change {
                CallChange::Ringing => "ringing".to_owned(),
                CallChange::Connected => "connected".to_owned(),
                CallChange::Parked { slot } => format!("parked:{}", slot.as_deref().unwrap_or("")),
                CallChange::Transferred { to } => format!("transferred:{}", to.as_deref().unwrap_or("")),
                CallChange::Queued { queue } => format!("queued:{}", queue.as_deref().unwrap_or("")),
                CallChange::Disconnected { reason } => format!("disconnected:{}", reason.as_str()),
                CallChange::Ended => "ended".to_owned(),
                other => format!("{other:?}"),
            };
            if s.facts.get("reconciled").map(String::as_str) == Some("true") {
                text.push_str(" (reconciled)");
            }
            if s.source == "cdr" {
                text.push_str(" [cdr]");
            }
            out.entry(c.extension.as_ref().map_or("-".to_owned(), |x| x.0.clone())).or_default().push(text);
        }
        out
    }

    fn level3(&self) -> Vec<GenericEvent> {
        let ctx =
            EventContext { account_id: uuid::Uuid::nil(), account_name: "e2e".into(), static_meta: Default::default() };
        CallLifecycle::level3_unbound(ctx, &self.run.events)
    }

    /// The Level 3 statuses per extension, after checking the contract's rules on them.
    fn statuses(&self) -> BTreeMap<String, Vec<String>> {
        let events = self.level3();
        let broken = conformance::contract_violations(&events);
        assert!(broken.is_empty(), "{broken:#?}");
        conformance::sequences(&events, SequenceKey::Extension)
    }

    fn links(&self) -> Vec<LinkState> {
        self.run
            .events
            .iter()
            .filter_map(|e| match e {
                AdapterEvent::Link { state, .. } => Some(state.clone()),
                _ => None,
            })
            .collect()
    }

    async fn finish(mut self) {
        let result = self.run.stop().await.unwrap();
        assert!(result.is_ok(), "{result:?}");
        self.sim.stop().await;
    }
}

fn is_ended(e: &AdapterEvent) -> bool {
    matches!(e, AdapterEvent::Signal(s) if matches!(&s.body, SignalBody::Call(c) if c.change == CallChange::Ended))
}

fn map(entries: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
    entries.iter().map(|(k, v)| (k.to_string(), v.split(", ").map(str::to_owned).collect())).collect()
}

async fn play_one(scenario: Scenario, ended: usize) -> Rig {
    let mut rig = rig(SimConfig::fast(CLIENT, SECRET), SECRET, |_, _| {}).await;
    rig.ready().await;
    rig.sim.play(&scenario).await;
    rig.wait_for_ended_calls(ended).await;
    rig
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_call_rings_two_agents_and_one_answers() {
    let rig = play_one(Scenario::QueueAnswer(CallSpec::numbered(1)), 1).await;
    assert_eq!(
        rig.signals(),
        map(&[
            ("-", "queued:800, ended"),
            ("101", "ringing, disconnected:answered-elsewhere"),
            ("102", "ringing, connected, disconnected:normal"),
        ])
    );
    assert_eq!(
        rig.statuses(),
        map(&[("101", "ringing, disconnected:answered-elsewhere"), ("102", "ringing, connected, disconnected:normal")])
    );
    // The PBX's view of the call: inbound from the caller to the DID, over trunk 10007.
    let AdapterEvent::Signal(first) = rig.run.events.iter().find(|e| matches!(e, AdapterEvent::Signal(_))).unwrap()
    else {
        unreachable!()
    };
    let SignalBody::Call(c) = &first.body else { panic!() };
    assert_eq!(c.call.as_str(), "1264");
    assert_eq!(c.info.direction, listener_core::Direction::Inbound);
    assert_eq!(c.info.external_number.as_deref(), Some("447700900001"));
    assert_eq!(c.info.dialled_number.as_deref(), Some("441234567890"));
    assert_eq!(c.info.caller_name.as_deref(), Some("Caller 1"));
    assert_eq!(first.facts.get("trunkDn").map(String::as_str), Some("10007"));
    assert!(matches!(rig.links()[..], [LinkState::Connecting, LinkState::Up]), "{:?}", rig.links());
    let stats = rig.sim.stats();
    assert_eq!((stats.tokens, stats.snapshots, stats.websockets, stats.unauthorized), (1, 1, 1, 0));
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer() {
    let rig = play_one(Scenario::Transfer(CallSpec::numbered(2)), 1).await;
    assert_eq!(
        rig.statuses(),
        map(&[
            ("101", "ringing, connected, transferred, disconnected:transferred"),
            ("102", "ringing, connected, disconnected:normal"),
        ])
    );
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_hangs_up_while_ringing() {
    let rig = play_one(Scenario::CallerAbandon(CallSpec::numbered(3)), 1).await;
    assert_eq!(
        rig.statuses(),
        map(&[("101", "ringing, disconnected:caller-abandoned"), ("102", "ringing, disconnected:caller-abandoned")])
    );
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_call() {
    let rig = play_one(Scenario::Outbound(CallSpec::numbered(4)), 1).await;
    assert_eq!(rig.statuses(), map(&[("101", "connected, disconnected:normal")]));
    let info = rig.run.events.iter().find_map(|e| match e {
        AdapterEvent::Signal(s) => match &s.body {
            SignalBody::Call(c) => Some(c.info.clone()),
            _ => None,
        },
        _ => None,
    });
    assert_eq!(info.unwrap().direction, listener_core::Direction::Outbound);
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_mid_call() {
    let rig = play_one(Scenario::TokenExpiry(CallSpec::numbered(5)), 1).await;
    assert_eq!(rig.statuses(), map(&[("101", "ringing, connected, disconnected:normal")]));
    let stats = rig.sim.stats();
    assert_eq!(stats.tokens, 2, "one refresh after the expiry");
    assert!(stats.unauthorized >= 1);
    // The WebSocket was never dropped for it.
    assert_eq!(stats.websockets, 1);
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refreshed_before_they_expire() {
    let config = SimConfig { token_lifetime: Duration::from_secs(2), ..SimConfig::fast(CLIENT, SECRET) };
    let mut rig = rig(config, SECRET, |_, _| {}).await;
    rig.ready().await;
    // Refreshes at half-life; wait for three, bounded.
    let deadline = tokio::time::Instant::now() + LIMIT;
    while rig.sim.stats().tokens < 4 {
        assert!(tokio::time::Instant::now() < deadline, "no refresh");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rig.sim.play(&Scenario::QueueAnswer(CallSpec::numbered(6))).await;
    rig.wait_for_ended_calls(1).await;
    assert_eq!(
        rig.statuses(),
        map(&[("101", "ringing, disconnected:answered-elsewhere"), ("102", "ringing, connected, disconnected:normal")])
    );
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_dropped_mid_call_with_changes_while_down() {
    let rig = play_one(
        Scenario::WsDrop {
            ends_while_down: CallSpec::numbered(7),
            answered_while_down: CallSpec::numbered(8),
            starts_while_down: CallSpec::numbered(9),
        },
        3,
    )
    .await;
    assert_eq!(
        rig.signals(),
        map(&[
            ("-", "ended, ended, ended"),
            ("101", "ringing, connected, disconnected:unknown (reconciled)"),
            ("102", "ringing, connected (reconciled), disconnected:normal"),
            ("103", "ringing (reconciled)"),
        ])
    );
    assert_eq!(
        rig.statuses(),
        map(&[
            ("101", "ringing, connected, disconnected:unknown (reconciled)"),
            ("102", "ringing, connected (reconciled), disconnected:normal"),
            ("103", "ringing (reconciled), disconnected:caller-abandoned"),
        ])
    );
    assert_eq!(rig.sim.stats().snapshots, 2);
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_get_remove_race_leaves_no_phantom() {
    let rig = play_one(Scenario::GetRemoveRace(CallSpec::numbered(10)), 1).await;
    assert_eq!(rig.statuses(), map(&[("101", "ringing, connected, disconnected:normal")]));
    assert!(!rig.signals().contains_key("102"), "no event for a participant never seen");
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_with_a_ca_file() {
    let tls = TlsFiles { cert: format!("{TLS_DIR}/server.pem").into(), key: format!("{TLS_DIR}/server.key").into() };
    let config = SimConfig { tls: Some(tls), ..SimConfig::fast(CLIENT, SECRET) };
    let mut rig = rig(config, SECRET, |c, _| c.ca_file = Some(format!("{TLS_DIR}/ca.pem").into())).await;
    assert!(rig.sim.url().starts_with("https://"));
    rig.ready().await;
    rig.sim.play(&Scenario::Outbound(CallSpec::numbered(11))).await;
    rig.wait_for_ended_calls(1).await;
    assert_eq!(rig.statuses(), map(&[("101", "connected, disconnected:normal")]));
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_its_own_clear_error_and_backs_off() {
    let mut rig = rig(SimConfig::fast(CLIENT, SECRET), "wrong", |_, _| {}).await;
    let state = rig.wait_for_link(|s| matches!(s, LinkState::AuthFailed { .. })).await;
    let LinkState::AuthFailed { reason } = state else { unreachable!() };
    assert!(reason.contains("refused the API client's credentials"), "{reason}");
    assert!(reason.contains("invalid_client"), "{reason}");
    assert!(!reason.contains("wrong"), "the secret is never shown: {reason}");
    // One refusal, then the long wait: no hammering.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rig.sim.stats().token_refusals, 1);
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_licence_without_call_control_is_its_own_clear_error() {
    let config = SimConfig { licensed: false, ..SimConfig::fast(CLIENT, SECRET) };
    let mut rig = rig(config, SECRET, |_, _| {}).await;
    let state = rig.wait_for_link(|s| matches!(s, LinkState::AuthFailed { .. })).await;
    let LinkState::AuthFailed { reason } = state else { unreachable!() };
    assert!(reason.contains("lacks Call Control access"), "{reason}");
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_consumer_of_the_client_id_is_named_and_not_fought() {
    // The thief's last round waits for a fetch the client no longer makes: a short limit.
    let config = SimConfig { await_limit: Duration::from_secs(2), ..SimConfig::fast(CLIENT, SECRET) };
    let mut rig = rig(config, SECRET, |c, _| c.token_conflict_backoff_secs = 60).await;
    rig.ready().await;
    // Another program takes a token again and again while a call goes on.
    rig.sim.play(&Scenario::TokenThief(CallSpec::numbered(20))).await;
    let state = rig.wait_for_link(|s| matches!(s, LinkState::AuthFailed { .. })).await;
    let LinkState::AuthFailed { reason } = state else { unreachable!() };
    assert!(reason.contains("another program is using API client id \"pbxlistener\""), "{reason}");
    let tokens = rig.sim.stats().tokens;
    assert!(tokens <= 5, "{tokens} tokens: the client backs off instead of a 401 loop");
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_the_client_cannot_see_does_not_stop_the_others() {
    let mut rig = rig(SimConfig::fast(CLIENT, SECRET), SECRET, |c, _| c.extensions.push("199".into())).await;
    rig.ready().await;
    rig.sim.play(&Scenario::Outbound(CallSpec::numbered(12))).await;
    rig.wait_for_ended_calls(1).await;
    assert_eq!(rig.statuses(), map(&[("101", "connected, disconnected:normal")]));
    rig.finish().await;
}

/// A CDR line in the default order: an inbound call to 101 that nobody answered.
fn missed_call_line(history: u32, counter: u32) -> String {
    let now = jiff::Timestamp::now();
    let fmt = |t: jiff::Timestamp| t.strftime("%Y/%m/%d %H:%M:%S").to_string();
    let start = fmt(now - jiff::SignedDuration::from_secs(20));
    let end = fmt(now - jiff::SignedDuration::from_secs(5));
    format!(
        "Call {history},00000190aa_{counter},00:00:15,{start},,{end},TerminatedBySrc,+447700900555,Ext.101,10007,101,441234567890,,Ext.101,101,,,,,Chain: +447700900555;Ext.101;,Line,Extension,Extension,Caller,Agent One,Agent One,"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdr_passive_socket_backfills_a_call_missed_while_the_websocket_was_down() {
    let config = SimConfig { cdr_listen: Some("127.0.0.1:0".parse().unwrap()), ..SimConfig::fast(CLIENT, SECRET) };
    let mut rig = rig(config, SECRET, |c, sim| {
        c.cdr = Some(CdrConfig::new(None, Some(sim.cdr_addr().unwrap().to_string())));
    })
    .await;
    rig.ready().await;
    // The WebSocket goes down (and stays down); a call comes and goes meanwhile.
    rig.sim.step(pbx_sim::threecx::Step::DropWebSocket).await;
    rig.wait_for_link(|s| matches!(s, LinkState::Down { .. })).await;
    let line = missed_call_line(4242, 31337);
    // The CDR client may still be connecting: send until the record is processed (bounded).
    let deadline = tokio::time::Instant::now() + LIMIT;
    while rig.count(is_ended) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the CDR record was not processed");
        rig.sim.send_cdr(&line);
        let _ = rig.run.next_within(Duration::from_millis(200)).await;
    }
    assert_eq!(
        rig.signals(),
        map(&[("-", "ended [cdr]"), ("101", "ringing [cdr], disconnected:caller-abandoned [cdr]")])
    );
    // Sent again (3CX may repeat after a reconnect): once.
    rig.sim.send_cdr(&line);
    rig.sim.step(pbx_sim::threecx::Step::AwaitReconnect).await;
    rig.wait_for_resyncs(2).await;
    assert_eq!(rig.count(is_ended), 1);
    let keys: Vec<String> = rig
        .run
        .events
        .iter()
        .filter_map(|e| match e {
            AdapterEvent::Checkpoint { key, value: Some(_), .. } => Some(key.clone()),
            _ => None,
        })
        .collect();
    assert!(keys.contains(&"cdr/h4242".to_owned()) && keys.contains(&"call/31337".to_owned()), "{keys:?}");
    rig.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdr_active_socket_a_connection_per_record() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut rig = rig(SimConfig::fast(CLIENT, SECRET), SECRET, |c, _| {
        let mut cdr = CdrConfig::new(Some(listen.to_string()), None);
        cdr.allowed_peers = vec!["127.0.0.1".parse().unwrap()];
        c.cdr = Some(cdr);
    })
    .await;
    rig.ready().await;
    // Before the listener binds, connecting is refused: retry, bounded.
    let line = missed_call_line(4343, 31338);
    let deadline = tokio::time::Instant::now() + LIMIT;
    while rig.sim.send_cdr_to(listen, "garbage that is not a record").await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the CDR listener never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rig.sim.send_cdr_to(listen, &line).await.unwrap();
    // The call began before the listener was in sync: a call it may have missed, rebuilt.
    rig.wait_for_ended_calls(1).await;
    assert_eq!(
        rig.signals(),
        map(&[("-", "ended [cdr]"), ("101", "ringing [cdr], disconnected:caller-abandoned [cdr]")])
    );
    // The same record on a new connection: once.
    rig.sim.send_cdr_to(listen, &line).await.unwrap();
    rig.sim.play(&Scenario::Outbound(CallSpec::numbered(13))).await;
    rig.wait_for_ended_calls(2).await;
    assert_eq!(
        rig.statuses(),
        map(&[("101", "ringing, disconnected:caller-abandoned, connected, disconnected:normal")])
    );
    rig.finish().await;
}
