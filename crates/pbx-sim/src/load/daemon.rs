//! The daemon under load: the real `pbx-listener` binary, started with a `NOTIFY_SOCKET` of
//! ours (so start-up is measured to the READY=1 systemd would see), watched through `/proc`
//! (RSS, CPU) and its admin endpoint (`/metrics`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixDatagram};

/// A running daemon.
pub struct Daemon {
    child: Child,
    admin: String,
    binary: PathBuf,
    config: PathBuf,
    /// Notifications, as systemd would read them (read at once: a full socket would block
    /// the daemon's sender).
    notify: tokio::sync::mpsc::UnboundedReceiver<(Instant, String)>,
    reader: tokio::task::JoinHandle<()>,
    /// Spawn to READY=1.
    pub ready_after: Duration,
}

/// User and system CPU of a process, in clock ticks (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// What `/proc` says about the process at one moment.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// When.
    pub at: Instant,
    /// Resident set, KiB.
    pub rss_kib: u64,
    /// User + system CPU so far, seconds.
    pub cpu_secs: f64,
}

impl ProcSample {
    /// Reads `/proc/<pid>/status` and `/proc/<pid>/stat`.
    pub fn read(pid: u32) -> Option<ProcSample> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command (which may hold spaces) start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command.
        let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ProcSample { at: Instant::now(), rss_kib, cpu_secs: ticks / TICKS_PER_SEC })
    }
}

impl Daemon {
    /// Starts `binary run --config config` and waits (at most `limit`) for READY=1.
    pub async fn start(
        binary: &Path,
        config: &Path,
        admin: &str,
        log: &Path,
        limit: Duration,
    ) -> anyhow::Result<Daemon> {
        let dir = config.parent().context("the configuration's directory")?;
        let socket_path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&socket_path);
        let socket = UnixDatagram::bind(&socket_path).context("binding the notify socket")?;
        let (tx, notify) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf).await {
                if tx.send((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned())).is_err() {
                    break;
                }
            }
        });
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log).context("the daemon's log")?;
        let started = Instant::now();
        let child = Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("NOTIFY_SOCKET", &socket_path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("the daemon's log")?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut daemon = Daemon {
            child,
            admin: admin.to_owned(),
            binary: binary.to_owned(),
            config: config.to_owned(),
            notify,
            reader,
            ready_after: Duration::ZERO,
        };
        daemon.ready_after = daemon.wait_for("READY=1", limit).await.map(|at| at.duration_since(started))?;
        Ok(daemon)
    }

    /// Waits for a notification holding `what`; the instant it arrived.
    async fn wait_for(&mut self, what: &str, limit: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left.min(Duration::from_millis(200)), self.notify.recv()).await {
                Ok(Some((at, text))) => {
                    if text.lines().any(|l| l == what) {
                        return Ok(at);
                    }
                }
                Ok(None) => bail!("the notify socket closed"),
                Err(_) => {}
            }
            if let Some(status) = self.child.try_wait().context("waiting for the daemon")? {
                bail!("the daemon exited ({status}) before {what}");
            }
            if Instant::now() >= deadline {
                bail!("no {what} from the daemon within {limit:?}");
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `/proc` now.
    pub fn sample(&self) -> Option<ProcSample> {
        ProcSample::read(self.pid())
    }

    /// The admin endpoint's `/metrics`, as name (with labels) → value.
    pub async fn metrics(&self) -> anyhow::Result<HashMap<String, f64>> {
        let text = http_get(&self.admin, "/metrics").await?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect())
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then waits (at most `limit`) for the exit; its status code.
    pub async fn terminate(mut self, limit: Duration) -> anyhow::Result<Option<i32>> {
        let pid = self.pid().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().context("kill -TERM")?;
        let deadline = Instant::now() + limit;
        loop {
            while self.notify.try_recv().is_ok() {}
            if let Some(status) = self.child.try_wait().context("waiting for the daemon")? {
                self.reader.abort();
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                self.child.kill().ok();
                self.child.wait().ok();
                bail!("the daemon did not stop within {limit:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL (`kill -9`), reaped.
    pub fn kill(mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        self.reader.abort();
    }

    /// Discards the notifications received so far (STATUS lines); call now and then.
    pub fn drain_notifications(&mut self) {
        while self.notify.try_recv().is_ok() {}
    }

    /// `pbx-listener outbox stats --json` against its configuration (run after it stopped, or
    /// while it runs: the CLI opens its own connection).
    pub fn outbox_stats(&self) -> anyhow::Result<serde_json::Value> {
        outbox_stats(&self.binary, &self.config)
    }
}

/// `pbx-listener outbox stats --json` for `config`.
pub fn outbox_stats(binary: &Path, config: &Path) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(binary)
        .args(["outbox", "--config"])
        .arg(config)
        .args(["stats", "--json"])
        .env_remove("RUST_LOG")
        .output()
        .context("running pbx-listener outbox stats")?;
    if !out.status.success() {
        bail!("pbx-listener outbox stats failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).context("reading outbox stats")
}

/// A plain HTTP/1.1 GET on loopback; the body.
async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut text))
        .await
        .context("the admin endpoint did not answer within 10 s")??;
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).context("no HTTP body")
}

impl Drop for Daemon {
    /// A run that fails half-way must not leave a daemon behind.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.child.kill().ok();
            self.child.wait().ok();
        }
        self.reader.abort();
    }
}
