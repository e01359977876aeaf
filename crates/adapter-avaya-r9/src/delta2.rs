//! Delta2 records from a DevLink relay: one line → [`Delta2Line`].
//!
//! The DevLink DLL hands a Windows program comma-separated `CALL:` strings (protocol notes
//! §5); the relay (`docs/pbx/avaya-ip-office-r9.md` specifies its line protocol) forwards
//! each as one line and adds `RELAY:` lines about its own link to the IP Office:
//!
//! ```text
//! CALL: S <A id>,<B id>,<A state>,<B state>,… 50 fields
//! CALL: D <A id>,<B id>,<CallID>          the call is over
//! CALL: A <A id>,<B id>,<CallID>          A and B swapped (unpark, transfer, parked party left)
//! RELAY: COMMS <0|1|2|3> [<missed>]       the DLL's link state (0 operational, 3 packets missed)
//! RELAY: SNAPSHOT END                     every live call has been re-sent after connecting
//! ```
//!
//! `CALL:S` without the space is accepted too (a C# wrapper matches it). Numbers are ASCII
//! integers; strings have no quoting, so a name containing a comma shifts the later fields: a
//! status record with more than 50 fields keeps its first 8 fields and takes its CallID from
//! the last field, and its text fields are dropped rather than misread.

/// The number of fields of a status record.
pub const STATUS_FIELDS: usize = 50;

/// Call end states (fields 3 and 4) [AV].
pub mod state {
    /// No B end.
    pub const IDLE: u32 = 0;
    /// Alerting.
    pub const RINGING: u32 = 1;
    /// Talking.
    pub const CONNECTED: u32 = 2;
    /// Gone.
    pub const DISCONNECTED: u32 = 3;
    /// Waiting in a queue.
    pub const QUEUED: u32 = 10;
    /// Parked.
    pub const PARKED: u32 = 11;
    /// On hold.
    pub const HELD: u32 = 12;
}

/// Cause codes (field 25) the tracker reads [3P wrapper enum].
pub mod cause {
    /// Busy.
    pub const BUSY: u32 = 17;
    /// Rang out.
    pub const NO_USER_RESPONDING: u32 = 18;
    /// Rejected.
    pub const CALL_REJECTED: u32 = 21;
    /// Parked.
    pub const PARKED: u32 = 117;
    /// Unparked.
    pub const UNPARKED: u32 = 118;
    /// Picked up.
    pub const PICKUP: u32 = 119;
    /// Forwarded to voicemail.
    pub const FORWARD_TO_VOICEMAIL: u32 = 123;
    /// Answered by another device.
    pub const ANSWERED_BY_OTHER: u32 = 124;
    /// Transferred.
    pub const TRANSFER: u32 = 126;
}

/// One line of the relay feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta2Line<'a> {
    /// `CALL: S`.
    Status(Status<'a>),
    /// `CALL: D`: the call is over.
    Deleted(Ids<'a>),
    /// `CALL: A`: the A and B ends swapped.
    Swapped(Ids<'a>),
    /// `RELAY: COMMS`: the DLL's link to the IP Office.
    Comms {
        /// 0 operational, 1 no response, 2 rejected, 3 missed packets.
        state: u32,
        /// Packets missed (state 3).
        missed: u64,
    },
    /// `RELAY: SNAPSHOT END`.
    SnapshotEnd,
}

/// The ids of a `D` or `A` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids<'a> {
    /// A end call id.
    pub a: &'a str,
    /// B end call id.
    pub b: &'a str,
    /// The unique CallID.
    pub call_id: &'a str,
}

/// A `CALL: S` record: the fields by position (1-based in the documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status<'a> {
    fields: Vec<&'a str>,
    /// Whether text fields are trustworthy (not when the record had more than 50 fields).
    aligned: bool,
}

impl<'a> Status<'a> {
    /// Field `n` (1-based), empty when absent.
    pub fn field(&self, n: usize) -> &'a str {
        if !self.aligned && n > 8 && n != STATUS_FIELDS {
            return "";
        }
        if !self.aligned && n == STATUS_FIELDS {
            return self.fields.last().copied().unwrap_or("");
        }
        self.fields.get(n - 1).copied().unwrap_or("")
    }

    fn number(&self, n: usize) -> u32 {
        self.field(n).parse().unwrap_or(0)
    }

    /// 1: A end call id.
    pub fn a_id(&self) -> &'a str {
        self.field(1)
    }
    /// 2: B end call id (`0` or empty when there is no B).
    pub fn b_id(&self) -> &'a str {
        self.field(2)
    }
    /// 3: A state.
    pub fn a_state(&self) -> u32 {
        self.number(3)
    }
    /// 4: B state (0 when there is no B).
    pub fn b_state(&self) -> u32 {
        self.number(4)
    }
    /// 6: A hears music on hold.
    pub fn a_music(&self) -> bool {
        self.number(6) != 0
    }
    /// 8: B hears music on hold.
    pub fn b_music(&self) -> bool {
        self.number(8) != 0
    }
    /// 9: A name (`Name (Number)` for an extension, `Line n` for a trunk).
    pub fn a_name(&self) -> &'a str {
        self.field(9)
    }
    /// 10: B name.
    pub fn b_name(&self) -> &'a str {
        self.field(10)
    }
    /// 11: possible B targets, `;`-separated (truncated after 4).
    pub fn b_list(&self) -> impl Iterator<Item = &'a str> {
        self.field(11).split(';').map(str::trim).filter(|s| !s.is_empty())
    }
    /// 15: called party number.
    pub fn called_number(&self) -> &'a str {
        self.field(15)
    }
    /// 17: calling party number.
    pub fn calling_number(&self) -> &'a str {
        self.field(17)
    }
    /// 21: dialled party number.
    pub fn dialled_number(&self) -> &'a str {
        self.field(21)
    }
    /// 25: cause.
    pub fn cause(&self) -> u32 {
        self.number(25)
    }
    /// 29: owner hunt group name (where queued).
    pub fn owner_hunt_group(&self) -> &'a str {
        self.field(29)
    }
    /// 35: internal call.
    pub fn is_internal(&self) -> bool {
        self.number(35) != 0
    }
    /// 42: park slot number.
    pub fn park_slot(&self) -> &'a str {
        self.field(42)
    }
    /// 50: the unique CallID.
    pub fn call_id(&self) -> &'a str {
        self.field(STATUS_FIELDS)
    }
    /// How many fields the record had.
    pub fn len(&self) -> usize {
        self.fields.len()
    }
    /// Whether it had no field (never, for a parsed record).
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// Why a relay line is not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Delta2Error {
    /// Not `CALL:` or `RELAY:`.
    #[error("not a Delta2 record (expected \"CALL: S|D|A\" or \"RELAY:\")")]
    NotARecord,
    /// `CALL:` with another letter.
    #[error("unknown Delta2 record type {0:?}")]
    UnknownType(char),
    /// Too few fields.
    #[error("{kind} record with {got} fields, at least {want} expected")]
    TooFewFields {
        /// `S`, `D`, `A`.
        kind: char,
        /// Fields found.
        got: usize,
        /// Fields needed.
        want: usize,
    },
    /// A relay line we do not know.
    #[error("unknown relay line")]
    UnknownRelayLine,
}

impl Delta2Error {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Delta2Error::NotARecord => "not-a-record",
            Delta2Error::UnknownType(_) => "unknown-type",
            Delta2Error::TooFewFields { .. } => "too-few-fields",
            Delta2Error::UnknownRelayLine => "unknown-relay-line",
        }
    }
}

/// Parses one relay line (UTF-8 text, terminator removed).
pub fn parse(line: &str) -> Result<Delta2Line<'_>, Delta2Error> {
    let line = line.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    if let Some(rest) = strip_prefix_ci(line, "RELAY:") {
        let mut words = rest.split_whitespace();
        return match (words.next().map(str::to_ascii_uppercase).as_deref(), words.next(), words.next()) {
            (Some("COMMS"), Some(state), missed) => Ok(Delta2Line::Comms {
                state: state.parse().map_err(|_| Delta2Error::UnknownRelayLine)?,
                missed: missed.and_then(|m| m.parse().ok()).unwrap_or(0),
            }),
            (Some("SNAPSHOT"), Some(end), None) if end.eq_ignore_ascii_case("END") => Ok(Delta2Line::SnapshotEnd),
            _ => Err(Delta2Error::UnknownRelayLine),
        };
    }
    let rest = strip_prefix_ci(line, "CALL:").ok_or(Delta2Error::NotARecord)?;
    let rest = rest.trim_start();
    let mut chars = rest.chars();
    let kind = chars.next().ok_or(Delta2Error::NotARecord)?.to_ascii_uppercase();
    let body = chars.as_str().trim_start();
    let fields: Vec<&str> = body.split(',').map(str::trim).collect();
    match kind {
        'S' => {
            if fields.len() < 8 {
                return Err(Delta2Error::TooFewFields { kind, got: fields.len(), want: 8 });
            }
            let aligned = fields.len() <= STATUS_FIELDS;
            Ok(Delta2Line::Status(Status { fields, aligned }))
        }
        'D' | 'A' => {
            if fields.len() < 3 {
                return Err(Delta2Error::TooFewFields { kind, got: fields.len(), want: 3 });
            }
            let ids = Ids { a: fields[0], b: fields[1], call_id: fields[2] };
            Ok(if kind == 'D' { Delta2Line::Deleted(ids) } else { Delta2Line::Swapped(ids) })
        }
        other => Err(Delta2Error::UnknownType(other)),
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// What a Delta2 end name says the device is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndDevice {
    /// `Name (Number)`: an extension.
    Extension(String),
    /// `Line n`: a trunk.
    Trunk,
    /// `VM …` / `Voicemail …`: a voicemail channel.
    Voicemail,
    /// Anything else, or nothing.
    Other,
}

/// Reads an end name: `Name (Number)` is an extension, `Line …` a trunk, `VM…` voicemail; a
/// bare number (as B-list entries may be written) is an extension.
pub fn end_device(name: &str) -> EndDevice {
    let name = name.trim();
    if let Some(open) = name.rfind('(')
        && let Some(inner) = name[open + 1..].strip_suffix(')')
        && !inner.is_empty()
        && inner.bytes().all(|b| b.is_ascii_digit())
    {
        return EndDevice::Extension(inner.to_owned());
    }
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("line") {
        EndDevice::Trunk
    } else if lower.starts_with("vm") || lower.starts_with("voicemail") {
        EndDevice::Voicemail
    } else if !name.is_empty() && name.len() <= 8 && name.bytes().all(|b| b.is_ascii_digit()) {
        EndDevice::Extension(name.to_owned())
    } else {
        EndDevice::Other
    }
}

/// Builds a `CALL: S` line from `(field number, value)` pairs (the rest empty, numbers `0` for
/// the state fields): for the simulator, tests and benchmarks.
pub fn status_line(values: &[(usize, &str)]) -> String {
    let mut fields = vec![""; STATUS_FIELDS];
    for n in [1, 2, 3, 4, 5, 6, 7, 8, 24, 25, 35] {
        fields[n - 1] = "0";
    }
    for (n, v) in values {
        if (1..=STATUS_FIELDS).contains(n) {
            fields[n - 1] = v;
        }
    }
    format!("CALL: S {}", fields.join(","))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn status_delete_swap_with_and_without_the_space() {
        let s =
            status_line(&[(1, "101"), (2, "102"), (3, "2"), (4, "1"), (9, "Line 5"), (10, "Alice (4001)"), (50, "77")]);
        let Delta2Line::Status(st) = parse(&s).unwrap() else { panic!() };
        assert_eq!((st.a_id(), st.b_id(), st.a_state(), st.b_state(), st.call_id()), ("101", "102", 2, 1, "77"));
        assert_eq!(end_device(st.b_name()), EndDevice::Extension("4001".into()));
        assert_eq!(end_device(st.a_name()), EndDevice::Trunk);
        let compact = s.replacen("CALL: S ", "CALL:S", 1);
        assert_eq!(parse(&compact).unwrap(), parse(&s).unwrap());
        assert_eq!(
            parse("CALL: D 101,102,77").unwrap(),
            Delta2Line::Deleted(Ids { a: "101", b: "102", call_id: "77" })
        );
        assert_eq!(parse("call:a 1,2,3\r").unwrap(), Delta2Line::Swapped(Ids { a: "1", b: "2", call_id: "3" }));
    }

    #[test]
    fn relay_lines() {
        assert_eq!(parse("RELAY: COMMS 0").unwrap(), Delta2Line::Comms { state: 0, missed: 0 });
        assert_eq!(parse("RELAY: COMMS 3 12").unwrap(), Delta2Line::Comms { state: 3, missed: 12 });
        assert_eq!(parse("RELAY: SNAPSHOT END").unwrap(), Delta2Line::SnapshotEnd);
        assert_eq!(parse("RELAY: HELLO").unwrap_err(), Delta2Error::UnknownRelayLine);
    }

    #[test]
    fn malformed_lines() {
        assert_eq!(parse("hello").unwrap_err().kind(), "not-a-record");
        assert_eq!(parse("CALL: X 1,2").unwrap_err().kind(), "unknown-type");
        assert_eq!(parse("CALL: S 1,2,3").unwrap_err().kind(), "too-few-fields");
        assert_eq!(parse("CALL: D 1").unwrap_err().kind(), "too-few-fields");
        assert_eq!(parse("CALL:").unwrap_err().kind(), "not-a-record");
    }

    #[test]
    fn a_comma_in_a_name_keeps_the_call_id_and_drops_the_text() {
        let s = status_line(&[(1, "1"), (3, "2"), (9, "Smith, John (4001)"), (50, "99")]);
        let Delta2Line::Status(st) = parse(&s).unwrap() else { panic!() };
        assert_eq!(st.len(), 51);
        assert_eq!(st.call_id(), "99");
        assert_eq!(st.a_state(), 2);
        assert_eq!(st.a_name(), "", "misaligned text is not trusted");
    }

    #[test]
    fn end_names() {
        assert_eq!(end_device("4002"), EndDevice::Extension("4002".into()));
        assert_eq!(end_device("VM Channel 1"), EndDevice::Voicemail);
        assert_eq!(end_device(""), EndDevice::Other);
        assert_eq!(end_device("Reception (HG)"), EndDevice::Other);
    }

    proptest! {
        #[test]
        fn arbitrary_lines_never_panic(line in ".{0,300}") {
            let _ = parse(&line);
        }

        #[test]
        fn built_status_lines_read_back(a in 1u32..100_000, state in 0u32..14, id in 1u64..u64::MAX, ext in "[0-9]{3,5}") {
            let name = format!("User {ext} ({ext})");
            let (a_text, state_text, id_text) = (a.to_string(), state.to_string(), id.to_string());
            let line = status_line(&[(1, a_text.as_str()), (4, state_text.as_str()), (10, name.as_str()), (50, id_text.as_str())]);
            let Delta2Line::Status(st) = parse(&line).unwrap() else { panic!() };
            prop_assert_eq!(st.a_id(), a_text.as_str());
            prop_assert_eq!(st.b_state(), state);
            prop_assert_eq!(st.call_id(), id_text.as_str());
            prop_assert_eq!(end_device(st.b_name()), EndDevice::Extension(ext));
        }
    }
}
