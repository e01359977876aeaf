//! Configuration of one Avaya IP Office R10+/R11 (DevLink3) PBX.
//!
//! Two stages: [`Config`] is the `[[pbx]]` block as written (serde, unknown keys rejected);
//! [`Config::load`] validates it, reads the secret and the CA file, and returns a
//! [`LoadedConfig`] with typed values. The daemon owns the block's `type` and `name` keys and
//! passes the rest here (see the crate documentation).
//!
//! ```toml
//! [[pbx]]
//! type = "avaya-r11"
//! name = "london"
//! host = "192.0.2.10"
//! username = "pbxlistener"
//! password_file = "/etc/pbx-listener/avaya.password"
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

/// The `[[pbx]]` keys of an `avaya-r11` PBX, as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Host name or IP address of the IP Office (the node with the CTI Link Pro licence).
    pub host: String,
    /// TCP port. Default: 50797 without TLS, 50796 with TLS.
    #[serde(default)]
    pub port: Option<u16>,
    /// Connect with TLS (port 50796). Default: false (the "TAPI/DevLink3" unsecured interface).
    #[serde(default)]
    pub tls: bool,
    /// PEM file with the certificate(s) to trust for TLS, e.g. the IP Office's self-signed
    /// root. Required when `tls = true`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The name to verify the PBX's certificate against. Default: `host`.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// The IP Office service user (member of a rights group with DevLink3 ticked).
    pub username: String,
    /// File holding the service user's password (first line; surrounding whitespace ignored).
    pub password_file: PathBuf,
    /// Event request flags. Default: `["-SIPTrack", "-CMExtn"]`; add `"-SCN"` for every node
    /// of a Server Edition / SCN network. `-CD2` is refused (we read Delta3).
    #[serde(default = "default_flags")]
    pub flags: Vec<String>,
    /// Seconds between keepalive (Test) packets. Default: 30.
    #[serde(default = "default_keepalive_secs")]
    pub keepalive_secs: u64,
    /// Seconds without any data from the PBX after which the link is declared dead and
    /// reconnected. Must exceed `keepalive_secs`. Default: 75 (two missed keepalives).
    #[serde(default = "default_dead_link_secs")]
    pub dead_link_secs: u64,
    /// Milliseconds after a subscription during which the PBX's re-sent live calls are
    /// collected before calls it no longer lists are closed. Default: 2000.
    #[serde(default = "default_resync_settle_ms")]
    pub resync_settle_ms: u64,
    /// Milliseconds a party that vanished from a call record waits for the record saying why
    /// before it is disconnected as `normal`. Default: 2000.
    #[serde(default = "default_vanish_grace_ms")]
    pub vanish_grace_ms: u64,
    /// Largest DevLink3 frame accepted, in bytes (1024 to 4194303). Default: 262144.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Application name sent when authenticating (shown by the PBX). Default:
    /// `pbx-listener <version>`.
    #[serde(default = "default_application_name")]
    pub application_name: String,
    /// Seconds to wait for the TCP/TLS connection and for each handshake answer. Default: 10.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// First reconnect delay in milliseconds; doubles per failure (with jitter). Default: 1000.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay in seconds. Default: 60.
    #[serde(default = "default_reconnect_max_secs")]
    pub reconnect_max_secs: u64,
    /// Seconds to wait after the PBX rejected the credentials or the licence, before trying
    /// again (the IP Office locks accounts after repeated failures). Default: 300.
    #[serde(default = "default_auth_failure_backoff_secs")]
    pub auth_failure_backoff_secs: u64,
}

fn default_flags() -> Vec<String> {
    vec!["-SIPTrack".into(), "-CMExtn".into()]
}
fn default_keepalive_secs() -> u64 {
    30
}
fn default_dead_link_secs() -> u64 {
    75
}
fn default_resync_settle_ms() -> u64 {
    2_000
}
fn default_vanish_grace_ms() -> u64 {
    2_000
}
fn default_max_frame_bytes() -> usize {
    262_144
}
fn default_application_name() -> String {
    format!("pbx-listener {}", env!("CARGO_PKG_VERSION"))
}
fn default_connect_timeout_secs() -> u64 {
    10
}
fn default_reconnect_min_ms() -> u64 {
    1_000
}
fn default_reconnect_max_secs() -> u64 {
    60
}
fn default_auth_failure_backoff_secs() -> u64 {
    300
}

/// Default port without TLS.
pub const DEFAULT_TCP_PORT: u16 = 50797;
/// Default port with TLS.
pub const DEFAULT_TLS_PORT: u16 = 50796;

/// A secret read from a file. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// A secret.
    pub fn new(s: impl Into<Arc<str>>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself (to send it, never to log it).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// TLS settings after loading.
#[derive(Clone)]
pub struct TlsSettings {
    /// The client configuration (ring provider, the CA file's roots).
    pub client_config: Arc<rustls::ClientConfig>,
    /// The name the certificate is checked against.
    pub server_name: rustls_pki_types::ServerName<'static>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

/// A validated configuration with its secret loaded.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// Host to connect to.
    pub host: String,
    /// Port to connect to.
    pub port: u16,
    /// TLS, if enabled.
    pub tls: Option<TlsSettings>,
    /// Service user name.
    pub username: String,
    /// Service user password.
    pub password: Secret,
    /// Event request flags, space-separated as sent.
    pub flags: String,
    /// Keepalive interval.
    pub keepalive: Duration,
    /// Dead-link timeout.
    pub dead_link: Duration,
    /// Snapshot settle window in ms.
    pub resync_settle_ms: u64,
    /// Vanish grace in ms.
    pub vanish_grace_ms: u64,
    /// Largest frame.
    pub max_frame_bytes: usize,
    /// Application name.
    pub application_name: String,
    /// Connect and handshake timeout.
    pub connect_timeout: Duration,
    /// First reconnect delay.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Delay after an authentication failure.
    pub auth_failure_backoff: Duration,
}

/// A configuration that cannot be used. Each variant names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file named by a key cannot be read.
    #[error("{key}: cannot read {path}: {source}")]
    ReadFile {
        /// The key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A key's value is not acceptable.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, reason: reason.into() }
}

fn read(key: &'static str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile { key, path: path.to_owned(), source })
}

impl Config {
    /// A configuration with every default, for tests and the demo.
    pub fn new(host: impl Into<String>, username: impl Into<String>, password_file: impl Into<PathBuf>) -> Config {
        Config {
            host: host.into(),
            port: None,
            tls: false,
            ca_file: None,
            tls_server_name: None,
            username: username.into(),
            password_file: password_file.into(),
            flags: default_flags(),
            keepalive_secs: default_keepalive_secs(),
            dead_link_secs: default_dead_link_secs(),
            resync_settle_ms: default_resync_settle_ms(),
            vanish_grace_ms: default_vanish_grace_ms(),
            max_frame_bytes: default_max_frame_bytes(),
            application_name: default_application_name(),
            connect_timeout_secs: default_connect_timeout_secs(),
            reconnect_min_ms: default_reconnect_min_ms(),
            reconnect_max_secs: default_reconnect_max_secs(),
            auth_failure_backoff_secs: default_auth_failure_backoff_secs(),
        }
    }

    /// Validates the configuration and reads the password and CA files.
    pub fn load(&self) -> Result<LoadedConfig, ConfigError> {
        if self.host.trim().is_empty() {
            return Err(invalid("host", "must not be empty"));
        }
        if self.username.is_empty() {
            return Err(invalid("username", "must not be empty"));
        }
        let password = read("password_file", &self.password_file)?;
        let password = password.lines().next().unwrap_or("").trim();
        if password.is_empty() {
            return Err(invalid("password_file", format!("{} is empty", self.password_file.display())));
        }
        for flag in &self.flags {
            if !flag.starts_with('-') || flag.contains(char::is_whitespace) || flag.len() < 2 {
                return Err(invalid("flags", format!("{flag:?} is not a DevLink3 flag (e.g. \"-SIPTrack\")")));
            }
            if flag.eq_ignore_ascii_case("-CD2") {
                return Err(invalid("flags", "-CD2 switches the stream to Delta2, which this adapter does not read"));
            }
        }
        if self.keepalive_secs == 0 {
            return Err(invalid("keepalive_secs", "must be at least 1"));
        }
        if self.dead_link_secs <= self.keepalive_secs {
            return Err(invalid("dead_link_secs", "must be greater than keepalive_secs"));
        }
        if !(1024..=crate::codec::MAX_LONG_FRAME).contains(&self.max_frame_bytes) {
            return Err(invalid(
                "max_frame_bytes",
                format!("must be between 1024 and {}", crate::codec::MAX_LONG_FRAME),
            ));
        }
        if self.application_name.len() > 200 {
            return Err(invalid("application_name", "must be at most 200 bytes"));
        }
        if self.connect_timeout_secs == 0 {
            return Err(invalid("connect_timeout_secs", "must be at least 1"));
        }
        if self.reconnect_min_ms == 0 || self.reconnect_min_ms > self.reconnect_max_secs.saturating_mul(1000) {
            return Err(invalid("reconnect_min_ms", "must be at least 1 and at most reconnect_max_secs"));
        }
        let tls = if self.tls {
            let Some(ca_file) = &self.ca_file else {
                return Err(invalid("ca_file", "is required when tls = true (the PBX's certificate is self-signed)"));
            };
            Some(tls_settings(ca_file, self.tls_server_name.as_deref().unwrap_or(&self.host))?)
        } else {
            if self.ca_file.is_some() {
                return Err(invalid("ca_file", "is only used with tls = true"));
            }
            None
        };
        Ok(LoadedConfig {
            host: self.host.trim().to_owned(),
            port: self.port.unwrap_or(if self.tls { DEFAULT_TLS_PORT } else { DEFAULT_TCP_PORT }),
            tls,
            username: self.username.clone(),
            password: Secret::new(password),
            flags: self.flags.join(" "),
            keepalive: Duration::from_secs(self.keepalive_secs),
            dead_link: Duration::from_secs(self.dead_link_secs),
            resync_settle_ms: self.resync_settle_ms,
            vanish_grace_ms: self.vanish_grace_ms,
            max_frame_bytes: self.max_frame_bytes,
            application_name: self.application_name.clone(),
            connect_timeout: Duration::from_secs(self.connect_timeout_secs),
            reconnect_min: Duration::from_millis(self.reconnect_min_ms),
            reconnect_max: Duration::from_secs(self.reconnect_max_secs),
            auth_failure_backoff: Duration::from_secs(self.auth_failure_backoff_secs),
        })
    }
}

/// Builds the rustls client configuration (ring provider) trusting the certificates in `ca_file`.
fn tls_settings(ca_file: &Path, server_name: &str) -> Result<TlsSettings, ConfigError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};

    let pem = read("ca_file", ca_file)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| invalid("ca_file", format!("{}: {e}", ca_file.display())))?;
        roots.add(cert).map_err(|e| invalid("ca_file", format!("{}: {e}", ca_file.display())))?;
    }
    if roots.is_empty() {
        return Err(invalid("ca_file", format!("{} holds no PEM certificate", ca_file.display())));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("tls", e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| invalid("tls_server_name", format!("{server_name:?}: {e}")))?;
    Ok(TlsSettings { client_config: Arc::new(config), server_name })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests unwrap what they built themselves.
mod tests;
