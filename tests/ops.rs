//! Issue 12, end to end: `pbx-listener status` and `tail` against the running daemon (real
//! binary, real sockets), `/metrics` checked by Prometheus's own parser (`promtool check
//! metrics`) while the numbers move, and the shipped alert rules and dashboard checked by
//! `promtool check rules` / `promtool test rules`.
//!
//! `promtool` comes from Debian's `prometheus` package (scripts/test installs it); without it
//! these tests fail and say so.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use pbx_sim::avaya_r11::Scenario;
use pbx_sim::platform::Platform;
use support::{
    NO_CORRELATION_WAIT, Rig, SCENARIOS, Sims, cmd, eventually, free_port, run_bounded, start_sims, terminate,
};

const LIMIT: Duration = Duration::from_secs(120);

/// Plays the named scenarios once each, numbering calls from `first`.
fn play(sims: &Sims, names: &'static [&'static str], first: u64) -> tokio::task::JoinHandle<()> {
    let pbx = sims.pbx.clone();
    sims.rt.spawn(async move {
        pbx.wait_for_subscriptions(1).await;
        for (i, name) in names.iter().enumerate() {
            let scenario = Scenario::named(name, first + 2 * i as u64).expect("scenario");
            pbx.play(&scenario).await;
        }
    })
}

fn url(platform: &Platform) -> String {
    format!("http://{}/events", platform.addr())
}

/// `pbx-listener status` (bounded): exit code and stdout.
fn status(admin: &str, json: bool) -> (i32, String) {
    let mut c = cmd();
    c.args(["status", "--admin", admin]);
    if json {
        c.arg("--json");
    }
    let out = run_bounded(&mut c, Duration::from_secs(30));
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `status --json` once it answers with exit code `code`.
fn status_json_when(admin: &str, code: i32, what: &str) -> serde_json::Value {
    eventually(LIMIT, what, || {
        let (c, out) = status(admin, true);
        (c == code).then(|| serde_json::from_str(&out).expect("status JSON"))
    })
}

#[test]
fn status_and_tail_follow_a_running_daemon() {
    let sims = start_sims("");
    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    let rig = Rig::with_admin(sims.pbx.addr(), &url(&sims.platform), NO_CORRELATION_WAIT, admin_port);
    let mut daemon = rig.spawn("run");

    let report = status_json_when(&admin, 0, "status OK with the PBX link up");
    assert_eq!(report["verdict"], "ok");
    assert_eq!(report["pbx"]["sim"]["state"], "up");
    assert_eq!(report["problems"], serde_json::json!([]));

    // Two tail clients with different filters, connected before the calls.
    let spawn_tail = |args: &[&str]| {
        cmd()
            .args(["tail", "--admin", &admin])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tail")
    };
    let mut ringing = spawn_tail(&["--status", "ringing", "--pbx", "sim", "--count", "3"]);
    let mut ext = spawn_tail(&["--extension", "4002", "--format", "text", "--count", "2"]);
    eventually(LIMIT, "both tail clients connected", || {
        let (_, out) = status(&admin, true);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        (v["tail"]["clients"] == 2).then_some(())
    });

    let playing = play(&sims, &SCENARIOS, 1);
    let ringing = support::wait_bounded(&mut ringing, LIMIT);
    assert_eq!(ringing.status.code(), Some(0), "{}", String::from_utf8_lossy(&ringing.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&ringing.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for e in &lines {
        assert_eq!(e["status"], "ringing", "{e}");
        assert_eq!(e["meta"]["pbx"], "sim", "{e}");
        generic_event::validate_json(e.to_string().as_bytes()).expect("a tail line is a contract event");
    }
    let ext = support::wait_bounded(&mut ext, LIMIT);
    assert_eq!(ext.status.code(), Some(0), "{}", String::from_utf8_lossy(&ext.stderr));
    let text = String::from_utf8_lossy(&ext.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().all(|l| l.contains(" sim ext 4002 ") && l.contains("correlation=none")), "{text}");

    sims.rt.block_on(playing).expect("scenarios");
    // Every event arrives; then the report shows what happened.
    let report = eventually(LIMIT, "everything delivered", || {
        let (code, out) = status(&admin, true);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let done = code == 0
            && v["outbox"]["pendingEvents"] == 0
            && v["delivery"]["delivered"].as_u64()? >= sims.platform.accepted().len() as u64
            && !sims.platform.accepted().is_empty();
        done.then_some(v)
    });
    // No leg source is configured: every call is decided at once, none waits for a leg.
    assert!(report["correlation"]["noLegExpected"].as_u64().unwrap() >= 7, "{report}");
    assert_eq!(report["correlation"]["unmatched"], 0, "{report}");
    assert!(report["delivery"]["lastSuccessMs"].as_u64().is_some(), "{report}");
    assert_eq!(report["delivery"]["state"], "delivering");
    let (code, text) = status(&admin, false);
    assert_eq!(code, 0, "{text}");
    assert!(text.starts_with("pbx-listener OK: 1 PBX link(s) up, delivering\n"), "{text}");
    assert!(text.contains("\n  sim: up for "), "{text}");
    assert!(text.contains(" delivered ("), "{text}");

    assert!(terminate(&mut daemon, LIMIT).success(), "{}", rig.log("run"));
    let (code, text) = status(&admin, false);
    assert_eq!(code, 3, "the daemon is gone: UNKNOWN\n{text}");
    assert!(text.starts_with("pbx-listener UNKNOWN: cannot reach the daemon's admin endpoint"), "{text}");
    let out = run_bounded(cmd().args(["tail", "--admin", &admin]), LIMIT);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn status_is_degraded_while_the_platform_fails_and_says_why() {
    let sims = start_sims("503*100000");
    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    let rig = Rig::with_admin(sims.pbx.addr(), &url(&sims.platform), NO_CORRELATION_WAIT, admin_port);
    let mut daemon = rig.spawn("run");
    let playing = play(&sims, &SCENARIOS[..1], 1);

    let report = status_json_when(&admin, 1, "status DEGRADED while the platform answers 503");
    assert_eq!(report["verdict"], "degraded");
    assert!(report["problems"][0].as_str().unwrap().starts_with("platform: failing for "), "{report}");
    let last = &report["delivery"]["lastError"];
    assert_eq!((last["status"].as_u64(), last["outcome"].as_str()), (Some(503), Some("retrying")), "{report}");
    assert!(report["outbox"]["pendingEvents"].as_u64().unwrap() > 0, "{report}");
    let (code, text) = status(&admin, false);
    assert_eq!(code, 1, "{text}");
    assert!(text.starts_with("pbx-listener DEGRADED: platform: failing for "), "{text}");
    assert!(text.contains("(HTTP 503, retrying): HTTP 503"), "{text}");

    sims.rt.block_on(playing).expect("scenario");
    assert!(terminate(&mut daemon, LIMIT).success(), "{}", rig.log("run"));
}

#[test]
fn status_is_down_when_no_pbx_link_is_up() {
    let sims = start_sims("");
    // Nothing listens where the PBX should be.
    let nowhere = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    let rig = Rig::with_admin(nowhere, &url(&sims.platform), "", admin_port);
    let mut daemon = rig.spawn("run");
    // (While the daemon starts, DOWN may also say "pipeline: starting"; wait for the link.)
    let report = eventually(LIMIT, "status DOWN for the PBX link", || {
        let (code, out) = status(&admin, true);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        (code == 2 && v["problems"][0].as_str()?.starts_with("PBX sim: link ")).then_some(v)
    });
    assert_eq!(report["verdict"], "down");
    assert!(report["problems"][0].as_str().unwrap().starts_with("PBX sim: link "), "{report}");
    let (code, text) = status(&admin, false);
    assert_eq!(code, 2, "{text}");
    assert!(text.starts_with("pbx-listener DOWN: PBX sim: link "), "{text}");
    assert!(terminate(&mut daemon, LIMIT).success(), "{}", rig.log("run"));
}

/// `promtool`, or a clear failure.
fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("promtool is missing: install Debian's `prometheus` package (scripts/test installs it)")
    })
}

/// `promtool check metrics` on an exposition; panics with its findings.
fn promtool_check_metrics(exposition: &str) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(exposition.as_bytes()).expect("write to promtool");
    }
    let out = support::wait_bounded(&mut child, LIMIT);
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sum of every series of each metric (labels folded), from the text exposition.
fn sums(exposition: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        let name = series.split('{').next().unwrap_or(series).to_owned();
        *out.entry(name).or_insert(0.0) += value.parse::<f64>().unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    out
}

fn scrape(admin: &str) -> String {
    support::http_get(admin, "/metrics").expect("/metrics answers")
}

#[test]
fn metrics_pass_promtool_and_move_while_calls_flow() {
    let sims = start_sims("");
    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    let rig = Rig::with_admin(sims.pbx.addr(), &url(&sims.platform), NO_CORRELATION_WAIT, admin_port);
    let mut daemon = rig.spawn("run");

    sims.rt.block_on(play(&sims, &SCENARIOS[..1], 1)).expect("first call");
    eventually(LIMIT, "the first call delivered", || (!sims.platform.accepted().is_empty()).then_some(()));
    let before_text = eventually(LIMIT, "the first delivery counted", || {
        let text = scrape(&admin);
        (sums(&text).get("pbx_listener_forwarder_delivered_events_total") > Some(&0.0)).then_some(text)
    });
    promtool_check_metrics(&before_text);
    let before = sums(&before_text);

    let delivered_before = sims.platform.accepted().len();
    sims.rt.block_on(play(&sims, &SCENARIOS[1..], 11)).expect("more calls");
    let after_text = eventually(LIMIT, "the later calls delivered and counted", || {
        let text = scrape(&admin);
        let s = sums(&text);
        let delivered = *s.get("pbx_listener_forwarder_delivered_events_total")?;
        (sims.platform.accepted().len() > delivered_before && delivered >= sims.platform.accepted().len() as f64)
            .then_some(text)
    });
    promtool_check_metrics(&after_text);
    let after = sums(&after_text);

    for grew in [
        "pbx_listener_signals_received_total",
        "pbx_listener_events_total",
        "pbx_listener_outbox_appended_events_total",
        "pbx_listener_outbox_commits_total",
        "pbx_listener_forwarder_delivered_events_total",
        "pbx_listener_forwarder_requests_total",
        "pbx_listener_forwarder_delivery_latency_seconds_count",
        "pbx_listener_correlation_no_leg_expected_calls_total",
        "pbx_listener_devlink_records_received_total",
        "pbx_listener_uptime_seconds",
    ] {
        let (b, a) = (before.get(grew).copied().unwrap_or(0.0), after.get(grew).copied().unwrap_or(0.0));
        assert!(a > b, "{grew} did not grow: {b} then {a}");
    }
    assert_eq!(after.get("pbx_listener_build_info"), Some(&1.0));
    assert_eq!(after.get("pbx_listener_pbx_link_up"), Some(&1.0));
    assert!(after["pbx_listener_forwarder_last_success_timestamp_seconds"] > 1.0e9);
    assert!(after_text.contains("# TYPE pbx_listener_forwarder_delivery_latency_seconds histogram"));
    assert!(after_text.contains("pbx_listener_forwarder_delivery_latency_seconds_bucket{le=\"0.25\"}"));
    assert!(after.contains_key("pbx_listener_outbox_oldest_pending_age_seconds"));

    assert!(terminate(&mut daemon, LIMIT).success(), "{}", rig.log("run"));
}

/// Every `pbx_listener_*` name an expression uses (histogram suffixes folded).
fn metric_names(text: &str) -> Vec<String> {
    let mut out = vec![];
    for (i, _) in text.match_indices("pbx_listener_") {
        let name: String =
            text[i..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        let name = ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(&n).to_owned());
        out.push(name);
    }
    out
}

#[test]
fn alert_rules_pass_promtool_and_fire_as_tested() {
    let root = support::root();
    let rules = root.join("deploy/prometheus-alerts.yml");
    let out = run_bounded(Command::new(promtool()).args(["check", "rules"]).arg(&rules), LIMIT);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Unit tests of the rules: each alert fires on the series it is about, and only then.
    let out = run_bounded(
        Command::new(promtool()).args(["test", "rules"]).arg(root.join("tests/promtool/alerts.test.yml")),
        LIMIT,
    );
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn the_dashboard_and_rules_use_only_metrics_the_daemon_has() {
    let root = support::root();
    // The daemon's own catalogue and each PBX type's (`PbxKind::metrics`, in its events.rs).
    let mut catalogue = std::fs::read_to_string(root.join("crates/daemon/src/telemetry.rs")).expect("telemetry.rs");
    for entry in std::fs::read_dir(root.join("crates")).expect("crates") {
        let events = entry.expect("entry").path().join("src/events.rs");
        if events.to_string_lossy().contains("/adapter-") {
            catalogue.push_str(&std::fs::read_to_string(&events).unwrap_or_default());
        }
    }
    let dashboard = std::fs::read_to_string(root.join("deploy/grafana-dashboard.json")).expect("dashboard");
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| p.len() >= 8), "panels");
    let rules = std::fs::read_to_string(root.join("deploy/prometheus-alerts.yml")).expect("rules");
    let names: Vec<String> = metric_names(&dashboard).into_iter().chain(metric_names(&rules)).collect();
    assert!(names.len() > 10, "{names:?}");
    for name in names {
        assert!(
            catalogue.contains(&format!("\"{name}\"")),
            "{name} is not a metric of the daemon (telemetry.rs, or an adapter's METRICS)"
        );
    }
}

/// The notify protocol with the real binary, against a `NOTIFY_SOCKET` this test binds (the
/// same datagrams systemd reads; scripts/test-systemd checks them under a real systemd too):
/// READY=1 with a STATUS=, WATCHDOG=1 pings while the pipeline runs, STOPPING=1 at SIGTERM.
#[test]
fn systemd_notifications_reach_a_notify_socket() {
    use std::os::unix::net::UnixDatagram;
    let sims = start_sims("");
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let rig = Rig::new(sims.pbx.addr(), &url(&sims.platform), NO_CORRELATION_WAIT);
    let log = std::fs::File::create(rig.dir.path().join("run.log")).expect("log");
    let mut daemon = cmd()
        .args(["run", "--log-format", "text", "--config"])
        .arg(&rig.config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "2000000")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn pbx-listener run");
    let mut messages: Vec<String> = vec![];
    let receive_until = |messages: &mut Vec<String>, what: &str, done: &dyn Fn(&[String]) -> bool| {
        eventually(LIMIT, what, || {
            let mut buf = [0u8; 4096];
            if let Ok(n) = socket.recv(&mut buf) {
                messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            done(messages).then_some(())
        })
    };
    receive_until(&mut messages, "READY=1", &|m| m.iter().any(|x| x.lines().any(|l| l == "READY=1")));
    let ready = messages.iter().find(|x| x.lines().any(|l| l == "READY=1")).expect("ready").clone();
    assert!(ready.lines().any(|l| l.starts_with("STATUS=Running: 1 PBX(s)")), "{ready:?}");
    receive_until(&mut messages, "two WATCHDOG=1 pings", &|m| {
        m.iter().filter(|x| x.lines().any(|l| l == "WATCHDOG=1")).count() >= 2
    });
    receive_until(&mut messages, "a delivery STATUS=", &|m| m.iter().any(|x| x.starts_with("STATUS=delivering")));
    Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().expect("kill");
    receive_until(&mut messages, "STOPPING=1", &|m| m.iter().any(|x| x.lines().any(|l| l == "STOPPING=1")));
    let status = support::wait_bounded(&mut daemon, LIMIT).status;
    assert!(status.success(), "{status}: {}", rig.log("run"));
}

/// DESIGN §7: every listener is bounded. Connections that open the admin endpoint and say
/// nothing hold it at most until the head deadline: a client behind them is still answered,
/// and the silent ones are closed by the daemon.
#[test]
fn silent_connections_cannot_hold_the_admin_endpoint() {
    use std::io::{Read, Write};
    let sims = start_sims("");
    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    let rig = Rig::with_admin(sims.pbx.addr(), &url(&sims.platform), NO_CORRELATION_WAIT, admin_port);
    let mut daemon = rig.spawn("run");
    eventually(LIMIT, "the admin endpoint", || support::http_get(&admin, "/health/live"));
    // More silent connections than the endpoint serves at once (32).
    let silent: Vec<std::net::TcpStream> =
        (0..40).map(|_| std::net::TcpStream::connect(&admin).expect("connect")).collect();
    // A real request behind them is answered (once a head deadline frees a place).
    let mut client = std::net::TcpStream::connect(&admin).expect("connect");
    client.set_read_timeout(Some(LIMIT)).unwrap();
    write!(client, "GET /health/live HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The silent connections that held the places were closed by the daemon, unanswered.
    for mut s in silent.into_iter().take(32) {
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut buf = Vec::new();
        // End of stream, or a reset: closed either way; a read timeout would mean it was kept.
        if let Err(e) = s.read_to_end(&mut buf) {
            let kept = matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
            assert!(!kept, "a silent connection was kept open: {e}");
        }
        assert!(buf.is_empty(), "a silent client got an answer: {:?}", String::from_utf8_lossy(&buf));
    }
    assert!(terminate(&mut daemon, LIMIT).success(), "{}", rig.log("run"));
}
