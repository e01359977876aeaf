//! Leg announcements: the HTTP(S) endpoint where the platform POSTs its Level 1/2 Generic
//! Events so that the correlator knows its legs (DESIGN §5, "Announcements").
//!
//! - [`parse_announcements`] (pure): a body (one event or an array) → [`correlation::LegUpdate`]s;
//!   `meta.sipCallId` becomes the leg's SIP Call-ID, `completed`/`failed` end the leg;
//! - [`LegAnnounceServer`]: hyper over TCP, or TLS with tokio-rustls (ring provider), on
//!   [`LEGS_PATH`] (`/legs`), that verifies Standard Webhooks signatures
//!   (`webhook_signature::verify`) and sends the updates into a channel. Answers: 200
//!   `{"legs": n}`; 200 `{"duplicate": true, "legs": 0}` for a `webhook-id` already accepted
//!   (not applied again); 401 unsigned, wrong or stale signature; 413 body over
//!   `max_body_bytes`; 415 not `application/json`; 408 body too slow; 400 malformed (the
//!   message says what); 404 another path; 405 not a POST. Every connection is bounded (head,
//!   body and idle deadlines, a cap in all and per source: [`LegsConfig`]).
//! - [`ReplayGuard`] (pure): the `webhook-id`s accepted within the signature tolerance.
//! - [`LegsConfig`]: the daemon's `[legs]` section.
//!
//! ```
//! let body = br#"{"accountId":"9539ee93-64c8-802b-360b-c6f2f7cf2507","accountName":"Test Account",
//!   "parentCallSid":"e5bc544c-2186-47e8-8784-6182cf8190cb","callSid":"85cb3194-76e2-43e1-ad56-59556af617b9",
//!   "childSid":null,"type":"voice","event":"call","status":"ringing","from":"441234567890",
//!   "to":"441234567891","extension":null,"meta":{"sipCallId":"abc@cpaas","key1":"value"},"timestamp":1623163324316}"#;
//! let updates = leg_announce::parse_announcements(body).unwrap();
//! let correlation::LegUpdate::Learned(leg) = &updates[0] else { panic!() };
//! assert_eq!(leg.sip_call_id.as_deref(), Some("abc@cpaas"));
//! assert_eq!(leg.tags.get("key1").map(String::as_str), Some("value"));
//! ```
//!
//! *Invariant:* only `server.rs` does IO; conversion is a pure function of the body, and the
//! replay guard of its inputs.

#![warn(missing_docs)]
// Tests may unwrap: a panic there is a failed test, not a crash.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod announce;
mod config;
mod replay;
mod server;

pub use announce::{AnnounceError, SIP_CALL_ID_KEY, parse_announcements, to_update};
pub use config::LegsConfig;
pub use replay::{ReplayGuard, Seen};
pub use server::{LEGS_PATH, LegAnnounceServer, LegsError, LegsSettings};

#[cfg(test)]
mod tests;
