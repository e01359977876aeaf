//! Delivery of outbox events to the platform over HTTPS.
//!
//! One event per POST, the exact stored bytes, signed with Standard Webhooks headers
//! (`webhook-id` = the event id, `webhook-timestamp` = the attempt time,
//! `webhook-signature` from one or two `whsec_` secrets), optionally with a bearer token.
//!
//! - **Order:** only the head of each order key (a call) is ever in flight, so a call's events
//!   arrive in order; different calls go concurrently up to `max_concurrency`.
//! - **Outcomes** ([`policy::classify`]): 2xx deletes the event; 408/429/5xx/3xx and network
//!   errors are retried for ever; 410 stops all delivery ([`DeliveryState::EndpointGone`]);
//!   any other 4xx moves the event to the outbox quarantine, loudly.
//! - **Outages** ([`policy::Gate`]): a retryable failure pauses *all* delivery for a capped,
//!   fully jittered exponential backoff (or the platform's `Retry-After`), then one probe goes;
//!   its success reopens delivery, resets the backoff and logs "Delivery recovered after …".
//!
//! The daemon loads [`ForwarderConfig`] (its `[platform]` table) into [`ForwarderSettings`],
//! builds a [`Forwarder`] on its [`outbox::Outbox`], keeps [`Forwarder::status`] for health
//! and metrics, and spawns [`Forwarder::run`] with its shutdown signal.
//!
//! *Architecture invariant:* the policy ([`policy`]) does no IO and reads no clock; only
//! `Forwarder::run` and its attempt tasks touch the network, the outbox and the time.

#![warn(missing_docs)]

mod config;
mod events;
pub mod policy;
mod tls;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use config::{BearerToken, ConfigError, ForwarderConfig, ForwarderSettings};
use outbox::{Outbox, OutboxError, PendingEvent};
use policy::{Backoff, Gate, GateState, Permit, Verdict};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long the loop sleeps at most when idle: it also picks up what the CLI requeued.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Deletes (or quarantines) of answered events that may wait for their commit, per request
/// slot, before they take slots away from new requests.
const UNCOMMITTED_PER_SLOT: usize = 4;
/// The longest response excerpt kept with a failed attempt.
const EXCERPT_BYTES: usize = 512;

/// Where delivery stands, for `/health/ready`, metrics and `systemctl status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// The platform answers.
    Delivering,
    /// The platform fails; nothing is sent before `until_ms`.
    BackingOff {
        /// When the outage started (ms since the Unix epoch).
        since_ms: u64,
        /// Failed attempts in this outage.
        attempts: u64,
        /// When the next probe goes.
        until_ms: u64,
    },
    /// The pause is over; one probe at a time.
    Probing {
        /// When the outage started.
        since_ms: u64,
        /// Failed attempts in this outage.
        attempts: u64,
    },
    /// The platform answered 410 Gone: delivery is stopped until a restart.
    EndpointGone {
        /// When (ms since the Unix epoch).
        since_ms: u64,
    },
}

/// Delivery state and totals since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryStatus {
    /// Where delivery stands.
    pub state: DeliveryState,
    /// When the last event was delivered (ms since the Unix epoch).
    pub last_success_ms: Option<u64>,
    /// Events delivered.
    pub delivered: u64,
    /// Events moved to the quarantine.
    pub quarantined: u64,
    /// Attempts that failed and will be retried.
    pub retried: u64,
}

/// The last failed delivery attempt, for `pbx-listener status` ("why is the platform unhappy?").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryFailure {
    /// When it failed (ms since the Unix epoch).
    pub at_ms: u64,
    /// The HTTP status, or `None` for a network error.
    pub status: Option<u16>,
    /// What happened to the event.
    pub outcome: FailureOutcome,
    /// The response excerpt (`HTTP <status>: <body start>`) or the network error.
    pub error: String,
}

/// What a failed attempt did to its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Kept, retried after the backoff.
    Retrying,
    /// Moved to the quarantine (a 4xx other than 408/410/429).
    Quarantined,
    /// Kept; delivery stopped (410 Gone).
    Gone,
}

impl FailureOutcome {
    /// A stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureOutcome::Retrying => "retrying",
            FailureOutcome::Quarantined => "quarantined",
            FailureOutcome::Gone => "gone",
        }
    }
}

/// The HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientError(#[source] reqwest::Error);

/// Why [`Forwarder::run`] stopped before shutdown.
#[derive(Debug, thiserror::Error)]
pub enum ForwarderError {
    /// The outbox failed fatally ([`OutboxError::is_fatal`]): exit and let systemd restart.
    #[error("the outbox failed: {0}")]
    Outbox(#[from] OutboxError),
}

/// The delivery loop. See the crate documentation.
pub struct Forwarder {
    ctx: Arc<Ctx>,
    status: watch::Sender<DeliveryStatus>,
    last_failure: watch::Sender<Option<DeliveryFailure>>,
    reconfigure: watch::Sender<Option<Arc<Ctx>>>,
}

/// Applies new `[platform]` settings to a running forwarder (a configuration reload): requests
/// in flight finish with the old settings, the next ones use the new; nothing is resent.
#[derive(Clone)]
pub struct ForwarderReconfigurer {
    outbox: Outbox,
    tx: watch::Sender<Option<Arc<Ctx>>>,
}

impl std::fmt::Debug for ForwarderReconfigurer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwarderReconfigurer").finish_non_exhaustive()
    }
}

impl ForwarderReconfigurer {
    /// Builds the HTTP client for `settings` and hands both to the forwarder.
    pub fn apply(&self, settings: ForwarderSettings) -> Result<(), ClientError> {
        let client = build_client(&settings)?;
        self.tx.send_replace(Some(Arc::new(Ctx { outbox: self.outbox.clone(), settings, client })));
        Ok(())
    }
}

fn build_client(settings: &ForwarderSettings) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .tls_backend_preconfigured((*settings.tls).clone())
        .timeout(settings.timeout)
        .connect_timeout(settings.connect_timeout)
        // Standard Webhooks: a redirect is a failure, never followed.
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(settings.max_concurrency)
        .tcp_nodelay(true)
        .user_agent(concat!("pbx-listener/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(ClientError)
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").field("settings", &self.ctx.settings).finish_non_exhaustive()
    }
}

struct Ctx {
    outbox: Outbox,
    settings: ForwarderSettings,
    client: reqwest::Client,
}

/// The outbox write an answer called for, done.
struct Written {
    key: String,
    verdict: Verdict,
    /// When the answer came (ms since the Unix epoch).
    at_ms: u64,
    result: Result<(), OutboxError>,
}

/// One finished attempt (the outbox write its answer calls for is the loop's).
struct Attempt {
    event: PendingEvent,
    verdict: Verdict,
    status: Option<u16>,
    error: String,
}

impl Forwarder {
    /// A forwarder delivering from `outbox` as `settings` say.
    pub fn new(outbox: Outbox, settings: ForwarderSettings) -> Result<Forwarder, ClientError> {
        let client = build_client(&settings)?;
        let status = watch::Sender::new(DeliveryStatus {
            state: DeliveryState::Delivering,
            last_success_ms: None,
            delivered: 0,
            quarantined: 0,
            retried: 0,
        });
        Ok(Forwarder {
            ctx: Arc::new(Ctx { outbox, settings, client }),
            status,
            last_failure: watch::Sender::new(None),
            reconfigure: watch::Sender::new(None),
        })
    }

    /// A handle that applies new settings while [`Forwarder::run`] runs.
    pub fn reconfigurer(&self) -> ForwarderReconfigurer {
        ForwarderReconfigurer { outbox: self.ctx.outbox.clone(), tx: self.reconfigure.clone() }
    }

    /// A receiver of the delivery status (take it before calling [`Forwarder::run`]).
    pub fn status(&self) -> watch::Receiver<DeliveryStatus> {
        self.status.subscribe()
    }

    /// A receiver of the last failed attempt (`None` until one fails; kept after recovery).
    pub fn last_failure(&self) -> watch::Receiver<Option<DeliveryFailure>> {
        self.last_failure.subscribe()
    }

    /// Delivers until `shutdown` resolves (then returns `Ok`; requests in flight are
    /// abandoned and their events resent after the restart: at least once). Returns `Err`
    /// only on a fatal outbox error. After a 410 it keeps running, sending nothing, until
    /// shutdown.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), ForwarderError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let settings = &self.ctx.settings;
        let mut gate = Gate::new(Backoff::new(settings.backoff_initial, settings.backoff_max));
        // Requests in flight (at most `max_concurrency`), and the outbox writes their answers
        // called for (deletes after a 2xx, quarantines), which wait for a group commit. A key
        // stays busy until its write has committed, so the next event of a call is never sent
        // before the one before it is gone; but the request's slot is free as soon as the
        // answer came, so delivery is not held to one commit per `max_concurrency` events.
        let mut in_flight: JoinSet<Attempt> = JoinSet::new();
        let mut writing: JoinSet<Written> = JoinSet::new();
        let mut keys: HashSet<String> = HashSet::new();
        let mut max = settings.max_concurrency;
        // Whether the outbox may hold ready heads we have not fetched.
        let mut stale = true;
        let mut updates = self.reconfigure.subscribe();
        let mut updated = false;
        loop {
            // New settings first, so nothing picked up after they were applied goes out with
            // the old ones; requests under way finish with theirs.
            if (std::mem::take(&mut updated) || updates.has_changed().unwrap_or(false))
                && let Some(ctx) = updates.borrow_and_update().clone()
            {
                let s = &ctx.settings;
                gate.set_backoff(Backoff::new(s.backoff_initial, s.backoff_max));
                max = s.max_concurrency;
                tracing::info!(url = %s.url, "Delivery settings reloaded; requests under way finish with the old ones.");
                self.ctx = ctx;
            }
            let now = listener_kit::clock::now().0;
            let permit = gate.permit(now);
            // Deletes waiting for their commit bound the requests too: when the outbox commits
            // slower than the platform answers (a large outbox on a slow disk), delivery slows
            // to what it can record instead of piling up writes.
            let uncommitted = writing.len().saturating_sub(UNCOMMITTED_PER_SLOT * max);
            let room = match permit {
                Permit::All => max.saturating_sub(in_flight.len() + uncommitted),
                Permit::Probe if in_flight.is_empty() => 1,
                _ => 0,
            };
            self.publish_state(&gate);
            let mut wake = now + IDLE_POLL.as_millis() as u64;
            if let Permit::WaitUntil(until) = permit {
                wake = wake.min(until);
            }
            if room > 0 && stale {
                let busy = Arc::new(keys.clone());
                let heads = self.ctx.outbox.ready_heads_except(now, room, busy).await?;
                let started = heads.len();
                for event in heads {
                    keys.insert(event.order_key.clone());
                    in_flight.spawn(attempt(Arc::clone(&self.ctx), event));
                }
                // Fewer than asked: nothing more is ready until something changes.
                stale = started == room;
                if started < room
                    && let Some(due) = self.ctx.outbox.next_due_ms().await?
                    && due > now
                {
                    wake = wake.min(due);
                }
            }
            let sleep = tokio::time::sleep(Duration::from_millis(wake.saturating_sub(now)));
            tokio::select! {
                () = &mut shutdown => break,
                Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                    let mut next = Some(joined);
                    while let Some(joined) = next {
                        // A panicked attempt task leaves its event pending: resent later.
                        match joined {
                            Ok(done) => self.settle(&mut gate, done, &mut writing, &mut keys).await?,
                            Err(e) => tracing::warn!(error = %e, "A delivery attempt failed; its event is sent again after a restart"),
                        }
                        next = in_flight.try_join_next();
                    }
                }
                Some(joined) = writing.join_next(), if !writing.is_empty() => {
                    let mut next = Some(joined);
                    while let Some(joined) = next {
                        if let Ok(Written { key, verdict, at_ms, result }) = joined {
                            keys.remove(&key);
                            stale = true;
                            match result {
                                // Counted once recorded: a watcher that sees the new total finds
                                // the outbox already without the event.
                                Ok(()) if verdict == Verdict::Delivered => self.status.send_modify(|s| {
                                    s.delivered += 1;
                                    s.last_success_ms = Some(at_ms);
                                }),
                                Ok(()) => self.status.send_modify(|s| s.quarantined += 1),
                                Err(e) if e.is_fatal() => return Err(e.into()),
                                Err(e) => tracing::warn!(order_key = key, error = %e, "Could not record a delivery outcome; the event will be sent again"),
                            }
                        }
                        next = writing.try_join_next();
                    }
                }
                () = self.ctx.outbox.appended() => stale = true,
                // Wakes the loop: the new settings are taken at its top.
                Ok(()) = updates.changed() => {
                    updated = true;
                    stale = true;
                }
                () = sleep => stale = true,
            }
        }
        in_flight.shutdown().await;
        // The writes already queued commit with the writer's next group; waiting for them
        // saves resending their events after the restart.
        while writing.join_next().await.is_some() {}
        Ok(())
    }

    /// Updates the gate and the status after an attempt; queues the outbox write its answer
    /// calls for (delete, quarantine) in `writing`, or records a retry before returning; a
    /// key is released from `keys` once nothing of its head is pending any more.
    async fn settle(
        &self,
        gate: &mut Gate,
        done: Attempt,
        writing: &mut JoinSet<Written>,
        keys: &mut HashSet<String>,
    ) -> Result<(), ForwarderError> {
        let outbox = self.ctx.outbox.clone();
        let (id, key) = (done.event.id.clone(), done.event.order_key.clone());
        let (verdict, at_ms) = (done.verdict, listener_kit::clock::now().0);
        match done.verdict {
            Verdict::Delivered => {
                writing.spawn(async move {
                    let result = until_disk_has_space(|| outbox.delivered(&id)).await.map(drop);
                    Written { key, verdict, at_ms, result }
                });
            }
            Verdict::Reject => {
                let (status, error) = (done.status, done.error.clone());
                writing.spawn(async move {
                    let result = until_disk_has_space(|| outbox.quarantine(&id, status, &error)).await.map(drop);
                    Written { key, verdict, at_ms, result }
                });
            }
            Verdict::Retry { .. } | Verdict::Gone => {
                keys.remove(&key);
            }
        }
        let now = listener_kit::clock::now().0;
        let id = done.event.id.as_str();
        let failed = match done.verdict {
            Verdict::Delivered => None,
            Verdict::Reject => Some(FailureOutcome::Quarantined),
            Verdict::Gone => Some(FailureOutcome::Gone),
            Verdict::Retry { .. } => Some(FailureOutcome::Retrying),
        };
        if let Some(outcome) = failed {
            self.last_failure.send_replace(Some(DeliveryFailure {
                at_ms: now,
                status: done.status,
                outcome,
                error: done.error.clone(),
            }));
        }
        match done.verdict {
            Verdict::Delivered | Verdict::Reject => {
                if let Some(recovered) = gate.on_answer(now) {
                    events::DeliveryRecovered { after: recovered.after, attempts: recovered.attempts }.emit();
                }
                // State before totals: a watcher that sees the new total sees the new state.
                self.publish_state(gate);
                if done.verdict == Verdict::Delivered {
                    let latency = Duration::from_millis(now.saturating_sub(done.event.created_ms));
                    events::EventDelivered { latency, now_secs: now as f64 / 1000.0 }.emit();
                } else {
                    events::EventQuarantined { event_id: id, status: done.status.unwrap_or(0), excerpt: &done.error }
                        .emit();
                }
            }
            Verdict::Gone => {
                if !matches!(gate.state(), GateState::Stopped { .. }) {
                    events::EndpointGone { url: self.ctx.settings.url.as_str(), event_id: id }.emit();
                }
                gate.on_gone(now);
            }
            Verdict::Retry { retry_after } => {
                let until = gate.on_retryable(now, retry_after, rand::random::<f64>());
                let attempts = done.event.attempts.saturating_add(1);
                self.ctx
                    .outbox
                    .retry_later(id, until, attempts, &done.error)
                    .await
                    .or_else(|e| if e.is_fatal() { Err(e) } else { Ok(false) })?;
                events::DeliveryRetrying {
                    event_id: id,
                    status: done.status,
                    error: &done.error,
                    attempts,
                    retry_in: Duration::from_millis(until.saturating_sub(now)),
                }
                .emit();
                events::backing_off();
                self.status.send_modify(|s| s.retried += 1);
            }
        }
        self.publish_state(gate);
        Ok(())
    }

    fn publish_state(&self, gate: &Gate) {
        let (since_ms, attempts) = gate.outage().unwrap_or((0, 0));
        let state = match gate.state() {
            GateState::Open => DeliveryState::Delivering,
            GateState::Paused { until_ms, .. } => DeliveryState::BackingOff { since_ms, attempts, until_ms },
            GateState::Probing { .. } => DeliveryState::Probing { since_ms, attempts },
            GateState::Stopped { since_ms } => DeliveryState::EndpointGone { since_ms },
        };
        self.status.send_if_modified(|s| {
            let changed = s.state != state;
            s.state = state;
            changed
        });
    }
}

/// Sends one event and classifies the answer.
async fn attempt(ctx: Arc<Ctx>, event: PendingEvent) -> Attempt {
    let settings = &ctx.settings;
    let timestamp = listener_kit::clock::now().0 / 1000;
    let signature = webhook_signature::sign_header(&settings.secrets, &event.id, timestamp, &event.body);
    let mut request = ctx
        .client
        .post(settings.url.clone())
        .header(CONTENT_TYPE, "application/json")
        .header("webhook-id", event.id.as_str())
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(event.body.clone());
    if let Some(bearer) = &settings.bearer {
        request = request.header(AUTHORIZATION, bearer.header_value());
    }
    let (verdict, status, error) = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| policy::parse_retry_after(v, SystemTime::now()));
            let verdict = policy::classify(status, retry_after);
            let error = if verdict == Verdict::Delivered { String::new() } else { excerpt(response).await };
            (verdict, Some(status), error)
        }
        Err(e) => (Verdict::Retry { retry_after: None }, None, describe(&e)),
    };
    Attempt { event, verdict, status, error }
}

/// Retries an outbox write while the outbox's disk is full. The event was delivered (or
/// rejected): releasing its key before the write commits would send it again, in a loop, for
/// as long as the disk stays full; so the key stays busy and the write waits for space.
async fn until_disk_has_space<F, Fut>(mut write: F) -> Result<bool, OutboxError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, OutboxError>>,
{
    let mut backoff = listener_kit::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match write().await {
            Err(OutboxError::DiskFull) => tokio::time::sleep(backoff.next_delay(rand::random::<f64>())).await,
            other => return other,
        }
    }
}

/// `HTTP <status>: <start of the body>`.
async fn excerpt(mut response: reqwest::Response) -> String {
    let status = response.status();
    let mut bytes = Vec::new();
    while bytes.len() < EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(EXCERPT_BYTES);
    format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes).trim())
}

/// A network error with its causes, e.g. "connect error: tcp connect error: Connection refused".
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() { "timeout".to_owned() } else { error.to_string() };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
