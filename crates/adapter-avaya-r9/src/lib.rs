//! Avaya IP Office R9 adapter: SMDR call reconstruction, and Delta2 in real time.
//!
//! IP Office R9 has no DevLink3. What a Linux daemon can read from it is **SMDR**: one CSV
//! record per finished call segment over TCP (the PBX connects to us, or we connect to it).
//! Real time exists only through Avaya's Windows DevLink DLL, whose **Delta2** `CALL:` strings
//! a relay on that Windows machine forwards as lines (`docs/pbx/avaya-ip-office-r9.md`).
//!
//! The bytes-to-signal path is `codec → smdr | delta2 → reconstruct → tracker`, all sans-IO;
//! `client` is the only module that does IO:
//!
//! - [`codec`]: [`codec::LineCodec`], bounded CR LF / LF line framing for both feeds;
//! - [`smdr`]: [`smdr::SmdrRecord`], the SMDR record by position, with Avaya's anomalies;
//! - [`clock`]: [`clock::PbxClock`], SMDR's local times in the PBX's IANA zone (DST gaps and
//!   repeats);
//! - [`reconstruct`]: a call's segments → each extension's timeline;
//! - [`delta2`]: the relay's `CALL: S/D/A` and `RELAY:` lines;
//! - [`tracker`]: [`tracker::Tracker`], both feeds → [`listener_core::AdapterEvent`]s:
//!   grouping, timeouts, duplicates, the Delta2 diff, the merge of the two, checkpoints;
//! - [`client`]: [`R9Adapter`], the [`listener_core::Adapter`]: SMDR as a listener with a
//!   source allow-list or as a client with reconnects, the Delta2 relay client;
//! - [`config`]: [`Config`] (the `[[pbx]]` keys) and [`Settings`]; [`AvayaR9`] the
//!   [`listener_core::PbxKind`];
//! - [`events`]: internal events (a log line and a metric each).
//!
//! ```no_run
//! use adapter_avaya_r9::{Config, R9Adapter};
//! use listener_core::PbxId;
//!
//! let config: Config = toml::from_str(r#"
//!     host = "192.0.2.20"
//!     timezone = "Europe/London"
//!     [smdr]
//!     mode = "listen"
//!     listen = "0.0.0.0:5080"
//! "#).unwrap();
//! let settings = config.load().unwrap();
//! let adapter = R9Adapter::new(PbxId::new("branch", adapter_avaya_r9::PBX_TYPE), settings, Default::default());
//! // The daemon runs it: `Box::new(adapter).run(&sink, shutdown).await`.
//! ```
//!
//! *Invariant:* only `client` (and `events`, for the log clock) touch tokio, sockets or clocks;
//! everything else is a pure function of its inputs, time included.

#![warn(missing_docs)]

pub mod client;
pub mod clock;
pub mod codec;
pub mod config;
pub mod delta2;
pub mod events;
mod kind;
pub mod reconstruct;
pub mod smdr;
#[doc(hidden)]
pub mod testdata;
pub mod tracker;

pub use client::R9Adapter;
pub use config::{Config, Settings};
pub use kind::{AvayaR9, PBX_TYPE};
