//! Scripted IP Office R9 calls, written as the SMDR records (one per segment, when it ends)
//! and the Delta2 lines (as things happen) the PBX and a DevLink relay would send.
//!
//! Each call is described once, as what the PBX does at which second of the call; both feeds
//! are derived from that. The record layouts follow Avaya's SMDR field list and examples
//! (protocol notes §6); the Delta2 lines follow the `CALL: S/D/A` field list (§5). How the IP
//! Office fills fields during a transfer or a park is our model of it (the same model the
//! adapter is built on), to be checked on a live system.

use adapter_avaya_r9::delta2::status_line;

/// The extensions of the simulated hunt group 200.
pub const EXTENSIONS: [&str; 3] = ["4001", "4002", "4003"];

/// The hunt group's number and name.
pub const HUNT_GROUP: &str = "200";

/// Who calls: what a correlation test needs to match the call to a platform leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSpec {
    /// The caller's number (CLI).
    pub caller: String,
    /// The DDI dialled.
    pub did: String,
}

impl CallSpec {
    /// A call with made-up but unique values derived from `n`.
    pub fn numbered(n: u64) -> CallSpec {
        CallSpec { caller: format!("4477009{:05}", n % 100_000), did: "441234567890".into() }
    }
}

/// A scripted call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    /// 4001 rings 5 s, answers, talks 20 s; the caller hangs up.
    InboundAnswered(CallSpec),
    /// 4001 rings 10 s; the caller hangs up.
    Missed(CallSpec),
    /// Hunt group 200 rings 4001, 4002 and 4003; 4002 answers after 4 s and talks 15 s.
    HuntGroup(CallSpec),
    /// 4001 answers after 3 s, talks 10 s, holds 5 s and transfers to 4002, which rings 2 s
    /// and talks 12 s.
    Transfer(CallSpec),
    /// 4001 answers after 2 s, talks 8 s and parks the call on slot 1; 4002 unparks it 6 s
    /// later and talks 10 s.
    ParkUnpark(CallSpec),
    /// 4001 rings 12 s without an answer; voicemail takes the call for 20 s.
    Voicemail(CallSpec),
}

impl Scenario {
    /// The scenario names `pbx-sim avaya-r9 --scenario` accepts (and `mix`).
    pub const NAMES: [&'static str; 6] = ["answered", "missed", "hunt-group", "transfer", "park", "voicemail"];

    /// The scenario called `name`, its call numbered `n`.
    pub fn named(name: &str, n: u64) -> Option<Scenario> {
        let spec = CallSpec::numbered(n);
        Some(match name {
            "answered" => Scenario::InboundAnswered(spec),
            "missed" => Scenario::Missed(spec),
            "hunt-group" => Scenario::HuntGroup(spec),
            "transfer" => Scenario::Transfer(spec),
            "park" => Scenario::ParkUnpark(spec),
            "voicemail" => Scenario::Voicemail(spec),
            _ => return None,
        })
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::InboundAnswered(_) => "answered",
            Scenario::Missed(_) => "missed",
            Scenario::HuntGroup(_) => "hunt-group",
            Scenario::Transfer(_) => "transfer",
            Scenario::ParkUnpark(_) => "park",
            Scenario::Voicemail(_) => "voicemail",
        }
    }

    fn spec(&self) -> &CallSpec {
        match self {
            Scenario::InboundAnswered(s)
            | Scenario::Missed(s)
            | Scenario::HuntGroup(s)
            | Scenario::Transfer(s)
            | Scenario::ParkUnpark(s)
            | Scenario::Voicemail(s) => s,
        }
    }
}

/// One thing the simulated PBX sends, at a second of the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emit {
    /// An SMDR record (without CR LF).
    Smdr(String),
    /// A Delta2 line (without the newline).
    Delta2(String),
    /// The call is over (it leaves the relay's snapshot of live calls).
    Over,
}

/// A call's script: what is sent at which millisecond after the call started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallScript {
    /// The SMDR Call ID and Delta2 CallID.
    pub call_id: u64,
    /// `(ms after the call started, what)`, in time order.
    pub emits: Vec<(u64, Emit)>,
}

/// One SMDR segment of a call.
struct Seg {
    party1: (&'static str, &'static str),
    party2: (&'static str, &'static str),
    ring: u32,
    conn: u32,
    hold: u32,
    park: u32,
    cause: &'static str,
    targeter: &'static str,
}

const TRUNK: (&str, &str) = ("T9001", "Line 1.1");
const VM: (&str, &str) = ("V9501", "VM Channel 1");

fn ext_device(ext: &str) -> (&'static str, &'static str) {
    match ext {
        "4001" => ("E4001", "Alice"),
        "4002" => ("E4002", "Bob"),
        _ => ("E4003", "Carol"),
    }
}

fn seg(party1: (&'static str, &'static str), ring: u32, conn: u32) -> Seg {
    Seg { party1, party2: TRUNK, ring, conn, hold: 0, park: 0, cause: "", targeter: "" }
}

fn hms(secs: u32) -> String {
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// The SMDR records of an inbound call's segments, each with the millisecond it is written.
fn smdr(call_start: &str, call_id: u64, spec: &CallSpec, segs: &[Seg]) -> Vec<(u64, Emit)> {
    let mut t = 0u64;
    let mut out = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        t += 1000 * u64::from(s.ring + s.conn + s.hold + s.park);
        let cont = u8::from(i + 1 < segs.len());
        // 30 fields, as Avaya's 2008 examples and a 2018 capture have.
        let line = format!(
            "{call_start},{},{},{},I,{},{},,0,{call_id},{cont},{},{},{},{},{},{},,,,,,,,,,,{},{},",
            hms(s.conn),
            s.ring,
            spec.caller,
            spec.did,
            spec.did,
            s.party1.0,
            s.party1.1,
            s.party2.0,
            s.party2.1,
            s.hold,
            s.park,
            s.cause,
            s.targeter,
        );
        out.push((t, Emit::Smdr(line)));
    }
    out
}

/// Delta2 status of the call: A is the trunk (id 100), B the given end.
struct D2<'a> {
    call_id: &'a str,
    spec: &'a CallSpec,
}

impl D2<'_> {
    fn s(&self, a_state: u32, b: Option<(&str, &str, u32)>, list: &str, cause: u32, extra: &[(usize, &str)]) -> Emit {
        let (a_state, cause) = (a_state.to_string(), cause.to_string());
        let (b_id, b_name, b_state) = match b {
            Some((id, name, st)) => (id.to_owned(), name.to_owned(), st.to_string()),
            None => ("0".to_owned(), String::new(), "0".to_owned()),
        };
        let mut values: Vec<(usize, &str)> = vec![
            (1, "100"),
            (2, &b_id),
            (3, &a_state),
            (4, &b_state),
            (5, "1"),
            (9, "Line 1"),
            (10, &b_name),
            (11, list),
            (15, &self.spec.did),
            (17, &self.spec.caller),
            (25, &cause),
            (50, self.call_id),
        ];
        values.extend_from_slice(extra);
        Emit::Delta2(status_line(&values))
    }

    fn deleted(&self, b: &str) -> Emit {
        Emit::Delta2(format!("CALL: D 100,{b},{}", self.call_id))
    }
}

fn name(ext: &str) -> String {
    let (_, n) = ext_device(ext);
    format!("{n} ({ext})")
}

/// The script of `scenario` for Call ID `call_id`, its Call Start written as `call_start`
/// (`YYYY/MM/DD HH:MM:SS`, the PBX's local time).
pub fn script(scenario: &Scenario, call_id: u64, call_start: &str) -> CallScript {
    let spec = scenario.spec();
    let id = call_id.to_string();
    let d = D2 { call_id: &id, spec };
    const RINGING: u32 = 1;
    const CONNECTED: u32 = 2;
    const HELD: u32 = 12;
    const PARKED: u32 = 11;
    const QUEUED: u32 = 10;
    let (a1, a2) = (name("4001"), name("4002"));
    let mut emits: Vec<(u64, Emit)> = match scenario {
        Scenario::InboundAnswered(_) => {
            let mut e = smdr(call_start, call_id, spec, &[seg(ext_device("4001"), 5, 20)]);
            e.extend([
                (0, d.s(RINGING, Some(("201", &a1, RINGING)), "", 0, &[])),
                (5_000, d.s(CONNECTED, Some(("201", &a1, CONNECTED)), "", 0, &[])),
                (25_000, d.deleted("201")),
            ]);
            e
        }
        Scenario::Missed(_) => {
            let mut e = smdr(call_start, call_id, spec, &[seg(ext_device("4001"), 10, 0)]);
            e.extend([(0, d.s(RINGING, Some(("201", &a1, RINGING)), "", 0, &[])), (10_000, d.deleted("201"))]);
            e
        }
        Scenario::HuntGroup(_) => {
            let mut e = smdr(call_start, call_id, spec, &[seg(ext_device("4002"), 4, 15)]);
            let list = format!("{};{};{}", name("4001"), name("4002"), name("4003"));
            e.extend([
                (0, d.s(QUEUED, None, "", 0, &[(29, HUNT_GROUP)])),
                (0, d.s(RINGING, None, &list, 0, &[(29, HUNT_GROUP)])),
                (4_000, d.s(CONNECTED, Some(("202", &a2, CONNECTED)), "", 124, &[])),
                (19_000, d.deleted("202")),
            ]);
            e
        }
        Scenario::Transfer(_) => {
            let first = Seg { hold: 5, cause: "U XfP", targeter: "Bob", ..seg(ext_device("4001"), 3, 10) };
            let second = Seg { cause: "U Xfd", targeter: "Alice", ..seg(ext_device("4002"), 2, 12) };
            let mut e = smdr(call_start, call_id, spec, &[first, second]);
            e.extend([
                (0, d.s(RINGING, Some(("201", &a1, RINGING)), "", 0, &[])),
                (3_000, d.s(CONNECTED, Some(("201", &a1, CONNECTED)), "", 0, &[])),
                (13_000, d.s(CONNECTED, Some(("201", &a1, HELD)), "", 0, &[])),
                (18_000, d.s(RINGING, Some(("202", &a2, RINGING)), "", 126, &[])),
                (20_000, d.s(CONNECTED, Some(("202", &a2, CONNECTED)), "", 0, &[])),
                (32_000, d.deleted("202")),
            ]);
            e
        }
        Scenario::ParkUnpark(_) => {
            let first = Seg { park: 6, ..seg(ext_device("4001"), 2, 8) };
            let second = seg(ext_device("4002"), 0, 10);
            let mut e = smdr(call_start, call_id, spec, &[first, second]);
            e.extend([
                (0, d.s(RINGING, Some(("201", &a1, RINGING)), "", 0, &[])),
                (2_000, d.s(CONNECTED, Some(("201", &a1, CONNECTED)), "", 0, &[])),
                (10_000, d.s(PARKED, None, "", 117, &[(42, "1")])),
                (16_000, Emit::Delta2(format!("CALL: A 100,202,{id}"))),
                (16_000, d.s(CONNECTED, Some(("202", &a2, CONNECTED)), "", 118, &[(42, "1")])),
                (26_000, d.deleted("202")),
            ]);
            e
        }
        Scenario::Voicemail(_) => {
            let first = seg(ext_device("4001"), 12, 0);
            let second = seg(VM, 0, 20);
            let mut e = smdr(call_start, call_id, spec, &[first, second]);
            e.extend([
                (0, d.s(RINGING, Some(("201", &a1, RINGING)), "", 0, &[])),
                (12_000, d.s(CONNECTED, Some(("301", "VM Channel 1", CONNECTED)), "", 123, &[])),
                (32_000, d.deleted("301")),
            ]);
            e
        }
    };
    let end = emits.iter().map(|(t, _)| *t).max().unwrap_or(0);
    emits.push((end, Emit::Over));
    // Stable: at the same millisecond, Delta2 (live) before SMDR (written as a segment ends).
    emits.sort_by_key(|(t, e)| (*t, matches!(e, Emit::Smdr(_)), matches!(e, Emit::Over)));
    CallScript { call_id, emits }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use adapter_avaya_r9::delta2::{Delta2Line, parse as parse_delta2};
    use adapter_avaya_r9::smdr::{line_text, parse};

    use super::*;

    #[test]
    fn every_script_parses_on_both_feeds() {
        for (n, name) in Scenario::NAMES.iter().enumerate() {
            let scenario = Scenario::named(name, n as u64).unwrap();
            let s = script(&scenario, 1_000_000 + n as u64, "2024/05/01 11:00:00");
            let mut last_smdr = None;
            for (_, emit) in &s.emits {
                match emit {
                    Emit::Smdr(line) => {
                        let text = line_text(line.as_bytes());
                        let r = parse(&text).unwrap();
                        assert_eq!(r.call_id, s.call_id.to_string());
                        assert_eq!(r.fields, 30, "{line}");
                        last_smdr = Some(r.continuation);
                    }
                    Emit::Delta2(line) => {
                        let r = parse_delta2(line).unwrap();
                        if let Delta2Line::Status(st) = r {
                            assert_eq!(st.call_id(), s.call_id.to_string());
                        }
                    }
                    Emit::Over => {}
                }
            }
            assert_eq!(last_smdr, Some(false), "{name}: the last segment ends the call");
        }
    }
}
