//! Configuration: one TOML file, read in two stages (ripgrep's `LowArgs`/`HiArgs`).
//!
//! 1. [`file`]: the file as written — plain serde structs with `deny_unknown_fields`, so a
//!    misspelt key is an error with its line, not a silently ignored setting.
//! 2. [`Config`]: validated and typed — numbers plan built, secrets loaded from their files,
//!    PBX blocks handed to their adapter's own config type. Every error names the file, the
//!    line and the key ([`ConfigError`]); all of them are reported at once.
//!
//! Secrets are only ever read from `*_file` keys (systemd credentials live under
//! `/run/credentials/<unit>/`), and are never printed: [`Config::summary`] shows paths only.

pub mod file;
mod fingerprint;
mod span;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use listener_core::{LoadContext, NumberPlan, PbxId};
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use uuid::Uuid;

pub use file::LogFormat;

use crate::pbx_types::{self, BlockError, LoadedPbx};
pub use fingerprint::{Fingerprint, Fingerprints};
pub use span::{KeyPath, SpanIndex, line_col};

/// Where the daemon looks for its configuration by default.
pub const DEFAULT_PATH: &str = "/etc/pbx-listener/pbx-listener.toml";

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line and column, where known.
    pub location: Option<(usize, usize)>,
    /// The key concerned (`pbx[0].password_file`), where known.
    pub key: Option<String>,
    /// What is wrong, and what to do about it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.location {
            write!(f, ":{line}:{col}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a configuration file (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The validated configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// `[account]`.
    pub account: Account,
    /// `[meta]`: tags on every event.
    pub meta: BTreeMap<String, String>,
    /// `[numbers]`.
    pub numbers: NumberPlan,
    /// `[[pbx]]` blocks.
    pub pbx: Vec<PbxConfig>,
    /// `[platform]`, secrets loaded.
    pub platform: forwarder::ForwarderSettings,
    /// `[correlation]`, validated, its patterns compiled, knowing whether a leg source exists.
    pub correlation: correlation::CorrelationSettings,
    /// `[legs]` loaded (secrets, certificate and key read), if configured.
    pub legs: Option<leg_announce::LegsSettings>,
    /// `[sip_tap]` loaded (the HEP key read), if configured.
    pub sip_tap: Option<sip_tap::SipTapSettings>,
    /// `[outbox]`, validated (the outbox crate's own settings).
    pub outbox: outbox::OutboxSettings,
    /// `[admin]`.
    pub admin: AdminSettings,
    /// `[log]`.
    pub log: file::LogSection,
    /// What works but is probably not what the admin meant (`check-config` prints these; `run`
    /// logs them).
    pub warnings: Vec<ConfigError>,
    /// What each section and `[[pbx]]` block says, for a reload to tell what changed.
    pub fingerprints: Fingerprints,
}

/// `[account]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// `accountId` of every event.
    pub id: Uuid,
    /// `accountName` of every event.
    pub name: String,
}

/// One `[[pbx]]` block, validated.
#[derive(Debug)]
pub struct PbxConfig {
    /// Its name and type.
    pub id: PbxId,
    /// Its kind's settings, loaded.
    pub settings: LoadedPbx,
}

/// `[admin]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// The admin HTTP address (`/metrics`, `/health/*`), or `None` when disabled.
    pub listen: Option<SocketAddr>,
}

/// Collects errors and warnings with their locations while validating.
pub(crate) struct Checker<'a> {
    path: &'a Path,
    index: &'a SpanIndex<'a>,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

impl<'a> Checker<'a> {
    fn new(path: &'a Path, index: &'a SpanIndex<'a>) -> Checker<'a> {
        Checker { path, index, errors: Vec::new(), warnings: Vec::new() }
    }

    fn entry(&self, key: &KeyPath, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.path.to_owned(),
            location: self.index.locate(key),
            key: Some(key.to_string()),
            message: message.into(),
        }
    }

    /// An error about the key at `key`.
    pub(crate) fn at(&mut self, key: &KeyPath, message: impl Into<String>) {
        let e = self.entry(key, message);
        self.errors.push(e);
    }

    /// A warning about the key at `key`: the configuration works, but probably not as meant.
    pub(crate) fn warn(&mut self, key: &KeyPath, message: impl Into<String>) {
        let w = self.entry(key, message);
        self.warnings.push(w);
    }

    /// An error from toml/serde (which carries its own span). The key is the one written at the
    /// span when there is one (an unknown or mistyped key), else `key`.
    fn toml(&mut self, err: &toml::de::Error, key: Option<&KeyPath>) {
        let location =
            err.span().map(|s| self.index.line_col(s.start)).or_else(|| key.and_then(|k| self.index.locate(k)));
        let at_span = err.span().and_then(|s| self.index.path_at(s.start));
        self.errors.push(ConfigError {
            file: self.path.to_owned(),
            location,
            key: at_span.as_ref().or(key).filter(|k| !k.0.is_empty()).map(ToString::to_string),
            message: err.message().trim_end().to_owned(),
        });
    }

    /// Deserialises a sub-value with spans preserved, so its errors point into the file.
    fn sub<T: DeserializeOwned>(&mut self, value: Spanned<DeValue<'_>>, key: &KeyPath) -> Option<T> {
        match T::deserialize(ValueDeserializer::from(value)) {
            Ok(v) => Some(v),
            Err(e) => {
                self.toml(&e, Some(key));
                None
            }
        }
    }
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            location: None,
            key: None,
            message: format!("cannot read the configuration file: {e}"),
        }])
    })?;
    load_str(path, &text)
}

/// Validates configuration text; `path` names it in errors and anchors relative paths.
pub fn load_str(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let index = match SpanIndex::parse(text) {
        Ok(index) => index,
        Err(e) => {
            let location = e.span().map(|s| line_col(text, s.start));
            return Err(ConfigErrors(vec![ConfigError {
                file: path.to_owned(),
                location,
                key: None,
                message: e.message().trim_end().to_owned(),
            }]));
        }
    };
    let mut check = Checker::new(path, &index);
    let whole: Spanned<DeValue<'_>> = Spanned::new(index.doc().span(), DeValue::Table(index.doc().get_ref().clone()));
    let Some(raw) = check.sub::<file::FileConfig>(whole, &KeyPath::default()) else {
        return Err(ConfigErrors(check.errors));
    };
    let base = path.parent().unwrap_or(Path::new(".")).to_owned();
    let config = validate(&mut check, raw, &index, &base, path);
    match config {
        Some(mut c) if check.errors.is_empty() => {
            c.warnings = check.warnings;
            Ok(c)
        }
        _ => Err(ConfigErrors(check.errors)),
    }
}

fn validate(
    check: &mut Checker<'_>,
    raw: file::FileConfig,
    index: &SpanIndex<'_>,
    base: &Path,
    path: &Path,
) -> Option<Config> {
    let account = Account { id: raw.account.id, name: raw.account.name.clone() };
    if account.name.trim().is_empty() {
        check.at(&KeyPath::keys(&["account", "name"]), "must not be empty");
    }
    for key in raw.meta.keys() {
        if listener_core::STANDARD_META_KEYS.contains(&key.as_str()) {
            check.at(
                &KeyPath::keys(&["meta", key]),
                format!("`{key}` is set by the listener itself; choose another tag name"),
            );
        }
        if key.is_empty() {
            check.at(&KeyPath::keys(&["meta"]), "tag names must not be empty");
        }
    }
    if !(1..=15).contains(&raw.numbers.max_extension_digits) {
        check.at(
            &KeyPath::keys(&["numbers", "max_extension_digits"]),
            format!(
                "must be between 1 and 15 digits (E.164 numbers have at most 15), not {}",
                raw.numbers.max_extension_digits
            ),
        );
    }
    let numbers = match NumberPlan::new(&raw.numbers.default_region, raw.numbers.max_extension_digits) {
        Ok(plan) => Some(plan),
        Err(e) => {
            check.at(&KeyPath::keys(&["numbers", "default_region"]), e.to_string());
            None
        }
    };
    let pbx = validate_pbx_blocks(check, index, base);
    let platform = load_platform(check, raw.platform, base);
    let leg_sources = raw.legs.is_some() || raw.sip_tap.is_some();
    let legs = raw.legs.and_then(|legs| load_legs(check, legs, base));
    let sip_tap = raw.sip_tap.and_then(|mut tap| {
        if let Some(p) = &mut tap.hep_auth_key_file {
            *p = resolve(base, p);
        }
        tap.load().map_err(|e| check.at(&section_key("sip_tap", e.key()), e.to_string())).ok()
    });
    let correlation = match correlation::CorrelationSettings::new(raw.correlation) {
        Ok(settings) => Some(settings.with_leg_sources(leg_sources)),
        Err(e) => {
            check.at(&KeyPath::keys(&["correlation", e.key()]), e.to_string());
            None
        }
    };
    let outbox = match raw.outbox.load(|p| resolve(base, p)) {
        Ok(settings) => {
            match settings.check_dir() {
                outbox::DataDirCheck::Ready => {}
                outbox::DataDirCheck::WillBeCreated(why) => check.warn(&KeyPath::keys(&["outbox", "data_dir"]), why),
                outbox::DataDirCheck::Unusable(why) => check.at(&KeyPath::keys(&["outbox", "data_dir"]), why),
            }
            Some(settings)
        }
        Err(errors) => {
            for e in errors.0 {
                check.at(&KeyPath::keys(&["outbox"]).dotted(&e.key), e.message);
            }
            None
        }
    };
    let admin = AdminSettings { listen: raw.admin.enabled.then_some(raw.admin.listen) };
    if let Some(filter) = &raw.log.level
        && let Err(e) = filter.parse::<tracing_subscriber::EnvFilter>()
    {
        check.at(&KeyPath::keys(&["log", "level"]), format!("not a log filter: {e}"));
    }
    Some(Config {
        path: path.to_owned(),
        account,
        meta: raw.meta,
        numbers: numbers?,
        pbx,
        platform: platform?,
        correlation: correlation?,
        legs,
        sip_tap,
        outbox: outbox?,
        admin,
        log: raw.log,
        warnings: Vec::new(),
        fingerprints: fingerprints(index, base),
    })
}

/// Every section's and `[[pbx]]` block's fingerprint.
fn fingerprints(index: &SpanIndex<'_>, base: &Path) -> Fingerprints {
    let mut prints = Fingerprints::default();
    for (key, value) in index.doc().get_ref() {
        let key = key.get_ref().to_string();
        if key != "pbx" {
            prints.sections.insert(key, Fingerprint::of(value, base));
            continue;
        }
        for block in value.get_ref().as_array().into_iter().flatten() {
            if let Some(DeValue::String(name)) =
                block.get_ref().as_table().and_then(|t| t.get("name")).map(|v| v.get_ref())
            {
                prints.pbx.insert(name.to_string(), Fingerprint::of(block, base));
            }
        }
    }
    prints
}

/// Only the `[[pbx]]` blocks of `text` (the demo's simulated PBXs): loaded exactly as in a
/// configuration file, through the PBX-type table.
pub fn load_pbx_blocks(path: &Path, text: &str) -> Result<Vec<PbxConfig>, ConfigErrors> {
    let index = SpanIndex::parse(text).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            location: e.span().map(|s| line_col(text, s.start)),
            key: None,
            message: e.message().trim_end().to_owned(),
        }])
    })?;
    let mut check = Checker::new(path, &index);
    let pbx = validate_pbx_blocks(&mut check, &index, path.parent().unwrap_or(Path::new(".")));
    if check.errors.is_empty() { Ok(pbx) } else { Err(ConfigErrors(check.errors)) }
}

/// `[[pbx]]` blocks: `type` picks the adapter, whose own config type reads the other keys.
fn validate_pbx_blocks(check: &mut Checker<'_>, index: &SpanIndex<'_>, base: &Path) -> Vec<PbxConfig> {
    let mut out = Vec::new();
    let Some(blocks) = index.doc().get_ref().get("pbx") else { return out };
    let Some(blocks) = blocks.get_ref().as_array() else {
        check.at(&KeyPath::keys(&["pbx"]), "must be an array of tables: write each PBX as a [[pbx]] block");
        return out;
    };
    let mut names = BTreeSet::new();
    for (i, block) in blocks.iter().enumerate() {
        let at = KeyPath::keys(&["pbx"]).index(i);
        let Some(table) = block.get_ref().as_table() else {
            check.at(&at, "must be a table ([[pbx]])");
            continue;
        };
        let name = match table.get("name").map(|v| v.get_ref()) {
            Some(DeValue::String(s)) => s.to_string(),
            Some(_) => {
                check.at(&at.key("name"), "must be a string");
                continue;
            }
            None => {
                check.at(&at, "missing key `name` (a short unique name for this PBX, e.g. \"hq\")");
                continue;
            }
        };
        if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            check.at(&at.key("name"), "use 1 to 64 letters, digits, '-', '_' or '.'");
        }
        if !names.insert(name.clone()) {
            check.at(&at.key("name"), format!("another [[pbx]] block is already named {name:?}"));
        }
        let kind = match table.get("type").map(|v| v.get_ref()) {
            Some(DeValue::String(s)) => match pbx_types::find(s) {
                Some(kind) => kind,
                None => {
                    check.at(
                        &at.key("type"),
                        format!("unknown PBX type {s:?} (this version reads {})", pbx_types::supported()),
                    );
                    continue;
                }
            },
            Some(_) => {
                check.at(&at.key("type"), "must be a string");
                continue;
            }
            None => {
                check.at(&at, format!("missing key `type` ({})", pbx_types::supported()));
                continue;
            }
        };
        // The kind's keys: everything but `name` and `type`, with spans kept for errors.
        let rest: DeTable<'_> = table
            .iter()
            .filter(|(k, _)| !matches!(k.get_ref().as_ref(), "name" | "type"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let rest = Spanned::new(block.span(), DeValue::Table(rest));
        let ctx = LoadContext { base_dir: base, pbx_name: &name };
        match kind.load(rest, &ctx) {
            Ok(settings) => {
                for w in settings.warnings() {
                    check.warn(&at.dotted(&w.key), w.message);
                }
                out.push(PbxConfig { id: PbxId::new(name, kind.pbx_type()), settings });
            }
            Err(BlockError::Toml(e)) => check.toml(&e, Some(&at)),
            Err(BlockError::Settings(errors)) => {
                for e in errors.0 {
                    check.at(&at.dotted(&e.key), e.message);
                }
            }
        }
    }
    out
}

/// `[platform]`: paths resolved against the file's directory, then the forwarder loads its
/// secrets. Its errors name their key (`platform.<key>: …`).
fn load_platform(
    check: &mut Checker<'_>,
    mut platform: forwarder::ForwarderConfig,
    base: &Path,
) -> Option<forwarder::ForwarderSettings> {
    for p in &mut platform.signing_secret_files {
        *p = resolve(base, p);
    }
    for p in [&mut platform.bearer_token_file, &mut platform.ca_file].into_iter().flatten() {
        *p = resolve(base, p);
    }
    match platform.load() {
        Ok(settings) => Some(settings),
        Err(e) => {
            check.at(&section_key("platform", e.key()), e.to_string());
            None
        }
    }
}

/// `[legs]`: paths resolved, then the endpoint's own `load` reads and checks the secret,
/// certificate and key files, once: the settings are what `run` binds.
fn load_legs(
    check: &mut Checker<'_>,
    mut legs: leg_announce::LegsConfig,
    base: &Path,
) -> Option<leg_announce::LegsSettings> {
    for p in &mut legs.signing_secret_files {
        *p = resolve(base, p);
    }
    for p in [&mut legs.tls_cert_file, &mut legs.tls_key_file].into_iter().flatten() {
        *p = resolve(base, p);
    }
    legs.load().map_err(|e| check.at(&section_key("legs", e.key()), e.to_string())).ok()
}

/// `section.key`, or the section when an error names no key.
fn section_key(section: &str, key: Option<&str>) -> KeyPath {
    match key {
        Some(k) => KeyPath::keys(&[section, k]),
        None => KeyPath::keys(&[section]),
    }
}

/// `[outbox] data_dir` of a configuration file: the file as written (stage one), without
/// validating it or reading a secret; what `pbx-listener outbox …` needs.
pub fn outbox_dir(path: &Path) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path).with_context(|| {
        format!("reading {} (pass --data-dir to name the outbox directory instead)", path.display())
    })?;
    let raw: file::FileConfig = toml::from_str(&text).with_context(|| {
        format!("reading {} (pass --data-dir to name the outbox directory instead)", path.display())
    })?;
    Ok(resolve(path.parent().unwrap_or(Path::new(".")), &raw.outbox.data_dir))
}

/// A path from the file, relative to the file's directory unless absolute.
pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_owned() } else { base.join(p) }
}

impl Config {
    /// A human summary for `check-config`: what will run, with paths but never secrets.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let mut line = |l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        line(format!("account      {} ({})", self.account.name, self.account.id));
        line(format!("numbers      default region {}", self.numbers.region()));
        for p in &self.pbx {
            line(format!("pbx          {} ({}): {}", p.id.name, p.id.pbx_type, p.settings.describe()));
        }
        if self.pbx.is_empty() {
            line("pbx          none configured: the daemon would only forward what is already queued".into());
        }
        line(format!(
            "platform     {} ({} signing secret{}{})",
            self.platform.url,
            self.platform.secrets.len(),
            if self.platform.secrets.len() == 1 { "" } else { "s, rotating" },
            if self.platform.bearer.is_some() { ", bearer token" } else { "" }
        ));
        line(format!(
            "outbox       {} (cap {} bytes, when full: {})",
            self.outbox.data_dir.display(),
            self.outbox.config.max_bytes,
            self.outbox.config.when_full.as_str()
        ));
        match self.legs.as_ref().map(|l| (l.is_tls(), l.config())) {
            Some((tls, legs)) => line(format!(
                "legs         announcements on {}://{}{} ({} secret{})",
                if tls { "https" } else { "http" },
                legs.listen,
                leg_announce::LEGS_PATH,
                legs.signing_secret_files.len(),
                if legs.signing_secret_files.len() == 1 { "" } else { "s" }
            )),
            None => line("legs         no announcement endpoint ([legs] not set)".into()),
        }
        if let Some(tap) = self.sip_tap.as_ref().map(sip_tap::SipTapSettings::config) {
            let mut parts = Vec::new();
            if let Some(a) = tap.hep_udp_listen {
                parts.push(format!("HEP/UDP {a}"));
            }
            if let Some(a) = tap.hep_tcp_listen {
                parts.push(format!("HEP/TCP {a}"));
            }
            if let Some(a) = tap.sip_udp_listen {
                parts.push(format!("SIP/UDP {a}"));
            }
            line(format!(
                "sip tap      {}",
                if parts.is_empty() { "configured but nothing listens".into() } else { parts.join(", ") }
            ));
        }
        let c = self.correlation.config();
        let unmatched = match c.unmatched {
            correlation::UnmatchedPolicy::Forward => "forwarded",
            correlation::UnmatchedPolicy::Drop => "dropped",
        };
        if self.correlation.leg_sources() {
            let directions: Vec<&str> = c.wait_for_directions.iter().map(|d| d.as_str()).collect();
            line(format!(
                "correlation  {} calls wait up to {} ms for their leg (number window {} ms); unmatched calls are {unmatched}",
                directions.join("/"),
                c.wait_for_leg_ms,
                c.number_window_ms
            ));
        } else {
            line(format!(
                "correlation  no leg source ([legs], [sip_tap]): no call waits; {}unmatched calls are {unmatched}",
                if c.call_id_pattern.is_some() { "call_id_pattern binds at once; " } else { "" }
            ));
        }
        match self.admin.listen {
            Some(addr) => line(format!("admin        http://{addr}/metrics, /health/live, /health/ready")),
            None => line("admin        disabled".into()),
        }
        if !self.meta.is_empty() {
            line(format!("meta         {}", self.meta.keys().cloned().collect::<Vec<_>>().join(", ")));
        }
        s
    }
}

#[cfg(test)]
mod tests;
