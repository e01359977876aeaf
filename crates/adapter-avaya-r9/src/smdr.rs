//! SMDR records: one line → [`SmdrRecord`].
//!
//! An SMDR record is one call *segment* between two devices, written when the segment ends
//! (protocol notes §6). Fields are comma-separated, by position, without quoting; Avaya's own
//! examples show 17, 30 or 31 fields, newer releases up to 35. The parser reads by position and
//! is lenient where the documentation and real systems are untidy:
//!
//! - 17 or more fields (fields past 35 are ignored), trailing commas, a trailing space, NUL
//!   bytes anywhere (stripped), surrounding spaces of a field (trimmed);
//! - `Is Internal` = `1` or `I` (an Avaya documentation example) is internal;
//! - `Call Start` with or without seconds (`2008/07/09 18:00`, another documentation example);
//! - `HH:MM:SS` durations with hours past 99;
//! - a caller as `number@host` (SIP trunks) or `anonymous@anonymous.invalid` (withheld);
//! - names that are not UTF-8 (read lossily: the record is kept).
//!
//! What cannot be read (a line with fewer than 17 fields, a Call Start that is not a date, a
//! Call ID that is not a number, a Continuation that is not 0 or 1) is an [`SmdrError`], which
//! the adapter counts and skips: it never ends the stream.

use std::borrow::Cow;
use std::fmt;

use crate::codec::{byte_mask, word};

/// The fewest fields a record has (Avaya's shortest documented form).
pub const MIN_FIELDS: usize = 17;

/// The most fields a record is documented to have; later ones are ignored.
pub const MAX_FIELDS: usize = 35;

/// A `Call Start` as the PBX wrote it: local wall-clock time of its configured zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallStart {
    /// Year.
    pub year: i16,
    /// Month, 1–12.
    pub month: i8,
    /// Day, 1–31.
    pub day: i8,
    /// Hour, 0–23.
    pub hour: i8,
    /// Minute, 0–59.
    pub minute: i8,
    /// Second, 0–59 (0 when the PBX left the seconds out).
    pub second: i8,
    /// Whether the PBX wrote the seconds.
    pub has_seconds: bool,
}

impl fmt::Display for CallStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}/{:02}/{:02} {:02}:{:02}", self.year, self.month, self.day, self.hour, self.minute)?;
        if self.has_seconds {
            write!(f, ":{:02}", self.second)?;
        }
        Ok(())
    }
}

/// `I` (inbound) or `O` (outbound, which includes internal calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SmdrDirection {
    /// `I`: the call came in on a trunk.
    Inbound,
    /// `O`: outbound or internal.
    Outbound,
}

/// The kind of a party device, from the first letter of its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// `E<extension>`.
    Extension,
    /// `T<9000 + line>`.
    Trunk,
    /// `V<…>`: a voicemail channel (`V9502 "VM Channel 2"`), or `V8000 "U1 0.0"` (tones).
    Voicemail,
    /// Anything else (kept, never an extension).
    Other,
}

/// A party of a segment: `Party1Device`/`Party1Name` or `Party2…`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Device<'a> {
    /// What it is.
    pub kind: DeviceKind,
    /// The id without its letter: the extension number, `9002`, `9502`.
    pub number: Cow<'a, str>,
    /// The name the PBX gives it.
    pub name: Cow<'a, str>,
}

impl<'a> Device<'a> {
    /// The extension number when it is an extension.
    pub fn extension(&self) -> Option<&str> {
        (self.kind == DeviceKind::Extension && !self.number.is_empty()).then_some(&*self.number)
    }

    /// An owned copy.
    pub fn into_owned(self) -> Device<'static> {
        Device {
            kind: self.kind,
            number: Cow::Owned(self.number.into_owned()),
            name: Cow::Owned(self.name.into_owned()),
        }
    }

    fn parse(id: Cow<'a, str>, name: Cow<'a, str>) -> Device<'a> {
        let kind = match id.as_bytes().first() {
            Some(b'E') => DeviceKind::Extension,
            Some(b'T') => DeviceKind::Trunk,
            Some(b'V') => DeviceKind::Voicemail,
            _ => DeviceKind::Other,
        };
        let number = match (kind, id) {
            (DeviceKind::Other, id) => id,
            (_, Cow::Borrowed(s)) => Cow::Borrowed(&s[1..]),
            (_, Cow::Owned(s)) => Cow::Owned(s[1..].to_owned()),
        };
        Device { kind, number, name }
    }
}

/// One SMDR record (call segment). Text fields borrow from the line where they can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmdrRecord<'a> {
    /// 1: when the call started (local time), the same for every segment of the call.
    pub call_start: CallStart,
    /// 2: connected time in seconds (excludes ring, hold and park).
    pub connected_secs: u32,
    /// 3: ring time in seconds.
    pub ring_secs: u32,
    /// 4: the caller: an extension, a CLI, `number@host`, or empty.
    pub caller: Cow<'a, str>,
    /// 5: direction.
    pub direction: SmdrDirection,
    /// 6: the number called (DDI, extension, group); kept across transfers.
    pub called_number: Cow<'a, str>,
    /// 7: the digits dialled or the DDI received.
    pub dialled_number: Cow<'a, str>,
    /// 8: the last account code.
    pub account: Cow<'a, str>,
    /// 9: both parties internal (`1`, or `I` in an Avaya example).
    pub is_internal: bool,
    /// 10: the Call ID shared by every segment of the call.
    pub call_id: Cow<'a, str>,
    /// 11: more segments of this call follow.
    pub continuation: bool,
    /// 12–13: Party 1 (the extension when an extension and a trunk are in the segment).
    pub party1: Device<'a>,
    /// 14–15: Party 2.
    pub party2: Device<'a>,
    /// 16: hold time in seconds.
    pub hold_secs: u32,
    /// 17: park time in seconds.
    pub park_secs: u32,
    /// 28: External Targeting Cause (`U XfP`, `HG fnr`, …), empty when absent.
    pub targeting_cause: Cow<'a, str>,
    /// 29: External Targeter Id (the user or group that targeted).
    pub targeter_id: Cow<'a, str>,
    /// 30: External Targeted Number.
    pub targeted_number: Cow<'a, str>,
    /// How many fields the line had (trailing empty ones included).
    pub fields: usize,
}

/// Why an SMDR line is not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmdrError {
    /// Fewer than [`MIN_FIELDS`] fields.
    #[error("{0} fields, at least 17 expected")]
    TooFewFields(usize),
    /// A field that must have a form does not.
    #[error("field {field} ({name}) is not valid: {value:?}")]
    BadField {
        /// Its 1-based position.
        field: usize,
        /// Its name in the Avaya documentation.
        name: &'static str,
        /// What it held (at most 40 characters).
        value: String,
    },
}

impl SmdrError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SmdrError::TooFewFields(_) => "too-few-fields",
            SmdrError::BadField { name, .. } => name,
        }
    }
}

/// The text of a line: NUL bytes removed, read as UTF-8 (lossily, so that a name in another
/// encoding costs a replacement character, never the record), trailing spaces and tabs off.
pub fn line_text(line: &[u8]) -> Cow<'_, str> {
    // ASCII without NUL (every byte in 1..=0x7F: each minus one has its top bit clear), as
    // every record is in practice, needs neither the NUL search nor a lossy read: one pass
    // that the compiler vectorises.
    if line.iter().fold(0u8, |acc, b| acc | b.wrapping_sub(1)) < 0x80
        && let Ok(s) = std::str::from_utf8(line)
    {
        return Cow::Borrowed(s.trim_ascii_end());
    }
    let text = if line.contains(&0) {
        let clean: Vec<u8> = line.iter().copied().filter(|b| *b != 0).collect();
        Cow::Owned(String::from_utf8_lossy(&clean).into_owned())
    } else {
        match std::str::from_utf8(line) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(line),
        }
    };
    match text {
        Cow::Borrowed(s) => Cow::Borrowed(s.trim_ascii_end()),
        Cow::Owned(s) => Cow::Owned(s.trim_ascii_end().to_owned()),
    }
}

impl SmdrRecord<'_> {
    /// The Call ID as a number (the parser accepts at most 19 digits).
    pub fn call_id_number(&self) -> u64 {
        self.call_id.parse().unwrap_or(0)
    }
}

/// Parses one SMDR line (already through [`line_text`]).
pub fn parse(text: &str) -> Result<SmdrRecord<'_>, SmdrError> {
    // Where each field ends: at a comma byte (a UTF-8 continuation byte is never 0x2C), or at
    // the end of the line for the last one (empty after a trailing comma). One pass over the
    // bytes, a word at a time; `str::split` looks for each comma with `memchr`, which costs
    // more than it saves on fields this short, and only the fields used are then cut out and
    // trimmed.
    let mut ends = [0; MAX_FIELDS];
    let mut count = 0;
    let mut comma_at = |i: usize| {
        if let Some(end) = ends.get_mut(count) {
            *end = i;
        }
        count += 1;
    };
    // Eight bytes at a time, then each comma of the word by its bit.
    let mut chunks = text.as_bytes().chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let mut commas = byte_mask(word(chunk), b',');
        while commas != 0 {
            comma_at(base + (commas.trailing_zeros() / 8) as usize);
            commas &= commas - 1;
        }
        base += 8;
    }
    for (i, b) in chunks.remainder().iter().enumerate() {
        if *b == b',' {
            comma_at(base + i);
        }
    }
    if let Some(end) = ends.get_mut(count) {
        *end = text.len();
    }
    count += 1;
    if count < MIN_FIELDS {
        return Err(SmdrError::TooFewFields(count));
    }
    // Field `n`, numbered from 1 as Avaya does; empty past the last.
    // Inlined: a call per field was a third of the parser.
    #[inline(always)]
    fn cut<'t>(text: &'t str, ends: &[usize; MAX_FIELDS], count: usize, n: usize) -> &'t str {
        let i = n - 1;
        if i >= count.min(MAX_FIELDS) {
            return "";
        }
        let start = if i == 0 { 0 } else { ends[i - 1] + 1 };
        let f = text.get(start..ends[i]).unwrap_or_default();
        // Most fields have no surrounding space: no call to trim them.
        let spaced = |b: Option<&u8>| b.is_some_and(u8::is_ascii_whitespace);
        if spaced(f.as_bytes().first()) || spaced(f.as_bytes().last()) { f.trim_ascii() } else { f }
    }
    let field = |n: usize| -> &str { cut(text, &ends, count, n) };
    let bad = |n: usize, name: &'static str| SmdrError::BadField {
        field: n,
        name,
        value: field(n).chars().take(40).collect(),
    };
    let call_start = parse_call_start(field(1)).ok_or_else(|| bad(1, "call-start"))?;
    let connected_secs = parse_hms(field(2)).ok_or_else(|| bad(2, "connected-time"))?;
    let ring_secs = parse_secs(field(3)).ok_or_else(|| bad(3, "ring-time"))?;
    let direction = match field(5) {
        "I" | "i" => SmdrDirection::Inbound,
        "O" | "o" => SmdrDirection::Outbound,
        _ => return Err(bad(5, "direction")),
    };
    let is_internal = matches!(field(9), "1" | "I" | "i");
    let call_id = field(10);
    // At most 19 digits: every Call ID is then a u64.
    if call_id.is_empty() || call_id.len() > 19 || !call_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(10, "call-id"));
    }
    let continuation = match field(11) {
        "1" => true,
        "0" => false,
        _ => return Err(bad(11, "continuation")),
    };
    let hold_secs = parse_secs(field(16)).ok_or_else(|| bad(16, "hold-time"))?;
    let park_secs = parse_secs(field(17)).ok_or_else(|| bad(17, "park-time"))?;
    let b = |n: usize| Cow::Borrowed(field(n));
    Ok(SmdrRecord {
        call_start,
        connected_secs,
        ring_secs,
        caller: b(4),
        direction,
        called_number: b(6),
        dialled_number: b(7),
        account: b(8),
        is_internal,
        call_id: Cow::Borrowed(call_id),
        continuation,
        party1: Device::parse(b(12), b(13)),
        party2: Device::parse(b(14), b(15)),
        hold_secs,
        park_secs,
        targeting_cause: b(28),
        targeter_id: b(29),
        targeted_number: b(30),
        fields: count,
    })
}

/// `YYYY/MM/DD HH:MM:SS` or `YYYY/MM/DD HH:MM` (also with `-` between the date's parts).
pub(crate) fn parse_call_start(s: &str) -> Option<CallStart> {
    // The form every IP Office writes, read at fixed places; anything else the general way.
    if let Some(start) = fixed_call_start(s.as_bytes()) {
        return start;
    }
    // The first space (found by a plain scan: `split_once` calls `memchr`, slower here).
    let space = s.bytes().position(|b| b == b' ')?;
    let (date, time) = (&s[..space], &s[space + 1..]);
    let ([year, month, day], 3) = numbers(date, |b| b == b'/' || b == b'-', [4, 2, 2])? else { return None };
    let ([hour, minute, second], count @ (2 | 3)) = numbers(time.trim(), |b| b == b':', [2, 2, 2])? else {
        return None;
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 || year < 1970
    {
        return None;
    }
    // In range by the checks above (a year has at most four digits).
    let small = |n: u32| n as i8;
    Some(CallStart {
        year: year as i16,
        month: small(month),
        day: small(day),
        hour: small(hour),
        minute: small(minute),
        second: small(second.min(59)),
        has_seconds: count == 3,
    })
}

/// Two ASCII digits as a number, `None` unless both are digits.
fn two_digits(hi: u8, lo: u8) -> Option<u32> {
    (hi.is_ascii_digit() && lo.is_ascii_digit()).then(|| u32::from(hi - b'0') * 10 + u32::from(lo - b'0'))
}

/// `YYYY/MM/DD HH:MM:SS` (`/` or `-` in the date) read at fixed places: `None` when `s` does
/// not have that shape (the general reader decides), `Some(None)` when it has it but is no
/// valid Call Start. The same checks as the general reader.
fn fixed_call_start(s: &[u8]) -> Option<Option<CallStart>> {
    let &[y1, y2, y3, y4, s1, mo1, mo2, s2, d1, d2, b' ', h1, h2, b':', mi1, mi2, b':', se1, se2] = s else {
        return None;
    };
    if !matches!(s1, b'/' | b'-') || !matches!(s2, b'/' | b'-') {
        return None;
    }
    let (year, month, day) =
        (two_digits(y1, y2)? * 100 + two_digits(y3, y4)?, two_digits(mo1, mo2)?, two_digits(d1, d2)?);
    let (hour, minute, second) = (two_digits(h1, h2)?, two_digits(mi1, mi2)?, two_digits(se1, se2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 || year < 1970
    {
        return Some(None);
    }
    // In range by the checks above (four digits of year).
    let small = |n: u32| n as i8;
    Some(Some(CallStart {
        year: year as i16,
        month: small(month),
        day: small(day),
        hour: small(hour),
        minute: small(minute),
        second: small(second.min(59)),
        has_seconds: true,
    }))
}

/// `s` read as at most `N` numbers separated by single bytes for which `is_sep` holds, the
/// `i`th of 1 to `max_digits[i]` ASCII digits. Returns them (unused ones 0) and how many there
/// were; `None` for anything else: an empty or over-long number, another byte, more than `N`.
///
/// Written out byte by byte: `split` and `str::parse` on each of a Call Start's six numbers
/// were a fifth of the record parser's time.
fn numbers<const N: usize>(s: &str, is_sep: fn(u8) -> bool, max_digits: [usize; N]) -> Option<([u32; N], usize)> {
    let mut values = [0u32; N];
    let mut count = 0;
    let mut digits = 0;
    for b in s.bytes() {
        if b.is_ascii_digit() {
            digits += 1;
            if digits > max_digits[count] {
                return None;
            }
            values[count] = values[count] * 10 + u32::from(b - b'0');
        } else if is_sep(b) && digits > 0 && count + 1 < N {
            count += 1;
            digits = 0;
        } else {
            return None;
        }
    }
    (digits > 0).then_some((values, count + 1))
}

/// Whole seconds (empty counts as 0: "empty fields when not applicable").
fn parse_secs(s: &str) -> Option<u32> {
    if s.is_empty() {
        return Some(0);
    }
    if s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `H+:MM:SS` → seconds (empty counts as 0).
fn parse_hms(s: &str) -> Option<u32> {
    if s.is_empty() {
        return Some(0);
    }
    // `HH:MM:SS`, the form of almost every record, at fixed places.
    if let &[h1, h2, b':', m1, m2, b':', s1, s2] = s.as_bytes()
        && let (Some(h), Some(m), Some(sec)) = (two_digits(h1, h2), two_digits(m1, m2), two_digits(s1, s2))
    {
        return (m <= 59 && sec <= 59).then_some(h * 3600 + m * 60 + sec);
    }
    let ([h, m, sec], 3) = numbers(s, |b| b == b':', [5, 2, 2])? else { return None };
    if m > 59 || sec > 59 {
        return None;
    }
    Some(h * 3600 + m * 60 + sec)
}

/// A caller as a number for correlation: the user part of `number@host` when that is a
/// number, the text otherwise (withheld callers stay `anonymous@…`, which the number plan reads
/// as withheld).
pub fn caller_number(caller: &str) -> &str {
    match caller.split_once('@') {
        Some((user, _)) if !user.is_empty() && user.trim_start_matches('+').bytes().all(|b| b.is_ascii_digit()) => user,
        _ => caller,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
