//! [`CallLifecycle`]: the per-PBX-call tracker that keeps the rules of the event contract, and
//! builds the Level 3 events.
//!
//! Adapters report what their PBX says, and PBXs are not tidy: they repeat themselves, skip
//! steps, and go silent when the link drops. Whatever an adapter does, the lifecycle makes sure
//! that what leaves the listener keeps the contract (DESIGN.md §2):
//!
//! - every `ringing` ends in `connected` or in `disconnected` with a reason;
//! - every `connected` (and `held`) ends in `disconnected`, also across link drops
//!   ([`CallLifecycle::handle_resync`]) and restarts ([`CallLifecycle::restore`]), with
//!   `meta.reconciled = "true"` on what we had to synthesize;
//! - a device that parks or transfers a call leaves it (`parked`/`transferred`, then
//!   `disconnected` with that reason);
//! - repeats are suppressed, so each event is a change;
//! - each event has a stable [`EventId`]: the n-th time a device reached a status in a call.
//!
//! It is pure: no IO, no clock. State that must survive a restart comes out of
//! [`CallLifecycle::drain_state_changes`] for the daemon to persist with the events.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use generic_event::{EventId, EventKind, GenericEvent, MediaType, Status, child_sid, extension_child_sid};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::adapter::AdapterEvent;
use crate::binding::{CorrelatedSignal, LegBinding};
use crate::signal::{
    CallChange, CallInfo, CallSignal, Direction, DisconnectReason, Extension, ExtensionSignal, ExtensionState, Facts,
    PbxCallId, PbxId, PbxSignal, SignalBody, UnixMillis,
};
use crate::small_map::SmallMap;

/// The `meta` keys the lifecycle sets itself. They win over PBX facts, platform tags and
/// configured tags, so the configuration may not use them (`docs/events.md` documents each).
pub const STANDARD_META_KEYS: [&str; 15] = [
    "pbx",
    "pbxType",
    "pbxCallId",
    "direction",
    "correlation",
    "source",
    "callerName",
    "sipCallId",
    "queue",
    "reason",
    "parkSlot",
    "transferTarget",
    "resumed",
    "unparked",
    "reconciled",
];

/// Account and tags every event carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventContext {
    /// `accountId`.
    pub account_id: Uuid,
    /// `accountName`.
    pub account_name: String,
    /// The configuration's `[meta]` tags (lowest precedence).
    pub static_meta: BTreeMap<String, String>,
}

/// A Level 3 event ready for the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEvent {
    /// Its stable id (`webhook-id`).
    pub id: EventId,
    /// The ordering key: events with the same key are delivered in order (the `childSid`).
    pub order_key: Uuid,
    /// The event.
    pub event: GenericEvent,
}

/// A change of persisted lifecycle state: `value` is `None` when the key is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The key (`call/<pbx>/<call id>`).
    pub key: String,
    /// The serialised state, or `None` to delete it.
    pub value: Option<Vec<u8>>,
}

/// A persisted state record that could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("lifecycle state {key:?} is unreadable: {source}")]
pub struct RestoreError {
    /// The key of the record.
    pub key: String,
    /// Why.
    #[source]
    pub source: serde_json::Error,
}

/// The per-call tracker. See the module documentation.
#[derive(Debug)]
pub struct CallLifecycle {
    ctx: EventContext,
    /// Boxed: the table keeps empty slots (a third or more after each growth), each as large as
    /// its value (issue 13: 7.5 MB of 10,000 live calls' heap was empty slots).
    calls: HashMap<CallKey, Box<CallState>>,
    extensions: HashMap<(Arc<str>, Extension), ExtensionState>,
    out: VecDeque<OutgoingEvent>,
    dirty: BTreeSet<CallKey>,
}

type CallKey = (Arc<str>, PbxCallId);

const STATE_PREFIX: &str = "call/";

/// What we remember of a live PBX call.
///
/// Persisted as JSON (`drain_state_changes`): fields keep their names and shapes, so state
/// written by an earlier version reads back (the small maps serialise as the maps they were).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CallState {
    /// Shared with the PBX's id (a reference count, not a copy per call).
    pbx: Arc<str>,
    /// The PBX's type as spelt in `meta.pbxType` (a string: the set of types is open; borrowed
    /// from the adapter unless restored).
    pbx_type: Cow<'static, str>,
    call: PbxCallId,
    started: UnixMillis,
    child_sid: Uuid,
    source: Cow<'static, str>,
    binding: LegBinding,
    info: CallInfo,
    anyone_connected: bool,
    /// Devices in the call.
    legs: SmallMap<Extension, LegState>,
    /// The call's own leg, from signals that name no device. Its own field: a JSON map cannot
    /// have a `None` key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    call_leg: Option<LegState>,
    /// How often each device reached each status: the occurrence in [`EventId::for_phone`].
    occurrences: SmallMap<String, u32>,
}

impl CallState {
    /// The leg of `extension` (`None`: the call's own).
    fn leg(&self, extension: Option<&Extension>) -> Option<LegState> {
        match extension {
            Some(ext) => self.legs.get(ext).copied(),
            None => self.call_leg,
        }
    }

    fn set_leg(&mut self, extension: Option<Extension>, leg: LegState) {
        match extension {
            Some(ext) => {
                self.legs.insert(ext, leg);
            }
            None => self.call_leg = Some(leg),
        }
    }

    /// The open legs, the call's own first, then by extension.
    fn open_legs(&self) -> Vec<(Option<Extension>, LegState)> {
        let call = self.call_leg.map(|l| (None, l));
        let devices = self.legs.iter().map(|(e, l)| (Some(e.clone()), *l));
        call.into_iter().chain(devices).filter(|(_, l)| l.is_open()).collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum LegState {
    Ringing,
    Connected,
    Held,
    Closed,
}

impl LegState {
    fn is_open(self) -> bool {
        self != LegState::Closed
    }
}

/// How an event came about, for `meta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provenance {
    Live,
    Reconciled,
}

/// The details of one emission that end up in `meta`.
#[derive(Default)]
struct Detail<'a> {
    reason: Option<&'a str>,
    park_slot: Option<&'a str>,
    transfer_target: Option<&'a str>,
    marker: Option<&'static str>,
}

impl CallLifecycle {
    /// A lifecycle with no calls.
    pub fn new(ctx: EventContext) -> CallLifecycle {
        CallLifecycle {
            ctx,
            calls: HashMap::new(),
            extensions: HashMap::new(),
            out: VecDeque::new(),
            dirty: BTreeSet::new(),
        }
    }

    /// New account and static tags (a configuration reload): events built from now on carry
    /// them; open calls and their state are kept.
    pub fn set_context(&mut self, ctx: EventContext) {
        self.ctx = ctx;
    }

    /// Number of PBX calls currently open.
    pub fn open_calls(&self) -> usize {
        self.calls.len()
    }

    /// Feeds one correlated signal.
    pub fn handle_signal(&mut self, input: CorrelatedSignal) {
        let CorrelatedSignal { signal, binding } = input;
        let PbxSignal { pbx, at, source, facts, body } = signal;
        match body {
            SignalBody::Call(call) => self.handle_call(pbx, at, source, facts, call, binding),
            SignalBody::Extension(ext) => self.handle_extension(&pbx, at, source, facts, ext),
        }
    }

    /// The PBX's snapshot of live calls is complete: close every other open call of `pbx`.
    pub fn handle_resync(&mut self, pbx: &PbxId, live_calls: &[PbxCallId], at: UnixMillis) {
        let live: BTreeSet<&PbxCallId> = live_calls.iter().collect();
        let mut gone: Vec<CallKey> =
            self.calls.keys().filter(|(name, call)| **name == *pbx.name && !live.contains(call)).cloned().collect();
        gone.sort();
        for key in gone {
            self.end_call(&key, at, Provenance::Reconciled, &Facts::new());
        }
    }

    /// What an adapter's events become with no correlation, through a fresh lifecycle: every
    /// signal unbound, every resync applied, links and checkpoints skipped. The Level 3 events
    /// in order — for adapter tests that look at one PBX type alone.
    pub fn level3_unbound(ctx: EventContext, events: &[AdapterEvent]) -> Vec<GenericEvent> {
        let mut lifecycle = CallLifecycle::new(ctx);
        for event in events {
            match event {
                AdapterEvent::Signal(signal) => lifecycle
                    .handle_signal(CorrelatedSignal { signal: signal.clone(), binding: LegBinding::unmatched() }),
                AdapterEvent::Resync { pbx, live_calls, at } => lifecycle.handle_resync(pbx, live_calls, *at),
                AdapterEvent::Link { .. } | AdapterEvent::Checkpoint { .. } => {}
            }
        }
        std::iter::from_fn(|| lifecycle.poll_event()).map(|out| out.event).collect()
    }

    /// The next event to send, in the order they were produced.
    pub fn poll_event(&mut self) -> Option<OutgoingEvent> {
        self.out.pop_front()
    }

    /// The state changes since the last call, to persist atomically with the events produced
    /// since then.
    pub fn drain_state_changes(&mut self) -> Vec<StateChange> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|key| {
                let value = self
                    .calls
                    .get(&key)
                    .map(|state| serde_json::to_vec(state).unwrap_or_else(|_| unreachable!("call state serialises")));
                StateChange { key: state_key(&key), value }
            })
            .collect()
    }

    /// Restores calls persisted by an earlier run. Unreadable records are skipped and
    /// returned, so the daemon can count and delete them; the rest are restored.
    pub fn restore(&mut self, records: impl IntoIterator<Item = (String, Vec<u8>)>) -> Vec<RestoreError> {
        let mut errors = Vec::new();
        for (key, value) in records {
            if !key.starts_with(STATE_PREFIX) {
                continue;
            }
            match serde_json::from_slice::<CallState>(&value) {
                Ok(state) => {
                    self.calls.insert((state.pbx.clone(), state.call.clone()), Box::new(state));
                }
                Err(source) => errors.push(RestoreError { key, source }),
            }
        }
        errors
    }

    fn handle_call(
        &mut self,
        pbx: PbxId,
        at: UnixMillis,
        source: &'static str,
        facts: Facts,
        signal: CallSignal,
        binding: LegBinding,
    ) {
        let CallSignal { call, call_started, extension, change, info } = signal;
        let key: CallKey = (pbx.name.clone(), call.clone());
        if !self.calls.contains_key(&key) {
            if matches!(change, CallChange::Ended | CallChange::Disconnected { .. }) {
                // The end of a call we never saw open: nothing is open, nothing to close.
                return;
            }
            let state = CallState {
                pbx: pbx.name.clone(),
                pbx_type: Cow::Borrowed(pbx.pbx_type.as_str()),
                call: call.clone(),
                started: call_started,
                child_sid: child_sid(&pbx.name, &call.0, call_started.0),
                source: Cow::Borrowed(source),
                binding: LegBinding::unmatched(),
                info: CallInfo::default(),
                anyone_connected: false,
                legs: SmallMap::new(),
                call_leg: None,
                occurrences: SmallMap::new(),
            };
            self.calls.insert(key.clone(), Box::new(state));
        }
        self.dirty.insert(key.clone());
        let Some(state) = self.calls.get_mut(&key) else { return };
        state.info.merge(&info);
        // The binding follows the call: a later signal may bring a binding (a late leg), but
        // an unmatched signal never unbinds a bound call.
        if binding.is_bound() || !state.binding.is_bound() {
            state.binding = binding;
        }

        // `None`: this device has not been seen in this call yet.
        let leg = state.leg(extension.as_ref());
        let open = leg.is_some_and(LegState::is_open);
        match change {
            CallChange::Ringing => {
                if !open {
                    self.emit(
                        &key,
                        extension.as_ref(),
                        Status::Ringing,
                        at,
                        &facts,
                        Provenance::Live,
                        Detail::default(),
                    );
                    self.set_leg(&key, extension, LegState::Ringing);
                }
            }
            CallChange::Connected | CallChange::Resumed | CallChange::Unparked { .. } => {
                if leg != Some(LegState::Connected) {
                    let slot = match &change {
                        CallChange::Unparked { slot } => slot.clone(),
                        _ => None,
                    };
                    let marker = match (&change, leg) {
                        (CallChange::Unparked { .. }, _) => Some("unparked"),
                        (_, Some(LegState::Held)) => Some("resumed"),
                        _ => None,
                    };
                    let detail = Detail { park_slot: slot.as_deref(), marker, ..Detail::default() };
                    self.emit(&key, extension.as_ref(), Status::Connected, at, &facts, Provenance::Live, detail);
                    self.set_leg(&key, extension, LegState::Connected);
                    if let Some(state) = self.calls.get_mut(&key) {
                        state.anyone_connected = true;
                    }
                }
            }
            CallChange::Held => {
                if leg != Some(LegState::Held) {
                    self.emit(&key, extension.as_ref(), Status::Held, at, &facts, Provenance::Live, Detail::default());
                    self.set_leg(&key, extension, LegState::Held);
                }
            }
            // A repeated park or transfer of a device that already left is not news.
            CallChange::Parked { .. } | CallChange::Transferred { .. } if leg.is_some() && !open => {}
            CallChange::Parked { slot } => {
                let detail = Detail { park_slot: slot.as_deref(), ..Detail::default() };
                self.emit(&key, extension.as_ref(), Status::Parked, at, &facts, Provenance::Live, detail);
                self.close_leg(&key, extension.as_ref(), &DisconnectReason::Parked, at, &facts, Provenance::Live);
            }
            CallChange::Transferred { to } => {
                let detail = Detail { transfer_target: to.as_deref(), ..Detail::default() };
                self.emit(&key, extension.as_ref(), Status::Transferred, at, &facts, Provenance::Live, detail);
                self.close_leg(&key, extension.as_ref(), &DisconnectReason::Transferred, at, &facts, Provenance::Live);
            }
            CallChange::Queued { queue } => {
                if let Some(state) = self.calls.get_mut(&key)
                    && queue.is_some()
                {
                    state.info.queue = queue.map(Arc::from);
                }
            }
            CallChange::Disconnected { reason } => {
                self.close_leg(&key, extension.as_ref(), &reason, at, &facts, Provenance::Live);
            }
            CallChange::Ended => self.end_call(&key, at, Provenance::Live, &facts),
        }
    }

    fn handle_extension(
        &mut self,
        pbx: &PbxId,
        at: UnixMillis,
        source: &'static str,
        facts: Facts,
        signal: ExtensionSignal,
    ) {
        let ExtensionSignal { extension, state } = signal;
        let key = (pbx.name.clone(), extension.clone());
        if self.extensions.get(&key) == Some(&state) {
            return;
        }
        self.extensions.insert(key, state);
        let status = match state {
            ExtensionState::Available => Status::Available,
            ExtensionState::Busy => Status::Busy,
            ExtensionState::Dnd => Status::Dnd,
            ExtensionState::LoggedOut => Status::LoggedOut,
        };
        let child = extension_child_sid(&pbx.name, &extension.0);
        let mut meta = self.ctx.static_meta.clone();
        meta.extend(facts);
        meta.insert("pbx".into(), pbx.name.to_string());
        meta.insert("pbxType".into(), pbx.pbx_type.as_str().into());
        meta.insert("source".into(), source.into());
        let event = GenericEvent {
            account_id: self.ctx.account_id,
            account_name: self.ctx.account_name.clone(),
            parent_call_sid: None,
            call_sid: None,
            child_sid: Some(child),
            kind: MediaType::Voice,
            event: EventKind::Extension,
            status,
            from: extension.0.clone(),
            to: extension.0.clone(),
            extension: Some(extension.0),
            meta,
            timestamp: at.0,
        };
        self.out.push_back(OutgoingEvent { id: EventId::for_extension(child, status, at.0), order_key: child, event });
    }

    fn set_leg(&mut self, key: &CallKey, extension: Option<Extension>, leg: LegState) {
        if let Some(state) = self.calls.get_mut(key) {
            state.set_leg(extension, leg);
        }
    }

    /// Closes one device's leg with `disconnected` if it is open.
    fn close_leg(
        &mut self,
        key: &CallKey,
        extension: Option<&Extension>,
        reason: &DisconnectReason,
        at: UnixMillis,
        facts: &Facts,
        provenance: Provenance,
    ) {
        let open = self.calls.get(key).and_then(|s| s.leg(extension)).is_some_and(LegState::is_open);
        if open {
            let detail = Detail { reason: Some(reason.as_str()), ..Detail::default() };
            self.emit(key, extension, Status::Disconnected, at, facts, provenance, detail);
            self.set_leg(key, extension.cloned(), LegState::Closed);
        }
    }

    /// The call is over: close every open leg and forget the call.
    fn end_call(&mut self, key: &CallKey, at: UnixMillis, provenance: Provenance, facts: &Facts) {
        let Some(state) = self.calls.get(key) else { return };
        let open = state.open_legs();
        let anyone_connected = state.anyone_connected;
        for (extension, leg) in open {
            let reason = match (provenance, leg) {
                (Provenance::Reconciled, _) => DisconnectReason::Unknown,
                (Provenance::Live, LegState::Ringing) if anyone_connected => DisconnectReason::AnsweredElsewhere,
                (Provenance::Live, LegState::Ringing) => DisconnectReason::CallerAbandoned,
                (Provenance::Live, _) => DisconnectReason::Normal,
            };
            self.close_leg(key, extension.as_ref(), &reason, at, facts, provenance);
        }
        self.calls.remove(key);
        self.dirty.insert(key.clone());
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        key: &CallKey,
        extension: Option<&Extension>,
        status: Status,
        at: UnixMillis,
        facts: &Facts,
        provenance: Provenance,
        detail: Detail<'_>,
    ) {
        let Some(state) = self.calls.get_mut(key) else { return };
        let ext = extension.map(|e| e.0.as_str());
        let occurrence_key = format!("{}\u{1f}{status}", ext.unwrap_or(""));
        let occurrence = if let Some(n) = state.occurrences.get_mut(&occurrence_key) {
            *n += 1;
            *n
        } else {
            state.occurrences.insert(occurrence_key, 1);
            1
        };
        let id = EventId::for_phone(state.child_sid, ext, status, occurrence);

        let mut meta = self.ctx.static_meta.clone();
        meta.extend(state.binding.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        meta.extend(facts.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut put = |k: &str, v: &str| {
            meta.insert(k.to_owned(), v.to_owned());
        };
        put("pbx", &key.0);
        put("pbxType", &state.pbx_type);
        put("pbxCallId", &state.call.0);
        put("direction", state.info.direction.as_str());
        put("correlation", state.binding.method.as_str());
        put("source", &state.source);
        if let Some(name) = &state.info.caller_name {
            put("callerName", name);
        }
        if let Some(sip) = &state.info.sip_call_id {
            put("sipCallId", sip);
        }
        if let Some(queue) = &state.info.queue {
            put("queue", queue);
        }
        if let Some(reason) = detail.reason {
            put("reason", reason);
        }
        if let Some(slot) = detail.park_slot {
            put("parkSlot", slot);
        }
        if let Some(target) = detail.transfer_target {
            put("transferTarget", target);
        }
        if let Some(marker) = detail.marker {
            put(marker, "true");
        }
        if provenance == Provenance::Reconciled {
            put("reconciled", "true");
        }

        let (from, to) = from_to(&state.binding, &state.info, ext);
        let event = GenericEvent {
            account_id: self.ctx.account_id,
            account_name: self.ctx.account_name.clone(),
            parent_call_sid: state.binding.parent_call_sid,
            call_sid: state.binding.call_sid,
            child_sid: Some(state.child_sid),
            kind: MediaType::Voice,
            event: EventKind::Phone,
            status,
            from,
            to,
            extension: ext.map(str::to_owned),
            meta,
            timestamp: at.0,
        };
        self.out.push_back(OutgoingEvent { id, order_key: state.child_sid, event });
    }
}

/// `from` and `to`: the B leg's numbers when bound, else the PBX's view of the call.
fn from_to(binding: &LegBinding, info: &CallInfo, extension: Option<&str>) -> (String, String) {
    if binding.is_bound()
        && let (Some(from), Some(to)) = (&binding.from, &binding.to)
    {
        return (from.clone(), to.clone());
    }
    let external = info.external_number.as_deref();
    let dialled = info.dialled_number.as_deref();
    let (from, to) = match info.direction {
        Direction::Outbound => (extension, external.or(dialled)),
        Direction::Inbound | Direction::Internal | Direction::Unknown => (external, dialled.or(extension)),
    };
    (from.unwrap_or_default().to_owned(), to.unwrap_or_default().to_owned())
}

fn state_key((pbx, call): &CallKey) -> String {
    format!("{STATE_PREFIX}{pbx}/{call}")
}

#[cfg(test)]
mod tests;
