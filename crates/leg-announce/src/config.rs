//! [`LegsConfig`]: the daemon's `[legs]` section.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where and how the listener takes leg announcements.
///
/// The endpoint is reachable before anyone has proven who they are (the signature is checked
/// once the whole body is in), so every connection is bounded: a deadline for the request head
/// (and the TLS handshake), one for the body, one for a kept-alive connection with nothing to
/// do, a cap on connections at once and a smaller one per source address. The platform's
/// requests then get through while an unauthenticated client holds all it may hold.
///
/// ```
/// let c: leg_announce::LegsConfig = toml::from_str(r#"
///     listen = "0.0.0.0:9443"
///     signing_secret_files = ["/etc/pbx-listener/legs.secret"]
///     tls_cert_file = "/etc/pbx-listener/legs.crt"
///     tls_key_file = "/etc/pbx-listener/legs.key"
/// "#).unwrap();
/// assert_eq!(c.max_body_bytes, 262_144);
/// assert_eq!((c.max_connections, c.max_connections_per_source), (256, 32));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegsConfig {
    /// The address to listen on, e.g. `"0.0.0.0:9443"`. Required.
    pub listen: SocketAddr,
    /// Files holding the `whsec_…` Standard Webhooks secrets the platform signs with: one, or
    /// two during a rotation. Required (an unsigned endpoint is not offered).
    pub signing_secret_files: Vec<PathBuf>,
    /// The largest request body accepted, in bytes; larger ones are answered 413. Default
    /// 262144 (256 KiB: about a thousand events in one array).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// A PEM certificate chain to serve HTTPS with (with `tls_key_file`). Default: plain HTTP
    /// (then keep the endpoint on a trusted network; the signatures still authenticate).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The PEM private key of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// The most connections open at once; more wait (in the kernel's accept queue) until one
    /// closes. Default 256, from 1 to 4096.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// The most connections open at once from one source: an IPv4 address, or an IPv6 /64
    /// network. More are closed as soon as they are accepted. Keep it well below
    /// `max_connections`, so that one source cannot take every connection. Default 32, from 1
    /// to `max_connections`.
    #[serde(default = "default_max_connections_per_source")]
    pub max_connections_per_source: usize,
    /// How long a client may take to send a request head, in milliseconds, counted from the
    /// connection (TLS handshake included) or from its first byte on a kept-alive connection;
    /// then the connection is closed. Default 10000, from 100 to 120000.
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// How long a client may take to send a request body once its head is in, in
    /// milliseconds; then it is answered 408 and the connection closed. Default 10000, from
    /// 100 to 300000.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// How long a kept-alive connection may wait for its next request, in milliseconds (also
    /// the most time a client may take to read an answer); then it is closed. Default 60000,
    /// from 100 to 600000.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// How many recent `webhook-id`s are remembered, so that a request replayed within the
    /// signature's ±5 minute tolerance is answered without being applied. Past it the oldest
    /// id is forgotten (counted). Default 100000, from 1000 to 10000000 (about 100 bytes each).
    #[serde(default = "default_max_remembered_ids")]
    pub max_remembered_ids: usize,
}

impl LegsConfig {
    /// A configuration with these required keys and every other key at its default.
    pub fn new(listen: SocketAddr, signing_secret_files: Vec<PathBuf>) -> LegsConfig {
        LegsConfig {
            listen,
            signing_secret_files,
            max_body_bytes: default_max_body_bytes(),
            tls_cert_file: None,
            tls_key_file: None,
            max_connections: default_max_connections(),
            max_connections_per_source: default_max_connections_per_source(),
            header_timeout_ms: default_header_timeout_ms(),
            body_timeout_ms: default_body_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            max_remembered_ids: default_max_remembered_ids(),
        }
    }

    /// The numeric keys outside their ranges, as (key, value, minimum, maximum, unit): what
    /// [`LegsConfig::load`] refuses.
    pub(crate) fn out_of_range(&self) -> Option<(&'static str, u64, u64, u64, &'static str)> {
        let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        let checks = [
            ("max_body_bytes", n(self.max_body_bytes), 1_024, 16 * 1_048_576, "bytes"),
            ("max_connections", n(self.max_connections), 1, 4_096, "connections"),
            (
                "max_connections_per_source",
                n(self.max_connections_per_source),
                1,
                n(self.max_connections.clamp(1, 4_096)),
                "connections (at most max_connections)",
            ),
            ("header_timeout_ms", self.header_timeout_ms, 100, 120_000, "milliseconds"),
            ("body_timeout_ms", self.body_timeout_ms, 100, 300_000, "milliseconds"),
            ("idle_timeout_ms", self.idle_timeout_ms, 100, 600_000, "milliseconds"),
            ("max_remembered_ids", n(self.max_remembered_ids), 1_000, 10_000_000, "ids"),
        ];
        checks.into_iter().find(|&(_, v, min, max, _)| v < min || v > max)
    }
}

fn default_max_body_bytes() -> usize {
    262_144
}

fn default_max_connections() -> usize {
    256
}

fn default_max_connections_per_source() -> usize {
    32
}

fn default_header_timeout_ms() -> u64 {
    10_000
}

fn default_body_timeout_ms() -> u64 {
    10_000
}

fn default_idle_timeout_ms() -> u64 {
    60_000
}

fn default_max_remembered_ids() -> usize {
    100_000
}
