//! The forwarder against the platform simulator on 127.0.0.1: real HTTP, real outbox.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use forwarder::{DeliveryState, DeliveryStatus, Forwarder, ForwarderConfig};
use outbox::{Inspector, NewEvent, Outbox, OutboxConfig, QuarantineReason, RowState, Selection, WhenFull};
use pbx_sim::platform::{Platform, PlatformConfig, SignatureCheck};
use tokio::sync::{oneshot, watch};
use webhook_signature::SigningSecret;

/// Generous bound for waits; tests never assert on how long anything took.
const PATIENCE: Duration = Duration::from_secs(20);

struct Setup {
    _dir: tempfile::TempDir,
    outbox: Outbox,
    platform: Platform,
    status: watch::Receiver<DeliveryStatus>,
    reconfigurer: forwarder::ForwarderReconfigurer,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), forwarder::ForwarderError>>,
}

impl Setup {
    async fn shutdown(mut self) -> Platform {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
        self.platform
    }
}

fn secret(n: u8) -> SigningSecret {
    SigningSecret::from_bytes(vec![n; 32])
}

fn write_secret(dir: &Path, name: &str, s: &SigningSecret) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{}\n", s.to_whsec())).unwrap();
    path
}

async fn setup(script: &str, tune: impl FnOnce(&mut ForwarderConfig, &Path)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let platform = Platform::start(
        "127.0.0.1:0".parse().unwrap(),
        PlatformConfig {
            secrets: vec![secret(1)],
            script: script.parse().unwrap(),
            record_to: None,
            tolerance_secs: 300,
        },
    )
    .await
    .unwrap();
    let outbox =
        Outbox::open(&dir.path().join("outbox.sqlite"), OutboxConfig::new(64 << 20, WhenFull::DropOldest)).unwrap();
    let mut config = ForwarderConfig::new(platform.url(), vec![write_secret(dir.path(), "secret", &secret(1))]);
    config.backoff_initial_ms = 20;
    config.backoff_max_secs = 1;
    config.timeout_secs = 5;
    tune(&mut config, dir.path());
    let forwarder = Forwarder::new(outbox.clone(), config.load().unwrap()).unwrap();
    let status = forwarder.status();
    let reconfigurer = forwarder.reconfigurer();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(forwarder.run(async move {
        let _ = stopped.await;
    }));
    Setup { _dir: dir, outbox, platform, status, reconfigurer, stop: Some(stop), task }
}

fn event(id: &str, key: &str, n: usize) -> NewEvent {
    NewEvent {
        id: id.into(),
        order_key: key.into(),
        body: format!(r#"{{"childSid":"{key}","n":{n},"status":"ringing"}}"#).into_bytes(),
        created_ms: 1,
    }
}

async fn pending(outbox: &Outbox) -> u64 {
    outbox.stats().await.unwrap().pending_events
}

async fn drained(outbox: &Outbox) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while pending(outbox).await > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_every_event_signed_in_order_per_call() {
    let s = setup("", |c, dir| {
        c.max_concurrency = 4;
        let token = dir.join("token");
        std::fs::write(&token, "tok-123\n").unwrap();
        c.bearer_token_file = Some(token);
    })
    .await;
    let mut events = Vec::new();
    for i in 0..60 {
        events.push(event(&format!("e{i}"), &format!("call{}", i % 5), i));
    }
    s.outbox.append(events.clone(), vec![]).await.unwrap();
    assert_eq!(s.platform.wait_for_distinct(60, PATIENCE).await, 60);
    drained(&s.outbox).await;
    assert_eq!(pending(&s.outbox).await, 0);
    let platform = s.shutdown().await;
    let accepted = platform.accepted();
    for d in &platform.deliveries() {
        assert_eq!(d.signature, SignatureCheck::Valid);
        assert_eq!(d.content_type.as_deref(), Some("application/json"));
        assert_eq!(d.authorization.as_deref(), Some("Bearer tok-123"));
        assert_eq!(d.path, "/events");
    }
    for e in &events {
        let got = accepted.iter().find(|d| d.id == e.id).unwrap();
        assert_eq!(got.body, e.body, "the exact stored bytes");
    }
    for key in 0..5 {
        let order: Vec<&str> = accepted
            .iter()
            .filter(|d| String::from_utf8_lossy(&d.body).contains(&format!("\"call{key}\"")))
            .map(|d| d.id.as_str())
            .collect();
        let want: Vec<String> = (0..60).filter(|i| i % 5 == key).map(|i| format!("e{i}")).collect();
        assert_eq!(order, want, "call{key} in append order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_through_an_outage_and_recovers() {
    let s = setup("503*3,drop,429:retry-after=1,200", |c, _| c.max_concurrency = 1).await;
    s.outbox.append(vec![event("a", "k", 0), event("b", "k", 1)], vec![]).await.unwrap();
    assert_eq!(s.platform.wait_for_distinct(2, PATIENCE).await, 2);
    drained(&s.outbox).await;
    let mut status = s.status.clone();
    let _ = tokio::time::timeout(PATIENCE, status.wait_for(|st| st.delivered == 2)).await;
    let st = *status.borrow();
    assert_eq!(st.state, DeliveryState::Delivering);
    assert_eq!((st.delivered, st.retried), (2, 5));
    let platform = s.shutdown().await;
    let deliveries = platform.deliveries();
    let summary: Vec<(&str, u32, Option<u16>)> =
        deliveries.iter().map(|d| (d.id.as_str(), d.attempt, d.status)).collect();
    assert_eq!(
        summary,
        [
            ("a", 1, Some(503)),
            ("a", 2, Some(503)),
            ("a", 3, Some(503)),
            ("a", 4, None),
            ("a", 5, Some(429)),
            ("a", 6, Some(200)),
            ("b", 1, Some(200))
        ],
        "the same event is retried, in order, b waits for a"
    );
}

/// The platform's `Retry-After` reaches the gate: after a 429 asking for 30 s the event's next
/// attempt is scheduled that far out (the backoff alone would allow at most 500 ms). The decision
/// is checked, not how long anything took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_schedules_the_next_attempt() {
    let s = setup("429:retry-after=30", |c, _| c.max_concurrency = 1).await;
    s.outbox.append(vec![event("a", "k", 0)], vec![]).await.unwrap();
    let mut status = s.status.clone();
    let _ = tokio::time::timeout(PATIENCE, status.wait_for(|st| st.retried == 1)).await;
    let pending = s.outbox.ready_heads(u64::MAX, 10).await.unwrap();
    let asked_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert_eq!(pending.len(), 1);
    assert!(
        pending[0].next_attempt_ms >= asked_at + 20_000,
        "scheduled {} ms after now, want about 30 s",
        pending[0].next_attempt_ms.saturating_sub(asked_at)
    );
    assert_eq!(s.platform.deliveries().len(), 1, "nothing was sent before the Retry-After");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_pauses_all_calls_and_probes_with_one_request() {
    // Four calls in flight at once hit a failing platform: after the failures the forwarder
    // must probe one request at a time, never fan out again until a success.
    let s = setup("503*6:delay-ms=20", |c, _| {
        c.max_concurrency = 4;
        c.backoff_initial_ms = 50;
    })
    .await;
    let events: Vec<NewEvent> = (0..8).map(|i| event(&format!("e{i}"), &format!("call{i}"), i)).collect();
    s.outbox.append(events, vec![]).await.unwrap();
    assert_eq!(s.platform.wait_for_distinct(8, PATIENCE).await, 8);
    let platform = s.shutdown().await;
    let deliveries = platform.deliveries();
    assert_eq!(deliveries.len(), 14, "8 successes after 6 scripted failures");
    assert_eq!(platform.duplicates(), 0);
    // Requests 1-4 went out together. Once they had failed, the forwarder sent lone probes:
    // each arrived with nothing else in progress, up to and including the first success.
    let first_success = deliveries.iter().position(|d| d.status == Some(200)).unwrap();
    assert_eq!(first_success, 6);
    for d in &deliveries[4..=first_success] {
        assert_eq!(d.concurrent, 1, "a probe during the outage ran alone: {d:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_event_is_quarantined_and_the_call_goes_on() {
    let s = setup("422", |c, _| c.max_concurrency = 1).await;
    s.outbox.append(vec![event("bad", "k", 0), event("good", "k", 1)], vec![]).await.unwrap();
    assert_eq!(s.platform.wait_for_distinct(1, PATIENCE).await, 1);
    drained(&s.outbox).await;
    let inspector = Inspector::open(s.outbox.path()).unwrap();
    let rows = inspector.list(Selection::Quarantined, 10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id.as_deref(), Some("bad"));
    match &rows[0].state {
        RowState::Quarantined { reason, status, detail, .. } => {
            assert_eq!((*reason, *status), (QuarantineReason::Rejected, Some(422)));
            assert!(detail.as_deref().unwrap().contains("scripted"), "{detail:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.status.borrow().quarantined, 1);
    let platform = s.shutdown().await;
    assert_eq!(platform.accepted()[0].id, "good");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_stops_all_delivery_and_keeps_the_events() {
    let s = setup("410", |c, _| c.max_concurrency = 1).await;
    s.outbox.append(vec![event("a", "k1", 0), event("b", "k2", 1)], vec![]).await.unwrap();
    let mut status = s.status.clone();
    let _ =
        tokio::time::timeout(PATIENCE, status.wait_for(|st| matches!(st.state, DeliveryState::EndpointGone { .. })))
            .await;
    assert!(matches!(status.borrow().state, DeliveryState::EndpointGone { .. }));
    s.outbox.append(vec![event("c", "k3", 2)], vec![]).await.unwrap();
    let outbox = s.outbox.clone();
    let platform = s.shutdown().await;
    assert_eq!(platform.deliveries().len(), 1, "nothing sent after the 410");
    assert_eq!(pending(&outbox).await, 3, "no event lost or quarantined");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_signs_with_both_secrets() {
    // The platform knows only the new secret; the forwarder signs with old and new.
    let s = setup("", |c, dir| {
        c.signing_secret_files = vec![write_secret(dir, "old", &secret(9)), write_secret(dir, "new", &secret(1))];
    })
    .await;
    s.outbox.append(vec![event("a", "k", 0)], vec![]).await.unwrap();
    assert_eq!(s.platform.wait_for_distinct(1, PATIENCE).await, 1);
    let platform = s.shutdown().await;
    assert_eq!(platform.deliveries()[0].signature, SignatureCheck::Valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_never_dropped_silently() {
    let s = setup("", |c, dir| c.signing_secret_files = vec![write_secret(dir, "wrong", &secret(7))]).await;
    s.outbox.append(vec![event("a", "k", 0)], vec![]).await.unwrap();
    let mut status = s.status.clone();
    let _ = tokio::time::timeout(PATIENCE, status.wait_for(|st| st.quarantined == 1)).await;
    let stats = s.outbox.stats().await.unwrap();
    assert_eq!((stats.pending_events, stats.quarantined_events), (0, 1), "401 is a rejection: quarantined");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_that_is_not_there_is_retried_and_then_reached() {
    // Reserve a port, close it: connection refused until the platform starts there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&dir.path().join("o.sqlite"), OutboxConfig::new(1 << 20, WhenFull::DropOldest)).unwrap();
    let mut config = ForwarderConfig::new(format!("http://{addr}/x"), vec![write_secret(dir.path(), "s", &secret(1))]);
    config.backoff_initial_ms = 20;
    config.backoff_max_secs = 1;
    let forwarder = Forwarder::new(outbox.clone(), config.load().unwrap()).unwrap();
    let mut status = forwarder.status();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(forwarder.run(async move {
        let _ = stopped.await;
    }));
    outbox.append(vec![event("a", "k", 0)], vec![]).await.unwrap();
    let _ = tokio::time::timeout(PATIENCE, status.wait_for(|st| st.retried >= 2)).await;
    let listed = Inspector::open(outbox.path()).unwrap().list(Selection::Pending, 1).unwrap();
    match &listed[0].state {
        RowState::Pending { last_error, .. } => {
            assert!(last_error.as_deref().unwrap().contains("connect"), "{last_error:?}")
        }
        other => panic!("{other:?}"),
    }
    assert!(listed[0].attempts >= 2);
    let platform =
        Platform::start(addr, PlatformConfig { secrets: vec![secret(1)], ..PlatformConfig::default() }).await.unwrap();
    assert_eq!(platform.wait_for_distinct(1, PATIENCE).await, 1);
    let _ = tokio::time::timeout(PATIENCE, status.wait_for(|st| st.delivered == 1)).await;
    assert_eq!(status.borrow().state, DeliveryState::Delivering);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

/// Issue 12 (reload): new `[platform]` settings apply to a running forwarder: what was sent
/// before went to the old endpoint, what comes after goes to the new one with the new secret,
/// and no event is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_settings_apply_without_resending_anything() {
    let s = setup("", |_, _| {}).await;
    let events: Vec<NewEvent> = (0..10).map(|n| event(&format!("a{n}"), &format!("call{}", n % 3), n)).collect();
    s.outbox.append(events, vec![]).await.unwrap();
    assert_eq!(s.platform.wait_for_distinct(10, PATIENCE).await, 10);
    drained(&s.outbox).await;

    let dir = tempfile::tempdir().unwrap();
    let second = Platform::start(
        "127.0.0.1:0".parse().unwrap(),
        PlatformConfig { secrets: vec![secret(2)], ..PlatformConfig::default() },
    )
    .await
    .unwrap();
    let config = ForwarderConfig::new(second.url(), vec![write_secret(dir.path(), "second", &secret(2))]);
    s.reconfigurer.apply(config.load().unwrap()).unwrap();
    // The forwarder picks the settings up at its next turn; events appended from now on go to
    // the second endpoint.
    let events: Vec<NewEvent> = (0..10).map(|n| event(&format!("b{n}"), &format!("call{}", n % 3), n)).collect();
    s.outbox.append(events, vec![]).await.unwrap();
    assert_eq!(second.wait_for_distinct(10, PATIENCE).await, 10);
    drained(&s.outbox).await;
    let first = s.shutdown().await;
    let ids = |p: &Platform| p.deliveries().iter().map(|d| d.id.clone()).collect::<Vec<_>>();
    assert!(ids(&first).iter().all(|id| id.starts_with('a')), "{:?}", ids(&first));
    assert!(ids(&second).iter().all(|id| id.starts_with('b')), "{:?}", ids(&second));
    assert_eq!((first.duplicates(), second.duplicates()), (0, 0));
    assert!(second.deliveries().iter().all(|d| d.signature == SignatureCheck::Valid), "signed with the new secret");
}
