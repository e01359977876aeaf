//! The participant tracker: WebSocket notifications, snapshots, fetched participants and CDR
//! records in, [`AdapterEvent`]s and fetch requests out.
//!
//! Sans-IO in the str0m style: feed one input with a `handle_*` method, passing the time, then
//! drain [`Tracker::poll_output`] until it returns [`Output::Timeout`]; perform each
//! [`Output::Fetch`] (a `GET` of the participant) and hand the answer back with
//! [`Tracker::handle_fetched`]; call [`Tracker::handle_timeout`] when the time comes.
//!
//! ```
//! use adapter_3cx::tracker::{Output, Tracker, TrackerSettings, Fetched};
//! use adapter_3cx::participant::Participant;
//! use adapter_3cx::ws::parse_frame;
//! use listener_core::{PbxId, PbxType, UnixMillis};
//!
//! let mut t = Tracker::new(PbxId::new("hq", PbxType::new("3cx")), TrackerSettings::default());
//! t.handle_connected(UnixMillis(0));
//! t.handle_snapshot(UnixMillis(10), Vec::new());
//! let frame = parse_frame(r#"{"sequence":1,"event":{"event_type":0,"entity":"/callcontrol/150/participants/8106"}}"#, 65_536).unwrap();
//! t.handle_ws_event(UnixMillis(20), frame);
//! let mut fetch = None;
//! while let Some(out) = t.poll_output_now() {
//!     if let Output::Fetch { dn, id } = out { fetch = Some((dn, id)); }
//! }
//! assert_eq!(fetch, Some(("150".to_string(), "8106".to_string())), "an Upsert is fetched");
//! let body = Participant::from_json(br#"{"id":8106,"status":"Ringing","dn":"150","party_dn_type":"Wexternalline","party_caller_id":"0123456789","callid":1264}"#).unwrap();
//! t.handle_fetched(UnixMillis(30), "150", "8106", Fetched::Found(body));
//! // → the Resync of the snapshot, then a Ringing signal for extension 150 in PBX call 1264.
//! ```
//!
//! How 3CX facts become signals (protocol notes §2.6; the model is ours, to be verified on a
//! live system):
//!
//! - a participant is a leg of PBX call `callid` on a monitored DN. A new leg `Ringing` is
//!   [`CallChange::Ringing`]; `Connected` is [`CallChange::Connected`]; `Dialing` (the
//!   extension places a call) says nothing until it connects, as on the other PBX types;
//! - a leg with `on_behalf_of_dn` rings for a queue or ring group: [`CallChange::Queued`] first
//!   (so every event of the call carries `meta.queue`);
//! - legs on a route point (our own DN, or a DN the snapshot types `Wroutepoint`) and on a
//!   configured park orbit give call facts, not events;
//! - a Remove does not say why. The leg waits `removal_grace_ms` for what explains it: a new leg
//!   whose `referred_by_dn` is its DN (→ [`CallChange::Transferred`]), a leg of the same call on
//!   a park orbit (→ [`CallChange::Parked`]), another leg of the call connecting (a ringing leg
//!   → `answered-elsewhere`), the call ringing on elsewhere (→ `no-answer`). When no leg of the
//!   call is left, [`CallChange::Ended`]: the lifecycle gives the ringing legs
//!   `caller-abandoned` (nobody answered) or `answered-elsewhere`;
//! - an Upsert is fetched (one request per participant at a time; Upserts that arrive
//!   meanwhile are coalesced into one more fetch); a 404 means the leg is gone (the GET raced
//!   the Remove), and a Remove during a fetch is applied after the fetched body;
//! - after every (re)connection the snapshot is compared with what we knew: what changed is
//!   emitted with `meta.reconciled = "true"`, legs that vanished are disconnected as `unknown`
//!   (reconciled), and [`AdapterEvent::Resync`] lists the live calls; notifications that
//!   arrive while the snapshot is fetched are buffered and applied after it.

mod cdr;

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, VecDeque};

use foldhash::fast::RandomState;

use listener_core::{
    AdapterEvent, CallChange, CallInfo, CallSignal, Direction, DisconnectReason, Extension, Facts, PbxCallId, PbxId,
    PbxSignal, SignalBody, UnixMillis,
};

use crate::participant::{DnInfo, Participant, Status, nonempty};
use crate::ws::{EntityRef, EventType, WsEvent};

pub use cdr::{CdrOutcome, CdrSettings};

/// The `source` of live signals.
pub const SOURCE: &str = "callcontrol";
/// The `source` of signals reconstructed from CDR records.
pub const CDR_SOURCE: &str = "cdr";

/// Tracker tuning. See [`crate::config::Config`] for the user-facing keys.
#[derive(Debug, Clone)]
pub struct TrackerSettings {
    /// The API client's own DN (its route point): legs there are facts, not events.
    pub route_point: String,
    /// DNs that are park orbits (monitored): a leg there means the call was parked.
    pub park_orbits: BTreeSet<String>,
    /// How long a removed leg waits for what explains its removal.
    pub removal_grace_ms: u64,
    /// How often a failed fetch is tried before the leg is left to the next snapshot.
    pub fetch_attempts: u32,
    /// The delay before retrying a failed fetch.
    pub fetch_retry_ms: u64,
    /// Most notifications buffered while a snapshot is fetched; past it, another snapshot.
    pub max_buffered_events: usize,
    /// Most legs tracked at once (a bound against a runaway feed).
    pub max_legs: usize,
    /// The CDR feed, when configured.
    pub cdr: Option<CdrSettings>,
}

impl Default for TrackerSettings {
    fn default() -> Self {
        TrackerSettings {
            route_point: String::new(),
            park_orbits: BTreeSet::new(),
            removal_grace_ms: 1_500,
            fetch_attempts: 3,
            fetch_retry_ms: 500,
            max_buffered_events: 10_000,
            max_legs: 50_000,
            cdr: None,
        }
    }
}

/// What the tracker has for its driver.
#[allow(clippy::large_enum_variant)] // Moved out at once; boxing would cost an allocation per event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An event for the pipeline.
    Event(AdapterEvent),
    /// `GET /callcontrol/{dn}/participants/{id}`, then [`Tracker::handle_fetched`].
    Fetch {
        /// The DN.
        dn: String,
        /// The participant id.
        id: String,
    },
    /// Too many notifications while a snapshot was fetched: take another snapshot.
    Resnapshot,
    /// Nothing more for now; call [`Tracker::handle_timeout`] at this time (if any).
    Timeout(Option<UnixMillis>),
}

/// The answer to an [`Output::Fetch`].
// `Found` is the common case; boxing it would cost an allocation per fetch.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The participant's body.
    Found(Participant),
    /// 404: it is gone.
    Gone,
    /// The request failed (network, 5xx, an unreadable body): tried again a few times.
    Failed,
}

/// Counters of what the tracker did with its inputs, for the driver's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// Notifications that were not about participants (devices, DNs, DTMF, responses).
    pub ignored_events: u64,
    /// Removes of participants we never knew.
    pub unknown_removes: u64,
    /// Fetches answered with 404.
    pub gone: u64,
    /// Fetches given up after the retries.
    pub fetch_failures: u64,
    /// Participants without an id, or over the leg limit, skipped.
    pub unusable_participants: u64,
    /// Snapshots applied.
    pub snapshots: u64,
}

type LegKey = (String, String);

/// The tracker's maps: foldhash, seeded per map, instead of SipHash (docs/decisions/0016). The
/// keys are DNs, participant ids, call ids and CDR record ids from the PBX, and a map is
/// hashed several times per notification and per CDR line.
pub(crate) type Map<K, V> = HashMap<K, V, RandomState>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not connected: notifications cannot arrive; fetches are void.
    Offline,
    /// Connected; the snapshot is being fetched: notifications are buffered.
    Syncing,
    /// Live.
    Live,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegState {
    Dialing,
    Ringing,
    Connected,
    /// A status 3CX does not document: no change.
    Other,
}

impl LegState {
    fn of(status: Option<&Status>) -> LegState {
        match status {
            Some(Status::Dialing) => LegState::Dialing,
            Some(Status::Ringing) => LegState::Ringing,
            Some(Status::Connected) => LegState::Connected,
            _ => LegState::Other,
        }
    }
}

/// What a leg is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A monitored extension: it gets events.
    Extension,
    /// A route point: facts only.
    RoutePoint,
    /// A park orbit: the call was parked.
    ParkOrbit,
}

/// A fetch of one participant: at most one in flight.
#[derive(Debug, Clone, Default)]
struct FetchSlot {
    in_flight: bool,
    /// Another Upsert came meanwhile: fetch again after this one.
    again: bool,
    /// A Remove came meanwhile: apply it after the body.
    remove_after: bool,
    /// Failed attempts so far.
    failures: u32,
}

/// Why a leg left, found during its grace.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Explanation {
    Transferred(String),
    Parked(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provenance {
    Live,
    Reconciled,
}

#[derive(Debug, Clone)]
struct Leg {
    role: Role,
    /// The last body (what a Remove is reported with).
    body: Participant,
    call: String,
    state: LegState,
    /// Whether Ringing or Connected was emitted for it.
    announced: bool,
    /// When it was first seen.
    since: UnixMillis,
    /// Removed: decided when its grace ends.
    removing: Option<Removal>,
}

#[derive(Debug, Clone)]
struct Removal {
    postponed: u32,
    explanation: Option<Explanation>,
    provenance: Provenance,
}

#[derive(Debug, Clone)]
struct Call {
    id: PbxCallId,
    started: UnixMillis,
    info: CallInfo,
    trunk: Option<String>,
    queue: Option<String>,
    legs: BTreeSet<LegKey>,
    /// An extension leg connected in this call, and when.
    answered_at: Option<UnixMillis>,
    /// Extensions that got events.
    extensions: BTreeSet<String>,
    /// Extensions we emitted `parked` for.
    parked: BTreeSet<String>,
    /// A park orbit leg appeared: (orbit, when).
    park_orbit: Option<(String, UnixMillis)>,
}

/// A leg's DN transferred a call to `target` (a new leg's `referred_by_dn`).
#[derive(Debug, Clone)]
struct Referral {
    target: String,
    call: String,
    at: UnixMillis,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Timer {
    Removal(LegKey),
    FetchRetry(LegKey),
    Cdr(cdr::CdrTimer),
}

/// Deadlines by timer, and a min-heap of `(deadline, timer)`: the next deadline and the due
/// timers are found without scanning every timer, and setting a timer costs a push.
///
/// `by_timer` is the truth; a heap entry whose deadline is no longer its timer's (removed, or
/// set again) is stale and skipped when it comes up. The heap's top is kept current after
/// every change, so [`Timers::next`] is exact, and the heap is compacted when stale entries
/// outnumber the live ones. The heap pops in `(deadline, timer)` order: due timers come out
/// earliest first, ties in timer order.
///
/// (A `BTreeSet<(deadline, timer)>` did the same with a remove and an insert per change; with
/// many timers at one deadline, as when a CDR burst is read in one millisecond, every insert
/// compared call and record ids along the tree.)
#[derive(Debug, Default)]
struct Timers {
    by_timer: Map<Timer, UnixMillis>,
    heap: BinaryHeap<Reverse<(UnixMillis, Timer)>>,
}

impl Timers {
    fn insert(&mut self, timer: Timer, at: UnixMillis) {
        match self.by_timer.insert(timer.clone(), at) {
            // Its entry is in the heap already.
            Some(old) if old == at => {}
            Some(_) => {
                self.heap.push(Reverse((at, timer)));
                self.tidy();
            }
            None => self.heap.push(Reverse((at, timer))),
        }
    }

    fn remove(&mut self, timer: &Timer) {
        if self.by_timer.remove(timer).is_some() {
            self.tidy();
        }
    }

    fn next(&self) -> Option<UnixMillis> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns the timers due at `now`, earliest first.
    fn take_due(&mut self, now: UnixMillis) -> Vec<Timer> {
        let mut due = Vec::new();
        while let Some(Reverse((at, _))) = self.heap.peek()
            && *at <= now
        {
            if let Some(Reverse((at, timer))) = self.heap.pop()
                && self.by_timer.get(&timer) == Some(&at)
            {
                self.by_timer.remove(&timer);
                due.push(timer);
            }
        }
        self.tidy();
        due
    }

    /// Drops stale entries from the top (so that [`Timers::next`] is exact), and rebuilds the
    /// heap from `by_timer` once stale entries outnumber the live ones (so that the heap stays
    /// bounded by the timers set). A rebuild, not a `retain`: a timer removed and set again at
    /// the same deadline has two entries that both look live, and only a rebuild drops one.
    fn tidy(&mut self) {
        let live = |by_timer: &Map<Timer, UnixMillis>, at: &UnixMillis, timer: &Timer| by_timer.get(timer) == Some(at);
        if self.heap.len() > 2 * self.by_timer.len() + 64 {
            self.heap = self.by_timer.iter().map(|(timer, at)| Reverse((*at, timer.clone()))).collect();
        }
        while let Some(Reverse((at, timer))) = self.heap.peek()
            && !live(&self.by_timer, at, timer)
        {
            self.heap.pop();
        }
    }
}

/// The participant tracker. See the module documentation.
#[derive(Debug)]
pub struct Tracker {
    pbx: PbxId,
    settings: TrackerSettings,
    phase: Phase,
    buffered: Vec<WsEvent>,
    resnapshot: bool,
    /// DNs the last snapshot typed as route points (and our own).
    route_points: BTreeSet<String>,
    legs: Map<LegKey, Leg>,
    fetches: Map<LegKey, FetchSlot>,
    calls: Map<String, Call>,
    referrals: Map<String, Referral>,
    timers: Timers,
    out: VecDeque<Output>,
    stats: TrackerStats,
    cdr: cdr::CdrState,
}

impl Tracker {
    /// A tracker with nothing known.
    pub fn new(pbx: PbxId, settings: TrackerSettings) -> Tracker {
        let mut route_points = BTreeSet::new();
        if !settings.route_point.is_empty() {
            route_points.insert(settings.route_point.clone());
        }
        Tracker {
            pbx,
            cdr: cdr::CdrState::new(settings.cdr.clone()),
            settings,
            phase: Phase::Offline,
            buffered: Vec::new(),
            resnapshot: false,
            route_points,
            legs: Map::default(),
            fetches: Map::default(),
            calls: Map::default(),
            referrals: Map::default(),
            timers: Timers::default(),
            out: VecDeque::new(),
            stats: TrackerStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> TrackerStats {
        self.stats
    }

    /// Legs tracked.
    pub fn legs(&self) -> usize {
        self.legs.len()
    }

    /// Calls tracked.
    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    /// The next output. [`Output::Timeout`] ends a drain.
    pub fn poll_output(&mut self) -> Output {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        Output::Timeout(self.timers.next())
    }

    /// The next output other than a timeout (handy in tests and docs).
    pub fn poll_output_now(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Tracker::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        self.timers.next()
    }

    /// The WebSocket is up: buffer notifications until [`Tracker::handle_snapshot`].
    pub fn handle_connected(&mut self, _now: UnixMillis) {
        self.phase = Phase::Syncing;
        self.buffered.clear();
        self.resnapshot = false;
    }

    /// The WebSocket is down. Fetches in flight are void (their answers are ignored); legs
    /// keep their state until the next snapshot says what became of them.
    pub fn handle_link_down(&mut self, now: UnixMillis) {
        if self.phase == Phase::Live {
            self.cdr.live_gap_started(now);
        }
        self.phase = Phase::Offline;
        self.buffered.clear();
        let slots: Vec<(LegKey, FetchSlot)> = self.fetches.drain().collect();
        for (key, slot) in slots {
            self.timers.remove(&Timer::FetchRetry(key.clone()));
            // A Remove that came during the fetch still counts; the snapshot decides the rest.
            if slot.remove_after {
                self.begin_removal(now, &key, Provenance::Live);
            }
        }
    }

    /// The daemon is stopping: legs whose Remove came and whose grace is still running are
    /// decided now, with what is known, so their `disconnected` (or transfer, park) goes out
    /// before the stop instead of waiting for the next start's snapshot to reconcile them.
    pub fn handle_shutdown(&mut self, now: UnixMillis) {
        self.handle_link_down(now);
        let pending: Vec<LegKey> =
            self.legs.iter().filter(|(_, leg)| leg.removing.is_some()).map(|(key, _)| key.clone()).collect();
        for key in pending {
            self.timers.remove(&Timer::Removal(key.clone()));
            self.decide_removal(now, &key);
        }
    }

    /// One notification.
    pub fn handle_ws_event(&mut self, now: UnixMillis, event: WsEvent) {
        match self.phase {
            Phase::Offline => {}
            Phase::Syncing => {
                if self.buffered.len() >= self.settings.max_buffered_events {
                    if !self.resnapshot {
                        self.resnapshot = true;
                        self.out.push_back(Output::Resnapshot);
                    }
                } else {
                    self.buffered.push(event);
                }
            }
            Phase::Live => self.apply_ws_event(now, event),
        }
    }

    fn apply_ws_event(&mut self, now: UnixMillis, event: WsEvent) {
        let EntityRef::Participant { dn, id } = event.entity else {
            self.stats.ignored_events += 1;
            return;
        };
        match event.event_type {
            EventType::Upsert => self.upsert((dn, id)),
            EventType::Remove => self.remove(now, (dn, id)),
            _ => self.stats.ignored_events += 1,
        }
    }

    fn upsert(&mut self, key: LegKey) {
        if self.legs.get(&key).is_some_and(|l| l.removing.is_some()) {
            // Removed already: a GET would answer 404.
            return;
        }
        match self.fetches.get_mut(&key) {
            Some(slot) if slot.in_flight => slot.again = true,
            Some(slot) => {
                // Waiting to retry: a fresh Upsert fetches now.
                slot.in_flight = true;
                self.timers.remove(&Timer::FetchRetry(key.clone()));
                self.out.push_back(Output::Fetch { dn: key.0, id: key.1 });
            }
            None => {
                self.fetches.insert(key.clone(), FetchSlot { in_flight: true, ..FetchSlot::default() });
                self.out.push_back(Output::Fetch { dn: key.0, id: key.1 });
            }
        }
    }

    fn remove(&mut self, now: UnixMillis, key: LegKey) {
        if let Some(slot) = self.fetches.get_mut(&key) {
            slot.remove_after = true;
            return;
        }
        if self.legs.contains_key(&key) {
            self.begin_removal(now, &key, Provenance::Live);
        } else {
            self.stats.unknown_removes += 1;
        }
    }

    /// The answer to an [`Output::Fetch`]. Answers to fetches made before the link dropped are
    /// ignored.
    pub fn handle_fetched(&mut self, now: UnixMillis, dn: &str, id: &str, fetched: Fetched) {
        let key: LegKey = (dn.to_owned(), id.to_owned());
        let Some(slot) = self.fetches.get(&key).cloned() else { return };
        if !slot.in_flight {
            return;
        }
        match fetched {
            Fetched::Found(body) => {
                self.fetches.remove(&key);
                self.apply_body(now, &key, body, Provenance::Live);
                if slot.remove_after {
                    self.begin_removal(now, &key, Provenance::Live);
                } else if slot.again {
                    self.upsert(key);
                }
            }
            Fetched::Gone => {
                self.fetches.remove(&key);
                self.stats.gone += 1;
                if self.legs.contains_key(&key) {
                    self.begin_removal(now, &key, Provenance::Live);
                }
            }
            Fetched::Failed => {
                let failures = slot.failures + 1;
                if failures >= self.settings.fetch_attempts.max(1) {
                    self.fetches.remove(&key);
                    self.stats.fetch_failures += 1;
                    if slot.remove_after && self.legs.contains_key(&key) {
                        self.begin_removal(now, &key, Provenance::Live);
                    }
                } else {
                    self.fetches.insert(key.clone(), FetchSlot { in_flight: false, failures, ..slot });
                    self.timers.insert(Timer::FetchRetry(key), now.plus_ms(self.settings.fetch_retry_ms));
                }
            }
        }
    }

    /// The snapshot (`GET /callcontrol`) after [`Tracker::handle_connected`]: compares it with
    /// what we knew, then applies the notifications buffered meanwhile.
    pub fn handle_snapshot(&mut self, now: UnixMillis, dns: Vec<DnInfo>) {
        self.stats.snapshots += 1;
        for d in &dns {
            if d.is_route_point() {
                self.route_points.insert(d.dn.clone());
            }
        }
        let mut seen: Map<LegKey, Participant> = Map::default();
        for d in dns {
            for p in d.participants {
                let Some(id) = p.id else {
                    self.stats.unusable_participants += 1;
                    continue;
                };
                seen.insert((d.dn.clone(), id.to_string()), p);
            }
        }
        // Legs that vanished while we were away (a removal already under way keeps its course).
        let mut vanished: Vec<LegKey> = self
            .legs
            .iter()
            .filter(|(k, l)| l.removing.is_none() && !seen.contains_key(*k))
            .map(|(k, _)| k.clone())
            .collect();
        vanished.sort();
        for key in vanished {
            self.reconcile_vanished(now, &key);
        }
        // What is live now, in a stable order.
        let mut present: Vec<(LegKey, Participant)> = seen.into_iter().collect();
        present.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, body) in present {
            if self.legs.get(&key).is_some_and(|l| l.removing.is_some()) {
                continue;
            }
            self.apply_body(now, &key, body, Provenance::Reconciled);
        }
        let mut live: Vec<PbxCallId> = self
            .calls
            .values()
            .filter(|c| c.legs.iter().any(|k| self.legs.get(k).is_some_and(|l| l.removing.is_none())))
            .map(|c| c.id.clone())
            .collect();
        live.sort();
        self.out.push_back(Output::Event(AdapterEvent::Resync { pbx: self.pbx.clone(), live_calls: live, at: now }));
        self.phase = Phase::Live;
        self.cdr.live_gap_ended(now);
        for event in std::mem::take(&mut self.buffered) {
            self.apply_ws_event(now, event);
        }
    }

    /// Time passed: decide removals whose grace ended, retry fetches, expire CDR memory.
    pub fn handle_timeout(&mut self, now: UnixMillis) {
        loop {
            let due = self.timers.take_due(now);
            if due.is_empty() {
                return;
            }
            for timer in due {
                match timer {
                    Timer::Removal(key) => self.decide_removal(now, &key),
                    Timer::FetchRetry(key) => {
                        if let Some(slot) = self.fetches.get_mut(&key)
                            && !slot.in_flight
                        {
                            slot.in_flight = true;
                            self.out.push_back(Output::Fetch { dn: key.0, id: key.1 });
                        }
                    }
                    Timer::Cdr(t) => self.cdr_timeout(now, t),
                }
            }
        }
    }

    fn role_of(&self, dn: &str) -> Role {
        if self.settings.park_orbits.contains(dn) {
            Role::ParkOrbit
        } else if self.route_points.contains(dn) {
            Role::RoutePoint
        } else {
            Role::Extension
        }
    }

    /// A body for a leg: new, or changed.
    fn apply_body(&mut self, now: UnixMillis, key: &LegKey, body: Participant, provenance: Provenance) {
        let state = LegState::of(body.status.as_ref());
        let call_key = body.callid.map_or_else(|| format!("{}/{}", key.0, key.1), |c| c.to_string());
        let is_new = !self.legs.contains_key(key);
        if is_new && self.legs.len() >= self.settings.max_legs {
            self.stats.unusable_participants += 1;
            return;
        }
        if !is_new {
            // A leg whose call id changed (3CX joined calls): move it.
            let old_call = self.legs.get(key).map(|l| l.call.clone()).unwrap_or_default();
            if old_call != call_key {
                if let Some(c) = self.calls.get_mut(&old_call) {
                    c.legs.remove(key);
                }
                self.end_call_if_empty(now, &old_call);
                if let Some(leg) = self.legs.get_mut(key) {
                    leg.call = call_key.clone();
                    leg.announced = false;
                }
            }
        }
        let role = self.role_of(&key.0);
        // The call.
        let first_sight = !self.calls.contains_key(&call_key);
        if first_sight {
            self.calls.insert(
                call_key.clone(),
                Call {
                    id: PbxCallId::new(call_key.clone()),
                    started: now,
                    info: CallInfo::default(),
                    trunk: None,
                    queue: None,
                    legs: BTreeSet::new(),
                    answered_at: None,
                    extensions: BTreeSet::new(),
                    parked: BTreeSet::new(),
                    park_orbit: None,
                },
            );
        }
        let referred_by = body.referred_by().map(str::to_owned);
        let mut queued_now = None;
        if let Some(call) = self.calls.get_mut(&call_key) {
            if !call.legs.contains(key) {
                call.legs.insert(key.clone());
            }
            let view = call_info(&key.0, &body, state);
            merge_info(&mut call.info, &view);
            if call.trunk.is_none() {
                call.trunk = view.trunk.map(str::to_owned);
            }
            if call.queue.is_none()
                && let Some(q) = body.queue()
            {
                call.queue = Some(q.to_owned());
                queued_now = Some(q.to_owned());
            }
            if role == Role::ParkOrbit {
                call.park_orbit = Some((key.0.clone(), now));
            }
        }
        let previous = match self.legs.get_mut(key) {
            Some(leg) => {
                let previous = leg.state;
                leg.body = body;
                if state != LegState::Other {
                    leg.state = state;
                }
                previous
            }
            None => {
                let leg =
                    Leg { role, body, call: call_key.clone(), state, announced: false, since: now, removing: None };
                self.legs.insert(key.clone(), leg);
                LegState::Other
            }
        };
        if let Some(q) = queued_now {
            self.emit(now, &call_key, None, CallChange::Queued { queue: Some(q) }, provenance, Facts::new());
        }
        // A transfer or a park explains a leg that is leaving (or about to).
        if is_new
            && role == Role::Extension
            && let Some(from) = referred_by.filter(|f| *f != key.0)
        {
            self.note_referral(now, &from, &key.0, &call_key);
        }
        if is_new && role == Role::ParkOrbit {
            self.note_park(now, &call_key, &key.0);
        }

        if role != Role::Extension {
            return;
        }
        let announced = self.legs.get(key).is_some_and(|l| l.announced);
        match state {
            LegState::Ringing if previous != LegState::Ringing && !announced => {
                self.announce(now, key, &call_key, CallChange::Ringing, provenance);
            }
            LegState::Connected if previous != LegState::Connected || !announced => {
                if let Some(call) = self.calls.get_mut(&call_key)
                    && call.answered_at.is_none()
                {
                    call.answered_at = Some(now);
                }
                self.announce(now, key, &call_key, CallChange::Connected, provenance);
            }
            _ => {}
        }
    }

    fn announce(&mut self, now: UnixMillis, key: &LegKey, call_key: &str, change: CallChange, provenance: Provenance) {
        if let Some(leg) = self.legs.get_mut(key) {
            leg.announced = true;
        }
        let facts = leg_facts(self.legs.get(key).map(|l| &l.body));
        self.note_extension(now, call_key, &key.0);
        self.emit(now, call_key, Some(&key.0), change, provenance, facts);
    }

    fn note_referral(&mut self, now: UnixMillis, from: &str, target: &str, call_key: &str) {
        // A leg of `from` already leaving: it transferred.
        let mut explained = false;
        let mut leaving: Vec<LegKey> = self
            .legs
            .iter()
            .filter(|(k, l)| k.0 == from && l.removing.is_some() && l.role == Role::Extension)
            .map(|(k, _)| k.clone())
            .collect();
        leaving.sort();
        let same_call: Vec<LegKey> =
            leaving.iter().filter(|k| self.legs.get(*k).is_some_and(|l| l.call == call_key)).cloned().collect();
        let targets = if same_call.is_empty() { leaving } else { same_call };
        for k in targets {
            if let Some(r) = self.legs.get_mut(&k).and_then(|l| l.removing.as_mut()) {
                r.explanation = Some(Explanation::Transferred(target.to_owned()));
                explained = true;
            }
        }
        if !explained {
            // The Remove of `from` may come after this Upsert.
            self.referrals
                .insert(from.to_owned(), Referral { target: target.to_owned(), call: call_key.to_owned(), at: now });
        }
    }

    fn note_park(&mut self, _now: UnixMillis, call_key: &str, orbit: &str) {
        let leaving: Vec<LegKey> =
            self.calls.get(call_key).map(|c| c.legs.iter().cloned().collect()).unwrap_or_default();
        for k in leaving {
            if let Some(leg) = self.legs.get_mut(&k)
                && leg.role == Role::Extension
                && leg.state == LegState::Connected
                && let Some(r) = leg.removing.as_mut()
                && r.explanation.is_none()
            {
                r.explanation = Some(Explanation::Parked(orbit.to_owned()));
            }
        }
    }

    /// A leg was removed (or vanished): it waits for its explanation.
    fn begin_removal(&mut self, now: UnixMillis, key: &LegKey, provenance: Provenance) {
        let grace = self.settings.removal_grace_ms;
        let Some(leg) = self.legs.get(key) else { return };
        if leg.removing.is_some() {
            return;
        }
        let mut explanation = None;
        if leg.role == Role::Extension {
            if let Some(r) = self.referrals.get(&key.0)
                && now.since(r.at) <= grace
            {
                explanation = Some(Explanation::Transferred(r.target.clone()));
            } else if leg.state == LegState::Connected
                && let Some((orbit, at)) = self.calls.get(&leg.call).and_then(|c| c.park_orbit.clone())
                && now.since(at) <= grace
            {
                explanation = Some(Explanation::Parked(orbit));
            }
        }
        if let Some(leg) = self.legs.get_mut(key) {
            leg.removing = Some(Removal { postponed: 0, explanation, provenance });
        }
        self.timers.insert(Timer::Removal(key.clone()), now.plus_ms(grace));
    }

    /// A leg's grace is over: say why it left.
    fn decide_removal(&mut self, now: UnixMillis, key: &LegKey) {
        let Some(removal) = self.legs.get(key).and_then(|l| l.removing.clone()) else { return };
        // A fetch of another leg of the call is under way: its body may explain this one.
        // (Any fetch: a leg we are fetching is not in a call until its body comes.)
        let busy = self.fetches.keys().any(|k| k != key);
        if busy && removal.postponed < 4 && self.phase != Phase::Offline {
            if let Some(r) = self.legs.get_mut(key).and_then(|l| l.removing.as_mut()) {
                r.postponed += 1;
            }
            self.timers.insert(Timer::Removal(key.clone()), now.plus_ms(self.settings.removal_grace_ms / 2 + 1));
            return;
        }
        let Some(leg) = self.legs.remove(key) else { return };
        let call_key = leg.call.clone();
        self.fetches.remove(key);
        if let Some(c) = self.calls.get_mut(&call_key) {
            c.legs.remove(key);
        }
        let provenance = removal.provenance;
        let facts = leg_facts(Some(&leg.body));
        if leg.role == Role::Extension && leg.announced {
            let others_live: Vec<&Leg> = self
                .calls
                .get(&call_key)
                .map(|c| c.legs.iter().filter_map(|k| self.legs.get(k)).filter(|l| l.removing.is_none()).collect())
                .unwrap_or_default();
            let someone_connected =
                others_live.iter().any(|l| l.role == Role::Extension && l.state == LegState::Connected)
                    || self.calls.get(&call_key).and_then(|c| c.answered_at).is_some_and(|t| t >= leg.since);
            let change = match (&removal.explanation, leg.state) {
                (_, _) if provenance == Provenance::Reconciled => {
                    Some(CallChange::Disconnected { reason: DisconnectReason::Unknown })
                }
                (Some(Explanation::Transferred(to)), LegState::Connected) => {
                    Some(CallChange::Transferred { to: Some(to.clone()) })
                }
                (Some(Explanation::Parked(slot)), LegState::Connected) => {
                    if let Some(c) = self.calls.get_mut(&call_key) {
                        c.parked.insert(key.0.clone());
                    }
                    Some(CallChange::Parked { slot: Some(slot.clone()) })
                }
                (Some(Explanation::Transferred(_)), LegState::Ringing) => {
                    Some(CallChange::Disconnected { reason: DisconnectReason::NoAnswer })
                }
                (_, LegState::Connected) => Some(CallChange::Disconnected { reason: DisconnectReason::Normal }),
                (_, _) if someone_connected && leg.state == LegState::Ringing => {
                    Some(CallChange::Disconnected { reason: DisconnectReason::AnsweredElsewhere })
                }
                (_, LegState::Ringing) if !others_live.is_empty() => {
                    Some(CallChange::Disconnected { reason: DisconnectReason::NoAnswer })
                }
                // No leg left: the call's end tells the lifecycle (caller-abandoned when
                // nobody answered, answered-elsewhere when someone did).
                _ => None,
            };
            if let Some(change) = change {
                if matches!(change, CallChange::Parked { .. }) {
                    self.checkpoint_call(&call_key);
                }
                self.emit(now, &call_key, Some(&key.0), change, provenance, facts);
            }
        }
        self.end_call_if_empty(now, &call_key);
    }

    /// A leg we knew is not in the snapshot: it ended while we could not see it.
    fn reconcile_vanished(&mut self, now: UnixMillis, key: &LegKey) {
        if let Some(leg) = self.legs.get_mut(key) {
            leg.removing = Some(Removal { postponed: 4, explanation: None, provenance: Provenance::Reconciled });
        }
        self.timers.remove(&Timer::Removal(key.clone()));
        self.decide_removal(now, key);
    }

    fn end_call_if_empty(&mut self, now: UnixMillis, call_key: &str) {
        let empty = self.calls.get(call_key).is_some_and(|c| c.legs.is_empty());
        if !empty {
            return;
        }
        let Some(call) = self.calls.remove(call_key) else { return };
        let announced = !call.extensions.is_empty() || call.queue.is_some();
        if announced {
            self.emit_for(now, &call, None, CallChange::Ended, Provenance::Live, Facts::new(), SOURCE);
        }
        self.referrals.retain(|_, r| r.call != call_key);
        self.cdr_call_ended(now, call);
    }

    fn note_extension(&mut self, _now: UnixMillis, call_key: &str, ext: &str) {
        let new = self
            .calls
            .get_mut(call_key)
            .is_some_and(|c| !c.extensions.contains(ext) && c.extensions.insert(ext.to_owned()));
        if new {
            self.checkpoint_call(call_key);
        }
    }

    fn emit(
        &mut self,
        now: UnixMillis,
        call_key: &str,
        ext: Option<&str>,
        change: CallChange,
        provenance: Provenance,
        facts: Facts,
    ) {
        // Field borrows, not `&self` methods: the call is read while `out` is written.
        let Some(call) = self.calls.get(call_key) else { return };
        let signal = signal(&self.pbx, now, call, ext, change, provenance, facts, SOURCE);
        self.out.push_back(Output::Event(AdapterEvent::Signal(signal)));
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_for(
        &mut self,
        at: UnixMillis,
        call: &Call,
        ext: Option<&str>,
        change: CallChange,
        provenance: Provenance,
        facts: Facts,
        source: &'static str,
    ) {
        let signal = signal(&self.pbx, at, call, ext, change, provenance, facts, source);
        self.out.push_back(Output::Event(AdapterEvent::Signal(signal)));
    }
}

/// A signal about `call` (and `ext`).
#[allow(clippy::too_many_arguments)]
fn signal(
    pbx: &PbxId,
    at: UnixMillis,
    call: &Call,
    ext: Option<&str>,
    change: CallChange,
    provenance: Provenance,
    mut facts: Facts,
    source: &'static str,
) -> PbxSignal {
    if provenance == Provenance::Reconciled {
        facts.insert("reconciled".into(), "true".into());
    }
    if let Some(trunk) = &call.trunk
        && facts.get("trunkDn") != Some(trunk)
    {
        facts.insert("trunkDn".into(), trunk.clone());
    }
    PbxSignal {
        pbx: pbx.clone(),
        at,
        source,
        facts,
        body: SignalBody::Call(CallSignal {
            call: call.id.clone(),
            call_started: call.started,
            extension: ext.map(|e| Extension(e.to_owned())),
            change,
            info: call.info.clone(),
        }),
    }
}

/// Raw facts of a signal about one leg.
fn leg_facts(body: Option<&Participant>) -> Facts {
    let mut f = Facts::new();
    let Some(b) = body else { return f };
    if let (Some(dn), Some(id)) = (b.dn.as_deref(), b.id) {
        f.insert("participant".into(), format!("{dn}/{id}"));
    }
    if let Some(r) = b.referred_by() {
        f.insert("referredBy".into(), r.to_owned());
    }
    if let Some(o) = nonempty(b.originated_by_dn.as_deref()) {
        f.insert("originatedBy".into(), o.to_owned());
    }
    f
}

/// What one leg says about its call, from its DN's point of view: the call's direction and
/// numbers, and the trunk's DN. Borrowed from the body: [`merge_info`] copies only what the
/// call does not know yet.
#[derive(Debug, Default)]
struct LegView<'a> {
    direction: Direction,
    external_number: Option<&'a str>,
    dialled_number: Option<&'a str>,
    caller_name: Option<&'a str>,
    queue: Option<&'a str>,
    trunk: Option<&'a str>,
}

fn call_info<'a>(dn: &'a str, p: &'a Participant, state: LegState) -> LegView<'a> {
    LegView { queue: p.queue(), ..leg_view(dn, p, state) }
}

fn leg_view<'a>(dn: &'a str, p: &'a Participant, state: LegState) -> LegView<'a> {
    let party_number = nonempty(p.party_caller_id.as_deref());
    let party_name = nonempty(p.party_caller_name.as_deref());
    let party_dn = nonempty(p.party_dn.as_deref());
    let did = nonempty(p.party_did.as_deref());
    if p.party_is_external() {
        if state == LegState::Dialing {
            // The extension dials out: the party is the number dialled.
            return LegView {
                direction: Direction::Outbound,
                external_number: party_number,
                dialled_number: party_number,
                trunk: party_dn,
                ..LegView::default()
            };
        }
        return LegView {
            direction: Direction::Inbound,
            external_number: party_number,
            dialled_number: did,
            caller_name: party_name,
            trunk: party_dn,
            ..LegView::default()
        };
    }
    if p.party_is_extension() {
        let other = party_dn.or(party_number);
        let (caller, callee) = if state == LegState::Dialing { (Some(dn), other) } else { (other, Some(dn)) };
        let name = if state == LegState::Dialing { None } else { party_name };
        return LegView {
            direction: Direction::Internal,
            external_number: caller,
            dialled_number: callee,
            caller_name: name,
            ..LegView::default()
        };
    }
    // A party behind a route point, queue or IVR: keep what it says, direction unknown.
    LegView { external_number: party_number, caller_name: party_name, dialled_number: did, ..LegView::default() }
}

/// The first leg's view wins for the direction; numbers fill in what is still unknown.
fn merge_info(into: &mut CallInfo, from: &LegView<'_>) {
    if into.direction == Direction::Unknown {
        into.direction = from.direction;
    }
    for (dst, src) in [
        (&mut into.external_number, from.external_number),
        (&mut into.dialled_number, from.dialled_number),
        (&mut into.caller_name, from.caller_name),
        (&mut into.queue, from.queue),
    ] {
        if dst.is_none()
            && let Some(v) = src.filter(|v| !v.is_empty())
        {
            *dst = Some(v.into());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests unwrap what they built themselves.
mod tests;
