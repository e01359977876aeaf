//! `/events/tail`: the Level 3 events the daemon commits, live, as server-sent events (what
//! `vector tap` is to Vector), for `pbx-listener tail`.
//!
//! The pipeline never waits for a tail client: committed events go into a bounded
//! [`tokio::sync::broadcast`] channel, and a client that reads too slowly misses events and is
//! told how many (an `event: lagged` message, counted in
//! `pbx_listener_admin_tail_lagged_events_total`). Events are serialised only while a client
//! is connected. Clients are capped ([`MAX_CLIENTS`]); the endpoint exposes nothing the
//! platform does not receive anyway, and the admin endpoint stays on loopback by default.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::response::sse::{Event, KeepAlive, Sse};
use correlation::CorrelationStats;
use listener_core::{OutgoingEvent, StateChange};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

use crate::pipeline::EventSink;
use crate::status::{StatusBoard, TailReport};

/// Events buffered for tail clients; a client further behind than this misses events.
pub const CAPACITY: usize = 1024;
/// Tail clients at once; more are refused with 503.
pub const MAX_CLIENTS: usize = 8;

/// One committed event, as tail clients get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailEvent {
    /// `meta.pbx`.
    pub pbx: Option<String>,
    /// `extension`.
    pub extension: Option<String>,
    /// `status`.
    pub status: String,
    /// The event as the platform receives it (one line of JSON).
    pub json: String,
}

impl TailEvent {
    fn of(e: &OutgoingEvent) -> TailEvent {
        TailEvent {
            pbx: e.event.meta.get("pbx").cloned(),
            extension: e.event.extension.clone(),
            status: e.event.status.as_str().to_owned(),
            json: String::from_utf8_lossy(&e.event.to_json_bytes()).into_owned(),
        }
    }
}

/// The broadcast side: the pipeline's sink publishes, tail clients subscribe. Cheap to clone.
#[derive(Clone)]
pub struct EventTap {
    tx: broadcast::Sender<Arc<TailEvent>>,
    clients: Arc<Semaphore>,
    lagged: Arc<AtomicU64>,
}

impl EventTap {
    /// A tap buffering `capacity` events for at most `max_clients` clients.
    pub fn new(capacity: usize, max_clients: usize) -> EventTap {
        EventTap {
            tx: broadcast::Sender::new(capacity),
            clients: Arc::new(Semaphore::new(max_clients)),
            lagged: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Whether anyone listens (events are serialised only then).
    pub fn active(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Sends events to the connected clients; never waits.
    pub fn publish(&self, events: impl IntoIterator<Item = TailEvent>) {
        for e in events {
            // An error only means nobody listens any more.
            let _ = self.tx.send(Arc::new(e));
        }
    }

    /// The counters for `/status`.
    pub fn report(&self) -> TailReport {
        TailReport { clients: self.tx.receiver_count() as u64, lagged_events: self.lagged.load(Ordering::Relaxed) }
    }

    /// A new client, or `None` when [`MAX_CLIENTS`] are connected.
    pub fn subscribe(&self, filter: TailFilter, stop: CancellationToken) -> Option<TailClient> {
        let permit = Arc::clone(&self.clients).try_acquire_owned().ok()?;
        metrics::gauge!("pbx_listener_admin_tail_clients").increment(1.0);
        Some(TailClient { rx: self.tx.subscribe(), filter, stop, lagged: Arc::clone(&self.lagged), _permit: permit })
    }
}

/// Which events a client wants: each list empty means any; otherwise one of its values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TailFilter {
    /// Extensions.
    pub extension: Vec<String>,
    /// PBX names (`meta.pbx`).
    pub pbx: Vec<String>,
    /// Statuses.
    pub status: Vec<String>,
}

/// The query string of `/events/tail`: comma-separated lists.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailQuery {
    /// `extension=201,202`.
    pub extension: Option<String>,
    /// `pbx=hq`.
    pub pbx: Option<String>,
    /// `status=ringing,connected`.
    pub status: Option<String>,
}

impl From<TailQuery> for TailFilter {
    fn from(q: TailQuery) -> TailFilter {
        let list = |v: Option<String>| -> Vec<String> {
            v.map(|s| s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_owned).collect())
                .unwrap_or_default()
        };
        TailFilter { extension: list(q.extension), pbx: list(q.pbx), status: list(q.status) }
    }
}

impl TailFilter {
    /// Whether `e` passes.
    pub fn matches(&self, e: &TailEvent) -> bool {
        let ok = |list: &[String], v: Option<&str>| list.is_empty() || v.is_some_and(|v| list.iter().any(|x| x == v));
        ok(&self.extension, e.extension.as_deref())
            && ok(&self.pbx, e.pbx.as_deref())
            && ok(&self.status, Some(&e.status))
    }
}

/// One connected tail client.
pub struct TailClient {
    rx: broadcast::Receiver<Arc<TailEvent>>,
    filter: TailFilter,
    stop: CancellationToken,
    lagged: Arc<AtomicU64>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for TailClient {
    fn drop(&mut self) {
        metrics::gauge!("pbx_listener_admin_tail_clients").decrement(1.0);
    }
}

/// What a client is sent next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailItem {
    /// A matching event.
    Event(Arc<TailEvent>),
    /// The client missed this many events (it read too slowly).
    Lagged(u64),
}

impl TailClient {
    /// The next item, or `None` when the daemon stops.
    pub async fn next(&mut self) -> Option<TailItem> {
        loop {
            let received = tokio::select! {
                _ = self.stop.cancelled() => return None,
                r = self.rx.recv() => r,
            };
            match received {
                Ok(e) if self.filter.matches(&e) => return Some(TailItem::Event(e)),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.lagged.fetch_add(n, Ordering::Relaxed);
                    metrics::counter!("pbx_listener_admin_tail_lagged_events_total").increment(n);
                    return Some(TailItem::Lagged(n));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The client as a server-sent event stream: `event: event` with the event's JSON, or
    /// `event: lagged` with `{"missed": n}`.
    pub fn into_sse(self) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
        let stream = futures_util::stream::unfold(self, |mut client| async move {
            let item = client.next().await?;
            let event = match item {
                TailItem::Event(e) => Event::default().event("event").data(e.json.as_str()),
                TailItem::Lagged(n) => Event::default().event("lagged").data(format!("{{\"missed\":{n}}}")),
            };
            Some((Ok(event), client))
        });
        Sse::new(stream).keep_alive(KeepAlive::default())
    }
}

/// Wraps the daemon's sink: after a batch is committed, its events go to the tail clients; the
/// pipeline's correlation counters go to the status board.
pub struct TapSink<S> {
    /// The sink that commits.
    pub inner: S,
    /// Where committed events are published.
    pub tap: EventTap,
    /// Where correlation counters are kept for `/status`.
    pub board: StatusBoard,
}

impl<S: EventSink> EventSink for TapSink<S> {
    async fn accept(&mut self, events: Vec<OutgoingEvent>, state: Vec<StateChange>) -> anyhow::Result<()> {
        let tail: Vec<TailEvent> = if self.tap.active() { events.iter().map(TailEvent::of).collect() } else { vec![] };
        for e in &events {
            let pbx = e.event.meta.get("pbx").map_or_else(String::new, Clone::clone);
            metrics::counter!("pbx_listener_events_total", "pbx" => pbx, "status" => e.event.status.as_str())
                .increment(1);
        }
        self.inner.accept(events, state).await?;
        // Only what is committed is shown.
        self.tap.publish(tail);
        Ok(())
    }

    fn correlation(&mut self, stats: &CorrelationStats) {
        self.board.set_correlation(stats);
        self.inner.correlation(stats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(pbx: &str, extension: &str, status: &str) -> TailEvent {
        TailEvent {
            pbx: Some(pbx.into()),
            extension: Some(extension.into()),
            status: status.into(),
            json: format!(r#"{{"extension":"{extension}","status":"{status}"}}"#),
        }
    }

    #[test]
    fn filters_are_lists_and_empty_means_any() {
        let f = TailFilter::from(TailQuery {
            extension: Some("201, 202".into()),
            pbx: None,
            status: Some("ringing".into()),
        });
        assert_eq!(f.extension, ["201", "202"]);
        assert!(f.matches(&event("hq", "202", "ringing")));
        assert!(!f.matches(&event("hq", "203", "ringing")));
        assert!(!f.matches(&event("hq", "201", "connected")));
        let none = TailEvent { extension: None, ..event("hq", "x", "ringing") };
        assert!(!f.matches(&none), "an extension filter never matches an event without one");
        assert!(TailFilter::default().matches(&none));
    }

    #[tokio::test]
    async fn a_slow_client_is_told_what_it_missed_and_publishing_never_waits() {
        let tap = EventTap::new(4, 2);
        let stop = CancellationToken::new();
        let mut client = tap.subscribe(TailFilter::default(), stop.clone()).unwrap();
        // Ten events while the client reads nothing: publish returns at once.
        tap.publish((0..10).map(|i| event("hq", &i.to_string(), "ringing")));
        assert_eq!(client.next().await, Some(TailItem::Lagged(6)));
        let mut seen = vec![];
        for _ in 0..4 {
            match client.next().await {
                Some(TailItem::Event(e)) => seen.push(e.extension.clone().unwrap()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seen, ["6", "7", "8", "9"]);
        assert_eq!(tap.report(), TailReport { clients: 1, lagged_events: 6 });
        stop.cancel();
        assert_eq!(client.next().await, None, "the daemon stopping ends the stream");
    }

    #[tokio::test]
    async fn clients_are_capped() {
        let tap = EventTap::new(4, 1);
        let stop = CancellationToken::new();
        let first = tap.subscribe(TailFilter::default(), stop.clone());
        assert!(first.is_some());
        assert!(tap.subscribe(TailFilter::default(), stop.clone()).is_none());
        drop(first);
        assert!(tap.subscribe(TailFilter::default(), stop).is_some(), "a slot frees when a client leaves");
        assert!(!EventTap::new(1, 1).active());
    }
}
