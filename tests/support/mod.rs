//! Shared helpers of the end-to-end suites: run the real `pbx-listener` binary, bounded.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test (built by cargo for this test target).
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pbx-listener"))
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// A `pbx-listener` command with logs kept quiet unless the test asks otherwise.
pub fn cmd() -> Command {
    let mut c = Command::new(bin());
    c.env_remove("RUST_LOG").env_remove("PBX_LISTENER_CONFIG").env_remove("JOURNAL_STREAM");
    c
}

/// Runs to completion, killing the process if it outlives `limit` (a hang must fail the test,
/// not stall CI). The limit is a safety net, not an assertion about speed.
pub fn run_bounded(command: &mut Command, limit: Duration) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn pbx-listener");
    wait_bounded(&mut child, limit)
}

/// Waits for `child`, killing it after `limit`; panics if it had to be killed.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Output {
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            s.read_to_end(&mut buf).ok();
        }
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            s.read_to_end(&mut buf).ok();
        }
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            let status = child.wait().expect("wait after kill");
            let err = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
            panic!("pbx-listener did not finish within {limit:?} ({status}); stderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: out_reader.join().unwrap_or_default(), stderr: err_reader.join().unwrap_or_default() }
}

/// A working directory with a configuration that reads a simulated IP Office and delivers to a
/// simulated platform, both on loopback.
pub struct Rig {
    /// Holds the config, secrets, outbox and logs; removed at the end.
    pub dir: tempfile::TempDir,
    /// The configuration file.
    pub config: PathBuf,
}

/// The platform signing secret every rig uses.
pub fn platform_secret() -> webhook_signature::SigningSecret {
    webhook_signature::SigningSecret::from_bytes(b"pbx-listener end-to-end test secret!".to_vec())
}

/// The simulated IP Office's service user.
pub const SIM_USER: &str = "e2e";
/// Its password.
pub const SIM_PASSWORD: &str = "e2e-password";

impl Rig {
    /// Writes a configuration for a DevLink3 simulator at `pbx` and a platform at `platform_url`;
    /// `extra` is appended (more sections).
    pub fn new(pbx: std::net::SocketAddr, platform_url: &str, extra: &str) -> Rig {
        Rig::build(pbx, platform_url, extra, "enabled = false")
    }

    /// As [`Rig::new`], with the admin endpoint on `127.0.0.1:<admin_port>`.
    pub fn with_admin(pbx: std::net::SocketAddr, platform_url: &str, extra: &str, admin_port: u16) -> Rig {
        Rig::build(pbx, platform_url, extra, &format!("listen = \"127.0.0.1:{admin_port}\""))
    }

    fn build(pbx: std::net::SocketAddr, platform_url: &str, extra: &str, admin: &str) -> Rig {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("platform-secret"), platform_secret().to_whsec()).expect("write secret");
        std::fs::write(dir.path().join("avaya-password"), SIM_PASSWORD).expect("write password");
        let text = format!(
            r#"
[account]
id = "9539ee93-64c8-802b-360b-c6f2f7cf2507"
name = "E2E"

[numbers]
default_region = "GB"

[[pbx]]
name = "sim"
type = "avaya-r11"
host = "{host}"
port = {port}
username = "{SIM_USER}"
password_file = "avaya-password"
reconnect_min_ms = 100
reconnect_max_secs = 1
resync_settle_ms = 300

[platform]
url = "{platform_url}"
signing_secret_files = ["platform-secret"]
backoff_initial_ms = 100
backoff_max_secs = 2

[outbox]
data_dir = "state"
max_bytes = 67108864

[admin]
{admin}

{extra}
"#,
            host = pbx.ip(),
            port = pbx.port(),
        );
        let config = dir.path().join("pbx-listener.toml");
        std::fs::write(&config, text).expect("write config");
        Rig { dir, config }
    }

    /// The outbox database.
    pub fn outbox(&self) -> PathBuf {
        self.dir.path().join("state").join("outbox.sqlite")
    }

    /// Starts `pbx-listener run` with its output going to `<dir>/<log>.log`.
    pub fn spawn(&self, log: &str) -> Child {
        let file = std::fs::File::create(self.dir.path().join(format!("{log}.log"))).expect("log file");
        let err = file.try_clone().expect("log file");
        cmd()
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .arg("--log-format")
            .arg("text")
            .stdout(file)
            .stderr(err)
            .spawn()
            .expect("spawn pbx-listener run")
    }

    /// The log of a run.
    pub fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{log}.log"))).unwrap_or_default()
    }
}

/// Sends SIGTERM and waits (bounded) for a clean exit.
pub fn terminate(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("pbx-listener did not stop within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `limit` (a safety net: the
/// condition is what the test checks, never the time it took).
pub fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("gave up waiting for {what} after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; the daemon binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A plain HTTP/1.1 GET on loopback; the body, or `None` when nothing answers yet.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// The loopback address with a port the OS picks.
pub const LOOPBACK: ([u8; 4], u16) = ([127, 0, 0, 1], 0);

/// No leg is announced in these suites; nobody should wait for one.
pub const NO_CORRELATION_WAIT: &str = "[correlation]\nwait_for_leg_ms = 0\nnumber_window_ms = 0\n";

/// The scenarios a suite plays once each (seven PBX calls: the attended transfer makes two).
pub const SCENARIOS: [&str; 6] = ["hunt-group", "hold", "park", "blind-transfer", "attended-transfer", "abandon"];

/// A DevLink3 simulator and a platform receiver on their own runtime (the suites are
/// synchronous: they drive the binary as a process).
pub struct Sims {
    /// Runs the simulators.
    pub rt: tokio::runtime::Runtime,
    /// The simulated IP Office.
    pub pbx: std::sync::Arc<pbx_sim::avaya_r11::AvayaSim>,
    /// The simulated platform.
    pub platform: pbx_sim::platform::Platform,
}

/// Starts the simulators; the platform answers as `script` says.
pub fn start_sims(script: &str) -> Sims {
    use pbx_sim::avaya_r11::{AvayaSim, SimConfig};
    use pbx_sim::platform::{Platform, PlatformConfig};
    use std::net::SocketAddr;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let pbx = rt.block_on(AvayaSim::start(SocketAddr::from(LOOPBACK), SimConfig::fast(SIM_USER, SIM_PASSWORD)));
    let config = PlatformConfig {
        secrets: vec![platform_secret()],
        script: script.parse().expect("script"),
        ..Default::default()
    };
    let platform = rt.block_on(Platform::start(SocketAddr::from(LOOPBACK), config)).expect("platform");
    Sims { rt, pbx: std::sync::Arc::new(pbx.expect("DevLink3 simulator")), platform }
}

/// A short load against the binary under test for [`run_load`]: `calls_per_sec` new calls a
/// second, each over 2 s, for `duration_secs` after 1 s of warm-up, drained within 90 s.
pub fn short_load(calls_per_sec: f64, duration_secs: u64) -> pbx_sim::load::Args {
    let mut args = pbx_sim::load::Args::new(&bin());
    args.calls_per_sec = calls_per_sec;
    args.call_secs = 2.0;
    args.duration_secs = duration_secs;
    args.warmup_secs = 1;
    args.drain_limit_secs = 90;
    args
}

/// Runs a bounded `pbx-sim load` against the binary under test on a 2-thread runtime, prints
/// its report, and fails unless the conservation check passed.
pub fn run_load(args: &pbx_sim::load::Args) -> pbx_sim::load::Report {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let report = rt.block_on(pbx_sim::load::run(args)).unwrap_or_else(|e| panic!("the load run failed: {e:#}"));
    eprintln!("{}", report.text());
    assert!(report.conservation.ok(), "conservation failed:\n{}", report.text());
    report
}
