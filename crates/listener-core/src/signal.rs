//! [`PbxSignal`]: what every adapter emits, whatever PBX it reads.
//!
//! A signal describes one fact about one device in one PBX call ("extension 201 is ringing in
//! call 1042"), or one extension's state. Adapters translate their PBX's vocabulary into it;
//! everything downstream (correlation, the call lifecycle, event building) reads only this.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch. All cores take time as this type, never from a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// This instant plus `ms` milliseconds (saturating).
    pub fn plus_ms(self, ms: u64) -> UnixMillis {
        UnixMillis(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, 0 if `earlier` is later.
    pub fn since(self, earlier: UnixMillis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// A kind of PBX: the `type` of a `[[pbx]]` block and `meta.pbxType` (`"avaya-r11"`).
///
/// Each adapter crate defines its own constant (`adapter_avaya_r11::PBX_TYPE`); the set is open
/// so that a new PBX type is a change to its own crate and the daemon's table, not to this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PbxType(&'static str);

impl PbxType {
    /// A PBX type spelt as in the configuration (lower case, `-`).
    pub const fn new(name: &'static str) -> PbxType {
        PbxType(name)
    }

    /// The configuration and `meta.pbxType` spelling.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for PbxType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One configured PBX: its name (unique in the configuration) and type. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PbxId {
    /// The `name` of its `[[pbx]]` block; part of every `childSid`.
    pub name: Arc<str>,
    /// What kind of PBX it is.
    pub pbx_type: PbxType,
}

impl PbxId {
    /// A PBX id.
    pub fn new(name: impl Into<Arc<str>>, pbx_type: PbxType) -> PbxId {
        PbxId { name: name.into(), pbx_type }
    }
}

impl fmt::Display for PbxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The PBX's own id of a call (DevLink3: `node.callid`; 3CX: `callid`; SMDR: Call ID).
///
/// Shared (`Arc<str>`): the adapter, the correlator and the lifecycle each key their call
/// tables, timers and indexes by it, so a clone is a reference count, not a copy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PbxCallId(pub Arc<str>);

impl PbxCallId {
    /// The id `id`.
    pub fn new(id: impl Into<Arc<str>>) -> PbxCallId {
        PbxCallId(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PbxCallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An extension number as the PBX shows it (`201`). Never normalised.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Extension(pub String);

impl fmt::Display for Extension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Raw PBX facts an adapter wants to pass to the platform; they end up in `meta` (values are
/// strings, keys camelCase, e.g. `avayaEndId`). Standard keys set by the pipeline win.
pub type Facts = BTreeMap<String, String>;

/// One fact from a PBX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbxSignal {
    /// Which configured PBX said it.
    pub pbx: PbxId,
    /// When it happened: the PBX's time where it gives one, else when we received it.
    pub at: UnixMillis,
    /// The feed it came from, `meta.source` (`devlink3`, `smdr`, `delta2`, `callcontrol`, `cdr`).
    pub source: &'static str,
    /// Raw facts for `meta`.
    pub facts: Facts,
    /// What the fact is about.
    pub body: SignalBody,
}

/// The [`PbxSignal::source`]s of feeds that report a call only after it happened (SMDR writes a
/// record when a call segment ends, a CDR when the call ends). Their times are the PBX's own,
/// and whatever platform leg the call had was announced long before: correlation decides such
/// a call at once, on the PBX's call start (DESIGN §5).
pub const AFTER_THE_FACT_SOURCES: [&str; 2] = ["smdr", "cdr"];

impl PbxSignal {
    /// Whether the signal comes from a feed that reports after the fact
    /// ([`AFTER_THE_FACT_SOURCES`]).
    pub fn after_the_fact(&self) -> bool {
        AFTER_THE_FACT_SOURCES.contains(&self.source)
    }
}

/// A fact about a device in a call, or about an extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalBody {
    /// A device in a PBX call.
    Call(CallSignal),
    /// An extension's state, not bound to a call.
    Extension(ExtensionSignal),
}

/// A fact about a device in a PBX call (or about the call itself when `extension` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSignal {
    /// The PBX's call id.
    pub call: PbxCallId,
    /// When the call started as far as the adapter knows (PBX time, or first sight). The
    /// lifecycle keeps the first value it saw for a call, so this only has to be right once.
    pub call_started: UnixMillis,
    /// The device concerned; `None` for call-level facts (`Queued`, `Ended`).
    pub extension: Option<Extension>,
    /// What happened.
    pub change: CallChange,
    /// Who the call is between, as the PBX sees it.
    pub info: CallInfo,
}

/// What the PBX says about a call's parties. Adapters fill in what they know; numbers are raw
/// here and normalised once by the pipeline ([`crate::NumberPlan::normalise_call_info`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallInfo {
    /// Inbound, outbound or internal.
    pub direction: Direction,
    /// The far end's number: the caller of an inbound call, the callee of an outbound one, the
    /// other extension of an internal one.
    pub external_number: Option<Arc<str>>,
    /// The number dialled: the DID of an inbound call, the digits of an outbound one.
    pub dialled_number: Option<Arc<str>>,
    /// The SIP Call-ID of the trunk leg, where the PBX gives it (Avaya SIPTrack).
    pub sip_call_id: Option<Arc<str>>,
    /// The caller's display name as the PBX shows it.
    pub caller_name: Option<Arc<str>>,
    /// The queue or hunt group the call came through, once the PBX has named it (`meta.queue`
    /// on the call's events).
    #[serde(default)]
    pub queue: Option<Arc<str>>,
}

impl CallInfo {
    /// Takes what `from` knows over what `self` knew: a known direction, and every non-empty
    /// value (a later signal completes or corrects an earlier one, never erases it).
    pub fn merge(&mut self, from: &CallInfo) {
        if from.direction != Direction::Unknown {
            self.direction = from.direction;
        }
        for (into, new) in [
            (&mut self.external_number, &from.external_number),
            (&mut self.dialled_number, &from.dialled_number),
            (&mut self.sip_call_id, &from.sip_call_id),
            (&mut self.caller_name, &from.caller_name),
            (&mut self.queue, &from.queue),
        ] {
            if let Some(v) = new.as_ref().filter(|v| !v.is_empty()) {
                *into = Some(v.clone());
            }
        }
    }
}

/// The direction of a call from the PBX's point of view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// From outside (a trunk) into the PBX.
    Inbound,
    /// From an extension out through a trunk.
    Outbound,
    /// Between two extensions.
    Internal,
    /// The PBX did not say.
    #[default]
    Unknown,
}

impl Direction {
    /// The `meta.direction` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
            Direction::Internal => "internal",
            Direction::Unknown => "unknown",
        }
    }
}

/// What happened to a device in a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallChange {
    /// The device is alerting.
    Ringing,
    /// The device's audio path is up (answered, or back from hold).
    Connected,
    /// The device put the call on hold (audio path down).
    Held,
    /// The device took the call back from hold.
    Resumed,
    /// The call was parked from this device (the device leaves the call).
    Parked {
        /// The park slot, where the PBX says.
        slot: Option<String>,
    },
    /// The device picked up a parked call.
    Unparked {
        /// The park slot, where the PBX says.
        slot: Option<String>,
    },
    /// The device transferred the call away (the device leaves the call).
    Transferred {
        /// Where it went (an extension or number), where the PBX says.
        to: Option<String>,
    },
    /// The call (`extension = None`) is waiting in a queue / hunt group.
    Queued {
        /// The queue or hunt group.
        queue: Option<String>,
    },
    /// The device left the call.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
    },
    /// The whole call is over (`extension = None`): no party remains.
    Ended,
}

/// Why a device left a call: `meta.reason` of a `disconnected` event.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DisconnectReason {
    /// A party hung up after talking.
    Normal,
    /// The device rang but another device answered.
    AnsweredElsewhere,
    /// The caller hung up before anyone answered.
    CallerAbandoned,
    /// The device (user) rejected the call (Drop key, DND).
    Rejected,
    /// The device was busy.
    Busy,
    /// The device rang until the PBX gave up on it (ring timeout, overflow, voicemail).
    NoAnswer,
    /// The device transferred the call away.
    Transferred,
    /// The device parked the call.
    Parked,
    /// The call ended while we could not see it (link down, restart); we do not know how.
    Unknown,
    /// Another reason the PBX gave, in its words (kebab-case).
    Other(String),
}

impl DisconnectReason {
    /// The `meta.reason` spelling.
    pub fn as_str(&self) -> &str {
        match self {
            DisconnectReason::Normal => "normal",
            DisconnectReason::AnsweredElsewhere => "answered-elsewhere",
            DisconnectReason::CallerAbandoned => "caller-abandoned",
            DisconnectReason::Rejected => "rejected",
            DisconnectReason::Busy => "busy",
            DisconnectReason::NoAnswer => "no-answer",
            DisconnectReason::Transferred => "transferred",
            DisconnectReason::Parked => "parked",
            DisconnectReason::Unknown => "unknown",
            DisconnectReason::Other(s) => s,
        }
    }
}

/// An extension's state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionSignal {
    /// The extension.
    pub extension: Extension,
    /// Its new state.
    pub state: ExtensionState,
}

/// The state of an extension, as far as the PBX reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExtensionState {
    /// Idle and reachable.
    Available,
    /// In a call or otherwise busy.
    Busy,
    /// Do not disturb.
    Dnd,
    /// No user logged in.
    LoggedOut,
}
