//! [`SipTapConfig`]: the SIP tap's settings (the daemon embeds it in its own section).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::learner::LearnerConfig;

/// Where the SIP tap listens and how it reads. Every key is optional; nothing listens unless
/// an address is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipTapConfig {
    /// HEPv3 over UDP (Homer convention: port 9060), e.g. `"127.0.0.1:9060"`. Default: off.
    pub hep_udp_listen: Option<SocketAddr>,
    /// HEPv3 over TCP, e.g. `"127.0.0.1:9060"`. Default: off.
    pub hep_tcp_listen: Option<SocketAddr>,
    /// Raw SIP over UDP (copies of the trunk's datagrams), e.g. `"127.0.0.1:5099"`.
    /// Default: off.
    pub sip_udp_listen: Option<SocketAddr>,
    /// A file holding the HEP authentication key (chunk 0x000e) every packet must carry
    /// (surrounding whitespace ignored). Default: none (packets are not checked; keep HEP on a
    /// trusted network then).
    pub hep_auth_key_file: Option<PathBuf>,
    /// The SIP header that carries the leg's callSid. Default `"X-Call-Sid"`.
    pub call_sid_header: String,
    /// The SIP header that carries the leg's parentCallSid. Default `"X-Parent-Call-Sid"`.
    pub parent_call_sid_header: String,
    /// The largest datagram read, in bytes; longer ones are truncated by the socket and then
    /// rejected. Default 65535.
    pub max_datagram_bytes: usize,
    /// The largest SIP message read, in bytes. Default 65535.
    pub max_message_bytes: usize,
    /// The most HEP-over-TCP connections at once; more wait (in the kernel's accept queue)
    /// until one closes. Default 64, from 1 to 4096.
    pub max_tcp_connections: usize,
    /// The most HEP-over-TCP connections at once from one source (an IPv4 address, or an IPv6
    /// /64 network); more are closed as soon as they are accepted. A capture agent needs one
    /// or two. Keep it well below `max_tcp_connections`, so that one source cannot take every
    /// place. Default 8, from 1 to `max_tcp_connections`.
    pub max_tcp_connections_per_source: usize,
    /// A HEP-over-TCP connection that delivers no complete HEP packet for this long is
    /// closed, in seconds (a silent one, or one that drips a packet byte by byte). Capture
    /// agents reconnect when they have something to send. Default 300, from 1 to 86400.
    pub tcp_idle_timeout_secs: u64,
    /// How long a Call-ID is remembered to report its leg only once, in seconds. Default
    /// 14400 (4 hours).
    pub dialog_ttl_secs: u64,
    /// How many Call-IDs are remembered at most. Default 100000.
    pub max_dialogs: usize,
}

impl Default for SipTapConfig {
    fn default() -> Self {
        SipTapConfig {
            hep_udp_listen: None,
            hep_tcp_listen: None,
            sip_udp_listen: None,
            hep_auth_key_file: None,
            call_sid_header: "X-Call-Sid".to_owned(),
            parent_call_sid_header: "X-Parent-Call-Sid".to_owned(),
            max_datagram_bytes: 65_535,
            max_message_bytes: 65_535,
            max_tcp_connections: 64,
            max_tcp_connections_per_source: 8,
            tcp_idle_timeout_secs: 300,
            dialog_ttl_secs: 14_400,
            max_dialogs: 100_000,
        }
    }
}

impl SipTapConfig {
    /// The learner's part of the settings.
    pub fn learner(&self) -> LearnerConfig {
        LearnerConfig {
            call_sid_header: self.call_sid_header.clone(),
            parent_call_sid_header: self.parent_call_sid_header.clone(),
            max_dialogs: self.max_dialogs,
            dialog_ttl_ms: self.dialog_ttl_secs.saturating_mul(1000),
        }
    }
}
