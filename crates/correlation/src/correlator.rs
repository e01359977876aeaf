//! [`Correlator`]: binds PBX calls to platform legs (DESIGN §5).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use listener_core::{
    CallChange, CallInfo, CorrelatedSignal, Direction, LegBinding, MatchMethod, PbxCallId, PbxId, PbxSignal,
    SignalBody, UnixMillis,
};
use uuid::Uuid;

use crate::config::{CorrelationConfig, CorrelationConfigError, CorrelationSettings, TokenField, UnmatchedPolicy};
use crate::leg::{Applied, BLegRegistry, LegId, LegRole, LegUpdate, Ttl, call_id_key, call_id_local, number_key};

/// What the correlator hands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorrelatorOutput {
    /// A signal with its call's binding (bound, or unmatched under `unmatched = "forward"`).
    Correlated(CorrelatedSignal),
    /// A signal of an unmatched call under `unmatched = "drop"`.
    Dropped {
        /// The signal.
        signal: PbxSignal,
        /// Why its call is unmatched.
        reason: DropReason,
    },
}

/// Why a call's signals were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// No leg matched within `wait_for_leg_ms`.
    Unmatched,
    /// More than one leg (or more than one PBX call) fitted the caller + number + time match,
    /// and correlation does not guess.
    Ambiguous,
}

impl DropReason {
    /// A label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Unmatched => "unmatched",
            DropReason::Ambiguous => "ambiguous",
        }
    }
}

/// Counters for metrics. Monotonic except the three gauges at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorrelationStats {
    /// Calls bound by SIP Call-ID equality.
    pub matched_sip_call_id: u64,
    /// Calls bound by reading the sids out of the Call-ID (`call_id_pattern`).
    pub matched_call_id_pattern: u64,
    /// Calls bound by a token in a PBX-visible field.
    pub matched_token: u64,
    /// Calls bound by caller + dialled number within the time window.
    pub matched_number_time: u64,
    /// Calls decided unmatched (including the ambiguous ones) after waiting for a leg.
    pub unmatched: u64,
    /// Calls decided at once without a leg because none could come: no leg source is
    /// configured, or the call's direction is not in `wait_for_directions` (internal calls).
    pub no_leg_expected: u64,
    /// Calls left unmatched because the number match was ambiguous (a subset of `unmatched`).
    pub ambiguous: u64,
    /// Legs that arrived (matching a call by Call-ID) after that call had been released
    /// unbound.
    pub late_legs: u64,
    /// Legs removed by `leg_ttl_secs`, `ended_leg_keep_secs` or `max_legs` without ever
    /// being bound.
    pub legs_expired: u64,
    /// Leg updates that created a leg.
    pub legs_learned: u64,
    /// Leg updates merged into a known leg (repeats, the other source, later facts).
    pub legs_merged: u64,
    /// Leg updates ignored because their leg had ended and been forgotten (a replayed or
    /// late announcement, a late SIP copy): an ended leg never comes back.
    pub stale_leg_updates: u64,
    /// Signals dropped by `unmatched = "drop"`.
    pub signals_dropped: u64,
    /// Calls released before `wait_for_leg_ms` because a limit (`max_pending_calls`,
    /// `max_held_signals_per_call`) was reached.
    pub calls_released_early: u64,
    /// Gauge: legs in the registry.
    pub legs: usize,
    /// Gauge: PBX calls waiting for a leg.
    pub pending_calls: usize,
    /// Gauge: PBX calls tracked (waiting or decided).
    pub calls: usize,
}

/// Binds PBX calls to platform legs. Sans-IO: feed it signals, leg updates and the time; drain
/// [`Correlator::poll_output`]; call [`Correlator::handle_timeout`] at
/// [`Correlator::poll_timeout`].
///
/// Matching runs in the order of DESIGN §5 and the first unique match wins: (1) SIP Call-ID
/// equality, then the configured Call-ID pattern; (2) a token in a PBX-visible field; (3)
/// caller + dialled number within a time window. A binding is keyed by the PBX's call id, so
/// transfers, parks and pickups (which keep the call id) keep it. Signals of a call that waits
/// for its leg are held, in order, and released together.
#[derive(Debug)]
pub struct Correlator {
    settings: CorrelationSettings,
    registry: BLegRegistry,
    /// Boxed: the table keeps empty slots (a third or more after each growth), each as large as
    /// its value.
    calls: HashMap<CallKey, Box<CallEntry>>,
    /// Calls that are not bound (waiting or unmatched), by the number their leg's `to` would
    /// have: the competitors of a number match.
    unbound_by_number: HashMap<String, Vec<CallKey>>,
    /// Calls released unbound, by SIP Call-ID, to recognise late legs.
    unmatched_by_call_id: HashMap<String, CallKey>,
    /// Outbound calls bound to an A leg whose B leg is not known yet, by the A leg's sid.
    awaiting_child: HashMap<Uuid, Vec<CallKey>>,
    timers: BTreeSet<(UnixMillis, Timer)>,
    /// Calls in the order they ended, to forget the oldest when more than
    /// [`MAX_ENDED_CALLS`] are remembered (a key may be here after it was forgotten).
    ended: VecDeque<CallKey>,
    /// [`MAX_ENDED_CALLS`] (smaller in tests).
    max_ended: usize,
    pending: usize,
    output: VecDeque<CorrelatorOutput>,
    stats: CorrelationStats,
}

/// The most ended calls remembered (each for `ended_call_keep_secs`): at 2,000 calls/s the
/// keep time alone would hold 120,000 of them. Past it the oldest is forgotten early; a
/// signal for an ended call that late is rare (the adapters forget a call when it ends) and
/// is then treated as a new call.
pub const MAX_ENDED_CALLS: usize = 20_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct CallKey {
    pbx: Arc<str>,
    call: PbxCallId,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// A waiting call may decide a number match now.
    Settle(CallKey),
    /// A waiting call's wait is over.
    Deadline(CallKey),
    /// A call's binding may be forgotten.
    Forget(CallKey),
    /// A call released unmatched can no longer compete for a leg by number.
    Unindex(CallKey),
}

#[derive(Debug)]
struct CallEntry {
    state: CallState,
    /// When the call started (the adapter's word, from its first signal).
    call_started: UnixMillis,
    /// What the PBX said about the call, merged over its signals.
    info: CallInfo,
    /// When the binding may be forgotten (moves with every signal).
    forget_at: UnixMillis,
    ended: bool,
    /// The numbers the call is indexed under in `unbound_by_number`.
    number: Option<String>,
    sip_call_id: Option<String>,
    /// Reported after the fact (SMDR, CDR): decided at once; its start is the PBX's clock.
    after_the_fact: bool,
}

#[derive(Debug)]
enum CallState {
    Waiting(Box<Waiting>),
    /// Boxed: most entries are ended calls kept for late signals, and a binding inline would
    /// double each one's size.
    Bound(Box<LegBinding>),
    Unmatched(DropReason),
}

#[derive(Debug)]
struct Waiting {
    held: VecDeque<PbxSignal>,
    settle_at: UnixMillis,
    deadline: UnixMillis,
    ambiguous: bool,
    /// Whether a platform leg can come for this call (a leg source is configured and its
    /// direction is one of `wait_for_directions`). When not, it is decided at once.
    expects_leg: bool,
}

/// The result of one matching attempt.
enum Outcome {
    Bound(LegBinding, Vec<LegId>),
    /// Nothing unique yet; `ambiguous` when more than one candidate fitted.
    NotYet {
        ambiguous: bool,
    },
}

/// The registry's lifetimes, from the configuration.
fn leg_ttl(cfg: &CorrelationConfig) -> Ttl {
    Ttl {
        ttl_ms: cfg.leg_ttl_secs.saturating_mul(1000),
        ended_keep_ms: cfg.ended_leg_keep_secs.saturating_mul(1000),
        max_ended_keys: cfg.max_legs,
    }
}

impl Correlator {
    /// A correlator with this configuration; an invalid configuration is an error naming the
    /// key.
    pub fn new(config: CorrelationConfig) -> Result<Correlator, CorrelationConfigError> {
        Ok(Correlator::with_settings(CorrelationSettings::new(config)?))
    }

    /// A correlator with settings validated earlier (the daemon's configuration holds them).
    pub fn with_settings(settings: CorrelationSettings) -> Correlator {
        let registry = BLegRegistry::new(settings.config.token_meta_key.clone(), leg_ttl(&settings.config));
        Correlator {
            settings,
            registry,
            calls: HashMap::new(),
            unbound_by_number: HashMap::new(),
            unmatched_by_call_id: HashMap::new(),
            awaiting_child: HashMap::new(),
            timers: BTreeSet::new(),
            ended: VecDeque::new(),
            max_ended: MAX_ENDED_CALLS,
            pending: 0,
            output: VecDeque::new(),
            stats: CorrelationStats::default(),
        }
    }

    /// The cap on ended calls remembered, lowered by tests.
    #[cfg(test)]
    pub(crate) fn set_max_ended_calls(&mut self, max: usize) {
        self.max_ended = max;
    }

    /// New settings (a configuration reload). What it knows stays: the legs, the bindings and
    /// the calls waiting for a leg (each keeps the deadline it had). Matching, waiting and
    /// limits follow the new settings from now on.
    pub fn reconfigure(&mut self, settings: CorrelationSettings) {
        self.registry.reconfigure(settings.config.token_meta_key.clone(), leg_ttl(&settings.config));
        self.settings = settings;
    }

    /// Whether signals of `pbx` are held, waiting for their leg. What an adapter checkpoints
    /// after sending them must wait until they are released (`AdapterEvent::Checkpoint`).
    pub fn holds_signals_of(&self, pbx: &PbxId) -> bool {
        self.pending > 0
            && self
                .calls
                .iter()
                .any(|(key, entry)| *key.pbx == *pbx.name && matches!(entry.state, CallState::Waiting(_)))
    }

    /// The configuration in force.
    pub fn config(&self) -> &CorrelationConfig {
        &self.settings.config
    }

    /// The counters, with the gauges filled in.
    pub fn stats(&self) -> CorrelationStats {
        CorrelationStats {
            legs: self.registry.len(),
            pending_calls: self.pending,
            calls: self.calls.len(),
            ..self.stats.clone()
        }
    }

    /// The next output, in order: per PBX call, signals leave in the order they came.
    pub fn poll_output(&mut self) -> Option<CorrelatorOutput> {
        self.output.pop_front()
    }

    /// When [`Correlator::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        let timer = self.timers.first().map(|(t, _)| *t);
        let legs = self.registry.next_expiry();
        match (timer, legs) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// One signal from any adapter. Extension signals pass through at once, unmatched.
    pub fn handle_signal(&mut self, now: UnixMillis, signal: PbxSignal) {
        let SignalBody::Call(call) = &signal.body else {
            self.output
                .push_back(CorrelatorOutput::Correlated(CorrelatedSignal { signal, binding: LegBinding::unmatched() }));
            return;
        };
        let key = CallKey { pbx: signal.pbx.name.clone(), call: call.call.clone() };
        let ended = call.change == CallChange::Ended;
        let forget_at = now.plus_ms(self.ttl_ms(ended));
        let ended_forget_at = now.plus_ms(self.ttl_ms(true));
        if let Some(entry) = self.calls.get_mut(&key) {
            let newly_ended = ended && !entry.ended;
            entry.ended |= ended;
            let forget_at = if entry.ended { ended_forget_at } else { forget_at };
            // One Forget timer per call: move it rather than add another.
            self.timers.remove(&(entry.forget_at, Timer::Forget(key.clone())));
            entry.forget_at = forget_at;
            self.timers.insert((forget_at, Timer::Forget(key.clone())));
            entry.info.merge(&call.info);
            match &mut entry.state {
                CallState::Waiting(w) => {
                    w.held.push_back(signal);
                    let full = w.held.len() >= self.settings.config.max_held_signals_per_call;
                    self.reindex_number(&key);
                    if full {
                        self.stats.calls_released_early += 1;
                    }
                    self.attempt(now, &key, full);
                }
                CallState::Bound(binding) => {
                    let binding = LegBinding::clone(binding);
                    self.output.push_back(CorrelatorOutput::Correlated(CorrelatedSignal { signal, binding }));
                }
                CallState::Unmatched(reason) => {
                    let reason = *reason;
                    self.emit_unmatched(signal, reason);
                }
            }
            if newly_ended {
                self.call_ended(&key);
            }
            return;
        }
        // A call we have not seen: start waiting for its leg, unless none can come. A call
        // reported after the fact waits for nothing either: its leg, if any, was announced
        // long ago.
        let after_the_fact = signal.after_the_fact();
        let cfg = &self.settings.config;
        let (call_started, info) = (call.call_started, call.info.clone());
        let expects_leg = self.settings.leg_sources && cfg.wait_for_directions.contains(&info.direction);
        let waiting = Waiting {
            expects_leg,
            held: VecDeque::from([signal]),
            // One millisecond past 2 × window: a competitor starting exactly at the edge has
            // been seen.
            settle_at: now.plus_ms(cfg.number_window_ms.saturating_mul(2).saturating_add(1)),
            deadline: now.plus_ms(cfg.wait_for_leg_ms),
            ambiguous: false,
        };
        let (settle_at, deadline) = (waiting.settle_at, waiting.deadline);
        self.calls.insert(
            key.clone(),
            Box::new(CallEntry {
                state: CallState::Waiting(Box::new(waiting)),
                call_started,
                info,
                forget_at,
                ended,
                number: None,
                sip_call_id: None,
                after_the_fact,
            }),
        );
        self.pending += 1;
        self.timers.insert((forget_at, Timer::Forget(key.clone())));
        self.timers.insert((deadline, Timer::Deadline(key.clone())));
        if cfg.number_window_ms > 0 && settle_at < deadline {
            self.timers.insert((settle_at, Timer::Settle(key.clone())));
        }
        self.reindex_number(&key);
        if self.pending > self.settings.config.max_pending_calls {
            self.release_oldest(now);
        }
        // Without a leg to wait for, what can bind (the Call-ID pattern, sids in a token, a leg
        // already known) is tried once, now.
        self.attempt(now, &key, !expects_leg || after_the_fact);
        if ended {
            self.call_ended(&key);
        }
    }

    /// A call ended: it is remembered (its binding, for late signals) for
    /// `ended_call_keep_secs`, without what only matching needs, and at most
    /// [`MAX_ENDED_CALLS`] of them.
    fn call_ended(&mut self, key: &CallKey) {
        // A call still waiting for its leg is counted when it is decided (`decide`).
        if self.calls.get(key).is_none_or(|e| matches!(e.state, CallState::Waiting(_))) {
            return;
        }
        self.slim(key);
        self.ended.push_back(key.clone());
        while self.ended.len() > self.max_ended {
            let Some(oldest) = self.ended.pop_front() else { break };
            if self.calls.get(&oldest).is_some_and(|e| e.ended && !matches!(e.state, CallState::Waiting(_))) {
                self.forget(&oldest);
            }
        }
    }

    /// Drops what only matching reads (the call's numbers and names) from an ended call that
    /// is decided and no longer a number-match competitor.
    fn slim(&mut self, key: &CallKey) {
        if let Some(entry) = self.calls.get_mut(key)
            && entry.ended
            && entry.number.is_none()
            && !matches!(entry.state, CallState::Waiting(_))
        {
            entry.info = CallInfo { direction: entry.info.direction, ..CallInfo::default() };
        }
    }

    /// One leg update from the announcements or the SIP tap.
    pub fn handle_leg(&mut self, now: UnixMillis, update: LegUpdate) {
        let applied = self.registry.apply(now, &update);
        let id = match applied {
            Applied::New(id) => {
                self.stats.legs_learned += 1;
                id
            }
            Applied::Merged(id) => {
                self.stats.legs_merged += 1;
                id
            }
            Applied::Stale => {
                self.stats.stale_leg_updates += 1;
                return;
            }
        };
        while self.registry.len() > self.settings.config.max_legs {
            match self.registry.evict_one(now) {
                Some(true) => self.stats.legs_expired += 1,
                Some(false) => {}
                None => break,
            }
        }
        self.check_late_leg(id);
        self.complete_outbound(id);
        // Any waiting call may match now.
        let waiting: Vec<CallKey> = self
            .calls
            .iter()
            .filter(|(_, e)| matches!(e.state, CallState::Waiting(_)))
            .map(|(k, _)| k.clone())
            .collect();
        for key in waiting {
            self.attempt(now, &key, false);
        }
    }

    /// The PBX's snapshot after a reconnect is complete and lists `live_calls`: every other call of
    /// `pbx` still waiting for its leg is over, so it is decided now (bound if a leg fits, else by
    /// the unmatched policy) and its held signals come out before the caller reconciles the
    /// lifecycle against the snapshot. Live calls keep waiting.
    pub fn release_gone(&mut self, now: UnixMillis, pbx: &PbxId, live_calls: &[PbxCallId]) {
        let mut gone: Vec<CallKey> = self
            .calls
            .iter()
            .filter(|(k, e)| {
                *k.pbx == *pbx.name && matches!(e.state, CallState::Waiting(_)) && !live_calls.contains(&k.call)
            })
            .map(|(k, _)| k.clone())
            .collect();
        gone.sort();
        for key in gone {
            self.attempt(now, &key, true);
        }
    }

    /// Fires every timer due at `now`: number matches settle, waits end (calls are released
    /// unbound, by policy), bindings and legs expire.
    pub fn handle_timeout(&mut self, now: UnixMillis) {
        while let Some((t, timer)) = self.timers.first().cloned() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Settle(key) => self.attempt(now, &key, false),
                Timer::Deadline(key) => self.attempt(now, &key, true),
                Timer::Unindex(key) => {
                    if self.calls.get(&key).is_some_and(|e| matches!(e.state, CallState::Unmatched(_))) {
                        self.unindex_number(&key);
                        self.slim(&key);
                    }
                }
                Timer::Forget(key) => {
                    if self
                        .calls
                        .get(&key)
                        .is_some_and(|e| e.forget_at <= now && !matches!(e.state, CallState::Waiting(_)))
                    {
                        self.forget(&key);
                    }
                }
            }
        }
        self.stats.legs_expired += self.registry.expire(now);
    }

    fn ttl_ms(&self, ended: bool) -> u64 {
        let cfg = &self.settings.config;
        if ended { cfg.ended_call_keep_secs } else { cfg.call_ttl_secs }.saturating_mul(1000)
    }

    /// Tries to bind a waiting call; at its deadline (`last`) decides it either way.
    fn attempt(&mut self, now: UnixMillis, key: &CallKey, last: bool) {
        let Some(entry @ CallEntry { state: CallState::Waiting(w), .. }) = self.calls.get(key).map(|e| &**e) else {
            return;
        };
        let settled = now >= w.settle_at || last;
        match self.find_leg(key, entry, settled) {
            Outcome::Bound(binding, legs) => {
                for id in legs {
                    self.registry.mark_bound(id);
                }
                self.count_match(binding.method);
                self.decide(now, key, CallState::Bound(Box::new(binding)));
            }
            Outcome::NotYet { ambiguous } => {
                if let Some(CallEntry { state: CallState::Waiting(w), .. }) = self.calls.get_mut(key).map(|e| &mut **e)
                {
                    w.ambiguous |= ambiguous;
                    if last {
                        let reason = if w.ambiguous { DropReason::Ambiguous } else { DropReason::Unmatched };
                        if w.expects_leg {
                            self.stats.unmatched += 1;
                        } else {
                            self.stats.no_leg_expected += 1;
                        }
                        if reason == DropReason::Ambiguous {
                            self.stats.ambiguous += 1;
                        }
                        self.decide(now, key, CallState::Unmatched(reason));
                    }
                }
            }
        }
    }

    /// Ends a call's wait: releases its held signals under the decision.
    fn decide(&mut self, now: UnixMillis, key: &CallKey, state: CallState) {
        let Some(entry) = self.calls.get_mut(key) else { return };
        let CallState::Waiting(w) = std::mem::replace(&mut entry.state, state) else { return };
        let ended = entry.ended;
        self.pending = self.pending.saturating_sub(1);
        // Its Forget timer may have been skipped while it waited.
        self.timers.insert((entry.forget_at, Timer::Forget(key.clone())));
        let held = w.held;
        match &entry.state {
            CallState::Bound(binding) => {
                let binding = LegBinding::clone(binding);
                self.unindex_number(key);
                if binding.call_sid.is_none()
                    && let Some(parent) = binding.parent_call_sid
                {
                    self.awaiting_child.entry(parent).or_default().push(key.clone());
                }
                for signal in held {
                    self.output
                        .push_back(CorrelatorOutput::Correlated(CorrelatedSignal { signal, binding: binding.clone() }));
                }
            }
            CallState::Unmatched(reason) => {
                let reason = *reason;
                let cfg = &self.settings.config;
                let unindex_at =
                    now.plus_ms(cfg.wait_for_leg_ms.saturating_add(cfg.number_window_ms.saturating_mul(2)));
                self.timers.insert((unindex_at, Timer::Unindex(key.clone())));
                if let Some(cid) = entry.info.sip_call_id.as_deref() {
                    let cid = call_id_key(cid);
                    entry.sip_call_id = Some(cid.clone());
                    self.unmatched_by_call_id.insert(cid, key.clone());
                }
                for signal in held {
                    self.emit_unmatched(signal, reason);
                }
            }
            CallState::Waiting(_) => {}
        }
        if ended {
            self.call_ended(key);
        }
    }

    fn emit_unmatched(&mut self, signal: PbxSignal, reason: DropReason) {
        match self.settings.config.unmatched {
            UnmatchedPolicy::Forward => {
                // An ambiguous call says so in `meta.correlation`: "we did not guess" is not "no leg".
                let method = if reason == DropReason::Ambiguous { MatchMethod::Ambiguous } else { MatchMethod::None };
                let binding = LegBinding { method, ..LegBinding::unmatched() };
                self.output.push_back(CorrelatorOutput::Correlated(CorrelatedSignal { signal, binding }));
            }
            UnmatchedPolicy::Drop => {
                self.stats.signals_dropped += 1;
                self.output.push_back(CorrelatorOutput::Dropped { signal, reason });
            }
        }
    }

    fn count_match(&mut self, method: MatchMethod) {
        let s = &mut self.stats;
        match method {
            MatchMethod::SipCallId => s.matched_sip_call_id += 1,
            MatchMethod::CallIdPattern => s.matched_call_id_pattern += 1,
            MatchMethod::Token => s.matched_token += 1,
            MatchMethod::NumberTime => s.matched_number_time += 1,
            MatchMethod::Ambiguous | MatchMethod::None => {}
        }
    }

    /// The matcher: the first method that finds exactly one leg wins.
    fn find_leg(&self, key: &CallKey, w: &CallEntry, settled: bool) -> Outcome {
        let direction = w.info.direction;
        if direction == Direction::Internal {
            // An internal call never crosses the trunk: no platform leg to find.
            return Outcome::NotYet { ambiguous: false };
        }
        let mut ambiguous = false;
        // (1) SIP Call-ID equality, then the Call-ID pattern.
        if let Some(cid) = w.info.sip_call_id.as_deref().filter(|c| !c.trim().is_empty()) {
            match self.by_call_id(cid) {
                Lookup::One(id) => {
                    if let Some(b) = self.bind_to(id, direction, MatchMethod::SipCallId) {
                        return b;
                    }
                }
                Lookup::Many => ambiguous = true,
                Lookup::None => {}
            }
            if let Some(b) = self.by_pattern(cid, direction) {
                return b;
            }
        }
        // (2) A token in a PBX-visible field.
        if let Some(re) = &self.settings.token_pattern {
            for field in &self.settings.config.token_fields {
                let value = match field {
                    TokenField::CallerName => w.info.caller_name.as_deref(),
                    TokenField::DialledNumber => w.info.dialled_number.as_deref(),
                    TokenField::ExternalNumber => w.info.external_number.as_deref(),
                };
                let Some(caps) = value.and_then(|v| re.captures(v)) else { continue };
                if let Some(sid) = caps.name("call_sid").and_then(|m| Uuid::parse_str(m.as_str()).ok()) {
                    let parent = caps.name("parent_call_sid").and_then(|m| Uuid::parse_str(m.as_str()).ok());
                    return self.bind_sids(sid, parent, direction, MatchMethod::Token);
                }
                if let Some(token) = caps.name("token").map(|m| m.as_str()).filter(|t| !t.is_empty()) {
                    let found: Vec<LegId> = self
                        .registry
                        .by_token(token)
                        .into_iter()
                        .filter(|id| self.registry.get(*id).is_some_and(|l| !l.bound && l.call_sid.is_some()))
                        .collect();
                    match found.as_slice() {
                        [id] => {
                            if let Some(b) = self.bind_to(*id, direction, MatchMethod::Token) {
                                return b;
                            }
                        }
                        [] => {}
                        _ => ambiguous = true,
                    }
                }
            }
        }
        // (3) Caller + dialled number within the window, once every competitor can be seen.
        if settled && self.settings.config.number_window_ms > 0 {
            let candidates = self.number_candidates(w);
            match candidates.as_slice() {
                [id] => {
                    if self.number_competitors(key, *id) == 0 {
                        if let Some(b) = self.bind_to(*id, direction, MatchMethod::NumberTime) {
                            return b;
                        }
                    } else {
                        ambiguous = true;
                    }
                }
                [] => {}
                _ => ambiguous = true,
            }
        }
        Outcome::NotYet { ambiguous }
    }

    fn by_call_id(&self, cid: &str) -> Lookup {
        if let Some(id) = self.registry.by_call_id(cid) {
            return Lookup::One(id);
        }
        if !self.settings.config.call_id_ignore_host {
            return Lookup::None;
        }
        let key = call_id_key(cid);
        match call_id_local(&key) {
            // `abc@host` from the PBX: a leg known as plain `abc`.
            Some(local) => self.registry.by_call_id(local).map_or(Lookup::None, Lookup::One),
            // `abc` from the PBX: a leg known as `abc@somehost`, if only one.
            None => match self.registry.by_call_id_local(&key) {
                [] => Lookup::None,
                [id] => Lookup::One(*id),
                _ => Lookup::Many,
            },
        }
    }

    fn by_pattern(&self, cid: &str, direction: Direction) -> Option<Outcome> {
        let caps = self.settings.call_id_pattern.as_ref()?.captures(cid)?;
        let sid = Uuid::parse_str(caps.name("call_sid")?.as_str()).ok()?;
        let parent = caps.name("parent_call_sid").and_then(|m| Uuid::parse_str(m.as_str()).ok());
        Some(self.bind_sids(sid, parent, direction, MatchMethod::CallIdPattern))
    }

    /// A binding from sids read out of a PBX field, enriched by the leg when we know it.
    fn bind_sids(&self, sid: Uuid, parent: Option<Uuid>, direction: Direction, method: MatchMethod) -> Outcome {
        if let Some(id) = self.registry.by_sid(sid)
            && let Some(Outcome::Bound(mut b, legs)) = self.bind_to(id, direction, method)
        {
            b.parent_call_sid = b.parent_call_sid.or(parent);
            return Outcome::Bound(b, legs);
        }
        let binding = LegBinding { call_sid: Some(sid), parent_call_sid: parent, method, ..LegBinding::unmatched() };
        Outcome::Bound(binding, Vec::new())
    }

    /// The binding to one leg. `None` when the leg has no sids yet (the call keeps waiting for
    /// them).
    fn bind_to(&self, id: LegId, direction: Direction, method: MatchMethod) -> Option<Outcome> {
        let leg = self.registry.get(id)?;
        let sid = leg.call_sid?;
        let mut legs = vec![id];
        let binding = if leg.role() == LegRole::A && direction == Direction::Outbound {
            // An extension dialling out: the PBX's trunk leg is the platform's A leg; the B leg
            // is the one the platform dialled out on, when we know it (or later, see
            // `complete_outbound`).
            let child = match self.registry.children(sid) {
                [child] => self.registry.get(*child).map(|c| (*child, c)),
                _ => None,
            };
            if let Some((child_id, _)) = child {
                legs.push(child_id);
            }
            let numbers = child.map(|(_, c)| c).unwrap_or(leg);
            LegBinding {
                call_sid: child.and_then(|(_, c)| c.call_sid),
                parent_call_sid: Some(sid),
                from: numbers.from.clone(),
                to: numbers.to.clone(),
                tags: merged_tags(leg, child.map(|(_, c)| c)),
                method,
            }
        } else {
            LegBinding {
                call_sid: Some(sid),
                parent_call_sid: leg.parent_call_sid,
                from: leg.from.clone(),
                to: leg.to.clone(),
                tags: leg.tags.clone(),
                method,
            }
        };
        Some(Outcome::Bound(binding, legs))
    }

    /// Unbound legs whose numbers and start fit the call.
    fn number_candidates(&self, w: &CallEntry) -> Vec<LegId> {
        let Some(to) = call_leg_to(&w.info) else { return Vec::new() };
        let window = self.number_window(w);
        self.registry
            .by_to(&to)
            .iter()
            .copied()
            .filter(|id| {
                self.registry.get(*id).is_some_and(|leg| {
                    !leg.bound
                        && leg.call_sid.is_some()
                        && role_fits(leg.role(), w.info.direction)
                        && from_fits(leg.from.as_deref(), &w.info)
                        && leg.started.0.abs_diff(w.call_started.0) <= window
                })
            })
            .collect()
    }

    /// Other unbound calls (waiting, or released unmatched) that the leg would fit as well.
    fn number_competitors(&self, key: &CallKey, id: LegId) -> usize {
        let Some(leg) = self.registry.get(id) else { return 0 };
        let Some(to) = &leg.to else { return 0 };
        self.unbound_by_number
            .get(&number_key(to))
            .map(|keys| {
                keys.iter()
                    .filter(|k| *k != key)
                    .filter(|k| {
                        let Some(w) = self.calls.get(k) else { return false };
                        // A call released unmatched competes too: this may be its late leg.
                        !matches!(w.state, CallState::Bound(_))
                            && role_fits(leg.role(), w.info.direction)
                            && from_fits(leg.from.as_deref(), &w.info)
                            && leg.started.0.abs_diff(w.call_started.0) <= self.number_window(w)
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// How far apart a leg's and the call's starts may be: wider by `clock_skew_ms` for a call
    /// reported after the fact, whose start is the PBX's clock.
    fn number_window(&self, w: &CallEntry) -> u64 {
        let cfg = &self.settings.config;
        cfg.number_window_ms.saturating_add(if w.after_the_fact { cfg.clock_skew_ms } else { 0 })
    }

    /// Keeps `unbound_by_number` in step with a waiting call's numbers.
    fn reindex_number(&mut self, key: &CallKey) {
        let Some(entry) = self.calls.get(key) else { return };
        if !matches!(entry.state, CallState::Waiting(_)) {
            return;
        }
        let number = call_leg_to(&entry.info);
        if number == entry.number {
            return;
        }
        self.unindex_number(key);
        if let Some(entry) = self.calls.get_mut(key) {
            entry.number.clone_from(&number);
        }
        if let Some(n) = number {
            self.unbound_by_number.entry(n).or_default().push(key.clone());
        }
    }

    fn unindex_number(&mut self, key: &CallKey) {
        let Some(entry) = self.calls.get_mut(key) else { return };
        if let Some(n) = entry.number.take()
            && let Some(v) = self.unbound_by_number.get_mut(&n)
        {
            v.retain(|k| k != key);
            if v.is_empty() {
                self.unbound_by_number.remove(&n);
            }
        }
    }

    /// A new leg whose Call-ID is that of a call already released unbound: counted, and taken
    /// out of the candidates so that no other call binds to it by number.
    fn check_late_leg(&mut self, id: LegId) {
        let Some(leg) = self.registry.get(id) else { return };
        if leg.bound {
            return;
        }
        let Some(cid) = leg.sip_call_id.as_deref() else { return };
        if self.unmatched_by_call_id.contains_key(&call_id_key(cid)) {
            self.stats.late_legs += 1;
            self.registry.mark_bound(id);
        }
    }

    /// A B leg whose A leg an outbound call is bound to: later signals carry it.
    fn complete_outbound(&mut self, id: LegId) {
        let Some(leg) = self.registry.get(id) else { return };
        let (LegRole::B, Some(parent), Some(sid)) = (leg.role(), leg.parent_call_sid, leg.call_sid) else { return };
        let Some(keys) = self.awaiting_child.remove(&parent) else { return };
        let (from, to) = (leg.from.clone(), leg.to.clone());
        let tags = leg.tags.clone();
        for key in keys {
            if let Some(CallEntry { state: CallState::Bound(b), .. }) = self.calls.get_mut(&key).map(|e| &mut **e) {
                b.call_sid = Some(sid);
                b.from = from.clone().or(b.from.take());
                b.to = to.clone().or(b.to.take());
                for (k, v) in &tags {
                    b.tags.insert(k.clone(), v.clone());
                }
            }
        }
        self.registry.mark_bound(id);
    }

    /// Releases the call that has waited longest (the pending limit was reached).
    fn release_oldest(&mut self, now: UnixMillis) {
        let oldest = self
            .calls
            .iter()
            .filter_map(|(k, e)| match &e.state {
                CallState::Waiting(w) => Some((w.deadline, k.clone())),
                _ => None,
            })
            .min();
        if let Some((_, key)) = oldest {
            self.stats.calls_released_early += 1;
            self.attempt(now, &key, true);
        }
    }

    fn forget(&mut self, key: &CallKey) {
        self.unindex_number(key);
        if let Some(entry) = self.calls.remove(key) {
            // Forgotten early (MAX_ENDED_CALLS): its timer goes too.
            self.timers.remove(&(entry.forget_at, Timer::Forget(key.clone())));
            if let Some(cid) = entry.sip_call_id
                && self.unmatched_by_call_id.get(&cid) == Some(key)
            {
                self.unmatched_by_call_id.remove(&cid);
            }
            if let CallState::Bound(b) = entry.state
                && b.call_sid.is_none()
                && let Some(parent) = b.parent_call_sid
                && let Some(v) = self.awaiting_child.get_mut(&parent)
            {
                v.retain(|k| k != key);
                if v.is_empty() {
                    self.awaiting_child.remove(&parent);
                }
            }
        }
    }
}

enum Lookup {
    None,
    One(LegId),
    Many,
}

/// The number a call's leg would have as its `to`: the DID of an inbound call, the number
/// dialled of an outbound one.
fn call_leg_to(info: &CallInfo) -> Option<String> {
    let n = match info.direction {
        Direction::Outbound => info.dialled_number.as_deref().or(info.external_number.as_deref()),
        _ => info.dialled_number.as_deref(),
    }?;
    let key = number_key(n);
    (!key.is_empty()).then_some(key)
}

/// Whether the leg's caller fits the call. For an outbound call the PBX does not report our
/// own caller id, so only the dialled number is compared.
fn from_fits(leg_from: Option<&str>, info: &CallInfo) -> bool {
    match info.direction {
        Direction::Outbound => true,
        _ => match (leg_from, info.external_number.as_deref()) {
            (Some(a), Some(b)) => number_key(a) == number_key(b),
            _ => false,
        },
    }
}

/// Inbound PBX calls come from B legs, outbound ones go out on (are) A legs.
fn role_fits(role: LegRole, direction: Direction) -> bool {
    matches!(
        (role, direction),
        (LegRole::Unknown, _)
            | (LegRole::B, Direction::Inbound | Direction::Unknown)
            | (LegRole::A, Direction::Outbound | Direction::Unknown)
    )
}

fn merged_tags(a: &crate::leg::Leg, b: Option<&crate::leg::Leg>) -> std::collections::BTreeMap<String, String> {
    let mut tags = a.tags.clone();
    if let Some(b) = b {
        tags.extend(b.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    tags
}
