//! DevLink3 framing: bytes ↔ frames.
//!
//! A DevLink3 frame is a `0x49` start byte, a length and a payload (DevLink3 description §2.1,
//! `docs/pbx/avaya-ip-office-r11.md`):
//!
//! ```text
//! 2-byte form: 49 | LL LL (u16 BE, < 0x8000)          | payload      length = payload + 3
//! 3-byte form: 49 | 1aaaaaaa 0bbbbbbb cccccccc (7+7+8) | payload      length = payload + 4
//! ```
//!
//! [`FrameCodec`] only finds frame boundaries; [`PacketCodec`] adds the packet layer
//! ([`crate::packet`]) on top, which is what the client and the simulator use.
//!
//! A length outside `[header + 4, max_frame_bytes]` or a wrong start byte means the boundaries
//! are lost. The decoder then scans for the next *plausible* frame (start byte, a length within
//! limits, and a known packet type) and reports what it skipped as one
//! [`Frame::Skipped`] item. It returns `Err` only when it has scanned more than
//! `max_frame_bytes` without finding one: the peer does not speak DevLink3 (a TLS server on the
//! plain port, say) and the connection should be dropped.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::packet::{self, Packet, PacketError};

/// The frame start byte (`'I'`).
pub const START_BYTE: u8 = 0x49;

/// The largest total length the 2-byte form can carry.
pub const MAX_SHORT_FRAME: usize = 0x7FFF;

/// The largest total length the 3-byte form can carry (7 + 7 + 8 bits).
pub const MAX_LONG_FRAME: usize = (1 << 22) - 1;

/// The smallest payload a frame can have: a 4-byte packet type.
const MIN_PAYLOAD: usize = 4;

/// One item of the frame decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete frame's payload (packet type first).
    Payload(Bytes),
    /// Bytes that were not a frame were skipped; the stream is in step again after them.
    Skipped {
        /// How many bytes were skipped.
        bytes: usize,
        /// What was wrong with the first of them.
        reason: SkipReason,
    },
}

/// Why the decoder left frame boundaries and skipped bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    /// A frame did not start with `0x49`.
    #[error("expected start byte 0x49, found {0:#04x}")]
    BadStartByte(u8),
    /// A declared length was shorter than the header plus a packet type.
    #[error("declared frame length {0} is too short")]
    TooShort(usize),
    /// A declared length exceeded `max_frame_bytes`.
    #[error("declared frame length {length} exceeds the maximum of {max} bytes")]
    TooLong {
        /// The declared total length.
        length: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("the stream ended inside a frame")]
    TruncatedAtEof,
}

/// The stream cannot be framed any more: drop the connection.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Reading or writing the socket failed.
    #[error("DevLink3 socket error: {0}")]
    Io(#[from] std::io::Error),
    /// No plausible frame within `limit` bytes (`max_frame_bytes`): the peer does not speak
    /// DevLink3.
    #[error("no DevLink3 frame found in {limit} bytes; the peer does not speak DevLink3")]
    Desynchronised {
        /// How many bytes were scanned at most.
        limit: usize,
    },
    /// An outgoing payload does not fit in a frame.
    #[error("outgoing payload of {len} bytes exceeds the maximum frame of {max} bytes")]
    PayloadTooLong {
        /// The payload length.
        len: usize,
        /// The maximum total frame length.
        max: usize,
    },
}

/// Where the decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At a frame boundary.
    Head,
    /// Inside a frame whose `header` bytes were consumed: `len` payload bytes follow.
    Data { len: usize, header: usize },
    /// Boundaries lost: scanning for a plausible frame.
    Scanning { skipped: usize, reason: SkipReason },
}

/// DevLink3 frame codec (bytes ↔ [`Frame`]). See the module documentation.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame_bytes: usize,
    state: State,
}

/// A decoded header: total length and header size.
#[derive(Debug, Clone, Copy)]
struct Header {
    total: usize,
    header: usize,
}

/// Reads a header from `buf` if enough bytes are there. `None`: need more bytes.
fn read_header(buf: &[u8]) -> Option<Header> {
    let b1 = *buf.get(1)?;
    if b1 & 0x80 == 0 {
        let b2 = *buf.get(2)?;
        Some(Header { total: usize::from(u16::from_be_bytes([b1, b2])), header: 3 })
    } else {
        let b2 = *buf.get(2)?;
        let b3 = *buf.get(3)?;
        let total = (usize::from(b1 & 0x7F) << 15) | (usize::from(b2 & 0x7F) << 8) | usize::from(b3);
        Some(Header { total, header: 4 })
    }
}

impl FrameCodec {
    /// A codec that accepts frames of at most `max_frame_bytes` total bytes (header included),
    /// clamped to what the 3-byte length form can express and to at least one minimal frame.
    pub fn new(max_frame_bytes: usize) -> FrameCodec {
        FrameCodec { max_frame_bytes: max_frame_bytes.clamp(3 + MIN_PAYLOAD, MAX_LONG_FRAME), state: State::Head }
    }

    /// The maximum total frame length.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Checks a header against the limits.
    fn check(&self, h: Header) -> Result<usize, SkipReason> {
        let payload = h.total.checked_sub(h.header).ok_or(SkipReason::TooShort(h.total))?;
        if payload < MIN_PAYLOAD {
            return Err(SkipReason::TooShort(h.total));
        }
        if h.total > self.max_frame_bytes {
            return Err(SkipReason::TooLong { length: h.total, max: self.max_frame_bytes });
        }
        Ok(payload)
    }

    /// Scans `src` for a plausible frame. Discards what cannot start one and returns `true`
    /// when `src` now starts with a plausible frame, `false` when more bytes are needed.
    fn scan(&self, src: &mut BytesMut, skipped: &mut usize) -> bool {
        let mut pos = 0;
        loop {
            let Some(offset) = src[pos..].iter().position(|&b| b == START_BYTE) else {
                pos = src.len();
                break;
            };
            pos += offset;
            let candidate = &src[pos..];
            let needed = match candidate.get(1) {
                Some(b1) if b1 & 0x80 != 0 => 4 + MIN_PAYLOAD,
                Some(_) => 3 + MIN_PAYLOAD,
                None => usize::MAX,
            };
            if candidate.len() < needed {
                // Cannot judge it yet; keep it.
                break;
            }
            let plausible = read_header(candidate).is_some_and(|h| {
                self.check(h).is_ok() && {
                    let t = &candidate[h.header..h.header + 4];
                    packet::is_known_type(u32::from_be_bytes([t[0], t[1], t[2], t[3]]))
                }
            });
            if plausible {
                *skipped += pos;
                src.advance(pos);
                return true;
            }
            pos += 1;
        }
        *skipped += pos;
        src.advance(pos);
        false
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        loop {
            match self.state {
                State::Head => {
                    let Some(&first) = src.first() else { return Ok(None) };
                    if first != START_BYTE {
                        self.state = State::Scanning { skipped: 0, reason: SkipReason::BadStartByte(first) };
                        continue;
                    }
                    let Some(h) = read_header(src) else { return Ok(None) };
                    match self.check(h) {
                        Ok(len) => {
                            src.advance(h.header);
                            // The length is within the maximum: reserving is bounded.
                            src.reserve(len.saturating_sub(src.len()));
                            self.state = State::Data { len, header: h.header };
                        }
                        Err(reason) => {
                            // Skip the start byte so the scan looks past this header.
                            src.advance(1);
                            self.state = State::Scanning { skipped: 1, reason };
                        }
                    }
                }
                State::Data { len, .. } => {
                    if src.len() < len {
                        return Ok(None);
                    }
                    self.state = State::Head;
                    return Ok(Some(Frame::Payload(src.split_to(len).freeze())));
                }
                State::Scanning { mut skipped, reason } => {
                    let found = self.scan(src, &mut skipped);
                    // Checked before `found` so that the outcome does not depend on how the
                    // bytes were split into reads.
                    if skipped > self.max_frame_bytes {
                        return Err(CodecError::Desynchronised { limit: self.max_frame_bytes });
                    }
                    if found {
                        self.state = State::Head;
                        return Ok(Some(Frame::Skipped { bytes: skipped, reason }));
                    }
                    self.state = State::Scanning { skipped, reason };
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        let left = src.len();
        let state = std::mem::replace(&mut self.state, State::Head);
        src.clear();
        Ok(match state {
            State::Head if left == 0 => None,
            State::Scanning { skipped, reason } => Some(Frame::Skipped { bytes: skipped + left, reason }),
            // The header was consumed already; count it as well.
            State::Data { header, .. } => {
                Some(Frame::Skipped { bytes: header + left, reason: SkipReason::TruncatedAtEof })
            }
            State::Head => Some(Frame::Skipped { bytes: left, reason: SkipReason::TruncatedAtEof }),
        })
    }
}

/// Writes the frame header for a payload of `len` bytes.
pub fn put_header(dst: &mut BytesMut, len: usize) {
    let short = len + 3;
    if short <= MAX_SHORT_FRAME {
        dst.put_u8(START_BYTE);
        // `short` fits in 15 bits.
        dst.put_u16(short as u16);
    } else {
        let total = len + 4;
        dst.put_u8(START_BYTE);
        dst.put_u8(((total >> 15) as u8 & 0x7F) | 0x80);
        dst.put_u8((total >> 8) as u8 & 0x7F);
        dst.put_u8(total as u8);
    }
}

/// Total length of a frame carrying `len` payload bytes.
pub fn frame_len(len: usize) -> usize {
    if len + 3 <= MAX_SHORT_FRAME { len + 3 } else { len + 4 }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = CodecError;

    /// Frames one payload (packet type first).
    fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        let total = frame_len(payload.len());
        if total > self.max_frame_bytes {
            return Err(CodecError::PayloadTooLong { len: payload.len(), max: self.max_frame_bytes });
        }
        dst.reserve(total);
        put_header(dst, payload.len());
        dst.extend_from_slice(payload);
        Ok(())
    }
}

/// One item of the packet decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A packet.
    Packet(Packet),
    /// A frame whose payload is not a valid packet; counted and skipped.
    Malformed {
        /// Why.
        reason: PacketError,
    },
    /// Bytes between frames were skipped (see [`Frame::Skipped`]).
    Skipped {
        /// How many.
        bytes: usize,
        /// Why the decoder left frame boundaries.
        reason: SkipReason,
    },
}

/// DevLink3 packet codec: [`FrameCodec`] plus [`Packet`] parsing and encoding.
#[derive(Debug, Clone)]
pub struct PacketCodec {
    frames: FrameCodec,
}

impl PacketCodec {
    /// A packet codec with frames of at most `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> PacketCodec {
        PacketCodec { frames: FrameCodec::new(max_frame_bytes) }
    }

    fn convert(frame: Option<Frame>) -> Option<Incoming> {
        frame.map(|frame| match frame {
            Frame::Payload(payload) => match Packet::parse(&payload) {
                Ok(packet) => Incoming::Packet(packet),
                Err(reason) => Incoming::Malformed { reason },
            },
            Frame::Skipped { bytes, reason } => Incoming::Skipped { bytes, reason },
        })
    }
}

impl Decoder for PacketCodec {
    type Item = Incoming;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Incoming>, CodecError> {
        self.frames.decode(src).map(Self::convert)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Incoming>, CodecError> {
        self.frames.decode_eof(src).map(Self::convert)
    }
}

impl Encoder<&Packet> for PacketCodec {
    type Error = CodecError;

    fn encode(&mut self, packet: &Packet, dst: &mut BytesMut) -> Result<(), CodecError> {
        let mut payload = BytesMut::new();
        packet.encode(&mut payload);
        self.frames.encode(&payload[..], dst)
    }
}

impl Encoder<Packet> for PacketCodec {
    type Error = CodecError;

    fn encode(&mut self, packet: Packet, dst: &mut BytesMut) -> Result<(), CodecError> {
        Encoder::<&Packet>::encode(self, &packet, dst)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests unwrap what they built themselves.
mod tests;
