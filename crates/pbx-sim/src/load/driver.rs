//! The PBX side of a load run: a [`PbxDriver`] per PBX type plays calls on its simulator, one
//! phase at a time, when the scheduler says so.
//!
//! A call is a list of *phases*: what the PBX sends at one moment (a ringing, an answer, a
//! hang-up). The scheduler spreads a call's phases over its duration, so that `rate × duration`
//! calls are live at once, and stamps each phase when it leaves; the ledger attributes every
//! event the platform receives to the phase that caused it and measures the latency from there.
//!
//! One driver per PBX type (`pbx-sim load --pbx`), each on its own simulator, with its own
//! `--scenario` names:
//!
//! - `avaya-r11` ([`AvayaR11Driver`]): DevLink3; a phase is a scenario's steps between pauses;
//! - `avaya-r9` ([`AvayaR9Driver`]): SMDR, and with a `+delta2` scenario a DevLink relay's
//!   Delta2 as well; a phase is a moment of the call's script. SMDR reports a call after the
//!   fact (its record when the call ends), so its events are attributed to the phase that
//!   carried the record, not by their `timestamp`s ([`super::ledger`]);
//! - `3cx` ([`ThreeCxDriver`]): the Call Control API's WebSocket notifications, each answered
//!   by the daemon's participant GET; a phase is a scenario's steps between pauses.
//!
//! Each says its `[[pbx]]` keys (as `pbx-listener demo` points the adapter at the same
//! simulator), when the daemon is linked, how to play a phase, which `meta.pbxCallId`s a call's
//! events carry (else the ledger cannot attribute them), and how to drop its link.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::avaya_r11::{AvayaSim, NODE, Numbering, Scenario, SimConfig, Step, script};

mod avaya_r9;
mod threecx;

pub use self::avaya_r9::{AvayaR9Driver, DELTA2_SUFFIX, R9Call};
pub use self::threecx::{SCENARIOS as THREECX_SCENARIOS, ThreeCxCall, ThreeCxDriver};

/// One PBX type's simulator, driven by the load scheduler.
pub trait PbxDriver: Send + Sync + 'static {
    /// A planned call: its phases, not yet sent.
    type Call: Send + 'static;

    /// The `[[pbx]]` `type`.
    fn pbx_type(&self) -> &'static str;

    /// The other keys of the `[[pbx]]` block that points the daemon at this simulator (files it
    /// needs are written into `dir`).
    fn pbx_keys(&self, dir: &Path) -> anyhow::Result<String>;

    /// Resolves once the daemon is connected and subscribed (`links` links in total since the
    /// start: a reconnect makes it 2).
    fn linked(&self, links: u64) -> impl Future<Output = ()> + Send;

    /// Plans call number `n` (numbers are unique per run).
    fn plan(&self, n: u64) -> Self::Call;

    /// How many phases `call` has (at least 1).
    fn phases(call: &Self::Call) -> usize;

    /// The PBX's own ids of the call (`meta.pbxCallId` of its events).
    fn call_ids(call: &Self::Call) -> Vec<String>;

    /// Sends phase `phase` of `call` to whoever is connected.
    fn send(&self, call: &mut Self::Call, phase: usize) -> impl Future<Output = ()> + Send;

    /// Drops the link to the daemon as a failing network would (the daemon reconnects). False
    /// when this PBX type cannot.
    fn drop_link(&self) -> bool;

    /// The longest the daemon may still hold a call's events after its last phase (an
    /// adapter's timers, e.g. 3CX's removal grace): the drain waits this long before it
    /// checks that the outbox is empty, else it would stop the daemon with events still to come.
    fn settle(&self) -> Duration {
        Duration::ZERO
    }
}

/// The DevLink3 simulator of an IP Office R11, playing one scenario per call.
pub struct AvayaR11Driver {
    sim: Arc<AvayaSim>,
    scenario: String,
    numbering: std::sync::Mutex<Numbering>,
    password: String,
}

/// The load's service user on the simulated IP Office.
const USER: &str = "load";

impl AvayaR11Driver {
    /// The `--scenario` when none is given.
    pub const DEFAULT_SCENARIO: &'static str = "hunt-group";

    /// Starts the simulator on loopback; every call plays `scenario` (a [`Scenario::NAMES`]
    /// name).
    pub async fn start(scenario: &str) -> anyhow::Result<AvayaR11Driver> {
        if Scenario::named(scenario, 1).is_none() {
            anyhow::bail!(
                "unknown avaya-r11 scenario {scenario:?}; expected one of {}",
                Scenario::NAMES.iter().filter(|n| **n != "link-drop").copied().collect::<Vec<_>>().join(", ")
            );
        }
        if scenario == "link-drop" {
            anyhow::bail!("the link-drop scenario drops the link itself; use --flap-every-secs for link drops");
        }
        let password = "load-password".to_owned();
        let sim = AvayaSim::start(SocketAddr::from(([127, 0, 0, 1], 0)), SimConfig::fast(USER, &password))
            .await
            .context("starting the DevLink3 simulator")?;
        Ok(AvayaR11Driver {
            sim: Arc::new(sim),
            scenario: scenario.to_owned(),
            numbering: std::sync::Mutex::new(Numbering::default()),
            password,
        })
    }

    /// The simulator.
    pub fn sim(&self) -> &Arc<AvayaSim> {
        &self.sim
    }
}

/// A planned call of a driver whose simulator plays steps (`S`), cut into phases at the
/// scenario's pauses, with the PBX's ids of the call.
pub struct PhasedCall<S> {
    phases: Vec<Vec<S>>,
    ids: Vec<String>,
}

impl<S> PhasedCall<S> {
    /// The call; empty phases (pauses back to back) are dropped.
    fn new(mut phases: Vec<Vec<S>>, ids: Vec<String>) -> PhasedCall<S> {
        phases.retain(|p| !p.is_empty());
        PhasedCall { phases, ids }
    }

    /// [`PbxDriver::phases`].
    fn phase_count(&self) -> usize {
        self.phases.len().max(1)
    }

    /// The steps of `phase`, taken out (nothing if already sent).
    fn take(&mut self, phase: usize) -> Vec<S> {
        self.phases.get_mut(phase).map(std::mem::take).unwrap_or_default()
    }

    /// Every step still to send, in order.
    #[cfg(test)]
    fn steps(&self) -> impl Iterator<Item = &S> {
        self.phases.iter().flatten()
    }
}

/// A DevLink3 call.
pub type AvayaCall = PhasedCall<Step>;

impl PbxDriver for AvayaR11Driver {
    type Call = AvayaCall;

    fn pbx_type(&self) -> &'static str {
        "avaya-r11"
    }

    fn pbx_keys(&self, dir: &Path) -> anyhow::Result<String> {
        let file = dir.join("avaya-password");
        std::fs::write(&file, &self.password).context("writing the simulator's password file")?;
        let addr = self.sim.addr();
        Ok(format!(
            "host = \"{}\"\nport = {}\nusername = \"{USER}\"\npassword_file = \"avaya-password\"\n\
             reconnect_min_ms = 100\nreconnect_max_secs = 1\nresync_settle_ms = 300\n",
            addr.ip(),
            addr.port()
        ))
    }

    fn linked(&self, links: u64) -> impl Future<Output = ()> + Send {
        let sim = Arc::clone(&self.sim);
        async move { sim.wait_for_subscriptions(links).await }
    }

    fn plan(&self, n: u64) -> AvayaCall {
        // Checked in `start`.
        let scenario = Scenario::named(&self.scenario, 1 + 2 * n)
            .unwrap_or(Scenario::HuntGroupAnswer(crate::avaya_r11::CallSpec::numbered(1 + 2 * n)));
        let steps = script(&scenario, &mut self.numbering.lock().unwrap_or_else(|p| p.into_inner()));
        let mut ids: Vec<String> = Vec::new();
        let mut phases = vec![Vec::new()];
        for step in steps {
            match step {
                Step::Pause => phases.push(Vec::new()),
                step => {
                    if let Step::Delta3 { call, .. } = &step {
                        let id = format!("{NODE}.{call}");
                        if !ids.contains(&id) {
                            ids.push(id);
                        }
                    }
                    if let Some(phase) = phases.last_mut() {
                        phase.push(step);
                    }
                }
            }
        }
        PhasedCall::new(phases, ids)
    }

    fn phases(call: &AvayaCall) -> usize {
        call.phase_count()
    }

    fn call_ids(call: &AvayaCall) -> Vec<String> {
        call.ids.clone()
    }

    fn send(&self, call: &mut AvayaCall, phase: usize) -> impl Future<Output = ()> + Send {
        let steps = call.take(phase);
        let sim = Arc::clone(&self.sim);
        async move {
            for step in steps {
                sim.step(step).await;
            }
        }
    }

    fn drop_link(&self) -> bool {
        self.sim.drop_link();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hunt_group_call_has_three_phases_and_one_pbx_call_id() {
        let driver = AvayaR11Driver::start("hunt-group").await.expect("simulator");
        let call = driver.plan(0);
        assert_eq!(AvayaR11Driver::phases(&call), 3, "ring, answer, hang up");
        assert_eq!(AvayaR11Driver::call_ids(&call), [format!("{NODE}.1")]);
        let next = driver.plan(1);
        assert_eq!(AvayaR11Driver::call_ids(&next), [format!("{NODE}.2")], "every call its own id");
        let transfer = AvayaR11Driver::start("attended-transfer").await.expect("simulator").plan(0);
        assert_eq!(AvayaR11Driver::call_ids(&transfer).len(), 2, "the consultation call is a second PBX call");
    }
}
