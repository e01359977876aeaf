//! HEPv3 (EEP) packets: decoding and stream framing (protocols/sip-and-correlation.md §3).
//!
//! A packet is `"HEP3"`, a 16-bit big-endian total length (including the 6-byte header), then
//! chunks of `vendor u16, type u16, length u16 (including these 6 bytes), payload`. Generic
//! chunks (vendor 0) are interpreted; chunks of other vendors, and generic types we do not
//! use, are skipped by their length. Over UDP one datagram is one packet and the length must
//! equal the datagram's; over TCP packets follow each other and the length frames them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The magic of a HEPv3 packet.
pub const MAGIC: &[u8; 4] = b"HEP3";
/// The smallest packet: the header alone.
pub const HEADER_LEN: usize = 6;

/// Generic chunk types this decoder reads (vendor 0x0000).
pub mod chunk {
    /// u8 IP protocol family (2 = IPv4, 10 = IPv6).
    pub const IP_FAMILY: u16 = 0x0001;
    /// u8 IP protocol (17 UDP, 6 TCP; Kamailio sends 22 for TLS/WS).
    pub const IP_PROTO: u16 = 0x0002;
    /// 4 bytes IPv4 source.
    pub const IPV4_SRC: u16 = 0x0003;
    /// 4 bytes IPv4 destination.
    pub const IPV4_DST: u16 = 0x0004;
    /// 16 bytes IPv6 source.
    pub const IPV6_SRC: u16 = 0x0005;
    /// 16 bytes IPv6 destination.
    pub const IPV6_DST: u16 = 0x0006;
    /// u16 source port.
    pub const SRC_PORT: u16 = 0x0007;
    /// u16 destination port.
    pub const DST_PORT: u16 = 0x0008;
    /// u32 capture time, seconds since the epoch.
    pub const TIME_SECS: u16 = 0x0009;
    /// u32 capture time, microseconds offset.
    pub const TIME_USECS: u16 = 0x000a;
    /// u8 protocol type (1 = SIP).
    pub const PROTO_TYPE: u16 = 0x000b;
    /// u32 capture agent id.
    pub const CAPTURE_ID: u16 = 0x000c;
    /// Authentication key (plain text).
    pub const AUTH_KEY: u16 = 0x000e;
    /// The captured payload.
    pub const PAYLOAD: u16 = 0x000f;
    /// The captured payload, compressed.
    pub const PAYLOAD_COMPRESSED: u16 = 0x0010;
    /// Internal correlation id.
    pub const CORRELATION_ID: u16 = 0x0011;
    /// u16 VLAN id.
    pub const VLAN: u16 = 0x0012;
    /// Capture agent name.
    pub const NODE_NAME: u16 = 0x0013;
}

/// `PROTO_TYPE` of SIP.
pub const PROTO_TYPE_SIP: u8 = 0x01;

/// Why a packet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HepError {
    /// Fewer than 6 bytes, or a chunk header cut short.
    #[error("packet truncated")]
    Truncated,
    /// Not `HEP3` (HEPv1/v2 and `EEP1` are not supported).
    #[error("not a HEPv3 packet")]
    BadMagic,
    /// The length field is below 6, above the maximum, or (UDP) not the datagram's length.
    #[error("packet length {declared} does not fit (have {actual}, max {max})")]
    BadLength {
        /// The length field.
        declared: usize,
        /// The bytes there are.
        actual: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A chunk's length is below 6 or runs past the packet.
    #[error("chunk type {chunk_type:#06x} at offset {offset} has a bad length")]
    BadChunk {
        /// Its type.
        chunk_type: u16,
        /// Where it starts.
        offset: usize,
    },
    /// A fixed-size generic chunk has the wrong size.
    #[error("chunk type {0:#06x} has the wrong size")]
    BadChunkSize(u16),
}

impl HepError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            HepError::Truncated => "truncated",
            HepError::BadMagic => "magic",
            HepError::BadLength { .. } => "length",
            HepError::BadChunk { .. } | HepError::BadChunkSize(_) => "chunk",
        }
    }
}

/// A decoded HEPv3 packet (borrowing its byte fields from the input).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HepPacket<'a> {
    /// IP protocol family as sent.
    pub ip_family: Option<u8>,
    /// IP protocol (17 UDP, 6 TCP, 22 = Kamailio's TLS/WS marker).
    pub ip_proto: Option<u8>,
    /// Source address (IPv4 or IPv6, whichever chunk is present).
    pub src_ip: Option<IpAddr>,
    /// Destination address.
    pub dst_ip: Option<IpAddr>,
    /// Source port.
    pub src_port: Option<u16>,
    /// Destination port.
    pub dst_port: Option<u16>,
    /// Capture time, seconds.
    pub time_secs: Option<u32>,
    /// Capture time, microseconds offset.
    pub time_usecs: Option<u32>,
    /// Protocol type (1 = SIP).
    pub proto_type: Option<u8>,
    /// Capture agent id.
    pub capture_id: Option<u32>,
    /// Authentication key.
    pub auth_key: Option<&'a [u8]>,
    /// The captured payload.
    pub payload: Option<&'a [u8]>,
    /// Whether a compressed payload (0x0010, not supported) was present.
    pub compressed_payload: bool,
    /// Internal correlation id.
    pub correlation_id: Option<&'a [u8]>,
    /// VLAN id.
    pub vlan: Option<u16>,
    /// Capture agent name.
    pub node_name: Option<&'a [u8]>,
    /// How many chunks were skipped (other vendors, types not read here).
    pub skipped_chunks: u16,
}

impl HepPacket<'_> {
    /// The capture time in milliseconds since the epoch, when the packet has one.
    pub fn captured_at_ms(&self) -> Option<u64> {
        let secs = u64::from(self.time_secs?);
        Some(secs * 1000 + u64::from(self.time_usecs.unwrap_or(0)) / 1000)
    }

    /// Whether the packet carries `key` as its authentication key (compared in constant time).
    pub fn has_auth_key(&self, key: &[u8]) -> bool {
        let Some(got) = self.auth_key else { return false };
        if got.len() != key.len() {
            return false;
        }
        got.iter().zip(key).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// The length of the packet at the start of a stream buffer: `Ok(None)` until the 6-byte
/// header is there; `Ok(Some(len))` once it is (the caller waits for `len` bytes). An error
/// means the stream's framing is lost.
pub fn frame_len(buf: &[u8], max_len: usize) -> Result<Option<usize>, HepError> {
    if buf.len() < HEADER_LEN {
        // Check the magic as early as possible so garbage fails fast.
        if !MAGIC.starts_with(&buf[..buf.len().min(4)]) {
            return Err(HepError::BadMagic);
        }
        return Ok(None);
    }
    if &buf[..4] != MAGIC {
        return Err(HepError::BadMagic);
    }
    let declared = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
    if declared < HEADER_LEN || declared > max_len {
        return Err(HepError::BadLength { declared, actual: buf.len(), max: max_len });
    }
    Ok(Some(declared))
}

/// Decodes one whole packet (a UDP datagram, or a frame cut by [`frame_len`]).
pub fn decode(buf: &[u8]) -> Result<HepPacket<'_>, HepError> {
    if buf.len() < HEADER_LEN {
        return Err(HepError::Truncated);
    }
    if &buf[..4] != MAGIC {
        return Err(HepError::BadMagic);
    }
    let declared = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
    if declared != buf.len() {
        return Err(HepError::BadLength { declared, actual: buf.len(), max: usize::from(u16::MAX) });
    }
    let mut p = HepPacket::default();
    let mut off = HEADER_LEN;
    while off < buf.len() {
        let head = buf.get(off..off + 6).ok_or(HepError::Truncated)?;
        let vendor = u16::from_be_bytes([head[0], head[1]]);
        let ty = u16::from_be_bytes([head[2], head[3]]);
        let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
        if len < 6 || off + len > buf.len() {
            return Err(HepError::BadChunk { chunk_type: ty, offset: off });
        }
        let data = &buf[off + 6..off + len];
        off += len;
        if vendor != 0 {
            p.skipped_chunks = p.skipped_chunks.saturating_add(1);
            continue;
        }
        let size = |n: usize| if data.len() == n { Ok(data) } else { Err(HepError::BadChunkSize(ty)) };
        match ty {
            chunk::IP_FAMILY => p.ip_family = Some(size(1)?[0]),
            chunk::IP_PROTO => p.ip_proto = Some(size(1)?[0]),
            chunk::PROTO_TYPE => p.proto_type = Some(size(1)?[0]),
            chunk::SRC_PORT => p.src_port = Some(be16(size(2)?)),
            chunk::DST_PORT => p.dst_port = Some(be16(size(2)?)),
            chunk::VLAN => p.vlan = Some(be16(size(2)?)),
            chunk::IPV4_SRC => p.src_ip = Some(IpAddr::V4(v4(size(4)?))),
            chunk::IPV4_DST => p.dst_ip = Some(IpAddr::V4(v4(size(4)?))),
            chunk::TIME_SECS => p.time_secs = Some(be32(size(4)?)),
            chunk::TIME_USECS => p.time_usecs = Some(be32(size(4)?)),
            chunk::CAPTURE_ID => p.capture_id = Some(be32(size(4)?)),
            chunk::IPV6_SRC => p.src_ip = Some(IpAddr::V6(v6(size(16)?))),
            chunk::IPV6_DST => p.dst_ip = Some(IpAddr::V6(v6(size(16)?))),
            chunk::AUTH_KEY => p.auth_key = Some(data),
            chunk::PAYLOAD => p.payload = Some(data),
            chunk::PAYLOAD_COMPRESSED => p.compressed_payload = true,
            chunk::CORRELATION_ID => p.correlation_id = Some(data),
            chunk::NODE_NAME => p.node_name = Some(data),
            _ => p.skipped_chunks = p.skipped_chunks.saturating_add(1),
        }
    }
    Ok(p)
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn v4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

fn v6(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    Ipv6Addr::from(a)
}

/// Builds a HEPv3 packet (tests, benchmarks, fuzzing, the simulator): generic chunks from
/// `(type, data)`, in order.
pub fn encode(chunks: &[(u16, &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + chunks.iter().map(|(_, d)| d.len() + 6).sum::<usize>());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0, 0]);
    for (ty, data) in chunks {
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&ty.to_be_bytes());
        let len = u16::try_from(data.len() + 6).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(data);
    }
    let total = u16::try_from(out.len()).unwrap_or(u16::MAX);
    out[4..6].copy_from_slice(&total.to_be_bytes());
    out
}
