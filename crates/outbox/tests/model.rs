//! Model-based test: random sequences of appends, deliveries, retries, quarantines, requeues,
//! clock jumps and reopens run against the outbox and against a plain in-memory model; after
//! every step both must agree on the ready heads, the totals and the lifecycle state.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use outbox::{Inspector, NewEvent, Outbox, OutboxConfig, StateChange, WhenFull};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    Append(Vec<(u8, u8, u8)>, Vec<(u8, Option<u8>)>),
    Deliver(usize),
    Retry(usize, u64),
    Quarantine(usize),
    Requeue,
    Advance(u64),
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (prop::collection::vec((0u8..24, 0u8..4, 0u8..12), 0..4), prop::collection::vec((0u8..3, prop::option::of(any::<u8>())), 0..3))
            .prop_map(|(e, s)| Step::Append(e, s)),
        3 => (0usize..8).prop_map(Step::Deliver),
        2 => ((0usize..8), 1u64..4).prop_map(|(i, d)| Step::Retry(i, d)),
        1 => (0usize..8).prop_map(Step::Quarantine),
        1 => Just(Step::Requeue),
        1 => (1u64..3).prop_map(Step::Advance),
        1 => Just(Step::Reopen),
    ]
}

#[derive(Debug, Clone)]
struct Row {
    seq: u64,
    id: String,
    key: String,
    body: Vec<u8>,
    next: u64,
}

impl Row {
    fn size(&self) -> u64 {
        (self.id.len() + self.key.len() + self.body.len()) as u64
    }
}

#[derive(Debug, Default)]
struct Model {
    next_seq: u64,
    pending: Vec<Row>,
    quarantine: Vec<Row>,
    state: BTreeMap<String, Vec<u8>>,
    now: u64,
    duplicates: u64,
    dropped_oldest: u64,
    dropped_newest: u64,
}

impl Model {
    fn bytes(&self) -> u64 {
        self.pending.iter().chain(&self.quarantine).map(Row::size).sum()
    }

    fn append(&mut self, event: &NewEvent, config: &OutboxConfig) {
        if self.pending.iter().chain(&self.quarantine).any(|r| r.id == event.id) {
            self.duplicates += 1;
            return;
        }
        self.next_seq += 1;
        let row = Row {
            seq: self.next_seq,
            id: event.id.clone(),
            key: event.order_key.clone(),
            body: event.body.clone(),
            next: 0,
        };
        while self.bytes() + row.size() > config.max_bytes {
            if row.size() > config.max_bytes || config.when_full == WhenFull::DropNewest {
                self.dropped_newest += 1;
                return;
            }
            if !self.pending.is_empty() {
                self.pending.remove(0);
            } else {
                self.quarantine.sort_by_key(|r| r.seq);
                self.quarantine.remove(0);
            }
            self.dropped_oldest += 1;
        }
        self.pending.push(row);
    }

    /// Heads due now, in the outbox's order: by next attempt, then append order.
    fn ready(&self) -> Vec<Row> {
        let mut heads: BTreeMap<&str, &Row> = BTreeMap::new();
        for row in &self.pending {
            heads.entry(row.key.as_str()).or_insert(row);
        }
        let mut ready: Vec<Row> = heads.into_values().filter(|r| r.next <= self.now).cloned().collect();
        ready.sort_by_key(|r| (r.next, r.seq));
        ready
    }

    fn take(&mut self, id: &str) -> Row {
        let i = self.pending.iter().position(|r| r.id == id).unwrap();
        self.pending.remove(i)
    }
}

fn run(steps: Vec<Step>, config: OutboxConfig) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.sqlite");
    runtime().block_on(async {
        let mut outbox = Outbox::open(&path, config).unwrap();
        let mut model = Model::default();
        for step in steps {
            let ready = model.ready();
            match step {
                Step::Append(events, state) => {
                    let events: Vec<NewEvent> = events
                        .into_iter()
                        .map(|(id, key, len)| NewEvent {
                            id: format!("id{id}"),
                            order_key: format!("key{key}"),
                            body: vec![b'a' + id % 26; usize::from(len)],
                            created_ms: model.now,
                        })
                        .collect();
                    let state: Vec<StateChange> = state
                        .into_iter()
                        .map(|(k, v)| StateChange { key: format!("call/{k}"), value: v.map(|v| vec![v]) })
                        .collect();
                    for e in &events {
                        model.append(e, &config);
                    }
                    for s in &state {
                        match &s.value {
                            Some(v) => model.state.insert(s.key.clone(), v.clone()),
                            None => model.state.remove(&s.key),
                        };
                    }
                    outbox.append(events, state).await.unwrap();
                }
                Step::Deliver(i) if i < ready.len() => {
                    model.take(&ready[i].id);
                    prop_assert!(outbox.delivered(&ready[i].id).await.unwrap());
                }
                Step::Retry(i, delay) if i < ready.len() => {
                    let next = model.now + delay;
                    model.pending.iter_mut().find(|r| r.id == ready[i].id).unwrap().next = next;
                    prop_assert!(outbox.retry_later(&ready[i].id, next, 1, "503").await.unwrap());
                }
                Step::Quarantine(i) if i < ready.len() => {
                    let row = model.take(&ready[i].id);
                    model.quarantine.push(row);
                    prop_assert!(outbox.quarantine(&ready[i].id, Some(400), "bad").await.unwrap());
                }
                Step::Requeue => {
                    model.quarantine.sort_by_key(|r| r.seq);
                    for mut row in std::mem::take(&mut model.quarantine) {
                        model.next_seq += 1;
                        row.seq = model.next_seq;
                        row.next = 0;
                        model.pending.push(row);
                    }
                    Inspector::open(&path).unwrap().requeue_quarantined().unwrap();
                }
                Step::Advance(by) => model.now += by,
                Step::Reopen => {
                    outbox.close();
                    outbox = Outbox::open(&path, config).unwrap();
                }
                Step::Deliver(_) | Step::Retry(..) | Step::Quarantine(_) => {}
            }
            let got = outbox.ready_heads(model.now, 100).await.unwrap();
            let want = model.ready();
            prop_assert_eq!(
                got.iter().map(|e| (&e.id, &e.body)).collect::<Vec<_>>(),
                want.iter().map(|r| (&r.id, &r.body)).collect::<Vec<_>>()
            );
            let stats = outbox.stats().await.unwrap();
            prop_assert_eq!(stats.pending_events, model.pending.len() as u64);
            prop_assert_eq!(stats.quarantined_events, model.quarantine.len() as u64);
            prop_assert_eq!(stats.pending_bytes + stats.quarantined_bytes, model.bytes());
            prop_assert_eq!(
                (stats.duplicates_total, stats.dropped_oldest_total, stats.dropped_newest_total),
                (model.duplicates, model.dropped_oldest, model.dropped_newest)
            );
            let state: BTreeMap<String, Vec<u8>> = outbox.load_state().await.unwrap().into_iter().collect();
            prop_assert_eq!(&state, &model.state);
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn matches_the_model_uncapped(steps in prop::collection::vec(step(), 1..40)) {
        run(steps, BIG)?;
    }

    #[test]
    fn matches_the_model_drop_oldest(steps in prop::collection::vec(step(), 1..40)) {
        run(steps, OutboxConfig::new(60, WhenFull::DropOldest))?;
    }

    #[test]
    fn matches_the_model_drop_newest(steps in prop::collection::vec(step(), 1..40)) {
        run(steps, OutboxConfig::new(60, WhenFull::DropNewest))?;
    }
}
