//! The core every adapter and the daemon share: [`PbxSignal`], the [`Adapter`] trait and the
//! [`PbxKind`] a PBX type implements for the daemon's table, number
//! normalisation ([`NumberPlan`]), correlation's output ([`LegBinding`]) and the
//! [`CallLifecycle`] that turns correlated signals into Level 3 events that keep the contract;
//! also the per-source connection cap ([`SourceLimiter`]) the network listeners share.
//!
//! ```text
//! adapter ─► PbxSignal ─► (NumberPlan) ─► correlation ─► CorrelatedSignal ─► CallLifecycle ─► OutgoingEvent
//! ```
//!
//! ```
//! use listener_core::*;
//! use uuid::Uuid;
//!
//! let ctx = EventContext { account_id: Uuid::nil(), account_name: "Test".into(), static_meta: Default::default() };
//! let mut lifecycle = CallLifecycle::new(ctx);
//! let pbx = PbxId::new("site-1", PbxType::new("avaya-r11"));
//! let ring = PbxSignal {
//!     pbx: pbx.clone(),
//!     at: UnixMillis(1_000),
//!     source: "devlink3",
//!     facts: Facts::new(),
//!     body: SignalBody::Call(CallSignal {
//!         call: PbxCallId("7".into()),
//!         call_started: UnixMillis(1_000),
//!         extension: Some(Extension("201".into())),
//!         change: CallChange::Ringing,
//!         info: CallInfo::default(),
//!     }),
//! };
//! lifecycle.handle_signal(CorrelatedSignal { signal: ring, binding: LegBinding::unmatched() });
//! // The link dropped and the PBX no longer lists call 7: the ringing phone is closed.
//! lifecycle.handle_resync(&pbx, &[], UnixMillis(5_000));
//! let statuses: Vec<_> = std::iter::from_fn(|| lifecycle.poll_event()).map(|e| e.event.status.as_str()).collect();
//! assert_eq!(statuses, ["ringing", "disconnected"]);
//! ```
//!
//! *Invariant:* nothing in this crate does IO, reads a clock or spawns a task; time is passed in.

#![warn(missing_docs)]

mod adapter;
mod binding;
mod kind;
mod lifecycle;
mod number;
mod secret;
mod signal;
pub mod small_map;
mod source_limit;

pub use adapter::{Adapter, AdapterError, AdapterEvent, BoxFuture, LinkState, SignalSink, SinkClosed};
pub use binding::{CorrelatedSignal, LegBinding, MatchMethod};
pub use kind::{
    AdapterState, LoadContext, MetricDescription, MetricKind, PbxKind, SettingError, SettingErrors, serde_fields,
};
pub use lifecycle::{CallLifecycle, EventContext, OutgoingEvent, RestoreError, STANDARD_META_KEYS, StateChange};
pub use number::{NumberCache, NumberPlan, NumberPlanError, WITHHELD};
pub use secret::Secret;
pub use signal::{
    AFTER_THE_FACT_SOURCES, CallChange, CallInfo, CallSignal, Direction, DisconnectReason, Extension, ExtensionSignal,
    ExtensionState, Facts, PbxCallId, PbxId, PbxSignal, PbxType, SignalBody, UnixMillis,
};
pub use source_limit::{SourceGuard, SourceLimiter, source_of};
