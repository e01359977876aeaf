//! [`ReplayGuard`]: the `webhook-id`s seen lately, so that a replayed request is not applied
//! twice. Sans-IO: time (Unix seconds) comes in.
//!
//! A Standard Webhooks signature covers the id, the timestamp and the body, and is accepted
//! while its timestamp is within the tolerance of now; so a captured request can be sent again
//! for that long. Its id is remembered until then: after that the signature check refuses it.

use std::collections::{BTreeSet, HashMap};

/// What [`ReplayGuard::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A new id: now remembered.
    New,
    /// This id was accepted before (a replay, or the platform retrying after a lost answer).
    Duplicate,
}

/// See the module documentation.
///
/// ```
/// use leg_announce::{ReplayGuard, Seen};
/// let mut g = ReplayGuard::new(300, 1_000);
/// assert_eq!(g.check(1_000, "msg_1", 1_000), Seen::New);
/// assert_eq!(g.check(1_200, "msg_1", 1_000), Seen::Duplicate);
/// assert_eq!(g.poll_timeout(), Some(1_301));
/// g.handle_timeout(1_301);
/// assert!(g.is_empty());
/// ```
#[derive(Debug)]
pub struct ReplayGuard {
    tolerance_secs: u64,
    max_ids: usize,
    /// id → (forget at, order of arrival).
    ids: HashMap<String, (u64, u64)>,
    /// (forget at, order of arrival, id), earliest first.
    order: BTreeSet<(u64, u64, String)>,
    next_seq: u64,
    evicted: u64,
}

impl ReplayGuard {
    /// Remembers ids while a signature with their timestamp is accepted (`tolerance_secs`),
    /// at most `max_ids` of them (at least one).
    pub fn new(tolerance_secs: u64, max_ids: usize) -> ReplayGuard {
        ReplayGuard {
            tolerance_secs,
            max_ids: max_ids.max(1),
            ids: HashMap::new(),
            order: BTreeSet::new(),
            next_seq: 0,
            evicted: 0,
        }
    }

    /// Whether `id` (of a request whose verified signature has timestamp `signed_at`) was seen;
    /// a new id is remembered until its signature expires. Past the cap the id closest to
    /// expiry is forgotten first (counted in [`ReplayGuard::evicted`]).
    pub fn check(&mut self, now: u64, id: &str, signed_at: u64) -> Seen {
        self.handle_timeout(now);
        if self.ids.contains_key(id) {
            return Seen::Duplicate;
        }
        // `verify` accepts |now - signed_at| <= tolerance: forget it one second after that.
        let until = signed_at.saturating_add(self.tolerance_secs).saturating_add(1);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ids.insert(id.to_owned(), (until, seq));
        self.order.insert((until, seq, id.to_owned()));
        while self.ids.len() > self.max_ids {
            let Some((_, _, old)) = self.order.pop_first() else { break };
            self.ids.remove(&old);
            self.evicted += 1;
        }
        Seen::New
    }

    /// Forgets `id` (its request was not applied after all, so a retry must be).
    pub fn forget(&mut self, id: &str) {
        if let Some((until, seq)) = self.ids.remove(id) {
            self.order.remove(&(until, seq, id.to_owned()));
        }
    }

    /// Forgets the ids whose signatures have expired by `now`.
    pub fn handle_timeout(&mut self, now: u64) {
        while let Some((until, _, _)) = self.order.first() {
            if *until > now {
                break;
            }
            if let Some((_, _, id)) = self.order.pop_first() {
                self.ids.remove(&id);
            }
        }
    }

    /// When [`ReplayGuard::handle_timeout`] has something to forget next.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.order.first().map(|(until, _, _)| *until)
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// How many ids were forgotten early because of the cap.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}
