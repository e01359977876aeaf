//! [`LegBinding`]: what correlation decided about a PBX call, and [`CorrelatedSignal`].
//!
//! The correlation crate produces bindings; the lifecycle and the event builder read them. They
//! live here so that neither side depends on the other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::signal::PbxSignal;

/// How a PBX call was bound to a platform leg: `meta.correlation`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchMethod {
    /// The PBX's SIP Call-ID of the trunk leg equals the leg's SIP Call-ID.
    SipCallId,
    /// The sids were read out of the SIP Call-ID by the configured pattern.
    CallIdPattern,
    /// A token in a PBX-visible field (caller name, DID) matched the configured pattern.
    Token,
    /// Caller and dialled number (E.164) matched one leg within the time window.
    NumberTime,
    /// More than one leg (or call) fitted equally well, so none was chosen: forwarded with null
    /// sids rather than guessed.
    Ambiguous,
    /// No leg matched (forwarded with null sids, by configuration).
    #[default]
    None,
}

impl MatchMethod {
    /// The `meta.correlation` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchMethod::SipCallId => "sip-call-id",
            MatchMethod::CallIdPattern => "call-id-pattern",
            MatchMethod::Token => "token",
            MatchMethod::NumberTime => "number-time",
            MatchMethod::Ambiguous => "ambiguous",
            MatchMethod::None => "none",
        }
    }
}

/// The platform leg a PBX call belongs to, or the decision that it belongs to none.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LegBinding {
    /// The B leg (for an outbound call: the leg the platform dialled out on).
    pub call_sid: Option<Uuid>,
    /// The A leg.
    pub parent_call_sid: Option<Uuid>,
    /// The leg's `from` (E.164 digits or URI), which replaces the PBX's view when bound.
    pub from: Option<String>,
    /// The leg's `to`.
    pub to: Option<String>,
    /// Tags the platform sent with the leg; they go into `meta`.
    pub tags: BTreeMap<String, String>,
    /// How it was matched.
    pub method: MatchMethod,
}

impl LegBinding {
    /// The binding of a call no leg matched.
    pub fn unmatched() -> LegBinding {
        LegBinding::default()
    }

    /// Whether a leg was found.
    pub fn is_bound(&self) -> bool {
        !matches!(self.method, MatchMethod::None | MatchMethod::Ambiguous)
    }
}

/// A PBX signal with the binding of its call, ready for the lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelatedSignal {
    /// The signal.
    pub signal: PbxSignal,
    /// Its call's binding (unmatched for extension signals).
    pub binding: LegBinding,
}
