//! Configuration of one 3CX V20 PBX.
//!
//! Two stages: [`Config`] is the `[[pbx]]` block as written (serde, unknown keys rejected);
//! [`Config::load`] validates it, reads the client secret and the CA file, loads the CDR time
//! zone, and returns a [`LoadedConfig`]. The daemon owns the block's `type` and `name`.
//!
//! ```toml
//! [[pbx]]
//! type = "3cx"
//! name = "hq"
//! url = "https://pbx.example.com:5001"
//! client_id = "pbxlistener"
//! client_secret_file = "/etc/pbx-listener/3cx.secret"
//! extensions = ["101", "102", "103"]
//!
//! [pbx.cdr]
//! listen = "0.0.0.0:5040"
//! time_zone = "Europe/Berlin"
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use listener_core::{LoadContext, Secret, SettingError, SettingErrors};
use listener_kit::read_secret_file;
use serde::Deserialize;

use crate::cdr::{DEFAULT_FIELDS, FieldOrder};
use crate::token::ExpiresInUnit;

/// The `[[pbx]]` keys of a `3cx` PBX, as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The PBX's web address, scheme and port included (`https://pbx.example.com:5001`); the
    /// Call Control API lives under it (`/connect/token`, `/callcontrol`, `/callcontrol/ws`).
    pub url: String,
    /// The API client's Client ID (Admin console → Integrations → API); also the DN of its
    /// route point.
    pub client_id: String,
    /// File holding the API client's key (shown once when the client is created).
    pub client_secret_file: PathBuf,
    /// The extensions the API client monitors ("Extensions to monitor"). Checked at every
    /// start: each must be visible to the client.
    pub extensions: Vec<String>,
    /// PEM file with extra certificate(s) to trust (a self-signed PBX certificate). The
    /// system's trust store is always used. Default: none.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Park orbit DNs that are monitored: a call parked there is reported as `parked` live.
    /// Default: none (parks are then reported after the fact from the CDR feed).
    #[serde(default)]
    pub park_orbits: Vec<String>,
    /// How to read the token's `expires_in`: `"auto"` (default: the JWT's own lifetime, else
    /// minutes up to 120 and seconds above), `"seconds"` (3CX 20.0.9+) or `"minutes"` (up to
    /// 20.0.8).
    #[serde(default)]
    pub expires_in_unit: ExpiresInUnit,
    /// Seconds between WebSocket pings. Default: 15.
    #[serde(default = "default_keepalive_secs")]
    pub keepalive_secs: u64,
    /// Seconds without any frame (pongs included) after which the WebSocket is declared dead
    /// and reconnected. Must exceed `keepalive_secs`. Default: 45.
    #[serde(default = "default_dead_link_secs")]
    pub dead_link_secs: u64,
    /// Seconds to wait for a connection, a TLS handshake or the WebSocket upgrade. Default: 10.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Seconds to wait for a REST answer (token, snapshot, participant). Default: 10.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// First reconnect delay in milliseconds; doubles per failure (full jitter). Default: 1000.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay in seconds. Default: 60.
    #[serde(default = "default_reconnect_max_secs")]
    pub reconnect_max_secs: u64,
    /// Seconds to wait after the PBX refused the client id or secret before trying again.
    /// 10 to 86400; default 300.
    #[serde(default = "default_auth_failure_backoff_secs")]
    pub auth_failure_backoff_secs: u64,
    /// Seconds to wait, at first, after detecting another program that uses the same client
    /// id (3CX keeps one token per client id); doubles while it goes on, up to an hour. 10 to
    /// 3600; default 60.
    #[serde(default = "default_token_conflict_backoff_secs")]
    pub token_conflict_backoff_secs: u64,
    /// Milliseconds a removed participant waits for what explains its removal (a transfer, a
    /// park, another phone answering) before it is reported. 100 to 10000; default 1500.
    #[serde(default = "default_removal_grace_ms")]
    pub removal_grace_ms: u64,
    /// Largest WebSocket message accepted, in bytes (1024 to 16777216). Default: 65536.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// Largest REST answer accepted (the snapshot lists every monitored DN), in bytes (65536
    /// to 268435456). Default: 16777216.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// The CDR feed (optional): end-of-call facts, parks after the fact, and calls the live
    /// feed missed while it was down.
    #[serde(default)]
    pub cdr: Option<CdrConfig>,
}

/// The `[pbx.cdr]` table: 3CX's CDR output over TCP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdrConfig {
    /// Listen here for 3CX ("3CX CDR service is client / Active Socket": 3CX connects to us),
    /// e.g. `"0.0.0.0:5040"`. Exactly one of `listen` and `connect`.
    #[serde(default)]
    pub listen: Option<String>,
    /// Connect to 3CX here ("Passive Socket": 3CX listens), `"host:port"`.
    #[serde(default)]
    pub connect: Option<String>,
    /// The fields of a line in the order set in 3CX (Settings → CDR). Default: the 27 legacy
    /// fields in 3CX's default order (`historyid`, `callid`, `duration`, …,
    /// `missed-queue-calls`). `-` and `_` are the same (`time-start` = `time_start`); unknown
    /// names are skipped by position. Comma delimiters must not be removed in 3CX.
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// The time zone of the PBX's CDR times: an IANA name (`"Europe/Berlin"`) or `"UTC"`
    /// (default).
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Longest CDR line, in bytes (256 to 1048576). Default: 8192.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// With `listen`: the addresses allowed to connect (the PBX). Default: any (the port is
    /// unauthenticated: restrict it here or with a firewall).
    #[serde(default)]
    pub allowed_peers: Vec<IpAddr>,
    /// With `listen`: most connections at once (1 to 64). Default: 4.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// With `listen`: seconds a connection may stay silent before it is closed (60 to
    /// 604800). Default: 86400.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Largest distance, in seconds, between a record's start and the moment the live feed
    /// first saw the call, for the record to be merged into it (5 to 3600). Default: 120.
    #[serde(default = "default_match_window_secs")]
    pub match_window_secs: u64,
    /// Reconstruct calls the live feed missed while it was down. Default: true.
    #[serde(default = "default_true")]
    pub backfill: bool,
    /// Records of calls that ended longer ago than this, in seconds, are not reconstructed
    /// (60 to 604800). Default: 86400.
    #[serde(default = "default_backfill_max_age_secs")]
    pub backfill_max_age_secs: u64,
}

fn default_keepalive_secs() -> u64 {
    15
}
fn default_dead_link_secs() -> u64 {
    45
}
fn default_connect_timeout_secs() -> u64 {
    10
}
fn default_request_timeout_secs() -> u64 {
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
fn default_token_conflict_backoff_secs() -> u64 {
    60
}
fn default_removal_grace_ms() -> u64 {
    1_500
}
fn default_max_frame_bytes() -> usize {
    65_536
}
fn default_max_body_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_time_zone() -> String {
    "UTC".into()
}
fn default_max_line_bytes() -> usize {
    8_192
}
fn default_max_connections() -> usize {
    4
}
fn default_idle_timeout_secs() -> u64 {
    86_400
}
fn default_match_window_secs() -> u64 {
    120
}
fn default_true() -> bool {
    true
}
fn default_backfill_max_age_secs() -> u64 {
    86_400
}

/// Bounds of the numeric keys: `(key, min, max, unit, why the bound)`. One table, so that
/// `check-config`, the docs and the tests agree.
pub const RANGES: [(&str, u64, u64, &str, Option<&str>); 11] = [
    ("keepalive_secs", 1, 600, "seconds", None),
    ("dead_link_secs", 2, 3_600, "seconds", Some("and more than keepalive_secs")),
    ("connect_timeout_secs", 1, 300, "seconds", None),
    ("request_timeout_secs", 1, 300, "seconds", None),
    ("reconnect_min_ms", 100, 60_000, "ms", Some("and at most reconnect_max_secs")),
    ("reconnect_max_secs", 1, 3_600, "seconds", None),
    ("auth_failure_backoff_secs", 10, 86_400, "seconds", Some("a wrong secret does not fix itself")),
    ("token_conflict_backoff_secs", 10, 3_600, "seconds", Some("retrying sooner kicks the other program out too")),
    ("removal_grace_ms", 100, 10_000, "ms", None),
    ("max_frame_bytes", 1_024, 16_777_216, "bytes", None),
    ("max_body_bytes", 65_536, 268_435_456, "bytes", None),
];

/// Bounds of the `[pbx.cdr]` numeric keys.
pub const CDR_RANGES: [(&str, u64, u64, &str, Option<&str>); 5] = [
    ("cdr.max_line_bytes", 256, 1_048_576, "bytes", None),
    ("cdr.max_connections", 1, 64, "", None),
    ("cdr.idle_timeout_secs", 60, 604_800, "seconds", None),
    ("cdr.match_window_secs", 5, 3_600, "seconds", None),
    ("cdr.backfill_max_age_secs", 60, 604_800, "seconds", None),
];

/// Where the CDR socket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CdrMode {
    /// We listen; 3CX connects (its "active socket").
    Listen(SocketAddr),
    /// We connect; 3CX listens (its "passive socket"): `host`, `port`.
    Connect(String, u16),
}

/// The CDR feed after loading.
#[derive(Debug, Clone)]
pub struct LoadedCdr {
    /// Listen or connect.
    pub mode: CdrMode,
    /// Field order.
    pub order: FieldOrder,
    /// The PBX's zone.
    pub time_zone: jiff::tz::TimeZone,
    /// Its name as configured.
    pub time_zone_name: String,
    /// Longest line.
    pub max_line_bytes: usize,
    /// Allowed peers (empty: any).
    pub allowed_peers: Vec<IpAddr>,
    /// Connection cap.
    pub max_connections: usize,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Match window.
    pub match_window: Duration,
    /// Backfill.
    pub backfill: bool,
    /// Backfill age limit.
    pub backfill_max_age: Duration,
}

/// TLS trust after loading.
#[derive(Clone)]
pub struct TlsTrust {
    /// A client configuration (ring provider, system roots plus `ca_file`), without ALPN.
    pub client_config: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for TlsTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTrust").finish_non_exhaustive()
    }
}

/// A validated configuration with its secret loaded.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The base URL, without a trailing slash.
    pub url: reqwest::Url,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: Secret,
    /// Monitored extensions.
    pub extensions: Vec<String>,
    /// Monitored park orbits.
    pub park_orbits: BTreeSet<String>,
    /// TLS trust (used for `https`).
    pub tls: TlsTrust,
    /// Whether `ca_file` was given (for `describe`).
    pub extra_ca: bool,
    /// `expires_in` reading.
    pub expires_in_unit: ExpiresInUnit,
    /// WebSocket ping interval.
    pub keepalive: Duration,
    /// Dead-link timeout.
    pub dead_link: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// REST timeout.
    pub request_timeout: Duration,
    /// First reconnect delay.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Wait after a wrong secret.
    pub auth_failure_backoff: Duration,
    /// First wait after a token conflict.
    pub token_conflict_backoff: Duration,
    /// Removal grace in ms.
    pub removal_grace_ms: u64,
    /// Largest WebSocket message.
    pub max_frame_bytes: usize,
    /// Largest REST body.
    pub max_body_bytes: usize,
    /// The CDR feed.
    pub cdr: Option<LoadedCdr>,
}

impl Config {
    /// A configuration with every default, for tests and the demo.
    pub fn new(url: impl Into<String>, client_id: impl Into<String>, client_secret_file: impl Into<PathBuf>) -> Config {
        Config {
            url: url.into(),
            client_id: client_id.into(),
            client_secret_file: client_secret_file.into(),
            extensions: Vec::new(),
            ca_file: None,
            park_orbits: Vec::new(),
            expires_in_unit: ExpiresInUnit::Auto,
            keepalive_secs: default_keepalive_secs(),
            dead_link_secs: default_dead_link_secs(),
            connect_timeout_secs: default_connect_timeout_secs(),
            request_timeout_secs: default_request_timeout_secs(),
            reconnect_min_ms: default_reconnect_min_ms(),
            reconnect_max_secs: default_reconnect_max_secs(),
            auth_failure_backoff_secs: default_auth_failure_backoff_secs(),
            token_conflict_backoff_secs: default_token_conflict_backoff_secs(),
            removal_grace_ms: default_removal_grace_ms(),
            max_frame_bytes: default_max_frame_bytes(),
            max_body_bytes: default_max_body_bytes(),
            cdr: None,
        }
    }

    /// Paths made absolute against the configuration file's directory.
    pub fn resolve_paths(&mut self, ctx: &LoadContext<'_>) {
        self.client_secret_file = ctx.resolve(&self.client_secret_file);
        if let Some(ca) = &mut self.ca_file {
            *ca = ctx.resolve(ca);
        }
    }

    /// Validates the configuration and reads the secret, the CA file and the time zone. Every
    /// problem is reported, each naming its key (relative to the `[[pbx]]` block).
    pub fn load(&self) -> Result<LoadedConfig, SettingErrors> {
        let mut errors = SettingErrors::new();
        let url = match reqwest::Url::parse(self.url.trim()) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                errors.push(SettingError::new("url", format!("must be http:// or https://, not {}://", u.scheme())));
                None
            }
            Ok(u) if u.host_str().is_none_or(str::is_empty) => {
                errors.push(SettingError::new("url", "has no host"));
                None
            }
            Ok(u) if u.query().is_some() || u.fragment().is_some() => {
                errors.push(SettingError::new("url", "must not have a query or fragment"));
                None
            }
            Ok(mut u) => {
                let path = u.path().trim_end_matches('/').to_owned();
                u.set_path(&path);
                Some(u)
            }
            Err(e) => {
                errors.push(SettingError::new("url", format!("{:?} is not a URL: {e}", self.url)));
                None
            }
        };
        if self.client_id.trim().is_empty() {
            errors.push(SettingError::new("client_id", "must not be empty"));
        } else if self.client_id.contains(['/', '?', '#', ' ']) {
            errors.push(SettingError::new("client_id", "must not contain '/', '?', '#' or spaces"));
        }
        let secret = match read_secret_file(&self.client_secret_file) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push(SettingError::new("client_secret_file", e.to_string()));
                None
            }
        };
        if self.extensions.is_empty() {
            errors.push(SettingError::new(
                "extensions",
                "must list the extensions the API client monitors (they are checked at start)",
            ));
        }
        check_dns(&mut errors, "extensions", &self.extensions);
        check_dns(&mut errors, "park_orbits", &self.park_orbits);
        for orbit in &self.park_orbits {
            if self.extensions.contains(orbit) {
                errors.push(SettingError::new("park_orbits", format!("{orbit:?} is also listed in extensions")));
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
        let tls = match trust(self.ca_file.as_deref()) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(e);
                None
            }
        };
        let cdr = match &self.cdr {
            Some(c) => c.load(&mut errors),
            None => None,
        };
        let (Some(url), Some(secret), Some(tls), true) = (url, secret, tls, errors.is_empty()) else {
            return Err(errors);
        };
        Ok(LoadedConfig {
            url,
            client_id: self.client_id.trim().to_owned(),
            client_secret: secret,
            extensions: self.extensions.iter().map(|e| e.trim().to_owned()).collect(),
            park_orbits: self.park_orbits.iter().map(|e| e.trim().to_owned()).collect(),
            tls,
            extra_ca: self.ca_file.is_some(),
            expires_in_unit: self.expires_in_unit,
            keepalive: Duration::from_secs(self.keepalive_secs),
            dead_link: Duration::from_secs(self.dead_link_secs),
            connect_timeout: Duration::from_secs(self.connect_timeout_secs),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            reconnect_min: Duration::from_millis(self.reconnect_min_ms),
            reconnect_max: Duration::from_secs(self.reconnect_max_secs),
            auth_failure_backoff: Duration::from_secs(self.auth_failure_backoff_secs),
            token_conflict_backoff: Duration::from_secs(self.token_conflict_backoff_secs),
            removal_grace_ms: self.removal_grace_ms,
            max_frame_bytes: self.max_frame_bytes,
            max_body_bytes: self.max_body_bytes,
            cdr,
        })
    }

    fn numeric(&self, key: &str) -> u64 {
        match key {
            "keepalive_secs" => self.keepalive_secs,
            "dead_link_secs" => self.dead_link_secs,
            "connect_timeout_secs" => self.connect_timeout_secs,
            "request_timeout_secs" => self.request_timeout_secs,
            "reconnect_min_ms" => self.reconnect_min_ms,
            "reconnect_max_secs" => self.reconnect_max_secs,
            "auth_failure_backoff_secs" => self.auth_failure_backoff_secs,
            "token_conflict_backoff_secs" => self.token_conflict_backoff_secs,
            "removal_grace_ms" => self.removal_grace_ms,
            "max_frame_bytes" => self.max_frame_bytes as u64,
            "max_body_bytes" => self.max_body_bytes as u64,
            _ => 0,
        }
    }
}

impl CdrConfig {
    /// A CDR feed with every default but where it is.
    pub fn new(listen: Option<String>, connect: Option<String>) -> CdrConfig {
        CdrConfig {
            listen,
            connect,
            fields: None,
            time_zone: default_time_zone(),
            max_line_bytes: default_max_line_bytes(),
            allowed_peers: Vec::new(),
            max_connections: default_max_connections(),
            idle_timeout_secs: default_idle_timeout_secs(),
            match_window_secs: default_match_window_secs(),
            backfill: true,
            backfill_max_age_secs: default_backfill_max_age_secs(),
        }
    }

    fn numeric(&self, key: &str) -> u64 {
        match key {
            "cdr.max_line_bytes" => self.max_line_bytes as u64,
            "cdr.max_connections" => self.max_connections as u64,
            "cdr.idle_timeout_secs" => self.idle_timeout_secs,
            "cdr.match_window_secs" => self.match_window_secs,
            "cdr.backfill_max_age_secs" => self.backfill_max_age_secs,
            _ => 0,
        }
    }

    fn load(&self, errors: &mut SettingErrors) -> Option<LoadedCdr> {
        let before = errors.0.len();
        let mode = match (&self.listen, &self.connect) {
            (Some(l), None) => match l.trim().parse::<SocketAddr>() {
                Ok(a) => Some(CdrMode::Listen(a)),
                Err(_) => {
                    errors.push(SettingError::new("cdr.listen", format!("{l:?} is not an address:port")));
                    None
                }
            },
            (None, Some(c)) => match c.trim().rsplit_once(':') {
                Some((host, port)) if !host.is_empty() => match port.parse::<u16>() {
                    Ok(p) if p > 0 => Some(CdrMode::Connect(host.trim_matches(['[', ']']).to_owned(), p)),
                    _ => {
                        errors.push(SettingError::new("cdr.connect", format!("{c:?}: the port must be 1 to 65535")));
                        None
                    }
                },
                _ => {
                    errors.push(SettingError::new("cdr.connect", format!("{c:?} is not host:port")));
                    None
                }
            },
            (Some(_), Some(_)) => {
                errors.push(SettingError::new(
                    "cdr.listen",
                    "set either listen (3CX active socket) or connect (3CX passive socket), not both",
                ));
                None
            }
            (None, None) => {
                errors.push(SettingError::new(
                    "cdr.listen",
                    "set listen (3CX active socket: 3CX connects to us) or connect (3CX passive socket)",
                ));
                None
            }
        };
        if self.connect.is_some() && !self.allowed_peers.is_empty() {
            errors.push(SettingError::new("cdr.allowed_peers", "is only used with listen"));
        }
        let names: Vec<String> =
            self.fields.clone().unwrap_or_else(|| DEFAULT_FIELDS.iter().map(|s| (*s).to_owned()).collect());
        let order = match FieldOrder::new(&names) {
            Ok(o) => Some(o),
            Err(e) => {
                errors.push(SettingError::new("cdr.fields", e.to_string()));
                None
            }
        };
        let time_zone = match load_time_zone(&self.time_zone) {
            Ok(tz) => Some(tz),
            Err(e) => {
                errors.push(SettingError::new("cdr.time_zone", e));
                None
            }
        };
        for (key, min, max, unit, why) in CDR_RANGES {
            errors.check_range(key, self.numeric(key), min, max, unit, why);
        }
        if errors.0.len() > before {
            return None;
        }
        Some(LoadedCdr {
            mode: mode?,
            order: order?,
            time_zone: time_zone?,
            time_zone_name: self.time_zone.clone(),
            max_line_bytes: self.max_line_bytes,
            allowed_peers: self.allowed_peers.clone(),
            max_connections: self.max_connections,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            match_window: Duration::from_secs(self.match_window_secs),
            backfill: self.backfill,
            backfill_max_age: Duration::from_secs(self.backfill_max_age_secs),
        })
    }
}

/// The zone by name: `UTC`, or an IANA name (the system's tz database, else jiff's bundled
/// one; decision 0012).
pub fn load_time_zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    let name = name.trim();
    if name.eq_ignore_ascii_case("utc") {
        return Ok(jiff::tz::TimeZone::UTC);
    }
    jiff::tz::TimeZone::get(name).map_err(|e| format!("{name:?} is not a known IANA time zone: {e}"))
}

fn check_dns(errors: &mut SettingErrors, key: &str, dns: &[String]) {
    let mut seen = BTreeSet::new();
    for dn in dns {
        let t = dn.trim();
        if t.is_empty() || t.contains(['/', '?', '#', ' ']) {
            errors.push(SettingError::new(key, format!("{dn:?} is not a DN")));
        } else if !seen.insert(t) {
            errors.push(SettingError::new(key, format!("{dn:?} is listed twice")));
        }
    }
}

/// The system's trust store plus the certificates in `ca_file`, with the ring provider.
fn trust(ca_file: Option<&Path>) -> Result<TlsTrust, SettingError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A broken certificate in the store is not ours to refuse the whole store for.
        let _ = roots.add(cert);
    }
    if let Some(ca_file) = ca_file {
        let pem = std::fs::read(ca_file)
            .map_err(|e| SettingError::new("ca_file", format!("cannot read {}: {e}", ca_file.display())))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| SettingError::new("ca_file", format!("{}: {e}", ca_file.display())))?;
            roots.add(cert).map_err(|e| SettingError::new("ca_file", format!("{}: {e}", ca_file.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(SettingError::new("ca_file", format!("{} holds no PEM certificate", ca_file.display())));
        }
    }
    if roots.is_empty() {
        return Err(SettingError::new(
            "ca_file",
            "the system trust store is empty (install ca-certificates) and no ca_file is given",
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SettingError::new("ca_file", e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsTrust { client_config: Arc::new(config) })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests unwrap what they built themselves.
mod tests;
