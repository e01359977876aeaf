//! Announcements → [`LegUpdate`]s: the pure part of the endpoint.
//!
//! The platform POSTs its own Level 1 (A leg) and Level 2 (B leg) Generic Events, one object or
//! an array. Each `event = "call"` event becomes one update about its leg:
//!
//! | status | update | why |
//! |---|---|---|
//! | `trying`, `ringing` | `Learned` | the leg exists |
//! | `in-progress` | `Updated` | answered; may be the first we hear of it |
//! | `completed`, `failed` | `Ended` | the leg is over (normally, or never connected) |
//!
//! `meta.sipCallId` is the leg's SIP Call-ID (the key for exact matching); the rest of `meta`
//! are the platform's tags, carried into the Level 3 events. Recording events
//! (`event = "record"`) are accepted and ignored; Level 3 events are refused.

use correlation::{LegFacts, LegSource, LegUpdate};
use generic_event::{EventKind, GenericEvent, Status};
use listener_core::UnixMillis;
use serde_json::Value;

/// The `meta` key that carries a leg's SIP Call-ID.
pub const SIP_CALL_ID_KEY: &str = "sipCallId";

/// Why a body is not a valid announcement (answered 400, with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    /// Not JSON.
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    /// Neither an object nor an array of objects.
    #[error("expected a Generic Event object or an array of them")]
    NotEvents,
    /// An empty array.
    #[error("the array is empty")]
    Empty,
    /// An element is not a valid Generic Event.
    #[error("event {index}: {reason}")]
    Invalid {
        /// Its position (0 for a single object).
        index: usize,
        /// What is wrong, from the contract's validator.
        reason: String,
    },
    /// A Level 3 event: not a leg.
    #[error("event {index}: a Level 3 `{kind}` event is not a leg announcement")]
    NotALeg {
        /// Its position.
        index: usize,
        /// Its `event`.
        kind: &'static str,
    },
    /// A call event without a callSid.
    #[error("event {index}: a leg announcement needs a callSid")]
    NoCallSid {
        /// Its position.
        index: usize,
    },
}

/// Reads a request body into leg updates (all or nothing).
pub fn parse_announcements(body: &[u8]) -> Result<Vec<LegUpdate>, AnnounceError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| AnnounceError::NotJson(e.to_string()))?;
    let items = match value {
        Value::Array(items) if items.is_empty() => return Err(AnnounceError::Empty),
        Value::Array(items) => items,
        Value::Object(_) => vec![value],
        _ => return Err(AnnounceError::NotEvents),
    };
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        if !item.is_object() {
            return Err(AnnounceError::NotEvents);
        }
        let event =
            generic_event::validate_value(item).map_err(|e| AnnounceError::Invalid { index, reason: e.to_string() })?;
        if let Some(update) = to_update(index, event)? {
            out.push(update);
        }
    }
    Ok(out)
}

/// One event's update; `None` for events that are not about a leg's life (recordings).
pub fn to_update(index: usize, event: GenericEvent) -> Result<Option<LegUpdate>, AnnounceError> {
    match event.event {
        EventKind::Call => {}
        EventKind::Record => return Ok(None),
        kind @ (EventKind::Phone | EventKind::Extension) => {
            return Err(AnnounceError::NotALeg { index, kind: kind.as_str() });
        }
    }
    let call_sid = event.call_sid.ok_or(AnnounceError::NoCallSid { index })?;
    let mut tags = event.meta;
    let sip_call_id = tags.remove(SIP_CALL_ID_KEY).filter(|c| !c.trim().is_empty());
    let facts = LegFacts {
        source: LegSource::Announcement,
        call_sid: Some(call_sid),
        parent_call_sid: event.parent_call_sid,
        account_id: Some(event.account_id),
        sip_call_id,
        from: Some(event.from).filter(|s| !s.is_empty()),
        to: Some(event.to).filter(|s| !s.is_empty()),
        started: Some(UnixMillis(event.timestamp)),
        tags,
    };
    Ok(Some(match event.status {
        Status::Completed | Status::Failed => LegUpdate::Ended(facts),
        Status::InProgress => LegUpdate::Updated(facts),
        // Trying, ringing (the validator allows nothing else for `call`).
        _ => LegUpdate::Learned(facts),
    }))
}
