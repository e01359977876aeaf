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

use listener_core::{LoadContext, Secret, SettingError, SettingErrors};
use listener_kit::read_secret_file;
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
    /// again (the IP Office locks accounts after repeated failures). 60 to 86400; default 300.
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

/// Bounds of the numeric keys: `(key, min, max, unit, why the bound)`. One table, so that
/// `check-config`, the docs and the tests agree.
pub const RANGES: [(&str, u64, u64, &str, Option<&str>); 9] = [
    ("keepalive_secs", 1, 600, "seconds", None),
    ("dead_link_secs", 2, 3_600, "seconds", Some("and more than keepalive_secs")),
    ("resync_settle_ms", 0, 60_000, "ms", None),
    ("vanish_grace_ms", 0, 60_000, "ms", None),
    ("max_frame_bytes", 1_024, crate::codec::MAX_LONG_FRAME as u64, "bytes", None),
    ("connect_timeout_secs", 1, 300, "seconds", None),
    ("reconnect_min_ms", 100, 60_000, "ms", Some("and at most reconnect_max_secs; less hammers a PBX that is down")),
    ("reconnect_max_secs", 1, 3_600, "seconds", None),
    (
        "auth_failure_backoff_secs",
        MIN_AUTH_FAILURE_BACKOFF_SECS,
        86_400,
        "seconds",
        Some(
            "the IP Office counts failed logins across reconnections and disables the service user after its \
             Password Reject Limit (default 5); one attempt a minute or less stays clear of that",
        ),
    ),
];

/// The shortest wait after the PBX refused our credentials that `check-config` accepts.
pub const MIN_AUTH_FAILURE_BACKOFF_SECS: u64 = 60;

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

    /// Validates the configuration and reads the password and CA files. Every problem is
    /// reported, each naming its key (relative to the `[[pbx]]` block).
    pub fn load(&self) -> Result<LoadedConfig, SettingErrors> {
        let mut errors = SettingErrors::new();
        if self.host.trim().is_empty() {
            errors.push(SettingError::new("host", "must not be empty"));
        }
        if self.port == Some(0) {
            errors.push(SettingError::out_of_range("port", 1, 65_535, "", None));
        }
        if self.username.is_empty() {
            errors.push(SettingError::new("username", "must not be empty"));
        }
        let password = match read_secret_file(&self.password_file) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(SettingError::new("password_file", e.to_string()));
                None
            }
        };
        for flag in &self.flags {
            if !flag.starts_with('-') || flag.contains(char::is_whitespace) || flag.len() < 2 {
                errors
                    .push(SettingError::new("flags", format!("{flag:?} is not a DevLink3 flag (e.g. \"-SIPTrack\")")));
            } else if flag.eq_ignore_ascii_case("-CD2") {
                errors.push(SettingError::new(
                    "flags",
                    "-CD2 switches the stream to Delta2, which this adapter does not read",
                ));
            }
        }
        for (key, min, max, unit, why) in RANGES {
            errors.check_range(key, self.numeric(key), min, max, unit, why);
        }
        if self.dead_link_secs <= self.keepalive_secs {
            errors.push(SettingError::new(
                "dead_link_secs",
                format!("must be more than keepalive_secs ({} seconds)", self.keepalive_secs),
            ));
        }
        if self.reconnect_min_ms > self.reconnect_max_secs.saturating_mul(1000) {
            errors.push(SettingError::new(
                "reconnect_min_ms",
                format!("must be at most reconnect_max_secs ({} seconds)", self.reconnect_max_secs),
            ));
        }
        if self.application_name.len() > 200 {
            errors.push(SettingError::new("application_name", "must be at most 200 bytes"));
        }
        let tls = if self.tls {
            match &self.ca_file {
                None => {
                    errors.push(SettingError::new(
                        "ca_file",
                        "is required when tls = true (the PBX's certificate is self-signed)",
                    ));
                    None
                }
                Some(ca_file) => match tls_settings(ca_file, self.tls_server_name.as_deref().unwrap_or(&self.host)) {
                    Ok(tls) => Some(tls),
                    Err(e) => {
                        errors.push(e);
                        None
                    }
                },
            }
        } else {
            if self.ca_file.is_some() {
                errors.push(SettingError::new("ca_file", "is only used with tls = true"));
            }
            if self.tls_server_name.is_some() {
                errors.push(SettingError::new("tls_server_name", "is only used with tls = true"));
            }
            None
        };
        let (Some(password), true) = (password, errors.is_empty()) else { return Err(errors) };
        Ok(LoadedConfig {
            host: self.host.trim().to_owned(),
            port: self.port.unwrap_or(if self.tls { DEFAULT_TLS_PORT } else { DEFAULT_TCP_PORT }),
            tls,
            username: self.username.clone(),
            password,
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

    /// The value of a numeric key of [`RANGES`].
    fn numeric(&self, key: &str) -> u64 {
        match key {
            "keepalive_secs" => self.keepalive_secs,
            "dead_link_secs" => self.dead_link_secs,
            "resync_settle_ms" => self.resync_settle_ms,
            "vanish_grace_ms" => self.vanish_grace_ms,
            "max_frame_bytes" => self.max_frame_bytes as u64,
            "connect_timeout_secs" => self.connect_timeout_secs,
            "reconnect_min_ms" => self.reconnect_min_ms,
            "reconnect_max_secs" => self.reconnect_max_secs,
            "auth_failure_backoff_secs" => self.auth_failure_backoff_secs,
            _ => 0,
        }
    }

    /// Paths made absolute against the configuration file's directory.
    pub fn resolve_paths(&mut self, ctx: &LoadContext<'_>) {
        self.password_file = ctx.resolve(&self.password_file);
        if let Some(ca) = &mut self.ca_file {
            *ca = ctx.resolve(ca);
        }
    }
}

/// Builds the rustls client configuration (ring provider) trusting the certificates in `ca_file`.
fn tls_settings(ca_file: &Path, server_name: &str) -> Result<TlsSettings, SettingError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};

    let pem = std::fs::read_to_string(ca_file)
        .map_err(|e| SettingError::new("ca_file", format!("cannot read {}: {e}", ca_file.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| SettingError::new("ca_file", format!("{}: {e}", ca_file.display())))?;
        roots.add(cert).map_err(|e| SettingError::new("ca_file", format!("{}: {e}", ca_file.display())))?;
    }
    if roots.is_empty() {
        return Err(SettingError::new("ca_file", format!("{} holds no PEM certificate", ca_file.display())));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SettingError::new("tls", e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| SettingError::new("tls_server_name", format!("{server_name:?}: {e}")))?;
    Ok(TlsSettings { client_config: Arc::new(config), server_name })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests unwrap what they built themselves.
mod tests;
