//! Scripted 3CX calls, written as what the PBX does: participants appear, change and go, each
//! change announced by a notification (and fetched by the client), CDR lines at the end.
//!
//! The participant shapes follow the V20 capture (`testdata/samples/3cx/`); how 3CX sequences
//! legs during a transfer or a queue call is our model of it (inferred, to be checked against
//! a live system), the same model the adapter's tracker is built on.

use adapter_3cx::participant::{Participant, Status};

/// The trunk's DN.
pub const TRUNK_DN: &str = "10007";
/// The queue every inbound queue call goes through.
pub const QUEUE: &str = "800";
/// The agents' extensions.
pub const EXTENSIONS: [&str; 3] = ["101", "102", "103"];

/// Who calls: what correlation needs to bind the call to a platform leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSpec {
    /// The caller's number (`party_caller_id`).
    pub caller: String,
    /// The caller's display name (`party_caller_name`).
    pub caller_name: String,
    /// The DID dialled (`party_did`).
    pub did: String,
}

impl CallSpec {
    /// A call with made-up but unique values derived from `n`.
    pub fn numbered(n: u64) -> CallSpec {
        CallSpec {
            caller: format!("4477009{:05}", n % 100_000),
            caller_name: format!("Caller {n}"),
            did: "441234567890".into(),
        }
    }
}

/// A scripted scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    /// Inbound trunk call to queue 800: 101 and 102 ring, 102 answers, then hangs up.
    QueueAnswer(CallSpec),
    /// Answered by 101, blind-transferred to 102, who answers and hangs up.
    Transfer(CallSpec),
    /// Queue call ringing 101 and 102; the caller hangs up.
    CallerAbandon(CallSpec),
    /// 101 dials out, the far end answers, 101 hangs up.
    Outbound(CallSpec),
    /// 101 rings; every token expires; 101 answers and hangs up (the fetch after the expiry
    /// is refused once and retried with a new token).
    TokenExpiry(CallSpec),
    /// 101 talks in one call, 102 rings in another; the WebSocket drops; while it is down
    /// the first call ends, 102 answers and 103 starts ringing in a third call; after the
    /// reconnect 102 hangs up and the third caller gives up.
    WsDrop {
        /// Ends while the WebSocket is down.
        ends_while_down: CallSpec,
        /// Answered while down.
        answered_while_down: CallSpec,
        /// Starts while down.
        starts_while_down: CallSpec,
    },
    /// 101 rings; 102 gets a participant that is gone before the client's GET (404); 101
    /// answers and hangs up: no event for 102.
    GetRemoveRace(CallSpec),
    /// Another program with the same client id takes a token again and again while 101's call
    /// goes on: the client must name the conflict and back off (not part of `mix`: it leaves
    /// the client waiting).
    TokenThief(CallSpec),
}

impl Scenario {
    /// The scenarios `mix` plays in turn.
    pub const NAMES: [&'static str; 7] =
        ["queue", "transfer", "abandon", "outbound", "token-expiry", "ws-drop", "get-remove-race"];

    /// Every name `pbx-sim 3cx --scenario` accepts (and `mix`).
    pub const ALL: [&'static str; 8] =
        ["queue", "transfer", "abandon", "outbound", "token-expiry", "ws-drop", "get-remove-race", "token-thief"];

    /// The scenario called `name`, with calls numbered from `n`.
    pub fn named(name: &str, n: u64) -> Option<Scenario> {
        let spec = CallSpec::numbered(n);
        Some(match name {
            "queue" => Scenario::QueueAnswer(spec),
            "transfer" => Scenario::Transfer(spec),
            "abandon" => Scenario::CallerAbandon(spec),
            "outbound" => Scenario::Outbound(spec),
            "token-expiry" => Scenario::TokenExpiry(spec),
            "ws-drop" => Scenario::WsDrop {
                ends_while_down: spec,
                answered_while_down: CallSpec::numbered(n + 1),
                starts_while_down: CallSpec::numbered(n + 2),
            },
            "get-remove-race" => Scenario::GetRemoveRace(spec),
            "token-thief" => Scenario::TokenThief(spec),
            _ => return None,
        })
    }

    /// The caller specs of its inbound calls, in order (for leg announcements).
    pub fn inbound_specs(&self) -> Vec<&CallSpec> {
        match self {
            Scenario::QueueAnswer(s)
            | Scenario::Transfer(s)
            | Scenario::CallerAbandon(s)
            | Scenario::TokenExpiry(s)
            | Scenario::GetRemoveRace(s)
            | Scenario::TokenThief(s) => vec![s],
            Scenario::Outbound(_) => vec![],
            Scenario::WsDrop { ends_while_down, answered_while_down, starts_while_down } => {
                vec![ends_while_down, answered_while_down, starts_while_down]
            }
        }
    }
}

/// One thing the simulated PBX does.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Sets a participant and sends an Upsert; with `await_fetch`, waits until a client
    /// fetched this version (so that scripted states are seen one by one, as they are when
    /// people, not a script, answer phones).
    Upsert {
        /// The participant (its `dn` and `id` name it).
        participant: Participant,
        /// Wait for the client's GET.
        await_fetch: bool,
    },
    /// Removes a participant and sends a Remove.
    Remove {
        /// The DN.
        dn: String,
        /// The id.
        id: i64,
    },
    /// Changes a participant without a notification (the WebSocket is down).
    SetSilently(Participant),
    /// Removes a participant without a notification.
    RemoveSilently {
        /// The DN.
        dn: String,
        /// The id.
        id: i64,
    },
    /// Closes every WebSocket and refuses new ones until [`Step::AwaitReconnect`].
    DropWebSocket,
    /// Accepts WebSockets again and waits for the client's next snapshot.
    AwaitReconnect,
    /// Every token expires now.
    ExpireTokens,
    /// Another program with the same client id takes a token (ours is invalid from now on).
    StealToken,
    /// Sends a CDR line.
    Cdr(String),
    /// A pause (the demo's pace; nothing in tests).
    Pause,
}

/// Hands out PBX call ids and participant ids, so consecutive scenarios do not collide.
#[derive(Debug, Clone)]
pub struct Numbering {
    next_call: i64,
    next_participant: i64,
}

impl Default for Numbering {
    fn default() -> Numbering {
        Numbering { next_call: 1264, next_participant: 8106 }
    }
}

impl Numbering {
    fn call(&mut self) -> i64 {
        self.next_call += 1;
        self.next_call - 1
    }

    fn participant(&mut self) -> i64 {
        self.next_participant += 1;
        self.next_participant - 1
    }
}

/// A participant on `dn` whose other party is the caller of `spec` over the trunk.
pub fn inbound(id: i64, dn: &str, status: Status, callid: i64, spec: &CallSpec) -> Participant {
    Participant {
        id: Some(id),
        status: Some(status),
        dn: Some(dn.to_owned()),
        party_caller_name: Some(spec.caller_name.clone()),
        party_dn: Some(TRUNK_DN.to_owned()),
        party_caller_id: Some(spec.caller.clone()),
        party_did: Some(spec.did.clone()),
        device_id: Some(format!("sip:{dn}@127.0.0.1:5483;rinstance=c2a75fd2f1caea71")),
        party_dn_type: Some("Wexternalline".to_owned()),
        direct_control: Some(false),
        originated_by_dn: Some(String::new()),
        originated_by_type: Some("None".to_owned()),
        referred_by_dn: Some(String::new()),
        referred_by_type: Some("None".to_owned()),
        on_behalf_of_dn: Some(String::new()),
        on_behalf_of_type: Some("None".to_owned()),
        callid: Some(callid),
        legid: Some(1),
    }
}

fn for_queue(mut p: Participant) -> Participant {
    p.on_behalf_of_dn = Some(QUEUE.to_owned());
    p.on_behalf_of_type = Some("Wqueue".to_owned());
    p
}

fn with_status(p: &Participant, status: Status) -> Participant {
    Participant { status: Some(status), ..p.clone() }
}

fn upsert(p: &Participant) -> Step {
    Step::Upsert { participant: p.clone(), await_fetch: true }
}

fn remove(p: &Participant) -> Step {
    Step::Remove { dn: p.dn.clone().unwrap_or_default(), id: p.id.unwrap_or_default() }
}

/// The steps of `scenario`.
pub fn script(scenario: &Scenario, n: &mut Numbering) -> Vec<Step> {
    use Status::{Connected, Dialing, Ringing};
    let mut s = Vec::new();
    match scenario {
        Scenario::QueueAnswer(spec) => {
            let call = n.call();
            let a = for_queue(inbound(n.participant(), "101", Ringing, call, spec));
            let b = for_queue(inbound(n.participant(), "102", Ringing, call, spec));
            s.extend([upsert(&a), upsert(&b), Step::Pause, upsert(&with_status(&b, Connected)), remove(&a)]);
            s.extend([Step::Pause, Step::Pause, remove(&b)]);
        }
        Scenario::Transfer(spec) => {
            let call = n.call();
            let a = inbound(n.participant(), "101", Ringing, call, spec);
            let mut b = inbound(n.participant(), "102", Ringing, call, spec);
            b.referred_by_dn = Some("101".into());
            b.referred_by_type = Some("Wextension".into());
            s.extend([upsert(&a), Step::Pause, upsert(&with_status(&a, Connected)), Step::Pause]);
            s.extend([
                upsert(&b),
                remove(&a),
                Step::Pause,
                upsert(&with_status(&b, Connected)),
                Step::Pause,
                remove(&b),
            ]);
        }
        Scenario::CallerAbandon(spec) => {
            let call = n.call();
            let a = for_queue(inbound(n.participant(), "101", Ringing, call, spec));
            let b = for_queue(inbound(n.participant(), "102", Ringing, call, spec));
            s.extend([upsert(&a), upsert(&b), Step::Pause, Step::Pause, remove(&a), remove(&b)]);
        }
        Scenario::Outbound(spec) => {
            let call = n.call();
            let mut a = inbound(n.participant(), "101", Dialing, call, spec);
            a.party_caller_id = Some(spec.caller.clone());
            a.party_caller_name = Some(spec.caller.clone());
            a.party_did = Some(String::new());
            s.extend([
                upsert(&a),
                Step::Pause,
                upsert(&with_status(&a, Connected)),
                Step::Pause,
                Step::Pause,
                remove(&a),
            ]);
        }
        Scenario::TokenExpiry(spec) => {
            let call = n.call();
            let a = inbound(n.participant(), "101", Ringing, call, spec);
            s.extend([upsert(&a), Step::Pause, Step::ExpireTokens, upsert(&with_status(&a, Connected)), Step::Pause]);
            s.push(remove(&a));
        }
        Scenario::WsDrop { ends_while_down, answered_while_down, starts_while_down } => {
            let (c1, c2, c3) = (n.call(), n.call(), n.call());
            let a = inbound(n.participant(), "101", Ringing, c1, ends_while_down);
            let b = inbound(n.participant(), "102", Ringing, c2, answered_while_down);
            let c = inbound(n.participant(), "103", Ringing, c3, starts_while_down);
            s.extend([upsert(&a), upsert(&with_status(&a, Connected)), upsert(&b), Step::Pause]);
            s.extend([Step::DropWebSocket, Step::RemoveSilently { dn: "101".into(), id: a.id.unwrap_or_default() }]);
            s.extend([
                Step::SetSilently(with_status(&b, Connected)),
                Step::SetSilently(c.clone()),
                Step::AwaitReconnect,
            ]);
            s.extend([Step::Pause, remove(&b), remove(&c)]);
        }
        Scenario::TokenThief(spec) => {
            let call = n.call();
            let a = inbound(n.participant(), "101", Ringing, call, spec);
            // Before each change the thief takes a token: the client's GET is refused, it takes
            // one back (knocking the thief out), and so on, until it sees the pattern. The
            // last fetch is never served (the client stopped): the step waits its limit.
            s.extend([upsert(&a), Step::Pause]);
            for status in [Connected, Ringing, Connected] {
                s.extend([Step::StealToken, upsert(&with_status(&a, status)), Step::Pause]);
            }
            s.push(remove(&a));
        }
        Scenario::GetRemoveRace(spec) => {
            let call = n.call();
            let a = inbound(n.participant(), "101", Ringing, call, spec);
            let ghost = inbound(n.participant(), "102", Ringing, call, spec);
            s.extend([upsert(&a), Step::Pause]);
            // 102 rings for an instant: gone before the client can fetch it.
            s.push(Step::Upsert { participant: ghost.clone(), await_fetch: false });
            s.push(remove(&ghost));
            s.extend([Step::Pause, upsert(&with_status(&a, Connected)), Step::Pause, remove(&a)]);
        }
    }
    s
}
