//! The adapter's sans-IO core: SMDR lines and Delta2 lines in, [`AdapterEvent`]s out.
//!
//! str0m style: feed one input with a `handle_*` method, passing the time; drain
//! [`Tracker::poll_output`] until it returns [`Output::Timeout`]; call
//! [`Tracker::handle_timeout`] when that time comes. No socket, task, clock or RNG inside.
//!
//! ```
//! use adapter_avaya_r9::clock::PbxClock;
//! use adapter_avaya_r9::tracker::{Output, Tracker, TrackerSettings};
//! use listener_core::{PbxId, PbxType, UnixMillis};
//!
//! let pbx = PbxId::new("branch", PbxType::new("avaya-r9"));
//! let mut tracker = Tracker::new(pbx, PbxClock::utc(), TrackerSettings::default());
//! let line = b"2008/06/28 09:28:41,00:00:00,9,8004206,I,4324,4324,,0,1000014155,0,E4324,Joe Bloggs,T9161,LINE 5.1,0,0";
//! tracker.handle_smdr_line(UnixMillis(1_214_645_400_000), line);
//! let mut events = 0;
//! while let Output::Event(_) = tracker.poll_output() {
//!     events += 1;
//! }
//! // 4324 rang and the caller gave up; the call ended; the call is remembered (a checkpoint).
//! assert_eq!(events, 4);
//! ```
//!
//! **SMDR.** Segments are grouped by Call ID + Call Start until `Continuation = 0`, then
//! [`crate::reconstruct`] rebuilds the call and its signals go out at once, in time order,
//! with the times SMDR implies (in the PBX's time zone, [`crate::clock`]). A call whose last
//! segment does not come within `segment_timeout_ms` of its last one is finished as it is,
//! flagged `smdrIncomplete`. Duplicates (the IP Office replays up to 3000 buffered records
//! after an outage) are dropped: identical segments of a call being collected, and every
//! record of a call already emitted (the last `remember_calls` calls).
//!
//! **Delta2.** Each `CALL: S` is diffed against the call's devices: new ringing, connected,
//! held devices; devices that left (answered elsewhere, transferred, parked, hung up); `D`
//! ends the call; `A` swaps its ends (an unpark follows). The relay's `RELAY: COMMS` lines and
//! our own link to the relay mark a *gap*: every call open then may have missed changes.
//!
//! **Both feeds.** Delta2 drives real time; SMDR only completes what Delta2 missed: a call
//! Delta2 never saw is emitted whole from SMDR; a call Delta2 ended is not emitted again; a
//! call Delta2 saw but lost in a gap gets from SMDR what its devices did after their last
//! known state, and its end (`completedBy = "smdr"`). When SMDR's last record comes while
//! Delta2 still shows the call live and healthy, it waits `delta2_grace_ms` for Delta2's `D`.
//!
//! **Restarts.** What must survive a restart goes out as [`AdapterEvent::Checkpoint`]
//! (committed by the daemon after the signals sent before it) and comes back through
//! [`Tracker::restore`]: the calls emitted (`smdr-done/…`), the segments of calls being
//! collected (`smdr-pending/…`), and Delta2's calls (`delta2/…`). Keys are bounded by
//! `remember_calls` and deleted when they can no longer matter.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use listener_core::{
    AdapterEvent, AdapterState, CallChange, CallInfo, CallSignal, Direction, DisconnectReason, Extension, Facts,
    PbxCallId, PbxId, PbxSignal, SignalBody, UnixMillis,
};

use crate::clock::{PbxClock, Reading};
use crate::delta2::{self, Delta2Error, Delta2Line, EndDevice, Ids, Status, cause, state};
use crate::reconstruct::{Segment, Step, Timeline, VOICEMAIL, reconstruct};
use crate::smdr::{self, CallStart, SmdrError};

/// `meta.source` of signals from SMDR.
pub const SMDR_SOURCE: &str = "smdr";
/// `meta.source` of signals from Delta2.
pub const DELTA2_SOURCE: &str = "delta2";

/// Tracker tuning. See [`crate::config::Config`] for the user-facing keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerSettings {
    /// A call whose next segment has not come this long after its last one is finished.
    pub segment_timeout_ms: u64,
    /// How many emitted calls are remembered to drop replays (per feed).
    pub remember_calls: usize,
    /// The most calls whose segments are being collected; past it the oldest is finished.
    pub max_pending_calls: usize,
    /// The most segments one call may have; later ones are dropped (counted).
    pub max_segments_per_call: usize,
    /// Whether Delta2 is configured (SMDR then only completes what Delta2 missed).
    pub delta2: bool,
    /// Whether SMDR is configured (a Delta2 gap is then left for SMDR to complete).
    pub smdr: bool,
    /// How long SMDR's last record of a call Delta2 still shows live waits for Delta2's end.
    pub delta2_grace_ms: u64,
}

impl Default for TrackerSettings {
    fn default() -> Self {
        TrackerSettings {
            segment_timeout_ms: 7_200_000,
            remember_calls: 10_000,
            max_pending_calls: 10_000,
            max_segments_per_call: 128,
            delta2: false,
            smdr: true,
            delta2_grace_ms: 5_000,
        }
    }
}

/// What the tracker has for its driver.
#[allow(clippy::large_enum_variant)] // Moved out at once; boxing would cost an allocation per event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An event for the pipeline.
    Event(AdapterEvent),
    /// Nothing more for now; call [`Tracker::handle_timeout`] at this time (if any).
    Timeout(Option<UnixMillis>),
}

/// What became of an SMDR line, for the driver's counters and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmdrHandled {
    /// A new segment (collected, or completing its call).
    Segment,
    /// A record seen before (a replay): dropped.
    Duplicate,
    /// A record that cannot be read: skipped.
    Malformed(SmdrError),
    /// A call with more than `max_segments_per_call` segments: this one was dropped.
    TooManySegments,
}

/// What became of a Delta2 relay line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta2Handled {
    /// Used.
    Used,
    /// About nothing we track (a `D` of an unknown call); ignored.
    Ignored,
    /// A line that cannot be read: skipped.
    Malformed(Delta2Error),
}

/// An SMDR call: Call ID + Call Start (Call IDs restart when the PBX restarts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SmdrKey {
    call_id: u64,
    start: CallStart,
}

impl fmt::Display for SmdrKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.with_prefix(""))
    }
}

impl SmdrKey {
    /// `prefix` + `<call id>@YYYY/MM/DD HH:MM[:SS]`: a checkpoint key.
    fn with_prefix(&self, prefix: &str) -> String {
        let (text, len) = self.text();
        // Only ASCII digits and separators were written: the fallback is never taken.
        join(prefix, std::str::from_utf8(&text[..len]).unwrap_or_default())
    }

    /// `<call id>@YYYY/MM/DD HH:MM[:SS]` in a buffer: the text of its checkpoint keys, and its
    /// length.
    fn text(&self) -> ([u8; 40], usize) {
        // Written as bytes: keys are made for every call, and `format!` (or `String::push` per
        // character) costs several times more.
        let mut out = [0; 40];
        let mut digits = [0; 20];
        let digits = decimal_digits(self.call_id, &mut digits);
        let id = digits.len();
        out[..id].copy_from_slice(digits);
        // Call Start into a fixed pattern: the parser bounds the year to four digits (1970
        // on) and the others to two.
        let st = &self.start;
        let t = &mut out[id..id + 20];
        t.copy_from_slice(b"@0000/00/00 00:00:00");
        put_digits(&mut t[1..5], st.year as u64);
        put_digits(&mut t[6..8], st.month as u64);
        put_digits(&mut t[9..11], st.day as u64);
        put_digits(&mut t[12..14], st.hour as u64);
        put_digits(&mut t[15..17], st.minute as u64);
        put_digits(&mut t[18..20], st.second as u64);
        let len = if st.has_seconds { 20 } else { 17 };
        (out, id + len)
    }

    fn parse(s: &str) -> Option<SmdrKey> {
        let (id, start) = s.split_once('@')?;
        Some(SmdrKey { call_id: id.parse().ok()?, start: smdr::parse_call_start(start)? })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    SegmentTimeout(SmdrKey),
    Delta2Grace(SmdrKey),
    /// A Delta2 call lost in a gap that nothing completed: closed as unknown.
    Delta2Lost(String),
}

/// A call whose segments are all here (or whose time is up). A call of one segment borrows
/// it from its line; one kept waiting for Delta2 owns its segments (`Finished<'static>`).
#[derive(Debug)]
struct Finished<'a> {
    segments: Vec<Segment<'a>>,
    arrival: UnixMillis,
    /// Call Start as an instant, read when the first segment arrived.
    start: (UnixMillis, Reading),
    complete: bool,
    /// Its segments were checkpointed (more than one): the checkpoint must be deleted.
    checkpointed: bool,
}

impl Finished<'_> {
    fn into_owned(self) -> Finished<'static> {
        Finished { segments: self.segments.into_iter().map(Segment::into_owned).collect(), ..self }
    }
}

#[derive(Debug)]
struct Pending {
    segments: Vec<Segment<'static>>,
    start: (UnixMillis, Reading),
    /// The lines, as read, to recognise a replayed segment and to checkpoint.
    lines: Vec<String>,
    first_arrival: UnixMillis,
    deadline: UnixMillis,
}

/// Writes the last `out.len()` decimal digits of `n` into `out`, zero-padded.
fn put_digits(out: &mut [u8], mut n: u64) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// `a` + `b` in a string of their exact length.
fn join(a: &str, b: &str) -> String {
    let mut s = String::with_capacity(a.len() + b.len());
    s.push_str(a);
    s.push_str(b);
    s
}

/// `n` in decimal. `to_string` goes through `fmt`, several times slower, and this is done for
/// every call.
fn decimal(n: u64) -> String {
    let mut s = String::with_capacity(20);
    push_decimal(&mut s, n);
    s
}

/// Appends `n` in decimal (see [`decimal`]).
fn push_decimal(out: &mut String, n: u64) {
    // Only ASCII digits were written: the fallback is never taken.
    out.push_str(std::str::from_utf8(decimal_digits(n, &mut [0; 20])).unwrap_or_default());
}

/// `n`'s decimal digits, written at the end of `buf`.
fn decimal_digits(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    // Two digits a step, from a table: half the divisions of one digit a step.
    const PAIRS: [u8; 200] = {
        let mut t = [0; 200];
        let mut i = 0;
        while i < 100 {
            t[2 * i] = b'0' + (i / 10) as u8;
            t[2 * i + 1] = b'0' + (i % 10) as u8;
            i += 1;
        }
        t
    };
    let mut i = buf.len();
    while n >= 100 {
        let p = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[p..p + 2]);
    }
    if n >= 10 {
        let p = n as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[p..p + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + n as u8;
    }
    &buf[i..]
}

/// A hasher for the tracker's own keys (Call IDs and times from the PBX, in maps bounded by
/// the configuration): a multiply-rotate mix, several times cheaper than SipHash, which
/// showed in profiles. Not for keys an attacker chooses freely.
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_i8(&mut self, n: i8) {
        self.write_u64(n as u64);
    }

    fn write_i16(&mut self, n: i16) {
        self.write_u64(n as u64);
    }
}

type KeyMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// A bounded set remembering insertion order; the oldest entry makes room.
#[derive(Debug)]
struct Remembered<K> {
    seq: KeyMap<K, u64>,
    order: VecDeque<(u64, K)>,
    next: u64,
    cap: usize,
}

impl<K: Clone + Eq + std::hash::Hash> Remembered<K> {
    fn new(cap: usize) -> Remembered<K> {
        Remembered { seq: KeyMap::default(), order: VecDeque::new(), next: 0, cap: cap.max(1) }
    }

    fn contains(&self, k: &K) -> bool {
        self.seq.contains_key(k)
    }

    /// Inserts `k`; returns its sequence number. The set may then be over its bound: take
    /// [`Remembered::evict`] until it returns `None`.
    fn insert(&mut self, k: K) -> u64 {
        let seq = self.next;
        self.next += 1;
        self.seq.insert(k.clone(), seq);
        self.order.push_back((seq, k));
        seq
    }

    /// Inserts `k`, forgetting what that evicts.
    fn insert_forgetting(&mut self, k: K) {
        self.insert(k);
        while self.evict().is_some() {}
    }

    /// Removes and returns the oldest entry while the set is over its bound (one after an
    /// insert; more after restoring more entries than the bound).
    fn evict(&mut self) -> Option<K> {
        while self.seq.len() > self.cap {
            let (s, old) = self.order.pop_front()?;
            if self.seq.get(&old) == Some(&s) {
                self.seq.remove(&old);
                return Some(old);
            }
        }
        None
    }

    fn restore(&mut self, mut entries: Vec<(u64, K)>) {
        entries.sort_by_key(|(s, _)| *s);
        for (s, k) in entries {
            self.next = self.next.max(s + 1);
            self.seq.insert(k.clone(), s);
            self.order.push_back((s, k));
        }
    }
}

/// A device's state in a call as Delta2 last showed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DevState {
    Ringing,
    Connected,
    Held,
    Gone,
}

impl DevState {
    fn open(self) -> bool {
        self != DevState::Gone
    }

    fn as_str(self) -> &'static str {
        match self {
            DevState::Ringing => "ringing",
            DevState::Connected => "connected",
            DevState::Held => "held",
            DevState::Gone => "gone",
        }
    }

    fn parse(s: &str) -> Option<DevState> {
        Some(match s {
            "ringing" => DevState::Ringing,
            "connected" => DevState::Connected,
            "held" => DevState::Held,
            "gone" => DevState::Gone,
            _ => return None,
        })
    }
}

/// A call as Delta2 shows it.
#[derive(Debug)]
struct D2Call {
    id: PbxCallId,
    started: UnixMillis,
    info: CallInfo,
    a_id: String,
    b_id: String,
    devices: BTreeMap<String, DevState>,
    answered: bool,
    /// When Delta2 may have started missing changes of this call.
    gap: Option<UnixMillis>,
    /// The A end is parked (by the B end that left).
    parked: bool,
    park_slot: Option<String>,
    unparking: bool,
    queued: bool,
    /// Re-sent (or changed) since the relay link last came up.
    seen_since_connect: bool,
}

/// The adapter's core. See the module documentation.
#[derive(Debug)]
pub struct Tracker {
    pbx: PbxId,
    clock: PbxClock,
    settings: TrackerSettings,
    pending: KeyMap<SmdrKey, Pending>,
    smdr_done: Remembered<SmdrKey>,
    /// SMDR calls complete but waiting for Delta2's end of the same call.
    awaiting_delta2: KeyMap<SmdrKey, Finished<'static>>,
    d2_calls: KeyMap<String, D2Call>,
    /// Delta2 calls that ended (by their CallID): SMDR never emits them again.
    d2_done: Remembered<String>,
    /// Call IDs SMDR emitted: Delta2 lines about them that come late are dropped.
    smdr_emitted: Remembered<String>,
    /// Our link to the relay is up and the relay reports its DevLink link operational.
    delta2_up: bool,
    relay_ok: bool,
    timers: BTreeSet<(UnixMillis, Timer)>,
    out: VecDeque<AdapterEvent>,
}

const SMDR_DONE: &str = "smdr-done/";
const SMDR_PENDING: &str = "smdr-pending/";
const DELTA2: &str = "delta2/";

impl Tracker {
    /// A tracker for `pbx` whose SMDR times are local to `clock`.
    pub fn new(pbx: PbxId, clock: PbxClock, settings: TrackerSettings) -> Tracker {
        Tracker {
            pbx,
            clock,
            settings,
            pending: KeyMap::default(),
            smdr_done: Remembered::new(settings.remember_calls),
            awaiting_delta2: KeyMap::default(),
            d2_calls: KeyMap::default(),
            d2_done: Remembered::new(settings.remember_calls),
            smdr_emitted: Remembered::new(settings.remember_calls),
            delta2_up: false,
            relay_ok: true,
            timers: BTreeSet::new(),
            out: VecDeque::new(),
        }
    }

    /// Takes back what this adapter checkpointed before a restart. Unreadable entries are
    /// skipped (and deleted by checkpoints); returns how many were restored.
    pub fn restore(&mut self, now: UnixMillis, state: &AdapterState) -> usize {
        let mut done = Vec::new();
        let mut d2_done = Vec::new();
        let mut restored = 0;
        for (key, value) in state {
            let text = String::from_utf8_lossy(value);
            if let Some(k) = key.strip_prefix(SMDR_DONE) {
                if let (Some(k), Ok(seq)) = (SmdrKey::parse(k), text.parse::<u64>()) {
                    done.push((seq, k));
                    restored += 1;
                    continue;
                }
            } else if let Some(k) = key.strip_prefix(SMDR_PENDING) {
                if let Some(k) = SmdrKey::parse(k)
                    && self.restore_pending(now, k, &text)
                {
                    restored += 1;
                    continue;
                }
            } else if let Some(id) = key.strip_prefix(DELTA2)
                && let Some(entry) = self.restore_delta2(now, id, &text)
            {
                if let Some(seq) = entry {
                    d2_done.push((seq, id.to_owned()));
                }
                restored += 1;
                continue;
            }
            self.checkpoint(key.clone(), None);
        }
        for (_, k) in &done {
            self.smdr_emitted.insert_forgetting(decimal(k.call_id));
        }
        self.smdr_done.restore(done);
        self.d2_done.restore(d2_done);
        restored
    }

    fn restore_pending(&mut self, now: UnixMillis, key: SmdrKey, text: &str) -> bool {
        let mut lines = text.lines();
        let Some(last) = lines.next().and_then(|l| l.parse::<u64>().ok()) else { return false };
        let Some(start) = self.clock.instant(&key.start, UnixMillis(last)) else { return false };
        let mut pending = Pending {
            start,
            segments: Vec::new(),
            lines: Vec::new(),
            first_arrival: UnixMillis(last),
            deadline: UnixMillis(last).plus_ms(self.settings.segment_timeout_ms).max(now),
        };
        for line in lines {
            let Ok(record) = smdr::parse(line) else { return false };
            pending.segments.push(Segment::from(&record));
            pending.lines.push(line.to_owned());
        }
        if pending.segments.is_empty() {
            return false;
        }
        self.timers.insert((pending.deadline, Timer::SegmentTimeout(key)));
        self.pending.insert(key, pending);
        true
    }

    /// `Some(Some(seq))` for a finished call, `Some(None)` for a call that was open (it is
    /// now in a gap: the restart), `None` when unreadable.
    fn restore_delta2(&mut self, now: UnixMillis, id: &str, text: &str) -> Option<Option<u64>> {
        let mut parts = text.split(';');
        let head = parts.next()?;
        if let Some(seq) = head.strip_prefix("done:") {
            return seq.parse().ok().map(Some);
        }
        let started = head.strip_prefix("open:")?.parse().ok()?;
        let lost_at = now.plus_ms(self.settings.segment_timeout_ms);
        self.timers.insert((lost_at, Timer::Delta2Lost(id.to_owned())));
        let mut devices = BTreeMap::new();
        for p in parts.filter(|p| !p.is_empty()) {
            let (ext, s) = p.split_once('=')?;
            devices.insert(ext.to_owned(), DevState::parse(s)?);
        }
        self.d2_calls.insert(
            id.to_owned(),
            D2Call {
                id: PbxCallId::new(id.to_owned()),
                started: UnixMillis(started),
                info: CallInfo::default(),
                a_id: String::new(),
                b_id: String::new(),
                devices,
                answered: false,
                gap: Some(now),
                parked: false,
                park_slot: None,
                unparking: false,
                queued: false,
                seen_since_connect: false,
            },
        );
        Some(None)
    }

    /// Calls whose segments are being collected.
    pub fn pending_calls(&self) -> usize {
        self.pending.len()
    }

    /// Calls Delta2 shows live.
    pub fn delta2_calls(&self) -> usize {
        self.d2_calls.len()
    }

    /// The next output; [`Output::Timeout`] when there is nothing more for now.
    pub fn poll_output(&mut self) -> Output {
        match self.out.pop_front() {
            Some(e) => Output::Event(e),
            None => Output::Timeout(self.timers.first().map(|(t, _)| *t)),
        }
    }

    /// Fires the timers due at `now`.
    pub fn handle_timeout(&mut self, now: UnixMillis) {
        while let Some((t, timer)) = self.timers.first().cloned() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::SegmentTimeout(key) => {
                    if let Some(p) = self.pending.remove(&key) {
                        self.finish_smdr(
                            key,
                            Finished {
                                segments: p.segments,
                                arrival: now,
                                start: p.start,
                                complete: false,
                                checkpointed: true,
                            },
                        );
                    }
                }
                Timer::Delta2Grace(key) => {
                    if let Some(f) = self.awaiting_delta2.remove(&key) {
                        self.emit_smdr(&key, f);
                    }
                }
                Timer::Delta2Lost(key) => self.d2_lost(now, &key),
            }
        }
    }

    // ---------------------------------------------------------------- SMDR

    /// Feeds one SMDR line (terminator removed) that arrived at `now`.
    pub fn handle_smdr_line(&mut self, now: UnixMillis, line: &[u8]) -> SmdrHandled {
        let text = smdr::line_text(line);
        let record = match smdr::parse(&text) {
            Ok(r) => r,
            Err(e) => return SmdrHandled::Malformed(e),
        };
        // `18:00` and `18:00:00` are the same start: the key always has seconds.
        let key =
            SmdrKey { call_id: record.call_id_number(), start: CallStart { has_seconds: true, ..record.call_start } };
        let Some(start) = self.clock.instant(&key.start, now) else {
            let value = key.start.to_string();
            return SmdrHandled::Malformed(SmdrError::BadField { field: 1, name: "call-start", value });
        };
        if self.smdr_done.contains(&key) || self.awaiting_delta2.contains_key(&key) {
            return SmdrHandled::Duplicate;
        }
        let segment = Segment::of(&record);
        if !segment.continuation && !self.pending.contains_key(&key) {
            // A call of one segment (most calls): no collecting, no checkpoint, no copy.
            let f = Finished { segments: vec![segment], arrival: now, start, complete: true, checkpointed: false };
            self.finish_smdr(key, f);
            return SmdrHandled::Segment;
        }
        if let Some(p) = self.pending.get(&key) {
            if p.lines.iter().any(|l| *l == *text) {
                return SmdrHandled::Duplicate;
            }
            if p.segments.len() >= self.settings.max_segments_per_call {
                return SmdrHandled::TooManySegments;
            }
        }
        if !segment.continuation {
            // The call's last segment: the call is rebuilt with this one borrowed from its line.
            if let Some(p) = self.pending.remove(&key) {
                self.timers.remove(&(p.deadline, Timer::SegmentTimeout(key)));
                let mut segments: Vec<Segment<'_>> = p.segments;
                segments.push(segment);
                let f = Finished { segments, arrival: now, start: p.start, complete: true, checkpointed: true };
                self.finish_smdr(key, f);
            }
            return SmdrHandled::Segment;
        }
        // More segments follow: this one and its line are kept until they come.
        let segment = segment.into_owned();
        drop(record);
        let deadline = now.plus_ms(self.settings.segment_timeout_ms);
        let pending = match self.pending.get_mut(&key) {
            Some(p) => {
                self.timers.remove(&(p.deadline, Timer::SegmentTimeout(key)));
                p
            }
            None => {
                if self.pending.len() >= self.settings.max_pending_calls {
                    self.finish_oldest_pending(now);
                }
                self.pending.entry(key).or_insert(Pending {
                    start,
                    segments: Vec::new(),
                    lines: Vec::new(),
                    first_arrival: now,
                    deadline,
                })
            }
        };
        pending.segments.push(segment);
        pending.lines.push(text.into_owned());
        pending.deadline = deadline;
        let value = pending_value(now, &pending.lines);
        self.timers.insert((deadline, Timer::SegmentTimeout(key)));
        self.checkpoint(key.with_prefix(SMDR_PENDING), Some(value));
        SmdrHandled::Segment
    }

    fn finish_oldest_pending(&mut self, now: UnixMillis) {
        let oldest = self.pending.iter().min_by_key(|(k, p)| (p.first_arrival, *(*k))).map(|(k, _)| *k);
        if let Some(key) = oldest
            && let Some(p) = self.pending.remove(&key)
        {
            self.timers.remove(&(p.deadline, Timer::SegmentTimeout(key)));
            self.finish_smdr(
                key,
                Finished { segments: p.segments, arrival: now, start: p.start, complete: false, checkpointed: true },
            );
        }
    }

    /// A call's segments are all here (`complete`) or its time is up.
    fn finish_smdr(&mut self, key: SmdrKey, f: Finished<'_>) {
        if self.settings.delta2 {
            let id = decimal(key.call_id);
            if self.d2_done.contains(&id) {
                // Delta2 showed the whole call: nothing to add.
                self.remember_smdr(&key, f.checkpointed);
                return;
            }
            let healthy = self.delta2_up && self.relay_ok;
            let waits = match self.d2_calls.get(&id) {
                // Delta2 shows it live and healthy: its `D` is on the way.
                Some(call) => call.gap.is_none(),
                // Delta2 is healthy but has not shown it (yet): its lines may lag SMDR's.
                None => healthy,
            };
            if waits && f.complete {
                let at = f.arrival.plus_ms(self.settings.delta2_grace_ms);
                self.timers.insert((at, Timer::Delta2Grace(key)));
                self.awaiting_delta2.insert(key, f.into_owned());
                return;
            }
        }
        self.emit_smdr(&key, f);
    }

    fn emit_smdr(&mut self, key: &SmdrKey, f: Finished<'_>) {
        let Finished { segments, start: (start, reading), complete, checkpointed, .. } = f;
        {
            let timeline = reconstruct(&segments, start, complete);
            let mut base = Facts::new();
            if !complete {
                base.insert("smdrIncomplete".into(), "true".into());
            }
            if segments.first().is_some_and(|s| !s.call_start.has_seconds) {
                base.insert("smdrStartPrecision".into(), "minute".into());
            }
            match reading {
                Reading::Unique => {}
                Reading::Gap => {
                    base.insert("smdrLocalTime".into(), "dst-gap".into());
                }
                Reading::FoldEarlier | Reading::FoldLater => {
                    base.insert("smdrLocalTime".into(), "dst-repeated".into());
                }
            }
            let id = decimal(key.call_id);
            if self.d2_done.contains(&id) {
                // Delta2 showed the whole call meanwhile.
            } else if let Some(d2) = self.d2_calls.remove(&id) {
                self.complete_delta2_call(&id, d2, timeline, base);
            } else if self.settings.delta2 {
                self.emit_timeline(PbxCallId::new(id.clone()), start, timeline, base);
                self.smdr_emitted.insert_forgetting(id);
            } else {
                self.emit_timeline(PbxCallId::new(id), start, timeline, base);
            }
        }
        self.remember_smdr(key, checkpointed);
    }

    fn remember_smdr(&mut self, key: &SmdrKey, checkpointed: bool) {
        let seq = self.smdr_done.insert(*key);
        // The key's text once for both checkpoints.
        let (text, len) = key.text();
        // Only ASCII digits and separators were written: the fallback is never taken.
        let text = std::str::from_utf8(&text[..len]).unwrap_or_default();
        if checkpointed {
            self.checkpoint(join(SMDR_PENDING, text), None);
        }
        self.checkpoint(join(SMDR_DONE, text), Some(decimal_digits(seq, &mut [0; 20]).to_vec()));
        while let Some(old) = self.smdr_done.evict() {
            self.checkpoint(old.with_prefix(SMDR_DONE), None);
        }
    }

    /// Every step's signal, then the call's end (which takes the id, the call's parties and
    /// the base facts: the steps' signals have copies).
    fn emit_timeline(&mut self, id: PbxCallId, started: UnixMillis, timeline: Timeline<'_>, base: Facts) {
        let Timeline { info, steps, ended_at } = timeline;
        for step in steps {
            let facts = step_facts(&base, &step);
            let extension = Some(Extension(step.extension.to_owned()));
            self.signal(SMDR_SOURCE, step.at, id.clone(), started, info.clone(), extension, step.change, facts);
        }
        self.signal(SMDR_SOURCE, ended_at, id, started, info, None, CallChange::Ended, base);
    }

    /// SMDR completes a call Delta2 saw but lost: each device goes on from its last Delta2
    /// state; devices Delta2 closed are left alone.
    fn complete_delta2_call(&mut self, call_id: &str, d2: D2Call, timeline: Timeline<'_>, mut base: Facts) {
        base.insert("completedBy".into(), SMDR_SOURCE.into());
        let mut resumed: BTreeSet<&str> = BTreeSet::new();
        let Timeline { info, steps, ended_at } = timeline;
        for step in steps {
            let ext = step.extension;
            match d2.devices.get(ext) {
                None => {}
                Some(DevState::Gone) => continue,
                Some(known) if !resumed.contains(ext) => {
                    // Skip what Delta2 already showed, up to its last state.
                    if step_state(&step.change) == Some(*known) {
                        resumed.insert(ext);
                    }
                    if !matches!(
                        step.change,
                        CallChange::Disconnected { .. } | CallChange::Transferred { .. } | CallChange::Parked { .. }
                    ) {
                        continue;
                    }
                    resumed.insert(ext);
                }
                Some(_) => {}
            }
            let facts = step_facts(&base, &step);
            let extension = Some(Extension(ext.to_owned()));
            self.signal(SMDR_SOURCE, step.at, d2.id.clone(), d2.started, info.clone(), extension, step.change, facts);
        }
        self.signal(SMDR_SOURCE, ended_at, d2.id, d2.started, info, None, CallChange::Ended, base);
        self.remember_delta2_done(call_id);
    }

    // ---------------------------------------------------------------- Delta2

    /// Our link to the relay came up (`true`) or went down.
    pub fn handle_delta2_link(&mut self, now: UnixMillis, up: bool) {
        self.delta2_up = up;
        if up {
            for call in self.d2_calls.values_mut() {
                call.seen_since_connect = false;
            }
        } else {
            self.delta2_gap(now);
        }
    }

    fn delta2_gap(&mut self, now: UnixMillis) {
        let mut changed = Vec::new();
        for (id, call) in &mut self.d2_calls {
            if call.gap.is_none() {
                call.gap = Some(now);
                changed.push(id.clone());
            }
        }
        changed.sort();
        // If neither Delta2 (its `D`) nor SMDR completes the call by then, it is closed.
        let lost_at = now.plus_ms(self.settings.segment_timeout_ms);
        for id in changed {
            self.timers.insert((lost_at, Timer::Delta2Lost(id.clone())));
            self.checkpoint_delta2(&id);
        }
    }

    /// A Delta2 call lost in a gap that nothing completed within `segment_timeout_ms` (nor
    /// when the tracker is full): its open devices are closed with reason `unknown`
    /// (`delta2Lost`), so every `connected` still ends.
    fn d2_lost(&mut self, now: UnixMillis, key: &str) {
        if self.d2_calls.get(key).is_none_or(|c| c.gap.is_none()) {
            return;
        }
        let Some(call) = self.d2_calls.remove(key) else { return };
        let mut facts = Facts::new();
        facts.insert("delta2Lost".into(), "true".into());
        for (ext, st) in &call.devices {
            if st.open() {
                let change = CallChange::Disconnected { reason: DisconnectReason::Unknown };
                let ext = Some(Extension(ext.clone()));
                let (id, info) = (call.id.clone(), call.info.clone());
                self.signal(DELTA2_SOURCE, now, id, call.started, info, ext, change, facts.clone());
            }
        }
        self.signal(DELTA2_SOURCE, now, call.id, call.started, call.info, None, CallChange::Ended, facts);
        self.remember_delta2_done(key);
    }

    /// Feeds one relay line (terminator removed) that arrived at `now`.
    pub fn handle_delta2_line(&mut self, now: UnixMillis, line: &[u8]) -> Delta2Handled {
        let text = String::from_utf8_lossy(line);
        let record = match delta2::parse(&text) {
            Ok(r) => r,
            Err(e) => return Delta2Handled::Malformed(e),
        };
        match record {
            Delta2Line::Status(s) => self.d2_status(now, &s),
            Delta2Line::Deleted(ids) => self.d2_deleted(now, &ids),
            Delta2Line::Swapped(ids) => {
                let Some(key) = self.d2_key_of(&ids) else { return Delta2Handled::Ignored };
                let Some(call) = self.d2_calls.get_mut(&key) else { return Delta2Handled::Ignored };
                std::mem::swap(&mut call.a_id, &mut call.b_id);
                if call.parked {
                    call.parked = false;
                    call.unparking = true;
                }
                Delta2Handled::Used
            }
            Delta2Line::Comms { state, missed } => {
                self.relay_ok = state == 0;
                if state != 0 || missed > 0 {
                    self.delta2_gap(now);
                }
                Delta2Handled::Used
            }
            Delta2Line::SnapshotEnd => {
                if !self.settings.smdr {
                    self.d2_snapshot_end(now);
                }
                Delta2Handled::Used
            }
        }
    }

    fn d2_key_of(&self, ids: &Ids<'_>) -> Option<String> {
        if !ids.call_id.is_empty() && ids.call_id != "0" && self.d2_calls.contains_key(ids.call_id) {
            return Some(ids.call_id.to_owned());
        }
        let a = format!("a:{}", ids.a);
        if self.d2_calls.contains_key(&a) {
            return Some(a);
        }
        self.d2_calls.iter().find(|(_, c)| c.a_id == ids.a || c.a_id == ids.b).map(|(k, _)| k.clone())
    }

    /// The relay re-sent every live call: the others ended while we were away.
    fn d2_snapshot_end(&mut self, now: UnixMillis) {
        let gone: Vec<String> =
            self.d2_calls.iter().filter(|(_, c)| !c.seen_since_connect).map(|(k, _)| k.clone()).collect();
        let live: Vec<PbxCallId> =
            self.d2_calls.values().filter(|c| c.seen_since_connect).map(|c| c.id.clone()).collect();
        for key in gone {
            self.d2_calls.remove(&key);
            self.remember_delta2_done(&key);
        }
        self.out.push_back(AdapterEvent::Resync { pbx: self.pbx.clone(), live_calls: live, at: now });
    }

    fn d2_status(&mut self, now: UnixMillis, s: &Status<'_>) -> Delta2Handled {
        let call_id = s.call_id();
        let key = if !call_id.is_empty() && call_id != "0" { call_id.to_owned() } else { format!("a:{}", s.a_id()) };
        if self.d2_done.contains(&key) || self.smdr_emitted.contains(&key) {
            // A late status of a call that ended.
            return Delta2Handled::Ignored;
        }
        if !self.d2_calls.contains_key(&key) && self.d2_calls.len() >= self.settings.max_pending_calls {
            let oldest = self.d2_calls.iter().min_by_key(|(k, c)| (c.started, (*k).clone())).map(|(k, _)| k.clone());
            if let Some(old) = oldest {
                if let Some(c) = self.d2_calls.get_mut(&old) {
                    c.gap.get_or_insert(now);
                }
                self.d2_lost(now, &old);
            }
        }
        let call = self.d2_calls.entry(key.clone()).or_insert_with(|| D2Call {
            id: PbxCallId::new(key.clone()),
            started: now,
            info: CallInfo::default(),
            a_id: String::new(),
            b_id: String::new(),
            devices: BTreeMap::new(),
            answered: false,
            gap: None,
            parked: false,
            park_slot: None,
            unparking: false,
            queued: false,
            seen_since_connect: true,
        });
        call.seen_since_connect = true;
        if self.delta2_up && self.relay_ok {
            // A status while Delta2 is healthy is its current state: it tracks the call again
            // (what changed during a gap shows as changes now).
            call.gap = None;
        }
        call.a_id = s.a_id().to_owned();
        call.b_id = s.b_id().to_owned();
        let a_dev = delta2::end_device(s.a_name());
        let b_present = !s.b_id().is_empty() && s.b_id() != "0" && s.b_state() != state::IDLE;
        let b_dev = if b_present { delta2::end_device(s.b_name()) } else { EndDevice::Other };
        merge_d2_info(&mut call.info, s, &a_dev, &b_dev);

        // What each extension is now.
        let mut want: BTreeMap<String, DevState> = BTreeMap::new();
        if let EndDevice::Extension(ext) = &b_dev {
            match s.b_state() {
                state::RINGING => {
                    want.insert(ext.clone(), DevState::Ringing);
                }
                state::CONNECTED if s.b_music() => {
                    want.insert(ext.clone(), DevState::Connected);
                }
                state::CONNECTED => {
                    want.insert(ext.clone(), DevState::Connected);
                }
                state::HELD => {
                    want.insert(ext.clone(), DevState::Held);
                }
                _ => {}
            }
        }
        if let EndDevice::Extension(ext) = &a_dev {
            match s.a_state() {
                state::RINGING => {
                    want.insert(ext.clone(), DevState::Ringing);
                }
                state::HELD => {
                    want.insert(ext.clone(), DevState::Held);
                }
                state::CONNECTED if b_present && s.b_state() == state::CONNECTED => {
                    want.insert(ext.clone(), DevState::Connected);
                }
                _ => {}
            }
        }
        let b_answered = b_present && matches!(s.b_state(), state::CONNECTED | state::HELD);
        if !b_answered {
            for target in s.b_list() {
                if let EndDevice::Extension(ext) = delta2::end_device(target) {
                    want.entry(ext).or_insert(DevState::Ringing);
                }
            }
        }
        let parked_now = s.a_state() == state::PARKED && !b_present;
        if parked_now {
            call.parked = true;
            call.park_slot = (!s.park_slot().is_empty() && s.park_slot() != "0").then(|| s.park_slot().to_owned());
        }
        let queued_now = s.a_state() == state::QUEUED || s.b_state() == state::QUEUED;

        // The diff, as signals.
        let mut changes: Vec<(String, CallChange)> = Vec::new();
        if queued_now && !call.queued {
            call.queued = true;
            let queue = (!s.owner_hunt_group().is_empty()).then(|| s.owner_hunt_group().to_owned());
            changes.push((String::new(), CallChange::Queued { queue }));
        }
        let someone_connected = want.values().any(|w| *w == DevState::Connected);
        let new_connected: Option<String> = want
            .iter()
            .find(|(e, w)| **w == DevState::Connected && call.devices.get(*e) != Some(&DevState::Connected))
            .map(|(e, _)| e.clone());
        // Where a transfer went: the device that answered, else the one now ringing.
        let new_target = new_connected.clone().or_else(|| {
            want.iter()
                .find(|(e, w)| **w == DevState::Ringing && !call.devices.contains_key(*e))
                .map(|(e, _)| e.clone())
        });
        for (ext, prev) in &call.devices {
            if !prev.open() || want.contains_key(ext) {
                continue;
            }
            let change = match prev {
                DevState::Ringing => CallChange::Disconnected {
                    reason: match s.cause() {
                        cause::FORWARD_TO_VOICEMAIL => DisconnectReason::Other(VOICEMAIL.into()),
                        cause::CALL_REJECTED => DisconnectReason::Rejected,
                        cause::BUSY => DisconnectReason::Busy,
                        cause::ANSWERED_BY_OTHER | cause::PICKUP => DisconnectReason::AnsweredElsewhere,
                        _ if someone_connected || call.answered => DisconnectReason::AnsweredElsewhere,
                        cause::NO_USER_RESPONDING => DisconnectReason::NoAnswer,
                        _ => DisconnectReason::NoAnswer,
                    },
                },
                _ if parked_now || s.cause() == cause::PARKED => CallChange::Parked { slot: call.park_slot.clone() },
                _ if s.cause() == cause::TRANSFER || new_connected.is_some() => {
                    CallChange::Transferred { to: new_target.clone() }
                }
                _ => CallChange::Disconnected { reason: DisconnectReason::Normal },
            };
            changes.push((ext.clone(), change));
        }
        for (ext, w) in &want {
            let prev = call.devices.get(ext).copied();
            let change = match (prev, w) {
                (Some(p), w) if p == *w => continue,
                (Some(DevState::Connected | DevState::Held), DevState::Ringing) => continue,
                (_, DevState::Ringing) => CallChange::Ringing,
                (Some(DevState::Held), DevState::Connected) => CallChange::Resumed,
                (_, DevState::Connected) if call.unparking || s.cause() == cause::UNPARKED => {
                    CallChange::Unparked { slot: call.park_slot.clone() }
                }
                (_, DevState::Connected) => CallChange::Connected,
                (_, DevState::Held) => CallChange::Held,
                (_, DevState::Gone) => continue,
            };
            changes.push((ext.clone(), change));
        }
        for (ext, _) in &changes {
            if ext.is_empty() {
                continue;
            }
            let new = want.get(ext).copied().unwrap_or(DevState::Gone);
            call.devices.insert(ext.clone(), new);
        }
        if someone_connected {
            call.answered = true;
            call.unparking = false;
        }
        let (id, started, info) = (call.id.clone(), call.started, call.info.clone());
        let changed = !changes.is_empty();
        for (ext, change) in changes {
            let ext = (!ext.is_empty()).then_some(Extension(ext));
            self.signal(DELTA2_SOURCE, now, id.clone(), started, info.clone(), ext, change, Facts::new());
        }
        if changed {
            self.checkpoint_delta2(&key);
        }
        Delta2Handled::Used
    }

    fn d2_deleted(&mut self, now: UnixMillis, ids: &Ids<'_>) -> Delta2Handled {
        let Some(key) = self.d2_key_of(ids) else { return Delta2Handled::Ignored };
        let Some(call) = self.d2_calls.remove(&key) else { return Delta2Handled::Ignored };
        for (ext, st) in &call.devices {
            let reason = match st {
                DevState::Gone => continue,
                DevState::Ringing if call.answered => DisconnectReason::AnsweredElsewhere,
                DevState::Ringing => DisconnectReason::CallerAbandoned,
                _ => DisconnectReason::Normal,
            };
            let change = CallChange::Disconnected { reason };
            let (id, info, extension) = (call.id.clone(), call.info.clone(), Some(Extension(ext.clone())));
            self.signal(DELTA2_SOURCE, now, id, call.started, info, extension, change, Facts::new());
        }
        if !call.devices.is_empty() || call.queued {
            let (id, info) = (call.id.clone(), call.info.clone());
            self.signal(DELTA2_SOURCE, now, id, call.started, info, None, CallChange::Ended, Facts::new());
        }
        self.remember_delta2_done(&key);
        // An SMDR record of this call that waited for this end is now covered.
        let waiting: Vec<SmdrKey> =
            self.awaiting_delta2.keys().filter(|k| k.call_id.to_string() == key).copied().collect();
        for k in waiting {
            if let Some(f) = self.awaiting_delta2.remove(&k) {
                self.timers.retain(|(_, t)| *t != Timer::Delta2Grace(k));
                self.remember_smdr(&k, f.checkpointed);
            }
        }
        Delta2Handled::Used
    }

    fn remember_delta2_done(&mut self, key: &str) {
        let seq = self.d2_done.insert(key.to_owned());
        self.checkpoint(format!("{DELTA2}{key}"), Some(format!("done:{seq}").into_bytes()));
        while let Some(old) = self.d2_done.evict() {
            self.checkpoint(format!("{DELTA2}{old}"), None);
        }
    }

    fn checkpoint_delta2(&mut self, key: &str) {
        let Some(call) = self.d2_calls.get(key) else { return };
        let mut value = format!("open:{}", call.started.0);
        for (ext, st) in &call.devices {
            value.push(';');
            value.push_str(ext);
            value.push('=');
            value.push_str(st.as_str());
        }
        self.checkpoint(format!("{DELTA2}{key}"), Some(value.into_bytes()));
    }

    // ---------------------------------------------------------------- output

    #[allow(clippy::too_many_arguments)]
    fn signal(
        &mut self,
        source: &'static str,
        at: UnixMillis,
        id: PbxCallId,
        started: UnixMillis,
        info: CallInfo,
        extension: Option<Extension>,
        change: CallChange,
        facts: Facts,
    ) {
        self.out.push_back(AdapterEvent::Signal(PbxSignal {
            pbx: self.pbx.clone(),
            at,
            source,
            facts,
            body: SignalBody::Call(CallSignal { call: id, call_started: started, extension, change, info }),
        }));
    }

    fn checkpoint(&mut self, key: String, value: Option<Vec<u8>>) {
        self.out.push_back(AdapterEvent::Checkpoint { pbx: self.pbx.clone(), key, value });
    }
}

fn pending_value(last_arrival: UnixMillis, lines: &[String]) -> Vec<u8> {
    let mut v = String::with_capacity(20 + lines.iter().map(|l| 1 + l.len()).sum::<usize>());
    push_decimal(&mut v, last_arrival.0);
    for l in lines {
        v.push('\n');
        v.push_str(l);
    }
    v.into_bytes()
}

fn step_facts(base: &Facts, step: &Step<'_>) -> Facts {
    let mut facts = base.clone();
    if step.time_reconstructed {
        facts.insert("timeReconstructed".into(), "true".into());
    }
    if let Some(cause) = &step.targeting_cause {
        facts.insert("smdrTargetingCause".into(), (*cause).to_owned());
    }
    facts
}

fn step_state(change: &CallChange) -> Option<DevState> {
    match change {
        CallChange::Ringing => Some(DevState::Ringing),
        CallChange::Connected | CallChange::Resumed | CallChange::Unparked { .. } => Some(DevState::Connected),
        CallChange::Held => Some(DevState::Held),
        _ => None,
    }
}

/// Who a Delta2 call is between: a trunk A end with an extension B is inbound, an extension A
/// with a trunk B outbound, two extensions internal.
fn merge_d2_info(info: &mut CallInfo, s: &Status<'_>, a: &EndDevice, b: &EndDevice) {
    let set = |slot: &mut Option<Arc<str>>, v: &str| {
        if !v.is_empty() && slot.as_deref() != Some(v) {
            *slot = Some(v.into());
        }
    };
    // The hunt group the call came through, on every event of the call (`meta.queue`).
    set(&mut info.queue, s.owner_hunt_group());
    match (a, b) {
        (EndDevice::Trunk, _) => {
            info.direction = Direction::Inbound;
            set(&mut info.external_number, smdr::caller_number(s.calling_number()));
            set(&mut info.dialled_number, s.called_number());
        }
        (EndDevice::Extension(ext), EndDevice::Trunk) => {
            info.direction = Direction::Outbound;
            let n = if s.dialled_number().is_empty() { s.called_number() } else { s.dialled_number() };
            set(&mut info.external_number, n);
            set(&mut info.dialled_number, n);
            let _ = ext;
        }
        (EndDevice::Extension(ext), _) if s.is_internal() || matches!(b, EndDevice::Extension(_)) => {
            info.direction = Direction::Internal;
            set(&mut info.external_number, ext);
            set(&mut info.dialled_number, s.called_number());
        }
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
