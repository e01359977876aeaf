//! The CDR feed: 3CX's call data records over TCP (active or passive socket), one CSV line per
//! call (or call segment), written when the call ends.
//!
//! Two layers, kept apart (framing vs. format):
//!
//! - [`CdrLineCodec`]: newline framing over a byte stream, bounded (`max_line_bytes`); CRLF
//!   or LF; an over-long line is reported once as [`CdrLine::TooLong`] and skipped up to the
//!   next newline, so a scanner's garbage costs one counted item, never the stream;
//! - [`parse_record`]: one line into a [`CdrRecord`], by the **configured field order**
//!   ([`FieldOrder`], default: the 27 legacy fields in 3CX's documented order). Values are read
//!   in both vocabularies, case-insensitively: the legacy one (`TerminatedBySrc`, `Extension`,
//!   `Line`) and the V20 Update 6+ one (`src_participant_terminated`, `extension`,
//!   `external_line`, `parking_orbit`) that some V20 socket feeds mix in.
//!
//! Records borrow from the line (no allocation per field): the CDR path must sustain a
//! million lines a second.
//!
//! ```
//! use adapter_3cx::cdr::{parse_record, FieldOrder, DnType, Termination};
//!
//! let line = "Call 288831,4cc2c72490010000_26808,00:00:25,2024/06/17 05:59:49,2024/06/17 05:59:58,\
//!     2024/06/17 06:00:23,TerminatedBySrc,Ext.10016,+46703014082,10016,10020,+46703014082,,\
//!     +46703014082,10020,default,1,0.43,default,Chain: Ext.10016;+46703014082;,Extension,Line,Line,\
//!     Backup no2,+46703014082,+46703014082,";
//! let r = parse_record(line, &FieldOrder::default()).unwrap();
//! assert_eq!(r.history_id, Some("288831"));
//! assert_eq!(r.call_counter(), Some(26808));
//! assert_eq!(r.termination, Termination::BySource);
//! assert_eq!(r.from_type, DnType::Extension);
//! assert_eq!(r.to_type, DnType::Line);
//! ```

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

/// One framed line, or the fact that one was too long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CdrLine {
    /// A line without its terminator (CR and LF removed), read as UTF-8 (lossily).
    Line(String),
    /// A line longer than the limit was skipped (`bytes` counted up to its newline, or up to
    /// the end of the stream).
    TooLong {
        /// How many bytes were skipped.
        bytes: usize,
    },
}

/// Newline framing, bounded. Never fails: bad input is an item ([`CdrLine::TooLong`]).
#[derive(Debug, Clone)]
pub struct CdrLineCodec {
    max_line_bytes: usize,
    /// Skipping an over-long line: how many bytes so far.
    discarding: Option<usize>,
    /// Where to resume looking for a newline in the buffer.
    scanned: usize,
}

impl CdrLineCodec {
    /// Lines of at most `max_line_bytes` (without the terminator).
    pub fn new(max_line_bytes: usize) -> CdrLineCodec {
        CdrLineCodec { max_line_bytes: max_line_bytes.max(1), discarding: None, scanned: 0 }
    }
}

/// A line's text without the CR of a CRLF terminator.
fn line_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes.strip_suffix(b"\r").unwrap_or(bytes)).into_owned()
}

impl Decoder for CdrLineCodec {
    type Item = CdrLine;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<CdrLine>, std::io::Error> {
        loop {
            let newline = buf[self.scanned..].iter().position(|b| *b == b'\n').map(|i| self.scanned + i);
            match (self.discarding, newline) {
                (Some(skipped), Some(at)) => {
                    buf.advance(at + 1);
                    self.scanned = 0;
                    self.discarding = None;
                    return Ok(Some(CdrLine::TooLong { bytes: skipped + at }));
                }
                (Some(skipped), None) => {
                    self.discarding = Some(skipped + buf.len());
                    buf.clear();
                    self.scanned = 0;
                    return Ok(None);
                }
                (None, Some(at)) => {
                    let line = buf.split_to(at + 1);
                    self.scanned = 0;
                    let content = &line[..at];
                    // The CR of a CRLF is not part of the line's length.
                    let len = content.strip_suffix(b"\r").map_or(content.len(), <[u8]>::len);
                    if len > self.max_line_bytes {
                        return Ok(Some(CdrLine::TooLong { bytes: at }));
                    }
                    if len == 0 {
                        // Blank lines (keepalives, a CRLF split in two) carry nothing.
                        continue;
                    }
                    return Ok(Some(CdrLine::Line(line_text(content))));
                }
                (None, None) => {
                    // +1: a CR may still be followed by its LF.
                    if buf.len() > self.max_line_bytes + 1 {
                        self.discarding = Some(buf.len());
                        buf.clear();
                        self.scanned = 0;
                    } else {
                        self.scanned = buf.len();
                    }
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<CdrLine>, std::io::Error> {
        if let Some(item) = self.decode(buf)? {
            return Ok(Some(item));
        }
        if let Some(skipped) = self.discarding.take() {
            return Ok(Some(CdrLine::TooLong { bytes: skipped }));
        }
        // The connection closed after a record without its newline (one record per
        // connection): the record is complete.
        if buf.is_empty() {
            return Ok(None);
        }
        let rest = buf.split();
        self.scanned = 0;
        let len = rest.strip_suffix(b"\r").map_or(rest.len(), <[u8]>::len);
        if len > self.max_line_bytes {
            return Ok(Some(CdrLine::TooLong { bytes: rest.len() }));
        }
        let text = line_text(&rest);
        if text.is_empty() {
            return Ok(None);
        }
        Ok(Some(CdrLine::Line(text)))
    }
}

/// A CDR field, by its documented name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// `historyid` (`Call 288831`).
    HistoryId,
    /// `callid` (`<hex>_<counter>`).
    CallId,
    /// `duration` (`HH:MM:SS`).
    Duration,
    /// `time-start`.
    TimeStart,
    /// `time-answered` (empty when unanswered).
    TimeAnswered,
    /// `time-end`.
    TimeEnd,
    /// `reason-terminated`.
    ReasonTerminated,
    /// `from-no`.
    FromNo,
    /// `to-no`.
    ToNo,
    /// `from-dn`.
    FromDn,
    /// `to-dn`.
    ToDn,
    /// `dial-no`.
    DialNo,
    /// `reason-changed`.
    ReasonChanged,
    /// `final-number`.
    FinalNumber,
    /// `final-dn`.
    FinalDn,
    /// `bill-code`.
    BillCode,
    /// `bill-rate`.
    BillRate,
    /// `bill-cost`.
    BillCost,
    /// `bill-name`.
    BillName,
    /// `chain` (`Chain: a;b;c;`).
    Chain,
    /// `from-type`.
    FromType,
    /// `to-type`.
    ToType,
    /// `final-type`.
    FinalType,
    /// `from-dispname`.
    FromDispname,
    /// `to-dispname`.
    ToDispname,
    /// `final-dispname`.
    FinalDispname,
    /// `missed-queue-calls`.
    MissedQueueCalls,
    /// A field this adapter does not read (kept so that the positions stay right).
    Ignored(String),
}

/// The 27 legacy fields in 3CX's documented default order.
pub const DEFAULT_FIELDS: [&str; 27] = [
    "historyid",
    "callid",
    "duration",
    "time-start",
    "time-answered",
    "time-end",
    "reason-terminated",
    "from-no",
    "to-no",
    "from-dn",
    "to-dn",
    "dial-no",
    "reason-changed",
    "final-number",
    "final-dn",
    "bill-code",
    "bill-rate",
    "bill-cost",
    "bill-name",
    "chain",
    "from-type",
    "to-type",
    "final-type",
    "from-dispname",
    "to-dispname",
    "final-dispname",
    "missed-queue-calls",
];

impl Field {
    /// A field by name: `time-start`, `time_start` and `TimeStart` are the same field. Unknown
    /// names are [`Field::Ignored`] (3CX may add fields; they are skipped by position).
    pub fn parse(name: &str) -> Field {
        let key: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect();
        match key.as_str() {
            "historyid" => Field::HistoryId,
            "callid" => Field::CallId,
            "duration" => Field::Duration,
            "timestart" => Field::TimeStart,
            "timeanswered" => Field::TimeAnswered,
            "timeend" => Field::TimeEnd,
            "reasonterminated" => Field::ReasonTerminated,
            "fromno" => Field::FromNo,
            "tono" => Field::ToNo,
            "fromdn" => Field::FromDn,
            "todn" => Field::ToDn,
            "dialno" => Field::DialNo,
            "reasonchanged" => Field::ReasonChanged,
            "finalnumber" => Field::FinalNumber,
            "finaldn" => Field::FinalDn,
            "billcode" => Field::BillCode,
            "billrate" => Field::BillRate,
            "billcost" => Field::BillCost,
            "billname" => Field::BillName,
            "chain" => Field::Chain,
            "fromtype" => Field::FromType,
            "totype" => Field::ToType,
            "finaltype" => Field::FinalType,
            "fromdispname" => Field::FromDispname,
            "todispname" => Field::ToDispname,
            "finaldispname" => Field::FinalDispname,
            "missedqueuecalls" => Field::MissedQueueCalls,
            _ => Field::Ignored(name.to_owned()),
        }
    }
}

/// The fields of a line, in order (`cdr.fields` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldOrder(Vec<Field>);

impl Default for FieldOrder {
    fn default() -> FieldOrder {
        FieldOrder(DEFAULT_FIELDS.iter().map(|n| Field::parse(n)).collect())
    }
}

/// A field order that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldOrderError {
    /// No fields.
    #[error("must name at least one field")]
    Empty,
    /// A field named twice.
    #[error("names {0:?} twice")]
    Duplicate(String),
    /// Without these the records cannot be placed in time.
    #[error("must include time-start (or time-end): without a time a record cannot be matched to a call")]
    NoTime,
    /// Unknown names, which are skipped; returned so that `check-config` can warn.
    #[error("unknown field names (skipped by position): {0}")]
    Unknown(String),
}

impl FieldOrder {
    /// The order from the configured names. Unknown names are allowed (skipped by position),
    /// see [`FieldOrder::unknown_names`].
    pub fn new<S: AsRef<str>>(names: &[S]) -> Result<FieldOrder, FieldOrderError> {
        if names.is_empty() {
            return Err(FieldOrderError::Empty);
        }
        let fields: Vec<Field> = names.iter().map(|n| Field::parse(n.as_ref())).collect();
        for (i, f) in fields.iter().enumerate() {
            if !matches!(f, Field::Ignored(_)) && fields[..i].contains(f) {
                return Err(FieldOrderError::Duplicate(names[i].as_ref().to_owned()));
            }
        }
        if !fields.iter().any(|f| matches!(f, Field::TimeStart | Field::TimeEnd)) {
            return Err(FieldOrderError::NoTime);
        }
        Ok(FieldOrder(fields))
    }

    /// Names that are no known field.
    pub fn unknown_names(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter_map(|f| match f {
                Field::Ignored(n) => Some(n.as_str()),
                _ => None,
            })
            .collect()
    }

    /// How many fields a line has.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true for an order built by [`FieldOrder::new`].
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A civil (zone-less) time as the PBX writes it: `YYYY/MM/DD HH:MM:SS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CivilTime {
    /// Year.
    pub year: i16,
    /// Month 1–12.
    pub month: i8,
    /// Day 1–31.
    pub day: i8,
    /// Hour 0–23.
    pub hour: i8,
    /// Minute 0–59.
    pub minute: i8,
    /// Second 0–59 (60 is read as 59).
    pub second: i8,
}

impl CivilTime {
    /// Reads `YYYY/MM/DD HH:MM:SS` (also `-` between the date's parts, a `T` between date and
    /// time, and fractional seconds, which are dropped).
    pub fn parse(s: &str) -> Option<CivilTime> {
        let b = s.trim().as_bytes();
        if b.len() < 19 {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i32> {
            let part = b.get(r)?;
            if !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            Some(part.iter().fold(0i32, |n, d| n * 10 + i32::from(d - b'0')))
        };
        let date_sep = |c: u8| c == b'/' || c == b'-';
        if !date_sep(b[4]) || !date_sep(b[7]) || !(b[10] == b' ' || b[10] == b'T') || b[13] != b':' || b[16] != b':' {
            return None;
        }
        if b.len() > 19 && !matches!(b[19], b'.' | b',') {
            return None;
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        Some(CivilTime {
            year: i16::try_from(year).ok()?,
            month: month as i8,
            day: day as i8,
            hour: hour as i8,
            minute: minute as i8,
            second: second.min(59) as i8,
        })
    }
}

/// Reads `HH:MM:SS` (hours may exceed 23) into seconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let mut parts = s.trim().split(':');
    let (h, m, sec) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let n = |p: &str| -> Option<u64> { (!p.is_empty() && p.len() <= 9).then(|| p.parse().ok()).flatten() };
    let (h, m, sec) = (n(h)?, n(m)?, n(sec.split('.').next()?)?);
    (m < 60 && sec < 61).then(|| h * 3600 + m * 60 + sec)
}

/// Why a call (segment) ended, in both vocabularies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Termination {
    /// The caller hung up (`TerminatedBySrc`, `src_participant_terminated`).
    BySource,
    /// The callee hung up (`TerminatedByDst`, `dst_participant_terminated`).
    ByDestination,
    /// The segment continued elsewhere (`continued_in`, `redirected`, legacy `TerminatedByRule`).
    Continued,
    /// The callee refused (`rejected`, `declined`).
    Rejected,
    /// The call was abandoned before an answer (`cancelled`).
    Cancelled,
    /// Anything else, or the field is absent.
    #[default]
    Other,
}

impl Termination {
    /// Reads either vocabulary, case-insensitively.
    pub fn parse(s: &str) -> Termination {
        let s = s.trim();
        let is = |w: &str| s.eq_ignore_ascii_case(w);
        if is("TerminatedBySrc") || is("src_participant_terminated") {
            Termination::BySource
        } else if is("TerminatedByDst") || is("dst_participant_terminated") {
            Termination::ByDestination
        } else if is("continued_in") || is("redirected") || is("TerminatedByRule") {
            Termination::Continued
        } else if is("rejected") || is("declined") {
            Termination::Rejected
        } else if is("cancelled") || is("canceled") {
            Termination::Cancelled
        } else {
            Termination::Other
        }
    }
}

/// The type of a DN in a CDR, in both vocabularies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DnType {
    /// `Extension`, `extension`.
    Extension,
    /// A trunk: `Line`, `external_line`, `provider`.
    Line,
    /// `Queue`, `queue`.
    Queue,
    /// `RingGroup`, `ring_group_ring_all`, `ring_group_hunt`.
    RingGroup,
    /// `Ivr`, `ivr`, `script`.
    Ivr,
    /// `Voicemail`, `voicemail`, `vmail_console`.
    Voicemail,
    /// A park orbit: `parking_orbit`, `shared_parking`, and the legacy `Park…` spellings.
    Parking,
    /// `ConfPlace`, `conference`.
    Conference,
    /// Our API route point (`RoutePoint`).
    RoutePoint,
    /// Anything else, or empty.
    #[default]
    Other,
}

impl DnType {
    /// Reads either vocabulary, case-insensitively. The legacy spelling of park orbits is not
    /// documented: anything that starts with `park` (`Park`, `ParkPlace`, `ParkingOrbit`) is
    /// read as a park orbit.
    pub fn parse(s: &str) -> DnType {
        let s = s.trim();
        let is = |w: &str| s.eq_ignore_ascii_case(w);
        // `get`, not indexing: the value may hold non-ASCII text (U+FFFD from a bad byte).
        let starts = |w: &str| s.get(..w.len()).is_some_and(|p| p.eq_ignore_ascii_case(w));
        if is("Extension") {
            DnType::Extension
        } else if is("Line") || is("external_line") || is("provider") || is("ExternalLine") {
            DnType::Line
        } else if is("Queue") {
            DnType::Queue
        } else if is("RingGroup") || starts("ring_group") {
            DnType::RingGroup
        } else if is("Ivr") || is("script") {
            DnType::Ivr
        } else if is("Voicemail") || is("vmail_console") {
            DnType::Voicemail
        } else if starts("park") || is("shared_parking") {
            DnType::Parking
        } else if is("ConfPlace") || is("conference") {
            DnType::Conference
        } else if is("RoutePoint") || is("route_point") {
            DnType::RoutePoint
        } else {
            DnType::Other
        }
    }
}

/// One CDR line, read. Strings borrow from the line; empty fields are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CdrRecord<'a> {
    /// `historyid` without its `Call ` prefix.
    pub history_id: Option<&'a str>,
    /// `callid` (`4cc2c72490010000_26808`).
    pub call_id: Option<&'a str>,
    /// `duration` in seconds.
    pub duration_secs: Option<u64>,
    /// `time-start`.
    pub time_start: Option<CivilTime>,
    /// `time-answered`.
    pub time_answered: Option<CivilTime>,
    /// `time-end`.
    pub time_end: Option<CivilTime>,
    /// `reason-terminated`.
    pub termination: Termination,
    /// `reason-terminated` as written.
    pub reason_terminated: Option<&'a str>,
    /// `from-no` (`Ext.10016` or a number).
    pub from_no: Option<&'a str>,
    /// `to-no`.
    pub to_no: Option<&'a str>,
    /// `from-dn`.
    pub from_dn: Option<&'a str>,
    /// `to-dn`.
    pub to_dn: Option<&'a str>,
    /// `dial-no`.
    pub dial_no: Option<&'a str>,
    /// `reason-changed` (`ReplacedDst`, …).
    pub reason_changed: Option<&'a str>,
    /// `final-number`.
    pub final_number: Option<&'a str>,
    /// `final-dn`.
    pub final_dn: Option<&'a str>,
    /// `chain` as written (`Chain: Ext.10016;+46703014082;`).
    pub chain: Option<&'a str>,
    /// `from-type`.
    pub from_type: DnType,
    /// `to-type`.
    pub to_type: DnType,
    /// `final-type`.
    pub final_type: DnType,
    /// `from-dispname`.
    pub from_dispname: Option<&'a str>,
    /// `to-dispname`.
    pub to_dispname: Option<&'a str>,
    /// `final-dispname`.
    pub final_dispname: Option<&'a str>,
    /// `missed-queue-calls` as written.
    pub missed_queue_calls: Option<&'a str>,
}

/// A line that is not a record in the configured order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CdrError {
    /// Fewer fields than configured.
    #[error("{got} fields where the configured order has {want} (check cdr.fields against the 3CX CDR settings)")]
    TooFewFields {
        /// Fields in the line.
        got: usize,
        /// Fields configured.
        want: usize,
    },
    /// Non-empty fields beyond the configured ones.
    #[error("{got} fields where the configured order has {want} (check cdr.fields against the 3CX CDR settings)")]
    TooManyFields {
        /// Fields in the line.
        got: usize,
        /// Fields configured.
        want: usize,
    },
    /// A time field that is not a time.
    #[error("{field} is not a time: {value:?}")]
    BadTime {
        /// The field.
        field: &'static str,
        /// What it held (cut to 40 bytes).
        value: String,
    },
    /// No start and no end time: the record cannot be placed.
    #[error("the record has neither time-start nor time-end")]
    NoTime,
}

impl CdrError {
    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            CdrError::TooFewFields { .. } => "too-few-fields",
            CdrError::TooManyFields { .. } => "too-many-fields",
            CdrError::BadTime { .. } => "bad-time",
            CdrError::NoTime => "no-time",
        }
    }
}

fn opt(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty()).then_some(s)
}

fn time(field: &'static str, s: &str) -> Result<Option<CivilTime>, CdrError> {
    match opt(s) {
        None => Ok(None),
        Some(v) => CivilTime::parse(v).map(Some).ok_or_else(|| {
            let mut value = v.to_owned();
            if value.len() > 40 {
                let mut cut = 40;
                while !value.is_char_boundary(cut) {
                    cut -= 1;
                }
                value.truncate(cut);
            }
            CdrError::BadTime { field, value }
        }),
    }
}

/// Reads one line by `order`. Trailing empty fields beyond the configured ones are accepted
/// (3CX ends lines with a comma); anything else that does not fit the order is an error.
pub fn parse_record<'a>(line: &'a str, order: &FieldOrder) -> Result<CdrRecord<'a>, CdrError> {
    let want = order.0.len();
    let mut r = CdrRecord::default();
    let mut got = 0;
    let mut extra_nonempty = false;
    for (i, value) in line.split(',').enumerate() {
        got = i + 1;
        let Some(field) = order.0.get(i) else {
            extra_nonempty |= !value.trim().is_empty();
            continue;
        };
        match field {
            Field::HistoryId => {
                r.history_id = opt(value).map(|v| {
                    let v = v.strip_prefix("Call ").or_else(|| v.strip_prefix("call ")).unwrap_or(v);
                    v.trim()
                })
            }
            Field::CallId => r.call_id = opt(value),
            Field::Duration => r.duration_secs = opt(value).and_then(parse_duration),
            Field::TimeStart => r.time_start = time("time-start", value)?,
            Field::TimeAnswered => r.time_answered = time("time-answered", value)?,
            Field::TimeEnd => r.time_end = time("time-end", value)?,
            Field::ReasonTerminated => {
                r.reason_terminated = opt(value);
                r.termination = Termination::parse(value);
            }
            Field::FromNo => r.from_no = opt(value),
            Field::ToNo => r.to_no = opt(value),
            Field::FromDn => r.from_dn = opt(value),
            Field::ToDn => r.to_dn = opt(value),
            Field::DialNo => r.dial_no = opt(value),
            Field::ReasonChanged => r.reason_changed = opt(value),
            Field::FinalNumber => r.final_number = opt(value),
            Field::FinalDn => r.final_dn = opt(value),
            Field::Chain => r.chain = opt(value),
            Field::FromType => r.from_type = DnType::parse(value),
            Field::ToType => r.to_type = DnType::parse(value),
            Field::FinalType => r.final_type = DnType::parse(value),
            Field::FromDispname => r.from_dispname = opt(value),
            Field::ToDispname => r.to_dispname = opt(value),
            Field::FinalDispname => r.final_dispname = opt(value),
            Field::MissedQueueCalls => r.missed_queue_calls = opt(value),
            Field::BillCode | Field::BillRate | Field::BillCost | Field::BillName | Field::Ignored(_) => {}
        }
    }
    if got < want {
        return Err(CdrError::TooFewFields { got, want });
    }
    if extra_nonempty {
        return Err(CdrError::TooManyFields { got, want });
    }
    if r.time_start.is_none() && r.time_end.is_none() {
        return Err(CdrError::NoTime);
    }
    Ok(r)
}

impl<'a> CdrRecord<'a> {
    /// The call manager's counter: the `_<n>` suffix of `callid` (`…_26808` → 26808). Taken
    /// to be Call Control's `callid` (inferred; the live call is also matched by extension and
    /// time when it is not).
    pub fn call_counter(&self) -> Option<i64> {
        let id = self.call_id?;
        match id.rsplit_once('_') {
            Some((_, n)) => n.parse().ok(),
            // A V20 Update 6+ feed may carry a `call_history_id` UUID instead.
            None => call_history_counter(id),
        }
    }

    /// The chain's entries (`Chain: Ext.10016;+46703014082;` → `["Ext.10016", "+46703014082"]`).
    pub fn chain_entries(&self) -> impl Iterator<Item = &'a str> {
        let chain = self.chain.unwrap_or("");
        let chain = chain.strip_prefix("Chain:").or_else(|| chain.strip_prefix("chain:")).unwrap_or(chain);
        chain.split(';').map(str::trim).filter(|s| !s.is_empty())
    }

    /// The extensions `missed-queue-calls` names (agents a queue polled who did not answer).
    pub fn missed_queue_agents(&self) -> impl Iterator<Item = &'a str> {
        self.missed_queue_calls.unwrap_or("").split([';', ' ']).map(|s| ext_number(s.trim())).filter(|s| !s.is_empty())
    }

    /// A key that identifies the record for deduplication: the history id, else the call id
    /// with the start time.
    pub fn dedup_key(&self) -> String {
        match (self.history_id, self.call_id, self.time_start) {
            (Some(h), _, _) => format!("h{h}"),
            (None, Some(c), t) => format!("c{c}@{t:?}"),
            (None, None, t) => format!("t{t:?}/{}/{}", self.from_no.unwrap_or(""), self.to_no.unwrap_or("")),
        }
    }
}

/// The call manager's counter in a V20 `call_history_id` / `cdr_id` UUID: its first 4 bytes
/// are zero, the next 8 a FILETIME, the last 4 the counter (`00000000-01dc-27dd-cc8a-
/// 799100000029` → 41). `None` for anything else.
pub fn call_history_counter(id: &str) -> Option<i64> {
    let hex: String = id.trim().chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) || !hex.starts_with("00000000") {
        return None;
    }
    i64::from_str_radix(&hex[24..], 16).ok()
}

/// An extension number without 3CX's `Ext.` prefix (`Ext.10016` → `10016`); other numbers as
/// they are.
pub fn ext_number(s: &str) -> &str {
    s.strip_prefix("Ext.").or_else(|| s.strip_prefix("ext.")).unwrap_or(s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests unwrap what they built themselves.
mod tests;
