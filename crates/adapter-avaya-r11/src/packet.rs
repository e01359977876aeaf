//! DevLink3 packets: frame payloads ↔ [`Packet`].
//!
//! Every payload starts with a 4-byte packet type; requests and responses then carry a 4-byte
//! request id; all integers are big-endian. Layouts are from the DevLink3 API description as
//! reproduced in the protocol notes (§2.3); they are documented, not captured from a live IP
//! Office, so the parser is lenient where the documentation is ambiguous:
//!
//! - an event's tuples start 8 bytes after the type (the reference) or 12 (calldoc's reading):
//!   the parser looks for a `0x0076000x` tuple code at 8, then at 12 ([`EventHeader`]);
//! - the event-request flags length may be the byte length or half of it (Avaya's C# tutorial):
//!   the flags are read up to their NUL either way;
//! - CMExtn comes in a plain and an extended form ([`CmExtn`]).

use std::fmt;
use std::net::Ipv4Addr;

use bytes::{BufMut, Bytes, BytesMut};
use sha1::{Digest, Sha1};

/// Packet type codes.
pub mod types {
    /// Test (keepalive) request.
    pub const TEST_REQUEST: u32 = 0x002A_0001;
    /// Test response.
    pub const TEST_RESPONSE: u32 = 0x802A_0001;
    /// Authenticate request, and the client's challenge response.
    pub const AUTH_REQUEST: u32 = 0x0030_0001;
    /// Authenticate response: a challenge or the result.
    pub const AUTH_RESPONSE: u32 = 0x8030_0001;
    /// Event request (subscribe).
    pub const EVENT_REQUEST: u32 = 0x0030_0011;
    /// Event request response.
    pub const EVENT_RESPONSE: u32 = 0x8030_0011;
    /// Unsolicited event (stream data).
    pub const EVENT: u32 = 0x1030_0011;
    /// ReadFile request.
    pub const READ_FILE_REQUEST: u32 = 0x0030_0041;
    /// ReadFile response.
    pub const READ_FILE_RESPONSE: u32 = 0x8030_0041;
}

/// Tuple codes.
pub mod tuples {
    /// Application name, in an authenticate request.
    pub const APPLICATION_NAME: u32 = 0x007E_0001;
    /// PBX type and version, in a successful authenticate result.
    pub const PBX_TYPE: u32 = 0x007D_0001;
    /// DevLink variant, in a successful authenticate result.
    pub const DEVLINK_VARIANT: u32 = 0x007D_0002;
    /// A Delta3 record (UTF-8).
    pub const CALL_DELTA3: u32 = 0x0076_0001;
    /// A Delta2 record (UTF-16BE; only with `-CD2`, which we never request).
    pub const CALL_DELTA2: u32 = 0x0076_0002;
    /// A SIPTrack record (UTF-16BE).
    pub const SIP_TRACK: u32 = 0x0076_0003;
    /// A CMExtn record (UTF-16BE, plain or extended).
    pub const CM_EXTN: u32 = 0x0076_0004;
}

/// Whether `t` is a documented packet type (used to judge candidate frames when resynchronising).
pub fn is_known_type(t: u32) -> bool {
    use types::*;
    matches!(
        t,
        TEST_REQUEST
            | TEST_RESPONSE
            | AUTH_REQUEST
            | AUTH_RESPONSE
            | EVENT_REQUEST
            | EVENT_RESPONSE
            | EVENT
            | READ_FILE_REQUEST
            | READ_FILE_RESPONSE
    )
}

/// Auth sub-codes (the u32 after the request id of authenticate packets).
mod auth {
    pub const REQUEST: u32 = 1;
    pub const CHALLENGE_PLAIN: u32 = 1;
    pub const CHALLENGE_SHA1: u32 = 2;
    pub const RESPONSE_SHA1: u32 = 0x50;
    pub const RESPONSE_PLAIN: u32 = 0x51;
}

/// A result code of a DevLink3 response, with the documented names.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResultCode(pub u32);

impl ResultCode {
    /// Success (all responses).
    pub const SUCCESS: ResultCode = ResultCode(0);
    /// Event request: some flags were accepted.
    pub const PARTIAL_SUCCESS: ResultCode = ResultCode(0x0000_0009);
    /// Test: the payload was too long.
    pub const PAYLOAD_TOO_LONG: ResultCode = ResultCode(0x8000_0001);
    /// Test: the stream lost integrity; reconnect.
    pub const STREAM_INTEGRITY_LOST: ResultCode = ResultCode(0x8000_0002);
    /// Test: an earlier authentication failed; reconnect.
    pub const STREAM_AUTHENTICATION_FAILED: ResultCode = ResultCode(0x8000_0003);
    /// Event request: an unknown flag.
    pub const UNKNOWN_FLAG: ResultCode = ResultCode(0x8000_0021);
    /// Event request: not enough licences.
    pub const INSUFFICIENT_LICENCE: ResultCode = ResultCode(0x8000_0022);
    /// Event request: the feature is not available.
    pub const FEATURE_NOT_AVAILABLE: ResultCode = ResultCode(0x8000_0023);
    /// Authentication failed (wrong user or password).
    pub const AUTHENTICATION_FAILED: ResultCode = ResultCode(0x8000_0041);
    /// Authentication: connection limits exceeded.
    pub const LIMITS_EXCEEDED: ResultCode = ResultCode(0x8000_0042);
    /// Authentication: retry later.
    pub const RETRY_LATER: ResultCode = ResultCode(0x8000_0043);
    /// Authentication: the CTI Link Pro licence is missing.
    pub const LICENCE_MISSING: ResultCode = ResultCode(0x8000_0044);

    /// The documented name, if the code is documented.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            ResultCode::SUCCESS => "SUCCESS",
            ResultCode::PARTIAL_SUCCESS => "PARTIAL SUCCESS",
            ResultCode::PAYLOAD_TOO_LONG => "PAYLOAD TOO LONG",
            ResultCode::STREAM_INTEGRITY_LOST => "STREAM INTEGRITY LOST",
            ResultCode::STREAM_AUTHENTICATION_FAILED => "STREAM AUTHENTICATION FAILED",
            ResultCode::UNKNOWN_FLAG => "UNKNOWN FLAG",
            ResultCode::INSUFFICIENT_LICENCE => "INSUFFICIENT LICENCE",
            ResultCode::FEATURE_NOT_AVAILABLE => "FEATURE NOT AVAILABLE",
            ResultCode::AUTHENTICATION_FAILED => "AUTHENTICATION FAILED",
            ResultCode::LIMITS_EXCEEDED => "LIMITS EXCEEDED",
            ResultCode::RETRY_LATER => "RETRY LATER",
            ResultCode::LICENCE_MISSING => "LICENCE MISSING",
            _ => return None,
        })
    }

    /// Success or partial success.
    pub fn is_success(self) -> bool {
        self == ResultCode::SUCCESS || self == ResultCode::PARTIAL_SUCCESS
    }
}

impl fmt::Debug for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "{:#010x}", self.0),
        }
    }
}

impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({:#010x})", self.0),
            None => write!(f, "{:#010x}", self.0),
        }
    }
}

/// A DevLink3 packet (the payload of one frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Test / keepalive request (allowed before authentication).
    TestRequest {
        /// Request id (non-zero gets a reply).
        request_id: u32,
        /// Optional payload, echoed on success.
        data: Bytes,
    },
    /// Test response.
    TestResponse {
        /// The echoed request id.
        request_id: u32,
        /// The result.
        result: ResultCode,
        /// The echoed payload.
        data: Bytes,
    },
    /// Authenticate request with the user name and optional application name tuple.
    AuthRequest {
        /// Request id.
        request_id: u32,
        /// The service user's name.
        username: String,
        /// The application name tuple (`0x007E0001`), shown by the PBX.
        application_name: Option<String>,
    },
    /// The PBX's challenge.
    AuthChallenge {
        /// The echoed request id.
        request_id: u32,
        /// SHA-1 or PLAIN.
        challenge: Challenge,
    },
    /// The client's answer to a challenge.
    AuthResponse {
        /// Request id.
        request_id: u32,
        /// The digest or the password.
        response: ChallengeResponse,
    },
    /// The authentication result.
    AuthResult {
        /// The echoed request id.
        request_id: u32,
        /// SUCCESS or why not.
        result: ResultCode,
        /// PBX type and version tuple (on success), e.g. `Avaya IP500v2 10.0.2345.67894`.
        pbx_type: Option<String>,
        /// DevLink variant tuple (on success), e.g. `Standard 1.0`.
        variant: Option<String>,
    },
    /// Event request (subscribe) with flags such as `-SIPTrack -CMExtn`.
    EventRequest {
        /// Request id.
        request_id: u32,
        /// The flags, space-separated.
        flags: String,
    },
    /// Event request response.
    EventResponse {
        /// The echoed request id.
        request_id: u32,
        /// SUCCESS, PARTIAL SUCCESS or why not.
        result: ResultCode,
        /// The flags the PBX accepted.
        accepted_flags: String,
    },
    /// An unsolicited event carrying records.
    Event(Event),
    /// A packet type we do not handle (e.g. ReadFile), kept whole.
    Unknown {
        /// Its type code.
        packet_type: u32,
        /// The payload after the type.
        payload: Bytes,
    },
}

/// The PBX's authentication challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// SHA-1: 16 random bytes.
    Sha1([u8; 16]),
    /// PLAIN (allowed over TLS only): the password is sent as is.
    Plain,
}

/// The client's answer to a challenge.
#[derive(Clone, PartialEq, Eq)]
pub enum ChallengeResponse {
    /// `SHA1(challenge ‖ password zero-padded to 16 bytes)`.
    Sha1([u8; 20]),
    /// The password, UTF-8 zero-padded to 32 bytes. Never printed.
    Plain([u8; 32]),
}

impl fmt::Debug for ChallengeResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChallengeResponse::Sha1(d) => f.debug_tuple("Sha1").field(d).finish(),
            ChallengeResponse::Plain(_) => f.write_str("Plain([redacted])"),
        }
    }
}

/// The SHA-1 challenge response: `SHA1(challenge ‖ password[..16] zero-padded to 16)`.
pub fn sha1_response(challenge: &[u8; 16], password: &str) -> [u8; 20] {
    let mut input = [0u8; 32];
    input[..16].copy_from_slice(challenge);
    let pw = password.as_bytes();
    let n = pw.len().min(16);
    input[16..16 + n].copy_from_slice(&pw[..n]);
    Sha1::digest(input).into()
}

/// The PLAIN challenge response: the password zero-padded (or truncated) to 32 bytes.
pub fn plain_response(password: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    let pw = password.as_bytes();
    let n = pw.len().min(32);
    out[..n].copy_from_slice(&pw[..n]);
    out
}

/// Where an event's tuples start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventHeader {
    /// Type, PBX address, counter: tuples at offset 8 after the type (the reference).
    Short,
    /// Type, a 4-byte id, PBX address, counter: tuples at offset 12 (calldoc's reading).
    Long {
        /// The extra 4 bytes.
        request_id: u32,
    },
}

/// An unsolicited DevLink3 event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Which header layout it used.
    pub header: EventHeader,
    /// The IPv4 address of the PBX node that originated it.
    pub pbx_address: Ipv4Addr,
    /// The PBX's event counter (increments per event).
    pub counter: u32,
    /// Its records (usually one).
    pub tuples: Vec<EventTuple>,
}

/// One record inside an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTuple {
    /// A Delta3 record (see [`crate::delta3`]).
    CallDelta3(String),
    /// A Delta2 record (only sent with `-CD2`).
    CallDelta2(String),
    /// A SIPTrack record: `START|END,epid,end_id,TRUNK|PHONE,IN|OUT,sip_call_id`.
    SipTrack(String),
    /// A CMExtn record.
    CmExtn(CmExtn),
    /// A tuple code we do not know.
    Unknown {
        /// Its code.
        code: u32,
        /// Its data.
        data: Bytes,
    },
}

/// A CMExtn record: the extension state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmExtn {
    /// The plain form, e.g. `Extn4001: CALL LOST (CMCauseForceIdle)`.
    Text(String),
    /// The extended form: three integers before the text. With `kind = 1` it is a state
    /// change with `param1` the new and `param2` the old state (e.g. `1, 2, 0, "Extn865001"`:
    /// Dialling, was Idle).
    Extended {
        /// The kind (`v`).
        kind: u32,
        /// `p1`.
        param1: u32,
        /// `p2`.
        param2: u32,
        /// The text (`Extn<number>`).
        text: String,
    },
}

/// A payload that is not a valid packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("packet {packet_type:#010x}: {kind} at offset {offset}")]
pub struct PacketError {
    /// The packet type (0 if the payload is shorter than a type).
    pub packet_type: u32,
    /// Offset in the payload where the problem is.
    pub offset: usize,
    /// What is wrong.
    pub kind: PacketErrorKind,
}

/// What is wrong with a packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketErrorKind {
    /// The payload ends inside a field.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A NUL-terminated string has no NUL.
    #[error("unterminated {0}")]
    Unterminated(&'static str),
    /// A field has a value the documentation does not allow.
    #[error("unexpected {field} {value:#x}")]
    Unexpected {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u32,
    },
    /// An event has no tuple at offset 8 or 12.
    #[error("no tuple at offset 8 or 12 of the event")]
    NoTuple,
}

/// A cursor over a payload.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    packet_type: u32,
}

impl<'a> Reader<'a> {
    fn err(&self, kind: PacketErrorKind) -> PacketError {
        PacketError { packet_type: self.packet_type, offset: self.pos, kind }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], PacketError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err(PacketErrorKind::Truncated(what))),
        }
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, PacketError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, PacketError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// A NUL-terminated UTF-8 string (lossy).
    fn cstr(&mut self, what: &'static str) -> Result<String, PacketError> {
        let rest = &self.buf[self.pos..];
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return Err(self.err(PacketErrorKind::Unterminated(what)));
        };
        let s = utf8(&rest[..nul]);
        self.pos += nul + 1;
        Ok(s)
    }

    /// `code(4) | u16 len | UTF-8\0` tuples until the end.
    fn string_tuples(&mut self) -> Result<Vec<(u32, String)>, PacketError> {
        let mut out = Vec::new();
        while self.remaining() > 0 {
            let code = self.u32("tuple code")?;
            let len = self.u16("tuple length")?;
            let data = self.take(usize::from(len), "tuple data")?;
            out.push((code, utf8(until_nul(data))));
        }
        Ok(out)
    }
}

fn until_nul(b: &[u8]) -> &[u8] {
    b.iter().position(|&c| c == 0).map_or(b, |n| &b[..n])
}

fn utf8(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(b).into_owned(),
    }
}

/// UTF-16BE to a string (lossy), stopping at a NUL code unit; an odd trailing byte is ignored.
pub fn utf16be(b: &[u8]) -> String {
    let units = b.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).take_while(|&u| u != 0);
    char::decode_utf16(units).map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER)).collect()
}

fn put_utf16be(dst: &mut BytesMut, s: &str) {
    for unit in s.encode_utf16() {
        dst.put_u16(unit);
    }
}

/// Length of a string tuple's data, clamped to what a u16 can say (encoding truncates beyond).
fn tuple_len(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn put_string_tuple(dst: &mut BytesMut, code: u32, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(usize::from(u16::MAX) - 1)];
    dst.put_u32(code);
    dst.put_u16(tuple_len(bytes.len() + 1));
    dst.put_slice(bytes);
    dst.put_u8(0);
}

fn put_utf16_tuple(dst: &mut BytesMut, code: u32, prefix: &[u32], s: &str) {
    let mut data = BytesMut::new();
    for p in prefix {
        data.put_u32(*p);
    }
    put_utf16be(&mut data, s);
    data.put_u16(0);
    let n = data.len().min(usize::from(u16::MAX));
    dst.put_u32(code);
    dst.put_u16(tuple_len(n));
    dst.put_slice(&data[..n]);
}

impl Packet {
    /// Parses a frame payload.
    pub fn parse(payload: &[u8]) -> Result<Packet, PacketError> {
        let mut r = Reader { buf: payload, pos: 0, packet_type: 0 };
        let t = r.u32("packet type")?;
        r.packet_type = t;
        match t {
            types::TEST_REQUEST => {
                let request_id = r.u32("request id")?;
                // The length and data are optional in practice (an empty test is 8 bytes).
                let data = if r.remaining() == 0 {
                    Bytes::new()
                } else {
                    let len = r.u32("test length")?;
                    Bytes::copy_from_slice(r.take(len as usize, "test data")?)
                };
                Ok(Packet::TestRequest { request_id, data })
            }
            types::TEST_RESPONSE => {
                let request_id = r.u32("request id")?;
                let result = ResultCode(r.u32("result")?);
                let data = if r.remaining() == 0 {
                    Bytes::new()
                } else {
                    let len = r.u32("test length")?;
                    Bytes::copy_from_slice(r.take(len as usize, "test data")?)
                };
                Ok(Packet::TestResponse { request_id, result, data })
            }
            types::AUTH_REQUEST => {
                let request_id = r.u32("request id")?;
                match r.u32("auth code")? {
                    auth::REQUEST => {
                        let username = r.cstr("user name")?;
                        let application_name = r
                            .string_tuples()?
                            .into_iter()
                            .find(|(code, _)| *code == tuples::APPLICATION_NAME)
                            .map(|(_, s)| s);
                        Ok(Packet::AuthRequest { request_id, username, application_name })
                    }
                    auth::RESPONSE_SHA1 => {
                        let len = r.u32("digest length")?;
                        if len != 20 {
                            return Err(r.err(PacketErrorKind::Unexpected { field: "digest length", value: len }));
                        }
                        let mut digest = [0u8; 20];
                        digest.copy_from_slice(r.take(20, "digest")?);
                        Ok(Packet::AuthResponse { request_id, response: ChallengeResponse::Sha1(digest) })
                    }
                    auth::RESPONSE_PLAIN => {
                        let len = r.u32("password length")?;
                        let data = r.take(len as usize, "password")?;
                        let mut pw = [0u8; 32];
                        let n = data.len().min(32);
                        pw[..n].copy_from_slice(&data[..n]);
                        Ok(Packet::AuthResponse { request_id, response: ChallengeResponse::Plain(pw) })
                    }
                    other => Err(r.err(PacketErrorKind::Unexpected { field: "auth code", value: other })),
                }
            }
            types::AUTH_RESPONSE => {
                let request_id = r.u32("request id")?;
                let code = r.u32("auth code")?;
                match code {
                    auth::CHALLENGE_SHA1 => {
                        let len = r.u32("challenge length")?;
                        if len != 16 {
                            return Err(r.err(PacketErrorKind::Unexpected { field: "challenge length", value: len }));
                        }
                        let mut challenge = [0u8; 16];
                        challenge.copy_from_slice(r.take(16, "challenge")?);
                        Ok(Packet::AuthChallenge { request_id, challenge: Challenge::Sha1(challenge) })
                    }
                    auth::CHALLENGE_PLAIN => Ok(Packet::AuthChallenge { request_id, challenge: Challenge::Plain }),
                    result => {
                        let mut pbx_type = None;
                        let mut variant = None;
                        if result == 0 {
                            for (code, s) in r.string_tuples()? {
                                match code {
                                    tuples::PBX_TYPE => pbx_type = Some(s),
                                    tuples::DEVLINK_VARIANT => variant = Some(s),
                                    _ => {}
                                }
                            }
                        }
                        Ok(Packet::AuthResult { request_id, result: ResultCode(result), pbx_type, variant })
                    }
                }
            }
            types::EVENT_REQUEST => {
                let request_id = r.u32("request id")?;
                let _len = r.u16("flags length")?;
                // The length is the byte length or (Avaya's C# tutorial) half of it: read to NUL.
                let flags = r.cstr("flags")?;
                Ok(Packet::EventRequest { request_id, flags })
            }
            types::EVENT_RESPONSE => {
                let request_id = r.u32("request id")?;
                let result = ResultCode(r.u32("result")?);
                let accepted_flags = if r.remaining() >= 2 {
                    let _len = r.u16("flags length")?;
                    utf8(until_nul(r.rest()))
                } else {
                    String::new()
                };
                Ok(Packet::EventResponse { request_id, result, accepted_flags })
            }
            types::EVENT => parse_event(&mut r).map(Packet::Event),
            _ => Ok(Packet::Unknown { packet_type: t, payload: Bytes::copy_from_slice(r.rest()) }),
        }
    }

    /// Writes the payload (type first, no frame header).
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Packet::TestRequest { request_id, data } => {
                dst.put_u32(types::TEST_REQUEST);
                dst.put_u32(*request_id);
                dst.put_u32(data.len() as u32);
                dst.put_slice(data);
            }
            Packet::TestResponse { request_id, result, data } => {
                dst.put_u32(types::TEST_RESPONSE);
                dst.put_u32(*request_id);
                dst.put_u32(result.0);
                dst.put_u32(data.len() as u32);
                dst.put_slice(data);
            }
            Packet::AuthRequest { request_id, username, application_name } => {
                dst.put_u32(types::AUTH_REQUEST);
                dst.put_u32(*request_id);
                dst.put_u32(auth::REQUEST);
                dst.put_slice(username.as_bytes());
                dst.put_u8(0);
                if let Some(name) = application_name {
                    put_string_tuple(dst, tuples::APPLICATION_NAME, name);
                }
            }
            Packet::AuthChallenge { request_id, challenge } => {
                dst.put_u32(types::AUTH_RESPONSE);
                dst.put_u32(*request_id);
                match challenge {
                    Challenge::Sha1(c) => {
                        dst.put_u32(auth::CHALLENGE_SHA1);
                        dst.put_u32(16);
                        dst.put_slice(c);
                    }
                    Challenge::Plain => dst.put_u32(auth::CHALLENGE_PLAIN),
                }
            }
            Packet::AuthResponse { request_id, response } => {
                dst.put_u32(types::AUTH_REQUEST);
                dst.put_u32(*request_id);
                match response {
                    ChallengeResponse::Sha1(d) => {
                        dst.put_u32(auth::RESPONSE_SHA1);
                        dst.put_u32(20);
                        dst.put_slice(d);
                    }
                    ChallengeResponse::Plain(p) => {
                        dst.put_u32(auth::RESPONSE_PLAIN);
                        dst.put_u32(32);
                        dst.put_slice(p);
                    }
                }
            }
            Packet::AuthResult { request_id, result, pbx_type, variant } => {
                dst.put_u32(types::AUTH_RESPONSE);
                dst.put_u32(*request_id);
                dst.put_u32(result.0);
                if let Some(s) = pbx_type {
                    put_string_tuple(dst, tuples::PBX_TYPE, s);
                }
                if let Some(s) = variant {
                    put_string_tuple(dst, tuples::DEVLINK_VARIANT, s);
                }
            }
            Packet::EventRequest { request_id, flags } => {
                dst.put_u32(types::EVENT_REQUEST);
                dst.put_u32(*request_id);
                let bytes = &flags.as_bytes()[..flags.len().min(usize::from(u16::MAX) - 1)];
                dst.put_u16(tuple_len(bytes.len() + 1));
                dst.put_slice(bytes);
                dst.put_u8(0);
            }
            Packet::EventResponse { request_id, result, accepted_flags } => {
                dst.put_u32(types::EVENT_RESPONSE);
                dst.put_u32(*request_id);
                dst.put_u32(result.0);
                let bytes = &accepted_flags.as_bytes()[..accepted_flags.len().min(usize::from(u16::MAX) - 1)];
                dst.put_u16(tuple_len(bytes.len() + 1));
                dst.put_slice(bytes);
                dst.put_u8(0);
            }
            Packet::Event(event) => event.encode(dst),
            Packet::Unknown { packet_type, payload } => {
                dst.put_u32(*packet_type);
                dst.put_slice(payload);
            }
        }
    }
}

fn is_event_tuple_code(b: &[u8]) -> bool {
    b.len() >= 4 && b[0] == 0x00 && b[1] == 0x76 && b[2] == 0x00 && (1..=4).contains(&b[3])
}

fn parse_event(r: &mut Reader<'_>) -> Result<Event, PacketError> {
    let body = &r.buf[r.pos..];
    let header = if body.get(8..12).is_some_and(is_event_tuple_code) || body.len() == 8 {
        EventHeader::Short
    } else if body.get(12..16).is_some_and(is_event_tuple_code) {
        EventHeader::Long { request_id: r.u32("request id")? }
    } else {
        return Err(r.err(PacketErrorKind::NoTuple));
    };
    let ip = r.take(4, "PBX address")?;
    let pbx_address = Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]);
    let counter = r.u32("counter")?;
    let mut tuples_out = Vec::with_capacity(1);
    while r.remaining() > 0 {
        let code = r.u32("tuple code")?;
        let len = r.u16("tuple length")?;
        let data = r.take(usize::from(len), "tuple data")?;
        tuples_out.push(match code {
            tuples::CALL_DELTA3 => EventTuple::CallDelta3(utf8(until_nul(data))),
            tuples::CALL_DELTA2 => EventTuple::CallDelta2(utf16be(data)),
            tuples::SIP_TRACK => EventTuple::SipTrack(utf16be(data)),
            tuples::CM_EXTN => EventTuple::CmExtn(parse_cm_extn(data)),
            code => EventTuple::Unknown { code, data: Bytes::copy_from_slice(data) },
        });
    }
    Ok(Event { header, pbx_address, counter, tuples: tuples_out })
}

/// The extended form starts with three u32s; the plain form with a UTF-16BE character, which
/// is never `00 00` (a NUL). That tells them apart [inferred; verify on a live system].
fn parse_cm_extn(data: &[u8]) -> CmExtn {
    if data.len() >= 12 && data[0] == 0 && data[1] == 0 {
        let n = |i: usize| u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
        CmExtn::Extended { kind: n(0), param1: n(4), param2: n(8), text: utf16be(&data[12..]) }
    } else {
        CmExtn::Text(utf16be(data))
    }
}

impl Event {
    /// Writes the payload (type first).
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.put_u32(types::EVENT);
        if let EventHeader::Long { request_id } = self.header {
            dst.put_u32(request_id);
        }
        dst.put_slice(&self.pbx_address.octets());
        dst.put_u32(self.counter);
        for tuple in &self.tuples {
            match tuple {
                EventTuple::CallDelta3(s) => put_string_tuple(dst, tuples::CALL_DELTA3, s),
                EventTuple::CallDelta2(s) => put_utf16_tuple(dst, tuples::CALL_DELTA2, &[], s),
                EventTuple::SipTrack(s) => put_utf16_tuple(dst, tuples::SIP_TRACK, &[], s),
                EventTuple::CmExtn(CmExtn::Text(s)) => put_utf16_tuple(dst, tuples::CM_EXTN, &[], s),
                EventTuple::CmExtn(CmExtn::Extended { kind, param1, param2, text }) => {
                    put_utf16_tuple(dst, tuples::CM_EXTN, &[*kind, *param1, *param2], text)
                }
                EventTuple::Unknown { code, data } => {
                    let n = data.len().min(usize::from(u16::MAX));
                    dst.put_u32(*code);
                    dst.put_u16(tuple_len(n));
                    dst.put_slice(&data[..n]);
                }
            }
        }
    }
}

/// A parsed SIPTrack record: `START|END,epid,end_id,TRUNK|PHONE,IN|OUT,sip_call_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipTrack<'a> {
    /// `START` (the SIP dialog began) or `END`.
    pub started: bool,
    /// The Delta3 end identifier of the party (`c0a82a1f000003eb`).
    pub end_id: &'a str,
    /// The Delta2-style endpoint id (`17.1003.1`).
    pub delta2_id: &'a str,
    /// `TRUNK` or `PHONE`.
    pub sip_type: &'a str,
    /// `IN` or `OUT`.
    pub direction: &'a str,
    /// The SIP Call-ID.
    pub call_id: &'a str,
}

/// A SIPTrack string that does not have the documented shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SipTrackError {
    /// Fewer than six comma-separated fields.
    #[error("SIPTrack record has {0} fields, expected 6")]
    Fields(usize),
    /// The event is neither START nor END.
    #[error("SIPTrack event {0:?} is neither START nor END")]
    Event(String),
    /// The end identifier or the Call-ID is empty.
    #[error("SIPTrack record has an empty end identifier or Call-ID")]
    Empty,
}

impl<'a> SipTrack<'a> {
    /// Parses a SIPTrack string. The Call-ID is the rest of the line after the fifth comma,
    /// so a Call-ID that contains commas survives.
    pub fn parse(s: &'a str) -> Result<SipTrack<'a>, SipTrackError> {
        let mut parts = s.trim().splitn(6, ',');
        let mut next = || parts.next().map(str::trim);
        let fields: [Option<&str>; 6] = [next(), next(), next(), next(), next(), next()];
        let count = fields.iter().flatten().count();
        let [Some(event), Some(end_id), Some(delta2_id), Some(sip_type), Some(direction), Some(call_id)] = fields
        else {
            return Err(SipTrackError::Fields(count));
        };
        let started = match event {
            e if e.eq_ignore_ascii_case("START") => true,
            e if e.eq_ignore_ascii_case("END") => false,
            e => return Err(SipTrackError::Event(e.to_owned())),
        };
        if end_id.is_empty() || call_id.is_empty() {
            return Err(SipTrackError::Empty);
        }
        Ok(SipTrack { started, end_id, delta2_id, sip_type, direction, call_id })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests unwrap what they built themselves.
mod tests;
