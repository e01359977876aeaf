//! [`LegUpdate`] (what the leg sources say) and the [`BLegRegistry`] (what we know).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use listener_core::UnixMillis;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where a leg was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LegSource {
    /// The platform announced it (a signed Level 1/2 Generic Event).
    Announcement,
    /// A SIP message about it passed the SIP tap (HEP or raw SIP).
    SipTap,
}

/// What one source says about one platform leg. Every field but `source` is optional: the SIP
/// tap may see a Call-ID without sids, an announcement may lack the Call-ID. Facts about the
/// same leg from several updates or sources are merged (see [`BLegRegistry`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegFacts {
    /// Who said it.
    pub source: LegSource,
    /// The leg's `callSid`.
    pub call_sid: Option<Uuid>,
    /// The leg's `parentCallSid` (equal to `call_sid` for an A leg).
    pub parent_call_sid: Option<Uuid>,
    /// The platform account.
    pub account_id: Option<Uuid>,
    /// The SIP Call-ID of the leg on the trunk.
    pub sip_call_id: Option<String>,
    /// The calling party: E.164 digits without `+`, or a URI.
    pub from: Option<String>,
    /// The called party: E.164 digits without `+`, or a URI.
    pub to: Option<String>,
    /// When the leg started (the platform's timestamp, the HEP capture time, or receipt).
    pub started: Option<UnixMillis>,
    /// Tags the platform sent with the leg (its `meta`); they go into the events' `meta`.
    pub tags: BTreeMap<String, String>,
}

impl LegFacts {
    /// Facts from `source` with nothing known yet.
    pub fn new(source: LegSource) -> LegFacts {
        LegFacts {
            source,
            call_sid: None,
            parent_call_sid: None,
            account_id: None,
            sip_call_id: None,
            from: None,
            to: None,
            started: None,
            tags: BTreeMap::new(),
        }
    }
}

/// One thing a leg source reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LegUpdate {
    /// A leg was seen: announced (`trying`, `ringing`, …) or its INVITE passed the tap.
    /// Learning a known leg again merges the facts.
    Learned(LegFacts),
    /// New facts about a leg (answered, tags changed); creates the leg if it is unknown.
    Updated(LegFacts),
    /// The leg is over (`completed`, `failed`, BYE, CANCEL, a final error response). It stays
    /// a candidate for `ended_leg_keep_secs`, for PBX calls reported late. Final: no later
    /// update (a replayed or late `ringing`) makes it live again, not even after it was
    /// forgotten.
    Ended(LegFacts),
}

impl LegUpdate {
    /// The facts carried.
    pub fn facts(&self) -> &LegFacts {
        match self {
            LegUpdate::Learned(f) | LegUpdate::Updated(f) | LegUpdate::Ended(f) => f,
        }
    }
}

/// A leg's place in the platform's call: the A leg (the caller's, or for an outbound PBX call
/// the PBX's own leg into the platform) or a B leg (dialled by the platform).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LegRole {
    A,
    B,
    /// Only a callSid, or nothing: could be either.
    Unknown,
}

/// An opaque handle of a leg in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct LegId(u64);

/// A leg as the registry knows it: merged facts plus bookkeeping.
#[derive(Debug, Clone)]
pub(crate) struct Leg {
    pub(crate) call_sid: Option<Uuid>,
    pub(crate) parent_call_sid: Option<Uuid>,
    pub(crate) account_id: Option<Uuid>,
    pub(crate) sip_call_id: Option<String>,
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
    pub(crate) started: UnixMillis,
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) announced: bool,
    pub(crate) last_update: UnixMillis,
    pub(crate) ended_at: Option<UnixMillis>,
    /// Bound to a PBX call (it is then no candidate for number or token matching).
    pub(crate) bound: bool,
    pub(crate) expires_at: UnixMillis,
}

impl Leg {
    pub(crate) fn role(&self) -> LegRole {
        match (self.call_sid, self.parent_call_sid) {
            (Some(c), Some(p)) if c == p => LegRole::A,
            (Some(_), Some(_)) => LegRole::B,
            _ => LegRole::Unknown,
        }
    }
}

/// What [`BLegRegistry::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// A leg we did not know.
    New(LegId),
    /// Merged into a known leg (possibly joining two partial legs into one).
    Merged(LegId),
    /// Ignored: the update is about a leg that ended and was forgotten (a replayed or late
    /// announcement, a late SIP copy). An ended leg never comes back.
    Stale,
}

/// A key of a leg that ended and was forgotten.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum EndedKey {
    Sid(Uuid),
    CallId(String),
}

/// The legs we know, indexed by every key a matcher looks them up by.
///
/// Identity: a leg is the same leg when it has the same callSid or the same SIP Call-ID.
/// An update that carries both joins the two partial legs (one learned by the SIP tap with
/// only a Call-ID, one announced with only sids) into one.
#[derive(Debug, Default)]
pub struct BLegRegistry {
    legs: HashMap<LegId, Leg>,
    next_id: u64,
    by_sid: HashMap<Uuid, LegId>,
    /// callSid as 32 lower-case hex digits, for token prefixes.
    by_sid_hex: BTreeMap<String, LegId>,
    by_parent: HashMap<Uuid, Vec<LegId>>,
    by_call_id: HashMap<String, LegId>,
    by_call_id_local: HashMap<String, Vec<LegId>>,
    by_to: HashMap<String, Vec<LegId>>,
    by_token: HashMap<String, Vec<LegId>>,
    expiry: BTreeSet<(UnixMillis, LegId)>,
    /// The callSids and Call-IDs of legs that ended and were forgotten, until when they are
    /// remembered: an update about one of them is stale, not a new leg.
    /// (until, order of forgetting).
    ended: HashMap<EndedKey, (UnixMillis, u64)>,
    ended_expiry: BTreeSet<(UnixMillis, u64, EndedKey)>,
    ended_seq: u64,
    token_key: String,
    ttl: Ttl,
}

impl BLegRegistry {
    pub(crate) fn new(token_key: String, ttl: Ttl) -> BLegRegistry {
        BLegRegistry { token_key, ttl, ..BLegRegistry::default() }
    }

    /// New lifetimes and token tag (a configuration reload): the legs are kept; the token index
    /// is rebuilt when the tag changed. New lifetimes apply from each leg's next update.
    pub(crate) fn reconfigure(&mut self, token_key: String, ttl: Ttl) {
        self.ttl = ttl;
        if token_key != self.token_key {
            self.token_key = token_key;
            self.by_token.clear();
            for (id, leg) in &self.legs {
                if let Some(token) = leg.tags.get(&self.token_key) {
                    self.by_token.entry(token.to_ascii_lowercase()).or_default().push(*id);
                }
            }
        }
    }

    /// How many legs are known.
    pub fn len(&self) -> usize {
        self.legs.len()
    }

    /// Whether no leg is known.
    pub fn is_empty(&self) -> bool {
        self.legs.is_empty()
    }

    pub(crate) fn get(&self, id: LegId) -> Option<&Leg> {
        self.legs.get(&id)
    }

    pub(crate) fn mark_bound(&mut self, id: LegId) {
        if let Some(leg) = self.legs.get_mut(&id) {
            leg.bound = true;
        }
    }

    pub(crate) fn by_sid(&self, sid: Uuid) -> Option<LegId> {
        self.by_sid.get(&sid).copied()
    }

    pub(crate) fn by_call_id(&self, call_id: &str) -> Option<LegId> {
        self.by_call_id.get(&call_id_key(call_id)).copied()
    }

    /// Legs whose Call-ID has the local part `local`.
    pub(crate) fn by_call_id_local(&self, local: &str) -> &[LegId] {
        self.by_call_id_local.get(local).map(Vec::as_slice).unwrap_or(&[])
    }

    pub(crate) fn children(&self, parent: Uuid) -> &[LegId] {
        self.by_parent.get(&parent).map(Vec::as_slice).unwrap_or(&[])
    }

    pub(crate) fn by_to(&self, number: &str) -> &[LegId] {
        self.by_to.get(&number_key(number)).map(Vec::as_slice).unwrap_or(&[])
    }

    pub(crate) fn by_token(&self, token: &str) -> Vec<LegId> {
        let mut out: Vec<LegId> =
            self.by_token.get(&token.to_ascii_lowercase()).map(|v| v.to_vec()).unwrap_or_default();
        let hex: String = token.chars().filter(|c| *c != '-').collect::<String>().to_ascii_lowercase();
        if hex.len() >= 8 && hex.len() <= 32 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            for (_, id) in self.by_sid_hex.range(hex.clone()..).take_while(|(k, _)| k.starts_with(&hex)) {
                if !out.contains(id) {
                    out.push(*id);
                }
            }
        }
        out
    }

    /// The earliest leg expiry, or the earliest time an ended leg's keys are forgotten: the
    /// registry's memory falls at [`BLegRegistry::expire`] even when no update comes.
    pub(crate) fn next_expiry(&self) -> Option<UnixMillis> {
        let legs = self.expiry.first().map(|(t, _)| *t);
        let ended = self.ended_expiry.first().map(|(t, _, _)| *t);
        match (legs, ended) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How many keys of forgotten ended legs are remembered.
    #[cfg(test)]
    pub(crate) fn ended_keys(&self) -> usize {
        self.ended.len()
    }

    /// Removes the legs whose time is up (and forgets the keys of ended legs whose time is
    /// up); returns how many of the legs were never bound.
    pub(crate) fn expire(&mut self, now: UnixMillis) -> u64 {
        let mut unbound = 0;
        while let Some(&(t, id)) = self.expiry.first() {
            if t > now {
                break;
            }
            if let Some(leg) = self.forget(now, id)
                && !leg.bound
            {
                unbound += 1;
            }
        }
        while let Some((t, _, _)) = self.ended_expiry.first() {
            if *t > now {
                break;
            }
            self.pop_ended();
        }
        unbound
    }

    /// Evicts the leg closest to expiry (when the registry is full). Whether it was unbound.
    pub(crate) fn evict_one(&mut self, now: UnixMillis) -> Option<bool> {
        let &(_, id) = self.expiry.first()?;
        self.forget(now, id).map(|leg| !leg.bound)
    }

    /// Removes a leg for good; an ended one leaves its keys behind for `ttl_ms`, so that an
    /// update about it (a replay, a late retry, a late SIP copy) is not taken for a new leg.
    fn forget(&mut self, now: UnixMillis, id: LegId) -> Option<Leg> {
        let leg = self.remove(id)?;
        if leg.ended_at.is_some() {
            let until = now.plus_ms(self.ttl.ttl_ms);
            let keys = leg.call_sid.map(EndedKey::Sid).into_iter();
            for key in keys.chain(leg.sip_call_id.as_deref().map(|c| EndedKey::CallId(call_id_key(c)))) {
                let seq = self.ended_seq;
                self.ended_seq += 1;
                if let Some((old, old_seq)) = self.ended.insert(key.clone(), (until, seq)) {
                    self.ended_expiry.remove(&(old, old_seq, key.clone()));
                }
                self.ended_expiry.insert((until, seq, key));
            }
            // Bounded like the legs themselves: past the cap, the oldest keys go.
            while self.ended.len() > self.ttl.max_ended_keys {
                if !self.pop_ended() {
                    break;
                }
            }
        }
        Some(leg)
    }

    /// Forgets the ended leg key that is due first (the oldest: every key is kept equally long).
    fn pop_ended(&mut self) -> bool {
        let Some((_, _, key)) = self.ended_expiry.pop_first() else { return false };
        self.ended.remove(&key);
        true
    }

    /// Whether the update names a leg that ended and was forgotten.
    fn is_forgotten_end(&self, facts: &LegFacts) -> bool {
        if self.ended.is_empty() {
            return false;
        }
        facts.call_sid.is_some_and(|s| self.ended.contains_key(&EndedKey::Sid(s)))
            || facts.sip_call_id.as_deref().is_some_and(|c| self.ended.contains_key(&EndedKey::CallId(call_id_key(c))))
    }

    /// Merges one update in.
    pub(crate) fn apply(&mut self, now: UnixMillis, update: &LegUpdate) -> Applied {
        let ttl = self.ttl;
        let facts = update.facts();
        let by_sid = facts.call_sid.and_then(|s| self.by_sid.get(&s).copied());
        let by_cid = facts.sip_call_id.as_deref().and_then(|c| self.by_call_id.get(&call_id_key(c)).copied());
        if by_sid.is_none() && by_cid.is_none() && self.is_forgotten_end(facts) {
            // A leg's callSid and Call-ID are its own: once it ended, nothing restarts it. (A
            // leg still known stays ended whatever comes later: see `ended_at` below.)
            return Applied::Stale;
        }
        let (id, applied) = match (by_sid, by_cid) {
            (Some(a), Some(b)) if a != b => {
                // One leg learned by its sids, the other by its Call-ID: they are one leg.
                self.join(a, b);
                (a, Applied::Merged(a))
            }
            (Some(a), _) | (None, Some(a)) => (a, Applied::Merged(a)),
            (None, None) => {
                let id = LegId(self.next_id);
                self.next_id += 1;
                let leg = Leg {
                    call_sid: None,
                    parent_call_sid: None,
                    account_id: None,
                    sip_call_id: None,
                    from: None,
                    to: None,
                    started: facts.started.unwrap_or(now),
                    tags: BTreeMap::new(),
                    announced: false,
                    last_update: now,
                    ended_at: None,
                    bound: false,
                    expires_at: now,
                };
                self.legs.insert(id, leg);
                self.index(id);
                (id, Applied::New(id))
            }
        };
        self.unindex(id);
        if let Some(leg) = self.legs.get_mut(&id) {
            merge(leg, facts);
            leg.last_update = now;
            if matches!(update, LegUpdate::Ended(_)) && leg.ended_at.is_none() {
                leg.ended_at = Some(now);
            }
            leg.expires_at = match leg.ended_at {
                Some(ended) => ended.plus_ms(ttl.ended_keep_ms),
                None => now.plus_ms(ttl.ttl_ms),
            };
        }
        self.index(id);
        applied
    }

    /// Moves everything `b` knows into `a` and forgets `b`.
    fn join(&mut self, a: LegId, b: LegId) {
        let Some(other) = self.remove(b) else { return };
        self.unindex(a);
        if let Some(leg) = self.legs.get_mut(&a) {
            leg.call_sid = leg.call_sid.or(other.call_sid);
            leg.parent_call_sid = leg.parent_call_sid.or(other.parent_call_sid);
            leg.account_id = leg.account_id.or(other.account_id);
            leg.sip_call_id = leg.sip_call_id.take().or(other.sip_call_id);
            leg.from = leg.from.take().or(other.from);
            leg.to = leg.to.take().or(other.to);
            leg.started = leg.started.min(other.started);
            for (k, v) in other.tags {
                leg.tags.entry(k).or_insert(v);
            }
            leg.announced |= other.announced;
            leg.bound |= other.bound;
            leg.ended_at = match (leg.ended_at, other.ended_at) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            };
            leg.expires_at = leg.expires_at.max(other.expires_at);
        }
        self.index(a);
    }

    fn remove(&mut self, id: LegId) -> Option<Leg> {
        self.unindex(id);
        self.legs.remove(&id)
    }

    fn index(&mut self, id: LegId) {
        let Some(leg) = self.legs.get(&id) else { return };
        if let Some(sid) = leg.call_sid {
            self.by_sid.insert(sid, id);
            self.by_sid_hex.insert(sid.simple().to_string(), id);
        }
        if let (Some(parent), LegRole::B) = (leg.parent_call_sid, leg.role()) {
            self.by_parent.entry(parent).or_default().push(id);
        }
        if let Some(cid) = &leg.sip_call_id {
            let key = call_id_key(cid);
            if let Some(local) = call_id_local(&key) {
                self.by_call_id_local.entry(local.to_owned()).or_default().push(id);
            }
            self.by_call_id.insert(key, id);
        }
        if let Some(to) = &leg.to {
            self.by_to.entry(number_key(to)).or_default().push(id);
        }
        if let Some(token) = leg.tags.get(&self.token_key) {
            self.by_token.entry(token.to_ascii_lowercase()).or_default().push(id);
        }
        self.expiry.insert((leg.expires_at, id));
    }

    fn unindex(&mut self, id: LegId) {
        let Some(leg) = self.legs.get(&id) else { return };
        fn drop_from<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Vec<LegId>>, key: &K, id: LegId) {
            if let Some(v) = map.get_mut(key) {
                v.retain(|x| *x != id);
                if v.is_empty() {
                    map.remove(key);
                }
            }
        }
        if let Some(sid) = leg.call_sid {
            if self.by_sid.get(&sid) == Some(&id) {
                self.by_sid.remove(&sid);
            }
            let hex = sid.simple().to_string();
            if self.by_sid_hex.get(&hex) == Some(&id) {
                self.by_sid_hex.remove(&hex);
            }
        }
        if let Some(parent) = leg.parent_call_sid {
            drop_from(&mut self.by_parent, &parent, id);
        }
        if let Some(cid) = &leg.sip_call_id {
            let key = call_id_key(cid);
            if let Some(local) = call_id_local(&key) {
                drop_from(&mut self.by_call_id_local, &local.to_owned(), id);
            }
            if self.by_call_id.get(&key) == Some(&id) {
                self.by_call_id.remove(&key);
            }
        }
        if let Some(to) = &leg.to {
            drop_from(&mut self.by_to, &number_key(to), id);
        }
        if let Some(token) = leg.tags.get(&self.token_key) {
            drop_from(&mut self.by_token, &token.to_ascii_lowercase(), id);
        }
        self.expiry.remove(&(leg.expires_at, id));
    }
}

/// Leg lifetimes, in milliseconds, and the bound on remembered ended legs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ttl {
    /// A leg that never ended is forgotten this long after its last update; the keys of an
    /// ended leg are remembered this long after the leg itself was forgotten.
    pub(crate) ttl_ms: u64,
    /// An ended leg stays a candidate this long.
    pub(crate) ended_keep_ms: u64,
    /// The most keys of forgotten ended legs remembered.
    pub(crate) max_ended_keys: usize,
}

/// Merges newer facts into a leg. Announcements are the platform's own word, so they win
/// over what the tap read off the wire; otherwise the first value seen is kept.
fn merge(leg: &mut Leg, facts: &LegFacts) {
    let authoritative = facts.source == LegSource::Announcement;
    fn set<T: Clone>(slot: &mut Option<T>, new: &Option<T>, overwrite: bool) {
        if new.is_some() && (overwrite || slot.is_none()) {
            slot.clone_from(new);
        }
    }
    set(&mut leg.call_sid, &facts.call_sid, authoritative);
    set(&mut leg.parent_call_sid, &facts.parent_call_sid, authoritative);
    set(&mut leg.account_id, &facts.account_id, authoritative);
    set(&mut leg.sip_call_id, &facts.sip_call_id, authoritative);
    set(&mut leg.from, &facts.from, authoritative);
    set(&mut leg.to, &facts.to, authoritative);
    if let Some(started) = facts.started {
        // The leg started when the first source saw it start.
        leg.started = leg.started.min(started);
    }
    for (k, v) in &facts.tags {
        if authoritative || !leg.tags.contains_key(k) {
            leg.tags.insert(k.clone(), v.clone());
        }
    }
    leg.announced |= authoritative;
}

/// The form a Call-ID is compared in: trimmed, and without anything from a `;` on. RFC 3261
/// §25.1 `callid = word [ "@" word ]` admits no `;`, yet some CTI integrations append
/// `;to-tag=…;from-tag=…` to the Call-ID they report. Otherwise byte-exact and case-sensitive
/// (RFC 3261 §20.8 compares Call-IDs byte by byte).
pub(crate) fn call_id_key(call_id: &str) -> String {
    let trimmed = call_id.trim();
    trimmed.split(';').next().unwrap_or(trimmed).trim().to_owned()
}

/// The local part of a normalised Call-ID when it has a host part.
pub(crate) fn call_id_local(key: &str) -> Option<&str> {
    key.split_once('@').map(|(local, _)| local)
}

/// The form numbers are compared in: E.164 digits without `+` (separators removed) when it is a
/// number, a `tel:` URI or a `sip:`/`sips:` URI whose user part is a number, else the
/// lower-cased text (a URI). A URI's `%HH` escapes are undone first (RFC 3261 §19.1.4:
/// `sip:+%344…@host` is the number `44…`); an invalid escape leaves the text as it is.
pub(crate) fn number_key(number: &str) -> String {
    let s = number.trim();
    let (candidate, is_uri) = match s.split_once(':') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("tel") => (rest, true),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") => {
            // The user part: before `@`, without a password.
            let user = rest.split_once('@').map(|(userinfo, _)| userinfo.split(':').next().unwrap_or(userinfo));
            (user.unwrap_or(""), true)
        }
        _ => (s, false),
    };
    let unescaped = if is_uri { unescape(candidate) } else { None };
    let candidate = unescaped.as_deref().unwrap_or(candidate);
    let bare = candidate.strip_prefix('+').unwrap_or(candidate);
    if !bare.is_empty() && bare.chars().all(|c| c.is_ascii_digit() || " -.()".contains(c)) {
        bare.chars().filter(char::is_ascii_digit).collect()
    } else {
        s.to_ascii_lowercase()
    }
}

/// `%HH` escapes undone; `None` when there is none, an escape is invalid or the result is not
/// UTF-8 (the text is then compared as written).
fn unescape(s: &str) -> Option<String> {
    if !s.contains('%') {
        return None;
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let digits = std::str::from_utf8(hex).ok().filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))?;
            out.push(u8::from_str_radix(digits, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(source: LegSource) -> LegFacts {
        LegFacts::new(source)
    }
    const TTL: Ttl = Ttl { ttl_ms: 10_000, ended_keep_ms: 1_000, max_ended_keys: 4 };

    #[test]
    fn the_same_leg_from_both_sources_is_one_leg() {
        let mut r = BLegRegistry::new("correlationToken".into(), TTL);
        let mut tap = facts(LegSource::SipTap);
        tap.sip_call_id = Some("abc@host".into());
        tap.from = Some("15557654321".into());
        assert!(matches!(r.apply(UnixMillis(1), &LegUpdate::Learned(tap.clone())), Applied::New(_)));
        assert!(matches!(r.apply(UnixMillis(2), &LegUpdate::Learned(tap)), Applied::Merged(_)));
        let mut ann = facts(LegSource::Announcement);
        ann.call_sid = Some(Uuid::from_u128(0xb1));
        ann.to = Some("15551230100".into());
        assert!(matches!(r.apply(UnixMillis(3), &LegUpdate::Learned(ann.clone())), Applied::New(_)));
        assert_eq!(r.len(), 2);
        ann.sip_call_id = Some("abc@host".into());
        r.apply(UnixMillis(4), &LegUpdate::Updated(ann));
        assert_eq!(r.len(), 1);
        let id = r.by_call_id("abc@host").unwrap();
        assert_eq!(r.by_sid(Uuid::from_u128(0xb1)), Some(id));
        let leg = r.get(id).unwrap();
        assert_eq!(leg.from.as_deref(), Some("15557654321"));
        assert_eq!(leg.to.as_deref(), Some("15551230100"));
        assert_eq!(leg.started, UnixMillis(1));
        assert_eq!(r.by_to("+1 555 123 0100"), &[id]);
        assert_eq!(r.by_token("00000000000000000000000000000000b1".get(..8).unwrap_or("")), vec![id]);
    }

    #[test]
    fn ended_legs_expire_after_the_keep_time() {
        let mut r = BLegRegistry::new("t".into(), TTL);
        let mut f = facts(LegSource::Announcement);
        f.call_sid = Some(Uuid::from_u128(1));
        r.apply(UnixMillis(0), &LegUpdate::Learned(f.clone()));
        assert_eq!(r.next_expiry(), Some(UnixMillis(10_000)));
        r.apply(UnixMillis(500), &LegUpdate::Ended(f));
        assert_eq!(r.next_expiry(), Some(UnixMillis(1_500)));
        assert_eq!(r.expire(UnixMillis(1_499)), 0);
        assert_eq!(r.expire(UnixMillis(1_500)), 1);
        assert!(r.is_empty());
        // Its callSid is remembered as ended for the leg TTL, then forgotten too.
        assert_eq!((r.ended_keys(), r.next_expiry()), (1, Some(UnixMillis(11_500))));
        r.expire(UnixMillis(11_500));
        assert_eq!((r.ended_keys(), r.next_expiry()), (0, None));
    }

    #[test]
    fn ended_legs_stay_ended_and_their_memory_is_bounded() {
        let mut r = BLegRegistry::new("t".into(), TTL);
        for n in 0..5u128 {
            let mut f = facts(LegSource::Announcement);
            f.call_sid = Some(Uuid::from_u128(n));
            f.sip_call_id = Some(format!("c{n}"));
            r.apply(UnixMillis(0), &LegUpdate::Ended(f));
        }
        assert_eq!(r.expire(UnixMillis(1_000)), 5);
        // Two keys per leg, at most four kept: the last two legs are remembered.
        assert_eq!(r.ended_keys(), 4);
        let mut again = facts(LegSource::Announcement);
        again.call_sid = Some(Uuid::from_u128(4));
        assert_eq!(r.apply(UnixMillis(2_000), &LegUpdate::Learned(again.clone())), Applied::Stale);
        let mut tap = facts(LegSource::SipTap);
        tap.sip_call_id = Some("c3;to-tag=x".into());
        assert_eq!(r.apply(UnixMillis(2_000), &LegUpdate::Learned(tap)), Applied::Stale);
        again.call_sid = Some(Uuid::from_u128(0));
        assert!(matches!(r.apply(UnixMillis(2_000), &LegUpdate::Learned(again)), Applied::New(_)));
    }

    #[test]
    fn call_id_and_number_keys() {
        assert_eq!(call_id_key(" abc@h;to-tag=1;from-tag=2 "), "abc@h");
        assert_eq!(call_id_local("abc@h"), Some("abc"));
        assert_eq!(number_key("tel:+1-555-123"), "1555123");
        assert_eq!(number_key("sip:Bob@X"), "sip:bob@x");
        assert_eq!(number_key("sip:+%344%31234567890@h;user=phone"), "441234567890");
        assert_eq!(number_key("SIPS:%2B44-1234:pw@h"), "441234");
        assert_eq!(number_key("tel:%2B441234"), "441234");
        assert_eq!(number_key("sip:+44%G1@H"), "sip:+44%g1@h");
        assert_eq!(number_key("sip:%2Bbob@h"), "sip:%2bbob@h");
        assert_eq!(number_key("sip:h"), "sip:h");
    }
}
