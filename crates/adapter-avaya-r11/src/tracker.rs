//! The call tracker: Delta3, SIPTrack and CMExtn records in, [`AdapterEvent`]s out.
//!
//! Sans-IO in the str0m style: feed one input with a `handle_*` method, passing the time, then
//! drain [`Tracker::poll_output`] until it returns [`Output::Timeout`]; call
//! [`Tracker::handle_timeout`] when that time comes. No socket, task, clock or RNG inside.
//!
//! ```
//! use adapter_avaya_r11::tracker::{Output, Tracker, TrackerSettings};
//! use adapter_avaya_r11::delta3;
//! use listener_core::{PbxId, PbxType, UnixMillis};
//!
//! let mut tracker = Tracker::new(PbxId::new("site-1", PbxType::new("avaya-r11")), TrackerSettings::default());
//! let rec = delta3::parse("<Detail><Call>c0a82a03,3,,,,0,,200,,200,</Call>\
//!     <PartyA>c0a82a0300002329,1,19,1,2,0,1,0,0,2,2,5.23,,0,0,5678,,,,,,01707123456,100</PartyA>\
//!     <Target_list><Target>c0a82a03000003fe,0,0,8,106,,4002,0,4,,,200,901707123456,100</Target></Target_list>\
//!     </Detail>").unwrap();
//! tracker.handle_delta3(UnixMillis(1_000), &rec);
//! let mut events = Vec::new();
//! while let Output::Event(e) = tracker.poll_output() {
//!     events.push(e);
//! }
//! assert_eq!(events.len(), 1); // 4002 is ringing
//! ```
//!
//! How PBX facts become signals (protocol notes §3.5; the mapping is inferred from the
//! documentation and must be verified on a live system):
//!
//! - calls are keyed by node + call id (`c0a82a03.3`), parties by end identifier;
//! - a `<Target>` with an extension number is `Ringing`; a target that stops ringing is
//!   `Disconnected` with `answered-elsewhere` (another extension answered), `no-answer` (the call
//!   went on ringing elsewhere) or `caller-abandoned` (the call ended);
//! - an extension party with state Connected is `Connected`, with audio path 0 `Held`, and back
//!   `Resumed`;
//! - an extension replaced by a park slot (equipment class 16, called type 134) is `Parked`;
//!   an extension joining with called type 135 is `Unparked`;
//! - `CallLost` with cause 126, or a new party whose related end id is an extension's, is
//!   `Transferred`; other `CallLost`/`LinkLost` are `Disconnected`; `AttemptReject` is
//!   `Disconnected` with `rejected`;
//! - call field 14 (1 queueing, 3 announcement) is `Queued` with the hunt group;
//! - when no party remains the call is `Ended`;
//! - a party that vanishes from a `Detail` without an explanation gets `vanish_grace_ms` for
//!   its `CallLost` to arrive (which tells why) before it is disconnected as `normal`;
//! - after a (re)subscription, [`Tracker::handle_subscribed`] opens a settle window; the calls
//!   the PBX re-sends in it are live, the others ended while we could not see them, and
//!   [`AdapterEvent::Resync`] says so when the window closes.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use listener_core::{
    AdapterEvent, CallChange, CallInfo, CallSignal, Direction, DisconnectReason, Extension, ExtensionSignal,
    ExtensionState, Facts, PbxCallId, PbxId, PbxSignal, SignalBody, UnixMillis,
};

use crate::delta3::{self, Delta3Record, Detail, Lost, Party, Target, called_type, cause, equipment, party_state};
use crate::packet::{CmExtn, SipTrack};
use listener_core::small_map::{SmallMap, SmallSet};

/// The `source` of every signal.
pub const SOURCE: &str = "devlink3";

/// Tracker tuning. See [`crate::config::Config`] for the user-facing keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerSettings {
    /// How long after a subscription the PBX's snapshot of live calls is collected.
    pub resync_settle_ms: u64,
    /// How long a party that vanished from a `Detail` waits for its `CallLost`.
    pub vanish_grace_ms: u64,
    /// At most this many SIPTrack Call-IDs are remembered (oldest dropped first).
    pub max_sip_tracks: usize,
}

impl Default for TrackerSettings {
    fn default() -> Self {
        TrackerSettings { resync_settle_ms: 2_000, vanish_grace_ms: 2_000, max_sip_tracks: 20_000 }
    }
}

/// What the tracker has for its driver.
#[allow(clippy::large_enum_variant)] // Moved out at once; boxing would cost an allocation per event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An event for the pipeline.
    Event(AdapterEvent),
    /// Nothing more for now; call [`Tracker::handle_timeout`] at this time (if any).
    Timeout(Option<UnixMillis>),
}

/// What the tracker did with an input that did not produce events, for the driver's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The input was used.
    Used,
    /// The input refers to something the tracker does not know (a lost end of an unknown call,
    /// a CMExtn text form); ignored.
    Ignored,
}

/// A call's key: its `node.callid` id, the one it is reported under (shared, so the end index
/// and the tables hold a reference count each, not copies).
type CallKey = PbxCallId;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    SnapshotSettle,
    Vanish(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Device {
    Extension(Extension),
    ParkSlot(Option<String>),
    Trunk,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ringing,
    Connected,
    Held,
    /// Dialling, ringback, disconnecting: nothing to say yet.
    Other,
}

#[derive(Debug, Clone)]
struct PartyState {
    device: Device,
    status: Status,
    /// Whether a signal was emitted for it (a `Disconnected` is only worth sending then).
    announced: bool,
    /// Vanished from the last `Detail`; waiting for its `CallLost`.
    vanished: bool,
}

#[derive(Debug, Clone)]
struct TargetState {
    extension: Option<Extension>,
}

#[derive(Debug)]
struct Call {
    id: PbxCallId,
    started: UnixMillis,
    info: CallInfo,
    hunt_group: Option<String>,
    tag: Option<String>,
    queued: bool,
    /// An extension connected at some point.
    answered: bool,
    /// Any signal was emitted for the call.
    announced: bool,
    /// The subscription epoch in which the PBX last told us about the call.
    epoch: u64,
    /// Whether an extension was already connected in the call's first record: a call in
    /// progress before we saw it (a snapshot's), not one that started in front of us.
    connected_at_first_sight: Option<bool>,
    park_slot: Option<String>,
    parties: SmallMap<String, PartyState>,
    targets: SmallMap<String, TargetState>,
    rejected: SmallSet<String>,
}

impl Call {
    fn has_live_party(&self) -> bool {
        self.parties.values().any(|p| !p.vanished)
    }

    fn connected_extension(&self) -> bool {
        self.parties
            .values()
            .any(|p| !p.vanished && matches!(p.device, Device::Extension(_)) && p.status != Status::Other)
    }
}

/// Emits signals; kept apart from the call table so both can be borrowed at once.
#[derive(Debug)]
struct Emitter {
    pbx: PbxId,
    out: VecDeque<AdapterEvent>,
}

impl Emitter {
    fn call(&mut self, now: UnixMillis, call: &mut Call, ext: Option<Extension>, change: CallChange, mut facts: Facts) {
        call.announced = true;
        if let Some(hg) = &call.hunt_group
            && !facts.contains_key("huntGroup")
        {
            facts.insert("huntGroup".into(), hg.clone());
        }
        if let Some(tag) = &call.tag
            && !facts.contains_key("avayaTag")
        {
            facts.insert("avayaTag".into(), tag.clone());
        }
        self.out.push_back(AdapterEvent::Signal(PbxSignal {
            pbx: self.pbx.clone(),
            at: now,
            source: SOURCE,
            facts,
            body: SignalBody::Call(CallSignal {
                call: call.id.clone(),
                call_started: call.started,
                extension: ext,
                change,
                info: call.info.clone(),
            }),
        }));
    }
}

/// The DevLink3 call tracker. See the module documentation.
#[derive(Debug)]
pub struct Tracker {
    settings: TrackerSettings,
    emitter: Emitter,
    /// Boxed: the table keeps empty slots (a third or more after each growth), each as large as
    /// its value.
    calls: HashMap<CallKey, Box<Call>>,
    /// End id → the call it is in (parties and targets).
    ends: HashMap<String, CallKey>,
    /// SIPTrack: end id → (SIP Call-ID, when learnt).
    sip: HashMap<String, (Arc<str>, UnixMillis)>,
    timers: BTreeMap<Timer, UnixMillis>,
    epoch: u64,
    /// The calls known when the current subscription began (what its snapshot can confirm).
    known_at_subscribe: HashSet<CallKey>,
    last_snapshot: Option<SnapshotSummary>,
}

/// What the PBX's snapshot after a subscription showed, for the log line (issue 9, item 4: a
/// call that started during the settle window was counted as one the snapshot held).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// Calls we knew before subscribing that the PBX listed again.
    pub confirmed: usize,
    /// Calls we knew that the PBX no longer lists: they ended while the link was down.
    pub ended_unseen: usize,
    /// Calls first seen during the settle window with an extension already connected in their
    /// first record: live before we subscribed (e.g. after our restart), so the snapshot's.
    pub first_seen_in_progress: usize,
    /// Calls first seen during the settle window with no extension connected in their first
    /// record: they most likely started meanwhile (a call still ringing at the subscription
    /// looks the same, and is counted here).
    pub first_seen_new: usize,
}

impl SnapshotSummary {
    /// The calls the PBX's snapshot held, as far as it can be told.
    pub fn held(&self) -> usize {
        self.confirmed + self.first_seen_in_progress
    }
}

fn nonempty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// The facts of a signal about one end. (The node is not repeated: it is the first part of
/// the call id.)
fn end_facts(end_id: &str) -> Facts {
    let mut f = Facts::new();
    f.insert("avayaEndId".into(), end_id.to_owned());
    f
}

/// The device behind a party.
fn classify_party(p: &Party<'_>) -> Device {
    classify(p.public_line, p.equipment_class, p.called_type, &p.identity, &p.description)
}

/// [`classify_party`] without allocating, for comparing with a known device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeviceRef<'a> {
    Extension(&'a str),
    ParkSlot(Option<&'a str>),
    Trunk,
    Other,
}

fn classify_ref<'a>(p: &'a Party<'_>) -> DeviceRef<'a> {
    let identity = opt(&p.identity);
    if p.equipment_class == Some(equipment::PARK_SLOT)
        || (p.called_type == Some(called_type::PARK_CALL) && p.public_line != Some(1))
    {
        return DeviceRef::ParkSlot(identity.or_else(|| opt(&p.description)));
    }
    match classify(p.public_line, p.equipment_class, p.called_type, "", "") {
        Device::Trunk => DeviceRef::Trunk,
        _ if is_phone(p.equipment_class) => identity.map_or(DeviceRef::Other, DeviceRef::Extension),
        _ => DeviceRef::Other,
    }
}

impl PartialEq<DeviceRef<'_>> for Device {
    fn eq(&self, other: &DeviceRef<'_>) -> bool {
        match (self, other) {
            (Device::Extension(a), DeviceRef::Extension(b)) => a.0 == *b,
            (Device::ParkSlot(a), DeviceRef::ParkSlot(b)) => a.as_deref() == *b,
            (Device::Trunk, DeviceRef::Trunk) | (Device::Other, DeviceRef::Other) => true,
            _ => false,
        }
    }
}

fn is_phone(class: Option<u32>) -> bool {
    matches!(
        class,
        None | Some(1)
            | Some(equipment::TDM_PHONE)
            | Some(equipment::H323_PHONE)
            | Some(equipment::SIP_DEVICE)
            | Some(equipment::DECT_PHONE)
            | Some(equipment::MOBILE_PHONE)
            | Some(equipment::WEBRTC_PHONE)
    )
}

fn classify(
    public_line: Option<u32>,
    class: Option<u32>,
    called: Option<u32>,
    identity: &str,
    description: &str,
) -> Device {
    if class == Some(equipment::PARK_SLOT) || (called == Some(called_type::PARK_CALL) && public_line != Some(1)) {
        return Device::ParkSlot(nonempty(identity).or_else(|| nonempty(description)));
    }
    if public_line == Some(1) {
        return Device::Trunk;
    }
    match nonempty(identity) {
        Some(ext) if is_phone(class) => Device::Extension(Extension(ext)),
        _ => Device::Other,
    }
}

fn party_status(p: &Party<'_>) -> Status {
    match p.state {
        Some(party_state::CONNECTED) if p.audio_path == Some(0) => Status::Held,
        Some(party_state::CONNECTED) => Status::Connected,
        Some(party_state::RINGING) | Some(party_state::OFFERING) => Status::Ringing,
        _ => Status::Other,
    }
}

/// What a `Detail` says about who the call is between, borrowed from the record.
#[derive(Default)]
struct InfoRef<'a> {
    direction: Option<Direction>,
    external_number: Option<&'a str>,
    dialled_number: Option<&'a str>,
    caller_name: Option<&'a str>,
}

fn opt(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty()).then_some(s)
}

/// What the PBX says about who the call is between.
fn derive_info<'a>(d: &'a Detail<'_>) -> InfoRef<'a> {
    let a = &d.party_a;
    let b = d.party_b.as_ref();
    let a_trunk = a.public_line == Some(1);
    let b_trunk = b.is_some_and(|b| b.public_line == Some(1));
    let mut info = InfoRef::default();
    if a_trunk && a.direction != Some(0) {
        info.direction = Some(Direction::Inbound);
        info.external_number = opt(&a.cli);
        info.dialled_number = opt(&a.did);
        info.caller_name = opt(&a.name);
    } else if a_trunk {
        // The PBX placed this call on a trunk: an outbound call from the trunk's point of view.
        info.direction = Some(Direction::Outbound);
        info.external_number = opt(&a.target_number).or_else(|| opt(&a.dialled));
        info.dialled_number = info.external_number;
    } else if let Some(b) = b.filter(|_| b_trunk) {
        info.direction = Some(Direction::Outbound);
        info.external_number = opt(&b.target_number).or_else(|| opt(&a.dialled)).or_else(|| opt(&b.did));
        info.dialled_number = opt(&a.dialled).or(info.external_number);
    } else if let Some(b) = b {
        if classify_party(b) != Device::Trunk && !a.identity.is_empty() && !b.identity.is_empty() {
            info.direction = Some(Direction::Internal);
            info.external_number = opt(&a.identity);
            info.dialled_number = opt(&b.identity);
        }
    } else if !a.identity.is_empty() && d.targets.iter().any(|t| !t.identity.is_empty() && t.public_line != Some(1)) {
        info.direction = Some(Direction::Internal);
        info.external_number = opt(&a.identity);
        info.dialled_number = opt(&a.dialled).or_else(|| d.targets.first().and_then(|t| opt(&t.identity)));
    }
    info
}

/// Merges what is known; a later record never forgets an earlier fact. Allocates only for
/// what changed (the same Detail facts repeat with every record of a call).
fn merge_info(into: &mut CallInfo, from: InfoRef<'_>) {
    if let Some(direction) = from.direction {
        into.direction = direction;
    }
    for (dst, src) in [
        (&mut into.external_number, from.external_number),
        (&mut into.dialled_number, from.dialled_number),
        (&mut into.caller_name, from.caller_name),
    ] {
        if let Some(v) = src
            && dst.as_deref() != Some(v)
        {
            *dst = Some(v.into());
        }
    }
}

/// Why a party left, from a CallLost cause.
fn lost_reason(cause_code: Option<u32>, was: Status, answered_elsewhere: bool, caller_gone: bool) -> DisconnectReason {
    match cause_code {
        Some(cause::BUSY) => DisconnectReason::Busy,
        Some(cause::CALL_REJECTED) => DisconnectReason::Rejected,
        Some(cause::ANSWERED_BY_OTHER) => DisconnectReason::AnsweredElsewhere,
        Some(cause::NO_USER_RESPONDING) => DisconnectReason::NoAnswer,
        _ if was == Status::Ringing || was == Status::Other => {
            if answered_elsewhere {
                DisconnectReason::AnsweredElsewhere
            } else if caller_gone {
                DisconnectReason::CallerAbandoned
            } else {
                DisconnectReason::NoAnswer
            }
        }
        _ => DisconnectReason::Normal,
    }
}

impl Tracker {
    /// A tracker for `pbx` with no calls.
    pub fn new(pbx: PbxId, settings: TrackerSettings) -> Tracker {
        Tracker {
            settings,
            emitter: Emitter { pbx, out: VecDeque::new() },
            calls: HashMap::new(),
            ends: HashMap::new(),
            sip: HashMap::new(),
            timers: BTreeMap::new(),
            epoch: 0,
            known_at_subscribe: HashSet::new(),
            last_snapshot: None,
        }
    }

    /// When [`Tracker::handle_timeout`] should next be called, if a timer is set.
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        self.timers.values().min().copied()
    }

    /// What the last completed snapshot showed.
    pub fn last_snapshot(&self) -> Option<SnapshotSummary> {
        self.last_snapshot
    }

    /// Number of calls being tracked.
    pub fn live_calls(&self) -> usize {
        self.calls.len()
    }

    /// The next output; [`Output::Timeout`] when there is nothing more for now.
    pub fn poll_output(&mut self) -> Output {
        match self.emitter.out.pop_front() {
            Some(e) => Output::Event(e),
            None => Output::Timeout(self.timers.values().min().copied()),
        }
    }

    /// The event request succeeded: the PBX now re-sends every live call. Opens the settle
    /// window after which [`AdapterEvent::Resync`] lists them.
    pub fn handle_subscribed(&mut self, now: UnixMillis) {
        self.epoch += 1;
        self.known_at_subscribe = self.calls.keys().cloned().collect();
        self.timers.insert(Timer::SnapshotSettle, now.plus_ms(self.settings.resync_settle_ms));
    }

    /// The link is down: no snapshot is being collected any more. Calls are kept (the next
    /// snapshot confirms or drops them).
    pub fn handle_link_down(&mut self, _now: UnixMillis) {
        self.timers.remove(&Timer::SnapshotSettle);
    }

    /// Fires the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: UnixMillis) {
        let due: Vec<Timer> = self.timers.iter().filter(|(_, at)| **at <= now).map(|(t, _)| t.clone()).collect();
        for timer in due {
            self.timers.remove(&timer);
            match timer {
                Timer::SnapshotSettle => self.finish_snapshot(now),
                Timer::Vanish(end_id) => self.expire_vanished(now, &end_id),
            }
        }
    }

    /// Feeds one Delta3 record.
    pub fn handle_delta3(&mut self, now: UnixMillis, record: &Delta3Record<'_>) -> Handled {
        match record {
            Delta3Record::Detail(d) => {
                self.detail(now, d);
                Handled::Used
            }
            Delta3Record::CallLost(l) => self.lost(now, l, false),
            Delta3Record::LinkLost(l) => self.lost(now, l, true),
            Delta3Record::AttemptReject(r) => {
                let end = r.end_id.as_ref();
                let Some(key) = self.ends.get(end).cloned() else { return Handled::Ignored };
                let Some(call) = self.calls.get_mut(&key) else { return Handled::Ignored };
                let Some(target) = call.targets.remove(end) else { return Handled::Ignored };
                self.ends.remove(end);
                call.rejected.insert(end.to_owned());
                if let Some(ext) = target.extension {
                    let mut facts = end_facts(end);
                    if !r.qualifier.is_empty() {
                        facts.insert("avayaQualifier".into(), r.qualifier.to_string());
                    }
                    let change = CallChange::Disconnected { reason: DisconnectReason::Rejected };
                    self.emitter.call(now, call, Some(ext), change, facts);
                }
                Handled::Used
            }
        }
    }

    /// Feeds one SIPTrack record: remembers the SIP Call-ID of a trunk party and attaches it
    /// to its call, so every later signal of the call carries it. `PHONE` records (SIP
    /// extensions) are ignored.
    pub fn handle_sip_track(&mut self, now: UnixMillis, track: &SipTrack<'_>) -> Handled {
        // Only the trunk leg's Call-ID correlates with the platform; a SIP phone's is internal.
        if !track.sip_type.eq_ignore_ascii_case("TRUNK") {
            return Handled::Ignored;
        }
        if !track.started {
            // The dialog ended; the call keeps the Call-ID it had.
            return if self.sip.remove(track.end_id).is_some() { Handled::Used } else { Handled::Ignored };
        }
        if self.sip.len() >= self.settings.max_sip_tracks && !self.sip.contains_key(track.end_id) {
            self.forget_oldest_sip_tracks();
        }
        let call_id: Arc<str> = track.call_id.into();
        self.sip.insert(track.end_id.to_owned(), (call_id.clone(), now));
        if let Some(call) = self.ends.get(track.end_id).and_then(|key| self.calls.get_mut(key)) {
            call.info.sip_call_id = Some(call_id);
        }
        Handled::Used
    }

    /// Makes room in a full SIPTrack memory: drops the oldest sixteenth (at least one). One
    /// selection per many inserts; finding the single oldest on each insert scanned the whole
    /// map every time.
    fn forget_oldest_sip_tracks(&mut self) {
        if self.sip.is_empty() {
            return;
        }
        let drop = (self.sip.len() / 16).max(1);
        let mut learnt: Vec<UnixMillis> = self.sip.values().map(|(_, at)| *at).collect();
        // 1 ≤ drop ≤ len: the index is in range.
        let cutoff = *learnt.select_nth_unstable(drop - 1).1;
        let mut left = drop;
        self.sip.retain(|_, (_, at)| {
            let keep = *at > cutoff || left == 0;
            if !keep {
                left -= 1;
            }
            keep
        });
    }

    /// Feeds one CMExtn record. The extended state-change form (`kind` 1) becomes an
    /// [`ExtensionSignal`]: new state 0 (Idle) is `Available`, any other state `Busy`
    /// [inferred]. The text form carries no state we can map and is ignored.
    pub fn handle_cm_extn(&mut self, now: UnixMillis, record: &CmExtn) -> Handled {
        let CmExtn::Extended { kind: 1, param1, param2, text } = record else { return Handled::Ignored };
        let Some(number) = text.trim().strip_prefix("Extn") else { return Handled::Ignored };
        let number: String = number.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        if number.is_empty() {
            return Handled::Ignored;
        }
        let state = if *param1 == 0 { ExtensionState::Available } else { ExtensionState::Busy };
        let mut facts = Facts::new();
        facts.insert("cmExtnState".into(), param1.to_string());
        facts.insert("cmExtnPreviousState".into(), param2.to_string());
        self.emitter.out.push_back(AdapterEvent::Signal(PbxSignal {
            pbx: self.emitter.pbx.clone(),
            at: now,
            source: SOURCE,
            facts,
            body: SignalBody::Extension(ExtensionSignal { extension: Extension(number), state }),
        }));
        Handled::Used
    }

    fn finish_snapshot(&mut self, now: UnixMillis) {
        let epoch = self.epoch;
        let stale: Vec<CallKey> = self.calls.iter().filter(|(_, c)| c.epoch < epoch).map(|(k, _)| k.clone()).collect();
        let known = std::mem::take(&mut self.known_at_subscribe);
        let mut summary = SnapshotSummary { ended_unseen: stale.len(), ..SnapshotSummary::default() };
        for (key, call) in self.calls.iter().filter(|(_, c)| c.epoch == epoch) {
            if known.contains(key) {
                summary.confirmed += 1;
            } else if call.connected_at_first_sight == Some(true) {
                summary.first_seen_in_progress += 1;
            } else {
                summary.first_seen_new += 1;
            }
        }
        self.last_snapshot = Some(summary);
        for key in stale {
            // No signals: the Resync tells the pipeline these calls ended unseen.
            self.forget_call(&key);
        }
        let mut live: Vec<PbxCallId> = self.calls.values().map(|c| c.id.clone()).collect();
        live.sort();
        self.emitter.out.push_back(AdapterEvent::Resync { pbx: self.emitter.pbx.clone(), live_calls: live, at: now });
    }

    fn forget_call(&mut self, key: &CallKey) {
        if let Some(call) = self.calls.remove(key) {
            for end in call.parties.keys().chain(call.targets.keys()) {
                if self.ends.get(end) == Some(key) {
                    self.ends.remove(end);
                }
                self.sip.remove(end);
                self.timers.remove(&Timer::Vanish(end.clone()));
            }
        }
    }

    /// Ends the call if no party remains: ringing targets and vanished parties are closed
    /// with a reason, then `Ended`.
    fn end_if_empty(&mut self, now: UnixMillis, key: &CallKey) {
        let Some(call) = self.calls.get_mut(key) else { return };
        if call.has_live_party() {
            return;
        }
        let answered = call.answered;
        let vanished: Vec<(String, PartyState)> = call.parties.iter().map(|(e, p)| (e.clone(), p.clone())).collect();
        for (end, p) in vanished {
            if let (Device::Extension(ext), true) = (&p.device, p.announced) {
                let reason = lost_reason(None, p.status, answered && p.status == Status::Ringing, true);
                let change = CallChange::Disconnected { reason };
                self.emitter.call(now, call, Some(ext.clone()), change, end_facts(&end));
            }
        }
        let targets: Vec<(String, TargetState)> = call.targets.iter().map(|(e, t)| (e.clone(), t.clone())).collect();
        for (end, t) in targets {
            if let Some(ext) = t.extension {
                let reason =
                    if answered { DisconnectReason::AnsweredElsewhere } else { DisconnectReason::CallerAbandoned };
                self.emitter.call(now, call, Some(ext), CallChange::Disconnected { reason }, end_facts(&end));
            }
        }
        if call.announced {
            self.emitter.call(now, call, None, CallChange::Ended, Facts::new());
        }
        self.forget_call(key);
    }

    fn expire_vanished(&mut self, now: UnixMillis, end_id: &str) {
        let Some(key) = self.ends.get(end_id).cloned() else { return };
        let Some(call) = self.calls.get_mut(&key) else { return };
        let Some(p) = call.parties.get(end_id).filter(|p| p.vanished).cloned() else { return };
        call.parties.remove(end_id);
        self.ends.remove(end_id);
        if let (Device::Extension(ext), true) = (p.device, p.announced) {
            let reason = lost_reason(None, p.status, call.connected_extension(), !call.has_live_party());
            let change = CallChange::Disconnected { reason };
            self.emitter.call(now, call, Some(ext), change, end_facts(end_id));
        }
        self.end_if_empty(now, &key);
    }

    fn lost(&mut self, now: UnixMillis, l: &Lost<'_>, link: bool) -> Handled {
        let end = l.end_id.as_ref();
        let Some(key) = self.ends.get(end).cloned() else { return Handled::Ignored };
        let Some(call) = self.calls.get_mut(&key) else { return Handled::Ignored };
        let mut facts = end_facts(end);
        if let Some(c) = l.cause {
            facts.insert("avayaCause".into(), c.to_string());
        }
        if link && !l.link_ref.is_empty() {
            facts.insert("avayaLinkRef".into(), l.link_ref.to_string());
        }
        self.ends.remove(end);
        self.timers.remove(&Timer::Vanish(end.to_owned()));
        if let Some(p) = call.parties.remove(end) {
            if let (Device::Extension(ext), true) = (&p.device, p.announced) {
                let change = if l.cause == Some(cause::TRANSFER) {
                    CallChange::Transferred { to: transfer_target(call, end) }
                } else if l.cause == Some(cause::PARKED) {
                    CallChange::Parked { slot: call.park_slot.clone() }
                } else {
                    let reason = lost_reason(l.cause, p.status, call.connected_extension(), !call.has_live_party());
                    CallChange::Disconnected { reason }
                };
                self.emitter.call(now, call, Some(ext.clone()), change, facts);
            }
        } else if let Some(TargetState { extension: Some(ext) }) = call.targets.remove(end) {
            let reason = lost_reason(l.cause, Status::Ringing, call.connected_extension(), !call.has_live_party());
            self.emitter.call(now, call, Some(ext), CallChange::Disconnected { reason }, facts);
        }
        self.end_if_empty(now, &key);
        Handled::Used
    }

    fn detail(&mut self, now: UnixMillis, d: &Detail<'_>) {
        let key = PbxCallId::new(format!("{}.{}", d.call.node, d.call.call_id));
        let epoch = self.epoch;

        // Parties that moved here from another call (attended transfer) leave that call quietly;
        // their device continues here.
        let mut emptied = Vec::new();
        for p in std::iter::once(&d.party_a).chain(d.party_b.as_ref()) {
            if let Some(other) = self.ends.get(p.end_id.as_ref()).filter(|k| **k != key).cloned() {
                if let Some(call) = self.calls.get_mut(&other) {
                    call.parties.remove(p.end_id.as_ref());
                    call.targets.remove(p.end_id.as_ref());
                    emptied.push(other);
                }
                self.ends.remove(p.end_id.as_ref());
            }
        }

        let call = self.calls.entry(key.clone()).or_insert_with(|| {
            Box::new(Call {
                id: key.clone(),
                started: now,
                info: CallInfo::default(),
                hunt_group: None,
                tag: None,
                queued: false,
                answered: false,
                announced: false,
                epoch,
                connected_at_first_sight: None,
                park_slot: None,
                parties: SmallMap::new(),
                targets: SmallMap::new(),
                rejected: SmallSet::new(),
            })
        });
        call.epoch = epoch;
        merge_info(&mut call.info, derive_info(d));
        for p in std::iter::once(&d.party_a).chain(d.party_b.as_ref()) {
            if let Some((sip, _)) = self.sip.get(p.end_id.as_ref())
                && call.info.sip_call_id.as_deref() != Some(&**sip)
            {
                call.info.sip_call_id = Some(sip.clone());
            }
        }
        if let Some(hg) = opt(&d.call.target_hunt_group).or_else(|| opt(&d.call.original_hunt_group))
            && call.hunt_group.as_deref() != Some(hg)
        {
            call.hunt_group = Some(hg.to_owned());
            // The call came through this hunt group: `meta.queue` on its events (the contract's
            // "queue or hunt group"), whether or not it ever waits in the queue.
            call.info.queue = Some(hg.into());
        }
        if let Some(tag) = opt(&d.call.tag)
            && call.tag.as_deref() != Some(tag)
        {
            call.tag = Some(tag.to_owned());
        }

        let new_parties: Vec<&Party<'_>> = std::iter::once(&d.party_a).chain(d.party_b.as_ref()).collect();
        let park_slot_now = new_parties.iter().find_map(|p| match classify_party(p) {
            Device::ParkSlot(slot) => Some(slot),
            _ => None,
        });

        // 1. Parties that are gone from this Detail.
        let gone: Vec<String> = call
            .parties
            .keys()
            .filter(|e| !new_parties.iter().any(|p| p.end_id.as_ref() == e.as_str()))
            .cloned()
            .collect();
        for end in gone {
            let Some(p) = call.parties.get(&end).cloned() else { continue };
            let replaced_by = new_parties.iter().find(|n| n.related_end_id.as_ref() == end);
            match (&p.device, &park_slot_now, replaced_by) {
                (Device::Extension(ext), Some(slot), _) if p.status != Status::Ringing => {
                    call.parties.remove(&end);
                    self.ends.remove(&end);
                    if p.announced {
                        call.park_slot = slot.clone();
                        let change = CallChange::Parked { slot: slot.clone() };
                        self.emitter.call(now, call, Some(ext.clone()), change, end_facts(&end));
                    }
                }
                (Device::Extension(ext), _, Some(by)) => {
                    call.parties.remove(&end);
                    self.ends.remove(&end);
                    if p.announced {
                        let to = nonempty(&by.identity).or_else(|| nonempty(&by.target_number));
                        let change = CallChange::Transferred { to };
                        self.emitter.call(now, call, Some(ext.clone()), change, end_facts(&end));
                    }
                }
                (Device::ParkSlot(slot), _, _) => {
                    // Unparked (or the park slot timed out): remember the slot for `Unparked`.
                    call.parties.remove(&end);
                    self.ends.remove(&end);
                    if slot.is_some() {
                        call.park_slot = slot.clone();
                    }
                }
                _ => {
                    if let Some(p) = call.parties.get_mut(&end)
                        && !p.vanished
                    {
                        p.vanished = true;
                        self.timers.insert(Timer::Vanish(end.clone()), now.plus_ms(self.settings.vanish_grace_ms));
                    }
                }
            }
        }

        // 2. Parties present now.
        for p in &new_parties {
            let end: &str = p.end_id.as_ref();
            let status = party_status(p);
            if self.ends.get(end) != Some(&key) {
                self.ends.insert(end.to_owned(), key.clone());
            }
            let was_ringing_target = call.targets.remove(end).is_some();
            let existing = call.parties.get(end);
            let previous = existing.map(|q| (q.status, q.announced, q.vanished));
            if previous.is_some_and(|(_, _, vanished)| vanished) {
                self.timers.remove(&Timer::Vanish(end.to_owned()));
            }
            // Only classify into an owned device when the party is new or changed device.
            let fresh = match existing {
                Some(q) if q.device == classify_ref(p) => None,
                _ => Some(classify_party(p)),
            };
            let device: &Device = match (&fresh, existing) {
                (Some(d), _) => d,
                (None, Some(q)) => &q.device,
                (None, None) => unreachable!("a party without a device is always fresh"),
            };
            let mut announced = previous.is_some_and(|(_, a, _)| a);
            let mut emit = None;
            if let Device::Extension(ext) = device {
                let before = previous.map(|(s, _, _)| s);
                let change = match (before, status) {
                    (Some(b), s) if b == s => None,
                    (_, Status::Connected) if p.called_type == Some(called_type::UNPARK_CALL) && before.is_none() => {
                        Some(CallChange::Unparked { slot: call.park_slot.clone() })
                    }
                    (Some(Status::Held), Status::Connected) => Some(CallChange::Resumed),
                    (_, Status::Connected) => Some(CallChange::Connected),
                    (_, Status::Held) => Some(CallChange::Held),
                    (None, Status::Ringing) if !was_ringing_target => Some(CallChange::Ringing),
                    (Some(_), Status::Ringing) => Some(CallChange::Ringing),
                    _ => None,
                };
                if was_ringing_target && status != Status::Other {
                    announced = true;
                }
                if matches!(status, Status::Connected | Status::Held) {
                    call.answered = true;
                }
                if let Some(change) = change {
                    announced = true;
                    emit = Some((ext.clone(), change));
                }
            }
            match (fresh, call.parties.get_mut(end)) {
                (None, Some(q)) => {
                    q.status = status;
                    q.announced = announced;
                    q.vanished = false;
                }
                (fresh, _) => {
                    let device = fresh.unwrap_or_else(|| classify_party(p));
                    call.parties.insert(end.to_owned(), PartyState { device, status, announced, vanished: false });
                }
            }
            if let Some((ext, change)) = emit {
                self.emitter.call(now, call, Some(ext), change, end_facts(end));
            }
        }

        // 3. Targets: new ones ring, missing ones stopped ringing.
        let new_targets: Vec<&Target<'_>> =
            d.targets.iter().filter(|t| !call.rejected.contains(t.end_id.as_ref())).collect();
        let stopped: Vec<(String, TargetState)> = call
            .targets
            .iter()
            .filter(|(e, _)| !new_targets.iter().any(|t| t.end_id.as_ref() == e.as_str()))
            .map(|(e, t)| (e.clone(), t.clone()))
            .collect();
        let answered_now = call.connected_extension();
        for (end, t) in stopped {
            call.targets.remove(&end);
            self.ends.remove(&end);
            let Some(ext) = t.extension else { continue };
            // The same extension answered with another end id: its Connected said it all.
            let answered_here = call.parties.values().any(|p| p.device == Device::Extension(ext.clone()));
            if answered_here {
                continue;
            }
            let reason = if answered_now { DisconnectReason::AnsweredElsewhere } else { DisconnectReason::NoAnswer };
            self.emitter.call(now, call, Some(ext), CallChange::Disconnected { reason }, end_facts(&end));
        }
        for t in new_targets {
            let end = t.end_id.to_string();
            if call.targets.contains_key(&end) {
                continue;
            }
            let extension = match classify(t.public_line, t.equipment_class, t.called_type, &t.identity, &t.description)
            {
                Device::Extension(ext) => Some(ext),
                _ => None,
            };
            self.ends.insert(end.clone(), key.clone());
            if let Some(ext) = &extension {
                let in_call = call
                    .parties
                    .values()
                    .any(|p| !p.vanished && p.device == Device::Extension(ext.clone()) && p.status != Status::Other);
                if !in_call {
                    let mut facts = end_facts(&end);
                    if let Some(purpose) = nonempty(&t.purpose) {
                        facts.insert("avayaPurpose".into(), purpose);
                    }
                    self.emitter.call(now, call, Some(ext.clone()), CallChange::Ringing, facts);
                }
            }
            call.targets.insert(end, TargetState { extension });
        }

        // 4. Queued: call field 14 (1 queueing, 3 announcement), after the targets that stopped.
        let queued = matches!(d.call.queue, Some(1) | Some(3));
        if queued && !call.queued {
            let queue = call.hunt_group.clone();
            self.emitter.call(now, call, None, CallChange::Queued { queue }, Facts::new());
        }
        call.queued = queued;
        call.connected_at_first_sight.get_or_insert(call.answered);

        for other in emptied {
            self.end_if_empty(now, &other);
        }
    }
}

/// Where a transferred call went: the extension of a party that relates to the lost end, a
/// ringing target, or another extension in the call.
fn transfer_target(call: &Call, lost_end: &str) -> Option<String> {
    let ext_of = |d: &Device| match d {
        Device::Extension(e) => Some(e.0.clone()),
        _ => None,
    };
    call.targets.values().find_map(|t| t.extension.as_ref().map(|e| e.0.clone())).or_else(|| {
        call.parties.iter().filter(|(e, p)| e.as_str() != lost_end && !p.vanished).find_map(|(_, p)| ext_of(&p.device))
    })
}

/// Convenience for drivers and tests: parse a CallDelta3 string and feed it.
pub fn feed_delta3(tracker: &mut Tracker, now: UnixMillis, text: &str) -> Result<Handled, delta3::Delta3Error> {
    let record = delta3::parse(text)?;
    Ok(tracker.handle_delta3(now, &record))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests unwrap what they built themselves.
mod tests;
