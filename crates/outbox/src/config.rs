//! What the outbox is told at open: its byte cap and what to do when the cap is reached.

use serde::{Deserialize, Serialize};

/// How the outbox behaves when storing an event would exceed [`OutboxConfig::max_bytes`].
///
/// PBX feeds cannot be back-pressured (the PBX would stall or drop), so blocking is not offered:
/// the loss is explicit, counted and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Evict the oldest stored events (pending first, then quarantined) to make room.
    DropOldest,
    /// Refuse the new event; what is stored stays.
    DropNewest,
}

/// How an outbox is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxConfig {
    /// The cap on stored bytes (event bodies, ids and order keys, pending and quarantined).
    /// SQLite's own overhead comes on top; see [`crate::SPACE_FACTOR`].
    pub max_bytes: u64,
    /// What happens when an append would exceed `max_bytes`.
    pub when_full: WhenFull,
}

impl OutboxConfig {
    /// A config with the given cap and policy.
    pub fn new(max_bytes: u64, when_full: WhenFull) -> OutboxConfig {
        OutboxConfig { max_bytes, when_full }
    }
}
