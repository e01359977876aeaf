//! Damage the outbox cannot prevent (disks, crashes, hands) is recovered from without a
//! person: skipped, counted, reported, moved aside.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use outbox::{Inspector, QuarantineReason, RowState, Selection, StateChange};
use proptest::prelude::*;

fn tamper(path: &std::path::Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(sql).unwrap();
}

#[test]
fn garbage_in_a_body_is_moved_aside_and_the_key_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.sqlite");
    runtime().block_on(async {
        let outbox = open(&path);
        outbox.append(vec![event("a1", "a", "{\"n\":1}"), event("a2", "a", "{\"n\":2}")], vec![]).await.unwrap();
        tamper(&path, "UPDATE events SET body = X'DEADBEEF' WHERE id = 'a1'");
        assert!(outbox.ready_heads(0, 10).await.unwrap().is_empty(), "the damaged head is not sent");
        assert_eq!(ids(&outbox.ready_heads(0, 10).await.unwrap()), ["a2"]);
        let stats = outbox.stats().await.unwrap();
        assert_eq!((stats.corrupt_total, stats.corrupt_quarantined_events, stats.pending_events), (1, 1, 1));
        let rows = Inspector::open(&path).unwrap().list(Selection::Quarantined, 10).unwrap();
        assert_eq!(rows[0].id.as_deref(), Some("a1"));
        assert!(matches!(&rows[0].state, RowState::Quarantined { reason: QuarantineReason::Corrupt, detail: Some(d), .. } if d.contains("checksum")));
    });
}

#[test]
fn columns_of_the_wrong_type_are_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.sqlite");
    runtime().block_on(async {
        let outbox = open(&path);
        outbox
            .append(
                vec![event("a", "a", "1"), event("b", "b", "1"), event("c", "c", "1"), event("d", "d", "1")],
                vec![],
            )
            .await
            .unwrap();
        // SQLite columns take any type: what a bad disk block or a hand could leave.
        tamper(
            &path,
            "UPDATE events SET body = 'text, not a blob' WHERE id = 'a';
             UPDATE events SET checksum = 'x' WHERE id = 'b';
             UPDATE events SET created_ms = -5 WHERE id = 'c';",
        );
        assert_eq!(ids(&outbox.ready_heads(0, 10).await.unwrap()), ["d"]);
        assert_eq!(outbox.stats().await.unwrap().corrupt_total, 3);
        assert!(outbox.ready_heads(0, 10).await.unwrap().iter().all(|e| e.id == "d"));
    });
}

#[test]
fn a_file_that_is_not_a_database_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.sqlite");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    runtime().block_on(async {
        let outbox = open(&path);
        assert_eq!(outbox.stats().await.unwrap().corrupt_databases_total, 1);
        assert_eq!(outbox.append(vec![event("a", "k", "1")], vec![]).await.unwrap().accepted, 1);
    });
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged file is kept for forensics");
}

#[test]
fn drifted_counters_and_heads_heal_before_the_first_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.sqlite");
    runtime().block_on(async {
        let outbox = open(&path);
        outbox.append(vec![event("a1", "a", "1"), event("a2", "a", "2"), event("b1", "b", "1")], vec![]).await.unwrap();
        outbox.close();
        tamper(
            &path,
            "UPDATE counters SET value = 999 WHERE name = 'pending_bytes';
             DELETE FROM heads WHERE order_key = 'b';
             UPDATE heads SET head_seq = 2 WHERE order_key = 'a';",
        );
        let outbox = open(&path);
        // The writer heals in its first transaction, before any write: once a write is
        // answered, the healing has committed.
        outbox.apply_state(vec![]).await.unwrap();
        assert_eq!(ids(&outbox.ready_heads(0, 10).await.unwrap()), ["a1", "b1"]);
        assert_eq!(outbox.stats().await.unwrap().pending_bytes, 12);
    });
}

#[test]
fn a_stale_head_is_repaired_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.sqlite");
    runtime().block_on(async {
        let outbox = open(&path);
        outbox.append(vec![event("a1", "a", "1"), event("a2", "a", "2")], vec![]).await.unwrap();
        tamper(&path, "DELETE FROM events WHERE id = 'a1'");
        assert!(outbox.ready_heads(0, 10).await.unwrap().is_empty());
        assert_eq!(ids(&outbox.ready_heads(0, 10).await.unwrap()), ["a2"]);
    });
}

/// Appends `n` events, each in its own commit with a state record of the same number.
fn crash_image_of_appends(n: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.sqlite");
    runtime().block_on(async {
        let outbox = open(&path);
        for i in 0..n {
            let state = StateChange { key: format!("call/{i}"), value: Some(vec![i as u8]) };
            outbox
                .append(vec![event(&format!("e{i}"), &format!("k{}", i % 3), &"x".repeat(300))], vec![state])
                .await
                .unwrap();
        }
        let image_dir = dir.path().join("image");
        std::fs::create_dir(&image_dir).unwrap();
        let image = crash_image(&path, &image_dir);
        // Keep the live outbox open until the image is taken (no checkpoint-on-close).
        drop(outbox);
        (dir, image)
    })
}

#[test]
fn a_crash_image_holds_every_accepted_event() {
    let (_dir, image) = crash_image_of_appends(20);
    runtime().block_on(async {
        let outbox = open(&image);
        let stats = outbox.stats().await.unwrap();
        assert_eq!(stats.pending_events, 20);
        assert_eq!(outbox.load_state().await.unwrap().len(), 20);
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// A WAL torn anywhere (a crash mid-write) loses a suffix of whole commits: what is left
    /// is a prefix of the appends, each with its state record, never one without the other.
    #[test]
    fn a_truncated_wal_keeps_a_prefix_of_whole_commits(cut in 0.0f64..1.0) {
        let (_dir, image) = crash_image_of_appends(12);
        let wal = format!("{}-wal", image.display());
        let len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        if len > 0 {
            let file = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
            file.set_len((len as f64 * cut) as u64).unwrap();
        }
        runtime().block_on(async {
            let outbox = open(&image);
            let mut pending: Vec<usize> = Inspector::open(&image).unwrap().list(Selection::Pending, 100).unwrap()
                .iter().map(|r| r.id.as_deref().unwrap()[1..].parse().unwrap()).collect();
            pending.sort_unstable();
            let mut states: Vec<usize> = outbox.load_state().await.unwrap().iter()
                .map(|(k, _)| k["call/".len()..].parse().unwrap()).collect();
            states.sort_unstable();
            prop_assert_eq!(&pending, &(0..pending.len()).collect::<Vec<_>>());
            prop_assert_eq!(&pending, &states);
            let stats = outbox.stats().await.unwrap();
            prop_assert_eq!(stats.pending_events as usize, pending.len());
            Ok(())
        })?;
    }
}
