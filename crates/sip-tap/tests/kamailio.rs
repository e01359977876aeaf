//! Real SIP peers: SIPp (Debian `sip-tester`) places two B-leg calls carrying the platform's
//! `X-Call-Sid`/`X-Parent-Call-Sid` through Kamailio (Debian `kamailio`) to a SIPp UAS; the
//! proxy's `siptrace` mirrors every message it receives and sends as HEPv3 (with an auth key)
//! to our tap on 127.0.0.1. The tap must learn each leg exactly once despite the proxy's
//! double view, and end it on the BYE.
//!
//! Everything runs on loopback, is bounded by timeouts, and stops its processes itself. When
//! `sipp` or `kamailio` is missing the test fails and says how to install them.

#![allow(clippy::unwrap_used)]

use std::net::UdpSocket as StdUdp;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use correlation::LegUpdate;
use sip_tap::{SipTap, SipTapConfig, hep};
use tokio::sync::{mpsc, oneshot};

const CALL_SIDS: [&str; 2] = ["7c1f0d2e-9a4b-4c3d-8e5f-6a7b8c9d0e1f", "0d9e8f7a-6b5c-4d3e-9f2a-1b0c9d8e7f6a"];
const PARENT: &str = "2a3b4c5d-6e7f-4809-9a1b-2c3d4e5f6a7b";
const HEP_KEY: &str = "kamailio-test-key";

/// Kills and reaps a child process when dropped, so no peer outlives the test.
struct Peer(&'static str, Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.1.kill();
        let _ = self.1.wait();
    }
}

impl Peer {
    fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Peer {
        let out = std::fs::File::create(log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Peer(name, child)
    }

    /// Waits (bounded) for the process to exit; its exit code.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.1.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not exit within {limit:?}", self.0);
    }
}

fn require(tool: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "`{tool}` is not installed. This test needs real SIP peers: \
             `apt-get update && apt-get install -y sip-tester kamailio` (Debian package `{package}`)"
        )
    })
}

/// Debian's multiarch module directory (`/usr/lib/<triplet>/kamailio/modules`).
fn kamailio_modules() -> PathBuf {
    std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("kamailio/modules"))
        .chain([PathBuf::from("/usr/lib/kamailio/modules")])
        .find(|p| p.join("siptrace.so").is_file())
        .unwrap_or_else(|| panic!("kamailio's siptrace module is missing: `apt-get install -y kamailio`"))
}

fn free_udp_port() -> u16 {
    StdUdp::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn dump(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let tail: String =
            text.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        out.push_str(&format!("\n--- {} ---\n{tail}\n", entry.path().display()));
    }
    out
}

/// Sends an OPTIONS to Kamailio until it answers (it answers probes itself).
fn wait_for_kamailio(port: u16, limit: Duration) -> bool {
    let probe = StdUdp::bind("127.0.0.1:0").unwrap();
    probe.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let local = probe.local_addr().unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    while start.elapsed() < limit {
        let options = format!(
            "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-probe{n}\r\n\
             From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1:{port}>\r\nCall-ID: probe-{n}@test\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 5\r\nContent-Length: 0\r\n\r\n",
            n = start.elapsed().as_millis()
        );
        let _ = probe.send_to(options.as_bytes(), ("127.0.0.1", port));
        if let Ok(n) = probe.recv(&mut buf)
            && buf[..n].starts_with(b"SIP/2.0 200")
        {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_calls_through_kamailio_are_learned_once_each() {
    let sipp = require("sipp", "sip-tester");
    let kamailio = require("kamailio", "kamailio");
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let dir = std::env::temp_dir().join(format!("sip-tap-kamailio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("hep.key");
    std::fs::write(&key_file, HEP_KEY).unwrap();

    // The tap, on an ephemeral loopback port, requiring Kamailio's auth key.
    let config = SipTapConfig {
        hep_udp_listen: Some("127.0.0.1:0".parse().unwrap()),
        hep_auth_key_file: Some(key_file),
        ..SipTapConfig::default()
    };
    let tap = SipTap::bind(config).await.unwrap();
    let hep_addr = tap.hep_udp_addr().unwrap();
    let stats = tap.stats_handle();
    let (tx, mut rx) = mpsc::channel(64);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(tap.run(tx, async move {
        let _ = stopped.await;
    }));

    let (kam_port, uas_port, uac_port) = (free_udp_port(), free_udp_port(), free_udp_port());
    let mut uas = Peer::spawn(
        "sipp UAS",
        Command::new(&sipp).current_dir(&dir).args(["-sf"]).arg(here.join("sipp/uas_pbx.xml")).args([
            "-i",
            "127.0.0.1",
            "-p",
            &uas_port.to_string(),
            "-m",
            "2",
            "-timeout",
            "60",
            "-timeout_error",
            "-nostdin",
        ]),
        &dir.join("uas.log"),
    );
    let mut proxy = Peer::spawn(
        "kamailio",
        Command::new(&kamailio)
            .current_dir(&dir)
            .arg("-f")
            .arg(here.join("kamailio/kamailio.cfg"))
            .arg("-L")
            .arg(kamailio_modules())
            .args(["-DD", "-E", "-m", "32", "-M", "4", "-Y"])
            .arg(&dir)
            .args(["-l", &format!("udp:127.0.0.1:{kam_port}")])
            .args(["-A", &format!("HEP_URI=\"sip:{hep_addr}\"")])
            .args(["-A", &format!("UAS_URI=\"sip:127.0.0.1:{uas_port}\"")])
            .args(["-A", &format!("HEP_KEY=\"{HEP_KEY}\"")]),
        &dir.join("kamailio.log"),
    );
    let ready =
        tokio::task::spawn_blocking(move || wait_for_kamailio(kam_port, Duration::from_secs(20))).await.unwrap();
    assert!(ready, "kamailio did not answer on 127.0.0.1:{kam_port}{}", dump(&dir));

    // Two calls, one after the other (-l 1), with known Call-IDs.
    let mut uac = Peer::spawn(
        "sipp UAC",
        Command::new(&sipp)
            .current_dir(&dir)
            .arg("-sf")
            .arg(here.join("sipp/uac_bleg.xml"))
            .arg("-inf")
            .arg(here.join("sipp/bleg_calls.csv"))
            .args(["-i", "127.0.0.1", "-p", &uac_port.to_string(), "-m", "2", "-l", "1", "-nostdin"])
            .args(["-cid_str", "bleg-%u@sipp.test", "-timeout", "60", "-timeout_error"])
            .arg(format!("127.0.0.1:{kam_port}")),
        &dir.join("uac.log"),
    );
    let (uac_code, uas_code) = tokio::task::spawn_blocking(move || {
        let a = uac.wait(Duration::from_secs(90));
        let b = uas.wait(Duration::from_secs(30));
        (a, b)
    })
    .await
    .unwrap();
    assert_eq!((uac_code, uas_code), (Some(0), Some(0)), "SIPp failed{}", dump(&dir));
    // Stop the proxy so that it has sent every copy it will send.
    let _ = Command::new("kill").args(["-TERM", &proxy.1.id().to_string()]).status();
    tokio::task::spawn_blocking(move || {
        proxy.wait(Duration::from_secs(20));
    })
    .await
    .unwrap();

    // A sentinel after everything Kamailio sent: once it is through, nothing else is coming.
    let sentinel =
        b"INVITE sip:1@x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-s\r\nFrom: <sip:s@x>;tag=s\r\n\
        To: <sip:1@x>\r\nCall-ID: sentinel@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let packet = hep::encode(&[(hep::chunk::AUTH_KEY, HEP_KEY.as_bytes()), (hep::chunk::PAYLOAD, sentinel)]);
    StdUdp::bind("127.0.0.1:0").unwrap().send_to(&packet, hep_addr).unwrap();
    let mut got = Vec::new();
    loop {
        let u = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no sentinel; got {got:#?}{}", dump(&dir)))
            .unwrap();
        if u.facts().sip_call_id.as_deref() == Some("sentinel@test") {
            break;
        }
        got.push(u);
    }

    let lines: Vec<String> = got
        .iter()
        .map(|u| {
            let (kind, f) = match u {
                LegUpdate::Learned(f) => ("learned", f),
                LegUpdate::Updated(f) => ("updated", f),
                LegUpdate::Ended(f) => ("ended", f),
            };
            let sid = |s: Option<uuid::Uuid>| s.map_or("-".to_owned(), |s| s.to_string());
            format!(
                "{kind} {} {} {} {} {}",
                f.sip_call_id.as_deref().unwrap_or("-"),
                sid(f.call_sid),
                sid(f.parent_call_sid),
                f.from.as_deref().unwrap_or("-"),
                f.to.as_deref().unwrap_or("-")
            )
        })
        .collect();
    let expected: Vec<String> = (0..2)
        .flat_map(|i| {
            [
                format!("learned bleg-{}@sipp.test {} {PARENT} 15557654321 15551230100", i + 1, CALL_SIDS[i]),
                format!("ended bleg-{}@sipp.test - - - -", i + 1),
            ]
        })
        .collect();
    assert_eq!(lines, expected, "{}", dump(&dir));
    // The capture time of a learned leg is Kamailio's HEP timestamp.
    assert!(got.iter().all(|u| !matches!(u, LegUpdate::Learned(f) if f.started.is_none())));
    let s = stats.stats();
    // Each call: INVITE, 100, INVITE, 180 x2, 200 x2, ACK, BYE x2, 200 x2 = 12 messages, more
    // if a slow machine made SIPp retransmit (which dedup absorbs: the updates above are exact).
    assert!(s.sip_messages > 2 * 12, "{s:?}{}", dump(&dir));
    assert_eq!((s.hep_unauthorized, s.hep_malformed, s.sip_malformed), (0, 0, 0));

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
