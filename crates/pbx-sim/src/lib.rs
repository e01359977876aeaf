//! Simulators of every feed pbx-listener reads and of the platform it writes to.
//!
//! They speak the real wire protocols over real sockets, so the demo, the end-to-end tests and
//! the benchmarks exercise the same code paths a customer's installation does:
//!
//! - [`platform`]: an HTTP receiver of Level 3 events that verifies Standard Webhooks
//!   signatures, records what it receives, and answers as scripted;
//! - [`avaya_r11`]: a DevLink3 server playing scripted IP Office call scenarios;
//! - [`announce`]: the platform's leg announcements (signed Level 2 B-leg events);
//! - [`sip_peers`]: real SIP peers for tests (SIPp through Kamailio, mirrored as HEPv3).
//!
//! Each module is also a `pbx-sim` subcommand.

#![warn(missing_docs)]

pub mod announce;
pub mod avaya_r11;
pub mod platform;
pub mod sip_peers;
