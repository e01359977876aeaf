//! Issue 5, end to end: the real binary binds the calls of a simulated IP Office (DevLink3 over
//! a socket) to platform legs learned from signed announcements (HTTP) or from SIP copies
//! (SIPp through Kamailio's siptrace, HEPv3), and delivers the events to a simulated platform.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use generic_event::{GenericEvent, Status, validate_json};
use pbx_sim::announce::{BLeg, announce, b_leg_event};
use pbx_sim::avaya_r11::{AvayaSim, CallSpec, Numbering, Scenario, SimConfig, Step, script};
use pbx_sim::platform::{Platform, PlatformConfig};
use pbx_sim::sip_peers::{BLEG_CALLS, place_bleg_calls};
use support::{Rig, SIM_PASSWORD, SIM_USER, eventually, platform_secret, terminate};
use uuid::Uuid;
use webhook_signature::SigningSecret;

const LIMIT: Duration = Duration::from_secs(120);

/// What the simulated platform signs its announcements with.
fn legs_secret() -> SigningSecret {
    SigningSecret::from_bytes(b"pbx-listener e2e legs secret 0001".to_vec())
}

struct Setup {
    rt: tokio::runtime::Runtime,
    pbx: Arc<AvayaSim>,
    platform: Platform,
    rig: Rig,
    legs_url: String,
    numbering: Numbering,
}

/// The simulators, and a configuration with a leg endpoint on a free port plus `extra`.
fn setup(extra: &str) -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let pbx = rt.block_on(AvayaSim::start(loopback, SimConfig::fast(SIM_USER, SIM_PASSWORD))).expect("DevLink3 sim");
    let platform = rt
        .block_on(Platform::start(loopback, PlatformConfig { secrets: vec![platform_secret()], ..Default::default() }))
        .expect("platform");
    let legs_port = support::free_port();
    let extra =
        format!("[legs]\nlisten = \"127.0.0.1:{legs_port}\"\nsigning_secret_files = [\"legs-secret\"]\n\n{extra}");
    let rig = Rig::new(pbx.addr(), &platform.url(), &extra);
    std::fs::write(rig.dir.path().join("legs-secret"), legs_secret().to_whsec()).expect("legs secret");
    Setup {
        rt,
        pbx: Arc::new(pbx),
        platform,
        rig,
        legs_url: format!("http://127.0.0.1:{legs_port}/legs"),
        numbering: Numbering::default(),
    }
}

impl Setup {
    /// Announces a B leg as the platform does when it dials into the PBX; retries while the
    /// daemon is still starting (connection refused), bounded.
    fn announce(&self, leg: &BLeg) {
        self.announce_status(leg, Status::Ringing);
    }

    /// Announces a status of a B leg (see [`Setup::announce`]).
    fn announce_status(&self, leg: &BLeg, status: Status) {
        let event = b_leg_event(leg, status, now_ms());
        eventually(LIMIT, "the leg endpoint to accept an announcement", || {
            match self.rt.block_on(announce(&self.legs_url, &[legs_secret()], std::slice::from_ref(&event))) {
                Ok((200, _)) => Some(()),
                Ok((status, body)) => panic!("the leg endpoint answered {status}: {body}"),
                Err(_) => None,
            }
        });
    }

    /// The steps of one scenario, with the next PBX call id(s).
    fn steps(&mut self, scenario: Scenario) -> Vec<Step> {
        script(&scenario, &mut self.numbering)
    }

    fn play(&self, steps: Vec<Step>) {
        self.rt.block_on(async {
            for step in steps {
                self.pbx.step(step).await;
            }
        });
    }

    fn wait_subscribed(&self) {
        self.rt.block_on(self.pbx.wait_for_subscriptions(1));
    }

    /// The platform's events, by PBX call id (`c0a82a03.<n>`), once `calls` calls have every
    /// device closed.
    fn events_by_call(&self, calls: usize) -> BTreeMap<String, Vec<GenericEvent>> {
        eventually(LIMIT, "every call delivered and closed", || {
            let mut by_call: BTreeMap<String, Vec<GenericEvent>> = BTreeMap::new();
            for d in self.platform.accepted() {
                let e = validate_json(&d.body).expect("a valid event");
                by_call.entry(e.meta["pbxCallId"].clone()).or_default().push(e);
            }
            let closed = by_call.values().filter(|evs| all_closed(evs)).count();
            (closed >= calls).then_some(by_call)
        })
    }
}

fn all_closed(events: &[GenericEvent]) -> bool {
    let mut last = BTreeMap::new();
    for e in events {
        last.insert(e.extension.clone(), e.status);
    }
    last.values().all(|s| *s == Status::Disconnected)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn leg(spec: &CallSpec, with_sip_call_id: bool) -> BLeg {
    BLeg {
        account_id: "9539ee93-64c8-802b-360b-c6f2f7cf2507".parse().expect("uuid"),
        account_name: "E2E".into(),
        call_sid: Uuid::new_v4(),
        parent_call_sid: Uuid::new_v4(),
        sip_call_id: with_sip_call_id.then(|| spec.sip_call_id.clone()),
        from: spec.caller.clone(),
        to: spec.did.clone(),
        meta: BTreeMap::from([("campaign".to_owned(), "e2e".to_owned())]),
    }
}

/// Every event of `events` carries `leg`'s sids and numbers, and says how it was matched.
fn assert_bound(events: &[GenericEvent], leg: &BLeg, method: &str) {
    assert!(!events.is_empty());
    for e in events {
        assert_eq!((e.call_sid, e.parent_call_sid), (Some(leg.call_sid), Some(leg.parent_call_sid)), "{e:?}");
        assert_eq!(e.meta["correlation"], method, "{e:?}");
        assert_eq!((e.from.as_str(), e.to.as_str()), (leg.from.as_str(), leg.to.as_str()), "the B leg's numbers");
        assert_eq!(e.meta["campaign"], "e2e", "the B leg's tags");
    }
}

fn assert_unbound(events: &[GenericEvent], method: &str) {
    assert!(!events.is_empty());
    for e in events {
        assert_eq!((e.call_sid, e.parent_call_sid), (None, None), "{e:?}");
        assert_eq!(e.meta["correlation"], method, "{e:?}");
    }
}

/// Legs announced by the platform bind exactly by SIP Call-ID (SIPTrack), also when the leg is
/// announced after the PBX call has started ringing.
#[test]
fn announced_legs_bind_by_sip_call_id_even_when_late() {
    let mut s = setup("");
    let mut daemon = s.rig.spawn("run");
    let (first, late) = (CallSpec::numbered(1), CallSpec::numbered(2));
    let (first_leg, late_leg) = (leg(&first, true), leg(&late, true));
    s.announce(&first_leg);
    s.wait_subscribed();
    let steps = s.steps(Scenario::HoldResume(first.clone()));
    s.play(steps);

    // The second call rings before its leg is announced.
    let mut steps = s.steps(Scenario::HuntGroupAnswer(late.clone()));
    let ringing = steps.iter().position(|st| matches!(st, Step::Delta3 { .. })).expect("a record") + 1;
    let rest = steps.split_off(ringing);
    s.play(steps);
    s.announce(&late_leg);
    s.play(rest);

    let by_call = s.events_by_call(2);
    assert_bound(&by_call["c0a82a03.1"], &first_leg, "sip-call-id");
    assert_bound(&by_call["c0a82a03.2"], &late_leg, "sip-call-id");
    assert_eq!(terminate(&mut daemon, LIMIT).code(), Some(0), "{}", s.rig.log("run"));
}

/// Two simultaneous calls from the same caller to the same number: with SIPTrack each binds to
/// its own leg; never to the other's.
#[test]
fn simultaneous_identical_calls_bind_each_to_its_own_leg() {
    let mut s = setup("");
    let mut daemon = s.rig.spawn("run");
    let a = CallSpec::numbered(10);
    let b =
        CallSpec { sip_call_id: "second-call@platform.invalid".into(), caller_name: "Caller B".into(), ..a.clone() };
    let (leg_a, leg_b) = (leg(&a, true), leg(&b, true));
    s.announce(&leg_a);
    s.announce(&leg_b);
    s.wait_subscribed();
    let steps_a = s.steps(Scenario::HoldResume(a));
    let steps_b = s.steps(Scenario::HoldResume(b));
    s.play(interleave(steps_a, steps_b));
    let by_call = s.events_by_call(2);
    assert_bound(&by_call["c0a82a03.1"], &leg_a, "sip-call-id");
    assert_bound(&by_call["c0a82a03.2"], &leg_b, "sip-call-id");
    assert_eq!(terminate(&mut daemon, LIMIT).code(), Some(0), "{}", s.rig.log("run"));
}

/// Without SIPTrack the PBX gives no Call-ID: a call binds by caller + dialled number within
/// the time window; two simultaneous identical calls are ambiguous and are not guessed (both
/// are forwarded unbound with `meta.correlation = "ambiguous"`, never cross-bound).
#[test]
fn without_siptrack_calls_bind_by_number_and_time_and_ambiguity_is_not_guessed() {
    let mut s = setup("");
    let config = std::fs::read_to_string(&s.rig.config).expect("config");
    std::fs::write(&s.rig.config, config.replace("password_file = ", "flags = [\"-CMExtn\"]\npassword_file = "))
        .expect("config");
    let mut daemon = s.rig.spawn("run");
    s.wait_subscribed();

    let single = CallSpec::numbered(20);
    let single_leg = leg(&single, true);
    s.announce(&single_leg);
    let steps = s.steps(Scenario::HoldResume(single));
    s.play(steps);
    let by_call = s.events_by_call(1);
    assert_bound(&by_call["c0a82a03.1"], &single_leg, "number-time");
    assert!(by_call["c0a82a03.1"].iter().all(|e| !e.meta.contains_key("sipCallId")), "SIPTrack is off");

    let a = CallSpec::numbered(30);
    let b = CallSpec { sip_call_id: "other@platform.invalid".into(), ..a.clone() };
    s.announce(&leg(&a, true));
    s.announce(&leg(&b, true));
    let steps_a = s.steps(Scenario::HoldResume(a));
    let steps_b = s.steps(Scenario::HoldResume(b));
    s.play(interleave(steps_a, steps_b));
    let by_call = s.events_by_call(3);
    assert_unbound(&by_call["c0a82a03.2"], "ambiguous");
    assert_unbound(&by_call["c0a82a03.3"], "ambiguous");
    assert_eq!(terminate(&mut daemon, LIMIT).code(), Some(0), "{}", s.rig.log("run"));
}

/// `unmatched = "drop"`: a call no leg matches produces no event; bound calls still flow.
#[test]
fn unmatched_calls_are_dropped_when_configured() {
    let admin_port = support::free_port();
    let mut s = setup("[correlation]\nunmatched = \"drop\"\nwait_for_leg_ms = 500\nnumber_window_ms = 0\n");
    let config = std::fs::read_to_string(&s.rig.config).expect("config");
    std::fs::write(
        &s.rig.config,
        config.replace("[admin]\nenabled = false", &format!("[admin]\nlisten = \"127.0.0.1:{admin_port}\"")),
    )
    .expect("config");
    let mut daemon = s.rig.spawn("run");
    s.wait_subscribed();
    let (bound, unmatched, after) = (CallSpec::numbered(40), CallSpec::numbered(41), CallSpec::numbered(42));
    let (bound_leg, after_leg) = (leg(&bound, true), leg(&after, true));
    s.announce(&bound_leg);
    s.announce(&after_leg);
    for spec in [bound, unmatched, after] {
        let steps = s.steps(Scenario::HoldResume(spec));
        s.play(steps);
    }
    // The unmatched call's signals were dropped (counted), not delivered.
    eventually(LIMIT, "the unmatched call's signals dropped", || {
        let metrics = support::http_get(&format!("127.0.0.1:{admin_port}"), "/metrics")?;
        metrics
            .lines()
            .find(|l| l.starts_with("pbx_listener_signals_dropped_total{reason=\"unmatched\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .filter(|n| *n > 0.0)
    });
    let by_call = s.events_by_call(2);
    assert_bound(&by_call["c0a82a03.1"], &bound_leg, "sip-call-id");
    assert_bound(&by_call["c0a82a03.3"], &after_leg, "sip-call-id");
    assert!(!by_call.contains_key("c0a82a03.2"), "the unmatched call must not be delivered: {by_call:#?}");
    assert_eq!(terminate(&mut daemon, LIMIT).code(), Some(0), "{}", s.rig.log("run"));
}

/// Legs learned only from SIP: SIPp places the B legs through Kamailio, whose siptrace sends
/// HEPv3 to the daemon's SIP tap; the PBX calls then bind exactly by SIP Call-ID. The PBX shows
/// other numbers than the legs, so nothing but the Call-ID can bind them.
#[test]
fn legs_learned_from_sipp_through_kamailio_bind_exactly() {
    const HEP_KEY: &str = "e2e-hep-key";
    let hep_port = support::free_udp_port();
    let mut s =
        setup(&format!("[sip_tap]\nhep_udp_listen = \"127.0.0.1:{hep_port}\"\nhep_auth_key_file = \"hep-key\"\n"));
    std::fs::write(s.rig.dir.path().join("hep-key"), HEP_KEY).expect("hep key");
    let mut daemon = s.rig.spawn("run");
    s.wait_subscribed();
    let peers = s.rig.dir.path().join("peers");
    std::fs::create_dir_all(&peers).expect("peers dir");
    place_bleg_calls(&peers, SocketAddr::from(([127, 0, 0, 1], hep_port)), HEP_KEY).unwrap_or_else(|e| panic!("{e}"));

    for (i, call) in BLEG_CALLS.iter().enumerate() {
        let spec = CallSpec {
            sip_call_id: call.sip_call_id.to_owned(),
            caller: format!("44770090{i:04}"),
            did: "441234500000".into(),
            caller_name: format!("SIPp caller {i}"),
        };
        let steps = s.steps(Scenario::HoldResume(spec));
        s.play(steps);
    }
    let by_call = s.events_by_call(2);
    for (i, call) in BLEG_CALLS.iter().enumerate() {
        let events = &by_call[&format!("c0a82a03.{}", i + 1)];
        for e in events {
            assert_eq!(e.call_sid.map(|u| u.to_string()).as_deref(), Some(call.call_sid), "{e:?}");
            assert_eq!(e.parent_call_sid.map(|u| u.to_string()).as_deref(), Some(call.parent_call_sid), "{e:?}");
            assert_eq!(e.meta["correlation"], "sip-call-id");
            assert_eq!((e.from.as_str(), e.to.as_str()), (call.caller, call.did), "the B leg's numbers, from SIP");
        }
    }
    assert_eq!(terminate(&mut daemon, LIMIT).code(), Some(0), "{}", s.rig.log("run"));
}

/// Issue 9 item 12: an ended leg is swept by the correlator's timer while nothing else happens,
/// and `/metrics` shows it (the legs gauge falls back to 0 with no further traffic).
#[test]
fn ended_legs_are_swept_when_traffic_stops() {
    let admin_port = support::free_port();
    let s = setup("[correlation]\nended_leg_keep_secs = 1\n");
    let config = std::fs::read_to_string(&s.rig.config).expect("config");
    std::fs::write(
        &s.rig.config,
        config.replace("[admin]\nenabled = false", &format!("[admin]\nlisten = \"127.0.0.1:{admin_port}\"")),
    )
    .expect("config");
    let mut daemon = s.rig.spawn("run");
    let gauge = || {
        let metrics = support::http_get(&format!("127.0.0.1:{admin_port}"), "/metrics")?;
        metrics
            .lines()
            .find(|l| l.starts_with("pbx_listener_correlation_legs "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let leg = leg(&CallSpec::numbered(60), true);
    s.announce(&leg);
    s.announce_status(&leg, Status::Completed);
    // Nothing else arrives: the leg leaves ended_leg_keep_secs after its end.
    eventually(LIMIT, "the ended leg swept", || gauge().filter(|n| *n == 0.0));
    assert_eq!(terminate(&mut daemon, LIMIT).code(), Some(0), "{}", s.rig.log("run"));
}

/// Alternates the steps of two calls, so that they are live at the same time.
fn interleave(a: Vec<Step>, b: Vec<Step>) -> Vec<Step> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter(), b.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}
