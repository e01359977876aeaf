//! Avaya IP Office R10+/R11 adapter over DevLink3.
//!
//! The bytes-to-signal path is `codec → packet → delta3 → tracker`, driven by the `session`,
//! all sans-IO; `client` is the only module that does IO:
//!
//! - [`codec`]: DevLink3 framing ([`codec::FrameCodec`]: `0x49`, 2- and 3-byte lengths,
//!   bounded, resynchronising) and [`codec::PacketCodec`] on top of it;
//! - [`packet`]: [`packet::Packet`] — test, authentication (SHA-1 and PLAIN), event request and
//!   response, events with CallDelta3 / SIPTrack / CMExtn tuples;
//! - [`delta3`]: the Delta3 records `Detail`, `CallLost`, `LinkLost`, `AttemptReject`;
//! - [`tracker`]: [`tracker::Tracker`], the call tracker that turns records into
//!   [`listener_core::AdapterEvent`]s (str0m style: `handle_*(now, input)`, then
//!   `poll_output()`);
//! - [`session`]: [`session::DevLink3Link`], the link as a state machine: when to connect,
//!   Test → authentication → subscription, keepalives, the dead-link timer, the reconnect
//!   backoff, and each received tuple through its record parser into the tracker;
//! - [`client`]: [`DevLink3Adapter`], the [`listener_core::Adapter`] that drives the link over
//!   a real TCP or TLS connection (it only moves bytes and sleeps);
//! - [`config`]: [`Config`] (the `[[pbx]]` keys) and [`LoadedConfig`];
//! - [`events`]: internal events (a log line and a metric each).
//!
//! ```no_run
//! use adapter_avaya_r11::{Config, DevLink3Adapter};
//! use listener_core::PbxId;
//!
//! let config: Config = toml::from_str(r#"
//!     host = "192.0.2.10"
//!     username = "pbxlistener"
//!     password_file = "/etc/pbx-listener/avaya.password"
//! "#).unwrap();
//! let loaded = config.load().unwrap();
//! let adapter = DevLink3Adapter::new(PbxId::new("london", adapter_avaya_r11::PBX_TYPE), loaded);
//! // The daemon runs it: `Box::new(adapter).run(&sink, shutdown).await`.
//! ```
//!
//! *Invariant:* only `client` touches tokio, sockets or clocks; everything else is a pure
//! function of its inputs, time included.

#![warn(missing_docs)]

pub mod client;
pub mod codec;
pub mod config;
pub mod delta3;
pub mod events;
mod kind;
pub mod packet;
pub mod session;
#[doc(hidden)]
pub mod testdata;
pub mod tracker;

pub use client::{Connection, DevLink3Adapter};
pub use config::{Config, LoadedConfig};
pub use kind::{AvayaR11, PBX_TYPE};
