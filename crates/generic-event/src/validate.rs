//! Validation of Generic Events as JSON, with one error per broken rule.
//!
//! serde alone stops at the first problem and words it for Rust programmers. The validator
//! walks the JSON object itself and reports every problem with the key it concerns, so a
//! platform developer (or our own tests) can see at once what is wrong with an event.

use std::fmt;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{EventKind, GenericEvent, Level, Status};

/// The keys of a Generic Event, in the seed's order.
pub const KEYS: [&str; 13] = [
    "accountId",
    "accountName",
    "parentCallSid",
    "callSid",
    "childSid",
    "type",
    "event",
    "status",
    "from",
    "to",
    "extension",
    "meta",
    "timestamp",
];

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// The key concerned (`meta.queue` for a meta value), or `$` for the whole document.
    pub key: String,
    /// What is wrong with it.
    pub kind: ValidationErrorKind,
}

/// What is wrong with a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidationErrorKind {
    /// The bytes are not JSON, or not a JSON object.
    NotAnObject(String),
    /// A required key is absent.
    Missing,
    /// A key the contract does not have.
    Unknown,
    /// The value has the wrong JSON type.
    WrongType {
        /// What the contract says, e.g. "string or null".
        expected: &'static str,
    },
    /// A string that must be a UUID is not one.
    BadUuid(String),
    /// `type` is not `voice`.
    UnknownType(String),
    /// `event` is not one of `call`, `record`, `phone`, `extension`.
    UnknownEvent(String),
    /// `status` is not allowed for this `event`.
    UnknownStatus {
        /// The event kind.
        event: EventKind,
        /// The status found.
        status: String,
    },
    /// A Level 3 event without `childSid`.
    MissingChildSid,
    /// `timestamp` is negative or not an integer.
    BadTimestamp,
}

/// All the rules an event breaks (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ValidationErrorKind::*;
        write!(f, "`{}`: ", self.key)?;
        match &self.kind {
            NotAnObject(why) => write!(f, "not a JSON object: {why}"),
            Missing => f.write_str("missing"),
            Unknown => f.write_str("not a Generic Event key"),
            WrongType { expected } => write!(f, "must be {expected}"),
            BadUuid(s) => write!(f, "{s:?} is not a UUID"),
            UnknownType(s) => write!(f, "{s:?} is not a type (expected \"voice\")"),
            UnknownEvent(s) => write!(f, "{s:?} is not an event (call, record, phone, extension)"),
            UnknownStatus { event, status } => {
                let allowed: Vec<&str> = Status::allowed_for(*event).iter().map(|s| s.as_str()).collect();
                write!(f, "{status:?} is not a status of a {event} event (allowed: {})", allowed.join(", "))
            }
            MissingChildSid => f.write_str("a Level 3 event needs a childSid"),
            BadTimestamp => f.write_str("must be a non-negative integer of milliseconds"),
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            e.fmt(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Parses and validates one event from JSON bytes.
pub fn validate_json(bytes: &[u8]) -> Result<GenericEvent, ValidationErrors> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ValidationErrors(vec![ValidationError {
            key: "$".into(),
            kind: ValidationErrorKind::NotAnObject(e.to_string()),
        }])
    })?;
    validate_value(&value)
}

/// Validates one event given as a JSON value, and returns it typed.
pub fn validate_value(value: &Value) -> Result<GenericEvent, ValidationErrors> {
    let Some(obj) = value.as_object() else {
        return Err(ValidationErrors(vec![ValidationError {
            key: "$".into(),
            kind: ValidationErrorKind::NotAnObject(format!("found {}", json_type(value))),
        }]));
    };
    let mut errors = Vec::new();
    check_object(obj, &mut errors);
    if !errors.is_empty() {
        return Err(ValidationErrors(errors));
    }
    // Every key now has the right JSON type and every enum a known value, so serde agrees.
    let event: GenericEvent = serde_json::from_value(value.clone()).map_err(|e| {
        ValidationErrors(vec![ValidationError {
            key: "$".into(),
            kind: ValidationErrorKind::NotAnObject(e.to_string()),
        }])
    })?;
    event.validate()?;
    Ok(event)
}

pub(crate) fn check_typed(event: &GenericEvent) -> Result<(), ValidationErrors> {
    let mut errors = Vec::new();
    if !Status::allowed_for(event.event).contains(&event.status) {
        errors.push(ValidationError {
            key: "status".into(),
            kind: ValidationErrorKind::UnknownStatus { event: event.event, status: event.status.as_str().into() },
        });
    }
    if event.level() == Level::Pbx && event.child_sid.is_none() {
        errors.push(ValidationError { key: "childSid".into(), kind: ValidationErrorKind::MissingChildSid });
    }
    if errors.is_empty() { Ok(()) } else { Err(ValidationErrors(errors)) }
}

fn check_object(obj: &Map<String, Value>, errors: &mut Vec<ValidationError>) {
    let mut err = |key: &str, kind| errors.push(ValidationError { key: key.into(), kind });
    for key in obj.keys() {
        if !KEYS.contains(&key.as_str()) {
            err(key, ValidationErrorKind::Unknown);
        }
    }
    for key in KEYS {
        let Some(v) = obj.get(key) else {
            err(key, ValidationErrorKind::Missing);
            continue;
        };
        match key {
            "accountId" => match v.as_str() {
                Some(s) => check_uuid(key, s, &mut err),
                None => err(key, ValidationErrorKind::WrongType { expected: "a UUID string" }),
            },
            "parentCallSid" | "callSid" | "childSid" => match v {
                Value::Null => {}
                Value::String(s) => check_uuid(key, s, &mut err),
                _ => err(key, ValidationErrorKind::WrongType { expected: "a UUID string or null" }),
            },
            "accountName" | "from" | "to" => {
                if !v.is_string() {
                    err(key, ValidationErrorKind::WrongType { expected: "a string" });
                }
            }
            "extension" => {
                if !(v.is_string() || v.is_null()) {
                    err(key, ValidationErrorKind::WrongType { expected: "a string or null" });
                }
            }
            "type" => match v.as_str() {
                Some("voice") => {}
                Some(other) => err(key, ValidationErrorKind::UnknownType(other.into())),
                None => err(key, ValidationErrorKind::WrongType { expected: "a string" }),
            },
            "event" => match v.as_str() {
                Some(s) if EventKind::parse(s).is_some() => {}
                Some(other) => err(key, ValidationErrorKind::UnknownEvent(other.into())),
                None => err(key, ValidationErrorKind::WrongType { expected: "a string" }),
            },
            "status" => match (v.as_str(), obj.get("event").and_then(Value::as_str).and_then(EventKind::parse)) {
                (None, _) => err(key, ValidationErrorKind::WrongType { expected: "a string" }),
                (Some(s), Some(kind)) => match Status::parse(s) {
                    Some(st) if Status::allowed_for(kind).contains(&st) => {}
                    _ => err(key, ValidationErrorKind::UnknownStatus { event: kind, status: s.into() }),
                },
                // An unknown event kind is reported under `event`.
                (Some(_), None) => {}
            },
            "meta" => match v.as_object() {
                Some(meta) => {
                    for (k, mv) in meta {
                        if !mv.is_string() {
                            err(&format!("meta.{k}"), ValidationErrorKind::WrongType { expected: "a string" });
                        }
                    }
                }
                None => err(key, ValidationErrorKind::WrongType { expected: "an object of strings" }),
            },
            "timestamp" => {
                if v.as_u64().is_none() {
                    err(key, ValidationErrorKind::BadTimestamp);
                }
            }
            _ => unreachable!("every key of KEYS is matched"),
        }
    }
}

fn check_uuid(key: &str, s: &str, err: &mut impl FnMut(&str, ValidationErrorKind)) {
    // The hyphenated form only: the platform never sends braced, URN or simple forms.
    if s.len() != 36 || Uuid::try_parse(s).is_err() {
        err(key, ValidationErrorKind::BadUuid(s.into()));
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
