//! The `[platform]` section: the file as written ([`ForwarderConfig`]) and, after
//! [`ForwarderConfig::load`], the validated settings with their secrets loaded
//! ([`ForwarderSettings`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use webhook_signature::{SecretError, SigningSecret};

use crate::tls;

/// How to reach the platform, as written in the daemon's `[platform]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwarderConfig {
    /// The platform's events endpoint. `https://…`; `http://` is accepted only for a loopback
    /// host (the demo, tests).
    pub url: String,
    /// Files holding the `whsec_` signing secret: one, or two during a rotation (every
    /// request then carries both signatures).
    pub signing_secret_files: Vec<PathBuf>,
    /// A file holding a bearer token sent as `Authorization: Bearer …` (optional).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// A PEM file of extra CA certificates trusted besides the system's (optional).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Time allowed for one request, connection included, in seconds.
    #[serde(default = "defaults::timeout_secs")]
    pub timeout_secs: u64,
    /// Time allowed to establish a connection (TCP and TLS), in seconds.
    #[serde(default = "defaults::connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// How many events (of different calls) may be in flight at once.
    #[serde(default = "defaults::max_concurrency")]
    pub max_concurrency: usize,
    /// The first backoff ceiling after a failure, in milliseconds (doubles per failed round).
    #[serde(default = "defaults::backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// The largest backoff ceiling, in seconds.
    #[serde(default = "defaults::backoff_max_secs")]
    pub backoff_max_secs: u64,
}

mod defaults {
    pub fn timeout_secs() -> u64 {
        15
    }
    pub fn connect_timeout_secs() -> u64 {
        5
    }
    /// 64 reaches the 10k events/s target on loopback (docs/PERFORMANCE.md, Delivery).
    pub fn max_concurrency() -> usize {
        64
    }
    pub fn backoff_initial_ms() -> u64 {
        500
    }
    pub fn backoff_max_secs() -> u64 {
        60
    }
}

/// A `[platform]` setting that cannot be used. [`ConfigError::key`] names the key; the
/// message says what is wrong with it (the daemon prints both, with the line).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `url` does not parse.
    #[error("{value:?} is not a URL: {reason}")]
    BadUrl {
        /// What was written.
        value: String,
        /// Why.
        reason: String,
    },
    /// `url` is neither https nor http to a loopback host.
    #[error("{value:?} must be https:// (http:// is allowed only to 127.0.0.1, ::1 or localhost)")]
    InsecureUrl {
        /// What was written.
        value: String,
    },
    /// Not one or two secret files.
    #[error("{0} files given; give one, or two during a rotation")]
    SecretCount(usize),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A secret file does not hold a valid `whsec_` secret.
    #[error("{path}: {source}")]
    BadSecret {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: SecretError,
    },
    /// The bearer token file is empty or holds characters a header cannot carry.
    #[error("{path} must hold one token of printable ASCII")]
    BadToken {
        /// The file.
        path: PathBuf,
    },
    /// The CA file holds no usable certificate.
    #[error("{path}: {reason}")]
    BadCaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A number is out of its range.
    #[error("{value} is out of range: must be between {min} and {max} {unit}")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// What was written.
        value: u64,
        /// The smallest value allowed.
        min: u64,
        /// The largest value allowed.
        max: u64,
        /// The key's unit (`seconds`, `ms`, `requests`).
        unit: &'static str,
    },
    /// No trust anchors: the system store is empty and no `ca_file` was given.
    #[error("no CA certificates: the system store is empty or unreadable and platform.ca_file is not set")]
    NoTrustAnchors,
    /// rustls refused the configuration.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

impl ConfigError {
    /// The `[platform]` key the error is about (`None` when it is about no single key), so that
    /// the daemon can point at its line.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            ConfigError::BadUrl { .. } | ConfigError::InsecureUrl { .. } => Some("url"),
            ConfigError::SecretCount(_) | ConfigError::BadSecret { .. } => Some("signing_secret_files"),
            ConfigError::ReadFile { key, .. } | ConfigError::OutOfRange { key, .. } => Some(key),
            ConfigError::BadToken { .. } => Some("bearer_token_file"),
            ConfigError::BadCaFile { .. } => Some("ca_file"),
            ConfigError::NoTrustAnchors | ConfigError::Tls(_) => None,
        }
    }
}

/// A bearer token; never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// The `Authorization` header value.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// The validated settings, secrets loaded. `Debug` shows no secret.
#[derive(Clone)]
pub struct ForwarderSettings {
    /// The endpoint.
    pub url: reqwest::Url,
    /// One or two signing secrets.
    pub secrets: Vec<SigningSecret>,
    /// The bearer token, if any.
    pub bearer: Option<BearerToken>,
    /// The TLS client configuration (ring provider, system roots plus `ca_file`).
    pub tls: Arc<rustls::ClientConfig>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Events in flight at once.
    pub max_concurrency: usize,
    /// First backoff ceiling.
    pub backoff_initial: Duration,
    /// Largest backoff ceiling.
    pub backoff_max: Duration,
}

impl fmt::Debug for ForwarderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForwarderSettings")
            .field("url", &self.url.as_str())
            .field("secrets", &self.secrets)
            .field("bearer", &self.bearer)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_concurrency", &self.max_concurrency)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .finish_non_exhaustive()
    }
}

fn read(key: &'static str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile { key, path: path.to_path_buf(), source })
}

fn range(key: &'static str, value: u64, min: u64, max: u64, unit: &'static str) -> Result<u64, ConfigError> {
    if (min..=max).contains(&value) { Ok(value) } else { Err(ConfigError::OutOfRange { key, value, min, max, unit }) }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl ForwarderConfig {
    /// A config with the defaults and the given endpoint and secret files.
    pub fn new(url: impl Into<String>, signing_secret_files: Vec<PathBuf>) -> ForwarderConfig {
        ForwarderConfig {
            url: url.into(),
            signing_secret_files,
            bearer_token_file: None,
            ca_file: None,
            timeout_secs: defaults::timeout_secs(),
            connect_timeout_secs: defaults::connect_timeout_secs(),
            max_concurrency: defaults::max_concurrency(),
            backoff_initial_ms: defaults::backoff_initial_ms(),
            backoff_max_secs: defaults::backoff_max_secs(),
        }
    }

    /// Validates the values and reads the secret, token and CA files.
    pub fn load(&self) -> Result<ForwarderSettings, ConfigError> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| ConfigError::BadUrl { value: self.url.clone(), reason: e.to_string() })?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            _ => return Err(ConfigError::InsecureUrl { value: self.url.clone() }),
        }
        let count = self.signing_secret_files.len();
        if !(1..=2).contains(&count) {
            return Err(ConfigError::SecretCount(count));
        }
        let mut secrets = Vec::with_capacity(count);
        for path in &self.signing_secret_files {
            let text = read("signing_secret_files", path)?;
            let secret =
                SigningSecret::parse(&text).map_err(|source| ConfigError::BadSecret { path: path.clone(), source })?;
            secrets.push(secret);
        }
        let bearer = match &self.bearer_token_file {
            Some(path) => {
                let text = read("bearer_token_file", path)?;
                let token = text.trim();
                if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(ConfigError::BadToken { path: path.clone() });
                }
                Some(BearerToken(token.to_owned()))
            }
            None => None,
        };
        let extra_ca = match &self.ca_file {
            Some(path) => Some((
                path.clone(),
                std::fs::read(path).map_err(|source| ConfigError::ReadFile {
                    key: "ca_file",
                    path: path.clone(),
                    source,
                })?,
            )),
            None => None,
        };
        let tls = tls::client_config(extra_ca.as_ref().map(|(p, pem)| (p.as_path(), pem.as_slice())))?;
        Ok(ForwarderSettings {
            url,
            secrets,
            bearer,
            tls: Arc::new(tls),
            timeout: Duration::from_secs(range("timeout_secs", self.timeout_secs, 1, 600, "seconds")?),
            connect_timeout: Duration::from_secs(range(
                "connect_timeout_secs",
                self.connect_timeout_secs,
                1,
                120,
                "seconds",
            )?),
            max_concurrency: range("max_concurrency", self.max_concurrency as u64, 1, 1024, "requests")? as usize,
            backoff_initial: Duration::from_millis(range(
                "backoff_initial_ms",
                self.backoff_initial_ms,
                1,
                600_000,
                "ms",
            )?),
            backoff_max: Duration::from_secs(range("backoff_max_secs", self.backoff_max_secs, 1, 86_400, "seconds")?),
        })
    }
}
