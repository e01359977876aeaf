//! The platform's *Generic Event* contract, at all three levels.
//!
//! The platform publishes one JSON object per call event ("The Generic Event", 07 Oct 2022).
//! Level 1 is the A leg, Level 2 the B legs and recordings, and Level 3, the one pbx-listener
//! emits, is what happens inside the customer's PBX. This crate is the contract and nothing else:
//!
//! - [`GenericEvent`]: the serde type, with the seed's camelCase keys, its nulls and key order;
//! - [`validate_json`] / [`GenericEvent::validate`]: reject wrong types, bad UUIDs, unknown
//!   keys and statuses that do not belong to the event kind;
//! - [`ids`]: the stable `childSid` of a PBX call and the stable [`EventId`] of each event.
//!
//! ```
//! use generic_event::{validate_json, Level};
//!
//! let json = br#"{"accountId":"9539ee93-64c8-802b-360b-c6f2f7cf2507","accountName":"Test Account",
//!   "parentCallSid":"e5bc544c-2186-47e8-8784-6182cf8190cb","callSid":"85cb3194-76e2-43e1-ad56-59556af617b9",
//!   "childSid":"ea707e77-18c1-4ad8-9072-6c396ee3fdd5","type":"voice","event":"phone","status":"connected",
//!   "from":"441234567890","to":"441234567891","extension":"201","meta":{"key1":"value"},
//!   "timestamp":1623163324316}"#;
//! let event = validate_json(json).unwrap();
//! assert_eq!(event.level(), Level::Pbx);
//! ```
//!
//! *Invariant:* this crate does no IO and reads no clock; everything it computes is a pure
//! function of its inputs.

#![warn(missing_docs)]

pub mod ids;
mod validate;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use ids::{EventId, child_sid, extension_child_sid};
pub use validate::{ValidationError, ValidationErrorKind, ValidationErrors, validate_json, validate_value};

/// One Generic Event, at any level.
///
/// Field order is the seed's; `serde_json` serialises fields in this order, so the bytes we
/// sign and send read like the platform's own documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenericEvent {
    /// The platform account (from configuration).
    pub account_id: Uuid,
    /// The platform account's name (from configuration).
    pub account_name: String,
    /// The A leg. `null` when the PBX call is not correlated.
    pub parent_call_sid: Option<Uuid>,
    /// The B leg (or the A leg itself at Level 1). `null` when not correlated.
    pub call_sid: Option<Uuid>,
    /// Level 3: the PBX's own call (or extension) as a stable UUID; `null` at Levels 1 and 2.
    pub child_sid: Option<Uuid>,
    /// Always `voice`.
    #[serde(rename = "type")]
    pub kind: MediaType,
    /// What the event is about: `call`, `record`, `phone` or `extension`.
    pub event: EventKind,
    /// The status; which ones are allowed depends on [`GenericEvent::event`].
    pub status: Status,
    /// E.164 digits without `+`, an extension, or a URI.
    pub from: String,
    /// E.164 digits without `+`, an extension, or a URI.
    pub to: String,
    /// The extension number of the device (Level 3), else `null`.
    pub extension: Option<String>,
    /// Call tags and PBX facts. Values are always strings.
    pub meta: BTreeMap<String, String>,
    /// Milliseconds since the Unix epoch when it happened.
    pub timestamp: u64,
}

/// The level an event belongs to, derived from its `event` and sids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// Level 1: the A leg (`event = call`, `callSid == parentCallSid`).
    ALeg,
    /// Level 2: a B leg (`event = call`) or a recording (`event = record`).
    BLeg,
    /// Level 3: a PBX device or extension (`event = phone | extension`).
    Pbx,
}

/// The media type of the call. The seed knows only `voice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MediaType {
    /// A voice call.
    Voice,
}

/// The `event` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// Level 1/2: a call leg.
    Call,
    /// Level 2: a recording of a B leg.
    Record,
    /// Level 3: a device in a call.
    Phone,
    /// Level 3: an extension's state, not bound to a call.
    Extension,
}

/// The `status` field, for every event kind. [`Status::allowed_for`] says which belong to which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Call leg: being set up.
    Trying,
    /// Call leg (Level 2) or phone: alerting.
    Ringing,
    /// Call leg: answered, media flowing.
    InProgress,
    /// Call leg: ended normally.
    Completed,
    /// Call leg: failed.
    Failed,
    /// Recording: started.
    Start,
    /// Recording: ended.
    End,
    /// Recording: transcoded. The seed spells it "trancoded"; both spellings are read.
    #[serde(alias = "trancoded")]
    Transcoded,
    /// Phone: answered, audio path up (also after resume and unpark).
    Connected,
    /// Phone: put on hold.
    Held,
    /// Phone: the call was parked from this device.
    Parked,
    /// Phone: this device transferred the call away.
    Transferred,
    /// Phone: this device left the call (`meta.reason` says why).
    Disconnected,
    /// Extension: idle and reachable.
    Available,
    /// Extension: in a call or otherwise busy.
    Busy,
    /// Extension: do not disturb.
    Dnd,
    /// Extension: no user logged in.
    LoggedOut,
}

impl Status {
    /// Every status, in documentation order.
    pub const ALL: [Status; 17] = [
        Status::Trying,
        Status::Ringing,
        Status::InProgress,
        Status::Completed,
        Status::Failed,
        Status::Start,
        Status::End,
        Status::Transcoded,
        Status::Connected,
        Status::Held,
        Status::Parked,
        Status::Transferred,
        Status::Disconnected,
        Status::Available,
        Status::Busy,
        Status::Dnd,
        Status::LoggedOut,
    ];

    /// The statuses allowed for an event kind.
    pub fn allowed_for(kind: EventKind) -> &'static [Status] {
        use Status::*;
        match kind {
            EventKind::Call => &[Trying, Ringing, InProgress, Completed, Failed],
            EventKind::Record => &[Start, End, Transcoded, InProgress],
            EventKind::Phone => &[Ringing, Connected, Held, Parked, Transferred, Disconnected],
            EventKind::Extension => &[Available, Busy, Dnd, LoggedOut],
        }
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        use Status::*;
        match self {
            Trying => "trying",
            Ringing => "ringing",
            InProgress => "in-progress",
            Completed => "completed",
            Failed => "failed",
            Start => "start",
            End => "end",
            Transcoded => "transcoded",
            Connected => "connected",
            Held => "held",
            Parked => "parked",
            Transferred => "transferred",
            Disconnected => "disconnected",
            Available => "available",
            Busy => "busy",
            Dnd => "dnd",
            LoggedOut => "logged-out",
        }
    }

    /// Parses the wire spelling (and the seed's "trancoded").
    pub fn parse(s: &str) -> Option<Status> {
        if s == "trancoded" {
            return Some(Status::Transcoded);
        }
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EventKind {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Call => "call",
            EventKind::Record => "record",
            EventKind::Phone => "phone",
            EventKind::Extension => "extension",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<EventKind> {
        [EventKind::Call, EventKind::Record, EventKind::Phone, EventKind::Extension]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl GenericEvent {
    /// The level this event belongs to.
    pub fn level(&self) -> Level {
        match self.event {
            EventKind::Phone | EventKind::Extension => Level::Pbx,
            EventKind::Record => Level::BLeg,
            EventKind::Call if self.call_sid.is_some() && self.call_sid == self.parent_call_sid => Level::ALeg,
            EventKind::Call => Level::BLeg,
        }
    }

    /// Checks the rules that serde's types cannot express: the status belongs to the event
    /// kind, and a Level 3 event has a `childSid`.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        validate::check_typed(self)
    }

    /// The event serialised as the compact JSON bytes we sign and send.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // Serialising a struct of strings, UUIDs, enums and a string map cannot fail.
        serde_json::to_vec(self).unwrap_or_else(|_| unreachable!("GenericEvent always serialises"))
    }
}

#[cfg(test)]
mod tests;
