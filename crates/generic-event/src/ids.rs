//! Stable identities: the `childSid` of a PBX call and the id of each event.
//!
//! Both are UUID v5 (SHA-1 name-based), so they are pure functions of the PBX facts: the same
//! fact always yields the same id, across our restarts, reconnects, and across two redundant
//! listeners on the same PBX. The platform deduplicates on [`EventId`] (sent as `webhook-id`).
//!
//! Name components are joined with the ASCII unit separator (0x1F), which cannot occur in a PBX
//! name, call id or extension we accept, so two different tuples never hash the same name.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Status;

/// Namespace of `childSid` for PBX calls.
const NS_CHILD_CALL: Uuid = Uuid::from_u128(0x4f1c_9a52_6b1e_5d3a_9e07_2c44_8a6f_1b01);
/// Namespace of `childSid` for extensions (events not bound to a call).
const NS_CHILD_EXTENSION: Uuid = Uuid::from_u128(0x4f1c_9a52_6b1e_5d3a_9e07_2c44_8a6f_1b02);
/// Namespace of event ids.
const NS_EVENT: Uuid = Uuid::from_u128(0x4f1c_9a52_6b1e_5d3a_9e07_2c44_8a6f_1b03);

const SEP: char = '\u{1f}';

/// The `childSid` of a PBX call: the PBX's configured name, its call id, and the call's start
/// time in ms (PBX call ids restart at 1 when the PBX reboots; the start time tells the two
/// calls apart).
pub fn child_sid(pbx_name: &str, pbx_call_id: &str, call_started_ms: u64) -> Uuid {
    let name = format!("{pbx_name}{SEP}{pbx_call_id}{SEP}{call_started_ms}");
    Uuid::new_v5(&NS_CHILD_CALL, name.as_bytes())
}

/// The `childSid` of an `extension` event: the extension itself on that PBX, stable for ever.
pub fn extension_child_sid(pbx_name: &str, extension: &str) -> Uuid {
    let name = format!("{pbx_name}{SEP}{extension}");
    Uuid::new_v5(&NS_CHILD_EXTENSION, name.as_bytes())
}

/// The stable id of one event, sent as `webhook-id` and used by the platform to deduplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub Uuid);

impl EventId {
    /// The id of a `phone` event: the `occurrence`-th time (1-based) that this device reached
    /// this status in this call. A second hold of the same call on the same phone is a new
    /// fact; the same hold reported again after a reconnect is not.
    pub fn for_phone(child_sid: Uuid, extension: Option<&str>, status: Status, occurrence: u32) -> EventId {
        let ext = extension.unwrap_or("");
        let name = format!("phone{SEP}{child_sid}{SEP}{ext}{SEP}{status}{SEP}{occurrence}");
        EventId(Uuid::new_v5(&NS_EVENT, name.as_bytes()))
    }

    /// The id of an `extension` event: the extension's state change at a PBX time.
    pub fn for_extension(child_sid: Uuid, status: Status, timestamp_ms: u64) -> EventId {
        let name = format!("extension{SEP}{child_sid}{SEP}{status}{SEP}{timestamp_ms}");
        EventId(Uuid::new_v5(&NS_EVENT, name.as_bytes()))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_sid_is_stable_and_depends_on_every_part() {
        let a = child_sid("site-1", "1042", 1_700_000_000_000);
        assert_eq!(a, child_sid("site-1", "1042", 1_700_000_000_000));
        assert_eq!(a.get_version_num(), 5);
        assert_ne!(a, child_sid("site-2", "1042", 1_700_000_000_000));
        assert_ne!(a, child_sid("site-1", "1043", 1_700_000_000_000));
        // Same call id after a PBX reboot: a different call.
        assert_ne!(a, child_sid("site-1", "1042", 1_700_000_360_000));
    }

    #[test]
    fn components_cannot_run_into_each_other() {
        assert_ne!(child_sid("a1", "2", 3), child_sid("a", "12", 3));
        assert_ne!(extension_child_sid("pbx", "12"), extension_child_sid("pbx1", "2"));
    }

    #[test]
    fn event_id_counts_occurrences() {
        let call = child_sid("site-1", "7", 1);
        let first = EventId::for_phone(call, Some("201"), Status::Held, 1);
        assert_eq!(first, EventId::for_phone(call, Some("201"), Status::Held, 1));
        assert_ne!(first, EventId::for_phone(call, Some("201"), Status::Held, 2));
        assert_ne!(first, EventId::for_phone(call, Some("202"), Status::Held, 1));
        assert_ne!(first, EventId::for_phone(call, Some("201"), Status::Connected, 1));
        assert_ne!(first, EventId::for_phone(call, None, Status::Held, 1));
    }

    #[test]
    fn extension_event_ids_differ_by_time_and_status() {
        let ext = extension_child_sid("site-1", "201");
        let a = EventId::for_extension(ext, Status::Busy, 10);
        assert_eq!(a, EventId::for_extension(ext, Status::Busy, 10));
        assert_ne!(a, EventId::for_extension(ext, Status::Busy, 11));
        assert_ne!(a, EventId::for_extension(ext, Status::Available, 10));
    }
}
