//! The configuration file as written: every section, its keys and their defaults.
//!
//! `deploy/pbx-listener.toml` documents the same keys for admins; keep the two in step.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;
use serde::de::IgnoredAny;
use uuid::Uuid;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The platform account every event belongs to.
    pub account: AccountSection,
    /// Tags added to the `meta` of every event (strings).
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// How numbers are normalised to E.164.
    pub numbers: NumbersSection,
    /// The PBXs to read. Only declared here so that `deny_unknown_fields` accepts the key: each
    /// block is read by its adapter's config type, with its spans (`validate_pbx_blocks`).
    #[serde(default, rename = "pbx")]
    pub _pbx: Vec<IgnoredAny>,
    /// Where events are delivered (the forwarder's own config type).
    pub platform: forwarder::ForwarderConfig,
    /// How PBX calls are bound to platform legs. Optional; every key has a default.
    #[serde(default)]
    pub correlation: correlation::CorrelationConfig,
    /// The endpoint where the platform announces its legs. Optional (off when absent).
    #[serde(default)]
    pub legs: Option<leg_announce::LegsConfig>,
    /// Receivers of SIP copies (HEPv3, raw SIP) to learn legs from. Optional (off when absent).
    #[serde(default)]
    pub sip_tap: Option<sip_tap::SipTapConfig>,
    /// The durable queue of events waiting for delivery (the outbox's own config type).
    #[serde(default)]
    pub outbox: outbox::OutboxSection,
    /// The admin HTTP endpoint.
    #[serde(default)]
    pub admin: AdminSection,
    /// Logging.
    #[serde(default)]
    pub log: LogSection,
}

/// `[account]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSection {
    /// The platform's account id (a UUID): `accountId` of every event.
    pub id: Uuid,
    /// The account's name: `accountName` of every event.
    pub name: String,
}

/// `[numbers]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumbersSection {
    /// ISO 3166 region whose national numbers the PBX shows (`"GB"`, `"US"`, `"DE"`). Required:
    /// no default is safe, a wrong one silently mis-normalises every national number.
    pub default_region: String,
    /// Numbers with at most this many digits (and no `+`) are extensions, kept as they are.
    /// Default 6.
    #[serde(default = "default_max_extension_digits")]
    pub max_extension_digits: usize,
}

fn default_max_extension_digits() -> usize {
    6
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Serve `/metrics`, `/health/live` and `/health/ready`. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Address of the admin endpoint. Default `127.0.0.1:9187` (loopback only).
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection { enabled: true, listen: default_admin_listen() }
    }
}

fn yes() -> bool {
    true
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9187))
}

/// `[log]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `"auto"` (default: coloured text on a terminal, plain lines with syslog priorities under
    /// systemd), `"text"` or `"json"`.
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter such as `"info"` or `"info,pbx_listener=debug"`. Default
    /// `"info"`; the `RUST_LOG` environment variable overrides it.
    pub level: Option<String>,
}

/// How logs are written (to stderr).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Text; coloured on a terminal; with syslog priority prefixes under systemd's journal.
    #[default]
    Auto,
    /// Plain text lines.
    Text,
    /// One JSON object per line.
    Json,
}
