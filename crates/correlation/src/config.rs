//! [`CorrelationConfig`]: the `[correlation]` section of the daemon's TOML file.

use listener_core::Direction;
use regex::Regex;
use serde::{Deserialize, Serialize};

/// How correlation is tuned. The daemon embeds it as its `[correlation]` section; every key is
/// optional and the defaults are documented on each field.
///
/// ```
/// let config: correlation::CorrelationConfig = toml::from_str(r#"
///     unmatched = "drop"
///     call_id_pattern = '^(?P<call_sid>[0-9a-f-]{36})\.(?P<parent_call_sid>[0-9a-f-]{36})@'
/// "#).unwrap();
/// assert!(correlation::Correlator::new(config).is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelationConfig {
    /// What happens to the signals of a PBX call no leg matched: `"forward"` them with null
    /// sids (`meta.correlation = "none"`, or `"ambiguous"` when several legs fitted) or
    /// `"drop"` them. Default `"forward"`.
    pub unmatched: UnmatchedPolicy,
    /// How long the signals of a PBX call wait for its leg before they are released unbound,
    /// in milliseconds, counted from the first signal of the call. Must be at least twice
    /// `number_window_ms` (see there). Default 6000.
    pub wait_for_leg_ms: u64,
    /// Caller + dialled number matching: how far apart (either way) the leg's start and the PBX
    /// call's start may be, in milliseconds. A number match is only decided
    /// `2 × number_window_ms` after the call was first seen, because every competing call or
    /// leg whose start could fall into the window has been seen by then (assuming prompt
    /// delivery). `0` turns number matching off. Default 2000.
    pub number_window_ms: u64,
    /// How far a PBX's clock may be off ours, in milliseconds, for calls reported after the
    /// fact (SMDR, CDR: `listener_core::AFTER_THE_FACT_SOURCES`), whose only times are the
    /// PBX's: their number matching window is `number_window_ms` plus this. 0 to 300000;
    /// default 5000.
    pub clock_skew_ms: u64,
    /// How long a leg that never ended is kept after its last update, in seconds (a lost BYE
    /// or a lost `completed` must not keep it forever). Default 7200.
    pub leg_ttl_secs: u64,
    /// How long an ended leg is kept, in seconds, so that a PBX call reported late can still
    /// find it. Default 60. After that its callSid and Call-ID are remembered for
    /// `leg_ttl_secs` more (at most `max_legs` of them), so that a replayed or late update about
    /// it does not bring it back: an ended leg never comes back. SMDR reports a call when it
    /// ends, so 60 s covers it while the SMDR link is up; to match calls the IP Office replays
    /// after an SMDR outage, keep legs as long as such an outage may last (`max_legs` bounds
    /// the memory).
    pub ended_leg_keep_secs: u64,
    /// How long a PBX call's binding is kept after its last signal, in seconds. Transfers,
    /// parks and pickups keep the PBX call id, so the binding follows them as long as the call
    /// is alive. Default 43200 (12 hours).
    pub call_ttl_secs: u64,
    /// How long a PBX call's binding is kept after the call ended (`CallChange::Ended`), in
    /// seconds, for stragglers. Default 60.
    pub ended_call_keep_secs: u64,
    /// Whether a SIP Call-ID without a host part (`abc`) equals one with a host (`abc@host`).
    /// Some CTI feeds report only the local part; RFC 3261 §8.1.1.4 makes the local part
    /// globally unique on its own (it must be random), so the host adds nothing to identity.
    /// Two different hosts (`abc@a` vs `abc@b`) never match, and an ambiguous local part binds
    /// nothing. Default `true`.
    pub call_id_ignore_host: bool,
    /// A regular expression that reads the sids straight out of the PBX's SIP Call-ID when the
    /// platform built the Call-ID from them. Named groups: `call_sid` (required) and
    /// `parent_call_sid` (optional), each a UUID. Default: none.
    pub call_id_pattern: Option<String>,
    /// A regular expression that finds a correlation token in a PBX-visible field (see
    /// `token_fields`). Named groups: either `call_sid` (and optionally `parent_call_sid`),
    /// UUIDs that bind directly, or `token`, which is looked up among the legs: it matches a
    /// leg whose tag `token_meta_key` equals it (ignoring case), or, when it is at least 8 hex
    /// digits, a leg whose callSid starts with it. Default: none.
    pub token_pattern: Option<String>,
    /// Which PBX fields `token_pattern` reads, in order. Default
    /// `["caller-name", "dialled-number"]`.
    pub token_fields: Vec<TokenField>,
    /// The leg tag (from the announcement's `meta`) that holds a leg's token. Default
    /// `"correlationToken"`.
    pub token_meta_key: String,
    /// The most legs the registry holds; past it the leg closest to expiry is evicted (and
    /// counted as expired). Default 100000.
    pub max_legs: usize,
    /// The most PBX calls that may wait for a leg at once; past it the one waiting longest is
    /// released early. Default 10000.
    pub max_pending_calls: usize,
    /// The most signals held for one waiting PBX call; past it the call is decided at once.
    /// Default 256.
    pub max_held_signals_per_call: usize,
    /// The call directions that can have a platform leg, and so wait for one (up to
    /// `wait_for_leg_ms`). A call in another direction is decided at once: an internal call
    /// (extension to extension) never crosses the platform, and a ringing held back for a leg
    /// that cannot come is a late screen pop. Values: `"inbound"`, `"outbound"`, `"internal"`,
    /// `"unknown"` (the PBX did not say). Default `["inbound", "outbound", "unknown"]`; a site
    /// whose outbound calls do not go through the platform sets `["inbound", "unknown"]`.
    pub wait_for_directions: Vec<Direction>,
}

/// What happens to the signals of an unmatched PBX call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnmatchedPolicy {
    /// Forward them with null sids and `meta.correlation = "none"` (`"ambiguous"` when several
    /// legs fitted).
    #[default]
    Forward,
    /// Drop them (counted).
    Drop,
}

/// A PBX-visible field the token pattern reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenField {
    /// `CallInfo::caller_name`, the caller's display name.
    CallerName,
    /// `CallInfo::dialled_number`, the DID (a per-call DID from a pool).
    DialledNumber,
    /// `CallInfo::external_number`, the caller's number.
    ExternalNumber,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        CorrelationConfig {
            unmatched: UnmatchedPolicy::Forward,
            wait_for_leg_ms: 6_000,
            number_window_ms: 2_000,
            clock_skew_ms: 5_000,
            leg_ttl_secs: 7_200,
            ended_leg_keep_secs: 60,
            call_ttl_secs: 43_200,
            ended_call_keep_secs: 60,
            call_id_ignore_host: true,
            call_id_pattern: None,
            token_pattern: None,
            token_fields: vec![TokenField::CallerName, TokenField::DialledNumber],
            token_meta_key: "correlationToken".to_owned(),
            max_legs: 100_000,
            max_pending_calls: 10_000,
            max_held_signals_per_call: 256,
            wait_for_directions: vec![Direction::Inbound, Direction::Outbound, Direction::Unknown],
        }
    }
}

/// A `[correlation]` setting that cannot be used. [`CorrelationConfigError::key`] names the key;
/// the message says what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum CorrelationConfigError {
    /// A pattern is not a valid regular expression.
    #[error("invalid regular expression: {source}")]
    InvalidPattern {
        /// The key (`call_id_pattern`, `token_pattern`).
        key: &'static str,
        /// The regex crate's explanation.
        #[source]
        source: Box<regex::Error>,
    },
    /// A pattern lacks the named groups it needs.
    #[error("the pattern needs a named group {needs}")]
    MissingGroup {
        /// The key.
        key: &'static str,
        /// Which groups it needs.
        needs: &'static str,
    },
    /// A number is outside its range.
    #[error("must be between {min} and {max} {unit}, not {value}")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// What it says.
        value: u64,
        /// The least allowed.
        min: u64,
        /// The most allowed.
        max: u64,
        /// What it counts.
        unit: &'static str,
    },
    /// Two settings contradict each other.
    #[error("{reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Why.
        reason: &'static str,
    },
}

impl CorrelationConfigError {
    /// The `[correlation]` key the error is about, so that the daemon can point at its line.
    pub fn key(&self) -> &'static str {
        match self {
            CorrelationConfigError::InvalidPattern { key, .. }
            | CorrelationConfigError::MissingGroup { key, .. }
            | CorrelationConfigError::OutOfRange { key, .. }
            | CorrelationConfigError::Invalid { key, .. } => key,
        }
    }
}

/// The validated configuration the correlator runs on: `[correlation]` checked, its patterns
/// compiled, and whether any leg source is configured. Built once (by `check-config` and at
/// start alike) and handed to [`crate::Correlator::new`].
#[derive(Debug, Clone)]
pub struct CorrelationSettings {
    pub(crate) config: CorrelationConfig,
    pub(crate) call_id_pattern: Option<Regex>,
    pub(crate) token_pattern: Option<Regex>,
    pub(crate) leg_sources: bool,
}

impl CorrelationConfig {
    /// Checks the settings and compiles the patterns.
    pub fn validate(&self) -> Result<(), CorrelationConfigError> {
        CorrelationSettings::new(self.clone()).map(|_| ())
    }
}

impl CorrelationSettings {
    /// Whether legs can be learned at all (an announcement endpoint or a SIP tap is
    /// configured). Without, no call waits for a leg: only `call_id_pattern` and a token
    /// holding the sids themselves can bind, and they are tried at once. Default: true.
    pub fn with_leg_sources(mut self, any: bool) -> CorrelationSettings {
        self.leg_sources = any;
        self
    }

    /// The configuration these settings were built from.
    pub fn config(&self) -> &CorrelationConfig {
        &self.config
    }

    /// Whether a leg source is configured.
    pub fn leg_sources(&self) -> bool {
        self.leg_sources
    }

    /// Checks `config` and compiles its patterns; the error names the key.
    pub fn new(config: CorrelationConfig) -> Result<CorrelationSettings, CorrelationConfigError> {
        let call_id_pattern = compile(&config.call_id_pattern, "call_id_pattern")?;
        if let Some(re) = &call_id_pattern
            && !has_group(re, "call_sid")
        {
            return Err(CorrelationConfigError::MissingGroup { key: "call_id_pattern", needs: "`call_sid`" });
        }
        let token_pattern = compile(&config.token_pattern, "token_pattern")?;
        if let Some(re) = &token_pattern
            && !has_group(re, "call_sid")
            && !has_group(re, "token")
        {
            return Err(CorrelationConfigError::MissingGroup { key: "token_pattern", needs: "`token` or `call_sid`" });
        }
        if config.token_pattern.is_some() && config.token_fields.is_empty() {
            return Err(CorrelationConfigError::Invalid {
                key: "token_fields",
                reason: "token_pattern is set but token_fields names no field",
            });
        }
        let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        for (key, value, min, max, unit) in [
            ("wait_for_leg_ms", config.wait_for_leg_ms, 0, 120_000, "ms"),
            ("number_window_ms", config.number_window_ms, 0, 60_000, "ms"),
            ("clock_skew_ms", config.clock_skew_ms, 0, 300_000, "ms"),
            ("leg_ttl_secs", config.leg_ttl_secs, 1, 7 * 86_400, "seconds"),
            ("ended_leg_keep_secs", config.ended_leg_keep_secs, 0, 7 * 86_400, "seconds"),
            ("call_ttl_secs", config.call_ttl_secs, 1, 7 * 86_400, "seconds"),
            ("ended_call_keep_secs", config.ended_call_keep_secs, 0, 86_400, "seconds"),
            ("max_legs", n(config.max_legs), 1, 10_000_000, "legs"),
            ("max_pending_calls", n(config.max_pending_calls), 1, 1_000_000, "calls"),
            ("max_held_signals_per_call", n(config.max_held_signals_per_call), 1, 100_000, "signals"),
        ] {
            if !(min..=max).contains(&value) {
                return Err(CorrelationConfigError::OutOfRange { key, value, min, max, unit });
            }
        }
        if config.number_window_ms.saturating_mul(2) > config.wait_for_leg_ms {
            return Err(CorrelationConfigError::Invalid {
                key: "wait_for_leg_ms",
                reason: "must be at least 2 × number_window_ms, or number matching cannot see its competitors",
            });
        }
        Ok(CorrelationSettings { config, call_id_pattern, token_pattern, leg_sources: true })
    }
}

fn compile(pattern: &Option<String>, key: &'static str) -> Result<Option<Regex>, CorrelationConfigError> {
    pattern
        .as_deref()
        .map(|p| Regex::new(p).map_err(|e| CorrelationConfigError::InvalidPattern { key, source: Box::new(e) }))
        .transpose()
}

fn has_group(re: &Regex, name: &str) -> bool {
    re.capture_names().flatten().any(|n| n == name)
}
