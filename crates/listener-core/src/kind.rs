//! [`PbxKind`]: what a PBX type tells the daemon so that it can be configured, checked,
//! described and run.
//!
//! The daemon keeps one table of kinds (`crates/daemon/src/pbx_types.rs`). For each `[[pbx]]`
//! block it finds the kind by `type`, deserialises the block's other keys into
//! [`PbxKind::Config`] (with the file's spans, so errors point at lines), calls
//! [`PbxKind::load`], shows [`PbxKind::describe`] in `check-config`, and at start calls
//! [`PbxKind::build`] to get the [`Adapter`] it runs. A new PBX type is therefore its own crate
//! plus one line in that table (and the example configuration and docs).
//!
//! ```
//! use listener_core::*;
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct EchoConfig {
//!     host: String,
//!     #[serde(default)]
//!     port: Option<u16>,
//! }
//!
//! struct Echo;
//!
//! impl PbxKind for Echo {
//!     const TYPE: PbxType = PbxType::new("echo");
//!     type Config = EchoConfig;
//!     type Settings = (String, u16);
//!
//!     fn load(config: EchoConfig, _ctx: &LoadContext<'_>) -> Result<(String, u16), SettingErrors> {
//!         if config.host.is_empty() {
//!             return Err(SettingError::new("host", "must not be empty").into());
//!         }
//!         Ok((config.host, config.port.unwrap_or(7)))
//!     }
//!
//!     fn describe(settings: &(String, u16)) -> String {
//!         format!("echo {}:{}", settings.0, settings.1)
//!     }
//!
//!     fn build(_pbx: PbxId, _settings: (String, u16), _state: AdapterState) -> Box<dyn Adapter> {
//!         unimplemented!("a real kind returns its adapter here")
//!     }
//! }
//!
//! assert_eq!(Echo::config_keys(), ["host", "port"]);
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};

use crate::adapter::Adapter;
use crate::signal::{PbxId, PbxType};

/// A kind of PBX: its `[[pbx]]` configuration and how to build its adapter.
///
/// Implemented by a zero-sized type in each adapter crate (`adapter_avaya_r11::AvayaR11`).
pub trait PbxKind: 'static {
    /// The `type` of its `[[pbx]]` blocks.
    const TYPE: PbxType;

    /// The block's keys as written, except `name` and `type` (which the daemon owns): plain
    /// serde with `deny_unknown_fields`, a doc comment per field, units in names.
    type Config: DeserializeOwned;

    /// The block validated and loaded: typed values, paths resolved, secrets read.
    type Settings: fmt::Debug + Clone + Send + Sync + 'static;

    /// Every key a block of this type accepts besides `name` and `type`, dotted for nested
    /// tables (`smdr.listen`). The daemon's tests check that `deploy/pbx-listener.toml`
    /// documents each. Default: the fields serde declares for [`PbxKind::Config`]; a kind with
    /// nested tables adds theirs (see [`serde_fields`]).
    fn config_keys() -> Vec<String> {
        serde_fields::<Self::Config>()
    }

    /// Validates the block and loads what it names (secret files, CA files). Every problem
    /// found, each naming its key relative to the block (`password_file`, `smdr.listen`).
    fn load(config: Self::Config, ctx: &LoadContext<'_>) -> Result<Self::Settings, SettingErrors>;

    /// Settings that work but are probably not what the admin meant, for `check-config`
    /// (keyed like errors). Default: none.
    fn warnings(_settings: &Self::Settings) -> Vec<SettingError> {
        Vec::new()
    }

    /// One line for `check-config`: what will run (addresses, modes), never a secret.
    fn describe(settings: &Self::Settings) -> String;

    /// The adapter for one block. `state` is what this adapter checkpointed
    /// ([`crate::AdapterEvent::Checkpoint`]) before the daemon last stopped.
    fn build(pbx: PbxId, settings: Self::Settings, state: AdapterState) -> Box<dyn Adapter>;

    /// Every metric the adapter emits (through the `metrics` facade), so that the daemon
    /// describes them on `/metrics` (`# HELP`, `# TYPE`). Default: none.
    fn metrics() -> &'static [MetricDescription] {
        &[]
    }
}

/// A metric, as the daemon describes it on `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDescription {
    /// `pbx_listener_<name>_<unit>[_total]`.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// One sentence, with its labels.
    pub help: &'static str,
}

impl MetricDescription {
    /// A counter (its name ends in `_total`).
    pub const fn counter(name: &'static str, help: &'static str) -> MetricDescription {
        MetricDescription { name, kind: MetricKind::Counter, help }
    }

    /// A gauge.
    pub const fn gauge(name: &'static str, help: &'static str) -> MetricDescription {
        MetricDescription { name, kind: MetricKind::Gauge, help }
    }

    /// A histogram.
    pub const fn histogram(name: &'static str, help: &'static str) -> MetricDescription {
        MetricDescription { name, kind: MetricKind::Histogram, help }
    }
}

/// What kind of metric a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

/// What [`PbxKind::load`] may need from the daemon.
#[derive(Debug, Clone, Copy)]
pub struct LoadContext<'a> {
    /// The configuration file's directory: relative paths in a block are relative to it.
    pub base_dir: &'a Path,
    /// The block's `name`.
    pub pbx_name: &'a str,
}

impl LoadContext<'_> {
    /// `path` as written in the block, made absolute against the configuration's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_owned() } else { self.base_dir.join(path) }
    }
}

/// One problem with a key of a `[[pbx]]` block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SettingError {
    /// The key, relative to the block (`password_file`, `smdr.listen`); empty for the block.
    pub key: String,
    /// What is wrong and what to do, with the allowed range and units where there is one.
    pub message: String,
}

impl SettingError {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> SettingError {
        SettingError { key: key.into(), message: message.into() }
    }

    /// `key` must lie in `min..=max` (`unit` is spelt out: "seconds", "ms", "bytes").
    pub fn out_of_range(key: &str, min: u64, max: u64, unit: &str, why: Option<&str>) -> SettingError {
        let mut message = format!("must be between {min} and {max} {unit}");
        if let Some(why) = why {
            message.push_str(" (");
            message.push_str(why);
            message.push(')');
        }
        SettingError::new(key, message)
    }
}

/// Every problem found in a block (never empty when returned as an error).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingErrors(pub Vec<SettingError>);

impl SettingErrors {
    /// No errors yet.
    pub fn new() -> SettingErrors {
        SettingErrors(Vec::new())
    }

    /// Adds one.
    pub fn push(&mut self, error: SettingError) {
        self.0.push(error);
    }

    /// Adds an error about `key` unless `min <= value <= max`.
    pub fn check_range(&mut self, key: &str, value: u64, min: u64, max: u64, unit: &str, why: Option<&str>) {
        if !(min..=max).contains(&value) {
            self.push(SettingError::out_of_range(key, min, max, unit, why));
        }
    }

    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing is wrong, else every error.
    pub fn into_result<T>(self, value: impl FnOnce() -> T) -> Result<T, SettingErrors> {
        if self.0.is_empty() { Ok(value()) } else { Err(self) }
    }
}

impl From<SettingError> for SettingErrors {
    fn from(e: SettingError) -> SettingErrors {
        SettingErrors(vec![e])
    }
}

impl fmt::Display for SettingErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SettingErrors {}

/// What an adapter checkpointed before the daemon last stopped, by key.
pub type AdapterState = BTreeMap<String, Vec<u8>>;

/// The field names serde declares for the struct `T` (its `#[serde(rename)]`d spellings), in
/// declaration order; empty for anything that is not a plain struct (e.g. `#[serde(flatten)]`).
pub fn serde_fields<T: DeserializeOwned>() -> Vec<String> {
    let mut probe = FieldProbe(None);
    let _ = T::deserialize(&mut probe);
    probe.0.unwrap_or_default().iter().map(|f| (*f).to_owned()).collect()
}

/// A deserializer that records the field list serde asks a struct for, then stops.
struct FieldProbe(Option<&'static [&'static str]>);

#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field probe")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(_msg: T) -> Stop {
        Stop
    }
}

impl<'de> Deserializer<'de> for &mut FieldProbe {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        self.0 = Some(fields);
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Nested {
        listen: String,
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Block {
        host: String,
        #[serde(rename = "port_number", default)]
        port: u16,
        smdr: Option<Nested>,
    }

    #[test]
    fn serde_fields_lists_declared_names() {
        assert_eq!(serde_fields::<Block>(), ["host", "port_number", "smdr"]);
        assert_eq!(serde_fields::<Nested>(), ["listen"]);
        assert!(serde_fields::<String>().is_empty());
    }

    #[test]
    fn ranges_are_reported_with_units() {
        let mut errors = SettingErrors::new();
        errors.check_range("keepalive_secs", 0, 1, 3600, "seconds", None);
        errors.check_range("backoff_secs", 30, 30, 86_400, "seconds", Some("the PBX locks the account"));
        assert_eq!(errors.to_string(), "keepalive_secs: must be between 1 and 3600 seconds");
    }

    #[test]
    fn paths_resolve_against_the_configuration_directory() {
        let ctx = LoadContext { base_dir: Path::new("/etc/pbx-listener"), pbx_name: "hq" };
        assert_eq!(ctx.resolve(Path::new("secrets/pw")), Path::new("/etc/pbx-listener/secrets/pw"));
        assert_eq!(ctx.resolve(Path::new("/run/credentials/x")), Path::new("/run/credentials/x"));
    }
}
