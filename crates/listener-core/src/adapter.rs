//! The [`Adapter`] trait: how the daemon runs a PBX adapter.
//!
//! An adapter owns its connection to one PBX. The daemon calls [`Adapter::run`] once; the adapter
//! connects, reconnects with backoff, and sends what it sees to a [`SignalSink`] until the
//! `shutdown` future resolves. This module names no runtime (no tokio): the daemon implements
//! [`SignalSink`] over its channel, and adapters bring their own IO.

use std::future::Future;
use std::pin::Pin;

use crate::signal::{PbxCallId, PbxId, PbxSignal, UnixMillis};

/// A boxed, sendable future (the trait must be object safe: the daemon holds `Box<dyn Adapter>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an adapter tells the pipeline.
// `Signal` is by far the most common variant; boxing it would cost an allocation per signal to
// shrink the rare ones.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterEvent {
    /// A PBX fact.
    Signal(PbxSignal),
    /// The link to the PBX changed state (for health, metrics and `STATUS=`).
    Link {
        /// The PBX.
        pbx: PbxId,
        /// Its new state.
        state: LinkState,
    },
    /// After (re)connecting, the PBX's snapshot of live calls is complete: every call of this
    /// PBX that is still open in the pipeline but not listed here ended while we could not see
    /// it. The lifecycle closes its devices with `disconnected` and `meta.reconciled = "true"`.
    Resync {
        /// The PBX.
        pbx: PbxId,
        /// The calls the PBX says are live.
        live_calls: Vec<PbxCallId>,
        /// When the snapshot completed (the timestamp of synthesized events).
        at: UnixMillis,
    },
    /// Remember `value` under `key` for this PBX across restarts (`None` forgets the key).
    ///
    /// The daemon commits it in the same transaction as the events of the signals this adapter
    /// sent before it, never earlier, and hands every remembered key back to
    /// [`crate::PbxKind::build`] at the next start. Adapters whose PBX may send a fact twice
    /// (SMDR replays its buffer after an outage) use it to emit each fact once. Keep the keys
    /// bounded: forget what can no longer come back.
    Checkpoint {
        /// The PBX.
        pbx: PbxId,
        /// The adapter's own key (any string; the daemon prefixes it with the PBX's name).
        key: String,
        /// The value, or `None` to forget the key.
        value: Option<Vec<u8>>,
    },
}

/// The state of the link to a PBX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Connecting or authenticating.
    Connecting,
    /// Connected, authenticated and subscribed: signals flow.
    Up,
    /// Not connected; the adapter will retry.
    Down {
        /// Why, for people.
        reason: String,
    },
    /// The PBX refused our credentials; the adapter backs off hard (the PBX may lock the account).
    AuthFailed {
        /// Why, for people.
        reason: String,
    },
}

/// The pipeline is gone (the daemon is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the pipeline is closed")]
pub struct SinkClosed;

/// Where an adapter sends its events, in order. Sending waits when the pipeline is busy
/// (a bounded channel), which slows reading from the PBX socket instead of losing signals.
pub trait SignalSink: Send + Sync {
    /// Sends one event.
    fn send(&self, event: AdapterEvent) -> BoxFuture<'_, Result<(), SinkClosed>>;
}

/// Why an adapter stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The pipeline closed under it.
    #[error(transparent)]
    SinkClosed(#[from] SinkClosed),
    /// A fault it cannot recover from by reconnecting (e.g. a certificate file that vanished).
    #[error("{0}")]
    Fatal(String),
}

/// A PBX adapter. One instance per `[[pbx]]` block.
pub trait Adapter: Send {
    /// The PBX it reads.
    fn pbx(&self) -> &PbxId;

    /// Runs until `shutdown` resolves (then returns `Ok`), reconnecting as needed. Returns an
    /// error only for faults that reconnecting cannot fix.
    fn run<'a>(
        self: Box<Self>,
        sink: &'a dyn SignalSink,
        shutdown: BoxFuture<'a, ()>,
    ) -> BoxFuture<'a, Result<(), AdapterError>>;
}
