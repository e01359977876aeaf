//! What every IO layer of pbx-listener shares (adapters, leg sources, outbox, forwarder), so
//! that each exists once:
//!
//! - [`Backoff`]: capped exponential backoff with full jitter, and the long wait after a PBX
//!   refused our credentials (pure: failures and randomness are arguments);
//! - [`LogGate`]: a rate limiter for repeated log lines (pure: time is an argument), usable in a
//!   `static`;
//! - [`clock::now`]: the wall clock as [`listener_core::UnixMillis`], the one place IO layers
//!   read it to hand time to the sans-IO cores;
//! - [`read_secret_file`]: a `*_file` key's secret.
//!
//! ```
//! use listener_kit::{Backoff, LogGate};
//! use listener_core::UnixMillis;
//! use std::time::Duration;
//!
//! let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
//! assert!(backoff.next_delay(0.99) <= Duration::from_millis(500));
//! assert!(backoff.next_delay(0.99) <= Duration::from_secs(1));
//!
//! static MALFORMED: LogGate = LogGate::per_second();
//! assert_eq!(MALFORMED.allow(UnixMillis(10_000)), Some(0));
//! assert_eq!(MALFORMED.allow(UnixMillis(10_500)), None);
//! assert_eq!(MALFORMED.allow(UnixMillis(11_000)), Some(1), "one line was suppressed meanwhile");
//! ```

#![warn(missing_docs)]

mod backoff;
pub mod clock;
mod log_gate;
mod secret_file;

pub use backoff::Backoff;
pub use log_gate::LogGate;
pub use secret_file::{SecretFileError, read_secret_file};
