//! Helpers shared by the outbox tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use outbox::{NewEvent, Outbox, OutboxConfig, WhenFull};

pub const BIG: OutboxConfig = OutboxConfig { max_bytes: 64 << 20, when_full: WhenFull::DropOldest };

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

pub fn event(id: &str, key: &str, body: &str) -> NewEvent {
    NewEvent { id: id.into(), order_key: key.into(), body: body.as_bytes().to_vec(), created_ms: 1_000 }
}

pub fn open(path: &Path) -> Outbox {
    Outbox::open(path, BIG).unwrap()
}

/// Copies the database and its WAL as they are now, as a crash would leave them.
pub fn crash_image(path: &Path, into: &Path) -> PathBuf {
    let target = into.join("crash.sqlite");
    std::fs::copy(path, &target).unwrap();
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    if wal.exists() {
        std::fs::copy(&wal, format!("{}-wal", target.display())).unwrap();
    }
    target
}

pub fn ids(events: &[outbox::PendingEvent]) -> Vec<&str> {
    events.iter().map(|e| e.id.as_str()).collect()
}
