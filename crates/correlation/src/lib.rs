//! Correlation: binds every PBX call to the platform's B leg (`callSid`) and A leg
//! (`parentCallSid`) — DESIGN §5.
//!
//! - [`BLegRegistry`] holds the platform legs, learned from announcements and from the SIP tap
//!   as [`LegUpdate`]s and merged by callSid and SIP Call-ID, so the same leg learned twice or
//!   from both sources is one leg.
//! - [`Correlator`] matches PBX calls ([`listener_core::PbxSignal`] from any adapter) to legs,
//!   first unique match wins: SIP Call-ID equality and the Call-ID pattern, a token in a
//!   PBX-visible field, caller + dialled number within a time window (never guessed when more
//!   than one leg or call fits). A call that arrives before its leg waits a bounded time, its
//!   signals held in order. Output: [`CorrelatorOutput`], each signal with its
//!   [`listener_core::LegBinding`] (whose `method` becomes `meta.correlation`).
//! - [`CorrelationConfig`] is the daemon's `[correlation]` section.
//!
//! ```
//! use correlation::{Correlator, CorrelationConfig, CorrelatorOutput, LegFacts, LegSource, LegUpdate};
//! use listener_core::*;
//!
//! let mut c = Correlator::new(CorrelationConfig::default()).unwrap();
//! let mut leg = LegFacts::new(LegSource::Announcement);
//! leg.call_sid = Some("7c1f0d2e-9a4b-4c3d-8e5f-6a7b8c9d0e1f".parse().unwrap());
//! leg.parent_call_sid = Some("2a3b4c5d-6e7f-4809-9a1b-2c3d4e5f6a7b".parse().unwrap());
//! leg.sip_call_id = Some("b1e9c2d4-5f60-4a7b-8c9d-0e1f2a3b4c5d".into());
//! c.handle_leg(UnixMillis(1_000), LegUpdate::Learned(leg));
//!
//! let info = CallInfo { sip_call_id: Some("b1e9c2d4-5f60-4a7b-8c9d-0e1f2a3b4c5d".into()), ..CallInfo::default() };
//! c.handle_signal(UnixMillis(1_100), PbxSignal {
//!     pbx: PbxId::new("site-1", PbxType::new("avaya-r11")),
//!     at: UnixMillis(1_100),
//!     source: "devlink3",
//!     facts: Facts::new(),
//!     body: SignalBody::Call(CallSignal {
//!         call: PbxCallId("7".into()),
//!         call_started: UnixMillis(1_100),
//!         extension: Some(Extension("201".into())),
//!         change: CallChange::Ringing,
//!         info,
//!     }),
//! });
//! let Some(CorrelatorOutput::Correlated(out)) = c.poll_output() else { panic!() };
//! assert_eq!(out.binding.method, MatchMethod::SipCallId);
//! assert_eq!(out.binding.call_sid.unwrap().to_string(), "7c1f0d2e-9a4b-4c3d-8e5f-6a7b8c9d0e1f");
//! ```
//!
//! *Invariant:* no IO, no clock, no tokio in the dependency tree: time is an argument, and
//! the same inputs always give the same outputs.

#![warn(missing_docs)]
// Tests may unwrap: a panic there is a failed test, not a crash.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod config;
mod correlator;
mod leg;

pub use config::{CorrelationConfig, CorrelationConfigError, CorrelationSettings, TokenField, UnmatchedPolicy};
pub use correlator::{CorrelationStats, Correlator, CorrelatorOutput, DropReason, MAX_ENDED_CALLS};
pub use leg::{BLegRegistry, LegFacts, LegSource, LegUpdate};

#[cfg(test)]
mod tests;
