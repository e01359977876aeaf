//! The PBX types this daemon reads: **the one table to edit when adding one.**
//!
//! Each entry is an adapter crate's [`PbxKind`]. The configuration finds a `[[pbx]]` block's
//! kind here by its `type`, deserialises the block's keys into the kind's `Config` (with the
//! file's spans, so errors point at lines), loads it, and keeps the result as a [`LoadedPbx`];
//! `check-config` describes it; `run` and `demo` build its adapter. Nothing else in the daemon
//! names a PBX type.

use std::fmt;
use std::marker::PhantomData;

use listener_core::{Adapter, AdapterState, LoadContext, PbxId, PbxKind, PbxType, SettingError, SettingErrors};
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeValue, ValueDeserializer};

/// Every PBX type, in the order help texts list them.
pub static PBX_TYPES: &[&dyn PbxTypeEntry] = &[
    &Entry::<adapter_avaya_r11::AvayaR11>(PhantomData),
    &Entry::<adapter_avaya_r9::AvayaR9>(PhantomData),
    &Entry::<adapter_3cx::ThreeCx>(PhantomData),
];

/// The entry for a `type`, if this daemon reads it.
pub fn find(pbx_type: &str) -> Option<&'static dyn PbxTypeEntry> {
    PBX_TYPES.iter().copied().find(|e| e.pbx_type().as_str() == pbx_type)
}

/// The supported types, quoted and comma-separated, for error messages.
pub fn supported() -> String {
    PBX_TYPES.iter().map(|e| format!("{:?}", e.pbx_type().as_str())).collect::<Vec<_>>().join(", ")
}

/// A [`PbxKind`] seen through the table (object safe, so kinds of different types share it).
pub trait PbxTypeEntry: Sync {
    /// The `type` it reads.
    fn pbx_type(&self) -> PbxType;

    /// Every key its blocks accept besides `name` and `type` ([`PbxKind::config_keys`]); the
    /// configuration's tests check `deploy/pbx-listener.toml` documents each.
    #[cfg_attr(not(test), allow(dead_code))]
    fn config_keys(&self) -> Vec<String>;

    /// Every metric its adapter emits ([`PbxKind::metrics`]).
    fn metrics(&self) -> &'static [listener_core::MetricDescription];

    /// Reads a block's keys (without `name` and `type`) and loads them.
    fn load(&self, block: Spanned<DeValue<'_>>, ctx: &LoadContext<'_>) -> Result<LoadedPbx, BlockError>;
}

/// Why a block could not be loaded.
#[derive(Debug)]
pub enum BlockError {
    /// The keys do not fit the kind's `Config` (unknown key, wrong type); carries its span.
    Toml(toml::de::Error),
    /// The values are wrong, each error keyed relative to the block.
    Settings(SettingErrors),
}

/// A `[[pbx]]` block's settings, loaded by its kind: what `check-config` describes and what
/// `run` builds an adapter from.
pub struct LoadedPbx(Box<dyn LoadedSettings>);

impl LoadedPbx {
    /// One line for `check-config` (never a secret).
    pub fn describe(&self) -> String {
        self.0.describe()
    }

    /// The kind's warnings.
    pub fn warnings(&self) -> Vec<SettingError> {
        self.0.warnings()
    }

    /// The adapter for this block, with what it checkpointed before.
    pub fn build(&self, pbx: PbxId, state: AdapterState) -> Box<dyn Adapter> {
        self.0.build(pbx, state)
    }
}

impl fmt::Debug for LoadedPbx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The table's entry for kind `K`.
struct Entry<K>(PhantomData<fn() -> K>);

impl<K: PbxKind> PbxTypeEntry for Entry<K> {
    fn pbx_type(&self) -> PbxType {
        K::TYPE
    }

    fn config_keys(&self) -> Vec<String> {
        K::config_keys()
    }

    fn metrics(&self) -> &'static [listener_core::MetricDescription] {
        K::metrics()
    }

    fn load(&self, block: Spanned<DeValue<'_>>, ctx: &LoadContext<'_>) -> Result<LoadedPbx, BlockError> {
        let config = K::Config::deserialize(ValueDeserializer::from(block)).map_err(BlockError::Toml)?;
        let settings = K::load(config, ctx).map_err(BlockError::Settings)?;
        Ok(LoadedPbx(Box::new(Loaded::<K>(settings))))
    }
}

/// Settings of kind `K` behind the object-safe face [`LoadedPbx`] needs.
trait LoadedSettings: fmt::Debug + Send + Sync {
    fn describe(&self) -> String;
    fn warnings(&self) -> Vec<SettingError>;
    fn build(&self, pbx: PbxId, state: AdapterState) -> Box<dyn Adapter>;
}

struct Loaded<K: PbxKind>(K::Settings);

impl<K: PbxKind> fmt::Debug for Loaded<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<K: PbxKind> LoadedSettings for Loaded<K> {
    fn describe(&self) -> String {
        K::describe(&self.0)
    }

    fn warnings(&self) -> Vec<SettingError> {
        K::warnings(&self.0)
    }

    fn build(&self, pbx: PbxId, state: AdapterState) -> Box<dyn Adapter> {
        K::build(pbx, self.0.clone(), state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_is_found_by_its_name_once() {
        for entry in PBX_TYPES {
            let name = entry.pbx_type().as_str();
            assert_eq!(PBX_TYPES.iter().filter(|e| e.pbx_type().as_str() == name).count(), 1, "{name}");
            assert!(find(name).is_some());
            assert!(!entry.config_keys().is_empty(), "{name} declares its keys");
        }
        assert!(find("nortel").is_none());
    }
}
