//! The CDR merge: end-of-call records into the same PBX call the live feed reported, and
//! calls the live feed missed, each once.
//!
//! - A record is matched to a call the live feed saw by 3CX's call counter (the `_<n>` of the
//!   CDR `callid`, taken to be Call Control's `callid`; inferred) and, failing that, by an
//!   extension in common and a start within `match_window_ms`. Only a unique candidate is
//!   taken.
//! - Matched: what the live feed cannot see is added after the fact — a park (the record goes
//!   to a park orbit from an extension that the live feed reported) gives `parked` for that
//!   extension, with the call's own `childSid` (the call's first-sight time is remembered,
//!   and checkpointed so that a restart does not lose it). What the live feed already said is
//!   not repeated. The record's ids go into the facts (`cdrHistoryId`).
//! - Not matched: if the live feed was down (or we were not running) at any time during the
//!   call, the call is reconstructed from the record (`meta.source = "cdr"`, PBX times). If
//!   the live feed was up the whole time, the record is not turned into events — the live feed
//!   saw every monitored extension then, so a record it cannot match is not one of ours, and
//!   inventing a call is worse than missing a fact.
//! - Each record is processed once: its key (`historyid`) is checkpointed and remembered for
//!   `dedup_secs`, across restarts.

use std::collections::BTreeSet;
use std::sync::Arc;

use listener_core::{
    AdapterEvent, AdapterState, CallChange, CallInfo, Direction, DisconnectReason, Facts, PbxCallId, UnixMillis,
};
use serde::{Deserialize, Serialize};

use super::{CDR_SOURCE, Call, Map, Output, Provenance, Timer, Tracker};
use crate::cdr::{CdrError, CdrRecord, CivilTime, DnType, FieldOrder, Termination, ext_number, parse_record};

/// The CDR side of the tracker. See [`crate::config::CdrConfig`] for the user-facing keys.
#[derive(Debug, Clone)]
pub struct CdrSettings {
    /// The field order of a line.
    pub order: FieldOrder,
    /// The zone the PBX writes its times in.
    pub time_zone: jiff::tz::TimeZone,
    /// The monitored extensions: reconstructed calls get events for these only.
    pub extensions: BTreeSet<String>,
    /// Park orbit DNs (to find a park in a record's chain).
    pub park_orbits: BTreeSet<String>,
    /// Largest distance between a record's start and the live call's first sight, in ms.
    pub match_window_ms: u64,
    /// How long an ended call is remembered for its records, in ms.
    pub remember_ms: u64,
    /// How long a processed record's key is remembered, in ms.
    pub dedup_ms: u64,
    /// Reconstruct calls the live feed missed.
    pub backfill: bool,
    /// Records of calls that ended longer ago than this are not reconstructed, in ms.
    pub backfill_max_age_ms: u64,
    /// Most calls and record keys remembered (each); the oldest are forgotten first.
    pub max_remembered: usize,
}

impl CdrSettings {
    /// Defaults around a field order and a zone.
    pub fn new(order: FieldOrder, time_zone: jiff::tz::TimeZone) -> CdrSettings {
        CdrSettings {
            order,
            time_zone,
            extensions: BTreeSet::new(),
            park_orbits: BTreeSet::new(),
            match_window_ms: 120_000,
            remember_ms: 3_600_000,
            dedup_ms: 86_400_000,
            backfill: true,
            backfill_max_age_ms: 86_400_000,
            max_remembered: 100_000,
        }
    }
}

/// What became of one CDR line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CdrOutcome {
    /// No CDR feed is configured.
    Disabled,
    /// The line is not a record in the configured order.
    Malformed(CdrError),
    /// Seen before (same `historyid`).
    Duplicate,
    /// Matched to a call of the live feed; `parked` after-the-fact `parked` signals.
    Merged {
        /// The PBX call.
        call: String,
        /// How many `parked` it added.
        parked: usize,
    },
    /// A call the live feed missed, reconstructed.
    Backfilled {
        /// The PBX call.
        call: String,
        /// Signals emitted.
        signals: usize,
    },
    /// Not matched, and the live feed was up during the whole call: not turned into events.
    Unmatched,
    /// Several live calls fit: not merged (and not reconstructed).
    Ambiguous,
    /// No monitored extension in the record.
    NotMonitored,
    /// Too old to reconstruct.
    TooOld,
}

impl CdrOutcome {
    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            CdrOutcome::Disabled => "disabled",
            CdrOutcome::Malformed(_) => "malformed",
            CdrOutcome::Duplicate => "duplicate",
            CdrOutcome::Merged { .. } => "merged",
            CdrOutcome::Backfilled { .. } => "backfilled",
            CdrOutcome::Unmatched => "unmatched",
            CdrOutcome::Ambiguous => "ambiguous",
            CdrOutcome::NotMonitored => "not-monitored",
            CdrOutcome::TooOld => "too-old",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum CdrTimer {
    /// Forget an ended call.
    Forget(String),
    /// Forget a processed record key.
    Processed(String),
}

/// What we remember of a call the live feed saw (checkpointed as `call/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Remembered {
    /// First sight (the `childSid`'s start time).
    s: u64,
    /// When the live feed saw it end.
    #[serde(default)]
    e: Option<u64>,
    /// Extensions that got events.
    #[serde(default)]
    x: BTreeSet<String>,
    /// Extensions that got `parked`.
    #[serde(default)]
    p: BTreeSet<String>,
    /// The call's facts, for after-the-fact signals.
    #[serde(default)]
    i: CallInfo,
    #[serde(default)]
    t: Option<String>,
}

const CALL_PREFIX: &str = "call/";
const RECORD_PREFIX: &str = "cdr/";

#[derive(Debug)]
pub(super) struct CdrState {
    /// Shared, not cloned, by the handlers that read it while they change the tracker.
    settings: Option<Arc<CdrSettings>>,
    /// Ended calls, by PBX call id.
    ended: Map<String, Remembered>,
    /// The ended calls of each extension, by first sight: `(start ms, call id)`.
    by_extension: Map<String, BTreeSet<(u64, String)>>,
    /// Processed record keys → when.
    processed: Map<String, UnixMillis>,
    /// Parks found in records while their call was still live: (extension, slot, at).
    pending_parks: Map<String, Vec<(String, String, UnixMillis)>>,
    /// When the live feed was not in sync: closed intervals, and an open one.
    gaps: Vec<(UnixMillis, UnixMillis)>,
    open_gap: Option<UnixMillis>,
}

impl CdrState {
    pub(super) fn new(settings: Option<CdrSettings>) -> CdrState {
        CdrState {
            settings: settings.map(Arc::new),
            ended: Map::default(),
            by_extension: Map::default(),
            processed: Map::default(),
            pending_parks: Map::default(),
            gaps: Vec::new(),
            // Until the first snapshot, the live feed has seen nothing.
            open_gap: Some(UnixMillis(0)),
        }
    }

    pub(super) fn live_gap_started(&mut self, now: UnixMillis) {
        if self.open_gap.is_none() {
            self.open_gap = Some(now);
        }
    }

    pub(super) fn live_gap_ended(&mut self, now: UnixMillis) {
        if let Some(start) = self.open_gap.take() {
            self.gaps.push((start, now));
        }
        let keep = self.settings.as_ref().map_or(0, |s| s.backfill_max_age_ms);
        self.gaps.retain(|(_, end)| now.since(*end) <= keep);
    }

    /// Remembers an ended call (replacing what was known of it).
    fn remember(&mut self, key: String, r: Remembered) {
        self.forget(&key);
        for ext in &r.x {
            let entry = (r.s, key.clone());
            match self.by_extension.get_mut(ext) {
                Some(set) => {
                    set.insert(entry);
                }
                None => {
                    self.by_extension.insert(ext.clone(), BTreeSet::from([entry]));
                }
            }
        }
        self.ended.insert(key, r);
    }

    /// Forgets an ended call.
    fn forget(&mut self, key: &str) -> Option<Remembered> {
        let r = self.ended.remove(key)?;
        for ext in &r.x {
            if let Some(set) = self.by_extension.get_mut(ext) {
                set.remove(&(r.s, key.to_owned()));
                if set.is_empty() {
                    self.by_extension.remove(ext);
                }
            }
        }
        Some(r)
    }

    /// Ended calls of `ext` first seen within `window` ms of `start`.
    fn ended_near<'s>(&'s self, ext: &str, start: u64, window: u64) -> impl Iterator<Item = &'s String> + 's {
        let lo = (start.saturating_sub(window), String::new());
        let hi = start.saturating_add(window);
        self.by_extension
            .get(ext)
            .into_iter()
            .flat_map(move |set| set.range(lo.clone()..).take_while(move |(s, _)| *s <= hi).map(|(_, k)| k))
    }

    /// Whether the live feed was out of sync at any time in `[start, end]`.
    fn missed(&self, start: UnixMillis, end: UnixMillis) -> bool {
        self.open_gap.is_some_and(|g| g <= end) || self.gaps.iter().any(|(gs, ge)| *gs <= end && start <= *ge)
    }
}

/// A record's times in Unix ms.
#[derive(Debug, Clone, Copy)]
struct Times {
    start: UnixMillis,
    answered: Option<UnixMillis>,
    end: UnixMillis,
}

fn to_unix(t: CivilTime, tz: &jiff::tz::TimeZone) -> Option<UnixMillis> {
    let dt = jiff::civil::DateTime::new(t.year, t.month, t.day, t.hour, t.minute, t.second, 0).ok()?;
    let ts = tz.to_ambiguous_timestamp(dt).compatible().ok()?;
    u64::try_from(ts.as_millisecond()).ok().map(UnixMillis)
}

fn times(r: &CdrRecord<'_>, tz: &jiff::tz::TimeZone) -> Option<Times> {
    let dur = r.duration_secs.unwrap_or(0) * 1000;
    let start = r.time_start.and_then(|t| to_unix(t, tz));
    let end = r.time_end.and_then(|t| to_unix(t, tz));
    let (start, end) = match (start, end) {
        (Some(s), Some(e)) => (s, e.max(s)),
        (Some(s), None) => (s, s.plus_ms(dur)),
        (None, Some(e)) => (UnixMillis(e.0.saturating_sub(dur)), e),
        (None, None) => return None,
    };
    Some(Times { start, answered: r.time_answered.and_then(|t| to_unix(t, tz)), end })
}

/// The extensions a record names (`from`, `to`, `final`, the chain, the queue's missed agents).
fn record_extensions<'a>(r: &CdrRecord<'a>) -> BTreeSet<&'a str> {
    let mut out = BTreeSet::new();
    for (dn, t) in [(r.from_dn, r.from_type), (r.to_dn, r.to_type), (r.final_dn, r.final_type)] {
        if let (Some(dn), DnType::Extension) = (dn, t) {
            out.insert(ext_number(dn));
        }
    }
    for e in r.chain_entries() {
        if let Some(n) = e.strip_prefix("Ext.") {
            out.insert(n);
        }
    }
    out.extend(r.missed_queue_agents());
    out
}

/// Parks in a record: (the extension that parked, the orbit).
fn record_parks<'a>(r: &CdrRecord<'a>, orbits: &BTreeSet<String>) -> Vec<(&'a str, &'a str)> {
    let ext_of = |dn: Option<&'a str>, t: DnType| match (dn, t) {
        (Some(d), DnType::Extension) => Some(ext_number(d)),
        _ => None,
    };
    let mut out = Vec::new();
    if r.to_type == DnType::Parking
        && let (Some(parker), Some(slot)) = (ext_of(r.from_dn, r.from_type), r.to_dn.or(r.to_no))
    {
        out.push((parker, ext_number(slot)));
    } else if r.final_type == DnType::Parking
        && let (Some(parker), Some(slot)) =
            (ext_of(r.to_dn, r.to_type).or(ext_of(r.from_dn, r.from_type)), r.final_dn.or(r.final_number))
    {
        out.push((parker, ext_number(slot)));
    } else if !orbits.is_empty() {
        let entries: Vec<&str> = r.chain_entries().collect();
        for (i, e) in entries.iter().enumerate() {
            if orbits.contains(ext_number(e))
                && let Some(parker) = entries[..i].iter().rev().find_map(|p| p.strip_prefix("Ext."))
            {
                out.push((parker, ext_number(e)));
            }
        }
    }
    out
}

fn record_facts(r: &CdrRecord<'_>) -> Facts {
    let mut f = Facts::new();
    if let Some(h) = r.history_id {
        f.insert("cdrHistoryId".into(), h.to_owned());
    }
    if let Some(c) = r.call_id {
        f.insert("cdrCallId".into(), c.to_owned());
    }
    f
}

impl Tracker {
    /// Restores what the adapter checkpointed before the last stop (calls the live feed saw,
    /// processed CDR records). Unreadable entries are skipped and counted.
    pub fn restore(&mut self, now: UnixMillis, state: &AdapterState) -> usize {
        let mut unreadable = 0;
        let Some(settings) = self.cdr.settings.clone() else { return 0 };
        for (key, value) in state {
            if let Some(call) = key.strip_prefix(CALL_PREFIX) {
                match serde_json::from_slice::<Remembered>(value) {
                    Ok(r) => {
                        let since = UnixMillis(r.e.unwrap_or(r.s));
                        let forget = since.plus_ms(settings.remember_ms).max(now);
                        self.timers.insert(Timer::Cdr(CdrTimer::Forget(call.to_owned())), forget);
                        self.cdr.remember(call.to_owned(), r);
                    }
                    Err(_) => unreadable += 1,
                }
            } else if let Some(record) = key.strip_prefix(RECORD_PREFIX) {
                let at = std::str::from_utf8(value).ok().and_then(|s| s.parse::<u64>().ok());
                match at {
                    Some(at) => {
                        let forget = UnixMillis(at).plus_ms(settings.dedup_ms).max(now);
                        self.timers.insert(Timer::Cdr(CdrTimer::Processed(record.to_owned())), forget);
                        self.cdr.processed.insert(record.to_owned(), UnixMillis(at));
                    }
                    None => unreadable += 1,
                }
            }
        }
        unreadable
    }

    fn checkpoint(&mut self, key: String, value: Option<Vec<u8>>) {
        self.out.push_back(Output::Event(AdapterEvent::Checkpoint { pbx: self.pbx.clone(), key, value }));
    }

    /// A call got a new extension or a park: remember it across restarts (CDR feed only).
    pub(super) fn checkpoint_call(&mut self, call_key: &str) {
        if self.cdr.settings.is_none() {
            return;
        }
        let Some(call) = self.calls.get(call_key) else { return };
        let r = remembered(call, None);
        self.checkpoint(prefixed(CALL_PREFIX, call_key), Some(to_json(&r)));
    }

    /// The live feed saw a call end: remember it for its records.
    pub(super) fn cdr_call_ended(&mut self, now: UnixMillis, call: Call) {
        let Some(settings) = self.cdr.settings.clone() else { return };
        if call.extensions.is_empty() {
            return;
        }
        let key = call.id.as_str().to_owned();
        let mut r = remembered(&call, Some(now));
        // Parks a record reported while the call was live.
        let parks = self.cdr.pending_parks.remove(&key).unwrap_or_default();
        let mut emitted = false;
        for (ext, slot, at) in parks {
            if r.x.contains(&ext) && r.p.insert(ext.clone()) {
                let facts = Facts::new();
                self.emit_for(
                    at,
                    &call,
                    Some(&ext),
                    CallChange::Parked { slot: Some(slot) },
                    Provenance::Live,
                    facts,
                    CDR_SOURCE,
                );
                emitted = true;
            }
        }
        if emitted {
            self.emit_for(now, &call, None, CallChange::Ended, Provenance::Live, Facts::new(), CDR_SOURCE);
        }
        self.checkpoint(prefixed(CALL_PREFIX, &key), Some(to_json(&r)));
        self.timers.insert(Timer::Cdr(CdrTimer::Forget(key.clone())), now.plus_ms(settings.remember_ms));
        self.cdr.remember(key, r);
        self.bound_memory();
    }

    fn bound_memory(&mut self) {
        let Some(max) = self.cdr.settings.as_ref().map(|s| s.max_remembered) else { return };
        while self.cdr.ended.len() > max {
            let Some(oldest) =
                self.cdr.ended.iter().min_by_key(|(_, r)| (r.e.unwrap_or(r.s), r.s)).map(|(k, _)| k.clone())
            else {
                break;
            };
            self.cdr.forget(&oldest);
            self.timers.remove(&Timer::Cdr(CdrTimer::Forget(oldest.clone())));
            self.checkpoint(prefixed(CALL_PREFIX, &oldest), None);
        }
        while self.cdr.processed.len() > max {
            let Some(oldest) = self.cdr.processed.iter().min_by_key(|(_, at)| **at).map(|(k, _)| k.clone()) else {
                break;
            };
            self.cdr.processed.remove(&oldest);
            self.timers.remove(&Timer::Cdr(CdrTimer::Processed(oldest.clone())));
            self.checkpoint(prefixed(RECORD_PREFIX, &oldest), None);
        }
    }

    pub(super) fn cdr_timeout(&mut self, _now: UnixMillis, timer: CdrTimer) {
        match timer {
            CdrTimer::Forget(call) => {
                if self.cdr.forget(&call).is_some() {
                    self.checkpoint(prefixed(CALL_PREFIX, &call), None);
                }
            }
            CdrTimer::Processed(key) => {
                if self.cdr.processed.remove(&key).is_some() {
                    self.checkpoint(prefixed(RECORD_PREFIX, &key), None);
                }
            }
        }
    }

    /// One CDR line from the socket.
    pub fn handle_cdr_line(&mut self, now: UnixMillis, line: &str) -> CdrOutcome {
        let Some(settings) = self.cdr.settings.clone() else { return CdrOutcome::Disabled };
        let record = match parse_record(line, &settings.order) {
            Ok(r) => r,
            Err(e) => return CdrOutcome::Malformed(e),
        };
        let key = record.dedup_key();
        if self.cdr.processed.contains_key(&key) {
            return CdrOutcome::Duplicate;
        }
        let Some(t) = times(&record, &settings.time_zone) else {
            return CdrOutcome::Malformed(CdrError::NoTime);
        };
        let outcome = self.merge_record(now, &settings, &record, t);
        if !matches!(outcome, CdrOutcome::Ambiguous) {
            self.cdr.processed.insert(key.clone(), now);
            self.checkpoint(prefixed(RECORD_PREFIX, &key), Some(now.0.to_string().into_bytes()));
            self.timers.insert(Timer::Cdr(CdrTimer::Processed(key)), now.plus_ms(settings.dedup_ms));
            self.bound_memory();
        }
        outcome
    }

    fn merge_record(&mut self, now: UnixMillis, s: &CdrSettings, r: &CdrRecord<'_>, t: Times) -> CdrOutcome {
        let exts = record_extensions(r);
        let near = |started: u64| t.start.0.abs_diff(started) <= s.match_window_ms;
        // 1. By 3CX's call counter.
        let mut found: Option<String> = r.call_counter().map(|n| n.to_string()).filter(|k| {
            self.calls.get(k).is_some_and(|c| near(c.started.0)) || self.cdr.ended.get(k).is_some_and(|c| near(c.s))
        });
        // 2. By an extension in common and the time.
        if found.is_none() {
            let mut candidates: BTreeSet<String> = BTreeSet::new();
            for (k, c) in &self.calls {
                if near(c.started.0) && c.extensions.iter().any(|e| exts.contains(e.as_str())) {
                    candidates.insert(k.clone());
                }
            }
            for ext in &exts {
                candidates.extend(self.cdr.ended_near(ext, t.start.0, s.match_window_ms).cloned());
            }
            match candidates.len() {
                0 => {}
                1 => found = candidates.into_iter().next(),
                _ => return CdrOutcome::Ambiguous,
            }
        }
        match found {
            Some(call) => self.merge_into(now, s, r, t, call),
            None => self.backfill(now, s, r, t, &exts),
        }
    }

    fn merge_into(
        &mut self,
        now: UnixMillis,
        s: &CdrSettings,
        r: &CdrRecord<'_>,
        t: Times,
        call_key: String,
    ) -> CdrOutcome {
        let parks = record_parks(r, &s.park_orbits);
        let park_at = if r.to_type == DnType::Parking { t.start } else { t.end };
        let mut parked = 0;
        if let Some(call) = self.calls.get(&call_key) {
            // Still live: the park is told after the call ends (the lifecycle would drop a
            // park of a device that already left a call it still tracks).
            for (ext, slot) in parks {
                if call.extensions.contains(ext) && !call.parked.contains(ext) {
                    self.cdr.pending_parks.entry(call_key.clone()).or_default().push((
                        ext.to_owned(),
                        slot.to_owned(),
                        park_at,
                    ));
                    parked += 1;
                }
            }
            return CdrOutcome::Merged { call: call_key, parked };
        }
        // Most records park nothing: then the remembered call is not copied (nor rebuilt)
        // only to find that out.
        if parks.is_empty() {
            return CdrOutcome::Merged { call: call_key, parked: 0 };
        }
        let Some(mut rem) = self.cdr.ended.get(&call_key).cloned() else {
            return CdrOutcome::Merged { call: call_key, parked: 0 };
        };
        let call = call_from(&call_key, &rem);
        for (ext, slot) in parks {
            if rem.x.contains(ext) && rem.p.insert(ext.to_owned()) {
                let facts = record_facts(r);
                self.emit_for(
                    park_at,
                    &call,
                    Some(ext),
                    CallChange::Parked { slot: Some(slot.to_owned()) },
                    Provenance::Live,
                    facts,
                    CDR_SOURCE,
                );
                parked += 1;
            }
        }
        if parked > 0 {
            // The lifecycle had forgotten the call; it reopened it for the park: close it again.
            self.emit_for(
                now.max(t.end),
                &call,
                None,
                CallChange::Ended,
                Provenance::Live,
                record_facts(r),
                CDR_SOURCE,
            );
            self.checkpoint(prefixed(CALL_PREFIX, &call_key), Some(to_json(&rem)));
            self.cdr.remember(call_key.clone(), rem);
        }
        CdrOutcome::Merged { call: call_key, parked }
    }

    fn backfill(
        &mut self,
        now: UnixMillis,
        s: &CdrSettings,
        r: &CdrRecord<'_>,
        t: Times,
        exts: &BTreeSet<&str>,
    ) -> CdrOutcome {
        if !s.backfill {
            return CdrOutcome::Unmatched;
        }
        let monitored: BTreeSet<&str> =
            exts.iter().copied().filter(|e| s.extensions.is_empty() || s.extensions.contains(*e)).collect();
        if monitored.is_empty() {
            return CdrOutcome::NotMonitored;
        }
        if now.since(t.end) > s.backfill_max_age_ms {
            return CdrOutcome::TooOld;
        }
        if !self.cdr.missed(t.start, t.end) {
            return CdrOutcome::Unmatched;
        }
        let call_key = r
            .call_counter()
            .map(|n| n.to_string())
            .or_else(|| r.history_id.map(|h| format!("h{h}")))
            .unwrap_or_else(|| r.dedup_key());
        // A later segment of a call we reconstructed already: merge, do not start another.
        if self.cdr.ended.contains_key(&call_key) || self.calls.contains_key(&call_key) {
            return self.merge_into(now, s, r, t, call_key);
        }
        let info = record_info(r);
        let mut call = Call {
            id: PbxCallId::new(call_key.clone()),
            started: t.start,
            info,
            trunk: None,
            queue: None,
            legs: BTreeSet::new(),
            answered_at: t.answered,
            extensions: BTreeSet::new(),
            parked: BTreeSet::new(),
            park_orbit: None,
        };
        for (dn, ty) in [(r.from_dn, r.from_type), (r.to_dn, r.to_type)] {
            if ty == DnType::Line && call.trunk.is_none() {
                call.trunk = dn.map(str::to_owned);
            }
        }
        let mut facts = record_facts(r);
        // What `signal` adds to each signal of the call, added once.
        if let Some(trunk) = &call.trunk {
            facts.insert("trunkDn".into(), trunk.clone());
        }
        let mut n = 0;
        let mut emit = |tracker: &mut Tracker, at: UnixMillis, call: &Call, ext: Option<&str>, change: CallChange| {
            tracker.emit_for(at, call, ext, change, Provenance::Live, facts.clone(), CDR_SOURCE);
            n += 1;
        };
        if r.to_type == DnType::Queue || r.to_type == DnType::RingGroup {
            call.queue = r.to_dn.map(str::to_owned);
            call.info.queue = call.queue.as_deref().map(Arc::from);
            emit(self, t.start, &call, None, CallChange::Queued { queue: call.queue.clone() });
        }
        let answered = t.answered;
        let ext_of = |dn: Option<&str>, ty: DnType| match (dn, ty) {
            (Some(d), DnType::Extension) => Some(ext_number(d).to_owned()),
            _ => None,
        };
        let caller_ext = ext_of(r.from_dn, r.from_type);
        let answerer = answered.and(ext_of(r.final_dn, r.final_type).or(ext_of(r.to_dn, r.to_type)));
        let callee = ext_of(r.to_dn, r.to_type);
        let parks = record_parks(r, &s.park_orbits);
        let is_monitored = |e: &str| monitored.contains(e);
        // The caller's extension (outbound or internal): it talks when answered.
        if let (Some(c), Some(a)) = (&caller_ext, answered)
            && is_monitored(c)
        {
            call.extensions.insert(c.clone());
            emit(self, a, &call, Some(c), CallChange::Connected);
        }
        // Agents a queue rang that did not answer.
        let missed: Vec<String> = r.missed_queue_agents().map(str::to_owned).collect();
        for agent in missed.iter().filter(|a| is_monitored(a) && Some(*a) != answerer.as_ref()) {
            call.extensions.insert(agent.clone());
            emit(self, t.start, &call, Some(agent), CallChange::Ringing);
        }
        // The called extension.
        if let Some(c) = callee.as_ref().filter(|c| is_monitored(c) && Some(*c) != caller_ext.as_ref()) {
            call.extensions.insert(c.clone());
            emit(self, t.start, &call, Some(c), CallChange::Ringing);
        }
        if let Some(a) = answerer.as_ref().filter(|a| is_monitored(a) && Some(*a) != caller_ext.as_ref()) {
            if Some(a) != callee.as_ref() {
                call.extensions.insert(a.clone());
                emit(self, t.start, &call, Some(a), CallChange::Ringing);
            }
            if let Some(at) = answered {
                emit(self, at, &call, Some(a), CallChange::Connected);
            }
        }
        for agent in missed.iter().filter(|a| is_monitored(a) && Some(*a) != answerer.as_ref()) {
            let reason =
                if answered.is_some() { DisconnectReason::AnsweredElsewhere } else { unanswered_reason(r.termination) };
            emit(self, answered.unwrap_or(t.end), &call, Some(agent), CallChange::Disconnected { reason });
        }
        if let Some(c) = callee.as_ref().filter(|c| is_monitored(c) && Some(*c) != caller_ext.as_ref())
            && answerer.as_ref() != Some(c)
        {
            let reason =
                if answered.is_some() { DisconnectReason::AnsweredElsewhere } else { unanswered_reason(r.termination) };
            emit(self, answered.unwrap_or(t.end), &call, Some(c), CallChange::Disconnected { reason });
        }
        // Who talked: a park of theirs, else the end of the call.
        let mut talked: Vec<String> = Vec::new();
        if let (Some(c), Some(_)) = (&caller_ext, answered)
            && is_monitored(c)
        {
            talked.push(c.clone());
        }
        if let Some(a) = answerer.as_ref().filter(|a| is_monitored(a) && Some(*a) != caller_ext.as_ref()) {
            talked.push(a.clone());
        }
        for (ext, slot) in &parks {
            if talked.iter().any(|t| t == ext) && call.parked.insert((*ext).to_owned()) {
                emit(self, t.end, &call, Some(ext), CallChange::Parked { slot: Some((*slot).to_owned()) });
            }
        }
        for ext in talked.iter().filter(|e| !call.parked.contains(*e)) {
            emit(self, t.end, &call, Some(ext), CallChange::Disconnected { reason: DisconnectReason::Normal });
        }
        // The last signal takes the facts themselves rather than a copy.
        self.emit_for(t.end, &call, None, CallChange::Ended, Provenance::Live, facts, CDR_SOURCE);
        n += 1;
        let rem = into_remembered(call, Some(t.end));
        self.checkpoint(prefixed(CALL_PREFIX, &call_key), Some(to_json(&rem)));
        self.timers.insert(Timer::Cdr(CdrTimer::Forget(call_key.clone())), now.plus_ms(s.remember_ms));
        self.cdr.remember(call_key.clone(), rem);
        CdrOutcome::Backfilled { call: call_key, signals: n }
    }
}

fn unanswered_reason(t: Termination) -> DisconnectReason {
    match t {
        Termination::BySource | Termination::Cancelled => DisconnectReason::CallerAbandoned,
        Termination::Rejected => DisconnectReason::Rejected,
        _ => DisconnectReason::NoAnswer,
    }
}

/// The call's parties as the record gives them.
fn record_info(r: &CdrRecord<'_>) -> CallInfo {
    let own = |s: Option<&str>| s.map(|v| Arc::<str>::from(ext_number(v)));
    match (r.from_type, r.to_type) {
        (DnType::Line, _) => CallInfo {
            direction: Direction::Inbound,
            external_number: own(r.from_no),
            dialled_number: own(r.dial_no.or(r.to_no)),
            caller_name: own(r.from_dispname),
            ..CallInfo::default()
        },
        (DnType::Extension, DnType::Line) => CallInfo {
            direction: Direction::Outbound,
            external_number: own(r.to_no.or(r.dial_no)),
            dialled_number: own(r.dial_no.or(r.to_no)),
            ..CallInfo::default()
        },
        (DnType::Extension, _) => CallInfo {
            direction: Direction::Internal,
            external_number: own(r.from_dn.or(r.from_no)),
            dialled_number: own(r.to_dn.or(r.dial_no)),
            caller_name: own(r.from_dispname),
            ..CallInfo::default()
        },
        _ => CallInfo {
            external_number: own(r.from_no),
            dialled_number: own(r.dial_no.or(r.to_no)),
            ..CallInfo::default()
        },
    }
}

/// `prefix` then `key`: a checkpoint key (what `format!` makes, without the formatter).
fn prefixed(prefix: &str, key: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + key.len());
    out.push_str(prefix);
    out.push_str(key);
    out
}

/// A checkpoint value (written into a buffer sized for a typical call, not grown from empty).
fn to_json(r: &Remembered) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    match serde_json::to_writer(&mut out, r) {
        Ok(()) => out,
        Err(_) => Vec::new(),
    }
}

/// [`remembered`] of a call that is not needed any more (its sets are moved, not copied).
fn into_remembered(call: Call, ended: Option<UnixMillis>) -> Remembered {
    Remembered {
        s: call.started.0,
        e: ended.map(|e| e.0),
        x: call.extensions,
        p: call.parked,
        i: call.info,
        t: call.trunk,
    }
}

fn remembered(call: &Call, ended: Option<UnixMillis>) -> Remembered {
    Remembered {
        s: call.started.0,
        e: ended.map(|e| e.0),
        x: call.extensions.clone(),
        p: call.parked.clone(),
        i: call.info.clone(),
        t: call.trunk.clone(),
    }
}

fn call_from(key: &str, r: &Remembered) -> Call {
    Call {
        id: PbxCallId::new(key.to_owned()),
        started: UnixMillis(r.s),
        info: r.i.clone(),
        trunk: r.t.clone(),
        queue: None,
        legs: BTreeSet::new(),
        answered_at: None,
        extensions: r.x.clone(),
        parked: r.p.clone(),
        park_orbit: None,
    }
}
