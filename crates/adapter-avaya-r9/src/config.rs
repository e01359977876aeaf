//! Configuration of one Avaya IP Office R9 (SMDR, Delta2) PBX.
//!
//! Two stages: [`Config`] is the `[[pbx]]` block as written (serde, unknown keys rejected);
//! [`Config::load`] validates it and returns [`Settings`] with typed values. The daemon owns
//! the block's `type` and `name` keys.
//!
//! ```toml
//! [[pbx]]
//! type = "avaya-r9"
//! name = "branch"
//! host = "192.0.2.20"
//! timezone = "Europe/London"
//! [pbx.smdr]
//! mode = "listen"            # the IP Office connects to us ("IP Address" = this host)
//! listen = "0.0.0.0:5080"
//! [pbx.delta2]
//! connect = "192.0.2.30:5095"   # the DevLink relay
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use listener_core::{SettingError, SettingErrors};
use serde::Deserialize;

use crate::clock::PbxClock;
use crate::codec::DEFAULT_MAX_LINE_BYTES;
use crate::tracker::TrackerSettings;

/// The `[[pbx]]` keys of an `avaya-r9` PBX, as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The IP Office's address (an IP address, or a host name). In `smdr.mode = "listen"` only
    /// it may connect (unless `smdr.allowed_sources` says otherwise); in `"connect"` mode we
    /// connect to it.
    pub host: String,
    /// The IANA time zone of the IP Office's clock (`"Europe/London"`): SMDR writes local
    /// times, daylight saving included. Required.
    pub timezone: String,
    /// The SMDR feed. Optional, but at least one of `smdr` and `delta2` is required.
    #[serde(default)]
    pub smdr: Option<SmdrConfig>,
    /// The Delta2 feed from a DevLink relay. Optional.
    #[serde(default)]
    pub delta2: Option<Delta2Config>,
}

/// `[pbx.smdr]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmdrConfig {
    /// `"listen"`: the IP Office connects to us (its SMDR "IP Address" set to ours); or
    /// `"connect"`: we connect to it (its "IP Address" `0.0.0.0`, it listens on `port`).
    pub mode: SmdrMode,
    /// Mode `"listen"`: the address and port we listen on (`"0.0.0.0:5080"`). Required then.
    #[serde(default)]
    pub listen: Option<String>,
    /// Mode `"listen"`: the IP addresses allowed to connect. Default: `host` (resolved at
    /// start when it is a name). Anyone else is refused and logged.
    #[serde(default)]
    pub allowed_sources: Option<Vec<String>>,
    /// Mode `"connect"`: the IP Office's SMDR "TCP Port". Required then.
    #[serde(default)]
    pub port: Option<u16>,
    /// Mode `"listen"`: connections at once (1 to 16). A new allowed connection over the limit
    /// closes the oldest (the PBX reconnected). Default 2.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a call waits for its next segment before it is finished as it is (flagged
    /// `smdrIncomplete`). A segment is written when it ends, so this must exceed your longest
    /// call after a transfer. 60 to 86400; default 7200.
    #[serde(default = "default_segment_timeout_secs")]
    pub segment_timeout_secs: u64,
    /// Calls remembered to drop records the IP Office replays after an outage (it buffers up
    /// to 3000 records). 3000 to 1000000; default 10000. Checkpointed across restarts.
    #[serde(default = "default_remember_calls")]
    pub remember_calls: usize,
    /// Calls whose segments may be collected at once (10 to 1000000); past it the oldest is
    /// finished early. Default 10000.
    #[serde(default = "default_max_pending_calls")]
    pub max_pending_calls: usize,
    /// Longest record line in bytes (256 to 65536); longer lines are counted, logged and
    /// skipped. Default 4096.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Mode `"connect"`: seconds to wait for the TCP connection (1 to 300). Default 10.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Mode `"connect"`: first reconnect delay in ms, doubling with jitter (100 to 60000).
    /// Default 1000.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Mode `"connect"`: longest reconnect delay in seconds (1 to 3600). Default 60.
    #[serde(default = "default_reconnect_max_secs")]
    pub reconnect_max_secs: u64,
}

/// Who opens the SMDR connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmdrMode {
    /// We listen; the IP Office connects.
    Listen,
    /// The IP Office listens; we connect.
    Connect,
}

/// `[pbx.delta2]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delta2Config {
    /// The DevLink relay, `"host:port"`. Required.
    pub connect: String,
    /// Milliseconds SMDR's last record of a call that Delta2 still shows live waits for
    /// Delta2's end of it (0 to 60000). Default 5000.
    #[serde(default = "default_grace_ms")]
    pub grace_ms: u64,
    /// Longest relay line in bytes (256 to 65536). Default 4096.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Seconds to wait for the TCP connection (1 to 300). Default 10.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// First reconnect delay in ms (100 to 60000). Default 1000.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay in seconds (1 to 3600). Default 60.
    #[serde(default = "default_reconnect_max_secs")]
    pub reconnect_max_secs: u64,
}

fn default_max_connections() -> usize {
    2
}
fn default_segment_timeout_secs() -> u64 {
    7_200
}
fn default_remember_calls() -> usize {
    10_000
}
fn default_max_pending_calls() -> usize {
    10_000
}
fn default_max_line_bytes() -> usize {
    DEFAULT_MAX_LINE_BYTES
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
fn default_grace_ms() -> u64 {
    5_000
}

/// The SMDR transport after loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmdrTransport {
    /// We listen.
    Listen {
        /// Where.
        addr: SocketAddr,
        /// Who may connect; `None`: `host`, resolved at start.
        allowed: Option<Vec<IpAddr>>,
        /// Connections at once.
        max_connections: usize,
    },
    /// We connect to `host:port`.
    Connect {
        /// The IP Office's SMDR port.
        port: u16,
    },
}

/// Reconnect and connect timing of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// First delay.
    pub min: Duration,
    /// Longest delay.
    pub max: Duration,
}

/// SMDR settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmdrSettings {
    /// Transport.
    pub transport: SmdrTransport,
    /// Longest line.
    pub max_line_bytes: usize,
    /// Connect timing (connect mode).
    pub reconnect: Reconnect,
}

/// Delta2 settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta2Settings {
    /// The relay, `host:port`.
    pub connect: String,
    /// Longest line.
    pub max_line_bytes: usize,
    /// Connect timing.
    pub reconnect: Reconnect,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The IP Office.
    pub host: String,
    /// Its clock.
    pub clock: PbxClock,
    /// SMDR, if configured.
    pub smdr: Option<SmdrSettings>,
    /// Delta2, if configured.
    pub delta2: Option<Delta2Settings>,
    /// The tracker's tuning.
    pub tracker: TrackerSettings,
}

type Range = (&'static str, u64, u64, &'static str, Option<&'static str>);

/// Bounds of the numeric keys of `[pbx.smdr]`: one table for `check-config`, docs and tests.
pub const SMDR_RANGES: [Range; 8] = [
    ("smdr.max_connections", 1, 16, "connections", None),
    ("smdr.segment_timeout_secs", 60, 86_400, "seconds", Some("a segment is written when it ends")),
    (
        "smdr.remember_calls",
        3_000,
        1_000_000,
        "calls",
        Some("the IP Office replays up to 3000 buffered records after an outage"),
    ),
    ("smdr.max_pending_calls", 10, 1_000_000, "calls", None),
    ("smdr.max_line_bytes", 256, 65_536, "bytes", None),
    ("smdr.connect_timeout_secs", 1, 300, "seconds", None),
    ("smdr.reconnect_min_ms", 100, 60_000, "ms", None),
    ("smdr.reconnect_max_secs", 1, 3_600, "seconds", None),
];

/// Bounds of the numeric keys of `[pbx.delta2]`.
pub const DELTA2_RANGES: [Range; 5] = [
    ("delta2.grace_ms", 0, 60_000, "ms", None),
    ("delta2.max_line_bytes", 256, 65_536, "bytes", None),
    ("delta2.connect_timeout_secs", 1, 300, "seconds", None),
    ("delta2.reconnect_min_ms", 100, 60_000, "ms", None),
    ("delta2.reconnect_max_secs", 1, 3_600, "seconds", None),
];

impl SmdrConfig {
    /// SMDR in listen mode on `listen`, every other key at its default.
    pub fn listen(listen: impl Into<String>) -> SmdrConfig {
        SmdrConfig { mode: SmdrMode::Listen, listen: Some(listen.into()), port: None, ..SmdrConfig::connect(0) }
    }

    /// SMDR in connect mode to the IP Office's `port`.
    pub fn connect(port: u16) -> SmdrConfig {
        SmdrConfig {
            mode: SmdrMode::Connect,
            listen: None,
            allowed_sources: None,
            port: Some(port),
            max_connections: default_max_connections(),
            segment_timeout_secs: default_segment_timeout_secs(),
            remember_calls: default_remember_calls(),
            max_pending_calls: default_max_pending_calls(),
            max_line_bytes: default_max_line_bytes(),
            connect_timeout_secs: default_connect_timeout_secs(),
            reconnect_min_ms: default_reconnect_min_ms(),
            reconnect_max_secs: default_reconnect_max_secs(),
        }
    }

    fn numeric(&self, key: &str) -> u64 {
        match key {
            "smdr.max_connections" => self.max_connections as u64,
            "smdr.segment_timeout_secs" => self.segment_timeout_secs,
            "smdr.remember_calls" => self.remember_calls as u64,
            "smdr.max_pending_calls" => self.max_pending_calls as u64,
            "smdr.max_line_bytes" => self.max_line_bytes as u64,
            "smdr.connect_timeout_secs" => self.connect_timeout_secs,
            "smdr.reconnect_min_ms" => self.reconnect_min_ms,
            "smdr.reconnect_max_secs" => self.reconnect_max_secs,
            _ => 0,
        }
    }
}

impl Delta2Config {
    /// Delta2 from the relay at `connect`, every other key at its default.
    pub fn new(connect: impl Into<String>) -> Delta2Config {
        Delta2Config {
            connect: connect.into(),
            grace_ms: default_grace_ms(),
            max_line_bytes: default_max_line_bytes(),
            connect_timeout_secs: default_connect_timeout_secs(),
            reconnect_min_ms: default_reconnect_min_ms(),
            reconnect_max_secs: default_reconnect_max_secs(),
        }
    }

    fn numeric(&self, key: &str) -> u64 {
        match key {
            "delta2.grace_ms" => self.grace_ms,
            "delta2.max_line_bytes" => self.max_line_bytes as u64,
            "delta2.connect_timeout_secs" => self.connect_timeout_secs,
            "delta2.reconnect_min_ms" => self.reconnect_min_ms,
            "delta2.reconnect_max_secs" => self.reconnect_max_secs,
            _ => 0,
        }
    }
}

impl Config {
    /// Every key a block accepts, dotted for the nested tables.
    pub fn keys() -> Vec<String> {
        let mut keys: Vec<String> =
            listener_core::serde_fields::<Config>().into_iter().filter(|k| k != "smdr" && k != "delta2").collect();
        keys.extend(listener_core::serde_fields::<SmdrConfig>().into_iter().map(|k| format!("smdr.{k}")));
        keys.extend(listener_core::serde_fields::<Delta2Config>().into_iter().map(|k| format!("delta2.{k}")));
        keys
    }

    /// Validates the block. Every problem is reported, each naming its key (relative to the
    /// `[[pbx]]` block, `smdr.listen`).
    pub fn load(&self) -> Result<Settings, SettingErrors> {
        let mut errors = SettingErrors::new();
        if self.host.trim().is_empty() {
            errors.push(SettingError::new("host", "must not be empty"));
        }
        let clock = match PbxClock::new(self.timezone.trim()) {
            Ok(c) => Some(c),
            Err(e) => {
                errors.push(SettingError::new("timezone", e.to_string()));
                None
            }
        };
        if self.smdr.is_none() && self.delta2.is_none() {
            errors.push(SettingError::new("smdr", "set [pbx.smdr], [pbx.delta2] or both: this PBX has no feed"));
        }
        let smdr = self.smdr.as_ref().and_then(|s| load_smdr(s, &mut errors));
        let delta2 = self.delta2.as_ref().and_then(|d| load_delta2(d, &mut errors));
        let (Some(clock), true) = (clock, errors.is_empty()) else { return Err(errors) };
        let defaults = TrackerSettings::default();
        let tracker = TrackerSettings {
            segment_timeout_ms: self
                .smdr
                .as_ref()
                .map_or(defaults.segment_timeout_ms, |s| s.segment_timeout_secs * 1000),
            remember_calls: self.smdr.as_ref().map_or(defaults.remember_calls, |s| s.remember_calls),
            max_pending_calls: self.smdr.as_ref().map_or(defaults.max_pending_calls, |s| s.max_pending_calls),
            max_segments_per_call: defaults.max_segments_per_call,
            delta2: self.delta2.is_some(),
            smdr: self.smdr.is_some(),
            delta2_grace_ms: self.delta2.as_ref().map_or(defaults.delta2_grace_ms, |d| d.grace_ms),
        };
        Ok(Settings { host: self.host.trim().to_owned(), clock, smdr, delta2, tracker })
    }
}

fn load_smdr(s: &SmdrConfig, errors: &mut SettingErrors) -> Option<SmdrSettings> {
    for (key, min, max, unit, why) in SMDR_RANGES {
        errors.check_range(key, s.numeric(key), min, max, unit, why);
    }
    if s.reconnect_min_ms > s.reconnect_max_secs.saturating_mul(1000) {
        errors.push(SettingError::new("smdr.reconnect_min_ms", "must be at most smdr.reconnect_max_secs"));
    }
    let transport = match s.mode {
        SmdrMode::Listen => {
            if s.port.is_some() {
                errors.push(SettingError::new("smdr.port", "is only used with mode = \"connect\" (use smdr.listen)"));
            }
            let addr = match &s.listen {
                None => {
                    errors.push(SettingError::new(
                        "smdr.listen",
                        "is required with mode = \"listen\" (e.g. \"0.0.0.0:5080\"; the IP Office's SMDR TCP Port)",
                    ));
                    None
                }
                Some(l) => match l.parse::<SocketAddr>() {
                    Ok(a) if a.port() != 0 => Some(a),
                    Ok(_) => {
                        errors.push(SettingError::new("smdr.listen", "needs a port other than 0"));
                        None
                    }
                    Err(e) => {
                        errors.push(SettingError::new("smdr.listen", format!("{l:?} is not an address:port ({e})")));
                        None
                    }
                },
            };
            let mut allowed = None;
            if let Some(list) = &s.allowed_sources {
                let mut ips = Vec::new();
                for a in list {
                    match a.trim().parse::<IpAddr>() {
                        Ok(ip) => ips.push(ip),
                        Err(_) => errors
                            .push(SettingError::new("smdr.allowed_sources", format!("{a:?} is not an IP address"))),
                    }
                }
                if list.is_empty() {
                    errors.push(SettingError::new(
                        "smdr.allowed_sources",
                        "must name at least one address (leave it out to allow only host)",
                    ));
                }
                allowed = Some(ips);
            }
            addr.map(|addr| SmdrTransport::Listen { addr, allowed, max_connections: s.max_connections })
        }
        SmdrMode::Connect => {
            if s.listen.is_some() {
                errors.push(SettingError::new("smdr.listen", "is only used with mode = \"listen\""));
            }
            if s.allowed_sources.is_some() {
                errors.push(SettingError::new("smdr.allowed_sources", "is only used with mode = \"listen\""));
            }
            match s.port {
                Some(p) if p != 0 => Some(SmdrTransport::Connect { port: p }),
                _ => {
                    errors.push(SettingError::new(
                        "smdr.port",
                        "is required with mode = \"connect\": the IP Office's SMDR TCP Port (1 to 65535)",
                    ));
                    None
                }
            }
        }
    };
    transport.map(|transport| SmdrSettings {
        transport,
        max_line_bytes: s.max_line_bytes,
        reconnect: Reconnect {
            connect_timeout: Duration::from_secs(s.connect_timeout_secs),
            min: Duration::from_millis(s.reconnect_min_ms),
            max: Duration::from_secs(s.reconnect_max_secs),
        },
    })
}

fn load_delta2(d: &Delta2Config, errors: &mut SettingErrors) -> Option<Delta2Settings> {
    for (key, min, max, unit, why) in DELTA2_RANGES {
        errors.check_range(key, d.numeric(key), min, max, unit, why);
    }
    if d.reconnect_min_ms > d.reconnect_max_secs.saturating_mul(1000) {
        errors.push(SettingError::new("delta2.reconnect_min_ms", "must be at most delta2.reconnect_max_secs"));
    }
    let ok =
        d.connect.rsplit_once(':').is_some_and(|(h, p)| !h.trim().is_empty() && p.parse::<u16>().is_ok_and(|p| p != 0));
    if !ok {
        errors.push(SettingError::new(
            "delta2.connect",
            format!("{:?} is not host:port (the DevLink relay, e.g. \"192.0.2.30:5095\")", d.connect),
        ));
        return None;
    }
    Some(Delta2Settings {
        connect: d.connect.trim().to_owned(),
        max_line_bytes: d.max_line_bytes,
        reconnect: Reconnect {
            connect_timeout: Duration::from_secs(d.connect_timeout_secs),
            min: Duration::from_millis(d.reconnect_min_ms),
            max: Duration::from_secs(d.reconnect_max_secs),
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        let c: Config = toml::from_str(text).unwrap();
        c.load().map(|_| Vec::new()).unwrap_or_else(|e| e.0.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn a_listen_block_with_delta2_loads() {
        let c: Config = toml::from_str(
            "host = \"192.0.2.20\"\ntimezone = \"Europe/London\"\n[smdr]\nmode = \"listen\"\nlisten = \"0.0.0.0:5080\"\n[delta2]\nconnect = \"relay.example:5095\"\n",
        )
        .unwrap();
        let s = c.load().unwrap();
        assert_eq!(
            s.smdr.unwrap().transport,
            SmdrTransport::Listen { addr: "0.0.0.0:5080".parse().unwrap(), allowed: None, max_connections: 2 }
        );
        assert_eq!(s.delta2.unwrap().connect, "relay.example:5095");
        assert!(s.tracker.delta2 && s.tracker.smdr);
        assert_eq!(s.clock.name(), "Europe/London");
    }

    #[test]
    fn every_problem_is_reported_by_key() {
        let errs = errors(
            "host = \"\"\ntimezone = \"Mars/Olympus\"\n[smdr]\nmode = \"listen\"\nport = 5080\nallowed_sources = [\"pbx.local\"]\nsegment_timeout_secs = 5\nremember_calls = 100\n[delta2]\nconnect = \"relay\"\ngrace_ms = 70000\n",
        );
        let keys: Vec<&str> = errs.iter().map(|e| e.split(':').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "host",
                "timezone",
                "smdr.segment_timeout_secs",
                "smdr.remember_calls",
                "smdr.port",
                "smdr.listen",
                "smdr.allowed_sources",
                "delta2.grace_ms",
                "delta2.connect"
            ],
            "{errs:#?}"
        );
        assert!(errs.iter().any(|e| e.contains("must be between 60 and 86400 seconds")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("replays up to 3000")), "{errs:?}");
    }

    #[test]
    fn connect_mode_needs_a_port_and_a_feed_is_required() {
        let errs =
            errors("host = \"192.0.2.20\"\ntimezone = \"UTC\"\n[smdr]\nmode = \"connect\"\nlisten = \"0.0.0.0:1\"\n");
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("smdr.listen: is only used"));
        assert!(errs[1].starts_with("smdr.port: is required"));
        let errs = errors("host = \"192.0.2.20\"\ntimezone = \"UTC\"\n");
        assert!(errs[0].starts_with("smdr: set [pbx.smdr]"), "{errs:?}");
        assert!(toml::from_str::<Config>("host = \"h\"\ntimezone = \"UTC\"\nbogus = 1\n").is_err());
    }

    #[test]
    fn keys_are_dotted_for_the_nested_tables() {
        let keys = Config::keys();
        for k in [
            "host",
            "timezone",
            "smdr.mode",
            "smdr.listen",
            "smdr.allowed_sources",
            "smdr.port",
            "delta2.connect",
            "delta2.grace_ms",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} in {keys:?}");
        }
        assert!(!keys.iter().any(|x| x == "smdr"));
    }
}
