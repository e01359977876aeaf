//! The simulated PBXs `pbx-listener demo` runs, one per PBX type it can show.
//!
//! [`start`] starts the simulator of a type on loopback and returns a [`DemoPbx`]: the
//! `[[pbx]]` keys that point the real adapter at it (the daemon loads them through its PBX-type
//! table, as it would a configuration file) and a future that plays calls until told to stop.
//! Before each call the simulated platform ([`DemoPlatform`]) announces the call's B leg to the
//! listener's real leg endpoint, as a real platform does when it dials into the PBX, so the
//! demo's events are correlated.
//!
//! Adding a PBX type to the demo: a `demo` function in its simulator module and an arm in
//! [`start`].

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use anyhow::Context as _;
use generic_event::Status;
use uuid::Uuid;
use webhook_signature::SigningSecret;

use crate::announce::{BLeg, announce, b_leg_event};

/// A boxed future the demo awaits.
pub type DemoFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The PBX types the demo can simulate, the default first.
pub const DEMO_TYPES: &[&str] = &["avaya-r11", "avaya-r9", "3cx"];

/// A simulated PBX, running.
pub struct DemoPbx {
    /// The `name` of its `[[pbx]]` block (`meta.pbx` of its events).
    pub name: &'static str,
    /// The `[[pbx]]` keys (without `name` and `type`) that point the real adapter at the
    /// simulator; files they name are in the directory given to [`start`].
    pub block: String,
    /// Plays calls until the `stop` future given to [`start`] resolves, then stops the
    /// simulator.
    pub play: DemoFuture,
}

/// The simulated platform's side of the demo.
#[derive(Debug, Clone)]
pub struct DemoPlatform {
    /// The listener's leg endpoint (`http://…/legs`).
    pub legs_url: String,
    /// The secret announcements are signed with.
    pub secret: SigningSecret,
    /// The platform account.
    pub account_id: Uuid,
    /// Its name.
    pub account_name: String,
    /// With a seed, the legs' sids are derived from it and the call's number, so two runs with
    /// the same seed give the same sids; without, they are random, as a platform's are.
    pub seed: Option<u64>,
}

impl DemoPlatform {
    /// The B leg the platform dials for the demo's `n`-th call.
    pub fn leg(&self, n: u64, sip_call_id: Option<String>, from: &str, to: &str) -> BLeg {
        let sid = |role: &str| match self.seed {
            Some(seed) => Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("pbx-listener demo {seed} {n} {role}").as_bytes()),
            None => Uuid::new_v4(),
        };
        BLeg {
            account_id: self.account_id,
            account_name: self.account_name.clone(),
            call_sid: sid("b"),
            parent_call_sid: sid("a"),
            sip_call_id,
            from: from.to_owned(),
            to: to.to_owned(),
            meta: BTreeMap::from([("campaign".to_owned(), "demo".to_owned())]),
        }
    }

    /// Announces `leg` as ringing; a refusal is logged, not fatal (the call is then unmatched).
    pub async fn announce(&self, leg: &BLeg) {
        let event = b_leg_event(leg, Status::Ringing, listener_kit::clock::now().0);
        match announce(&self.legs_url, std::slice::from_ref(&self.secret), &[event]).await {
            Ok((200..=299, _)) => {}
            Ok((status, body)) => {
                tracing::warn!(status, body = %body.trim(), "The leg endpoint refused an announcement.")
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "Could not announce a leg."),
        }
    }
}

/// Starts the simulator of `pbx_type` on loopback, writing the files its `[[pbx]]` keys name
/// into `dir`. Its calls play until `stop` resolves.
pub async fn start(pbx_type: &str, dir: &Path, platform: DemoPlatform, stop: DemoFuture) -> anyhow::Result<DemoPbx> {
    match pbx_type {
        "avaya-r11" => crate::avaya_r11::demo(dir, platform, stop).await,
        "avaya-r9" => crate::avaya_r9::demo(platform, stop).await,
        "3cx" => crate::threecx::demo(dir, platform, stop).await,
        other => anyhow::bail!(
            "the demo simulates {} (not {other:?})",
            DEMO_TYPES.iter().map(|t| format!("{t:?}")).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Writes a small demo file (a password the simulator accepts) and returns its path.
pub fn write_file(dir: &Path, name: &str, contents: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
