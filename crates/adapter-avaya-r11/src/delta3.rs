//! Delta3 records: the text of a CallDelta3 tuple ↔ [`Delta3Record`].
//!
//! A Delta3 record is XML-*like* markup whose element text is a comma-separated field list
//! (protocol notes §3):
//!
//! ```text
//! <Detail><Call>c0a82a03,3,,,,0,,200,,200,</Call><PartyA>…</PartyA><PartyB>…</PartyB>
//!         <Target_list><Target>…</Target>…</Target_list></Detail>
//! <CallLost>c0a82a03,c0a82a0300000413,1,16</CallLost>
//! <LinkLost>…</LinkLost>   <AttemptReject>…</AttemptReject>
//! ```
//!
//! The parser is lenient where the documentation is: whitespace and newlines between and inside
//! elements, XML comments, missing trailing fields, quoted fields (a field that starts with `"`
//! runs to the next unpaired `"`, `""` is a quote), ids of any length (the documentation's own
//! example has a 15-character end id), unknown child elements (skipped). It borrows from the
//! input; quoted fields with escapes are the only copies. An unknown record name is
//! [`Delta3ErrorKind::UnknownRecord`], anything else broken is another [`Delta3Error`]: both are
//! items to count and skip, never a panic.
//!
//! [`Delta3Record`] implements [`fmt::Display`], which writes the compact wire form; the
//! simulator builds its records that way and the property tests check the round trip.

use std::borrow::Cow;
use std::fmt;

/// One Delta3 record.
#[allow(clippy::large_enum_variant)] // Short-lived, on the stack; boxing costs an allocation per record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta3Record<'a> {
    /// The full state of one call after any change.
    Detail(Detail<'a>),
    /// A party left the call (generated at SCN extremities).
    CallLost(Lost<'a>),
    /// A party left the call (generated at intermediate SCN nodes).
    LinkLost(Lost<'a>),
    /// A ringing target rejected the call (Drop key, DND).
    AttemptReject(AttemptReject<'a>),
}

impl Delta3Record<'_> {
    /// The record's element name, also its metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Delta3Record::Detail(_) => "Detail",
            Delta3Record::CallLost(_) => "CallLost",
            Delta3Record::LinkLost(_) => "LinkLost",
            Delta3Record::AttemptReject(_) => "AttemptReject",
        }
    }
}

/// A `<Detail>` record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Detail<'a> {
    /// `<Call>`.
    pub call: CallFields<'a>,
    /// `<PartyA>`: the end that started the call.
    pub party_a: Party<'a>,
    /// `<PartyB>`: the other end, absent while ringing, parked or queued.
    pub party_b: Option<Party<'a>>,
    /// `<Target_list>`: the devices being alerted.
    pub targets: Vec<Target<'a>>,
}

/// The fields of `<Call>` (§3.1). Missing trailing fields are empty / `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallFields<'a> {
    /// 1: node identifier (8 hex digits, the node's IPv4 address [inferred]).
    pub node: Cow<'a, str>,
    /// 2: the call id, local to the node.
    pub call_id: Cow<'a, str>,
    /// 3: account code.
    pub account_code: Cow<'a, str>,
    /// 4: authorization code (masked).
    pub auth_code: Cow<'a, str>,
    /// 5: tag (may hold a UCID with Aura interworking).
    pub tag: Cow<'a, str>,
    /// 6: transfer cause.
    pub transfer_cause: Option<u32>,
    /// 7: owner hunt group.
    pub owner_hunt_group: Cow<'a, str>,
    /// 8: originally targeted hunt group.
    pub original_hunt_group: Cow<'a, str>,
    /// 9: originally targeted user.
    pub original_user: Cow<'a, str>,
    /// 10: currently targeted hunt group.
    pub target_hunt_group: Cow<'a, str>,
    /// 11: currently targeted user.
    pub target_user: Cow<'a, str>,
    /// 12: voicemail message being left.
    pub vm_message: Cow<'a, str>,
    /// 13: voicemail message length (s).
    pub vm_length: Option<u32>,
    /// 14: queue/announcement: 1 queueing, 3 listening to an announcement.
    pub queue: Option<u32>,
    /// 15: timestamp (1/10 s, epoch not documented).
    pub timestamp: Option<u64>,
    /// 16: hunt group overflow.
    pub overflow: Cow<'a, str>,
    /// 17: transferred out of an IVR call flow (quoted).
    pub ivr_transfer: Cow<'a, str>,
    /// 18: time in the IVR call flow (1/10 s).
    pub ivr_time: Option<u64>,
}

/// The fields of `<PartyA>` / `<PartyB>` (§3.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Party<'a> {
    /// 1: end identifier (16 hex digits; first 8 = node).
    pub end_id: Cow<'a, str>,
    /// 2: direction: 1 = the call came in on this end.
    pub direction: Option<u32>,
    /// 3: state (see [`party_state`]).
    pub state: Option<u32>,
    /// 4: audio path: 1 connected, 0 on hold.
    pub audio_path: Option<u32>,
    /// 5: tone: 0 none, 1 hold music, 2 ringback, 3 dial tone, 6 busy.
    pub tone: Option<u32>,
    /// 6: remote: 1 transiting from another node.
    pub remote: Option<u32>,
    /// 7: public line: 1 = a trunk (ISDN, SIP, …).
    pub public_line: Option<u32>,
    /// 8: flags (privacy, auto-answered, recorded, consent).
    pub flags: Option<u32>,
    /// 9: emergency location id.
    pub emergency_location: Option<u32>,
    /// 10: equipment classification (see [`equipment`]).
    pub equipment_class: Option<u32>,
    /// 11: equipment type.
    pub equipment_type: Option<u32>,
    /// 12: description (SIP Call-ID, line.channel, …; context-dependent).
    pub description: Cow<'a, str>,
    /// 13: identity: the extension number of an IP Office user.
    pub identity: Cow<'a, str>,
    /// 14: called type (134 park, 135 unpark, …).
    pub called_type: Option<u32>,
    /// 15: called reason.
    pub called_reason: Option<u32>,
    /// 16: DID (called number / SIP To-URI user, direction 1).
    pub did: Cow<'a, str>,
    /// 17: dialled digits.
    pub dialled: Cow<'a, str>,
    /// 18: on behalf (bridged appearance, auth code).
    pub on_behalf: Cow<'a, str>,
    /// 19: target number sent to a trunk (direction 0).
    pub target_number: Cow<'a, str>,
    /// 20: target sub-address.
    pub target_subaddr: Cow<'a, str>,
    /// 21: purpose (the nominal target: hunt group, skill, diversion).
    pub purpose: Cow<'a, str>,
    /// 22: CLI (the true calling number on a trunk).
    pub cli: Cow<'a, str>,
    /// 23: CLI presentation (0 allowed, 1 withheld, 2 n/a, 100 unspecified).
    pub cli_presentation: Option<u32>,
    /// 24: calling party name type.
    pub name_type: Option<u32>,
    /// 25: calling party name (quoted).
    pub name: Cow<'a, str>,
    /// 26: related end identifier (set during some transfers).
    pub related_end_id: Cow<'a, str>,
}

/// The fields of a `<Target>` (§3.3): a device being alerted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Target<'a> {
    /// 1: end identifier.
    pub end_id: Cow<'a, str>,
    /// 2: remote.
    pub remote: Option<u32>,
    /// 3: public line.
    pub public_line: Option<u32>,
    /// 4: equipment classification.
    pub equipment_class: Option<u32>,
    /// 5: equipment type.
    pub equipment_type: Option<u32>,
    /// 6: description.
    pub description: Cow<'a, str>,
    /// 7: identity (extension number).
    pub identity: Cow<'a, str>,
    /// 8: called type.
    pub called_type: Option<u32>,
    /// 9: called reason.
    pub called_reason: Option<u32>,
    /// 10: target number.
    pub target_number: Cow<'a, str>,
    /// 11: target sub-address.
    pub target_subaddr: Cow<'a, str>,
    /// 12: purpose (the hunt group).
    pub purpose: Cow<'a, str>,
    /// 13: CLI.
    pub cli: Cow<'a, str>,
    /// 14: CLI presentation.
    pub cli_presentation: Option<u32>,
}

/// The fields of `<CallLost>` / `<LinkLost>` (§3.4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lost<'a> {
    /// 1: node identifier.
    pub node: Cow<'a, str>,
    /// 2: the end that left.
    pub end_id: Cow<'a, str>,
    /// 3: 1 = cleared from this device.
    pub cleared_inbound: Option<u32>,
    /// 4: cause: 16 normal, 126 transfer, … (see [`cause`]).
    pub cause: Option<u32>,
    /// 5: timestamp (1/10 s).
    pub timestamp: Option<u64>,
    /// 6 (LinkLost only): link local reference (matches the party's description).
    pub link_ref: Cow<'a, str>,
}

/// The fields of `<AttemptReject>` (§3.4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttemptReject<'a> {
    /// 1: node identifier.
    pub node: Cow<'a, str>,
    /// 2: the rejecting target's end.
    pub end_id: Cow<'a, str>,
    /// 3: the user.
    pub user: Cow<'a, str>,
    /// 4: qualifier (e.g. `"dnd"`).
    pub qualifier: Cow<'a, str>,
    /// 5: timestamp (1/10 s).
    pub timestamp: Option<u64>,
}

/// Party state values (§3.2).
pub mod party_state {
    /// Idle.
    pub const IDLE: u32 = 0;
    /// Ringing (alerting).
    pub const RINGING: u32 = 1;
    /// Connected.
    pub const CONNECTED: u32 = 2;
    /// Disconnecting.
    pub const DISCONNECTING: u32 = 3;
    /// Dialling.
    pub const DIALLING: u32 = 7;
    /// Offering.
    pub const OFFERING: u32 = 15;
    /// Ringback (the caller hears ringing).
    pub const RINGBACK: u32 = 19;
}

/// Equipment classifications (§3.2, selection).
pub mod equipment {
    /// SIP trunk.
    pub const SIP_TRUNK: u32 = 5;
    /// TDM phone.
    pub const TDM_PHONE: u32 = 8;
    /// H.323 phone.
    pub const H323_PHONE: u32 = 9;
    /// SIP device.
    pub const SIP_DEVICE: u32 = 10;
    /// DECT phone.
    pub const DECT_PHONE: u32 = 11;
    /// Voicemail.
    pub const VOICEMAIL: u32 = 12;
    /// Park slot.
    pub const PARK_SLOT: u32 = 16;
    /// Mobile (twinned) phone.
    pub const MOBILE_PHONE: u32 = 21;
    /// WebRTC phone.
    pub const WEBRTC_PHONE: u32 = 28;
}

/// Called types (§3.2, selection).
pub mod called_type {
    /// The call was parked.
    pub const PARK_CALL: u32 = 134;
    /// The call was unparked.
    pub const UNPARK_CALL: u32 = 135;
}

/// CallLost causes (the Delta2 cause table; 16 and 126 are documented for Delta3).
pub mod cause {
    /// Normal clearing.
    pub const NORMAL: u32 = 16;
    /// Busy.
    pub const BUSY: u32 = 17;
    /// No user responding.
    pub const NO_USER_RESPONDING: u32 = 18;
    /// Call rejected.
    pub const CALL_REJECTED: u32 = 21;
    /// Parked.
    pub const PARKED: u32 = 117;
    /// Answered by another device.
    pub const ANSWERED_BY_OTHER: u32 = 124;
    /// Transfer.
    pub const TRANSFER: u32 = 126;
}

/// A Delta3 string that is not a record we can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Delta3 {kind} at byte {offset}")]
pub struct Delta3Error {
    /// Byte offset in the record text.
    pub offset: usize,
    /// What is wrong.
    pub kind: Delta3ErrorKind,
}

impl Delta3Error {
    /// Whether the record is well-formed but of a kind we do not know.
    pub fn is_unknown_record(&self) -> bool {
        matches!(self.kind, Delta3ErrorKind::UnknownRecord(_))
    }
}

/// What is wrong with a Delta3 string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Delta3ErrorKind {
    /// Nothing but whitespace.
    #[error("empty record")]
    Empty,
    /// A `<` was expected.
    #[error("expected an element")]
    ExpectedElement,
    /// An element's `>` is missing.
    #[error("unterminated tag")]
    UnterminatedTag,
    /// The closing tag does not match.
    #[error("expected </{0}>")]
    ExpectedClose(&'static str),
    /// A record we do not know.
    #[error("unknown record <{0}>")]
    UnknownRecord(String),
    /// A required child element is missing.
    #[error("missing <{0}>")]
    MissingElement(&'static str),
    /// A required field is empty.
    #[error("empty {0}")]
    MissingField(&'static str),
    /// A quoted field has no closing quote.
    #[error("unterminated quoted field")]
    UnterminatedQuote,
    /// Something other than whitespace follows the record.
    #[error("trailing data after the record")]
    TrailingData,
    /// Elements nest deeper than any Delta3 record does.
    #[error("elements nested too deeply")]
    TooDeep,
}

/// Parses one Delta3 record (the text of one CallDelta3 tuple). Trailing NULs and whitespace
/// are allowed; anything else after the record is an error.
pub fn parse(input: &str) -> Result<Delta3Record<'_>, Delta3Error> {
    let mut s = Scanner { s: input, pos: 0 };
    let record = s.record()?;
    s.skip_ws();
    if s.pos < s.s.len() {
        return Err(s.err(Delta3ErrorKind::TrailingData));
    }
    Ok(record)
}

/// Parses consecutive records (e.g. a file of documentation examples), with whitespace and
/// comments between them. Stops after the first error.
pub fn parse_many(input: &str) -> impl Iterator<Item = Result<Delta3Record<'_>, Delta3Error>> {
    let mut s = Scanner { s: input, pos: 0 };
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        s.skip_ws();
        if s.pos >= s.s.len() {
            return None;
        }
        let r = s.record();
        failed = r.is_err();
        Some(r)
    })
}

struct Scanner<'a> {
    s: &'a str,
    pos: usize,
}

/// Deepest nesting an unknown element may have before we give up (Delta3 uses 3 levels).
const MAX_DEPTH: usize = 8;

impl<'a> Scanner<'a> {
    fn err(&self, kind: Delta3ErrorKind) -> Delta3Error {
        Delta3Error { offset: self.pos, kind }
    }

    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    /// Skips whitespace, NULs and `<!-- … -->` comments.
    fn skip_ws(&mut self) {
        loop {
            let bytes = self.s.as_bytes();
            while let Some(&b) = bytes.get(self.pos) {
                if b.is_ascii_whitespace() || b == 0 {
                    self.pos += 1;
                } else if b >= 0x80 {
                    // Rare: Unicode whitespace.
                    let rest = &self.s[self.pos..];
                    let trimmed = rest.trim_start();
                    if trimmed.len() == rest.len() {
                        break;
                    }
                    self.pos += rest.len() - trimmed.len();
                } else {
                    break;
                }
            }
            let rest = &bytes[self.pos..];
            if rest.len() >= 4 && rest[0] == b'<' && rest[1] == b'!' && rest[2] == b'-' && rest[3] == b'-' {
                match self.s[self.pos + 4..].find("-->") {
                    Some(end) => self.pos += 4 + end + 3,
                    None => self.pos = self.s.len(),
                }
            } else {
                return;
            }
        }
    }

    /// `<name>` → `name`. Does not accept closing tags.
    fn open(&mut self) -> Result<&'a str, Delta3Error> {
        self.skip_ws();
        let rest = self.rest();
        let b = rest.as_bytes();
        if b.first() != Some(&b'<') || b.get(1) == Some(&b'/') {
            return Err(self.err(Delta3ErrorKind::ExpectedElement));
        }
        let Some(end) = find_byte(rest, b'>') else {
            return Err(self.err(Delta3ErrorKind::UnterminatedTag));
        };
        let name = rest[1..end].trim();
        self.pos += end + 1;
        Ok(name)
    }

    /// Whether a closing tag is next.
    fn at_close(&mut self) -> bool {
        self.skip_ws();
        let b = self.rest().as_bytes();
        b.first() == Some(&b'<') && b.get(1) == Some(&b'/')
    }

    /// `</name>`.
    fn close(&mut self, name: &'static str) -> Result<(), Delta3Error> {
        self.skip_ws();
        let rest = self.rest();
        let ok = rest
            .strip_prefix("</")
            .and_then(|r| find_byte(r, b'>').map(|end| (r[..end].trim(), end)))
            .filter(|(n, _)| *n == name);
        match ok {
            Some((_, end)) => {
                self.pos += 2 + end + 1;
                Ok(())
            }
            None => Err(self.err(Delta3ErrorKind::ExpectedClose(name))),
        }
    }

    /// Element text up to the next `<` outside quotes.
    fn text(&mut self) -> Result<&'a str, Delta3Error> {
        let rest = self.rest();
        // Fast path (no quotes before the next `<`): two memchr searches.
        if let Some(lt) = rest.find('<')
            && !rest[..lt].contains('"')
        {
            self.pos += lt;
            return Ok(&rest[..lt]);
        }
        let mut quoted = false;
        for (i, b) in rest.bytes().enumerate() {
            match b {
                b'"' => quoted = !quoted,
                b'<' if !quoted => {
                    self.pos += i;
                    return Ok(&rest[..i]);
                }
                _ => {}
            }
        }
        Err(self.err(if quoted { Delta3ErrorKind::UnterminatedQuote } else { Delta3ErrorKind::UnterminatedTag }))
    }

    /// `<name>text</name>` where the name was already read.
    fn text_element(&mut self, name: &'static str) -> Result<&'a str, Delta3Error> {
        let t = self.text()?;
        self.close(name)?;
        Ok(t)
    }

    /// Skips the rest of an unknown element whose open tag was read.
    fn skip_element(&mut self, depth: usize) -> Result<(), Delta3Error> {
        if depth > MAX_DEPTH {
            return Err(self.err(Delta3ErrorKind::TooDeep));
        }
        loop {
            self.text()?;
            if self.at_close() {
                // Any closing tag ends it: unknown elements are not checked for balance.
                let rest = self.rest();
                let end = rest.find('>').ok_or_else(|| self.err(Delta3ErrorKind::UnterminatedTag))?;
                self.pos += end + 1;
                return Ok(());
            }
            self.open()?;
            self.skip_element(depth + 1)?;
        }
    }

    fn record(&mut self) -> Result<Delta3Record<'a>, Delta3Error> {
        self.skip_ws();
        if self.pos >= self.s.len() {
            return Err(self.err(Delta3ErrorKind::Empty));
        }
        let start = self.pos;
        let name = self.open()?;
        match name {
            "Detail" => self.detail(start).map(Delta3Record::Detail),
            "CallLost" => {
                let t = self.text_element("CallLost")?;
                lost(t, start, false).map(Delta3Record::CallLost)
            }
            "LinkLost" => {
                let t = self.text_element("LinkLost")?;
                lost(t, start, true).map(Delta3Record::LinkLost)
            }
            "AttemptReject" => {
                let t = self.text_element("AttemptReject")?;
                attempt_reject(t, start).map(Delta3Record::AttemptReject)
            }
            other => Err(Delta3Error { offset: start, kind: Delta3ErrorKind::UnknownRecord(other.to_owned()) }),
        }
    }

    fn detail(&mut self, start: usize) -> Result<Detail<'a>, Delta3Error> {
        let mut call = None;
        let mut party_a = None;
        let mut party_b = None;
        let mut targets = Vec::new();
        while !self.at_close() {
            let at = self.pos;
            match self.open()? {
                "Call" => call = Some(call_fields(self.text_element("Call")?, at)?),
                "PartyA" => party_a = Some(party(self.text_element("PartyA")?, at)?),
                "PartyB" => party_b = Some(party(self.text_element("PartyB")?, at)?),
                "Target_list" => {
                    while !self.at_close() {
                        let at = self.pos;
                        match self.open()? {
                            "Target" => targets.push(target(self.text_element("Target")?, at)?),
                            _ => self.skip_element(2)?,
                        }
                    }
                    self.close("Target_list")?;
                }
                _ => self.skip_element(1)?,
            }
        }
        self.close("Detail")?;
        let missing = |what| Delta3Error { offset: start, kind: Delta3ErrorKind::MissingElement(what) };
        Ok(Detail {
            call: call.ok_or_else(|| missing("Call"))?,
            party_a: party_a.ok_or_else(|| missing("PartyA"))?,
            party_b,
            targets,
        })
    }
}

/// The position of an ASCII byte; a plain loop beats `memchr` on the short fields of Delta3.
fn find_byte(s: &str, byte: u8) -> Option<usize> {
    s.as_bytes().iter().position(|&b| b == byte)
}

/// `str::trim_start` with an ASCII fast path.
fn trim_start(s: &str) -> &str {
    match s.as_bytes().first() {
        Some(b) if b.is_ascii_whitespace() || *b >= 0x80 => s.trim_start(),
        _ => s,
    }
}

/// `str::trim_end` with an ASCII fast path.
fn trim_end(s: &str) -> &str {
    match s.as_bytes().last() {
        Some(b) if b.is_ascii_whitespace() || *b >= 0x80 => s.trim_end(),
        _ => s,
    }
}

/// Quote-aware comma-separated fields of one element's text.
struct Fields<'a> {
    rest: Option<&'a str>,
    offset: usize,
}

impl<'a> Fields<'a> {
    fn new(text: &'a str, offset: usize) -> Fields<'a> {
        Fields { rest: Some(text), offset }
    }

    /// The next field, trimmed and unquoted; empty when the fields ran out.
    fn text(&mut self) -> Result<Cow<'a, str>, Delta3Error> {
        let Some(rest) = self.rest else { return Ok(Cow::Borrowed("")) };
        let trimmed = trim_start(rest);
        if let Some(q) = trimmed.strip_prefix('"') {
            // Find the closing quote; `""` is an escaped quote.
            let bytes = q.as_bytes();
            let mut i = 0;
            let mut escaped = false;
            let end = loop {
                match bytes.get(i) {
                    None => return Err(Delta3Error { offset: self.offset, kind: Delta3ErrorKind::UnterminatedQuote }),
                    Some(b'"') if bytes.get(i + 1) == Some(&b'"') => {
                        escaped = true;
                        i += 2;
                    }
                    Some(b'"') => break i,
                    Some(_) => i += 1,
                }
            };
            let value = &q[..end];
            let after = &q[end + 1..];
            self.rest = find_byte(after, b',').map(|c| &after[c + 1..]);
            Ok(if escaped { Cow::Owned(value.replace("\"\"", "\"")) } else { Cow::Borrowed(value) })
        } else {
            let (value, next) = match find_byte(trimmed, b',') {
                Some(c) => (&trimmed[..c], Some(&trimmed[c + 1..])),
                None => (trimmed, None),
            };
            self.rest = next;
            Ok(Cow::Borrowed(trim_end(value)))
        }
    }

    fn required(&mut self, what: &'static str) -> Result<Cow<'a, str>, Delta3Error> {
        let v = self.text()?;
        if v.is_empty() {
            return Err(Delta3Error { offset: self.offset, kind: Delta3ErrorKind::MissingField(what) });
        }
        Ok(v)
    }

    /// A number; empty or not a number is `None`.
    fn num(&mut self) -> Result<Option<u32>, Delta3Error> {
        Ok(self.text()?.parse().ok())
    }

    fn num64(&mut self) -> Result<Option<u64>, Delta3Error> {
        Ok(self.text()?.parse().ok())
    }
}

fn call_fields(text: &str, offset: usize) -> Result<CallFields<'_>, Delta3Error> {
    let mut f = Fields::new(text, offset);
    Ok(CallFields {
        node: f.required("node identifier")?,
        call_id: f.required("call id")?,
        account_code: f.text()?,
        auth_code: f.text()?,
        tag: f.text()?,
        transfer_cause: f.num()?,
        owner_hunt_group: f.text()?,
        original_hunt_group: f.text()?,
        original_user: f.text()?,
        target_hunt_group: f.text()?,
        target_user: f.text()?,
        vm_message: f.text()?,
        vm_length: f.num()?,
        queue: f.num()?,
        timestamp: f.num64()?,
        overflow: f.text()?,
        ivr_transfer: f.text()?,
        ivr_time: f.num64()?,
    })
}

fn party(text: &str, offset: usize) -> Result<Party<'_>, Delta3Error> {
    let mut f = Fields::new(text, offset);
    Ok(Party {
        end_id: f.required("end identifier")?,
        direction: f.num()?,
        state: f.num()?,
        audio_path: f.num()?,
        tone: f.num()?,
        remote: f.num()?,
        public_line: f.num()?,
        flags: f.num()?,
        emergency_location: f.num()?,
        equipment_class: f.num()?,
        equipment_type: f.num()?,
        description: f.text()?,
        identity: f.text()?,
        called_type: f.num()?,
        called_reason: f.num()?,
        did: f.text()?,
        dialled: f.text()?,
        on_behalf: f.text()?,
        target_number: f.text()?,
        target_subaddr: f.text()?,
        purpose: f.text()?,
        cli: f.text()?,
        cli_presentation: f.num()?,
        name_type: f.num()?,
        name: f.text()?,
        related_end_id: f.text()?,
    })
}

fn target(text: &str, offset: usize) -> Result<Target<'_>, Delta3Error> {
    let mut f = Fields::new(text, offset);
    Ok(Target {
        end_id: f.required("end identifier")?,
        remote: f.num()?,
        public_line: f.num()?,
        equipment_class: f.num()?,
        equipment_type: f.num()?,
        description: f.text()?,
        identity: f.text()?,
        called_type: f.num()?,
        called_reason: f.num()?,
        target_number: f.text()?,
        target_subaddr: f.text()?,
        purpose: f.text()?,
        cli: f.text()?,
        cli_presentation: f.num()?,
    })
}

fn lost(text: &str, offset: usize, link: bool) -> Result<Lost<'_>, Delta3Error> {
    let mut f = Fields::new(text, offset);
    Ok(Lost {
        node: f.text()?,
        end_id: f.required("end identifier")?,
        cleared_inbound: f.num()?,
        cause: f.num()?,
        timestamp: f.num64()?,
        link_ref: if link { f.text()? } else { Cow::Borrowed("") },
    })
}

fn attempt_reject(text: &str, offset: usize) -> Result<AttemptReject<'_>, Delta3Error> {
    let mut f = Fields::new(text, offset);
    Ok(AttemptReject {
        node: f.text()?,
        end_id: f.required("end identifier")?,
        user: f.text()?,
        qualifier: f.text()?,
        timestamp: f.num64()?,
    })
}

// ---------------------------------------------------------------------------------------------
// Writing

/// A field value to write.
enum Out<'s> {
    Text(&'s str),
    /// Always quoted when not empty (party name, IVR transfer).
    Quoted(&'s str),
    Num(Option<u64>),
}

fn n(v: Option<u32>) -> Out<'static> {
    Out::Num(v.map(u64::from))
}

fn needs_quotes(s: &str) -> bool {
    s.contains([',', '"', '<', '>']) || s.trim() != s || s.contains('\0')
}

/// Writes fields comma-separated, omitting trailing empty fields.
fn write_fields(f: &mut fmt::Formatter<'_>, fields: &[Out<'_>]) -> fmt::Result {
    let empty = |o: &Out<'_>| match o {
        Out::Text(s) | Out::Quoted(s) => s.is_empty(),
        Out::Num(v) => v.is_none(),
    };
    let len = fields.iter().rposition(|o| !empty(o)).map_or(0, |i| i + 1);
    for (i, field) in fields[..len].iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        match field {
            Out::Text(s) if !needs_quotes(s) => f.write_str(s)?,
            Out::Text(s) | Out::Quoted(s) if !s.is_empty() => write!(f, "\"{}\"", s.replace('"', "\"\""))?,
            Out::Text(_) | Out::Quoted(_) => {}
            Out::Num(Some(v)) => write!(f, "{v}")?,
            Out::Num(None) => {}
        }
    }
    Ok(())
}

impl fmt::Display for CallFields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_fields(
            f,
            &[
                Out::Text(&self.node),
                Out::Text(&self.call_id),
                Out::Text(&self.account_code),
                Out::Text(&self.auth_code),
                Out::Text(&self.tag),
                n(self.transfer_cause),
                Out::Text(&self.owner_hunt_group),
                Out::Text(&self.original_hunt_group),
                Out::Text(&self.original_user),
                Out::Text(&self.target_hunt_group),
                Out::Text(&self.target_user),
                Out::Text(&self.vm_message),
                n(self.vm_length),
                n(self.queue),
                Out::Num(self.timestamp),
                Out::Text(&self.overflow),
                Out::Quoted(&self.ivr_transfer),
                Out::Num(self.ivr_time),
            ],
        )
    }
}

impl fmt::Display for Party<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_fields(
            f,
            &[
                Out::Text(&self.end_id),
                n(self.direction),
                n(self.state),
                n(self.audio_path),
                n(self.tone),
                n(self.remote),
                n(self.public_line),
                n(self.flags),
                n(self.emergency_location),
                n(self.equipment_class),
                n(self.equipment_type),
                Out::Text(&self.description),
                Out::Text(&self.identity),
                n(self.called_type),
                n(self.called_reason),
                Out::Text(&self.did),
                Out::Text(&self.dialled),
                Out::Text(&self.on_behalf),
                Out::Text(&self.target_number),
                Out::Text(&self.target_subaddr),
                Out::Text(&self.purpose),
                Out::Text(&self.cli),
                n(self.cli_presentation),
                n(self.name_type),
                Out::Quoted(&self.name),
                Out::Text(&self.related_end_id),
            ],
        )
    }
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_fields(
            f,
            &[
                Out::Text(&self.end_id),
                n(self.remote),
                n(self.public_line),
                n(self.equipment_class),
                n(self.equipment_type),
                Out::Text(&self.description),
                Out::Text(&self.identity),
                n(self.called_type),
                n(self.called_reason),
                Out::Text(&self.target_number),
                Out::Text(&self.target_subaddr),
                Out::Text(&self.purpose),
                Out::Text(&self.cli),
                n(self.cli_presentation),
            ],
        )
    }
}

impl fmt::Display for Delta3Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Delta3Record::Detail(d) => {
                write!(f, "<Detail><Call>{}</Call><PartyA>{}</PartyA>", d.call, d.party_a)?;
                if let Some(b) = &d.party_b {
                    write!(f, "<PartyB>{b}</PartyB>")?;
                }
                if !d.targets.is_empty() {
                    f.write_str("<Target_list>")?;
                    for t in &d.targets {
                        write!(f, "<Target>{t}</Target>")?;
                    }
                    f.write_str("</Target_list>")?;
                }
                f.write_str("</Detail>")
            }
            Delta3Record::CallLost(l) | Delta3Record::LinkLost(l) => {
                let name = self.kind();
                write!(f, "<{name}>")?;
                let mut fields = vec![
                    Out::Text(&l.node),
                    Out::Text(&l.end_id),
                    n(l.cleared_inbound),
                    n(l.cause),
                    Out::Num(l.timestamp),
                ];
                if matches!(self, Delta3Record::LinkLost(_)) {
                    fields.push(Out::Text(&l.link_ref));
                }
                write_fields(f, &fields)?;
                write!(f, "</{name}>")
            }
            Delta3Record::AttemptReject(r) => {
                f.write_str("<AttemptReject>")?;
                write_fields(
                    f,
                    &[
                        Out::Text(&r.node),
                        Out::Text(&r.end_id),
                        Out::Text(&r.user),
                        Out::Quoted(&r.qualifier),
                        Out::Num(r.timestamp),
                    ],
                )?;
                f.write_str("</AttemptReject>")
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests unwrap what they built themselves.
mod tests;
