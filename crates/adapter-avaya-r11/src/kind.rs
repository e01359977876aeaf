//! [`AvayaR11`]: this crate as a [`PbxKind`], the daemon's one entry for `type = "avaya-r11"`.

use listener_core::{Adapter, AdapterState, LoadContext, MetricDescription, PbxId, PbxKind, PbxType, SettingErrors};

use crate::client::DevLink3Adapter;
use crate::config::{Config, LoadedConfig};

/// `type = "avaya-r11"`.
pub const PBX_TYPE: PbxType = PbxType::new("avaya-r11");

/// Avaya IP Office R10+/R11 over DevLink3.
#[derive(Debug, Clone, Copy)]
pub struct AvayaR11;

impl PbxKind for AvayaR11 {
    const TYPE: PbxType = PBX_TYPE;
    type Config = Config;
    type Settings = LoadedConfig;

    fn load(mut config: Config, ctx: &LoadContext<'_>) -> Result<LoadedConfig, SettingErrors> {
        config.resolve_paths(ctx);
        config.load()
    }

    fn describe(c: &LoadedConfig) -> String {
        format!(
            "DevLink3 {}{}:{} as {}, flags {:?}",
            if c.tls.is_some() { "TLS " } else { "" },
            c.host,
            c.port,
            c.username,
            c.flags
        )
    }

    fn build(pbx: PbxId, settings: LoadedConfig, _state: AdapterState) -> Box<dyn Adapter> {
        Box::new(DevLink3Adapter::new(pbx, settings))
    }

    fn metrics() -> &'static [MetricDescription] {
        crate::events::METRICS
    }
}
