//! Scripted IP Office calls, written as the Delta3 records a DevLink3 client would receive.
//!
//! The record shapes follow the DevLink3 documentation (protocol notes §3); how the IP Office
//! sequences them during a transfer or a park is our model of it (inferred, to be checked
//! against a live system), the same model the tracker is built on.

use std::fmt::Write as _;

/// The node id of the simulated IP Office (192.168.42.3, as in the documentation).
pub const NODE: &str = "c0a82a03";

/// The hunt group every inbound call targets.
pub const HUNT_GROUP: &str = "200";

/// The extensions of the hunt group.
pub const EXTENSIONS: [&str; 3] = ["4001", "4002", "4003"];

/// Who calls and how: what a correlation test needs to match a call to a platform leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSpec {
    /// The SIP Call-ID of the inbound trunk leg (sent in SIPTrack START/END).
    pub sip_call_id: String,
    /// The caller's number (CLI).
    pub caller: String,
    /// The number dialled (DID).
    pub did: String,
    /// The caller's display name.
    pub caller_name: String,
}

impl CallSpec {
    /// A call with made-up but unique values derived from `n`.
    pub fn numbered(n: u64) -> CallSpec {
        CallSpec {
            sip_call_id: format!("sim-{n:08x}@platform.invalid"),
            caller: format!("4477009{:05}", n % 100_000),
            did: "441234567890".into(),
            caller_name: format!("Caller {n}"),
        }
    }
}

/// A scripted scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    /// Inbound SIP call to hunt group 200: 4001, 4002 and 4003 ring, 4002 answers, hangs up.
    HuntGroupAnswer(CallSpec),
    /// Inbound call answered by 4001, held, resumed, hung up.
    HoldResume(CallSpec),
    /// Answered by 4001, parked on slot 1, unparked by 4002, hung up.
    ParkUnpark(CallSpec),
    /// Answered by 4001, blind-transferred to 4002, who answers.
    BlindTransfer(CallSpec),
    /// Answered by 4001, held; 4001 calls 4002 (a consultation call), then completes the
    /// transfer: 4002 talks to the caller.
    AttendedTransfer(CallSpec),
    /// Queued in the hunt group, rings all three phones, the caller hangs up.
    CallerAbandon(CallSpec),
    /// Two answered calls (4001 and 4002); the server drops the link; the first call ends while
    /// the client is away, the second is put on hold; after the client is back the second
    /// resumes and hangs up.
    LinkDrop {
        /// The call that ends while the link is down.
        ends_while_down: CallSpec,
        /// The call that survives the outage.
        survives: CallSpec,
    },
}

impl Scenario {
    /// The scenario names `pbx-sim avaya-r11 --scenario` accepts (and `mix`).
    pub const NAMES: [&'static str; 7] =
        ["hunt-group", "hold", "park", "blind-transfer", "attended-transfer", "abandon", "link-drop"];

    /// The scenario called `name`, with calls numbered from `n`.
    pub fn named(name: &str, n: u64) -> Option<Scenario> {
        let spec = CallSpec::numbered(n);
        Some(match name {
            "hunt-group" => Scenario::HuntGroupAnswer(spec),
            "hold" => Scenario::HoldResume(spec),
            "park" => Scenario::ParkUnpark(spec),
            "blind-transfer" => Scenario::BlindTransfer(spec),
            "attended-transfer" => Scenario::AttendedTransfer(spec),
            "abandon" => Scenario::CallerAbandon(spec),
            "link-drop" => Scenario::LinkDrop { ends_while_down: spec, survives: CallSpec::numbered(n + 1) },
            _ => return None,
        })
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::HuntGroupAnswer(_) => "hunt-group",
            Scenario::HoldResume(_) => "hold",
            Scenario::ParkUnpark(_) => "park",
            Scenario::BlindTransfer(_) => "blind-transfer",
            Scenario::AttendedTransfer(_) => "attended-transfer",
            Scenario::CallerAbandon(_) => "abandon",
            Scenario::LinkDrop { .. } => "link-drop",
        }
    }
}

/// One thing the simulated PBX does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Sends a Delta3 record for `call` and, for a `Detail`, remembers it as the call's state
    /// (the snapshot re-sent to a client that subscribes).
    Delta3 {
        /// The call (local call id).
        call: u32,
        /// The record.
        record: String,
    },
    /// The call is over: it leaves the snapshot.
    CallOver {
        /// The call.
        call: u32,
    },
    /// Sends a SIPTrack record.
    SipTrack(String),
    /// Closes every client connection and starts an outage: new connections are closed at once,
    /// so that what happens next is not seen by any client.
    DropLink,
    /// Ends the outage and waits until a client has subscribed again.
    AwaitResubscribe,
    /// A pause (one pacing step).
    Pause,
}

/// Allocates call ids and end ids for scripts.
#[derive(Debug, Clone)]
pub struct Numbering {
    next_call: u32,
    next_end: u32,
}

impl Default for Numbering {
    fn default() -> Self {
        Numbering { next_call: 1, next_end: 0x1000 }
    }
}

impl Numbering {
    fn call(&mut self) -> u32 {
        let c = self.next_call;
        self.next_call += 1;
        c
    }

    fn end(&mut self) -> String {
        let e = format!("{NODE}{:08x}", self.next_end);
        self.next_end += 1;
        e
    }
}

/// Delta3 text builders for one call.
struct Call<'a> {
    id: u32,
    trunk: String,
    spec: &'a CallSpec,
}

const RINGBACK: u32 = 19;
const CONNECTED: u32 = 2;

impl Call<'_> {
    fn call_fields(&self, queue: Option<u32>) -> String {
        let q = queue.map(|q| q.to_string()).unwrap_or_default();
        format!("{NODE},{},,,,0,,{HUNT_GROUP},,{HUNT_GROUP},,,,{q}", self.id)
    }

    /// The inbound SIP trunk end (PartyA). Tone: 2 ringback, 1 music on hold, 0 none.
    fn trunk(&self, state: u32, tone: u32) -> String {
        let s = self.spec;
        let name = s.caller_name.replace('"', "\"\"");
        format!(
            "{},1,{state},1,{tone},0,1,0,0,5,0,{},,0,0,{},,,,,,{},0,9,\"{name}\"",
            self.trunk, s.sip_call_id, s.did, s.caller
        )
    }

    fn detail(&self, queue: Option<u32>, a: &str, b: Option<&str>, targets: &[String]) -> String {
        detail(&self.call_fields(queue), a, b, targets)
    }

    fn lost(&self, end: &str, cause: u32) -> String {
        lost(end, cause)
    }
}

fn detail(call: &str, a: &str, b: Option<&str>, targets: &[String]) -> String {
    let mut s = format!("<Detail><Call>{call}</Call><PartyA>{a}</PartyA>");
    if let Some(b) = b {
        let _ = write!(s, "<PartyB>{b}</PartyB>");
    }
    if !targets.is_empty() {
        s.push_str("<Target_list>");
        for t in targets {
            let _ = write!(s, "<Target>{t}</Target>");
        }
        s.push_str("</Target_list>");
    }
    s.push_str("</Detail>");
    s
}

fn lost(end: &str, cause: u32) -> String {
    format!("<CallLost>{NODE},{end},1,{cause}</CallLost>")
}

/// An extension end: state, audio path (0 = on hold), called type (135 = unpark), related end.
fn ext(end: &str, number: &str, state: u32, audio: u32, called: u32, related: &str) -> String {
    format!("{end},0,{state},{audio},0,0,0,0,1,8,106,,{number},{called},4,,,,,,{HUNT_GROUP},,100,5,,{related}")
}

/// An extension that calls another (PartyA of an internal call).
fn ext_caller(end: &str, number: &str, state: u32) -> String {
    let tone = if state == RINGBACK { 2 } else { 0 };
    format!("{end},1,{state},1,{tone},0,0,0,1,8,106,,{number},0,0,,,,,,,{number},100")
}

fn target(end: &str, number: &str, cli: &str) -> String {
    format!("{end},0,0,8,106,,{number},0,4,,,{HUNT_GROUP},{cli},100")
}

fn park_slot(end: &str, slot: &str) -> String {
    format!("{end},0,2,1,1,0,0,0,0,16,0,,{slot},134")
}

fn sip(started: bool, end: &str, spec: &CallSpec) -> Step {
    let event = if started { "START" } else { "END" };
    Step::SipTrack(format!("{event},{end},17.{}.1,TRUNK,IN,{}", &end[end.len() - 4..], spec.sip_call_id))
}

/// The steps of a scenario, with call and end ids from `numbering`.
pub fn script(scenario: &Scenario, numbering: &mut Numbering) -> Vec<Step> {
    let mut steps = Vec::new();
    match scenario {
        Scenario::HuntGroupAnswer(spec) => {
            let c = Call { id: numbering.call(), trunk: numbering.end(), spec };
            let ends: Vec<String> = EXTENSIONS.iter().map(|_| numbering.end()).collect();
            let targets: Vec<String> = EXTENSIONS.iter().zip(&ends).map(|(x, e)| target(e, x, &spec.caller)).collect();
            let d = |call: u32, record: String| Step::Delta3 { call, record };
            steps.push(sip(true, &c.trunk, spec));
            steps.push(d(c.id, c.detail(None, &c.trunk(RINGBACK, 2), None, &targets)));
            steps.push(Step::Pause);
            let b = ext(&ends[1], "4002", CONNECTED, 1, 0, "");
            steps.push(d(c.id, c.detail(None, &c.trunk(CONNECTED, 0), Some(&b), &[])));
            steps.push(Step::Pause);
            hang_up(&mut steps, &c, &ends[1]);
        }
        Scenario::HoldResume(spec) => {
            let c = Call { id: numbering.call(), trunk: numbering.end(), spec };
            let e1 = numbering.end();
            answer(&mut steps, &c, &e1, "4001");
            let held = ext(&e1, "4001", CONNECTED, 0, 0, "");
            steps.push(Step::Delta3 { call: c.id, record: c.detail(None, &c.trunk(CONNECTED, 1), Some(&held), &[]) });
            steps.push(Step::Pause);
            let talk = ext(&e1, "4001", CONNECTED, 1, 0, "");
            steps.push(Step::Delta3 { call: c.id, record: c.detail(None, &c.trunk(CONNECTED, 0), Some(&talk), &[]) });
            steps.push(Step::Pause);
            hang_up(&mut steps, &c, &e1);
        }
        Scenario::ParkUnpark(spec) => {
            let c = Call { id: numbering.call(), trunk: numbering.end(), spec };
            let (e1, slot, e2) = (numbering.end(), numbering.end(), numbering.end());
            answer(&mut steps, &c, &e1, "4001");
            let parked = park_slot(&slot, "1");
            steps.push(Step::Delta3 { call: c.id, record: c.detail(None, &c.trunk(CONNECTED, 1), Some(&parked), &[]) });
            steps.push(Step::Pause);
            let picked = ext(&e2, "4002", CONNECTED, 1, 135, "");
            steps.push(Step::Delta3 { call: c.id, record: c.detail(None, &c.trunk(CONNECTED, 0), Some(&picked), &[]) });
            steps.push(Step::Pause);
            hang_up(&mut steps, &c, &e2);
        }
        Scenario::BlindTransfer(spec) => {
            let c = Call { id: numbering.call(), trunk: numbering.end(), spec };
            let (e1, e2) = (numbering.end(), numbering.end());
            answer(&mut steps, &c, &e1, "4001");
            let ringing = [target(&e2, "4002", &spec.caller)];
            steps.push(Step::Delta3 { call: c.id, record: c.detail(None, &c.trunk(RINGBACK, 2), None, &ringing) });
            steps.push(Step::Delta3 { call: c.id, record: c.lost(&e1, 126) });
            steps.push(Step::Pause);
            let b = ext(&e2, "4002", CONNECTED, 1, 0, &e1);
            steps.push(Step::Delta3 { call: c.id, record: c.detail(None, &c.trunk(CONNECTED, 0), Some(&b), &[]) });
            steps.push(Step::Pause);
            hang_up(&mut steps, &c, &e2);
        }
        Scenario::AttendedTransfer(spec) => {
            let c = Call { id: numbering.call(), trunk: numbering.end(), spec };
            let e1 = numbering.end();
            answer(&mut steps, &c, &e1, "4001");
            let held = ext(&e1, "4001", CONNECTED, 0, 0, "");
            steps.push(Step::Delta3 { call: c.id, record: c.detail(None, &c.trunk(CONNECTED, 1), Some(&held), &[]) });
            steps.push(Step::Pause);
            // The consultation call from 4001 to 4002.
            let consult = numbering.call();
            let (e3, e4) = (numbering.end(), numbering.end());
            let consult_call = format!("{NODE},{consult},,,,0");
            let ring = detail(&consult_call, &ext_caller(&e3, "4001", RINGBACK), None, &[target(&e4, "4002", "4001")]);
            steps.push(Step::Delta3 { call: consult, record: ring });
            steps.push(Step::Pause);
            let talk = detail(
                &consult_call,
                &ext_caller(&e3, "4001", CONNECTED),
                Some(&ext(&e4, "4002", CONNECTED, 1, 0, "")),
                &[],
            );
            steps.push(Step::Delta3 { call: consult, record: talk });
            steps.push(Step::Pause);
            // Complete: 4002's end joins the first call in place of 4001.
            let joined = ext(&e4, "4002", CONNECTED, 1, 0, &e1);
            steps.push(Step::Delta3 { call: c.id, record: c.detail(None, &c.trunk(CONNECTED, 0), Some(&joined), &[]) });
            steps.push(Step::Delta3 { call: c.id, record: c.lost(&e1, 126) });
            steps.push(Step::Delta3 { call: consult, record: lost(&e3, 126) });
            steps.push(Step::CallOver { call: consult });
            steps.push(Step::Pause);
            hang_up(&mut steps, &c, &e4);
        }
        Scenario::CallerAbandon(spec) => {
            let c = Call { id: numbering.call(), trunk: numbering.end(), spec };
            let ends: Vec<String> = EXTENSIONS.iter().map(|_| numbering.end()).collect();
            steps.push(sip(true, &c.trunk, spec));
            steps.push(Step::Delta3 { call: c.id, record: c.detail(Some(1), &c.trunk(RINGBACK, 1), None, &[]) });
            steps.push(Step::Pause);
            let targets: Vec<String> = EXTENSIONS.iter().zip(&ends).map(|(x, e)| target(e, x, &spec.caller)).collect();
            steps.push(Step::Delta3 { call: c.id, record: c.detail(None, &c.trunk(RINGBACK, 2), None, &targets) });
            steps.push(Step::Pause);
            steps.push(Step::Delta3 { call: c.id, record: c.lost(&c.trunk, 16) });
            steps.push(Step::CallOver { call: c.id });
            steps.push(sip(false, &c.trunk, spec));
        }
        Scenario::LinkDrop { ends_while_down, survives } => {
            let a = Call { id: numbering.call(), trunk: numbering.end(), spec: ends_while_down };
            let ea = numbering.end();
            let b = Call { id: numbering.call(), trunk: numbering.end(), spec: survives };
            let eb = numbering.end();
            answer(&mut steps, &a, &ea, "4001");
            answer(&mut steps, &b, &eb, "4002");
            steps.push(Step::DropLink);
            // While the client is away: call A ends, call B is put on hold.
            hang_up(&mut steps, &a, &ea);
            let held = ext(&eb, "4002", CONNECTED, 0, 0, "");
            steps.push(Step::Delta3 { call: b.id, record: b.detail(None, &b.trunk(CONNECTED, 1), Some(&held), &[]) });
            steps.push(Step::AwaitResubscribe);
            steps.push(Step::Pause);
            let talk = ext(&eb, "4002", CONNECTED, 1, 0, "");
            steps.push(Step::Delta3 { call: b.id, record: b.detail(None, &b.trunk(CONNECTED, 0), Some(&talk), &[]) });
            steps.push(Step::Pause);
            hang_up(&mut steps, &b, &eb);
        }
    }
    steps
}

/// SIPTrack START, ringing on `number`, answered by it.
fn answer(steps: &mut Vec<Step>, c: &Call<'_>, end: &str, number: &str) {
    steps.push(sip(true, &c.trunk, c.spec));
    let ring = [target(end, number, &c.spec.caller)];
    steps.push(Step::Delta3 { call: c.id, record: c.detail(None, &c.trunk(RINGBACK, 2), None, &ring) });
    steps.push(Step::Pause);
    let b = ext(end, number, CONNECTED, 1, 0, "");
    steps.push(Step::Delta3 { call: c.id, record: c.detail(None, &c.trunk(CONNECTED, 0), Some(&b), &[]) });
    steps.push(Step::Pause);
}

/// The extension hangs up, then the trunk; SIPTrack END.
fn hang_up(steps: &mut Vec<Step>, c: &Call<'_>, end: &str) {
    steps.push(Step::Delta3 { call: c.id, record: c.lost(end, 16) });
    steps.push(Step::Delta3 { call: c.id, record: c.lost(&c.trunk, 16) });
    steps.push(Step::CallOver { call: c.id });
    steps.push(sip(false, &c.trunk, c.spec));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests unwrap what they built themselves.
mod tests {
    use super::*;

    #[test]
    fn every_record_of_every_scenario_is_valid_delta3() {
        let mut numbering = Numbering::default();
        for (i, name) in Scenario::NAMES.iter().enumerate() {
            let scenario = Scenario::named(name, i as u64).unwrap();
            assert_eq!(scenario.name(), *name);
            let steps = script(&scenario, &mut numbering);
            let mut records = 0;
            for step in &steps {
                if let Step::Delta3 { record, .. } = step {
                    let parsed =
                        adapter_avaya_r11::delta3::parse(record).unwrap_or_else(|e| panic!("{name}: {e}: {record}"));
                    let written = parsed.to_string();
                    assert_eq!(adapter_avaya_r11::delta3::parse(&written).as_ref(), Ok(&parsed), "{name}: {written}");
                    records += 1;
                }
                if let Step::SipTrack(s) = step {
                    adapter_avaya_r11::packet::SipTrack::parse(s).unwrap();
                }
            }
            assert!(records >= 3, "{name}");
        }
        assert!(Scenario::named("nope", 0).is_none());
    }

    #[test]
    fn the_caller_spec_is_on_the_wire() {
        let spec = CallSpec {
            sip_call_id: "abc@10.0.0.1".into(),
            caller: "447700900123".into(),
            did: "441234567890".into(),
            caller_name: "Acme \"Sales\"".into(),
        };
        let steps = script(&Scenario::HuntGroupAnswer(spec), &mut Numbering::default());
        let Step::SipTrack(start) = &steps[0] else { panic!() };
        assert!(start.starts_with("START,") && start.ends_with(",TRUNK,IN,abc@10.0.0.1"));
        let Step::Delta3 { record, .. } = &steps[1] else { panic!() };
        let adapter_avaya_r11::delta3::Delta3Record::Detail(d) = adapter_avaya_r11::delta3::parse(record).unwrap()
        else {
            panic!()
        };
        assert_eq!((d.party_a.cli.as_ref(), d.party_a.did.as_ref()), ("447700900123", "441234567890"));
        assert_eq!(d.party_a.name, "Acme \"Sales\"");
    }
}
