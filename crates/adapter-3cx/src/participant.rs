//! The Call Control participant object and the snapshot (`GET /callcontrol`), read leniently.
//!
//! 3CX documents a handful of participant fields in its own TypeScript types; the V20 Update 4
//! capture (`testdata/samples/3cx/callcontrol_participant_v20_ringing_inbound.json`) has more
//! (`party_did`, `originated_by_*`, `referred_by_*`, `on_behalf_of_*`), and field names have
//! drifted between updates before. So every field is optional, unknown fields are ignored, and
//! a field of an unexpected JSON type (a number where a string was expected, or the reverse)
//! is read as well as it can be instead of failing the whole object: one odd field must not
//! cost us the call.
//!
//! ```
//! use adapter_3cx::participant::{Participant, Status};
//!
//! let p = Participant::from_json(br#"{"id":8106,"status":"Ringing","dn":"150","callid":"1264","new_field":[1]}"#).unwrap();
//! assert_eq!(p.id, Some(8106));
//! assert_eq!(p.status, Some(Status::Ringing));
//! assert_eq!(p.callid, Some(1264), "a number sent as a string is still a number");
//! ```

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// A participant: one leg of a call on one monitored DN (`/callcontrol/{dn}/participants/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// The participant id (the last segment of its entity path).
    #[serde(default, deserialize_with = "lenient_int")]
    pub id: Option<i64>,
    /// `Dialing`, `Ringing` or `Connected`.
    #[serde(default, deserialize_with = "lenient_status")]
    pub status: Option<Status>,
    /// The monitored DN this participant lives on (`"150"`).
    #[serde(default, deserialize_with = "lenient_string")]
    pub dn: Option<String>,
    /// The other party's name; for an external caller without a name, its number.
    #[serde(default, deserialize_with = "lenient_string")]
    pub party_caller_name: Option<String>,
    /// The other party's DN; for a trunk call, the trunk's DN.
    #[serde(default, deserialize_with = "lenient_string")]
    pub party_dn: Option<String>,
    /// The other party's number.
    #[serde(default, deserialize_with = "lenient_string")]
    pub party_caller_id: Option<String>,
    /// The DID of an inbound call (empty in the captures).
    #[serde(default, deserialize_with = "lenient_string")]
    pub party_did: Option<String>,
    /// The SIP contact of the device handling the leg.
    #[serde(default, deserialize_with = "lenient_string")]
    pub device_id: Option<String>,
    /// The other party's DN type: `Wexternalline` (a trunk), `Wextension`, `Wroutepoint`, ….
    #[serde(default, deserialize_with = "lenient_string")]
    pub party_dn_type: Option<String>,
    /// The device can be answered remotely.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub direct_control: Option<bool>,
    /// Where the leg was routed from (`"ROUTER"`).
    #[serde(default, deserialize_with = "lenient_string")]
    pub originated_by_dn: Option<String>,
    /// Its DN type (`"Wroutepoint"`, `"None"`).
    #[serde(default, deserialize_with = "lenient_string")]
    pub originated_by_type: Option<String>,
    /// The DN that transferred the call here.
    #[serde(default, deserialize_with = "lenient_string")]
    pub referred_by_dn: Option<String>,
    /// Its DN type.
    #[serde(default, deserialize_with = "lenient_string")]
    pub referred_by_type: Option<String>,
    /// The queue or ring group this leg rings for.
    #[serde(default, deserialize_with = "lenient_string")]
    pub on_behalf_of_dn: Option<String>,
    /// Its DN type.
    #[serde(default, deserialize_with = "lenient_string")]
    pub on_behalf_of_type: Option<String>,
    /// The PBX call id shared by every leg of one call.
    #[serde(default, deserialize_with = "lenient_int")]
    pub callid: Option<i64>,
    /// The leg number within the call.
    #[serde(default, deserialize_with = "lenient_int")]
    pub legid: Option<i64>,
}

/// A participant's status. 3CX documents exactly three; anything else is kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Status {
    /// The device places an outbound call.
    Dialing,
    /// The device is alerting.
    Ringing,
    /// The device is in the call.
    Connected,
    /// A status 3CX does not document (kept, treated as "no change").
    Other(String),
}

impl Status {
    /// Reads a status, case-insensitively.
    pub fn parse(s: &str) -> Status {
        if s.eq_ignore_ascii_case("Connected") {
            Status::Connected
        } else if s.eq_ignore_ascii_case("Ringing") {
            Status::Ringing
        } else if s.eq_ignore_ascii_case("Dialing") || s.eq_ignore_ascii_case("Dialling") {
            Status::Dialing
        } else {
            Status::Other(s.to_owned())
        }
    }

    /// The spelling 3CX uses.
    pub fn as_str(&self) -> &str {
        match self {
            Status::Dialing => "Dialing",
            Status::Ringing => "Ringing",
            Status::Connected => "Connected",
            Status::Other(s) => s,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Status, D::Error> {
        Ok(lenient_string(d)?.map_or_else(|| Status::Other(String::new()), |s| Status::parse(&s)))
    }
}

/// Why a participant body could not be read at all (not a JSON object, or too large).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParticipantError {
    /// The body is not a JSON object.
    #[error("not a participant object: {0}")]
    Json(String),
    /// The body is larger than allowed.
    #[error("participant body of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl Participant {
    /// Reads a participant body (`GET /callcontrol/{dn}/participants/{id}`).
    pub fn from_json(body: &[u8]) -> Result<Participant, ParticipantError> {
        // serde would also read a struct from an array; a participant is an object.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ParticipantError::Json("expected a JSON object".into()));
        }
        serde_json::from_slice(body).map_err(|e| ParticipantError::Json(e.to_string()))
    }

    /// [`Participant::from_json`] with a size limit.
    pub fn from_json_bounded(body: &[u8], max: usize) -> Result<Participant, ParticipantError> {
        if body.len() > max {
            return Err(ParticipantError::TooLarge { len: body.len(), max });
        }
        Participant::from_json(body)
    }

    /// The party is a trunk (an external number).
    pub fn party_is_external(&self) -> bool {
        self.party_dn_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("Wexternalline"))
    }

    /// The party is an extension.
    pub fn party_is_extension(&self) -> bool {
        self.party_dn_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("Wextension"))
    }

    /// The queue or ring group this leg rings for, if any.
    pub fn queue(&self) -> Option<&str> {
        let dn = nonempty(self.on_behalf_of_dn.as_deref())?;
        let t = self.on_behalf_of_type.as_deref().unwrap_or("");
        // `None` is how 3CX spells "no type"; a DN with that type is no queue.
        (!t.eq_ignore_ascii_case("None")).then_some(dn)
    }

    /// The DN that transferred this leg here, if any.
    pub fn referred_by(&self) -> Option<&str> {
        nonempty(self.referred_by_dn.as_deref())
    }
}

/// `Some(s)` unless empty or whitespace.
pub fn nonempty(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// One DN of the snapshot (`GET /callcontrol`): `{dn, type, devices[], participants[]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnInfo {
    /// The DN.
    pub dn: String,
    /// Its type (`Wextension`, `Wroutepoint`, …), where given.
    pub dn_type: Option<String>,
    /// Its live participants.
    pub participants: Vec<Participant>,
}

impl DnInfo {
    /// The DN is a route point (an API client's own DN).
    pub fn is_route_point(&self) -> bool {
        self.dn_type.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("Wroutepoint"))
    }
}

/// The snapshot could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read the /callcontrol snapshot: {0}")]
pub struct SnapshotError(pub String);

/// Reads the snapshot: an array of `DNInfo` (a single object is accepted too). Entries that are
/// not objects, and participants that are not objects, are skipped and counted in the second
/// value; a DN without a `dn` is skipped likewise.
pub fn parse_snapshot(body: &[u8]) -> Result<(Vec<DnInfo>, usize), SnapshotError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| SnapshotError(e.to_string()))?;
    let entries = match value {
        serde_json::Value::Array(a) => a,
        obj @ serde_json::Value::Object(_) => vec![obj],
        _ => return Err(SnapshotError("expected an array of DNs".into())),
    };
    let mut skipped = 0;
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let serde_json::Value::Object(mut map) = entry else {
            skipped += 1;
            continue;
        };
        let dn = map.remove("dn").and_then(value_string);
        let Some(dn) = dn.filter(|d| !d.is_empty()) else {
            skipped += 1;
            continue;
        };
        let dn_type = map.remove("type").and_then(value_string);
        let mut participants = Vec::new();
        if let Some(serde_json::Value::Array(ps)) = map.remove("participants") {
            for p in ps {
                match Participant::deserialize(p) {
                    Ok(p) => participants.push(p),
                    Err(_) => skipped += 1,
                }
            }
        }
        out.push(DnInfo { dn, dn_type, participants });
    }
    Ok((out, skipped))
}

fn value_string(v: serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A string field: strings as they are, numbers and booleans as text, anything else (null,
/// objects, arrays) as absent.
pub fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(Lenient::<String>::new())
}

/// An integer field: integers, and strings that hold one; anything else is absent.
pub fn lenient_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_any(Lenient::<i64>::new())
}

/// A boolean field: booleans, `"true"`/`"false"`, 0/1; anything else is absent.
pub fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    d.deserialize_any(Lenient::<bool>::new())
}

fn lenient_status<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Status>, D::Error> {
    Ok(lenient_string(d)?.map(|s| Status::parse(&s)))
}

/// What a lenient field turns each JSON shape into.
trait FromLoose: Sized {
    const EXPECTING: &'static str;
    fn from_str(s: &str) -> Option<Self>;
    fn from_i64(n: i64) -> Option<Self>;
    fn from_u64(n: u64) -> Option<Self>;
    fn from_f64(n: f64) -> Option<Self>;
    fn from_bool(b: bool) -> Option<Self>;
}

impl FromLoose for String {
    const EXPECTING: &'static str = "a string";
    fn from_str(s: &str) -> Option<String> {
        Some(s.to_owned())
    }
    fn from_i64(n: i64) -> Option<String> {
        Some(n.to_string())
    }
    fn from_u64(n: u64) -> Option<String> {
        Some(n.to_string())
    }
    fn from_f64(n: f64) -> Option<String> {
        Some(n.to_string())
    }
    fn from_bool(b: bool) -> Option<String> {
        Some(b.to_string())
    }
}

impl FromLoose for i64 {
    const EXPECTING: &'static str = "an integer";
    fn from_str(s: &str) -> Option<i64> {
        s.trim().parse().ok()
    }
    fn from_i64(n: i64) -> Option<i64> {
        Some(n)
    }
    fn from_u64(n: u64) -> Option<i64> {
        i64::try_from(n).ok()
    }
    fn from_f64(n: f64) -> Option<i64> {
        // Only whole numbers in range; `as` would saturate silently.
        (n.fract() == 0.0 && n.abs() < 9.0e15).then_some(n as i64)
    }
    fn from_bool(_: bool) -> Option<i64> {
        None
    }
}

impl FromLoose for bool {
    const EXPECTING: &'static str = "a boolean";
    fn from_str(s: &str) -> Option<bool> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("true") || s == "1" {
            Some(true)
        } else if s.eq_ignore_ascii_case("false") || s == "0" {
            Some(false)
        } else {
            None
        }
    }
    fn from_i64(n: i64) -> Option<bool> {
        match n {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    fn from_u64(n: u64) -> Option<bool> {
        i64::try_from(n).ok().and_then(bool::from_i64)
    }
    fn from_f64(_: f64) -> Option<bool> {
        None
    }
    fn from_bool(b: bool) -> Option<bool> {
        Some(b)
    }
}

struct Lenient<T>(std::marker::PhantomData<T>);

impl<T> Lenient<T> {
    fn new() -> Lenient<T> {
        Lenient(std::marker::PhantomData)
    }
}

impl<'de, T: FromLoose> Visitor<'de> for Lenient<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<T>, E> {
        Ok(T::from_str(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<T>, E> {
        Ok(T::from_i64(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<T>, E> {
        Ok(T::from_u64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Option<T>, E> {
        Ok(T::from_f64(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Option<T>, E> {
        Ok(T::from_bool(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<T>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests unwrap what they built themselves.
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::testdata;

    #[test]
    fn the_v20_capture_reads_completely() {
        let p = Participant::from_json(testdata::PARTICIPANT_RINGING.as_bytes()).unwrap();
        assert_eq!(
            p,
            Participant {
                id: Some(8106),
                status: Some(Status::Ringing),
                dn: Some("150".into()),
                party_caller_name: Some("+49123456789".into()),
                party_dn: Some("10007".into()),
                party_caller_id: Some("0123456789".into()),
                party_did: Some(String::new()),
                device_id: Some("sip:150@127.0.0.1:5483;rinstance=c2a75fd2f1caea71".into()),
                party_dn_type: Some("Wexternalline".into()),
                direct_control: Some(false),
                originated_by_dn: Some("ROUTER".into()),
                originated_by_type: Some("Wroutepoint".into()),
                referred_by_dn: Some(String::new()),
                referred_by_type: Some("None".into()),
                on_behalf_of_dn: Some(String::new()),
                on_behalf_of_type: Some("None".into()),
                callid: Some(1264),
                legid: Some(4),
            }
        );
        assert!(p.party_is_external());
        assert_eq!(p.queue(), None);
        assert_eq!(p.referred_by(), None);
    }

    #[test]
    fn the_body_inside_the_debug_log_line_is_the_same_participant() {
        // The qmex bridge logged the GET body as a JSON string inside its own log line.
        let line: serde_json::Value = serde_json::from_str(testdata::WS_DEBUGLOG.trim()).unwrap();
        let body = line["entity"].as_str().unwrap();
        let p = Participant::from_json(body.as_bytes()).unwrap();
        assert_eq!(p, Participant::from_json(testdata::PARTICIPANT_RINGING.as_bytes()).unwrap());
        assert_eq!(line["event_type"], 0);
        assert_eq!(line["sequence"], 15);
    }

    #[test]
    fn odd_types_and_unknown_fields_do_not_cost_the_object() {
        let p = Participant::from_json(
            br#"{"id":"7","status":"connected","dn":150,"callid":12.0,"legid":{"x":1},
                 "direct_control":"true","party_caller_name":null,"extra":{"deep":[1,2,{"a":null}]}}"#,
        )
        .unwrap();
        assert_eq!(p.id, Some(7));
        assert_eq!(p.status, Some(Status::Connected));
        assert_eq!(p.dn.as_deref(), Some("150"));
        assert_eq!(p.callid, Some(12));
        assert_eq!(p.legid, None);
        assert_eq!(p.direct_control, Some(true));
        assert_eq!(p.party_caller_name, None);
        assert_eq!(Participant::from_json(b"{}").unwrap(), Participant::default());
        assert_eq!(
            Participant::from_json(br#"{"status":"OnHold"}"#).unwrap().status,
            Some(Status::Other("OnHold".into()))
        );
    }

    #[test]
    fn what_is_not_an_object_is_an_error() {
        assert!(Participant::from_json(b"[1,2]").is_err());
        assert!(Participant::from_json(b"{\"id\":").is_err());
        assert!(Participant::from_json(b"").is_err());
        assert!(matches!(Participant::from_json_bounded(b"{}", 1), Err(ParticipantError::TooLarge { len: 2, max: 1 })));
    }

    #[test]
    fn queue_and_transfer_fields() {
        let p = Participant::from_json(
            br#"{"on_behalf_of_dn":"800","on_behalf_of_type":"Wqueue","referred_by_dn":"101","referred_by_type":"Wextension"}"#,
        )
        .unwrap();
        assert_eq!(p.queue(), Some("800"));
        assert_eq!(p.referred_by(), Some("101"));
        let none = Participant::from_json(br#"{"on_behalf_of_dn":"800","on_behalf_of_type":"None"}"#).unwrap();
        assert_eq!(none.queue(), None);
    }

    #[test]
    fn snapshots_skip_what_they_cannot_read() {
        let body = br#"[
            {"dn":"150","type":"Wextension","devices":[],"participants":[{"id":1,"status":"Ringing","callid":5},7]},
            {"dn":"ROUTER","type":"Wroutepoint","participants":[]},
            {"type":"Wextension"},
            "junk"
        ]"#;
        let (dns, skipped) = parse_snapshot(body).unwrap();
        assert_eq!(skipped, 3);
        assert_eq!(dns.len(), 2);
        assert_eq!(dns[0].dn, "150");
        assert_eq!(dns[0].participants.len(), 1);
        assert!(dns[1].is_route_point());
        assert!(parse_snapshot(b"7").is_err());
        assert!(parse_snapshot(b"[").is_err());
    }

    fn arb_opt_string() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("[ -~]{0,12}")
    }

    prop_compose! {
        fn arb_participant()(
            id in proptest::option::of(any::<i64>()),
            status in proptest::option::of(prop_oneof![
                Just(Status::Dialing), Just(Status::Ringing), Just(Status::Connected),
                "[A-Z][a-z]{2,8}".prop_map(|s| Status::parse(&s)),
            ]),
            dn in arb_opt_string(),
            names in proptest::collection::vec(arb_opt_string(), 12),
            direct_control in proptest::option::of(any::<bool>()),
            callid in proptest::option::of(any::<i64>()),
            legid in proptest::option::of(any::<i64>()),
        ) -> Participant {
            let mut n = names.into_iter();
            let mut next = || n.next().flatten();
            Participant {
                id, status, dn,
                party_caller_name: next(), party_dn: next(), party_caller_id: next(), party_did: next(),
                device_id: next(), party_dn_type: next(), direct_control,
                originated_by_dn: next(), originated_by_type: next(), referred_by_dn: next(),
                referred_by_type: next(), on_behalf_of_dn: next(), on_behalf_of_type: next(),
                callid, legid,
            }
        }
    }

    proptest! {
        /// What we serialise reads back as itself (the reader loses nothing 3CX could send).
        #[test]
        fn participants_round_trip(p in arb_participant()) {
            let json = serde_json::to_vec(&p).unwrap();
            prop_assert_eq!(Participant::from_json(&json).unwrap(), p);
        }

        /// Any JSON object reads without error, whatever its fields hold.
        #[test]
        fn any_object_reads(fields in proptest::collection::btree_map("[a-z_]{1,20}", arb_json(), 0..20)) {
            let json = serde_json::to_vec(&fields).unwrap();
            prop_assert!(Participant::from_json(&json).is_ok());
        }

        /// Arbitrary bytes never panic.
        #[test]
        fn bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Participant::from_json(&bytes);
            let _ = parse_snapshot(&bytes);
        }
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| serde_json::Value::Number(n.into())),
            any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(serde_json::Value::Number)),
            "[ -~]{0,10}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map("[a-z]{1,5}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
