//! The correlator, tested by data with simulated time: each test feeds a script of leg updates
//! and PBX signals at given instants, fires every timer when the clock passes it (never
//! sleeping), and compares what came out, with when, against golden text.

use std::fmt::Write as _;

use listener_core::{
    CallChange, CallInfo, CallSignal, Direction, DisconnectReason, Extension, ExtensionSignal, ExtensionState, Facts,
    PbxCallId, PbxId, PbxSignal, PbxType, SignalBody, UnixMillis,
};
use proptest::prelude::*;
use uuid::Uuid;

use crate::*;

/// A sid whose first and last 32 bits are `n`: short to print, distinct prefixes for tokens.
fn sid(n: u32) -> Uuid {
    Uuid::from_u128((u128::from(n) << 96) | u128::from(n))
}

fn short(u: Option<Uuid>) -> String {
    u.map_or("-".to_owned(), |u| format!("{:x}", u.as_u128() as u32))
}

struct L(LegFacts);

/// A leg announced by the platform: B leg `b` of A leg `a` (`b == a` for an A leg).
fn ann(b: u32, a: u32) -> L {
    let mut f = LegFacts::new(LegSource::Announcement);
    f.call_sid = Some(sid(b));
    f.parent_call_sid = Some(sid(a));
    L(f)
}

/// A leg seen by the SIP tap.
fn tap(cid: &str) -> L {
    let mut f = LegFacts::new(LegSource::SipTap);
    f.sip_call_id = Some(cid.to_owned());
    L(f)
}

impl L {
    fn cid(mut self, c: &str) -> L {
        self.0.sip_call_id = Some(c.to_owned());
        self
    }
    fn sids(mut self, b: u32, a: u32) -> L {
        self.0.call_sid = Some(sid(b));
        self.0.parent_call_sid = Some(sid(a));
        self
    }
    fn numbers(mut self, from: &str, to: &str) -> L {
        self.0.from = Some(from.to_owned());
        self.0.to = Some(to.to_owned());
        self
    }
    fn tag(mut self, k: &str, v: &str) -> L {
        self.0.tags.insert(k.to_owned(), v.to_owned());
        self
    }
    fn learned(self) -> Input {
        Input::Leg(LegUpdate::Learned(self.0))
    }
    fn ended(self) -> Input {
        Input::Leg(LegUpdate::Ended(self.0))
    }
}

struct S {
    call: &'static str,
    ext: Option<&'static str>,
    info: CallInfo,
    source: &'static str,
}

/// A signal of PBX call `call` (inbound unless said otherwise).
fn call(call: &'static str) -> S {
    S {
        call,
        ext: Some("201"),
        info: CallInfo { direction: Direction::Inbound, ..CallInfo::default() },
        source: "test",
    }
}

impl S {
    fn ext(mut self, e: &'static str) -> S {
        self.ext = Some(e);
        self
    }
    fn cid(mut self, c: &str) -> S {
        self.info.sip_call_id = Some(c.into());
        self
    }
    fn numbers(mut self, caller: &str, did: &str) -> S {
        self.info.external_number = Some(caller.into());
        self.info.dialled_number = Some(did.into());
        self
    }
    fn name(mut self, n: &str) -> S {
        self.info.caller_name = Some(n.into());
        self
    }
    fn outbound(mut self, dialled: &str) -> S {
        self.info.direction = Direction::Outbound;
        self.info.external_number = Some(dialled.into());
        self.info.dialled_number = Some(dialled.into());
        self
    }
    /// From a feed that reports after the fact (SMDR).
    fn smdr(mut self) -> S {
        self.source = "smdr";
        self
    }
    fn direction(mut self, d: Direction) -> S {
        self.info.direction = d;
        self
    }
    fn change(self, change: CallChange, started: u64, at: u64) -> Input {
        Input::Sig(PbxSignal {
            pbx: PbxId::new("site-1", PbxType::new("3cx")),
            at: UnixMillis(at),
            source: self.source,
            facts: Facts::new(),
            body: SignalBody::Call(CallSignal {
                call: PbxCallId::new(self.call.to_owned()),
                call_started: UnixMillis(started),
                extension: self.ext.map(|e| Extension(e.to_owned())),
                change,
                info: self.info,
            }),
        })
    }
    fn ringing(self, started: u64) -> Input {
        self.change(CallChange::Ringing, started, started)
    }
    fn connected(self, started: u64, at: u64) -> Input {
        self.change(CallChange::Connected, started, at)
    }
}

enum Input {
    Leg(LegUpdate),
    Sig(PbxSignal),
    /// The PBX's snapshot after a reconnect lists these calls.
    Resync(Vec<&'static str>),
}

/// Runs `steps` (instant, input) through a correlator, firing timers as the clock passes
/// them and after the last step, and returns one line per output.
fn run(config: CorrelationConfig, steps: Vec<(u64, Input)>) -> (String, CorrelationStats) {
    run_with(CorrelationSettings::new(config).unwrap(), steps)
}

fn run_with(settings: CorrelationSettings, steps: Vec<(u64, Input)>) -> (String, CorrelationStats) {
    let mut c = Correlator::with_settings(settings);
    let mut out = String::new();
    let drain = |c: &mut Correlator, now: u64, out: &mut String| {
        while let Some(o) = c.poll_output() {
            let line = match o {
                CorrelatorOutput::Correlated(cs) => {
                    let b = &cs.binding;
                    let mut s = format!(
                        "{} -> {} b={} a={}",
                        describe(&cs.signal),
                        b.method.as_str(),
                        short(b.call_sid),
                        short(b.parent_call_sid)
                    );
                    if let (Some(f), Some(t)) = (&b.from, &b.to) {
                        let _ = write!(s, " {f}>{t}");
                    }
                    for (k, v) in &b.tags {
                        let _ = write!(s, " {k}={v}");
                    }
                    s
                }
                CorrelatorOutput::Dropped { signal, reason } => {
                    format!("{} -> dropped {}", describe(&signal), reason.as_str())
                }
            };
            let _ = writeln!(out, "@{now} {line}");
        }
    };
    let fire = |c: &mut Correlator, until: u64, out: &mut String| {
        for _ in 0..100_000 {
            match c.poll_timeout() {
                Some(t) if t.0 <= until => {
                    c.handle_timeout(t);
                    drain(c, t.0, out);
                }
                _ => return,
            }
        }
        panic!("timers never settle");
    };
    for (t, input) in steps {
        fire(&mut c, t, &mut out);
        match input {
            Input::Leg(u) => c.handle_leg(UnixMillis(t), u),
            Input::Sig(s) => c.handle_signal(UnixMillis(t), s),
            Input::Resync(live) => {
                let live: Vec<PbxCallId> = live.into_iter().map(|c| PbxCallId::new(c.to_owned())).collect();
                c.release_gone(UnixMillis(t), &PbxId::new("site-1", PbxType::new("3cx")), &live);
            }
        }
        drain(&mut c, t, &mut out);
    }
    fire(&mut c, u64::MAX, &mut out);
    let stats = c.stats();
    (out, stats)
}

fn describe(s: &PbxSignal) -> String {
    match &s.body {
        SignalBody::Call(c) => {
            let change = match &c.change {
                CallChange::Ringing => "ringing",
                CallChange::Connected => "connected",
                CallChange::Held => "held",
                CallChange::Resumed => "resumed",
                CallChange::Parked { .. } => "parked",
                CallChange::Unparked { .. } => "unparked",
                CallChange::Transferred { .. } => "transferred",
                CallChange::Queued { .. } => "queued",
                CallChange::Disconnected { .. } => "disconnected",
                CallChange::Ended => "ended",
            };
            format!("call {} {} {}", c.call, c.extension.as_ref().map_or("-", |e| e.0.as_str()), change)
        }
        SignalBody::Extension(e) => format!("ext {} {:?}", e.extension, e.state),
    }
}

fn check(config: CorrelationConfig, steps: Vec<(u64, Input)>, expect: &str) -> CorrelationStats {
    let (got, stats) = run(config, steps);
    let want: String = expect.lines().map(str::trim).filter(|l| !l.is_empty()).map(|l| format!("{l}\n")).collect();
    assert_eq!(got, want, "\n--- got ---\n{got}--- want ---\n{want}");
    stats
}

fn cfg() -> CorrelationConfig {
    CorrelationConfig::default()
}

/// Issue 9, item 2: a call that can have no platform leg is decided at once, never held for
/// `wait_for_leg_ms` (a late ringing breaks a screen pop).
#[test]
fn an_internal_call_never_waits_for_a_leg() {
    let stats = check(
        cfg(),
        vec![
            (0, ann(0xb1, 0xa1).numbers(CALLER, DID).learned()),
            (100, call("7").direction(Direction::Internal).ringing(100)),
            (900, call("7").direction(Direction::Internal).connected(100, 900)),
        ],
        "
        @100 call 7 201 ringing -> none b=- a=-
        @900 call 7 201 connected -> none b=- a=-
        ",
    );
    assert_eq!((stats.no_leg_expected, stats.unmatched), (1, 0), "not counted as a call that found no leg");
}

#[test]
fn without_leg_sources_no_call_waits_but_the_call_id_pattern_still_binds() {
    let pattern = CorrelationConfig {
        call_id_pattern: Some(r"^(?P<call_sid>[0-9a-f-]{36})@".into()),
        ..CorrelationConfig::default()
    };
    let settings = CorrelationSettings::new(pattern).unwrap().with_leg_sources(false);
    let sid = "00000001-0000-0000-0000-000000000001";
    let (got, stats) = run_with(
        settings,
        vec![
            (100, call("7").numbers(CALLER, DID).ringing(100)),
            (200, call("8").cid(&format!("{sid}@sbc.example")).ringing(200)),
        ],
    );
    assert_eq!(got, "@100 call 7 201 ringing -> none b=- a=-\n@200 call 8 201 ringing -> call-id-pattern b=1 a=-\n");
    assert_eq!((stats.no_leg_expected, stats.unmatched, stats.matched_call_id_pattern), (1, 0, 1));
}

#[test]
fn directions_without_a_platform_side_are_configurable() {
    let inbound_only =
        CorrelationConfig { wait_for_directions: vec![Direction::Inbound], ..CorrelationConfig::default() };
    check(
        inbound_only,
        vec![(100, call("7").outbound("15550001111").ringing(100)), (200, call("8").ringing(200))],
        "
        @100 call 7 201 ringing -> none b=- a=-
        @6200 call 8 201 ringing -> none b=- a=-
        ",
    );
}

const CALLER: &str = "15557654321";
const DID: &str = "15551230100";

#[test]
fn exact_call_id_binds_at_once() {
    let stats = check(
        cfg(),
        vec![
            (0, ann(0xb1, 0xa1).cid("b1e9c2d4@cpaas.example.net").numbers(CALLER, DID).tag("key1", "value").learned()),
            (100, call("7").cid("b1e9c2d4@cpaas.example.net").ringing(100)),
            (900, call("7").connected(100, 900)),
        ],
        "
        @100 call 7 201 ringing -> sip-call-id b=b1 a=a1 15557654321>15551230100 key1=value
        @900 call 7 201 connected -> sip-call-id b=b1 a=a1 15557654321>15551230100 key1=value
        ",
    );
    assert_eq!(stats.matched_sip_call_id, 1);
    assert_eq!(stats.unmatched, 0);
}

#[test]
fn call_id_host_part_is_ignored_only_when_one_side_lacks_it() {
    check(
        cfg(),
        vec![
            (0, ann(0xb1, 0xa1).cid("abc@cpaas.example.net").learned()),
            (0, ann(0xb2, 0xa2).cid("xyz").learned()),
            (10, call("1").cid("abc").ringing(10)),
            (20, call("2").cid("xyz@pbx.example.com").ringing(20)),
            (30, call("3").cid("abc@other.example.com").ringing(30)),
        ],
        "
        @10 call 1 201 ringing -> sip-call-id b=b1 a=a1
        @20 call 2 201 ringing -> sip-call-id b=b2 a=a2
        @6030 call 3 201 ringing -> none b=- a=-
        ",
    );
    let strict = CorrelationConfig { call_id_ignore_host: false, ..cfg() };
    check(
        strict,
        vec![(0, ann(0xb1, 0xa1).cid("abc@cpaas.example.net").learned()), (10, call("1").cid("abc").ringing(10))],
        "@6010 call 1 201 ringing -> none b=- a=-",
    );
}

#[test]
fn an_ambiguous_local_part_binds_nothing() {
    check(
        cfg(),
        vec![
            (0, ann(0xb1, 0xa1).cid("abc@one.example").learned()),
            (0, ann(0xb2, 0xa2).cid("abc@two.example").learned()),
            (10, call("1").cid("abc").ringing(10)),
        ],
        "@6010 call 1 201 ringing -> ambiguous b=- a=-",
    );
}

#[test]
fn call_id_pattern_reads_the_sids() {
    let config = CorrelationConfig {
        call_id_pattern: Some(r"^(?P<call_sid>[0-9a-f-]{36})\.(?P<parent_call_sid>[0-9a-f-]{36})@".into()),
        ..cfg()
    };
    let cid = format!("{}.{}@cpaas.example.net", sid(0xb1), sid(0xa1));
    let stats =
        check(config, vec![(5, call("9").cid(&cid).ringing(5))], "@5 call 9 201 ringing -> call-id-pattern b=b1 a=a1");
    assert_eq!(stats.matched_call_id_pattern, 1);
}

#[test]
fn equality_wins_over_the_pattern_and_enriches() {
    let config = CorrelationConfig { call_id_pattern: Some(r"^(?P<call_sid>[0-9a-f-]{36})".into()), ..cfg() };
    let cid = format!("{}@x", sid(0xb1));
    check(
        config,
        vec![(0, ann(0xb1, 0xa1).cid(&cid).numbers(CALLER, DID).learned()), (5, call("9").cid(&cid).ringing(5))],
        "@5 call 9 201 ringing -> sip-call-id b=b1 a=a1 15557654321>15551230100",
    );
}

#[test]
fn token_in_the_caller_name() {
    let config = CorrelationConfig { token_pattern: Some(r"#(?P<token>[0-9a-fA-F]{8,32}|T\d+)$".into()), ..cfg() };
    let stats = check(
        config,
        vec![
            (0, ann(0xb1, 0xa1).numbers(CALLER, DID).learned()),
            (0, ann(0xb2, 0xa2).numbers(CALLER, DID).tag("correlationToken", "T42").learned()),
            // The first 8 hex digits of b1's callSid.
            (10, call("1").numbers(CALLER, DID).name("Acme #000000b1").ringing(10)),
            (20, call("2").numbers(CALLER, DID).name("Acme #T42").ringing(20)),
        ],
        "
        @10 call 1 201 ringing -> token b=b1 a=a1 15557654321>15551230100
        @20 call 2 201 ringing -> token b=b2 a=a2 15557654321>15551230100 correlationToken=T42
        ",
    );
    assert_eq!(stats.matched_token, 2);
}

#[test]
fn token_in_a_pooled_did_with_sids() {
    let config = CorrelationConfig {
        token_pattern: Some(r"(?P<call_sid>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})".into()),
        token_fields: vec![TokenField::DialledNumber],
        ..cfg()
    };
    check(
        config,
        vec![(0, call("1").numbers(CALLER, &format!("sip:{}@pbx", sid(0xb7))).ringing(0))],
        "@0 call 1 201 ringing -> token b=b7 a=-",
    );
}

#[test]
fn caller_and_number_within_the_window() {
    let stats = check(
        cfg(),
        vec![
            (0, ann(0xb1, 0xa1).numbers(CALLER, DID).learned()),
            (300, call("7").numbers(CALLER, DID).ringing(300)),
            (1_000, call("7").connected(300, 1_000)),
        ],
        // Decided 2 × window after the call was seen, when every competitor would be known.
        "
        @4301 call 7 201 ringing -> number-time b=b1 a=a1 15557654321>15551230100
        @4301 call 7 201 connected -> number-time b=b1 a=a1 15557654321>15551230100
        ",
    );
    assert_eq!(stats.matched_number_time, 1);
}

#[test]
fn number_match_needs_caller_number_and_time() {
    check(
        cfg(),
        vec![
            (0, ann(0xb1, 0xa1).numbers("15550000000", DID).learned()),
            (0, ann(0xb2, 0xa2).numbers(CALLER, "15559999999").learned()),
            (0, ann(0xb3, 0xa3).numbers(CALLER, DID).learned()),
            (2_500, call("7").numbers(CALLER, DID).ringing(2_500)),
        ],
        "@8500 call 7 201 ringing -> none b=- a=-",
    );
}

#[test]
fn two_simultaneous_identical_calls_are_never_cross_bound() {
    let stats = check(
        cfg(),
        vec![
            (0, ann(0xb1, 0xa1).numbers(CALLER, DID).learned()),
            (10, ann(0xb2, 0xa2).numbers(CALLER, DID).learned()),
            (100, call("1").numbers(CALLER, DID).ringing(100)),
            (120, call("2").numbers(CALLER, DID).ext("202").ringing(120)),
        ],
        "
        @6100 call 1 201 ringing -> ambiguous b=- a=-
        @6120 call 2 202 ringing -> ambiguous b=- a=-
        ",
    );
    assert_eq!((stats.ambiguous, stats.unmatched), (2, 2));
}

#[test]
fn one_leg_two_calls_is_ambiguous_too() {
    // Only one of the two legs is known: it fits both calls, so neither may take it.
    let stats = check(
        CorrelationConfig { unmatched: UnmatchedPolicy::Drop, ..cfg() },
        vec![
            (0, ann(0xb1, 0xa1).numbers(CALLER, DID).learned()),
            (100, call("1").numbers(CALLER, DID).ringing(100)),
            (1_500, call("2").numbers(CALLER, DID).ringing(1_500)),
        ],
        "
        @6100 call 1 201 ringing -> dropped ambiguous
        @7500 call 2 201 ringing -> dropped ambiguous
        ",
    );
    assert_eq!(stats.signals_dropped, 2);
}

#[test]
fn call_id_disambiguates_simultaneous_calls() {
    // Call 1 has its Call-ID and takes leg b1 exactly; that leaves b2 as the only leg for
    // call 2, which then binds by number.
    check(
        cfg(),
        vec![
            (0, ann(0xb1, 0xa1).cid("one@cpaas").numbers(CALLER, DID).learned()),
            (10, ann(0xb2, 0xa2).cid("two@cpaas").numbers(CALLER, DID).learned()),
            (100, call("2").numbers(CALLER, DID).ringing(100)),
            (120, call("1").cid("one@cpaas").numbers(CALLER, DID).ringing(120)),
        ],
        "
        @120 call 1 201 ringing -> sip-call-id b=b1 a=a1 15557654321>15551230100
        @4101 call 2 201 ringing -> number-time b=b2 a=a2 15557654321>15551230100
        ",
    );
    // Both with Call-IDs, legs announced in the opposite order: each gets its own.
    check(
        cfg(),
        vec![
            (0, ann(0xb2, 0xa2).cid("two@cpaas").numbers(CALLER, DID).learned()),
            (10, ann(0xb1, 0xa1).cid("one@cpaas").numbers(CALLER, DID).learned()),
            (100, call("1").cid("one@cpaas").numbers(CALLER, DID).ringing(100)),
            (100, call("2").cid("two@cpaas").numbers(CALLER, DID).ringing(100)),
        ],
        "
        @100 call 1 201 ringing -> sip-call-id b=b1 a=a1 15557654321>15551230100
        @100 call 2 201 ringing -> sip-call-id b=b2 a=a2 15557654321>15551230100
        ",
    );
}

#[test]
fn leg_after_the_pbx_call_releases_the_held_signals_in_order() {
    check(
        cfg(),
        vec![
            (0, call("7").cid("late@cpaas").ringing(0)),
            (800, call("7").connected(0, 800)),
            (900, call("8").ext("300").cid("other").ringing(900)),
            (2_000, ann(0xb1, 0xa1).cid("late@cpaas").learned()),
            (2_100, call("7").change(CallChange::Held, 0, 2_100)),
        ],
        "
        @2000 call 7 201 ringing -> sip-call-id b=b1 a=a1
        @2000 call 7 201 connected -> sip-call-id b=b1 a=a1
        @2100 call 7 201 held -> sip-call-id b=b1 a=a1
        @6900 call 8 300 ringing -> none b=- a=-
        ",
    );
}

#[test]
fn tap_leg_without_sids_waits_for_the_announcement() {
    check(
        cfg(),
        vec![
            (0, tap("b1e9@cpaas").numbers(CALLER, DID).learned()),
            (10, call("7").cid("b1e9@cpaas").ringing(10)),
            (50, ann(0xb1, 0xa1).cid("b1e9@cpaas").learned()),
        ],
        "@50 call 7 201 ringing -> sip-call-id b=b1 a=a1 15557654321>15551230100",
    );
}

#[test]
fn leg_never_comes_forward_or_drop() {
    check(
        cfg(),
        vec![(0, call("7").cid("nobody").ringing(0)), (100, call("7").connected(0, 100))],
        "
        @6000 call 7 201 ringing -> none b=- a=-
        @6000 call 7 201 connected -> none b=- a=-
        ",
    );
    let stats = check(
        CorrelationConfig { unmatched: UnmatchedPolicy::Drop, ..cfg() },
        vec![(0, call("7").cid("nobody").ringing(0)), (7_000, call("7").connected(0, 7_000))],
        "
        @6000 call 7 201 ringing -> dropped unmatched
        @7000 call 7 201 connected -> dropped unmatched
        ",
    );
    assert_eq!((stats.unmatched, stats.ambiguous, stats.signals_dropped), (1, 0, 2));
}

#[test]
fn binding_survives_transfer_park_and_pickup() {
    check(
        cfg(),
        vec![
            (0, ann(0xb1, 0xa1).cid("c@p").learned()),
            (10, call("7").cid("c@p").ringing(10)),
            (20, call("7").connected(10, 20)),
            (30, call("7").change(CallChange::Transferred { to: Some("202".into()) }, 10, 30)),
            (31, call("7").change(CallChange::Disconnected { reason: DisconnectReason::Transferred }, 10, 31)),
            // The new party's signals carry no Call-ID; the PBX call id is what keeps them bound.
            (40, S { ext: Some("202"), ..call("7") }.change(CallChange::Connected, 10, 40)),
            (50, call("7").ext("202").change(CallChange::Parked { slot: Some("1".into()) }, 10, 50)),
            (60, call("7").ext("203").change(CallChange::Unparked { slot: Some("1".into()) }, 10, 60)),
            (70, call("7").ext("203").change(CallChange::Disconnected { reason: DisconnectReason::Normal }, 10, 70)),
            (71, S { ext: None, ..call("7") }.change(CallChange::Ended, 10, 71)),
        ],
        "
        @10 call 7 201 ringing -> sip-call-id b=b1 a=a1
        @20 call 7 201 connected -> sip-call-id b=b1 a=a1
        @30 call 7 201 transferred -> sip-call-id b=b1 a=a1
        @31 call 7 201 disconnected -> sip-call-id b=b1 a=a1
        @40 call 7 202 connected -> sip-call-id b=b1 a=a1
        @50 call 7 202 parked -> sip-call-id b=b1 a=a1
        @60 call 7 203 unparked -> sip-call-id b=b1 a=a1
        @70 call 7 203 disconnected -> sip-call-id b=b1 a=a1
        @71 call 7 - ended -> sip-call-id b=b1 a=a1
        ",
    );
}

#[test]
fn outbound_call_binds_the_a_leg_then_its_b_leg() {
    check(
        cfg(),
        vec![
            // The PBX's INVITE into the platform is the A leg (callSid == parentCallSid).
            (0, ann(0xa9, 0xa9).cid("pbx-out-1@pbx").numbers("441707000000", "15550001111").learned()),
            (5, call("20").cid("pbx-out-1@pbx").outbound("15550001111").ringing(5)),
            (200, ann(0xb9, 0xa9).numbers("441707000000", "15550001111").tag("leg", "b").learned()),
            (900, call("20").connected(5, 900)),
        ],
        "
        @5 call 20 201 ringing -> sip-call-id b=- a=a9 441707000000>15550001111
        @900 call 20 201 connected -> sip-call-id b=b9 a=a9 441707000000>15550001111 leg=b
        ",
    );
    // Outbound by number (dialled number only: the PBX does not report our caller id), with
    // the B leg already known.
    check(
        cfg(),
        vec![
            (0, ann(0xa9, 0xa9).numbers("441707000000", "15550001111").learned()),
            (1, ann(0xb9, 0xa9).numbers("441707000000", "15550001111").learned()),
            (5, call("20").outbound("15550001111").ringing(5)),
        ],
        "@4006 call 20 201 ringing -> number-time b=b9 a=a9 441707000000>15550001111",
    );
}

#[test]
fn inbound_calls_do_not_take_a_legs_by_number() {
    check(
        cfg(),
        vec![(0, ann(0xa1, 0xa1).numbers(CALLER, DID).learned()), (5, call("1").numbers(CALLER, DID).ringing(5))],
        "@6005 call 1 201 ringing -> none b=- a=-",
    );
}

#[test]
fn internal_calls_and_extension_signals() {
    let ext = Input::Sig(PbxSignal {
        pbx: PbxId::new("site-1", PbxType::new("avaya-r11")),
        at: UnixMillis(3),
        source: "test",
        facts: Facts::new(),
        body: SignalBody::Extension(ExtensionSignal { extension: Extension("201".into()), state: ExtensionState::Dnd }),
    });
    check(
        cfg(),
        vec![(0, call("5").direction(Direction::Internal).ringing(0)), (3, ext)],
        "
        @0 call 5 201 ringing -> none b=- a=-
        @3 ext 201 Dnd -> none b=- a=-
        ",
    );
}

#[test]
fn legs_expire() {
    let stats = check(
        CorrelationConfig { leg_ttl_secs: 10, ended_leg_keep_secs: 1, ..cfg() },
        vec![
            (0, ann(0xb1, 0xa1).cid("ended@p").learned()),
            (500, ann(0xb1, 0xa1).cid("ended@p").ended()),
            (1_400, call("1").cid("ended@p").ringing(1_400)),
            (1_600, call("2").cid("ended@p").ringing(1_600)),
            (2_000, ann(0xb2, 0xa2).cid("old@p").learned()),
            (12_001, call("3").cid("old@p").ringing(12_001)),
        ],
        "
        @1400 call 1 201 ringing -> sip-call-id b=b1 a=a1
        @7600 call 2 201 ringing -> none b=- a=-
        @18001 call 3 201 ringing -> none b=- a=-
        ",
    );
    // b1 was bound before it expired; b2 never was.
    assert_eq!(stats.legs_expired, 1);
    assert_eq!(stats.legs, 0);
    assert_eq!(stats.calls, 0);
}

#[test]
fn late_leg_is_counted_and_taken_out_of_the_candidates() {
    let stats = check(
        cfg(),
        vec![
            (0, call("1").cid("slow@p").numbers(CALLER, DID).ringing(0)),
            (6_500, ann(0xb1, 0xa1).cid("slow@p").numbers(CALLER, DID).learned()),
            (7_000, call("2").numbers(CALLER, DID).ringing(7_000)),
        ],
        "
        @6000 call 1 201 ringing -> none b=- a=-
        @13000 call 2 201 ringing -> none b=- a=-
        ",
    );
    assert_eq!(stats.late_legs, 1);
}

#[test]
fn the_same_leg_twice_or_from_both_sources_is_one_leg() {
    let stats = check(
        cfg(),
        vec![
            (0, tap("dup@p").numbers("+15557654321", "+15551230100").learned()),
            (1, tap("dup@p").numbers("+15557654321", "+15551230100").learned()),
            (2, ann(0xb1, 0xa1).numbers(CALLER, DID).learned()),
            (3, ann(0xb1, 0xa1).cid("dup@p").learned()),
            (4, tap("dup@p").sids(0xb1, 0xa1).learned()),
            (10, call("1").numbers(CALLER, DID).ringing(10)),
        ],
        "@4011 call 1 201 ringing -> number-time b=b1 a=a1 15557654321>15551230100",
    );
    assert_eq!((stats.legs_learned, stats.legs_merged), (2, 3));
}

#[test]
fn signals_of_a_waiting_call_past_the_limit_release_it() {
    let stats = check(
        CorrelationConfig { max_held_signals_per_call: 2, ..cfg() },
        vec![(0, call("1").ringing(0)), (1, call("1").connected(0, 1)), (2, call("1").connected(0, 2))],
        "
        @1 call 1 201 ringing -> none b=- a=-
        @1 call 1 201 connected -> none b=- a=-
        @2 call 1 201 connected -> none b=- a=-
        ",
    );
    assert_eq!(stats.calls_released_early, 1);
}

#[test]
fn config_errors_name_the_key() {
    let bad = CorrelationConfig { call_id_pattern: Some("(".into()), ..cfg() };
    let err = Correlator::new(bad).unwrap_err();
    assert_eq!(err.key(), "call_id_pattern");
    assert!(err.to_string().starts_with("invalid regular expression"), "{err}");
    let no_group = CorrelationConfig { token_pattern: Some("T\\d+".into()), ..cfg() };
    let err = Correlator::new(no_group).unwrap_err();
    assert_eq!(
        (err.key(), err.to_string().as_str()),
        ("token_pattern", "the pattern needs a named group `token` or `call_sid`")
    );
    let window = CorrelationConfig { wait_for_leg_ms: 1000, ..cfg() };
    assert_eq!(Correlator::new(window).unwrap_err().key(), "wait_for_leg_ms");
    let zero = CorrelationConfig { max_pending_calls: 0, ..cfg() };
    assert_eq!(Correlator::new(zero).unwrap_err().key(), "max_pending_calls");
    let unknown = toml::from_str::<CorrelationConfig>("wait_for_leg = 5");
    assert!(unknown.unwrap_err().to_string().contains("unknown field `wait_for_leg`"));
    let parsed: CorrelationConfig =
        toml::from_str("unmatched = \"drop\"\ntoken_fields = [\"external-number\"]\nwait_for_leg_ms = 8000").unwrap();
    assert_eq!(parsed.unmatched, UnmatchedPolicy::Drop);
    assert_eq!(parsed.token_fields, vec![TokenField::ExternalNumber]);
    assert_eq!(parsed.number_window_ms, 2_000);
}

// Properties over random scenarios: N calls from the same caller to the same number at about
// the same time, each with its true leg (present or not, with or without Call-IDs).
#[derive(Debug, Clone)]
struct Scenario {
    calls: Vec<(u64, bool, bool, i64, u8)>, // (start, pbx has Call-ID, leg present, leg offset, signal count)
    drop: bool,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (prop::collection::vec((0u64..5_000, any::<bool>(), any::<bool>(), -2_000i64..=2_000, 1u8..5), 1..6), any::<bool>())
        .prop_map(|(calls, drop)| Scenario { calls, drop })
}

proptest! {
    #[test]
    fn never_cross_bound_every_signal_once_in_order(s in scenario()) {
        let mut steps: Vec<(u64, u8, Input)> = Vec::new();
        for (i, &(start, has_cid, leg_present, offset, n)) in s.calls.iter().enumerate() {
            let i32_ = i as u32 + 1;
            let cid = format!("call-{i}@cpaas");
            if leg_present {
                let at = (start as i64 + offset).max(0) as u64;
                steps.push((at, 0, ann(0xb0 + i32_, 0xa0 + i32_).cid(&cid).numbers(CALLER, DID).learned()));
            }
            for k in 0..n {
                let mut sig = call(Box::leak(i.to_string().into_boxed_str())).numbers(CALLER, DID);
                if has_cid {
                    sig = sig.cid(&cid);
                }
                steps.push((start + u64::from(k) * 700, 1, sig.change(CallChange::Held, start, start + u64::from(k) * 700)));
            }
        }
        // Stable sort: same-instant inputs keep their generation order.
        steps.sort_by_key(|(t, _, _)| *t);
        let total_signals = steps.iter().filter(|(_, k, _)| *k == 1).count();
        let config = CorrelationConfig { unmatched: if s.drop { UnmatchedPolicy::Drop } else { UnmatchedPolicy::Forward }, ..cfg() };
        let mut c = Correlator::new(config).unwrap();
        let mut outs: Vec<CorrelatorOutput> = Vec::new();
        let mut sent_at: Vec<(String, u64)> = Vec::new();
        for (t, _, input) in steps {
            while let Some(due) = c.poll_timeout().filter(|d| d.0 <= t) {
                c.handle_timeout(due);
                outs.extend(std::iter::from_fn(|| c.poll_output()));
            }
            match input {
                Input::Leg(u) => c.handle_leg(UnixMillis(t), u),
                Input::Sig(sig) => {
                    if let SignalBody::Call(cs) = &sig.body { sent_at.push((cs.call.as_str().to_owned(), sig.at.0)); }
                    c.handle_signal(UnixMillis(t), sig)
                }
                Input::Resync(_) => unreachable!("the generator makes no resyncs"),
            }
            outs.extend(std::iter::from_fn(|| c.poll_output()));
        }
        while let Some(due) = c.poll_timeout() {
            c.handle_timeout(due);
            outs.extend(std::iter::from_fn(|| c.poll_output()));
        }
        prop_assert_eq!(outs.len(), total_signals);
        let mut got: Vec<(String, u64)> = Vec::new();
        for o in &outs {
            let (signal, binding) = match o {
                CorrelatorOutput::Correlated(cs) => (&cs.signal, Some(&cs.binding)),
                CorrelatorOutput::Dropped { signal, .. } => (signal, None),
            };
            let SignalBody::Call(cs) = &signal.body else { unreachable!() };
            got.push((cs.call.as_str().to_owned(), signal.at.0));
            let i: u32 = cs.call.0.parse().unwrap();
            if let Some(b) = binding.filter(|b| b.is_bound()) {
                // Never another call's leg.
                prop_assert_eq!(b.call_sid, Some(sid(0xb0 + i + 1)), "call {} bound by {:?}", i, b.method);
            }
            prop_assert_eq!(s.drop && binding.is_none_or(|b| !b.is_bound()), binding.is_none());
        }
        // Per call, the order they came in.
        for (i, _) in s.calls.iter().enumerate() {
            let id = i.to_string();
            let a: Vec<_> = sent_at.iter().filter(|(c, _)| *c == id).collect();
            let b: Vec<_> = got.iter().filter(|(c, _)| *c == id).collect();
            prop_assert_eq!(a, b);
        }
        prop_assert_eq!(c.stats().pending_calls, 0);
    }
}

/// After a reconnect the PBX lists its live calls: a call still waiting for its leg that is not
/// listed is over and is decided at once (so its signals reach the lifecycle before it
/// reconciles); a listed one keeps waiting for its leg.
#[test]
fn a_resync_releases_waiting_calls_the_pbx_no_longer_lists() {
    check(
        cfg(),
        vec![
            (100, call("7").ringing(100)),
            (100, call("8").ext("202").ringing(100)),
            (1_000, Input::Resync(vec!["8"])),
            (2_000, ann(1, 2).cid("late-leg").learned()),
            (2_000, call("8").ext("202").cid("late-leg").connected(100, 2_000)),
        ],
        "
        @1000 call 7 201 ringing -> none b=- a=-
        @2000 call 8 202 ringing -> sip-call-id b=1 a=2
        @2000 call 8 202 connected -> sip-call-id b=1 a=2
        ",
    );
}

/// Issue 10: SMDR reports a call when it ends, minutes after the platform announced its leg.
/// The call is matched on the PBX's call start, at once (no wait), and the leg is still there.
#[test]
fn a_call_reported_after_the_fact_binds_at_once_on_its_own_start() {
    let config = CorrelationConfig { ended_leg_keep_secs: 3_600, ..cfg() };
    let stats = check(
        config.clone(),
        vec![
            (0, ann(0xb1, 0xa1).numbers(CALLER, DID).learned()),
            (200_000, ann(0xb1, 0xa1).numbers(CALLER, DID).ended()),
            // Five minutes later: SMDR's record; the PBX clock is 3 s behind ours.
            (500_000, call("1000014160").numbers(CALLER, DID).smdr().change(CallChange::Ringing, 0, 0)),
            (500_000, call("1000014160").numbers(CALLER, DID).smdr().change(CallChange::Connected, 0, 7_000)),
        ],
        "@500000 call 1000014160 201 ringing -> number-time b=b1 a=a1 15557654321>15551230100
         @500000 call 1000014160 201 connected -> number-time b=b1 a=a1 15557654321>15551230100",
    );
    assert_eq!(stats.matched_number_time, 1);
    // A live feed's call there waits `wait_for_leg_ms`, and its start (now) fits no leg.
    check(
        config,
        vec![
            (0, ann(0xb1, 0xa1).numbers(CALLER, DID).learned()),
            (500_000, call("7").numbers(CALLER, DID).change(CallChange::Ringing, 500_000, 500_000)),
        ],
        "@506000 call 7 201 ringing -> none b=- a=-",
    );
}

#[test]
fn the_clock_skew_window_bounds_after_the_fact_matching() {
    let config = CorrelationConfig { clock_skew_ms: 3_000, ended_leg_keep_secs: 3_600, ..cfg() };
    // 4.5 s apart: within number_window_ms (2 s) + clock_skew_ms (3 s).
    check(
        config.clone(),
        vec![
            (10_000, ann(0xb1, 0xa1).numbers(CALLER, DID).learned()),
            (90_000, call("8").numbers(CALLER, DID).smdr().change(CallChange::Ringing, 5_500, 5_500)),
        ],
        "@90000 call 8 201 ringing -> number-time b=b1 a=a1 15557654321>15551230100",
    );
    // 5.5 s apart: too far; decided at once, unmatched.
    check(
        config,
        vec![
            (10_000, ann(0xb1, 0xa1).numbers(CALLER, DID).learned()),
            (90_000, call("8").numbers(CALLER, DID).smdr().change(CallChange::Ringing, 4_500, 4_500)),
        ],
        "@90000 call 8 201 ringing -> none b=- a=-",
    );
}

#[test]
fn after_the_fact_ambiguity_is_not_guessed_and_internal_calls_do_not_wait() {
    let config = CorrelationConfig { ended_leg_keep_secs: 3_600, ..cfg() };
    let stats = check(
        config.clone(),
        vec![
            (0, ann(0xb1, 0xa1).numbers(CALLER, DID).learned()),
            (1_000, ann(0xb2, 0xa2).numbers(CALLER, DID).learned()),
            (300_000, call("9").numbers(CALLER, DID).smdr().change(CallChange::Ringing, 500, 500)),
        ],
        "@300000 call 9 201 ringing -> ambiguous b=- a=-",
    );
    assert_eq!(stats.ambiguous, 1);
    check(
        config,
        vec![(300_000, call("10").direction(Direction::Internal).smdr().change(CallChange::Ringing, 500, 500))],
        "@300000 call 10 201 ringing -> none b=- a=-",
    );
}

/// Issue 9 item 11: a URI user is compared after its `%HH` escapes are undone (RFC 3261
/// §19.1.4), so `sip:+%344…` and `sip:%2B44…` are the number `44…`; an invalid escape keeps the
/// URI as it is (and so it is no number).
#[test]
fn percent_encoded_uri_users_match_by_number() {
    check(
        cfg(),
        vec![
            (0, ann(0xb1, 0xa1).numbers("sip:%2B15557654321@cpaas", "sip:+%31555%3123%30100@pbx;user=phone").learned()),
            (0, ann(0xb2, 0xa2).numbers(CALLER, "sip:+1555%G230101@pbx").learned()),
            (300, call("7").numbers(CALLER, DID).ringing(300)),
            (300, call("8").numbers(CALLER, "15552230101").ringing(300)),
        ],
        "
        @4301 call 7 201 ringing -> number-time b=b1 a=a1 sip:%2B15557654321@cpaas>sip:+%31555%3123%30100@pbx;user=phone
        @6300 call 8 201 ringing -> none b=- a=-
        ",
    );
}

/// Issue 9 item 10: a leg that ended does not come back. A captured (or late-retried)
/// `ringing` applied after the leg ended — while it is kept, or after it was forgotten — must
/// not make it a live leg again that a new call from the same caller could bind to.
#[test]
fn an_ended_leg_does_not_come_back_from_an_older_announcement() {
    let config = CorrelationConfig { ended_leg_keep_secs: 1, ..cfg() };
    let ringing = || ann(0xb1, 0xa1).cid("gone@p").numbers(CALLER, DID).learned();
    // Replayed while the ended leg is still kept, then again after it was forgotten (at 1500).
    let stats = check(
        config.clone(),
        vec![
            (0, ringing()),
            (500, ann(0xb1, 0xa1).cid("gone@p").ended()),
            (600, ringing()),
            (10_000, ringing()),
            (10_000, call("1").numbers(CALLER, DID).ringing(10_000)),
        ],
        "@16000 call 1 201 ringing -> none b=- a=-",
    );
    assert_eq!((stats.legs_learned, stats.legs, stats.stale_leg_updates), (1, 0, 1));
    // By Call-ID as well, and by the SIP tap's copy of the dialog.
    check(
        config,
        vec![
            (0, ringing()),
            (500, tap("gone@p").ended()),
            (10_000, tap("gone@p").numbers(CALLER, DID).learned()),
            (10_000, ringing()),
            (10_001, call("2").cid("gone@p").ringing(10_001)),
        ],
        "@16001 call 2 201 ringing -> none b=- a=-",
    );
}

/// Issue 13, the short soak: calls that end leave bounded state behind. Rounds of calls that
/// ring, connect and end, faster than `ended_call_keep_secs` forgets them, with a leg source
/// (so each waits for its leg) and SIP Call-IDs (so the unmatched ones are indexed for late
/// legs): the calls tracked stop at the cap plus the live ones, and stay there round after
/// round; once the keep time passes, nothing is left.
#[test]
fn tracked_state_does_not_grow_after_calls_end() {
    let mut config = cfg();
    config.max_pending_calls = 300;
    let mut c = Correlator::with_settings(CorrelationSettings::new(config.clone()).unwrap().with_leg_sources(true));
    // The cap, small enough for a quick test (MAX_ENDED_CALLS in the daemon).
    let cap = 500;
    c.set_max_ended_calls(cap);
    let pbx = PbxId::new("site-1", PbxType::new("3cx"));
    let signal = |n: u64, change: CallChange, at: u64| PbxSignal {
        pbx: pbx.clone(),
        at: UnixMillis(at),
        source: "test",
        facts: Facts::new(),
        body: SignalBody::Call(CallSignal {
            call: PbxCallId::new(format!("c{n}")),
            call_started: UnixMillis(at),
            extension: Some(Extension("201".into())),
            change,
            info: CallInfo {
                direction: Direction::Inbound,
                sip_call_id: Some(format!("cid-{n}@sbc").into()),
                external_number: Some(format!("4477009{n:05}").into()),
                dialled_number: Some("441234567890".into()),
                caller_name: Some(format!("Caller {n}").into()),
                ..CallInfo::default()
            },
        }),
    };
    let mut now = 1_000_000u64;
    let mut n = 0u64;
    let mut tracked_after_round = Vec::new();
    for _round in 0..4 {
        // 2,000 calls per round, 10 per millisecond: far more than the keep time forgets.
        for _ in 0..2_000 {
            c.handle_signal(UnixMillis(now), signal(n, CallChange::Ringing, now));
            c.handle_signal(UnixMillis(now), signal(n, CallChange::Connected, now));
            c.handle_signal(UnixMillis(now + 1), signal(n, CallChange::Ended, now + 1));
            n += 1;
            if n.is_multiple_of(10) {
                now += 1;
                while let Some(t) = c.poll_timeout().filter(|t| t.0 <= now) {
                    c.handle_timeout(t);
                }
            }
            while c.poll_output().is_some() {}
        }
        tracked_after_round.push(c.stats().calls);
    }
    // Calls still waiting for their leg: wait_for_leg_ms at 10 calls/ms, capped by
    // max_pending_calls.
    let live_at_most = config.max_pending_calls;
    assert!(tracked_after_round.iter().all(|t| *t <= cap + live_at_most), "{tracked_after_round:?}");
    assert_eq!(tracked_after_round[2], tracked_after_round[3], "steady, round after round: {tracked_after_round:?}");
    // The keep time passes with nothing new: everything is forgotten.
    c.handle_timeout(UnixMillis(now + 3_600_000));
    while c.poll_output().is_some() {}
    assert_eq!(c.stats().calls, 0);
    assert_eq!(c.stats().pending_calls, 0);
}

#[test]
fn clock_skew_ms_has_a_range() {
    let too_much = CorrelationConfig { clock_skew_ms: 300_001, ..cfg() };
    let err = Correlator::new(too_much).unwrap_err();
    assert_eq!(err.key(), "clock_skew_ms");
    assert!(Correlator::new(CorrelationConfig { clock_skew_ms: 300_000, ..cfg() }).is_ok());
}
