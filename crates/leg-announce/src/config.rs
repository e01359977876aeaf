//! [`LegsConfig`]: the daemon's `[legs]` section.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where and how the listener takes leg announcements.
///
/// ```
/// let c: leg_announce::LegsConfig = toml::from_str(r#"
///     listen = "0.0.0.0:9443"
///     signing_secret_files = ["/etc/pbx-listener/legs.secret"]
///     tls_cert_file = "/etc/pbx-listener/legs.crt"
///     tls_key_file = "/etc/pbx-listener/legs.key"
/// "#).unwrap();
/// assert_eq!(c.max_body_bytes, 262_144);
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
}

fn default_max_body_bytes() -> usize {
    262_144
}
