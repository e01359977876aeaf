//! The 3CX simulator under load: Call Control API notifications over the WebSocket, and the
//! participant GETs they make the daemon do.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;

use super::{PbxDriver, PhasedCall};
use crate::threecx::{EXTENSIONS, Numbering, Scenario, SimConfig, Step, ThreeCxSim, script};

/// The API client the daemon logs in as.
const CLIENT: &str = "pbxlistener";

/// The scenarios a load can play: those that are calls, not link faults of their own.
pub const SCENARIOS: [&str; 5] = ["queue", "transfer", "abandon", "outbound", "get-remove-race"];

/// The Call Control API simulator of a 3CX V20, playing one scenario per call.
///
/// A call's phases are its script's steps between pauses ([`crate::threecx::script`]): e.g.
/// for `queue`, 101 and 102 ring; 102 answers and 101 goes; 102 hangs up. Each change is a
/// WebSocket notification the daemon answers with a participant GET, as on a real 3CX. Unlike
/// the scripted tests, a step does not wait for the daemon's GET ([`Step::Upsert`] with
/// `await_fetch` off): a PBX does not wait for its observers, and a load that did would slow
/// down with the daemon instead of measuring it.
///
/// The scenarios produce no CDR records (3CX's CDR only rebuilds calls the live feed missed,
/// and parks), so the CDR socket is not configured. A removed participant waits the adapter's
/// `removal_grace_ms` (1.5 s by default, longer while other GETs are under way) for what
/// explains it before its `disconnected` goes out: that is in the latency of the last phase.
pub struct ThreeCxDriver {
    sim: Arc<ThreeCxSim>,
    scenario: String,
    numbering: Mutex<Numbering>,
    secret: String,
}

/// A 3CX call.
pub type ThreeCxCall = PhasedCall<Step>;

impl ThreeCxDriver {
    /// The `--scenario` when none is given.
    pub const DEFAULT_SCENARIO: &'static str = "queue";

    /// Starts the simulator on loopback (plain HTTP/WS); every call plays `scenario`, one of
    /// [`SCENARIOS`].
    pub async fn start(scenario: &str) -> anyhow::Result<ThreeCxDriver> {
        match scenario {
            "ws-drop" => {
                anyhow::bail!("the ws-drop scenario drops the link itself; use --flap-every-secs for link drops")
            }
            "token-thief" => anyhow::bail!("the token-thief scenario leaves the daemon backing off; it is not a load"),
            // Three invalidations within ten minutes are, to the adapter, another user of its
            // client id (adapter_3cx::token): it says so and backs off, as it should.
            "token-expiry" => anyhow::bail!(
                "the token-expiry scenario expires the token on every call: at a load's rate the daemon takes that \
                 for another user of its client id and backs off; it is not a load"
            ),
            s if !SCENARIOS.contains(&s) => {
                anyhow::bail!("unknown 3cx scenario {scenario:?}; expected one of {}", SCENARIOS.join(", "))
            }
            _ => {}
        }
        let secret = "load-3cx-client-secret".to_owned();
        let sim = ThreeCxSim::start(SocketAddr::from(([127, 0, 0, 1], 0)), SimConfig::fast(CLIENT, &secret))
            .await
            .context("starting the 3CX simulator")?;
        Ok(ThreeCxDriver {
            sim: Arc::new(sim),
            scenario: scenario.to_owned(),
            numbering: Mutex::new(Numbering::default()),
            secret,
        })
    }

    /// The simulator.
    pub fn sim(&self) -> &Arc<ThreeCxSim> {
        &self.sim
    }
}

impl PbxDriver for ThreeCxDriver {
    type Call = ThreeCxCall;

    fn pbx_type(&self) -> &'static str {
        "3cx"
    }

    fn pbx_keys(&self, dir: &Path) -> anyhow::Result<String> {
        let file = dir.join("3cx-client-secret");
        std::fs::write(&file, &self.secret).context("writing the simulator's client secret file")?;
        let extensions = EXTENSIONS.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>().join(", ");
        Ok(format!(
            "url = {:?}\nclient_id = {CLIENT:?}\nclient_secret_file = {:?}\nextensions = [{extensions}]\n\
             reconnect_min_ms = 100\nreconnect_max_secs = 1\n",
            self.sim.url(),
            file.display().to_string()
        ))
    }

    fn linked(&self, links: u64) -> impl Future<Output = ()> + Send {
        // The daemon takes a snapshot after every (re)connection of its WebSocket.
        let sim = Arc::clone(&self.sim);
        async move { sim.wait_for_snapshots(links).await }
    }

    fn plan(&self, n: u64) -> ThreeCxCall {
        // Checked in `start`.
        let scenario = Scenario::named(&self.scenario, n + 1)
            .unwrap_or(Scenario::QueueAnswer(crate::threecx::CallSpec::numbered(n + 1)));
        let steps = script(&scenario, &mut self.numbering.lock().unwrap_or_else(|p| p.into_inner()));
        let mut ids: Vec<String> = Vec::new();
        let mut phases = vec![Vec::new()];
        for step in steps {
            let step = match step {
                Step::Pause => {
                    phases.push(Vec::new());
                    continue;
                }
                Step::Upsert { participant, .. } => {
                    // `meta.pbxCallId` is 3CX's `callid`, shared by every leg of the call.
                    if let Some(id) = participant.callid.map(|c| c.to_string())
                        && !ids.contains(&id)
                    {
                        ids.push(id);
                    }
                    Step::Upsert { participant, await_fetch: false }
                }
                step => step,
            };
            if let Some(phase) = phases.last_mut() {
                phase.push(step);
            }
        }
        PhasedCall::new(phases, ids)
    }

    fn phases(call: &ThreeCxCall) -> usize {
        call.phase_count()
    }

    fn call_ids(call: &ThreeCxCall) -> Vec<String> {
        call.ids.clone()
    }

    fn send(&self, call: &mut ThreeCxCall, phase: usize) -> impl Future<Output = ()> + Send {
        let steps = call.take(phase);
        let sim = Arc::clone(&self.sim);
        async move {
            for step in steps {
                sim.step(step).await;
            }
        }
    }

    fn drop_link(&self) -> bool {
        // The WebSocket closes without a goodbye; the daemon reconnects, takes a snapshot and
        // reconciles what changed meanwhile.
        self.sim.drop_websockets();
        true
    }

    fn settle(&self) -> Duration {
        // The adapter's default removal_grace_ms (1.5 s), postponed up to four times by half
        // of it while other GETs are under way.
        Duration::from_millis(1_500 + 4 * 751 + 500)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_queue_call_has_three_phases_and_one_pbx_call_id() {
        let driver = ThreeCxDriver::start("queue").await.expect("simulator");
        let call = driver.plan(0);
        assert_eq!(ThreeCxDriver::phases(&call), 3, "ring, answer, hang up");
        assert_eq!(ThreeCxDriver::call_ids(&call), ["1264"]);
        assert!(
            call.steps().all(|s| !matches!(s, Step::Upsert { await_fetch: true, .. })),
            "the load does not wait for the daemon's GETs"
        );
        assert_eq!(ThreeCxDriver::call_ids(&driver.plan(1)), ["1265"], "every call its own id");
        let dir = tempfile::tempdir().expect("dir");
        let keys = driver.pbx_keys(dir.path()).expect("keys");
        assert!(keys.contains(&driver.sim().url()) && keys.contains("extensions = [\"101\""), "{keys}");
        for (name, wanted) in [
            ("nope", "unknown 3cx scenario \"nope\""),
            ("ws-drop", "--flap-every-secs"),
            ("token-expiry", "another user of its client id"),
        ] {
            let err = ThreeCxDriver::start(name).await.err().expect("refused").to_string();
            assert!(err.contains(wanted), "{err}");
        }
    }
}
