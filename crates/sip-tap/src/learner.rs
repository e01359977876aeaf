//! [`LegLearner`]: turns SIP messages about the platform's legs into [`LegUpdate`]s, once each.
//!
//! From an INVITE it learns the leg (Call-ID, From, To/Request-URI, the platform's sid
//! headers, the capture time); a response to the INVITE may add the sids (the platform can
//! put them on its answers to the PBX's own INVITEs); a final error response, BYE or CANCEL
//! ends it. A proxy that mirrors what it receives and what it forwards (Kamailio `siptrace`)
//! and retransmissions show us the same message several times: the learner remembers each
//! Call-ID for a while and reports a leg once, then only what is new about it.

use std::collections::{HashMap, VecDeque};

use correlation::{LegFacts, LegSource, LegUpdate};
use listener_core::UnixMillis;
use uuid::Uuid;

use crate::sip::{SipMessage, as_number};

/// How the learner reads and remembers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnerConfig {
    /// The header with the leg's callSid (case-insensitive).
    pub call_sid_header: String,
    /// The header with the leg's parentCallSid.
    pub parent_call_sid_header: String,
    /// How many Call-IDs are remembered for deduplication (oldest forgotten first).
    pub max_dialogs: usize,
    /// How long a Call-ID is remembered, in milliseconds.
    pub dialog_ttl_ms: u64,
}

impl Default for LearnerConfig {
    fn default() -> Self {
        LearnerConfig {
            call_sid_header: "X-Call-Sid".to_owned(),
            parent_call_sid_header: "X-Parent-Call-Sid".to_owned(),
            max_dialogs: 100_000,
            dialog_ttl_ms: 4 * 3600 * 1000,
        }
    }
}

/// What the learner remembers about one Call-ID.
#[derive(Debug, Clone)]
struct Dialog {
    created: UnixMillis,
    call_sid: Option<Uuid>,
    parent_call_sid: Option<Uuid>,
    ended: bool,
}

/// See the module documentation. Sans-IO: time comes in.
#[derive(Debug)]
pub struct LegLearner {
    config: LearnerConfig,
    dialogs: HashMap<String, Dialog>,
    /// Call-IDs in the order they were first seen, for expiry and the size bound.
    order: VecDeque<(UnixMillis, String)>,
}

impl LegLearner {
    /// A learner.
    pub fn new(config: LearnerConfig) -> LegLearner {
        LegLearner { config, dialogs: HashMap::new(), order: VecDeque::new() }
    }

    /// How many Call-IDs are remembered.
    pub fn dialogs(&self) -> usize {
        self.dialogs.len()
    }

    /// When the oldest Call-ID is due to be forgotten ([`LegLearner::handle_timeout`]).
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        self.order.front().map(|(created, _)| created.plus_ms(self.config.dialog_ttl_ms))
    }

    /// Forgets the Call-IDs whose time is up, also when no message comes.
    pub fn handle_timeout(&mut self, now: UnixMillis) {
        self.prune(now);
    }

    /// Learns from one message; `captured_at` is the capture time (HEP), else `now` is used.
    pub fn learn(
        &mut self,
        now: UnixMillis,
        captured_at: Option<UnixMillis>,
        msg: &SipMessage<'_>,
    ) -> Option<LegUpdate> {
        self.prune(now);
        let cseq_method = msg.cseq().ok()?.method;
        let call_id = msg.call_id();
        match (msg.method(), msg.status()) {
            (Some("INVITE"), _) => self.seen(now, captured_at, msg, call_id, true),
            (Some("BYE" | "CANCEL"), _) => self.ended(now, msg, call_id),
            (None, Some(status)) if cseq_method == "INVITE" => {
                if status >= 300 {
                    // Only a leg we know ends: a failed call we never saw is nobody's leg.
                    if self.dialogs.contains_key(call_id) { self.ended(now, msg, call_id) } else { None }
                } else {
                    self.seen(now, captured_at, msg, call_id, false)
                }
            }
            _ => None,
        }
    }

    fn seen(
        &mut self,
        now: UnixMillis,
        captured_at: Option<UnixMillis>,
        msg: &SipMessage<'_>,
        call_id: &str,
        is_invite: bool,
    ) -> Option<LegUpdate> {
        let call_sid = self.sid(msg, &self.config.call_sid_header);
        let parent_call_sid = self.sid(msg, &self.config.parent_call_sid_header);
        if let Some(d) = self.dialogs.get_mut(call_id) {
            // Known: report only what is new (sids on a later message).
            let new_sid = call_sid.is_some() && d.call_sid.is_none();
            let new_parent = parent_call_sid.is_some() && d.parent_call_sid.is_none();
            if d.ended || !(new_sid || new_parent) {
                return None;
            }
            d.call_sid = d.call_sid.or(call_sid);
            d.parent_call_sid = d.parent_call_sid.or(parent_call_sid);
            let mut facts = LegFacts::new(LegSource::SipTap);
            facts.sip_call_id = Some(call_id.to_owned());
            facts.call_sid = call_sid;
            facts.parent_call_sid = parent_call_sid;
            return Some(LegUpdate::Updated(facts));
        }
        // A response without sids to an INVITE we never saw tells nothing worth a leg.
        if !is_invite && call_sid.is_none() {
            return None;
        }
        let mut facts = LegFacts::new(LegSource::SipTap);
        facts.sip_call_id = Some(call_id.to_owned());
        facts.call_sid = call_sid;
        facts.parent_call_sid = parent_call_sid;
        facts.started = Some(captured_at.unwrap_or(now));
        let from = msg.from().ok();
        let to = msg.to().ok();
        facts.from = from.as_ref().map(|f| party(f.user(), &f.uri));
        facts.to = to.as_ref().map(|t| {
            // The called number: To's user, else the Request-URI's (the DID a trunk routes on).
            match (t.user().and_then(as_number), msg.request_uri_user().and_then(as_number)) {
                (Some(n), _) | (None, Some(n)) => n,
                (None, None) => party(t.user(), &t.uri),
            }
        });
        self.remember(now, call_id, Dialog { created: now, call_sid, parent_call_sid, ended: false });
        Some(LegUpdate::Learned(facts))
    }

    fn ended(&mut self, now: UnixMillis, msg: &SipMessage<'_>, call_id: &str) -> Option<LegUpdate> {
        let call_sid = self.sid(msg, &self.config.call_sid_header);
        match self.dialogs.get_mut(call_id) {
            Some(d) if d.ended => return None,
            Some(d) => d.ended = true,
            None => self.remember(now, call_id, Dialog { created: now, call_sid, parent_call_sid: None, ended: true }),
        }
        let mut facts = LegFacts::new(LegSource::SipTap);
        facts.sip_call_id = Some(call_id.to_owned());
        facts.call_sid = call_sid;
        Some(LegUpdate::Ended(facts))
    }

    fn sid(&self, msg: &SipMessage<'_>, header: &str) -> Option<Uuid> {
        msg.header(header).and_then(|v| Uuid::parse_str(v.trim()).ok())
    }

    fn remember(&mut self, now: UnixMillis, call_id: &str, dialog: Dialog) {
        self.dialogs.insert(call_id.to_owned(), dialog);
        self.order.push_back((now, call_id.to_owned()));
        while self.dialogs.len() > self.config.max_dialogs {
            let Some((_, old)) = self.order.pop_front() else { break };
            self.dialogs.remove(&old);
        }
    }

    fn prune(&mut self, now: UnixMillis) {
        while let Some((created, _)) = self.order.front() {
            if now.since(*created) < self.config.dialog_ttl_ms {
                break;
            }
            if let Some((created, cid)) = self.order.pop_front()
                && self.dialogs.get(&cid).is_some_and(|d| d.created == created)
            {
                self.dialogs.remove(&cid);
            }
        }
    }
}

/// A party as the registry wants it: E.164 digits without `+` when the user part is a number,
/// else the URI.
fn party(user: Option<&str>, uri: &str) -> String {
    user.and_then(as_number).unwrap_or_else(|| uri.to_owned())
}
