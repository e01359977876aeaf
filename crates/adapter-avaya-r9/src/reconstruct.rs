//! SMDR call reconstruction: a call's segments → each extension's timeline.
//!
//! SMDR writes one record per call segment when the segment ends, with durations only (ring,
//! connected, hold, park) and the call's start. [`reconstruct`] rebuilds what each extension
//! did and when, as the steps a real-time feed would have shown ([`Step`]):
//!
//! - segments follow each other: the first starts at Call Start, each next one where the
//!   previous one ended (`start + ring + connected + hold + park`), which is also the order in
//!   which the PBX writes them (each one when it ends);
//! - in a segment, the *answering* side is the device that is new in it (in the first segment:
//!   the extension of an inbound call, Party 2 of an outbound or internal one); it rings for
//!   the ring time (a `Ringing` step when the ring time is not 0 or nobody answered) and is
//!   connected after it if the segment was answered (connected, hold or park time not 0;
//!   SMDR rounds times up, so a real answer is at least one second). The other side (the
//!   calling extension) is connected from the same moment;
//! - hold time belongs to the answering extension, else to the calling one [inferred]. Its
//!   place in the connected period is not in SMDR: before a transfer it is the end of the
//!   segment (a transfer is made from hold), otherwise the middle of the connected time. Both
//!   steps say `timeReconstructed`;
//! - park time belongs to whoever would hold; the call is `Parked` after the connected time,
//!   and the next segment's new device is `Unparked`;
//! - an extension that is not in the next segment left when its segment ended: `Transferred`
//!   (to the next segment's new device) when it was connected, else `Disconnected` because the
//!   call was answered elsewhere, went to voicemail, or rang out (`no-answer`);
//! - when the last segment ends, everyone left is `Disconnected`: `normal` after talking,
//!   `caller-abandoned` when nothing answered;
//! - a call finished by the segment timeout (its last record never came) ends with reason
//!   `unknown` and `smdrIncomplete` on every step;
//! - voicemail channels (`V…`) and trunks (`T…`) are never extensions. An internal call whose
//!   answering side is a voicemail channel after ringing rang the number called first: when
//!   that is an extension-like number that is no party, it gets `Ringing` and then
//!   `Disconnected` with reason `voicemail` [inferred from Avaya's example].

use std::borrow::Cow;
use std::sync::Arc;

use listener_core::{CallChange, CallInfo, Direction, DisconnectReason, UnixMillis};

use crate::smdr::{CallStart, Device, DeviceKind, SmdrDirection, SmdrRecord, caller_number};

/// The reason given to an extension whose call went to voicemail.
pub const VOICEMAIL: &str = "voicemail";

/// What a segment keeps of its record. Its text borrows from the line while the line is at
/// hand ([`Segment::of`]: a call of one segment, most calls, is rebuilt without copying any);
/// a `Segment<'static>` owns it, for a call whose later segments are awaited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Call Start as written.
    pub call_start: CallStart,
    /// Whether more segments follow.
    pub continuation: bool,
    /// Ring, connected, hold, park seconds.
    pub ring_secs: u32,
    /// Connected seconds.
    pub connected_secs: u32,
    /// Hold seconds.
    pub hold_secs: u32,
    /// Park seconds.
    pub park_secs: u32,
    /// Direction.
    pub direction: SmdrDirection,
    /// Is Internal.
    pub is_internal: bool,
    /// Caller.
    pub caller: Cow<'a, str>,
    /// Called Number.
    pub called_number: Cow<'a, str>,
    /// Dialled Number.
    pub dialled_number: Cow<'a, str>,
    /// Party 1 (without its name).
    pub party1: Device<'a>,
    /// Party 2 (without its name).
    pub party2: Device<'a>,
    /// External Targeting Cause.
    pub targeting_cause: Cow<'a, str>,
}

/// An owned copy of the record's segment.
impl From<&SmdrRecord<'_>> for Segment<'static> {
    fn from(r: &SmdrRecord<'_>) -> Segment<'static> {
        Segment::of(r).into_owned()
    }
}

impl<'a> Segment<'a> {
    /// The segment of a record, borrowing the record's text.
    pub fn of(r: &SmdrRecord<'a>) -> Segment<'a> {
        // Names are not needed to rebuild the call: not kept.
        let device = |d: &Device<'a>| Device { kind: d.kind, number: d.number.clone(), name: Cow::Borrowed("") };
        Segment {
            call_start: r.call_start,
            continuation: r.continuation,
            ring_secs: r.ring_secs,
            connected_secs: r.connected_secs,
            hold_secs: r.hold_secs,
            park_secs: r.park_secs,
            direction: r.direction,
            is_internal: r.is_internal,
            caller: r.caller.clone(),
            called_number: r.called_number.clone(),
            dialled_number: r.dialled_number.clone(),
            party1: device(&r.party1),
            party2: device(&r.party2),
            targeting_cause: r.targeting_cause.clone(),
        }
    }

    /// A copy that owns its text.
    pub fn into_owned(self) -> Segment<'static> {
        fn own(s: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(s.into_owned())
        }
        Segment {
            call_start: self.call_start,
            continuation: self.continuation,
            ring_secs: self.ring_secs,
            connected_secs: self.connected_secs,
            hold_secs: self.hold_secs,
            park_secs: self.park_secs,
            direction: self.direction,
            is_internal: self.is_internal,
            caller: own(self.caller),
            called_number: own(self.called_number),
            dialled_number: own(self.dialled_number),
            party1: self.party1.into_owned(),
            party2: self.party2.into_owned(),
            targeting_cause: own(self.targeting_cause),
        }
    }

    fn answered(&self) -> bool {
        self.connected_secs > 0 || self.hold_secs > 0 || self.park_secs > 0
    }

    fn total_ms(&self) -> u64 {
        1000 * (u64::from(self.ring_secs)
            + u64::from(self.connected_secs)
            + u64::from(self.hold_secs)
            + u64::from(self.park_secs))
    }

    fn has(&self, d: &Device<'_>) -> bool {
        same(&self.party1, d) || same(&self.party2, d)
    }
}

fn same(a: &Device<'_>, b: &Device<'_>) -> bool {
    a.kind == b.kind && same_text(&a.number, &b.number)
}

/// `a == b` for the short texts compared here (extension numbers): inline, where `==` calls
/// `memcmp`, which showed in profiles.
fn same_text(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

/// One thing an extension did, at a reconstructed time. Its text borrows from the segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step<'s> {
    /// When.
    pub at: UnixMillis,
    /// Who (an extension number).
    pub extension: &'s str,
    /// What.
    pub change: CallChange,
    /// The time is placed by a rule, not given by SMDR (a hold inside a connected period).
    pub time_reconstructed: bool,
    /// The segment's External Targeting Cause, on the step that ends a segment.
    pub targeting_cause: Option<&'s str>,
}

/// A reconstructed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline<'s> {
    /// Who the call is between.
    pub info: CallInfo,
    /// Every extension's steps, in time order.
    pub steps: Vec<Step<'s>>,
    /// When the last segment ended (the call's `Ended`).
    pub ended_at: UnixMillis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ringing,
    Connected,
    Held,
    Gone,
}

struct Builder<'s> {
    steps: Vec<Step<'s>>,
    /// Each extension's state, in order of first appearance (a call has a few).
    state: Vec<(&'s str, State)>,
}

impl<'s> Builder<'s> {
    fn push(&mut self, at: u64, ext: &'s str, change: CallChange, guessed: bool) {
        let state = match &change {
            CallChange::Ringing => State::Ringing,
            CallChange::Connected | CallChange::Resumed | CallChange::Unparked { .. } => State::Connected,
            CallChange::Held => State::Held,
            _ => State::Gone,
        };
        match self.state.iter_mut().find(|(e, _)| same_text(e, ext)) {
            Some((_, s)) => *s = state,
            None => self.state.push((ext, state)),
        }
        self.steps.push(Step {
            at: UnixMillis(at),
            extension: ext,
            change,
            time_reconstructed: guessed,
            targeting_cause: None,
        });
    }

    fn state(&self, ext: &str) -> Option<State> {
        self.state.iter().find(|(e, _)| same_text(e, ext)).map(|(_, s)| *s)
    }

    fn open(&self, ext: &str) -> bool {
        matches!(self.state(ext), Some(State::Ringing | State::Connected | State::Held))
    }
}

/// Who the call is between, from its first segment.
pub fn call_info(first: &Segment<'_>) -> CallInfo {
    let trunk = first.party1.kind == DeviceKind::Trunk || first.party2.kind == DeviceKind::Trunk;
    let nonempty = |s: &str| (!s.is_empty()).then(|| Arc::<str>::from(s));
    match first.direction {
        SmdrDirection::Inbound => CallInfo {
            direction: Direction::Inbound,
            external_number: nonempty(caller_number(&first.caller)),
            dialled_number: nonempty(&first.dialled_number).or_else(|| nonempty(&first.called_number)),
            ..CallInfo::default()
        },
        SmdrDirection::Outbound if trunk && !first.is_internal => CallInfo {
            direction: Direction::Outbound,
            external_number: nonempty(&first.dialled_number).or_else(|| nonempty(&first.called_number)),
            dialled_number: nonempty(&first.dialled_number).or_else(|| nonempty(&first.called_number)),
            ..CallInfo::default()
        },
        SmdrDirection::Outbound => CallInfo {
            direction: Direction::Internal,
            external_number: nonempty(&first.caller).or_else(|| first.party1.extension().map(Arc::from)),
            dialled_number: nonempty(&first.called_number),
            ..CallInfo::default()
        },
    }
}

/// An extension-like number: digits only, at most 8 (hunt groups look the same; see the
/// module documentation).
fn extension_like(s: &str) -> bool {
    !s.is_empty() && s.len() <= 8 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Rebuilds a call from its segments in arrival order, the first starting at `start`.
/// `complete`: the last segment had Continuation 0 (else the call timed out).
pub fn reconstruct<'s>(segments: &'s [Segment<'_>], start: UnixMillis, complete: bool) -> Timeline<'s> {
    let info = segments.first().map(call_info).unwrap_or_default();
    // A segment gives at most seven steps, most give two to four.
    let mut b = Builder { steps: Vec::with_capacity(4 * segments.len() + 2), state: Vec::new() };
    let mut t = start.0;
    for (i, seg) in segments.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| &segments[p]);
        let next = segments.get(i + 1);
        let s = t;
        let ring_end = s + 1000 * u64::from(seg.ring_secs);
        let conn_end = ring_end + 1000 * u64::from(seg.connected_secs);
        let hold_end = conn_end + 1000 * u64::from(seg.hold_secs);
        let end = s + seg.total_ms();
        let answered = seg.answered();

        // Which side answers: the new device.
        let (answering, calling) = match prev {
            None if seg.direction == SmdrDirection::Inbound => (&seg.party1, &seg.party2),
            None => (&seg.party2, &seg.party1),
            Some(p) if !p.has(&seg.party2) => (&seg.party2, &seg.party1),
            Some(p) if !p.has(&seg.party1) => (&seg.party1, &seg.party2),
            // The same two devices again: nobody new rings.
            Some(_) => (&seg.party2, &seg.party1),
        };
        let answering_is_new = prev.is_none_or(|p| !p.has(answering));
        let after_park = prev.is_some_and(|p| p.park_secs > 0);

        // Voicemail picked up an internal call that rang a number first.
        if i == 0
            && answering.kind == DeviceKind::Voicemail
            && seg.ring_secs > 0
            && seg.is_internal
            && extension_like(&seg.called_number)
            && seg.party1.extension() != Some(&seg.called_number)
        {
            let called: &str = &seg.called_number;
            b.push(s, called, CallChange::Ringing, false);
            b.push(
                ring_end,
                called,
                CallChange::Disconnected { reason: DisconnectReason::Other(VOICEMAIL.into()) },
                false,
            );
        }

        if let Some(ext) = answering.extension().filter(|_| answering_is_new) {
            if (seg.ring_secs > 0 || !answered) && !b.open(ext) {
                b.push(s, ext, CallChange::Ringing, false);
            }
            if answered {
                let change = if after_park { CallChange::Unparked { slot: None } } else { CallChange::Connected };
                b.push(ring_end, ext, change, false);
            }
        }
        if let Some(ext) = calling.extension()
            && answered
            && !matches!(b.state(ext), Some(State::Connected | State::Held))
        {
            b.push(ring_end, ext, CallChange::Connected, false);
        }

        // Hold and park: the answering extension's, else the calling one's.
        let holder = answering.extension().filter(|e| b.open(e)).or_else(|| calling.extension().filter(|e| b.open(e)));
        if let Some(holder) = holder {
            if seg.hold_secs > 0 {
                // Leaves: not in the next segment, or the call went on in a segment we lack.
                let leaves = next.map_or(seg.continuation, |n| !n.has(device_of(seg, holder)));
                if leaves || seg.park_secs > 0 {
                    b.push(conn_end, holder, CallChange::Held, true);
                } else {
                    let half = 1000 * u64::from(seg.connected_secs / 2);
                    b.push(ring_end + half, holder, CallChange::Held, true);
                    b.push(ring_end + half + 1000 * u64::from(seg.hold_secs), holder, CallChange::Resumed, true);
                }
            }
            if seg.park_secs > 0 {
                b.push(hold_end, holder, CallChange::Parked { slot: None }, false);
            }
        }

        // The segment ends: who leaves.
        let targeting = (!seg.targeting_cause.is_empty()).then_some(&*seg.targeting_cause);
        for party in [&seg.party1, &seg.party2] {
            let Some(ext) = party.extension() else { continue };
            if !b.open(ext) || next.is_some_and(|n| n.has(party)) {
                continue;
            }
            let ringing = b.state(ext) == Some(State::Ringing);
            let change = match next {
                Some(_) if ringing => {
                    CallChange::Disconnected { reason: reason_after_ringing(&segments[i + 1..], answered) }
                }
                Some(n) => CallChange::Transferred { to: transfer_target(seg, n) },
                None if !complete => CallChange::Disconnected { reason: DisconnectReason::Unknown },
                None if ringing => CallChange::Disconnected { reason: DisconnectReason::CallerAbandoned },
                None => CallChange::Disconnected { reason: DisconnectReason::Normal },
            };
            b.push(end, ext, change, false);
            if let Some(step) = b.steps.last_mut() {
                step.targeting_cause = targeting;
            }
        }
        t = end;
    }
    // Anyone still open (a phantom ring, a device that left without a segment of its own).
    // In extension order (the order they had in a sorted map).
    let mut open: Vec<(&str, State)> = b.state.iter().filter(|(_, s)| *s != State::Gone).copied().collect();
    open.sort_unstable_by_key(|(e, _)| *e);
    for (ext, state) in open {
        let reason = if !complete {
            DisconnectReason::Unknown
        } else if state == State::Ringing {
            DisconnectReason::CallerAbandoned
        } else {
            DisconnectReason::Normal
        };
        b.push(t, ext, CallChange::Disconnected { reason }, false);
    }
    // Steps were produced segment by segment; order them by time, keeping that order on ties.
    b.steps.sort_by_key(|s| s.at);
    Timeline { info, steps: b.steps, ended_at: UnixMillis(t) }
}

fn device_of<'s, 'a>(seg: &'s Segment<'a>, ext: &str) -> &'s Device<'a> {
    if seg.party1.extension() == Some(ext) { &seg.party1 } else { &seg.party2 }
}

/// Why a device that rang and left while the call went on left: answered by a later segment's
/// device, voicemail, or rang out.
fn reason_after_ringing(later: &[Segment<'_>], answered_here: bool) -> DisconnectReason {
    if answered_here {
        return DisconnectReason::AnsweredElsewhere;
    }
    for seg in later {
        if seg.answered() {
            let vm = seg.party1.kind == DeviceKind::Voicemail || seg.party2.kind == DeviceKind::Voicemail;
            return if vm { DisconnectReason::Other(VOICEMAIL.into()) } else { DisconnectReason::AnsweredElsewhere };
        }
    }
    DisconnectReason::NoAnswer
}

/// Where a call went from `seg` to `next`: the device new in `next`.
fn transfer_target(seg: &Segment<'_>, next: &Segment<'_>) -> Option<String> {
    let new = if seg.has(&next.party2) { &next.party1 } else { &next.party2 };
    match new.kind {
        DeviceKind::Extension => Some(new.number.to_string()),
        DeviceKind::Voicemail => Some(VOICEMAIL.into()),
        DeviceKind::Trunk => (!next.dialled_number.is_empty()).then(|| next.dialled_number.to_string()),
        DeviceKind::Other => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
