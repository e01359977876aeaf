//! [`AvayaR9`]: this crate as a [`PbxKind`], the daemon's one entry for `type = "avaya-r9"`.

use listener_core::{
    Adapter, AdapterState, LoadContext, MetricDescription, PbxId, PbxKind, PbxType, SettingError, SettingErrors,
};

use crate::client::R9Adapter;
use crate::config::{Config, Settings, SmdrTransport};

/// `type = "avaya-r9"`.
pub const PBX_TYPE: PbxType = PbxType::new("avaya-r9");

/// Avaya IP Office R9 over SMDR and Delta2.
#[derive(Debug, Clone, Copy)]
pub struct AvayaR9;

impl PbxKind for AvayaR9 {
    const TYPE: PbxType = PBX_TYPE;
    type Config = Config;
    type Settings = Settings;

    fn config_keys() -> Vec<String> {
        Config::keys()
    }

    fn load(config: Config, _ctx: &LoadContext<'_>) -> Result<Settings, SettingErrors> {
        config.load()
    }

    fn warnings(s: &Settings) -> Vec<SettingError> {
        let mut out = Vec::new();
        if s.delta2.is_some() && s.smdr.is_none() {
            out.push(SettingError::new(
                "smdr",
                "Delta2 without SMDR: calls that end while the relay link is down are only closed if the relay \
                 re-sends its live calls (RELAY: SNAPSHOT END); add [pbx.smdr] to complete them",
            ));
        }
        if let Some(SmdrTransport::Listen { addr, .. }) = s.smdr.as_ref().map(|s| &s.transport)
            && addr.ip().is_loopback()
        {
            out.push(SettingError::new("smdr.listen", "listens on loopback only: the IP Office cannot reach it"));
        }
        out
    }

    fn describe(s: &Settings) -> String {
        let smdr = match s.smdr.as_ref().map(|x| &x.transport) {
            None => "no SMDR".to_owned(),
            Some(SmdrTransport::Listen { addr, allowed, .. }) => {
                let who = match allowed {
                    Some(list) => list.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                    None => s.host.clone(),
                };
                format!("SMDR listening on {addr} for {who}")
            }
            Some(SmdrTransport::Connect { port }) => format!("SMDR from {}:{port}", s.host),
        };
        let delta2 =
            s.delta2.as_ref().map_or_else(|| "no Delta2".to_owned(), |d| format!("Delta2 relay {}", d.connect));
        format!("{smdr}, {delta2}, time zone {}", s.clock.name())
    }

    fn metrics() -> &'static [MetricDescription] {
        crate::events::METRICS
    }

    fn build(pbx: PbxId, settings: Settings, state: AdapterState) -> Box<dyn Adapter> {
        Box::new(R9Adapter::new(pbx, settings, state))
    }
}
