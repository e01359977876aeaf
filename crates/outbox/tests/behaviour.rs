//! The outbox's contract, one behaviour per test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use outbox::{
    Inspector, NewEvent, OpenError, Outbox, OutboxConfig, Purge, QuarantineReason, RowState, Selection, StateChange,
    WhenFull,
};

#[test]
fn accepted_events_survive_reopen_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.sqlite");
    let body = r#"{"status":"ringing","meta":{"k":"ü"}}"#;
    runtime().block_on(async {
        let outbox = open(&path);
        let receipt = outbox.append(vec![event("a", "k1", body), event("b", "k1", "{}")], vec![]).await.unwrap();
        assert_eq!(receipt.accepted, 2);
        outbox.close();
        let outbox = open(&path);
        let heads = outbox.ready_heads(0, 10).await.unwrap();
        assert_eq!(ids(&heads), ["a"]);
        assert_eq!(heads[0].body, body.as_bytes());
        assert_eq!(heads[0].order_key, "k1");
        assert_eq!(heads[0].created_ms, 1_000);
    });
}

#[test]
fn heads_are_per_key_in_append_order() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let outbox = open(&dir.path().join("o.sqlite"));
        outbox
            .append(
                vec![event("a1", "a", "1"), event("b1", "b", "1"), event("a2", "a", "2"), event("c1", "c", "1")],
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(ids(&outbox.ready_heads(0, 10).await.unwrap()), ["a1", "b1", "c1"]);
        assert_eq!(ids(&outbox.ready_heads(0, 2).await.unwrap()), ["a1", "b1"]);
        assert!(outbox.delivered("a1").await.unwrap());
        assert!(!outbox.delivered("a1").await.unwrap(), "a second delivery finds nothing");
        assert_eq!(ids(&outbox.ready_heads(0, 10).await.unwrap()), ["b1", "a2", "c1"], "oldest first across keys");
    });
}

#[test]
fn a_retried_head_holds_back_its_key_until_due() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let outbox = open(&dir.path().join("o.sqlite"));
        outbox.append(vec![event("a1", "a", "1"), event("a2", "a", "2"), event("b1", "b", "1")], vec![]).await.unwrap();
        assert!(outbox.retry_later("a1", 5_000, 1, "503 Service Unavailable").await.unwrap());
        assert_eq!(ids(&outbox.ready_heads(4_999, 10).await.unwrap()), ["b1"]);
        assert_eq!(outbox.next_due_ms().await.unwrap(), Some(0));
        outbox.delivered("b1").await.unwrap();
        assert_eq!(outbox.next_due_ms().await.unwrap(), Some(5_000));
        let due = outbox.ready_heads(5_000, 10).await.unwrap();
        assert_eq!(ids(&due), ["a1"]);
        assert_eq!(due[0].attempts, 1);
        assert_eq!(due[0].last_error.as_deref(), Some("503 Service Unavailable"));
    });
}

#[test]
fn duplicate_ids_are_stored_once_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let outbox = open(&dir.path().join("o.sqlite"));
        outbox.append(vec![event("a", "k", "first")], vec![]).await.unwrap();
        let receipt = outbox
            .append(vec![event("a", "k", "second"), event("b", "k", "b"), event("b", "k", "b")], vec![])
            .await
            .unwrap();
        assert_eq!((receipt.accepted, receipt.duplicates), (1, 2));
        outbox.quarantine("a", Some(400), "bad").await.unwrap();
        let receipt = outbox.append(vec![event("a", "k", "third")], vec![]).await.unwrap();
        assert_eq!(receipt.duplicates, 1, "a quarantined id is a duplicate too");
        let stats = outbox.stats().await.unwrap();
        assert_eq!((stats.pending_events, stats.quarantined_events, stats.duplicates_total), (1, 1, 3));
        let rows = outbox.inspector().unwrap().list(Selection::Quarantined, 10).unwrap();
        assert_eq!(rows[0].id.as_deref(), Some("a"));
    });
}

#[test]
fn state_is_written_with_the_events_and_deleted_by_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.sqlite");
    runtime().block_on(async {
        let outbox = open(&path);
        let set = |k: &str, v: &str| StateChange { key: k.into(), value: Some(v.as_bytes().to_vec()) };
        outbox.append(vec![event("a", "k", "1")], vec![set("call/p/1", "x"), set("call/p/2", "y")]).await.unwrap();
        outbox
            .apply_state(vec![StateChange { key: "call/p/1".into(), value: None }, set("call/p/2", "z")])
            .await
            .unwrap();
        outbox.close();
        let outbox = open(&path);
        assert_eq!(outbox.load_state().await.unwrap(), vec![("call/p/2".to_string(), b"z".to_vec())]);
    });
}

#[test]
fn drop_oldest_evicts_the_oldest_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        // Each event counts 1 (id) + 1 (key) + 8 (body) = 10 bytes.
        let outbox = Outbox::open(&dir.path().join("o.sqlite"), OutboxConfig::new(30, WhenFull::DropOldest)).unwrap();
        outbox.append(vec![event("a", "k", "12345678"), event("b", "j", "12345678")], vec![]).await.unwrap();
        let receipt =
            outbox.append(vec![event("c", "k", "12345678"), event("d", "k", "12345678")], vec![]).await.unwrap();
        assert_eq!((receipt.accepted, receipt.dropped_oldest), (2, 1));
        assert_eq!(ids(&outbox.ready_heads(0, 10).await.unwrap()), ["b", "c"]);
        let stats = outbox.stats().await.unwrap();
        assert_eq!((stats.pending_events, stats.pending_bytes, stats.dropped_oldest_total), (3, 30, 1));
        // Larger than the whole cap: refused whatever the policy.
        let receipt = outbox.append(vec![event("big", "k", &"x".repeat(40))], vec![]).await.unwrap();
        assert_eq!(receipt.dropped_newest, 1);
    });
}

#[test]
fn drop_newest_refuses_and_keeps_what_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let outbox = Outbox::open(&dir.path().join("o.sqlite"), OutboxConfig::new(20, WhenFull::DropNewest)).unwrap();
        let receipt = outbox
            .append(vec![event("a", "k", "12345678"), event("b", "k", "12345678"), event("c", "k", "12345678")], vec![])
            .await
            .unwrap();
        assert_eq!((receipt.accepted, receipt.dropped_newest), (2, 1));
        outbox.delivered("a").await.unwrap();
        let receipt = outbox.append(vec![event("d", "k", "12345678")], vec![]).await.unwrap();
        assert_eq!(receipt.accepted, 1, "room again after a delivery");
        let stats = outbox.stats().await.unwrap();
        assert_eq!((stats.pending_events, stats.dropped_newest_total), (2, 1));
    });
}

#[test]
fn refuses_a_cap_larger_than_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let err =
        Outbox::open(&dir.path().join("o.sqlite"), OutboxConfig::new(u64::MAX / 4, WhenFull::DropOldest)).unwrap_err();
    assert!(matches!(err, OpenError::NotEnoughSpace { .. }), "{err}");
    assert!(!dir.path().join("o.sqlite").exists(), "nothing created when refusing");
}

#[test]
fn refuses_a_schema_from_the_future() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.sqlite");
    drop(open(&path));
    rusqlite::Connection::open(&path).unwrap().execute_batch("PRAGMA user_version = 99").unwrap();
    let err = Outbox::open(&path, BIG).unwrap_err();
    assert!(matches!(err, OpenError::SchemaTooNew { found: 99, .. }), "{err}");
}

#[test]
fn quarantine_then_requeue_from_another_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.sqlite");
    runtime().block_on(async {
        let outbox = open(&path);
        outbox.append(vec![event("a1", "a", "1"), event("a2", "a", "2")], vec![]).await.unwrap();
        assert!(outbox.quarantine("a1", Some(422), "{\"error\":\"invalid\"}").await.unwrap());
        assert_eq!(ids(&outbox.ready_heads(0, 10).await.unwrap()), ["a2"], "the key moves on");
        let mut cli = Inspector::open(&path).unwrap();
        let rows = cli.list(Selection::Quarantined, 10).unwrap();
        match &rows[0].state {
            RowState::Quarantined { reason, status, detail, .. } => {
                assert_eq!((*reason, *status), (QuarantineReason::Rejected, Some(422)));
                assert_eq!(detail.as_deref(), Some("{\"error\":\"invalid\"}"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(cli.requeue_quarantined().unwrap(), 1);
        outbox.delivered("a2").await.unwrap();
        assert_eq!(ids(&outbox.ready_heads(0, 10).await.unwrap()), ["a1"]);
        let stats = outbox.stats().await.unwrap();
        assert_eq!((stats.pending_events, stats.quarantined_events), (1, 0));
    });
}

#[test]
fn purge_from_the_cli_while_the_daemon_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.sqlite");
    runtime().block_on(async {
        let outbox = open(&path);
        let mut old = event("old", "a", "1");
        old.created_ms = 10;
        outbox.append(vec![old, event("new", "a", "2"), event("q", "b", "3")], vec![]).await.unwrap();
        outbox.quarantine("q", Some(400), "no").await.unwrap();
        let mut cli = Inspector::open(&path).unwrap();
        let report = cli.purge(Purge::CreatedBefore(500)).unwrap();
        assert_eq!((report.pending, report.quarantined), (1, 0));
        assert_eq!(ids(&outbox.ready_heads(0, 10).await.unwrap()), ["new"], "the head moved past the purged event");
        assert_eq!(cli.purge(Purge::Quarantined).unwrap().quarantined, 1);
        outbox.append(vec![event("more", "c", "4")], vec![]).await.unwrap();
        let report = cli.purge(Purge::All).unwrap();
        assert_eq!((report.pending, report.quarantined), (2, 0));
        assert!(outbox.ready_heads(0, 10).await.unwrap().is_empty());
        let stats = cli.stats().unwrap();
        assert_eq!((stats.pending_events, stats.pending_bytes, stats.purged_total), (0, 0, 4));
        // The daemon's writer keeps working after the CLI wrote.
        assert_eq!(outbox.append(vec![event("after", "a", "5")], vec![]).await.unwrap().accepted, 1);
        assert_eq!(outbox.stats().await.unwrap().pending_events, 1);
    });
}

#[test]
fn export_writes_the_stored_bytes_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.sqlite");
    runtime().block_on(async {
        let outbox = open(&path);
        let body = r#"{"z":1,"a":[true,null]}"#;
        outbox.append(vec![event("a", "k", body), event("b", "k", "not json")], vec![]).await.unwrap();
        let mut out = Vec::new();
        assert_eq!(Inspector::open(&path).unwrap().export(Selection::All, &mut out).unwrap(), 2);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with(&format!(",\"body\":{body}}}")), "{}", lines[0]);
        let parsed: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(parsed["body"], "not json");
        assert_eq!(parsed["state"], "pending");
        assert_eq!(parsed["id"], "b");
    });
}

#[test]
fn stats_report_oldest_age_and_schema() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let outbox = open(&dir.path().join("o.sqlite"));
        let mut e = event("a", "k", "1");
        e.created_ms = 7_000;
        outbox.append(vec![e, event("b", "k", "2")], vec![]).await.unwrap();
        let stats = outbox.stats().await.unwrap();
        assert_eq!(stats.schema_version, outbox::SCHEMA_VERSION);
        assert_eq!(stats.oldest_pending_age_ms(10_000), Some(3_000));
        assert_eq!((stats.appended_total, stats.pending_events), (2, 2));
        assert!(stats.file_bytes > 0);
    });
}

#[test]
fn wakes_the_forwarder_when_events_commit() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let outbox = open(&dir.path().join("o.sqlite"));
        let waiter = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.appended().await }
        });
        outbox.append(vec![event("a", "k", "1")], vec![]).await.unwrap();
        waiter.await.unwrap();
        // A commit with nobody waiting leaves a permit.
        outbox.append(vec![event("b", "k", "1")], vec![]).await.unwrap();
        outbox.appended().await;
    });
}

#[test]
fn concurrent_appends_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let outbox = open(&dir.path().join("o.sqlite"));
        let tasks: Vec<_> = (0..400)
            .map(|i| {
                let outbox = outbox.clone();
                tokio::spawn(async move {
                    outbox.append(vec![event(&format!("e{i}"), &format!("k{}", i % 7), "{}")], vec![]).await.unwrap()
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().accepted, 1);
        }
        let stats = outbox.writer_stats();
        assert_eq!(stats.requests, 400);
        assert!(stats.commits <= stats.requests);
        assert_eq!(outbox.stats().await.unwrap().pending_events, 400);
    });
}

#[test]
fn from_outgoing_serialises_the_lifecycle_event() {
    use listener_core::*;
    let ctx = EventContext { account_id: uuid::Uuid::nil(), account_name: "T".into(), static_meta: Default::default() };
    let mut lc = CallLifecycle::new(ctx);
    let pbx = PbxId::new("site-1", PbxType::new("avaya-r11"));
    lc.handle_signal(CorrelatedSignal {
        signal: PbxSignal {
            pbx,
            at: UnixMillis(1_000),
            source: "devlink3",
            facts: Facts::new(),
            body: SignalBody::Call(CallSignal {
                call: PbxCallId("7".into()),
                call_started: UnixMillis(1_000),
                extension: Some(Extension("201".into())),
                change: CallChange::Ringing,
                info: CallInfo::default(),
            }),
        },
        binding: LegBinding::unmatched(),
    });
    let out = lc.poll_event().unwrap();
    let new = NewEvent::from_outgoing(&out, 5).unwrap();
    assert_eq!(new.id, out.id.to_string());
    assert_eq!(new.order_key, out.order_key.to_string());
    let back: generic_event::GenericEvent = serde_json::from_slice(&new.body).unwrap();
    assert_eq!(back, out.event);
}
