//! WebSocket frames of `/callcontrol/ws`: thin notifications that point at an entity to fetch.
//!
//! A server→client frame is `{"sequence": n, "event": {"event_type": k, "entity": "<path>",
//! "attached_data": …}}` (3CX's `WSEvent`; sample
//! `testdata/samples/3cx/callcontrol_ws_event_envelope_upsert.json`). `event_type` is a number:
//! 0 Upsert, 1 Remove, 2 DTMF, 3 prompt playback finished, 4 a response to a request we sent;
//! any other number is kept as [`EventType::Unknown`] (3CX's docs mention a 5 once). Some
//! clients in the wild accept PascalCase keys (`EventType`, `Entity`); so do we. The entity
//! path names a DN, a device or a participant ([`EntityRef`]); DNs may be non-numeric, and
//! path segments are percent-decoded (device ids are SIP URIs).
//!
//! ```
//! use adapter_3cx::ws::{parse_frame, EntityRef, EventType};
//!
//! let frame = parse_frame(r#"{"sequence":3,"event":{"event_type":0,"entity":"/callcontrol/101/participants/5","attached_data":null}}"#, 65_536).unwrap();
//! assert_eq!(frame.sequence, Some(3));
//! assert_eq!(frame.event_type, EventType::Upsert);
//! assert_eq!(frame.entity, EntityRef::Participant { dn: "101".into(), id: "5".into() });
//! ```

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::participant::lenient_int;

/// What a notification says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// 0: the entity was added or changed (fetch it).
    Upsert,
    /// 1: the entity is gone.
    Remove,
    /// 2: DTMF digits (`attached_data.dtmf_input`), route-point calls only.
    Dtmf,
    /// 3: a prompt finished playing (route-point apps).
    PromptPlaybackFinished,
    /// 4: the answer to a request sent over the WebSocket.
    Response,
    /// Any other number, kept.
    Unknown(i64),
}

impl EventType {
    /// From 3CX's number.
    pub fn from_code(code: i64) -> EventType {
        match code {
            0 => EventType::Upsert,
            1 => EventType::Remove,
            2 => EventType::Dtmf,
            3 => EventType::PromptPlaybackFinished,
            4 => EventType::Response,
            n => EventType::Unknown(n),
        }
    }

    /// 3CX's number.
    pub fn code(self) -> i64 {
        match self {
            EventType::Upsert => 0,
            EventType::Remove => 1,
            EventType::Dtmf => 2,
            EventType::PromptPlaybackFinished => 3,
            EventType::Response => 4,
            EventType::Unknown(n) => n,
        }
    }

    /// A bounded label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            EventType::Upsert => "upsert",
            EventType::Remove => "remove",
            EventType::Dtmf => "dtmf",
            EventType::PromptPlaybackFinished => "prompt-finished",
            EventType::Response => "response",
            EventType::Unknown(_) => "unknown",
        }
    }
}

/// What an entity path points at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityRef {
    /// `/callcontrol/{dn}/participants/{id}`.
    Participant {
        /// The DN.
        dn: String,
        /// The participant id, as in the path.
        id: String,
    },
    /// `/callcontrol/{dn}/devices/{device_id}`.
    Device {
        /// The DN.
        dn: String,
        /// The device id (a SIP URI), decoded.
        device: String,
    },
    /// `/callcontrol/{dn}`.
    Dn(String),
    /// Anything else (kept for the log), or no entity at all (empty).
    Other(String),
}

impl EntityRef {
    /// Reads an entity path.
    pub fn parse(path: &str) -> EntityRef {
        let trimmed = path.split(['?', '#']).next().unwrap_or("");
        let segments: Vec<&str> = trimmed.split('/').filter(|s| !s.is_empty()).collect();
        let decoded = |s: &str| percent_decode(s);
        match segments.as_slice() {
            [cc, dn, kind, id] if cc.eq_ignore_ascii_case("callcontrol") && !dn.is_empty() => {
                if kind.eq_ignore_ascii_case("participants") {
                    EntityRef::Participant { dn: decoded(dn), id: decoded(id) }
                } else if kind.eq_ignore_ascii_case("devices") {
                    EntityRef::Device { dn: decoded(dn), device: decoded(id) }
                } else {
                    EntityRef::Other(path.to_owned())
                }
            }
            [cc, dn] if cc.eq_ignore_ascii_case("callcontrol") => EntityRef::Dn(decoded(dn)),
            _ => EntityRef::Other(path.to_owned()),
        }
    }
}

/// `%XX` sequences decoded (invalid ones kept as written); the result is read as UTF-8, lossily.
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (bytes.get(i + 1).and_then(hex), bytes.get(i + 2).and_then(hex))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: &u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One notification from 3CX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsEvent {
    /// The frame's sequence number, where given.
    pub sequence: Option<i64>,
    /// What happened.
    pub event_type: EventType,
    /// To what.
    pub entity: EntityRef,
}

/// A frame that is not a notification we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Larger than `max_frame_bytes`.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not JSON, or not an object.
    #[error("not a JSON object: {0}")]
    Json(String),
    /// A JSON object without an `event`.
    #[error("no event in the frame")]
    NoEvent,
    /// An event without an `event_type`.
    #[error("no event_type in the event")]
    NoEventType,
}

impl FrameError {
    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            FrameError::TooLarge { .. } => "too-large",
            FrameError::Json(_) => "json",
            FrameError::NoEvent => "no-event",
            FrameError::NoEventType => "no-event-type",
        }
    }
}

#[derive(Deserialize)]
struct RawFrame {
    #[serde(default, alias = "Sequence", deserialize_with = "lenient_int")]
    sequence: Option<i64>,
    #[serde(default, alias = "Event")]
    event: Option<RawEvent>,
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(default, alias = "EventType", alias = "eventType", deserialize_with = "lenient_int")]
    event_type: Option<i64>,
    #[serde(default, alias = "Entity", deserialize_with = "crate::participant::lenient_string")]
    entity: Option<String>,
    // Read and dropped: we fetch participants ourselves; DTMF and responses are not ours.
    #[serde(default, alias = "AttachedData")]
    #[allow(dead_code)]
    attached_data: Option<IgnoredAny>,
}

/// Reads one text frame (at most `max_bytes`).
pub fn parse_frame(text: &str, max_bytes: usize) -> Result<WsEvent, FrameError> {
    if text.len() > max_bytes {
        return Err(FrameError::TooLarge { len: text.len(), max: max_bytes });
    }
    // serde would also read a struct from an array; a frame is an object.
    if !text.trim_start().starts_with('{') {
        return Err(FrameError::Json("expected a JSON object".into()));
    }
    let raw: RawFrame = serde_json::from_str(text).map_err(|e| FrameError::Json(e.to_string()))?;
    let event = raw.event.ok_or(FrameError::NoEvent)?;
    let code = event.event_type.ok_or(FrameError::NoEventType)?;
    let entity = event.entity.as_deref().map_or(EntityRef::Other(String::new()), EntityRef::parse);
    Ok(WsEvent { sequence: raw.sequence, event_type: EventType::from_code(code), entity })
}

/// A notification as 3CX would send it (for the simulator and tests).
pub fn render_frame(sequence: i64, event_type: EventType, entity_path: &str) -> String {
    serde_json::json!({
        "sequence": sequence,
        "event": { "event_type": event_type.code(), "entity": entity_path, "attached_data": null }
    })
    .to_string()
}

/// The entity path of a participant, percent-encoding what a path segment cannot hold.
pub fn participant_path(dn: &str, id: &str) -> String {
    format!("/callcontrol/{}/participants/{}", percent_encode(dn), percent_encode(id))
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for a path segment.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests unwrap what they built themselves.
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::testdata;

    #[test]
    fn the_sample_envelope() {
        let f = parse_frame(testdata::WS_UPSERT.trim(), 65_536).unwrap();
        assert_eq!(
            f,
            WsEvent {
                sequence: Some(3),
                event_type: EventType::Upsert,
                entity: EntityRef::Participant { dn: "101".into(), id: "5".into() },
            }
        );
    }

    #[test]
    fn the_request_frame_sample_is_no_event() {
        // A client→server request (what the qmex bridge sends); never a notification.
        assert_eq!(parse_frame(testdata::WS_REQUEST.trim(), 65_536), Err(FrameError::NoEvent));
    }

    #[test]
    fn the_debug_log_line_names_an_upsert() {
        // The bridge copied event_type 0 and sequence 15 from the frame into its log line.
        let line: serde_json::Value = serde_json::from_str(testdata::WS_DEBUGLOG.trim()).unwrap();
        let frame = render_frame(
            line["sequence"].as_i64().unwrap(),
            EventType::from_code(line["event_type"].as_i64().unwrap()),
            &participant_path("150", "8106"),
        );
        let f = parse_frame(&frame, 65_536).unwrap();
        assert_eq!(f.event_type, EventType::Upsert);
        assert_eq!(f.sequence, Some(15));
        assert_eq!(f.entity, EntityRef::Participant { dn: "150".into(), id: "8106".into() });
    }

    #[test]
    fn pascal_case_unknown_types_and_odd_paths() {
        let f =
            parse_frame(r#"{"Sequence":"9","Event":{"EventType":5,"Entity":"/callcontrol/ROUTER"}}"#, 1_000).unwrap();
        assert_eq!(f.sequence, Some(9));
        assert_eq!(f.event_type, EventType::Unknown(5));
        assert_eq!(f.entity, EntityRef::Dn("ROUTER".into()));
        let f = parse_frame(r#"{"event":{"event_type":1,"entity":"/callcontrol/zammad%20bridge/devices/sip%3A150%40127.0.0.1%3A5483"}}"#, 1_000)
            .unwrap();
        assert_eq!(f.entity, EntityRef::Device { dn: "zammad bridge".into(), device: "sip:150@127.0.0.1:5483".into() });
        assert_eq!(EntityRef::parse("/xapi/v1/Users"), EntityRef::Other("/xapi/v1/Users".into()));
        assert_eq!(
            EntityRef::parse("callcontrol/150/participants/7/"),
            EntityRef::Participant { dn: "150".into(), id: "7".into() }
        );
        assert_eq!(
            EntityRef::parse("/callcontrol/1%zz/participants/%4"),
            EntityRef::Participant { dn: "1%zz".into(), id: "%4".into() }
        );
        let f = parse_frame(r#"{"event":{"event_type":2,"attached_data":{"dtmf_input":"12#"}}}"#, 1_000).unwrap();
        assert_eq!(f.event_type, EventType::Dtmf);
        assert_eq!(f.entity, EntityRef::Other(String::new()));
    }

    #[test]
    fn bad_frames_are_errors_with_labels() {
        assert!(matches!(parse_frame("{", 10), Err(FrameError::Json(_))));
        assert!(matches!(parse_frame("[1]", 10), Err(FrameError::Json(_))));
        assert_eq!(parse_frame("{}", 10), Err(FrameError::NoEvent));
        assert_eq!(parse_frame(r#"{"event":{}}"#, 100), Err(FrameError::NoEventType));
        assert_eq!(parse_frame("{}", 1), Err(FrameError::TooLarge { len: 2, max: 1 }));
        assert_eq!(FrameError::NoEvent.label(), "no-event");
    }

    proptest! {
        /// A frame we render reads back as what we rendered, for any DN and id.
        #[test]
        fn rendered_frames_read_back(seq in any::<i64>(), code in -3i64..10, dn in "\\PC{1,12}", id in "\\PC{1,8}") {
            let frame = render_frame(seq, EventType::from_code(code), &participant_path(&dn, &id));
            let f = parse_frame(&frame, 1 << 20).unwrap();
            prop_assert_eq!(f.sequence, Some(seq));
            prop_assert_eq!(f.event_type.code(), code);
            prop_assert_eq!(f.entity, EntityRef::Participant { dn, id });
        }

        /// Arbitrary text never panics and never passes the size limit.
        #[test]
        fn text_never_panics(text in "\\PC{0,200}", max in 0usize..300) {
            if let Ok(f) = parse_frame(&text, max) {
                prop_assert!(text.len() <= max);
                let _ = f.event_type.label();
            }
        }
    }
}
