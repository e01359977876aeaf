//! The SIP tap: learns the platform's legs from copies of the trunk's SIP signalling.
//!
//! A capture agent (heplify), an SBC or a proxy (Kamailio `siptrace`) sends HEPv3 copies of
//! each SIP message over UDP or TCP, or raw SIP datagrams; the listener is never in the call
//! path. The crate is built in layers:
//!
//! - [`hep`]: HEPv3 packet decoding and TCP framing (sans-IO);
//! - [`sip`]: a lenient SIP extractor (start line, Call-ID, From/To, CSeq, Via, the
//!   platform's headers, `User-to-User`; folding, compact names, extension methods, RFC 3261
//!   §18.3 framing) — see `docs/decisions/` for why not `rsip`;
//! - [`LegLearner`]: SIP messages → [`correlation::LegUpdate`], each leg once (sans-IO);
//! - [`TapCore`]: the three together, with counters and rate-limited warnings (sans-IO);
//! - [`SipTap`]: the thin tokio layer (UDP sockets, TCP listener) that sends the updates into
//!   a channel for the correlator.
//!
//! ```
//! use sip_tap::{TapCore, TapSettings, LearnerConfig, hep};
//! use correlation::LegUpdate;
//! use listener_core::UnixMillis;
//!
//! let sip = b"INVITE sip:+15551230100@pbx.example.com SIP/2.0\r\n\
//!     Via: SIP/2.0/UDP 203.0.113.10;branch=z9hG4bK-1\r\nFrom: <sip:+15557654321@cpaas.example>;tag=a\r\n\
//!     To: <sip:+15551230100@pbx.example.com>\r\nCall-ID: abc@cpaas\r\nCSeq: 1 INVITE\r\n\
//!     X-Call-Sid: 7c1f0d2e-9a4b-4c3d-8e5f-6a7b8c9d0e1f\r\nContent-Length: 0\r\n\r\n";
//! let packet = hep::encode(&[(hep::chunk::PROTO_TYPE, &[1]), (hep::chunk::PAYLOAD, sip)]);
//! let mut tap = TapCore::new(TapSettings { learner: LearnerConfig::default(), hep_auth_key: None, max_message_bytes: 65535 });
//! tap.handle_hep(UnixMillis(0), sip_tap::Transport::HepUdp, &packet);
//! let Some(LegUpdate::Learned(leg)) = tap.poll_update() else { panic!() };
//! assert_eq!(leg.sip_call_id.as_deref(), Some("abc@cpaas"));
//! assert_eq!((leg.from.as_deref(), leg.to.as_deref()), (Some("15557654321"), Some("15551230100")));
//! ```
//!
//! *Invariant:* only `server.rs` does IO; everything else is a pure function of its inputs
//! and the time passed in.

#![warn(missing_docs)]
// Tests may unwrap: a panic there is a failed test, not a crash.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod config;
mod events;
pub mod hep;
mod learner;
mod server;
pub mod sip;
mod tap;

pub use config::SipTapConfig;
pub use events::Transport;
pub use learner::{LearnerConfig, LegLearner};
pub use server::{SipTap, SipTapError, SipTapSettings, StatsHandle};
pub use tap::{TapCore, TapSettings, TapStats};

#[cfg(test)]
mod tests;
