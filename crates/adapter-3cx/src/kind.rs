//! [`ThreeCx`]: this crate as a [`PbxKind`], the daemon's one entry for `type = "3cx"`.

use listener_core::{
    Adapter, AdapterState, LoadContext, MetricDescription, PbxId, PbxKind, PbxType, SettingError, SettingErrors,
    serde_fields,
};

use crate::client::ThreeCxAdapter;
use crate::config::{CdrConfig, CdrMode, Config, LoadedConfig};

/// `type = "3cx"`.
pub const PBX_TYPE: PbxType = PbxType::new("3cx");

/// 3CX V20 over the Call Control API (and optionally its CDR socket).
#[derive(Debug, Clone, Copy)]
pub struct ThreeCx;

impl PbxKind for ThreeCx {
    const TYPE: PbxType = PBX_TYPE;
    type Config = Config;
    type Settings = LoadedConfig;

    fn config_keys() -> Vec<String> {
        // `cdr` is a table: its keys are listed dotted instead.
        let mut keys: Vec<String> = serde_fields::<Config>().into_iter().filter(|k| k != "cdr").collect();
        keys.extend(serde_fields::<CdrConfig>().into_iter().map(|k| format!("cdr.{k}")));
        keys
    }

    fn load(mut config: Config, ctx: &LoadContext<'_>) -> Result<LoadedConfig, SettingErrors> {
        config.resolve_paths(ctx);
        config.load()
    }

    fn warnings(c: &LoadedConfig) -> Vec<SettingError> {
        let mut w = Vec::new();
        if c.url.scheme() == "http" && !is_loopback(&c.url) {
            w.push(SettingError::new("url", "http:// sends the client secret and the token unencrypted; use https://"));
        }
        if let Some(cdr) = &c.cdr {
            if let CdrMode::Listen(addr) = cdr.mode
                && !addr.ip().is_loopback()
                && cdr.allowed_peers.is_empty()
            {
                w.push(SettingError::new(
                    "cdr.allowed_peers",
                    "is empty: anyone who reaches the CDR port can send records; list the PBX's address",
                ));
            }
            let unknown = cdr.order.unknown_names();
            if !unknown.is_empty() {
                w.push(SettingError::new(
                    "cdr.fields",
                    format!("unknown field names (skipped by position): {}", unknown.join(", ")),
                ));
            }
        }
        w
    }

    fn describe(c: &LoadedConfig) -> String {
        let cdr = match &c.cdr {
            None => String::new(),
            Some(cdr) => match &cdr.mode {
                CdrMode::Listen(a) => format!(", CDR listening on {a} ({})", cdr.time_zone_name),
                CdrMode::Connect(h, p) => format!(", CDR from {h}:{p} ({})", cdr.time_zone_name),
            },
        };
        format!(
            "Call Control {} as {}{}, extensions {}{}",
            c.url,
            c.client_id,
            if c.extra_ca { " (extra CA)" } else { "" },
            c.extensions.join(","),
            cdr
        )
    }

    fn build(pbx: PbxId, settings: LoadedConfig, state: AdapterState) -> Box<dyn Adapter> {
        Box::new(ThreeCxAdapter::new(pbx, settings, state))
    }

    fn metrics() -> &'static [MetricDescription] {
        crate::events::METRICS
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
