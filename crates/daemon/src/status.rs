//! `/status`: the daemon's state for people and scripts (`pbx-listener status`).
//!
//! The report is built when asked, from what the parts keep up to date: the [`StatusBoard`]
//! (PBX links, correlation, uptime), the forwarder's status and last failure, and the outbox's
//! own counts (one read on the outbox's reader connection). The verdict is decided here, once,
//! so the JSON and the exit code of `pbx-listener status` always agree.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use correlation::CorrelationStats;
use forwarder::{DeliveryFailure, DeliveryState, DeliveryStatus};
use listener_core::LinkState;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::admin::HealthState;

/// How long the platform may fail before the verdict is `down` (as `/health/ready` turns red).
pub const OUTAGE_DOWN: Duration = Duration::from_secs(300);

/// The window over which the delivery rate is computed.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// How often the delivered count is sampled for the rate.
const RATE_SAMPLE: Duration = Duration::from_secs(5);

/// What the parts report for `/status`. Cheap to clone (shared).
#[derive(Clone)]
pub struct StatusBoard(Arc<Mutex<Board>>);

struct Board {
    started: Instant,
    links: BTreeMap<String, LinkReport>,
    /// PBXs whose link has been up at least once (a later Up is a reconnection).
    ever_up: std::collections::BTreeSet<String>,
    correlation: CorrelationStats,
    /// `(when, delivered so far)`, oldest first, spanning at most [`RATE_WINDOW`].
    delivered: VecDeque<(Instant, u64)>,
    /// The last configuration reload, if any.
    reload: Option<ReloadReport>,
}

impl Default for StatusBoard {
    fn default() -> Self {
        StatusBoard(Arc::new(Mutex::new(Board {
            started: Instant::now(),
            links: BTreeMap::new(),
            ever_up: std::collections::BTreeSet::new(),
            correlation: CorrelationStats::default(),
            delivered: VecDeque::new(),
            reload: None,
        })))
    }
}

impl StatusBoard {
    fn with<T>(&self, f: impl FnOnce(&mut Board) -> T) -> T {
        let mut board = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut board)
    }

    /// Time since the daemon started.
    pub fn uptime(&self) -> Duration {
        self.with(|b| b.started.elapsed())
    }

    /// A configured PBX, before its adapter reports anything.
    pub fn add_pbx(&self, name: &str) {
        self.with(|b| {
            b.links.entry(name.to_owned()).or_insert_with(|| LinkReport {
                state: LinkStateName::Connecting,
                since_ms: listener_kit::clock::now().0,
                up_since_ms: None,
                reconnects: 0,
                last_error: None,
                last_error_ms: None,
            });
        });
    }

    /// A PBX no longer configured (a reload removed its block, or restarts its link).
    pub fn remove_pbx(&self, name: &str) {
        self.with(|b| {
            b.links.remove(name);
            b.ever_up.remove(name);
        });
    }

    /// The outcome of a configuration reload.
    pub fn reloaded(&self, result: ReloadResult, errors: Vec<String>, summary: &str) {
        let report = ReloadReport { at_ms: listener_kit::clock::now().0, result, summary: summary.to_owned(), errors };
        self.with(|b| b.reload = Some(report));
    }

    /// A link state reported by an adapter at `now_ms`. Returns `true` when this is a
    /// reconnection (up again after having been up), which the caller counts.
    pub fn link_changed(&self, pbx: &str, state: &LinkState, now_ms: u64) -> bool {
        self.with(|b| {
            let ever_up = b.ever_up.contains(pbx);
            let link = b.links.entry(pbx.to_owned()).or_insert_with(|| LinkReport {
                state: LinkStateName::Connecting,
                since_ms: now_ms,
                up_since_ms: None,
                reconnects: 0,
                last_error: None,
                last_error_ms: None,
            });
            let name = LinkStateName::of(state);
            let was = link.state;
            if name != was {
                link.since_ms = now_ms;
            }
            link.state = name;
            let mut reconnected = false;
            match state {
                LinkState::Up => {
                    if was != LinkStateName::Up {
                        // Up again after having been up is a reconnection; the first is not.
                        reconnected = ever_up;
                        if reconnected {
                            link.reconnects += 1;
                        }
                        link.up_since_ms = Some(now_ms);
                    }
                }
                LinkState::Connecting => link.up_since_ms = None,
                LinkState::Down { reason } => {
                    link.up_since_ms = None;
                    link.last_error = Some(reason.clone());
                    link.last_error_ms = Some(now_ms);
                }
                LinkState::AuthFailed { reason } => {
                    link.up_since_ms = None;
                    link.last_error = Some(format!("authentication failed: {reason}"));
                    link.last_error_ms = Some(now_ms);
                }
            }
            if matches!(state, LinkState::Up) {
                b.ever_up.insert(pbx.to_owned());
            }
            reconnected
        })
    }

    /// Correlation's counters, as the pipeline last saw them.
    pub fn set_correlation(&self, stats: &CorrelationStats) {
        self.with(|b| b.correlation = stats.clone());
    }

    /// Records the delivered count (from the sampler).
    fn sample_delivered(&self, at: Instant, delivered: u64) {
        self.with(|b| {
            b.delivered.push_back((at, delivered));
            while b.delivered.len() > 1 && b.delivered.front().is_some_and(|(t, _)| at.duration_since(*t) > RATE_WINDOW)
            {
                b.delivered.pop_front();
            }
        });
    }

    /// Events delivered per second over the last minute (or since start, if shorter), counting
    /// up to `delivered` now.
    fn delivery_rate(&self, now: Instant, delivered: u64) -> f64 {
        self.with(|b| match b.delivered.front() {
            Some(&(t, n)) if now > t => {
                let secs = now.duration_since(t).as_secs_f64();
                if secs < 0.5 { 0.0 } else { delivered.saturating_sub(n) as f64 / secs }
            }
            _ => 0.0,
        })
    }

    /// Samples the forwarder's delivered count every few seconds until `stop`, for the rate.
    pub fn spawn_sampler(
        &self,
        status: watch::Receiver<DeliveryStatus>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let board = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(RATE_SAMPLE);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = every.tick() => board.sample_delivered(Instant::now(), status.borrow().delivered),
                }
            }
        })
    }

    /// The whole report. `outbox` is `None` when the outbox could not be read (a problem in
    /// itself, reported as such).
    pub fn report(&self, inputs: ReportInputs<'_>) -> StatusReport {
        let now = Instant::now();
        let now_ms = listener_kit::clock::now().0;
        let ReportInputs { health, delivery, last_failure, outbox, tail } = inputs;
        let (uptime, links, c, last_reload) =
            self.with(|b| (now.duration_since(b.started), b.links.clone(), b.correlation.clone(), b.reload.clone()));
        let correlation = CorrelationReport {
            legs_learned: c.legs_learned,
            legs_known: c.legs as u64,
            calls_waiting: c.pending_calls as u64,
            matched: BTreeMap::from([
                ("sip-call-id".to_owned(), c.matched_sip_call_id),
                ("call-id-pattern".to_owned(), c.matched_call_id_pattern),
                ("token".to_owned(), c.matched_token),
                ("number-time".to_owned(), c.matched_number_time),
            ]),
            unmatched: c.unmatched,
            no_leg_expected: c.no_leg_expected,
            ambiguous: c.ambiguous,
            late_legs: c.late_legs,
            expired_legs: c.legs_expired,
        };
        let delivery_report = DeliveryReport {
            state: match delivery.state {
                DeliveryState::Delivering => "delivering",
                DeliveryState::BackingOff { .. } => "backing-off",
                DeliveryState::Probing { .. } => "probing",
                DeliveryState::EndpointGone { .. } => "stopped",
            }
            .to_owned(),
            detail: health.delivery.detail.clone(),
            failing_since_ms: match delivery.state {
                DeliveryState::Delivering => None,
                DeliveryState::BackingOff { since_ms, .. }
                | DeliveryState::Probing { since_ms, .. }
                | DeliveryState::EndpointGone { since_ms } => Some(since_ms),
            },
            delivered: delivery.delivered,
            retried: delivery.retried,
            quarantined: delivery.quarantined,
            rate_per_sec: (self.delivery_rate(now, delivery.delivered) * 100.0).round() / 100.0,
            last_success_ms: delivery.last_success_ms,
            last_error: last_failure.map(|f| FailureReport {
                at_ms: f.at_ms,
                status: f.status,
                outcome: f.outcome.as_str().to_owned(),
                error: f.error.clone(),
            }),
        };
        let outbox_report = outbox.map(|s| OutboxReport {
            pending_events: s.pending_events,
            pending_bytes: s.pending_bytes,
            quarantined_events: s.quarantined_events,
            oldest_pending_age_secs: s.oldest_pending_age_ms(now_ms).map(|ms| ms / 1000),
            dropped_total: s.dropped_oldest_total + s.dropped_newest_total,
        });
        let (mut verdict, mut problems) = verdict(health, &links, &delivery_report, outbox_report.as_ref(), now_ms);
        if let Some(r) = last_reload.as_ref().filter(|r| r.result != ReloadResult::Ok) {
            // Running, but not on the file on disk: someone should look.
            if verdict == Verdict::Ok {
                verdict = Verdict::Degraded;
            }
            problems.push(format!(
                "the last configuration reload was not applied in full ({}): {}",
                r.result.as_str(),
                r.summary
            ));
        }
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            verdict,
            problems,
            uptime_secs: uptime.as_secs(),
            now_ms,
            pbx: links,
            correlation,
            outbox: outbox_report,
            delivery: delivery_report,
            tail,
            last_reload,
        }
    }
}

/// What the report is built from besides the board.
pub struct ReportInputs<'a> {
    /// The health checks (as on `/health/ready`).
    pub health: &'a HealthState,
    /// The forwarder's status.
    pub delivery: &'a DeliveryStatus,
    /// The forwarder's last failed attempt.
    pub last_failure: Option<&'a DeliveryFailure>,
    /// The outbox's counts, or `None` if they could not be read.
    pub outbox: Option<&'a outbox::Stats>,
    /// The tail endpoint's counters.
    pub tail: TailReport,
}

/// Ok / degraded / down, as a Nagios check says it (exit codes 0 / 1 / 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Everything works.
    Ok,
    /// Working, with a problem someone should look at (a PBX link down among several, the
    /// platform failing for less than five minutes, events rejected into the quarantine).
    Degraded,
    /// Events do not reach the platform: the pipeline stopped, every PBX link is down, the
    /// platform has failed for five minutes or more, or it answered 410 Gone.
    Down,
}

impl Verdict {
    /// The Nagios exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Ok => 0,
            Verdict::Degraded => 1,
            Verdict::Down => 2,
        }
    }

    /// Upper-case, as a Nagios plugin prints it.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Degraded => "DEGRADED",
            Verdict::Down => "DOWN",
        }
    }
}

fn verdict(
    health: &HealthState,
    links: &BTreeMap<String, LinkReport>,
    delivery: &DeliveryReport,
    outbox: Option<&OutboxReport>,
    now_ms: u64,
) -> (Verdict, Vec<String>) {
    let mut down = Vec::new();
    let mut degraded = Vec::new();
    if !health.pipeline.ok {
        // The admin endpoint answers before the pipeline is spawned: no detail yet is "starting".
        let detail = if health.pipeline.detail.is_empty() { "starting" } else { health.pipeline.detail.as_str() };
        down.push(format!("pipeline: {detail}"));
    }
    let not_up: Vec<&String> = links.iter().filter(|(_, l)| l.state != LinkStateName::Up).map(|(n, _)| n).collect();
    for name in &not_up {
        let link = &links[*name];
        let why = link.last_error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default();
        degraded.push(format!("PBX {name}: link {}{why}", link.state.as_str()));
    }
    if !links.is_empty() && not_up.len() == links.len() {
        down.append(&mut degraded);
    }
    match (delivery.state.as_str(), delivery.failing_since_ms) {
        ("stopped", _) => down.push("platform: answered 410 Gone, delivery stopped until restart".to_owned()),
        (_, Some(since)) => {
            let secs = now_ms.saturating_sub(since) / 1000;
            let text = format!("platform: failing for {secs} s ({})", delivery.detail);
            if secs >= OUTAGE_DOWN.as_secs() { down.push(text) } else { degraded.push(text) }
        }
        _ => {}
    }
    match outbox {
        Some(o) if o.quarantined_events > 0 => degraded.push(format!(
            "outbox: {} event(s) rejected by the platform in the quarantine (`pbx-listener outbox list --quarantined`)",
            o.quarantined_events
        )),
        Some(_) => {}
        None => degraded.push("outbox: its counts could not be read".to_owned()),
    }
    if !down.is_empty() {
        down.append(&mut degraded);
        (Verdict::Down, down)
    } else if !degraded.is_empty() {
        (Verdict::Degraded, degraded)
    } else {
        (Verdict::Ok, Vec::new())
    }
}

/// What `GET /status` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// The daemon's version.
    pub version: String,
    /// The overall verdict.
    pub verdict: Verdict,
    /// Why the verdict is not `ok`, most serious first.
    pub problems: Vec<String>,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// When this report was made (ms since the Unix epoch).
    pub now_ms: u64,
    /// Each PBX link, by PBX name.
    pub pbx: BTreeMap<String, LinkReport>,
    /// What correlation did since start.
    pub correlation: CorrelationReport,
    /// The outbox (`null` if it could not be read).
    pub outbox: Option<OutboxReport>,
    /// Delivery to the platform.
    pub delivery: DeliveryReport,
    /// The live tail endpoint.
    pub tail: TailReport,
    /// The last configuration reload (`null` when there was none).
    pub last_reload: Option<ReloadReport>,
}

/// How a configuration reload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReloadResult {
    /// Applied.
    Ok,
    /// The file has errors: nothing changed.
    Invalid,
    /// The file changes what only a restart applies: nothing changed.
    NeedsRestart,
    /// Applied, except parts that failed (a listener that could not be bound).
    Partial,
}

impl ReloadResult {
    /// The metric label and the report's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Ok => "ok",
            ReloadResult::Invalid => "invalid",
            ReloadResult::NeedsRestart => "needs-restart",
            ReloadResult::Partial => "partial",
        }
    }
}

/// The last configuration reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadReport {
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// How it ended.
    pub result: ReloadResult,
    /// What it changed, or why it changed nothing.
    pub summary: String,
    /// The errors, as `check-config` prints them.
    pub errors: Vec<String>,
}

/// A PBX link's state name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkStateName {
    /// Connected and subscribed.
    Up,
    /// Connecting (or reconnecting).
    Connecting,
    /// Lost; reconnecting after a backoff.
    Down,
    /// The PBX refused our credentials; retrying after the long backoff.
    AuthFailed,
}

impl LinkStateName {
    fn of(state: &LinkState) -> LinkStateName {
        match state {
            LinkState::Up => LinkStateName::Up,
            LinkState::Connecting => LinkStateName::Connecting,
            LinkState::Down { .. } => LinkStateName::Down,
            LinkState::AuthFailed { .. } => LinkStateName::AuthFailed,
        }
    }

    /// The name as in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkStateName::Up => "up",
            LinkStateName::Connecting => "connecting",
            LinkStateName::Down => "down",
            LinkStateName::AuthFailed => "auth-failed",
        }
    }
}

/// One PBX link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkReport {
    /// Its state now.
    pub state: LinkStateName,
    /// Since when it is in that state (ms since the Unix epoch).
    pub since_ms: u64,
    /// Since when it is up, if it is.
    pub up_since_ms: Option<u64>,
    /// Times it came back up after failing.
    pub reconnects: u64,
    /// The last failure (link lost, authentication refused), kept after recovery.
    pub last_error: Option<String>,
    /// When that was.
    pub last_error_ms: Option<u64>,
}

/// Correlation since start (calls, as `pbx_listener_correlation_*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CorrelationReport {
    /// Legs learned from announcements and the SIP tap.
    pub legs_learned: u64,
    /// Legs known now.
    pub legs_known: u64,
    /// PBX calls waiting for their leg now.
    pub calls_waiting: u64,
    /// Calls bound to a leg, by method.
    pub matched: BTreeMap<String, u64>,
    /// Calls that waited for a leg and found none (`meta.correlation = "none"`).
    pub unmatched: u64,
    /// Calls decided at once without a leg because none could come: internal calls, or no leg
    /// source configured (also `"none"`, but expected).
    pub no_leg_expected: u64,
    /// Of the unmatched, calls several legs fitted (`"ambiguous"`).
    pub ambiguous: u64,
    /// Legs that arrived after their call was released unbound.
    pub late_legs: u64,
    /// Legs that expired unused.
    pub expired_legs: u64,
}

/// The outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxReport {
    /// Events waiting for delivery.
    pub pending_events: u64,
    /// Their bytes.
    pub pending_bytes: u64,
    /// Events in the quarantine.
    pub quarantined_events: u64,
    /// Age of the oldest pending event, in seconds.
    pub oldest_pending_age_secs: Option<u64>,
    /// Events ever dropped at the cap (`when_full`).
    pub dropped_total: u64,
}

/// Delivery to the platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryReport {
    /// `delivering`, `backing-off`, `probing` or `stopped` (410).
    pub state: String,
    /// In words.
    pub detail: String,
    /// Since when the platform fails, if it does.
    pub failing_since_ms: Option<u64>,
    /// Events delivered since start.
    pub delivered: u64,
    /// Failed attempts since start (retried).
    pub retried: u64,
    /// Events the platform rejected since start.
    pub quarantined: u64,
    /// Events delivered per second over the last minute.
    pub rate_per_sec: f64,
    /// When the last event was delivered (ms since the Unix epoch).
    pub last_success_ms: Option<u64>,
    /// The last failed attempt, kept after recovery.
    pub last_error: Option<FailureReport>,
}

/// A failed delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureReport {
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// The HTTP status, `null` for a network error.
    pub status: Option<u16>,
    /// `retrying`, `quarantined` or `gone`.
    pub outcome: String,
    /// The response excerpt or the network error.
    pub error: String,
}

/// The tail endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TailReport {
    /// Clients connected now.
    pub clients: u64,
    /// Events tail clients missed because they read too slowly, since start.
    pub lagged_events: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::Check;

    fn delivering() -> DeliveryStatus {
        DeliveryStatus {
            state: DeliveryState::Delivering,
            last_success_ms: None,
            delivered: 0,
            quarantined: 0,
            retried: 0,
        }
    }

    fn healthy() -> HealthState {
        HealthState { pipeline: Check::ok("running"), delivery: Check::ok("delivering"), pbx: BTreeMap::new() }
    }

    fn report(board: &StatusBoard, health: &HealthState, delivery: &DeliveryStatus) -> StatusReport {
        let stats = outbox_stats(0);
        board.report(ReportInputs {
            health,
            delivery,
            last_failure: None,
            outbox: Some(&stats),
            tail: TailReport::default(),
        })
    }

    fn outbox_stats(quarantined: u64) -> outbox::Stats {
        outbox::Stats {
            schema_version: 1,
            pending_events: 0,
            pending_bytes: 0,
            quarantined_events: quarantined,
            quarantined_bytes: 0,
            corrupt_quarantined_events: 0,
            oldest_pending_created_ms: None,
            next_due_ms: None,
            appended_total: 0,
            delivered_total: 0,
            dropped_oldest_total: 0,
            dropped_newest_total: 0,
            duplicates_total: 0,
            corrupt_total: 0,
            purged_total: 0,
            corrupt_databases_total: 0,
            file_bytes: 0,
        }
    }

    #[test]
    fn links_count_reconnections_not_the_first_connection() {
        let board = StatusBoard::default();
        board.add_pbx("hq");
        assert!(!board.link_changed("hq", &LinkState::Up, 1_000), "the first connection is no reconnection");
        assert!(!board.link_changed("hq", &LinkState::Down { reason: "keepalive timeout".into() }, 2_000));
        assert!(!board.link_changed("hq", &LinkState::Connecting, 2_100));
        assert!(board.link_changed("hq", &LinkState::Up, 3_000));
        assert!(!board.link_changed("hq", &LinkState::Up, 3_500), "a repeated Up is no new reconnection");
        let r = report(&board, &healthy(), &delivering());
        let hq = &r.pbx["hq"];
        assert_eq!(hq.state, LinkStateName::Up);
        assert_eq!((hq.up_since_ms, hq.since_ms, hq.reconnects), (Some(3_000), 3_000, 1));
        assert_eq!((hq.last_error.as_deref(), hq.last_error_ms), (Some("keepalive timeout"), Some(2_000)));
        assert_eq!(r.verdict, Verdict::Ok);
    }

    #[test]
    fn one_link_down_among_two_is_degraded_all_down_is_down() {
        let board = StatusBoard::default();
        board.link_changed("a", &LinkState::Up, 1);
        board.link_changed("b", &LinkState::AuthFailed { reason: "bad password".into() }, 2);
        let r = report(&board, &healthy(), &delivering());
        assert_eq!(r.verdict, Verdict::Degraded);
        assert_eq!(r.problems, ["PBX b: link auth-failed (authentication failed: bad password)"]);
        board.link_changed("a", &LinkState::Down { reason: "reset".into() }, 3);
        let r = report(&board, &healthy(), &delivering());
        assert_eq!(r.verdict, Verdict::Down);
        assert_eq!(r.problems.len(), 2);
    }

    #[test]
    fn a_platform_outage_is_degraded_then_down_and_410_is_down() {
        let board = StatusBoard::default();
        let now = listener_kit::clock::now().0;
        let mut d = delivering();
        d.state = DeliveryState::BackingOff { since_ms: now - 10_000, attempts: 3, until_ms: now + 1_000 };
        assert_eq!(report(&board, &healthy(), &d).verdict, Verdict::Degraded);
        d.state = DeliveryState::Probing { since_ms: now - OUTAGE_DOWN.as_millis() as u64 - 1_000, attempts: 9 };
        assert_eq!(report(&board, &healthy(), &d).verdict, Verdict::Down);
        d.state = DeliveryState::EndpointGone { since_ms: now };
        let r = report(&board, &healthy(), &d);
        assert_eq!((r.verdict, r.delivery.state.as_str()), (Verdict::Down, "stopped"));
    }

    #[test]
    fn quarantined_events_and_a_stopped_pipeline() {
        let board = StatusBoard::default();
        let health = healthy();
        let stats = outbox_stats(2);
        let delivery = DeliveryStatus { quarantined: 2, ..delivering() };
        let inputs = || ReportInputs {
            health: &health,
            delivery: &delivery,
            last_failure: None,
            outbox: Some(&stats),
            tail: TailReport::default(),
        };
        assert_eq!(board.report(inputs()).verdict, Verdict::Degraded);
        let mut stopped = healthy();
        stopped.pipeline = Check::failing("stopping");
        assert_eq!(report(&board, &stopped, &delivering()).verdict, Verdict::Down);
        assert_eq!(report(&board, &healthy(), &delivering()).verdict, Verdict::Ok);
    }

    #[test]
    fn the_rate_is_over_the_sampled_window() {
        let board = StatusBoard::default();
        let t0 = Instant::now();
        board.sample_delivered(t0, 100);
        board.sample_delivered(t0 + Duration::from_secs(5), 150);
        let rate = board.delivery_rate(t0 + Duration::from_secs(10), 200);
        assert!((rate - 10.0).abs() < 1e-9, "{rate}");
        // Samples older than the window are dropped (keeping the newest).
        board.sample_delivered(t0 + Duration::from_secs(100), 300);
        let rate = board.delivery_rate(t0 + Duration::from_secs(105), 310);
        assert!((rate - 2.0).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn the_report_round_trips_through_json() {
        let board = StatusBoard::default();
        board.link_changed("hq", &LinkState::Up, 1);
        let r = report(&board, &healthy(), &delivering());
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""verdict":"ok""#), "{json}");
        let back: StatusReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }
}
