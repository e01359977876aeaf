//! Simulators of every feed pbx-listener reads and of the platform it writes to.
//!
//! They speak the real wire protocols over real sockets, so the demo, the end-to-end tests and
//! the benchmarks exercise the same code paths a customer's installation does:
//!
//! - [`platform`]: an HTTP receiver of Level 3 events that verifies Standard Webhooks
//!   signatures, records what it receives, and answers as scripted;
//! - [`avaya_r11`]: a DevLink3 server playing scripted IP Office call scenarios;
//! - [`avaya_r9`]: an IP Office R9's SMDR (both directions, buffer and replay) and a DevLink
//!   relay's Delta2 feed, playing scripted calls;
//! - [`threecx`]: a 3CX V20 Call Control API (token, snapshot, participants, WebSocket) and
//!   CDR socket playing scripted call scenarios;
//! - [`announce`]: the platform's leg announcements (signed Level 2 B-leg events);
//! - [`sip_peers`]: real SIP peers for tests (SIPp through Kamailio, mirrored as HEPv3);
//! - [`adapter_run`]: an adapter run in-process against a simulator, what it sends collected;
//! - [`conformance`]: the suite every PBX type passes: the real daemon against a simulator,
//!   its Level 3 sequences compared with a scenario's;
//! - [`demo`]: the simulated PBXs `pbx-listener demo` runs, and their simulated platform;
//! - [`load`]: the whole daemon under load, its latency, memory and start-up, with faults,
//!   measured against the machine's limits.
//!
//! Each module is also a `pbx-sim` subcommand.

#![warn(missing_docs)]

pub mod adapter_run;
pub mod announce;
pub mod avaya_r11;
pub mod avaya_r9;
pub mod conformance;
pub mod demo;
pub mod load;
pub mod platform;
pub mod sip_peers;
pub mod threecx;

/// The `whsec_` secrets given on a command line: `--secret` values, then `--secret-file` files.
pub fn secrets_from_args(
    texts: &[String],
    files: &[std::path::PathBuf],
) -> anyhow::Result<Vec<webhook_signature::SigningSecret>> {
    use anyhow::Context;
    let mut secrets = Vec::new();
    for text in texts {
        secrets.push(webhook_signature::SigningSecret::parse(text).context("--secret")?);
    }
    for path in files {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        secrets.push(
            webhook_signature::SigningSecret::parse(&text)
                .with_context(|| format!("the secret in {}", path.display()))?,
        );
    }
    Ok(secrets)
}
