//! The IP Office R9 simulator under load: SMDR, and optionally a DevLink relay's Delta2.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::PbxDriver;
use crate::avaya_r9::{Emit, R9Sim, R9SimConfig, Scenario, SmdrSide, script};

/// The suffix of a `--scenario` that adds the Delta2 feed (`hunt-group+delta2`).
pub const DELTA2_SUFFIX: &str = "+delta2";

/// The first SMDR Call ID of a run (a load's call `n` is this + `n`).
const FIRST_CALL_ID: u64 = 1_000_001;

/// `delta2.grace_ms`: shorter than the default 5 s, so that the drain after a run with Delta2
/// is short; it matters only when a Delta2 line was lost (a link drop).
const DELTA2_GRACE_MS: u64 = 1_000;

/// The simulated IP Office's time zone.
const TIMEZONE: &str = "Europe/London";

/// The SMDR (and, with `+delta2`, Delta2) simulator of an IP Office R9, playing one scenario
/// per call.
///
/// A call's phases are the moments of its script ([`crate::avaya_r9::script`]): the ringing,
/// the answer, … the hang-up. SMDR writes a call's record(s) as segments end, so over SMDR
/// alone the first phases send nothing and the last one carries the record the daemon rebuilds
/// the whole call from; the ledger attributes those events to the phase that carried the
/// record (their `timestamp`s are when things happened, see [`crate::load::ledger`]). With
/// Delta2 every phase sends its live line, and SMDR only completes what Delta2 missed.
///
/// The records carry the scenario's own durations (e.g. 5 s of ringing and 20 s of talk for
/// `answered`) whatever `--call-secs` is: the load paces when they are sent, not what they say.
pub struct AvayaR9Driver {
    sim: Arc<R9Sim>,
    scenario: String,
    delta2: bool,
}

/// An R9 call: what the simulator emits, cut into phases at the script's moments.
pub struct R9Call {
    phases: Vec<Vec<Emit>>,
    call_id: u64,
}

impl AvayaR9Driver {
    /// The `--scenario` when none is given.
    pub const DEFAULT_SCENARIO: &'static str = "hunt-group";

    /// Starts the simulator on loopback (the IP Office listens for SMDR, the daemon connects,
    /// as `pbx-listener demo` does); every call plays `scenario`, a [`Scenario::NAMES`] name,
    /// optionally with [`DELTA2_SUFFIX`].
    pub async fn start(scenario: &str) -> anyhow::Result<AvayaR9Driver> {
        let (name, delta2) = match scenario.strip_suffix(DELTA2_SUFFIX) {
            Some(name) => (name, true),
            None => (scenario, false),
        };
        if Scenario::named(name, 1).is_none() {
            anyhow::bail!(
                "unknown avaya-r9 scenario {scenario:?}; expected one of {}, each optionally with {DELTA2_SUFFIX} \
                 (SMDR and a DevLink relay's Delta2)",
                Scenario::NAMES.join(", ")
            );
        }
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let config = R9SimConfig {
            delta2_listen: delta2.then_some(loopback),
            timezone: TIMEZONE.into(),
            // The most an IP Office keeps while the collector is away (a link drop under load).
            buffer_records: 3000,
            first_call_id: FIRST_CALL_ID,
            ..R9SimConfig::fast(SmdrSide::Listen(loopback))
        };
        let sim = R9Sim::start(config).await.context("starting the IP Office R9 simulator")?;
        Ok(AvayaR9Driver { sim: Arc::new(sim), scenario: name.to_owned(), delta2 })
    }

    /// The simulator.
    pub fn sim(&self) -> &Arc<R9Sim> {
        &self.sim
    }
}

impl PbxDriver for AvayaR9Driver {
    type Call = R9Call;

    fn pbx_type(&self) -> &'static str {
        "avaya-r9"
    }

    fn pbx_keys(&self, _dir: &Path) -> anyhow::Result<String> {
        let port = self.sim.smdr_addr().context("the SMDR listener's address")?.port();
        let mut keys = format!(
            "host = \"127.0.0.1\"\ntimezone = {TIMEZONE:?}\n\
             smdr = {{ mode = \"connect\", port = {port}, reconnect_min_ms = 100, reconnect_max_secs = 1 }}\n"
        );
        if let Some(addr) = self.sim.delta2_addr() {
            keys.push_str(&format!(
                "delta2 = {{ connect = \"{addr}\", grace_ms = {DELTA2_GRACE_MS}, reconnect_min_ms = 100, reconnect_max_secs = 1 }}\n"
            ));
        }
        Ok(keys)
    }

    fn linked(&self, links: u64) -> impl Future<Output = ()> + Send {
        let (sim, delta2) = (Arc::clone(&self.sim), self.delta2);
        async move {
            sim.wait_for_smdr_collectors(links).await;
            if delta2 {
                sim.wait_for_delta2_clients(links).await;
            }
        }
    }

    fn plan(&self, n: u64) -> R9Call {
        let call_id = FIRST_CALL_ID + n;
        // Checked in `start`.
        let scenario = Scenario::named(&self.scenario, n + 1)
            .unwrap_or(Scenario::HuntGroup(crate::avaya_r9::CallSpec::numbered(n + 1)));
        // The call starts now (PBX clock): the first phase goes out at once.
        let (start, _) = self.sim.pbx_now();
        let mut phases: Vec<Vec<Emit>> = Vec::new();
        let mut last_at = None;
        for (at, emit) in script(&scenario, call_id, &start).emits {
            match phases.last_mut() {
                Some(phase) if last_at == Some(at) => phase.push(emit),
                _ => phases.push(vec![emit]),
            }
            last_at = Some(at);
        }
        R9Call { phases, call_id }
    }

    fn phases(call: &R9Call) -> usize {
        call.phases.len().max(1)
    }

    fn call_ids(call: &R9Call) -> Vec<String> {
        // `meta.pbxCallId` is SMDR's Call ID (Delta2's CallID is the same number).
        vec![call.call_id.to_string()]
    }

    fn send(&self, call: &mut R9Call, phase: usize) -> impl Future<Output = ()> + Send {
        let emits = call.phases.get_mut(phase).map(std::mem::take).unwrap_or_default();
        for emit in emits {
            self.sim.emit(call.call_id, emit);
        }
        std::future::ready(())
    }

    fn drop_link(&self) -> bool {
        // The links close as a failing network would close them; records meanwhile wait in
        // the IP Office's buffer and follow on the daemon's reconnection. Delta2 lines
        // meanwhile are lost (a relay that lost its link), and SMDR completes those calls.
        self.sim.outage(true);
        self.sim.outage(false);
        if self.delta2 {
            self.sim.delta2_outage(true);
            self.sim.delta2_outage(false);
        }
        true
    }

    fn settle(&self) -> Duration {
        // SMDR's last record of a call Delta2 still shows live waits `delta2.grace_ms` for
        // Delta2's end (after a lost line); SMDR alone holds nothing back.
        Duration::from_millis(if self.delta2 { DELTA2_GRACE_MS + 500 } else { 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answered_call_has_three_phases_one_smdr_record_at_the_end_and_its_call_id() {
        let driver = AvayaR9Driver::start("answered").await.expect("simulator");
        let call = driver.plan(0);
        assert_eq!(AvayaR9Driver::phases(&call), 3, "ring, answer, hang up");
        assert_eq!(AvayaR9Driver::call_ids(&call), ["1000001"]);
        let smdr: Vec<usize> =
            (0..call.phases.len()).filter(|p| call.phases[*p].iter().any(|e| matches!(e, Emit::Smdr(_)))).collect();
        assert_eq!(smdr, [2], "SMDR writes the record when the call ends");
        assert_eq!(AvayaR9Driver::call_ids(&driver.plan(1)), ["1000002"], "every call its own id");
        assert!(driver.sim().delta2_addr().is_none());
        assert!(driver.pbx_keys(Path::new(".")).expect("keys").contains("mode = \"connect\""));

        let both = AvayaR9Driver::start("hunt-group+delta2").await.expect("simulator");
        assert!(both.pbx_keys(Path::new(".")).expect("keys").contains("delta2 = { connect"));
        assert_eq!(AvayaR9Driver::phases(&both.plan(0)), 3, "queued and ringing, answered, hung up");
        let err = AvayaR9Driver::start("hunt").await.err().expect("unknown").to_string();
        assert!(err.contains("unknown avaya-r9 scenario \"hunt\"") && err.contains("answered"), "{err}");
    }
}
