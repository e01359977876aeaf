//! The endpoint on loopback, over plain HTTP and TLS, with a real signer: accepted, 401, 413,
//! 400, 404, 405, 415, replays — and what reaches the channel; slow and idle clients holding
//! all they may while the platform's request still gets through.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use correlation::LegUpdate;
use leg_announce::{LegAnnounceServer, LegsConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use webhook_signature::{SigningSecret, sign_header};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn b_leg(status: &str, call_sid: &str, sip_call_id: &str) -> String {
    format!(
        r#"{{"accountId":"9539ee93-64c8-802b-360b-c6f2f7cf2507","accountName":"Test Account",
        "parentCallSid":"e5bc544c-2186-47e8-8784-6182cf8190cb","callSid":"{call_sid}","childSid":null,
        "type":"voice","event":"call","status":"{status}","from":"441234567890","to":"441234567891",
        "extension":null,"meta":{{"sipCallId":"{sip_call_id}"}},"timestamp":1623163324316}}"#
    )
}

struct Harness {
    addr: std::net::SocketAddr,
    rx: mpsc::Receiver<LegUpdate>,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), leg_announce::LegsError>>,
    dir: PathBuf,
}

async fn start(name: &str, tls: Option<(String, String)>, edit: impl FnOnce(&mut LegsConfig)) -> Harness {
    let dir = std::env::temp_dir().join(format!("leg-announce-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("old.secret"), "whsec_b2xkb2xkb2xkb2xkb2xkb2xkb2xkb2xk\n").unwrap();
    std::fs::write(dir.join("new.secret"), format!("{SECRET}\n")).unwrap();
    let (tls_cert_file, tls_key_file) = match tls {
        Some((cert, key)) => {
            std::fs::write(dir.join("cert.pem"), cert).unwrap();
            std::fs::write(dir.join("key.pem"), key).unwrap();
            (Some(dir.join("cert.pem")), Some(dir.join("key.pem")))
        }
        None => (None, None),
    };
    let mut config = LegsConfig {
        tls_cert_file,
        tls_key_file,
        max_body_bytes: 4096,
        ..LegsConfig::new("127.0.0.1:0".parse().unwrap(), vec![dir.join("old.secret"), dir.join("new.secret")])
    };
    edit(&mut config);
    let server = LegAnnounceServer::bind(&config).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (tx, rx) = mpsc::channel(64);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(server.serve(tx, async move {
        let _ = stopped.await;
    }));
    Harness { addr, rx, stop: Some(stop), server, dir }
}

impl Harness {
    async fn finish(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.server).await.unwrap().unwrap().unwrap();
        std::fs::remove_dir_all(&self.dir).unwrap();
    }
}

/// The next leg update; a test that waits longer than 10 s for one has failed.
async fn next(rx: &mut mpsc::Receiver<LegUpdate>) -> LegUpdate {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("a leg update within 10 s").unwrap()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A signed (or not) HTTP/1.1 request, as bytes, with a `webhook-id` of its own.
fn request(method: &str, body: &str, signature: Option<(&str, u64)>) -> Vec<u8> {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let id = format!("msg_{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    request_to(method, "/legs", "application/json", &id, body, signature)
}

/// A request with every part chosen; `webhook_id` is signed when `signature` is given.
fn request_to(
    method: &str,
    path: &str,
    content_type: &str,
    webhook_id: &str,
    body: &str,
    signature: Option<(&str, u64)>,
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: listener\r\nConnection: close\r\n");
    if !content_type.is_empty() {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    if let Some((secret, ts)) = signature {
        let secret = SigningSecret::parse(secret).unwrap();
        let sig = sign_header(&[secret], webhook_id, ts, body.as_bytes());
        head.push_str(&format!("webhook-id: {webhook_id}\r\nwebhook-timestamp: {ts}\r\nwebhook-signature: {sig}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Sends one request and returns (status, body).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, req: &[u8]) -> (u16, String) {
    stream.write_all(req).await.unwrap();
    stream.flush().await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

async fn plain(addr: std::net::SocketAddr, req: &[u8]) -> (u16, String) {
    exchange(TcpStream::connect(addr).await.unwrap(), req).await
}

#[tokio::test]
async fn plain_http_answers() {
    let mut h = start("plain", None, |_| {}).await;
    let one = b_leg("ringing", "85cb3194-76e2-43e1-ad56-59556af617b9", "b1@cpaas");
    let two = format!(
        "[{},{}]",
        b_leg("in-progress", "85cb3194-76e2-43e1-ad56-59556af617b9", "b1@cpaas"),
        b_leg("completed", "85cb3194-76e2-43e1-ad56-59556af617b9", "b1@cpaas")
    );

    assert_eq!(plain(h.addr, &request("POST", &one, Some((SECRET, now())))).await, (200, r#"{"legs":1}"#.into()));
    let LegUpdate::Learned(f) = next(&mut h.rx).await else { panic!() };
    assert_eq!(f.sip_call_id.as_deref(), Some("b1@cpaas"));
    // The old secret of a rotation is still good.
    let old = "whsec_b2xkb2xkb2xkb2xkb2xkb2xkb2xkb2xk";
    assert_eq!(plain(h.addr, &request("POST", &two, Some((old, now())))).await.0, 200);
    assert!(matches!(next(&mut h.rx).await, LegUpdate::Updated(_)));
    assert!(matches!(next(&mut h.rx).await, LegUpdate::Ended(_)));

    let (status, body) = plain(h.addr, &request("POST", &one, None)).await;
    assert_eq!((status, body.as_str()), (401, r#"{"error":"signature refused: missing webhook-id header"}"#));
    let wrong = "whsec_d3Jvbmd3cm9uZ3dyb25nd3Jvbmd3cm9uZ3dy";
    assert_eq!(plain(h.addr, &request("POST", &one, Some((wrong, now())))).await.0, 401);
    let (status, body) = plain(h.addr, &request("POST", &one, Some((SECRET, now() - 3600)))).await;
    assert_eq!(status, 401);
    assert!(body.contains("tolerance exceeded"), "{body}");

    let big = format!("[{}]", vec![one.as_str(); 20].join(","));
    let (status, body) = plain(h.addr, &request("POST", &big, Some((SECRET, now())))).await;
    assert_eq!((status, body.as_str()), (413, r#"{"error":"the body is larger than 4096 bytes"}"#));
    // A body that lies about its length (chunked, no Content-Length) is cut off at the limit.
    let chunked = format!(
        "POST /legs HTTP/1.1\r\nHost: l\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    assert_eq!(plain(h.addr, chunked.as_bytes()).await.0, 413);

    let (status, body) = plain(h.addr, &request("POST", "{\"status\":", Some((SECRET, now())))).await;
    assert_eq!(status, 400);
    assert!(body.starts_with(r#"{"error":"the body is not JSON: "#), "{body}");
    let bad_sid = b_leg("ringing", "nope", "x");
    let (status, body) = plain(h.addr, &request("POST", &bad_sid, Some((SECRET, now())))).await;
    assert_eq!(status, 400);
    assert!(body.contains("event 0: ") && body.contains("callSid"), "{body}");
    assert_eq!(plain(h.addr, &request("GET", "", None)).await.0, 405);

    // Nothing refused reached the channel.
    assert!(h.rx.try_recv().is_err());
    h.finish().await;
}

#[tokio::test]
async fn tls_with_a_certificate_from_config() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let mut h = start("tls", Some((cert_pem, key_pem)), |c| c.header_timeout_ms = 300).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, TcpStream::connect(h.addr).await.unwrap()).await.unwrap();
    let body = b_leg("ringing", "0d9e8f7a-6b5c-4d3e-9f2a-1b0c9d8e7f6a", "tls@cpaas");
    assert_eq!(exchange(tls, &request("POST", &body, Some((SECRET, now())))).await.0, 200);
    assert_eq!(next(&mut h.rx).await.facts().sip_call_id.as_deref(), Some("tls@cpaas"));
    // Plain HTTP to the TLS port gets no answer.
    assert_eq!(plain(h.addr, &request("POST", &body, Some((SECRET, now())))).await.0, 0);
    // A client that never starts its handshake is cut off by the header deadline.
    let mut silent = TcpStream::connect(h.addr).await.unwrap();
    assert_closed(&mut silent).await;
    h.finish().await;
}

#[tokio::test]
async fn startup_errors_name_the_key() {
    let config = |files: Vec<PathBuf>, cert: Option<PathBuf>, key: Option<PathBuf>| LegsConfig {
        tls_cert_file: cert,
        tls_key_file: key,
        max_body_bytes: 1024,
        ..LegsConfig::new("127.0.0.1:0".parse().unwrap(), files)
    };
    // The daemon prints the key before the message; so does this helper.
    let err = |c: LegsConfig| async move {
        let e = LegAnnounceServer::bind(&c).await.unwrap_err();
        format!("legs.{}: {e}", e.key().unwrap_or("-"))
    };
    assert_eq!(
        err(config(vec![], None, None)).await,
        "legs.signing_secret_files: at least one secret file is required"
    );
    assert!(
        err(config(vec!["/nonexistent".into()], None, None))
            .await
            .starts_with("legs.signing_secret_files: /nonexistent: ")
    );
    let dir = std::env::temp_dir().join(format!("leg-announce-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("s"), SECRET).unwrap();
    std::fs::write(dir.join("short"), "whsec_c2hvcnQ=").unwrap();
    assert!(err(config(vec![dir.join("short")], None, None)).await.contains("24 to 64 random bytes"));
    let s = vec![dir.join("s")];
    assert!(
        err(config(s.clone(), Some(dir.join("c")), None))
            .await
            .starts_with("legs.tls_key_file: is missing: tls_cert_file and tls_key_file go together")
    );
    std::fs::write(dir.join("empty.pem"), "").unwrap();
    assert!(
        err(config(s.clone(), Some(dir.join("empty.pem")), Some(dir.join("empty.pem"))))
            .await
            .starts_with("legs.tls_cert_file: ")
    );
    // The limits' ranges, with the key, the range and the unit.
    let fast = LegsConfig { header_timeout_ms: 50, ..config(s.clone(), None, None) };
    assert_eq!(err(fast).await, "legs.header_timeout_ms: must be between 100 and 120000 milliseconds, not 50");
    let per_source = LegsConfig { max_connections: 8, max_connections_per_source: 9, ..config(s.clone(), None, None) };
    let e = err(per_source).await;
    assert_eq!(
        e,
        "legs.max_connections_per_source: must be between 1 and 8 connections (at most max_connections), not 9"
    );
    assert_eq!(
        LegsConfig { max_remembered_ids: 0, ..config(s, None, None) }.load().unwrap_err().key(),
        Some("max_remembered_ids")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A connection from `source` (another loopback address than the attacker's: Linux routes all
/// of 127/8 to the loopback interface).
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// The server closes `stream` (end of stream or reset) before `BOUND`; what it sent before is
/// returned. The bound only keeps a broken build from hanging: the deadlines under test are
/// 300 ms.
async fn assert_closed(stream: &mut TcpStream) -> String {
    const BOUND: Duration = Duration::from_secs(5);
    let mut got = Vec::new();
    let read = tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server did not close the connection");
    String::from_utf8_lossy(&got).into_owned()
}

/// Issue 9 item 12: one path, one method, one media type.
#[tokio::test]
async fn paths_methods_and_media_types() {
    let mut h = start("paths", None, |_| {}).await;
    let body = b_leg("ringing", "85cb3194-76e2-43e1-ad56-59556af617b9", "p1@cpaas");
    let signed = Some((SECRET, now()));
    let (status, text) = plain(h.addr, &request_to("POST", "/", "application/json", "m1", &body, signed)).await;
    assert_eq!((status, text.as_str()), (404, r#"{"error":"not found: announcements go to POST /legs"}"#));
    assert_eq!(plain(h.addr, &request_to("POST", "/legs/x", "application/json", "m1", &body, signed)).await.0, 404);
    // The method is wrong: 405, and the answer says what is allowed.
    let mut get = TcpStream::connect(h.addr).await.unwrap();
    get.write_all(&request_to("GET", "/legs", "", "m1", "", None)).await.unwrap();
    let text = assert_closed(&mut get).await;
    assert!(text.starts_with("HTTP/1.1 405") && text.to_ascii_lowercase().contains("\r\nallow: post\r\n"), "{text}");
    for media in ["text/plain", "", "application/x-www-form-urlencoded"] {
        let (status, text) = plain(h.addr, &request_to("POST", "/legs", media, "m1", &body, signed)).await;
        assert_eq!(status, 415, "{media:?}: {text}");
        assert!(text.contains("application/json"), "{text}");
    }
    // Nothing refused reached the channel; JSON with a charset is JSON.
    assert!(h.rx.try_recv().is_err());
    let json = request_to("POST", "/legs?from=platform", "Application/JSON; charset=utf-8", "m1", &body, signed);
    assert_eq!(plain(h.addr, &json).await.0, 200);
    assert!(matches!(next(&mut h.rx).await, LegUpdate::Learned(_)));
    h.finish().await;
}

/// Issue 9 item 10: the same signed request again (same `webhook-id`) within the signature
/// tolerance is answered 200 without being applied; another id is applied.
#[tokio::test]
async fn a_replayed_announcement_is_answered_without_effect() {
    let mut h = start("replay", None, |_| {}).await;
    let sid = "85cb3194-76e2-43e1-ad56-59556af617b9";
    let ringing = request_to(
        "POST",
        "/legs",
        "application/json",
        "msg_r1",
        &b_leg("ringing", sid, "r@cpaas"),
        Some((SECRET, now())),
    );
    let completed = request_to(
        "POST",
        "/legs",
        "application/json",
        "msg_r2",
        &b_leg("completed", sid, "r@cpaas"),
        Some((SECRET, now())),
    );
    assert_eq!(plain(h.addr, &ringing).await, (200, r#"{"legs":1}"#.into()));
    assert_eq!(plain(h.addr, &completed).await, (200, r#"{"legs":1}"#.into()));
    // The captured ringing, replayed after the leg ended: answered, not applied.
    assert_eq!(plain(h.addr, &ringing).await, (200, r#"{"duplicate":true,"legs":0}"#.into()));
    assert!(matches!(next(&mut h.rx).await, LegUpdate::Learned(_)));
    assert!(matches!(next(&mut h.rx).await, LegUpdate::Ended(_)));
    let another = request_to(
        "POST",
        "/legs",
        "application/json",
        "msg_r3",
        &b_leg("ringing", "0d9e8f7a-6b5c-4d3e-9f2a-1b0c9d8e7f6a", "s@cpaas"),
        Some((SECRET, now())),
    );
    assert_eq!(plain(h.addr, &another).await.0, 200);
    let next = next(&mut h.rx).await;
    assert_eq!(next.facts().sip_call_id.as_deref(), Some("s@cpaas"), "the replay was not applied: {next:?}");
    h.finish().await;
}

/// Issue 9 item 8: a slow request head, a slow body and an idle kept-alive connection are each
/// cut off by their deadline; the platform's request still gets through.
#[tokio::test]
async fn slow_and_idle_clients_are_cut_off_by_the_deadlines() {
    let mut h = start("deadlines", None, |c| {
        c.header_timeout_ms = 300;
        c.body_timeout_ms = 300;
        c.idle_timeout_ms = 300;
    })
    .await;
    // A head that never ends.
    let mut slow_head = TcpStream::connect(h.addr).await.unwrap();
    slow_head.write_all(b"POST /legs HTTP/1.1\r\nHost: l").await.unwrap();
    // A body that never ends: answered 408, then closed.
    let mut slow_body = TcpStream::connect(h.addr).await.unwrap();
    slow_body
        .write_all(b"POST /legs HTTP/1.1\r\nHost: l\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"accountId\"")
        .await
        .unwrap();
    // A kept-alive connection: its request is answered, then it idles.
    let body = b_leg("ringing", "85cb3194-76e2-43e1-ad56-59556af617b9", "k@cpaas");
    let keep_alive =
        String::from_utf8(request("POST", &body, Some((SECRET, now())))).unwrap().replace("Connection: close\r\n", "");
    let mut idle = TcpStream::connect(h.addr).await.unwrap();
    idle.write_all(keep_alive.as_bytes()).await.unwrap();

    assert_eq!(assert_closed(&mut slow_head).await, "");
    let answer = assert_closed(&mut slow_body).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("legs.body_timeout_ms"), "{answer}");
    let answer = assert_closed(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(matches!(next(&mut h.rx).await, LegUpdate::Learned(_)));
    // The endpoint still serves.
    let other = b_leg("ringing", "0d9e8f7a-6b5c-4d3e-9f2a-1b0c9d8e7f6a", "after@cpaas");
    assert_eq!(plain(h.addr, &request("POST", &other, Some((SECRET, now())))).await.0, 200);
    assert_eq!(next(&mut h.rx).await.facts().sip_call_id.as_deref(), Some("after@cpaas"));
    h.finish().await;
}

/// Issue 9 item 8: one source holds the most connections it may, with slow bodies and silent
/// heads (the deadlines are long here, so they keep holding); one more from it is closed at
/// once, and the platform, from another address, gets its announcement through.
#[tokio::test]
async fn the_platform_gets_through_while_one_source_holds_its_maximum() {
    let mut h = start("per-source", None, |c| {
        c.max_connections = 8;
        c.max_connections_per_source = 2;
        c.header_timeout_ms = 60_000;
        c.body_timeout_ms = 60_000;
    })
    .await;
    let mut held = Vec::new();
    let mut slow = connect_from("127.0.0.1", h.addr).await;
    slow.write_all(b"POST /legs HTTP/1.1\r\nHost: l\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    held.push(slow);
    held.push(connect_from("127.0.0.1", h.addr).await);
    // The attacker's third connection is closed without an answer.
    let mut third = connect_from("127.0.0.1", h.addr).await;
    assert_eq!(assert_closed(&mut third).await, "");
    // The platform's request gets through, and its leg is learned.
    let body = b_leg("ringing", "85cb3194-76e2-43e1-ad56-59556af617b9", "platform@cpaas");
    let platform = connect_from("127.0.0.2", h.addr).await;
    assert_eq!(exchange(platform, &request("POST", &body, Some((SECRET, now())))).await, (200, r#"{"legs":1}"#.into()));
    assert_eq!(next(&mut h.rx).await.facts().sip_call_id.as_deref(), Some("platform@cpaas"));
    drop(held);
    h.finish().await;
}

/// Issue 9 item 8: silent connections from several sources fill every place; the platform's
/// connection waits in the accept queue and is served as soon as a deadline frees a place.
#[tokio::test]
async fn at_the_global_cap_the_platform_is_served_when_a_deadline_frees_a_place() {
    let mut h = start("global-cap", None, |c| {
        c.max_connections = 2;
        c.max_connections_per_source = 1;
        c.header_timeout_ms = 300;
    })
    .await;
    let mut silent = vec![connect_from("127.0.0.3", h.addr).await, connect_from("127.0.0.4", h.addr).await];
    let body = b_leg("ringing", "85cb3194-76e2-43e1-ad56-59556af617b9", "queued@cpaas");
    let platform = connect_from("127.0.0.2", h.addr).await;
    assert_eq!(exchange(platform, &request("POST", &body, Some((SECRET, now())))).await, (200, r#"{"legs":1}"#.into()));
    assert_eq!(next(&mut h.rx).await.facts().sip_call_id.as_deref(), Some("queued@cpaas"));
    for s in &mut silent {
        assert_eq!(assert_closed(s).await, "");
    }
    h.finish().await;
}
