//! 3CX V20 adapter: the Call Control API in real time, and the CDR feed for what it cannot see.
//!
//! The paths from bytes to signals are sans-IO; `client` is the only module that does IO:
//!
//! - [`token`]: [`token::TokenManager`], the OAuth2 client-credentials token as a state
//!   machine (minutes-or-seconds `expires_in`, refresh at half-life and on 401, single
//!   flight, a second consumer of the client id detected and backed off from);
//! - [`participant`]: the participant object and the `/callcontrol` snapshot, read leniently;
//! - [`ws`]: the WebSocket notification frames (`event_type`, entity paths);
//! - [`tracker`]: [`tracker::Tracker`], participants into [`listener_core::AdapterEvent`]s
//!   (snapshot and diff, fetch coalescing, removal reasons, queues, transfers, parks) and the
//!   CDR merge (after-the-fact parks, calls the live feed missed);
//! - [`cdr`]: the CDR line framing and record parser (configured field order, both
//!   vocabularies);
//! - [`client`]: [`ThreeCxAdapter`], the [`listener_core::Adapter`] that holds the token,
//!   takes snapshots, keeps the WebSocket, fetches participants and reads the CDR socket;
//! - [`config`]: [`Config`] (the `[[pbx]]` keys) and [`LoadedConfig`];
//! - [`events`]: internal events (a log line and a metric each).
//!
//! ```no_run
//! use adapter_3cx::{Config, ThreeCxAdapter};
//! use listener_core::{AdapterState, PbxId};
//!
//! let mut config: Config = toml::from_str(r#"
//!     url = "https://pbx.example.com:5001"
//!     client_id = "pbxlistener"
//!     client_secret_file = "/etc/pbx-listener/3cx.secret"
//!     extensions = ["101", "102"]
//! "#).unwrap();
//! let loaded = config.load().unwrap();
//! let adapter = ThreeCxAdapter::new(PbxId::new("hq", adapter_3cx::PBX_TYPE), loaded, AdapterState::new());
//! // The daemon runs it: `Box::new(adapter).run(&sink, shutdown).await`.
//! ```
//!
//! *Invariant:* only `client` (and `events`, for the log clock) touch tokio, sockets or clocks;
//! everything else is a pure function of its inputs, time included.

#![warn(missing_docs)]

pub mod cdr;
pub mod client;
pub mod config;
pub mod events;
mod kind;
pub mod participant;
#[doc(hidden)]
pub mod testdata;
pub mod token;
pub mod tracker;
pub mod ws;

pub use client::ThreeCxAdapter;
pub use config::{CdrConfig, Config, LoadedConfig};
pub use kind::{PBX_TYPE, ThreeCx};
