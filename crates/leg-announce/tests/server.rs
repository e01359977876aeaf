//! The endpoint on loopback, over plain HTTP and TLS, with a real signer: accepted, 401, 413,
//! 400, 405 — and what reaches the channel.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use correlation::LegUpdate;
use leg_announce::{LegAnnounceServer, LegsConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
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

async fn start(name: &str, tls: Option<(String, String)>, max_body_bytes: usize) -> Harness {
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
    let config = LegsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        signing_secret_files: vec![dir.join("old.secret"), dir.join("new.secret")],
        max_body_bytes,
        tls_cert_file,
        tls_key_file,
    };
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

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A signed (or not) HTTP/1.1 request, as bytes.
fn request(method: &str, body: &str, signature: Option<(&str, u64)>) -> Vec<u8> {
    let mut head = format!(
        "{method} /legs HTTP/1.1\r\nHost: listener\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some((secret, ts)) = signature {
        let secret = SigningSecret::parse(secret).unwrap();
        let sig = sign_header(&[secret], "msg_1", ts, body.as_bytes());
        head.push_str(&format!("webhook-id: msg_1\r\nwebhook-timestamp: {ts}\r\nwebhook-signature: {sig}\r\n"));
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
    let mut h = start("plain", None, 4096).await;
    let one = b_leg("ringing", "85cb3194-76e2-43e1-ad56-59556af617b9", "b1@cpaas");
    let two = format!(
        "[{},{}]",
        b_leg("in-progress", "85cb3194-76e2-43e1-ad56-59556af617b9", "b1@cpaas"),
        b_leg("completed", "85cb3194-76e2-43e1-ad56-59556af617b9", "b1@cpaas")
    );

    assert_eq!(plain(h.addr, &request("POST", &one, Some((SECRET, now())))).await, (200, r#"{"legs":1}"#.into()));
    let LegUpdate::Learned(f) = h.rx.recv().await.unwrap() else { panic!() };
    assert_eq!(f.sip_call_id.as_deref(), Some("b1@cpaas"));
    // The old secret of a rotation is still good.
    let old = "whsec_b2xkb2xkb2xkb2xkb2xkb2xkb2xkb2xk";
    assert_eq!(plain(h.addr, &request("POST", &two, Some((old, now())))).await.0, 200);
    assert!(matches!(h.rx.recv().await.unwrap(), LegUpdate::Updated(_)));
    assert!(matches!(h.rx.recv().await.unwrap(), LegUpdate::Ended(_)));

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
        "POST /legs HTTP/1.1\r\nHost: l\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
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
    let mut h = start("tls", Some((cert_pem, key_pem)), 4096).await;

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
    assert_eq!(h.rx.recv().await.unwrap().facts().sip_call_id.as_deref(), Some("tls@cpaas"));
    // Plain HTTP to the TLS port gets no answer.
    assert_eq!(plain(h.addr, &request("POST", &body, Some((SECRET, now())))).await.0, 0);
    h.finish().await;
}

#[tokio::test]
async fn startup_errors_name_the_key() {
    let config = |files: Vec<PathBuf>, cert: Option<PathBuf>, key: Option<PathBuf>| LegsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        signing_secret_files: files,
        max_body_bytes: 1024,
        tls_cert_file: cert,
        tls_key_file: key,
    };
    let err = |c: LegsConfig| async move { LegAnnounceServer::bind(&c).await.unwrap_err().to_string() };
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
        err(config(s.clone(), Some(dir.join("c")), None)).await.starts_with("legs.tls_cert_file and legs.tls_key_file")
    );
    std::fs::write(dir.join("empty.pem"), "").unwrap();
    assert!(
        err(config(s, Some(dir.join("empty.pem")), Some(dir.join("empty.pem"))))
            .await
            .starts_with("legs.tls_cert_file: ")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
