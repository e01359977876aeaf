//! The conformance suite every PBX type passes (as Vector's sinks pass
//! `run_and_assert_sink_compliance`).
//!
//! [`ListenerRig`] runs the real `pbx-listener` binary with a configuration whose `[[pbx]]`
//! blocks point at simulators, delivering to a [`Platform`] receiver, all over loopback. A test
//! plays its scenario on the simulator, waits for the events, and compares them with the Level
//! 3 sequence it expects per extension ([`Conformance::check`]); the report lists every
//! difference, and every breach of the event contract's rules ([`contract_violations`]), not
//! just the first.
//!
//! ```no_run
//! # async fn t() -> anyhow::Result<()> {
//! use pbx_sim::conformance::{Conformance, ListenerRig, PbxBlock, SequenceKey};
//!
//! let block = PbxBlock::new("sim", "avaya-r11", "host = \"127.0.0.1\"\nport = 50797\n…");
//! // In a test of the `pbx-listener` package: env!("CARGO_BIN_EXE_pbx-listener").
//! let binary = std::path::Path::new("target/debug/pbx-listener");
//! let rig = ListenerRig::start(binary, &[block], "").await?;
//! // … play a scenario on the simulator …
//! let events = rig.wait_for_events(5).await?;
//! Conformance::new(SequenceKey::Extension)
//!     .expect("4001", "ringing, connected, disconnected:normal")
//!     .check(&events)
//!     .assert_ok();
//! # Ok(()) }
//! ```
//!
//! Bounds: every wait gives up after [`ListenerRig::limit`] and fails with what it saw; nothing
//! asserts on time.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use generic_event::GenericEvent;
use webhook_signature::SigningSecret;

use crate::platform::{Platform, PlatformConfig};

/// How long a wait may last before the test fails (a safety net, not a measurement).
pub const LIMIT: Duration = Duration::from_secs(30);

/// The secret the rig's platform verifies signatures with.
pub fn platform_secret() -> SigningSecret {
    SigningSecret::from_bytes(b"pbx-listener conformance secret!".to_vec())
}

/// One `[[pbx]]` block of the rig's configuration.
#[derive(Debug, Clone)]
pub struct PbxBlock {
    /// `name`.
    pub name: String,
    /// `type`.
    pub pbx_type: String,
    /// The other keys, as TOML lines (relative paths are relative to the rig's directory).
    pub keys: String,
}

impl PbxBlock {
    /// A block.
    pub fn new(name: &str, pbx_type: &str, keys: &str) -> PbxBlock {
        PbxBlock { name: name.to_owned(), pbx_type: pbx_type.to_owned(), keys: keys.to_owned() }
    }
}

/// The real daemon, configured for simulators, delivering to a [`Platform`] on loopback.
pub struct ListenerRig {
    dir: tempfile::TempDir,
    binary: PathBuf,
    config: PathBuf,
    platform: Platform,
    admin: std::net::SocketAddr,
    env: Vec<(String, String)>,
    child: Option<Child>,
    runs: u32,
    limit: Duration,
}

impl ListenerRig {
    /// Writes the configuration (the `[[pbx]]` blocks, then `extra` sections such as
    /// `[correlation]` or `[legs]`), starts the platform receiver and `binary run`.
    pub async fn start(binary: &Path, pbx: &[PbxBlock], extra: &str) -> anyhow::Result<ListenerRig> {
        let rig = ListenerRig::prepare(binary, pbx, extra).await?;
        let mut rig = rig;
        rig.spawn()?;
        Ok(rig)
    }

    /// Like [`ListenerRig::start`] without starting the daemon (write files it needs with
    /// [`ListenerRig::write_file`] first, then [`ListenerRig::spawn`]).
    pub async fn prepare(binary: &Path, pbx: &[PbxBlock], extra: &str) -> anyhow::Result<ListenerRig> {
        let dir = tempfile::tempdir().context("creating the rig's directory")?;
        let platform = Platform::start(
            "127.0.0.1:0".parse().context("loopback")?,
            PlatformConfig { secrets: vec![platform_secret()], ..PlatformConfig::default() },
        )
        .await
        .context("starting the platform receiver")?;
        std::fs::write(dir.path().join("platform-secret"), platform_secret().to_whsec())
            .context("writing the platform secret")?;
        // A free loopback port for the admin endpoint (free when asked; the daemon binds it soon).
        let admin = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port for the admin endpoint")?;
        let mut text = format!(
            r#"[account]
id = "9539ee93-64c8-802b-360b-c6f2f7cf2507"
name = "Conformance"

[numbers]
default_region = "GB"

[platform]
url = "{url}"
signing_secret_files = ["platform-secret"]
backoff_initial_ms = 100
backoff_max_secs = 2

[outbox]
data_dir = "state"
max_bytes = 67108864

[admin]
listen = "{admin}"

"#,
            url = platform.url()
        );
        for block in pbx {
            text.push_str(&format!(
                "[[pbx]]\nname = {:?}\ntype = {:?}\n{}\n\n",
                block.name, block.pbx_type, block.keys
            ));
        }
        text.push_str(extra);
        let config = dir.path().join("pbx-listener.toml");
        std::fs::write(&config, text).context("writing the configuration")?;
        Ok(ListenerRig {
            dir,
            binary: binary.to_owned(),
            config,
            platform,
            admin,
            env: Vec::new(),
            child: None,
            runs: 0,
            limit: LIMIT,
        })
    }

    /// The rig's directory (configuration, secrets, outbox, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The configuration file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The platform receiver.
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// The longest a wait may take.
    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// The admin endpoint's address (`/metrics`, `/status`).
    pub fn admin(&self) -> std::net::SocketAddr {
        self.admin
    }

    /// An environment variable for the next [`ListenerRig::spawn`] (e.g. `NOTIFY_SOCKET`).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Sends `signal` (`"HUP"`, `"TERM"`) to the running daemon.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("the daemon is not running")?;
        let status =
            Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status().context("kill")?;
        if !status.success() {
            bail!("kill -{signal} failed");
        }
        Ok(())
    }

    /// The running daemon's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the daemon is still running (`false` once it exited).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// A plain HTTP GET of the admin endpoint: the body, or `None` when it does not answer.
    pub fn admin_get(&self, path: &str) -> Option<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(self.admin).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.admin).ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
    }

    /// Writes a file into the rig's directory (a password the simulator accepts).
    pub fn write_file(&self, name: &str, contents: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Starts `pbx-listener run` (again, after [`ListenerRig::stop`] or [`ListenerRig::kill`]);
    /// its output goes to `run-<n>.log` in the rig's directory.
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("the daemon is already running");
        }
        self.runs += 1;
        let log = std::fs::File::create(self.dir.path().join(format!("run-{}.log", self.runs)))
            .context("creating the daemon's log")?;
        let child = Command::new(&self.binary)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .arg("--log-format")
            .arg("text")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("the daemon's log")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Every run's log so far, for failure messages.
    pub fn log(&self) -> String {
        (1..=self.runs)
            .map(|n| std::fs::read_to_string(self.dir.path().join(format!("run-{n}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// Waits until the platform accepted at least `n` distinct events (or fails after the
    /// limit, with the daemon's log), then returns every accepted event in acceptance order.
    pub async fn wait_for_events(&self, n: usize) -> anyhow::Result<Vec<GenericEvent>> {
        let got = self.platform.wait_for_distinct(n, self.limit).await;
        let events = self.events()?;
        if got < n {
            bail!(
                "{got} of {n} events arrived within {:?}:\n{}\n--- daemon log ---\n{}",
                self.limit,
                events.iter().map(describe).collect::<Vec<_>>().join("\n"),
                self.log()
            );
        }
        Ok(events)
    }

    /// Every event the platform accepted so far, in acceptance order (one per event id). A
    /// resend must be byte-identical: an id delivered with two different bodies is an error.
    pub fn events(&self) -> anyhow::Result<Vec<GenericEvent>> {
        let mut bodies: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for d in self.platform.deliveries() {
            if let Some(first) = bodies.get(&d.id) {
                if *first != d.body {
                    bail!("event {} was delivered twice with different bodies", d.id);
                }
            } else {
                bodies.insert(d.id.clone(), d.body.clone());
            }
        }
        self.platform
            .accepted()
            .iter()
            .map(|d| serde_json::from_slice(&d.body).with_context(|| format!("delivery {} is not an event", d.id)))
            .collect()
    }

    /// SIGTERM, then waits (bounded) for the daemon to exit; fails if it exits non-zero.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().context("kill -TERM")?;
        let deadline = std::time::Instant::now() + self.limit;
        loop {
            if let Some(status) = child.try_wait().context("waiting for the daemon")? {
                if !status.success() {
                    bail!("the daemon exited with {status}:\n{}", self.log());
                }
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                child.kill().ok();
                bail!("the daemon did not stop within {:?} of SIGTERM:\n{}", self.limit, self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (a crash), and reaps the process.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().context("kill -9")?;
            child.wait().context("reaping the daemon")?;
        }
        Ok(())
    }
}

impl Drop for ListenerRig {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

/// How events are grouped into sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceKey {
    /// By extension (`-` for call-level events): enough when a scenario's calls do not overlap.
    Extension,
    /// By `meta.pbxCallId` and extension (`"c0a82a03.1 4001"`).
    CallAndExtension,
}

/// The events' Level 3 sequences, keyed as asked, each entry `status`, `status:reason` when
/// there is a reason, then ` (reconciled)` for events the listener synthesized.
pub fn sequences(events: &[GenericEvent], key: SequenceKey) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events {
        let ext = e.extension.clone().unwrap_or_else(|| "-".into());
        let key = match key {
            SequenceKey::Extension => ext,
            SequenceKey::CallAndExtension => {
                format!("{} {ext}", e.meta.get("pbxCallId").map(String::as_str).unwrap_or("?"))
            }
        };
        out.entry(key).or_default().push(step(e));
    }
    out
}

fn step(e: &GenericEvent) -> String {
    let mut text = e.status.to_string();
    if let Some(r) = e.meta.get("reason") {
        text.push(':');
        text.push_str(r);
    }
    if e.meta.get("reconciled").map(String::as_str) == Some("true") {
        text.push_str(" (reconciled)");
    }
    text
}

fn describe(e: &GenericEvent) -> String {
    format!(
        "{} {} {} {}",
        e.meta.get("pbxCallId").map(String::as_str).unwrap_or("?"),
        e.extension.as_deref().unwrap_or("-"),
        step(e),
        e.timestamp
    )
}

/// Breaches of the contract's rules (DESIGN §2) in `events`, in words: an event the
/// validator rejects, a `ringing` not followed by `connected` or `disconnected`, a `connected`
/// not followed by `disconnected`, a `disconnected` without `meta.reason`, an event without
/// `meta.source`. (Two different bodies under one event id are caught by
/// [`ListenerRig::events`], which sees the ids.)
pub fn contract_violations(events: &[GenericEvent]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut last: BTreeMap<(Option<uuid::Uuid>, String), String> = BTreeMap::new();
    for e in events {
        let bytes = e.to_json_bytes();
        if let Err(errors) = generic_event::validate_json(&bytes) {
            problems.push(format!("invalid event {}: {errors:?}", describe(e)));
        }
        if e.meta.get("source").is_none_or(String::is_empty) {
            problems.push(format!("no meta.source: {}", describe(e)));
        }
        let status = e.status.to_string();
        if status == "disconnected" && e.meta.get("reason").is_none_or(String::is_empty) {
            problems.push(format!("disconnected without meta.reason: {}", describe(e)));
        }
        if e.event.to_string() == "phone" {
            last.insert((e.child_sid, e.extension.clone().unwrap_or_default()), status);
        }
    }
    for ((child, ext), status) in last {
        if matches!(status.as_str(), "ringing" | "connected" | "held") {
            problems.push(format!(
                "extension {ext} of call {} ends in {status}, never disconnected",
                child.map(|c| c.to_string()).unwrap_or_default()
            ));
        }
    }
    problems
}

/// What a scenario should produce.
#[derive(Debug, Clone)]
pub struct Conformance {
    key: SequenceKey,
    expected: BTreeMap<String, Vec<String>>,
}

impl Conformance {
    /// Expectations keyed by `key`.
    pub fn new(key: SequenceKey) -> Conformance {
        Conformance { key, expected: BTreeMap::new() }
    }

    /// `key` (an extension, or `"<pbxCallId> <extension>"`) goes through `steps`, written
    /// `"ringing, connected, disconnected:normal"`.
    pub fn expect(mut self, key: &str, steps: &str) -> Conformance {
        self.expected.insert(key.to_owned(), steps.split(", ").map(str::to_owned).collect());
        self
    }

    /// How many events the expectations add up to (what to wait for).
    pub fn event_count(&self) -> usize {
        self.expected.values().map(Vec::len).sum()
    }

    /// Compares `events` with the expectations and the contract's rules.
    pub fn check(&self, events: &[GenericEvent]) -> Report {
        let actual = sequences(events, self.key);
        let mut differences = Vec::new();
        for (key, want) in &self.expected {
            match actual.get(key) {
                Some(got) if got == want => {}
                Some(got) => differences.push(format!(
                    "{key}: expected {}\n{:width$}  got      {}",
                    want.join(", "),
                    "",
                    got.join(", "),
                    width = key.len()
                )),
                None => differences.push(format!("{key}: expected {}, got nothing", want.join(", "))),
            }
        }
        for (key, got) in &actual {
            if !self.expected.contains_key(key) {
                differences.push(format!("{key}: unexpected {}", got.join(", ")));
            }
        }
        differences.extend(contract_violations(events).into_iter().map(|p| format!("contract: {p}")));
        Report { differences, events: events.iter().map(describe).collect() }
    }
}

/// The outcome of [`Conformance::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Every difference, in words; empty when the scenario conforms.
    pub differences: Vec<String>,
    /// The events, one line each, for the failure message.
    pub events: Vec<String>,
}

impl Report {
    /// Whether everything matched.
    pub fn is_ok(&self) -> bool {
        self.differences.is_empty()
    }

    /// Panics with every difference and the events when anything differs.
    #[track_caller]
    pub fn assert_ok(&self) {
        assert!(self.is_ok(), "{self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} difference(s):", self.differences.len())?;
        for d in &self.differences {
            writeln!(f, "  {d}")?;
        }
        writeln!(f, "events (pbxCallId extension step timestamp):")?;
        for e in &self.events {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn event(call: &str, ext: Option<&str>, status: &str, reason: Option<&str>) -> GenericEvent {
        let mut meta =
            BTreeMap::from([("pbxCallId".to_owned(), call.to_owned()), ("source".to_owned(), "test".to_owned())]);
        if let Some(r) = reason {
            meta.insert("reason".to_owned(), r.to_owned());
        }
        let json = serde_json::json!({
            "accountId": "9539ee93-64c8-802b-360b-c6f2f7cf2507", "accountName": "T",
            "parentCallSid": null, "callSid": null,
            "childSid": uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, call.as_bytes()),
            "type": "voice", "event": "phone", "status": status, "from": "1", "to": "2",
            "extension": ext, "meta": meta, "timestamp": 1
        });
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_conforming_scenario_has_no_differences() {
        let events = [
            event("7", Some("201"), "ringing", None),
            event("7", Some("202"), "ringing", None),
            event("7", Some("201"), "connected", None),
            event("7", Some("202"), "disconnected", Some("answered-elsewhere")),
            event("7", Some("201"), "disconnected", Some("normal")),
        ];
        let report = Conformance::new(SequenceKey::Extension)
            .expect("201", "ringing, connected, disconnected:normal")
            .expect("202", "ringing, disconnected:answered-elsewhere")
            .check(&events);
        assert!(report.is_ok(), "{report}");
    }

    #[test]
    fn every_difference_and_broken_rule_is_reported() {
        let events = [
            event("7", Some("201"), "ringing", None),
            event("7", Some("201"), "connected", None),
            event("7", Some("203"), "ringing", None),
            event("8", Some("202"), "disconnected", None),
        ];
        let report = Conformance::new(SequenceKey::CallAndExtension)
            .expect("7 201", "ringing, connected, disconnected:normal")
            .expect("7 204", "ringing")
            .check(&events);
        let text = report.to_string();
        assert!(text.contains("7 201: expected ringing, connected, disconnected:normal"), "{text}");
        assert!(text.contains("7 204: expected ringing, got nothing"), "{text}");
        assert!(text.contains("7 203: unexpected ringing"), "{text}");
        assert!(text.contains("disconnected without meta.reason"), "{text}");
        assert!(text.contains("extension 201 of call"), "{text}");
        assert!(text.contains("ends in connected, never disconnected"), "{text}");
        assert!(text.contains("extension 203 of call"), "{text}");
        assert_eq!(report.differences.len(), 7, "{text}");
    }
}
