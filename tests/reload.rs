//! Issue 12: reloading the configuration in place (SIGHUP, `systemctl reload`) with the real
//! binary, two simulated IP Offices and the platform receiver, while calls are in progress.
//!
//! - A broken file: the daemon runs on with the old configuration and says why (the error as
//!   `check-config` prints it), counted as `invalid`.
//! - A valid change to one PBX's block: that link restarts, the other does not, and every event
//!   of both calls arrives exactly once, in the contract's sequence.
//! - A changed `[outbox]`: refused, "needs a restart", the daemon runs on.
//!
//! systemd hears `RELOADING=1` then `READY=1` around each reload (a notify socket the test
//! binds). Waits are bounded; nothing asserts on time.

#![allow(clippy::unwrap_used)] // Tests unwrap what they built themselves.

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pbx_sim::avaya_r11::{AvayaSim, CallSpec, Pacing, Scenario, SimConfig};
use pbx_sim::conformance::{Conformance, ListenerRig, PbxBlock, SequenceKey};

const USER: &str = "reload";
const PASSWORD: &str = "reload-password";
const LIMIT: Duration = Duration::from_secs(30);

/// The `[[pbx]]` block of the simulator on `port`.
fn block(name: &str, port: u16, keepalive_secs: u32) -> PbxBlock {
    let keys = format!(
        "host = \"127.0.0.1\"\nport = {port}\nusername = {USER:?}\npassword_file = \"avaya-password\"\n\
         reconnect_min_ms = 100\nreconnect_max_secs = 1\nresync_settle_ms = 200\nkeepalive_secs = {keepalive_secs}"
    );
    PbxBlock::new(name, "avaya-r11", &keys)
}

/// The `[[pbx]]` blocks as the rig writes them.
fn blocks_text(blocks: &[PbxBlock]) -> String {
    blocks.iter().map(|b| format!("[[pbx]]\nname = {:?}\ntype = {:?}\n{}\n\n", b.name, b.pbx_type, b.keys)).collect()
}

/// Collects what the daemon tells systemd.
struct NotifySocket {
    messages: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
    path: String,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            // Ends with the test process; reads are bounded by the timeout.
            loop {
                if let Ok(n) = socket.recv(&mut buf) {
                    sink.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        });
        NotifySocket { messages, _dir: dir, path: path.display().to_string() }
    }

    fn all(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }
}

/// Polls `f` until it holds, at most `LIMIT` (the condition is the test; the limit a net).
fn eventually(what: &str, rig: &ListenerRig, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !f() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}\n--- daemon log ---\n{}", rig.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spec(n: u64) -> CallSpec {
    CallSpec {
        sip_call_id: format!("reload-{n}@platform.example"),
        caller: format!("44770090014{n}"),
        did: "441234567890".into(),
        caller_name: format!("Caller {n}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_running_on_errors_and_restarts_only_what_changed() {
    let paced = || SimConfig {
        pacing: Pacing::RealTime { step: Duration::from_millis(400) },
        ..SimConfig::fast(USER, PASSWORD)
    };
    let hq = AvayaSim::start("127.0.0.1:0".parse().unwrap(), paced()).await.unwrap();
    let branch = AvayaSim::start("127.0.0.1:0".parse().unwrap(), paced()).await.unwrap();
    let (hq_port, branch_port) = (hq.addr().port(), branch.addr().port());
    let blocks = [block("hq", hq_port, 30), block("branch", branch_port, 30)];
    let mut rig = ListenerRig::prepare(env!("CARGO_BIN_EXE_pbx-listener").as_ref(), &blocks, "").await.unwrap();
    rig.write_file("avaya-password", PASSWORD).unwrap();
    let notify = NotifySocket::bind();
    rig.set_env("NOTIFY_SOCKET", &notify.path);
    rig.spawn().unwrap();
    tokio::time::timeout(LIMIT, hq.wait_for_subscriptions(1)).await.unwrap();
    tokio::time::timeout(LIMIT, branch.wait_for_subscriptions(1)).await.unwrap();
    let original = std::fs::read_to_string(rig.config()).unwrap();

    // A call on each PBX, in progress during the reloads.
    let calls = tokio::spawn(async move {
        let (one, two) = (Scenario::HoldResume(spec(1)), Scenario::HoldResume(spec(2)));
        tokio::join!(hq.play(&one), branch.play(&two));
        (hq, branch)
    });
    let arrived = rig.platform().wait_for_distinct(2, LIMIT).await;
    assert!(arrived >= 2, "{}", rig.log());

    // 1. A broken file: refused with the error as check-config prints it; nothing stops.
    // `pbx-listener reload` (what `systemctl reload` runs) signals and waits for the verdict.
    std::fs::write(rig.config(), original.replace("[account]\n", "[account]\nbogus = 1\n")).unwrap();
    let reload = |rig: &ListenerRig| {
        std::process::Command::new(env!("CARGO_BIN_EXE_pbx-listener"))
            .args(["reload", "--pid", &rig.pid().unwrap().to_string(), "--admin", &rig.admin().to_string()])
            .output()
            .unwrap()
    };
    let out = reload(&rig);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("pbx-listener.toml:2:1: `account.bogus`: unknown field `bogus`"), "{stderr}");
    let log = rig.log();
    assert!(log.contains("Reload refused: the configuration has an error."), "{log}");
    assert!(log.contains("pbx-listener.toml:2:1: `account.bogus`: unknown field `bogus`"), "{log}");
    assert!(rig.is_running());

    // 2. A valid change to the branch's block only: its link restarts, the head office's not.
    let changed = original
        .replace(&blocks_text(&blocks), &blocks_text(&[block("hq", hq_port, 30), block("branch", branch_port, 20)]));
    assert_ne!(changed, original, "the branch's block changed");
    std::fs::write(rig.config(), &changed).unwrap();
    let before = rig.platform().distinct_accepted();
    assert!(before < 10, "the calls are still in progress when the reload comes ({before} of 10 events)");
    let out = reload(&rig);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("reload ok: PBX restarted: branch"));
    eventually("the applied reload", &rig, || rig.log().contains("Configuration reloaded."));
    assert!(rig.log().contains("PBX restarted: branch"), "{}", rig.log());

    let (hq, branch) = tokio::time::timeout(LIMIT, calls).await.unwrap().unwrap();
    let events = rig.wait_for_events(10).await.unwrap();
    assert_eq!(hq.stats().subscriptions, 1, "the head office's link was not touched");
    assert_eq!(branch.stats().subscriptions, 2, "the branch's link restarted once");

    // 3. A changed outbox directory: refused, needs a restart; the daemon runs on.
    std::fs::write(rig.config(), changed.replace("data_dir = \"state\"", "data_dir = \"elsewhere\"")).unwrap();
    rig.signal("HUP").unwrap();
    eventually("the reload that needs a restart", &rig, || rig.log().contains("this change needs a restart"));
    let status: serde_json::Value = serde_json::from_str(&rig.admin_get("/status").unwrap()).unwrap();
    assert_eq!(status["lastReload"]["result"], "needs-restart", "{status}");
    assert_eq!(status["verdict"], "degraded", "running, but not on the file on disk: {status}");
    let metrics = rig.admin_get("/metrics").unwrap();
    for (result, n) in [("ok", 1), ("invalid", 1), ("needs-restart", 1)] {
        let line = format!("pbx_listener_config_reloads_total{{result=\"{result}\"}} {n}");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }

    rig.stop().unwrap();
    // Every event once, in the contract's sequence, on both PBXs.
    let events_after = rig.events().unwrap();
    assert_eq!(events_after.len(), events.len(), "nothing more arrived after the calls ended");
    assert_eq!(rig.platform().duplicates(), 0, "nothing was sent twice");
    for pbx in ["hq", "branch"] {
        let mine: Vec<_> =
            events_after.iter().filter(|e| e.meta.get("pbx").map(String::as_str) == Some(pbx)).cloned().collect();
        Conformance::new(SequenceKey::Extension)
            .expect("4001", "ringing, connected, held, connected, disconnected:normal")
            .check(&mine)
            .assert_ok();
    }
    // systemd heard about each reload, and readiness after each.
    let told = notify.all().join("\n");
    assert_eq!(told.matches("RELOADING=1").count(), 3, "{told}");
    let last_reloading = told.rfind("RELOADING=1").unwrap();
    assert!(told[last_reloading..].contains("READY=1"), "READY=1 after the last reload: {told}");
    assert!(told.contains("MONOTONIC_USEC="), "{told}");
    hq.stop().await;
    branch.stop().await;
}
