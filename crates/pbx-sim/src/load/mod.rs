//! `pbx-sim load`: the whole daemon under load, measured against the machine's limits.
//!
//! It runs the real `pbx-listener` binary against a PBX simulator ([`driver`]: `--pbx
//! avaya-r11` DevLink3, `avaya-r9` SMDR and optionally Delta2, `3cx` the Call Control API, each
//! over the daemon's real sockets) and the platform receiver ([`crate::platform`]), all on
//! loopback, in stages:
//!
//! 1. optionally the machine's limits ([`limits`]): fsyncs/s of the data disk and signed HTTP
//!    requests/s (`wrk`) to the same receiver;
//! 2. start-up: spawn to READY=1 with an empty outbox (a `NOTIFY_SOCKET` of ours);
//! 3. optionally a *fill*: the platform answers 503 while calls run fast, until `queue` events
//!    wait in the outbox; then optionally a restart, measuring READY with that queue;
//! 4. the measured stage: calls start at `calls_per_sec`, each lasting `call_secs` (so about
//!    `calls_per_sec × call_secs` are live), for `duration`, with the faults asked for; every
//!    second the daemon's `/metrics` and `/proc` are sampled;
//! 5. the drain: no new calls; every call ends; the outbox empties (bounded by `drain_limit`);
//!    the daemon stops with SIGTERM;
//! 6. the conservation check: every event the outbox accepted reached the platform (distinct
//!    ids = the outbox's `appended_total`, nothing dropped, quarantined or pending), every copy
//!    byte-identical, each call's events in order, every device's last event `disconnected`.
//!
//! Latency is measured from the moment a PBX phase (a ringing, an answer, a hang-up) leaves the
//! simulator to the moment each event it caused arrives at the receiver: both are in this
//! process, on one monotonic clock. Events of live feeds are attributed to phases by their
//! `timestamp` (the daemon's receipt time). SMDR's (and 3CX CDR's) events are stamped with when
//! things happened, known only when the record arrives after the call: they are attributed to
//! the phase that carried the record, and their latency is record → POST ([`ledger`]).
//! Reconciled events have no phase and are counted apart.
//!
//! Everything is bounded: the run's stages by their durations, waits by limits that fail the
//! run with what was seen.

pub mod daemon;
pub mod driver;
pub mod ledger;
pub mod limits;

use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use serde::Serialize;
use tokio::sync::watch;
use webhook_signature::SigningSecret;

use self::daemon::{Daemon, ProcSample};
pub use self::driver::{AvayaR9Driver, AvayaR11Driver, PbxDriver, ThreeCxDriver};
use self::ledger::{Latency, Ledger, SentPhases};
use crate::platform::{Platform, PlatformConfig, Script};

/// Command-line arguments of `pbx-sim load`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The `pbx-listener` binary (default: next to this `pbx-sim`).
    #[arg(long)]
    pub daemon: Option<PathBuf>,
    /// The PBX type to simulate: `avaya-r11` (DevLink3), `avaya-r9` (SMDR, optionally with
    /// Delta2) or `3cx` (the Call Control API).
    #[arg(long, default_value = "avaya-r11")]
    pub pbx: String,
    /// The scenario every call plays. avaya-r11: hunt-group (default), hold, park,
    /// blind-transfer, attended-transfer, abandon. avaya-r9: hunt-group (default), answered,
    /// missed, transfer, park, voicemail over SMDR, each also with `+delta2` (e.g.
    /// `hunt-group+delta2`: a DevLink relay's Delta2 live, SMDR completing). 3cx: queue
    /// (default), transfer, abandon, outbound, get-remove-race.
    #[arg(long)]
    pub scenario: Option<String>,
    /// New calls per second in the measured stage.
    #[arg(long, default_value_t = 100.0)]
    pub calls_per_sec: f64,
    /// How long each call lasts, first phase to last, in seconds.
    #[arg(long, default_value_t = 10.0, conflicts_with = "live_calls")]
    pub call_secs: f64,
    /// Instead of `--call-secs`: the calls live at once (call length = live / rate, per stage).
    #[arg(long)]
    pub live_calls: Option<u64>,
    /// How long new calls start in the measured stage, in seconds.
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
    /// The first seconds of the measured stage left out of rates and latency.
    #[arg(long, default_value_t = 5)]
    pub warmup_secs: u64,
    /// Before the measured stage, fill the outbox with this many events (the platform answers
    /// 503 meanwhile).
    #[arg(long, default_value_t = 0)]
    pub queue: u64,
    /// New calls per second while filling.
    #[arg(long, default_value_t = 1500.0)]
    pub fill_calls_per_sec: f64,
    /// Restart the daemon after the fill (measures READY with the queue).
    #[arg(long)]
    pub restart_after_fill: bool,
    /// Platform refuses connections at AT seconds into the measured stage for FOR seconds
    /// (`AT:FOR`).
    #[arg(long, value_parser = parse_window)]
    pub platform_down: Option<(u64, u64)>,
    /// Platform answers with this script from `--platform-script-at` seconds (e.g.
    /// `429*3:retry-after=2,503*3:retry-after=1`, or `200*5:delay-ms=600000` for a platform
    /// that never answers).
    #[arg(long)]
    pub platform_script: Option<String>,
    /// When `--platform-script` starts, seconds into the measured stage.
    #[arg(long, default_value_t = 0)]
    pub platform_script_at: u64,
    /// Drop the PBX link every this many seconds during the measured stage.
    #[arg(long)]
    pub flap_every_secs: Option<u64>,
    /// `kill -9` the daemon at these seconds into the measured stage (restarted at once).
    #[arg(long, value_delimiter = ',')]
    pub kill_at: Vec<u64>,
    /// Fill the data directory's filesystem at AT seconds for FOR seconds (`AT:FOR`; give a
    /// small filesystem as `--data-dir`, e.g. a tmpfs with `size=64m`).
    #[arg(long, value_parser = parse_window)]
    pub disk_full: Option<(u64, u64)>,
    /// Measure the machine's limits first (fsyncs/s of the data disk, `wrk` against the
    /// receiver).
    #[arg(long)]
    pub limits: bool,
    /// Where the outbox lives (default: a new directory under the system's temporary one).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The outbox cap, bytes.
    #[arg(long, default_value_t = 2 << 30)]
    pub max_bytes: u64,
    /// TOML for the daemon's configuration: lines before the first section header go into
    /// `[platform]`, the rest is appended (a `[correlation]` section replaces the run's own).
    #[arg(long, default_value = "")]
    pub config_extra: String,
    /// The longest wait for the outbox to drain at the end, in seconds.
    #[arg(long, default_value_t = 300)]
    pub drain_limit_secs: u64,
    /// Write the report as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Keep the run's directory (configuration, logs, outbox) and print where it is.
    #[arg(long)]
    pub keep: bool,
}

fn parse_window(text: &str) -> Result<(u64, u64), String> {
    let (a, b) = text.split_once(':').ok_or("expected AT:FOR (seconds)")?;
    Ok((a.parse().map_err(|_| "AT must be seconds")?, b.parse().map_err(|_| "FOR must be seconds")?))
}

impl Args {
    /// The defaults of the command line, for library users (tests) to adjust.
    pub fn new(daemon: &Path) -> Args {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: Args,
        }
        let mut args = Wrapper::parse_from(["load"]).args;
        args.daemon = Some(daemon.to_owned());
        args
    }
}

/// Runs `pbx-sim load` and prints the report; fails when the conservation check fails.
pub async fn run_cli(args: Args) -> anyhow::Result<()> {
    let report = run(&args).await?;
    print!("{}", report.text());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !report.conservation.ok() {
        bail!("the conservation check failed");
    }
    Ok(())
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `nproc`, the CPU model, and the load average before and after.
    pub machine: Machine,
    /// The run's parameters, as a line.
    pub parameters: String,
    /// Spawn → READY=1 with an empty outbox, ms.
    pub ready_empty_ms: f64,
    /// Spawn → READY=1 after the fill (with `queued` events), ms.
    pub ready_queued_ms: Option<f64>,
    /// Events pending when the daemon was restarted after the fill.
    pub queued: Option<u64>,
    /// RSS at the end of the fill (KiB), with the queue and the live calls.
    pub rss_after_fill_kib: Option<u64>,
    /// The measured window (after warm-up, to the end of the measured stage), seconds.
    pub window_secs: f64,
    /// PBX signals offered per second (calls started × phases), in the window.
    pub calls_started_per_sec: f64,
    /// Events accepted (committed) per second in the window.
    pub accepted_per_sec: f64,
    /// Events delivered per second in the window.
    pub delivered_per_sec: f64,
    /// Events pending in the outbox at the start and at the end of the window.
    pub backlog_start: u64,
    /// See `backlog_start`.
    pub backlog_end: u64,
    /// Latency of the events whose phase left in the window.
    pub latency: Option<Latency>,
    /// Events not attributed to a phase (reconciled after a link drop or restart).
    pub unattributed: u64,
    /// Events of a feed that reports after the fact (SMDR, 3CX's CDR), attributed to the phase
    /// that carried their record: their latency is record → POST (see [`ledger`]).
    pub after_the_fact: u64,
    /// Daemon RSS at the end of the window, KiB.
    pub rss_end_kib: u64,
    /// Largest and smallest RSS in the window, KiB.
    pub rss_max_kib: u64,
    /// See `rss_max_kib`.
    pub rss_min_kib: u64,
    /// RSS trend over the window, KiB per minute (least squares).
    pub rss_slope_kib_per_min: f64,
    /// Daemon CPU in the window, % of one core.
    pub cpu_percent: f64,
    /// This process's CPU (simulator + receiver) in the window, % of one core.
    pub sim_cpu_percent: f64,
    /// The machine's limits, when measured.
    pub limits: Option<Limits>,
    /// Per-second samples of the measured stage.
    pub samples: Vec<Sample>,
    /// What the faults did.
    pub faults: Vec<String>,
    /// The end-of-run check.
    pub conservation: Conservation,
}

/// The machine.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Cores.
    pub nproc: usize,
    /// `/proc/cpuinfo` model name.
    pub cpu: String,
    /// `/proc/loadavg` before the run.
    pub loadavg_before: String,
    /// `/proc/loadavg` after the run.
    pub loadavg_after: String,
    /// When (UTC, RFC 3339 seconds).
    pub date: String,
}

/// The machine's limits, as measured.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// 4 KiB append + fdatasync per second on the data disk.
    pub fsyncs_per_sec: f64,
    /// Signed POSTs per second answered by the receiver (`wrk`, 64 connections); `None`
    /// without `wrk`.
    pub http_requests_per_sec: Option<f64>,
    /// The daemon's delivery rate as a fraction of `http_requests_per_sec`.
    pub delivery_ratio: Option<f64>,
}

/// One second of the measured stage.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the stage started.
    pub t: f64,
    /// Events accepted since the daemon started.
    pub accepted: f64,
    /// Events delivered since the daemon started.
    pub delivered: f64,
    /// Events pending.
    pub pending: f64,
    /// Daemon RSS, KiB.
    pub rss_kib: u64,
    /// Daemon CPU so far, s.
    pub cpu_secs: f64,
}

/// The end-of-run check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Conservation {
    /// Events the outbox ever accepted (`appended_total`).
    pub accepted: u64,
    /// Distinct ids the platform accepted.
    pub delivered_distinct: u64,
    /// Accepted copies beyond the first.
    pub duplicates: u64,
    /// Refused answers (scripted faults), by status (0: connection dropped).
    pub refused: HashMap<u16, u64>,
    /// Everything wrong (empty: the run conserved every event).
    pub problems: Vec<String>,
    /// The daemon's exit code after SIGTERM.
    pub exit_code: Option<i32>,
}

impl Conservation {
    /// Nothing wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The pace of new calls.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pace {
    calls_per_sec: f64,
    call_secs: f64,
    /// Hold every phase (the daemon is being restarted); they go out late, when released.
    paused: bool,
}

/// What the scheduler reports.
#[derive(Debug, Default)]
struct Progress {
    calls_started: u64,
    phases_sent: u64,
    live: u64,
}

/// Plays calls at the pace in `pace` until it says 0 calls/s and every call is over.
async fn schedule<D: PbxDriver>(
    driver: Arc<D>,
    mut pace: watch::Receiver<Pace>,
    sent: Arc<Mutex<SentPhases>>,
    progress: Arc<Mutex<Progress>>,
    stop_when_idle: watch::Receiver<bool>,
) {
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    struct Due(std::cmp::Reverse<(Instant, u64, usize)>);
    let mut due: BinaryHeap<Due> = BinaryHeap::new();
    let mut calls: HashMap<u64, (D::Call, Vec<String>, f64)> = HashMap::new();
    let mut n: u64 = 0;
    let mut next_call = Instant::now();
    loop {
        let p = *pace.borrow_and_update();
        let now = Instant::now();
        if p.calls_per_sec <= 0.0 {
            next_call = now;
        }
        if !p.paused {
            // Start the calls due.
            while p.calls_per_sec > 0.0 && next_call <= now {
                let call = driver.plan(n);
                let ids = D::call_ids(&call);
                calls.insert(n, (call, ids, p.call_secs));
                due.push(Due(std::cmp::Reverse((next_call, n, 0))));
                n += 1;
                next_call += Duration::from_secs_f64(1.0 / p.calls_per_sec);
                lock(&progress).calls_started = n;
            }
            // Send the phases due.
            while let Some(Due(std::cmp::Reverse((at, _, _)))) = due.peek() {
                if *at > now {
                    break;
                }
                let Some(Due(std::cmp::Reverse((_, id, phase)))) = due.pop() else { break };
                let Some((call, ids, call_secs)) = calls.get_mut(&id) else { continue };
                let phases = D::phases(call);
                let wall = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                lock(&sent).sent(ids, Instant::now(), wall);
                driver.send(call, phase).await;
                lock(&progress).phases_sent += 1;
                if phase + 1 < phases {
                    let step = Duration::from_secs_f64(*call_secs / (phases - 1).max(1) as f64);
                    due.push(Due(std::cmp::Reverse((Instant::now() + step, id, phase + 1))));
                } else {
                    calls.remove(&id);
                }
            }
        }
        lock(&progress).live = calls.len() as u64;
        if calls.is_empty() && p.calls_per_sec <= 0.0 && *stop_when_idle.borrow() {
            return;
        }
        let mut wake = now + Duration::from_millis(100);
        if !p.paused {
            if let Some(Due(std::cmp::Reverse((at, _, _)))) = due.peek() {
                wake = wake.min(*at);
            }
            if p.calls_per_sec > 0.0 {
                wake = wake.min(next_call);
            }
        }
        tokio::select! {
            () = tokio::time::sleep_until(wake.into()) => {}
            _ = pace.changed() => {}
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The signing secret of a run.
fn secret() -> SigningSecret {
    SigningSecret::from_bytes(b"pbx-sim load: the platform's secret".to_vec())
}

/// Runs a load as `args` say (see the module documentation).
pub async fn run(args: &Args) -> anyhow::Result<Report> {
    match args.pbx.as_str() {
        "avaya-r11" => run_with(args, AvayaR11Driver::start(scenario(args)).await?).await,
        "avaya-r9" => run_with(args, AvayaR9Driver::start(scenario(args)).await?).await,
        "3cx" => run_with(args, ThreeCxDriver::start(scenario(args)).await?).await,
        other => bail!("no load driver for PBX type {other:?}; expected avaya-r11, avaya-r9 or 3cx"),
    }
}

/// The scenario of a run: `--scenario`, or the PBX type's default.
fn scenario(args: &Args) -> &str {
    args.scenario.as_deref().unwrap_or(match args.pbx.as_str() {
        "avaya-r9" => AvayaR9Driver::DEFAULT_SCENARIO,
        "3cx" => ThreeCxDriver::DEFAULT_SCENARIO,
        _ => AvayaR11Driver::DEFAULT_SCENARIO,
    })
}

fn default_daemon() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locating pbx-sim")?;
    Ok(me.with_file_name("pbx-listener"))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    Machine {
        nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu,
        loadavg_before: loadavg(),
        loadavg_after: String::new(),
        date,
    }
}

use std::process::Command;

async fn start_platform(addr: std::net::SocketAddr, secret: &SigningSecret) -> anyhow::Result<Platform> {
    let platform = Platform::start(addr, PlatformConfig { secrets: vec![secret.clone()], ..PlatformConfig::default() })
        .await
        .with_context(|| format!("starting the platform receiver on {addr}"))?;
    platform.keep_deliveries(false);
    Ok(platform)
}

/// Sets the platform's answers (nothing when it is down).
fn set_script(platform: &Option<Platform>, script: &str) -> anyhow::Result<()> {
    let script: Script = script.parse().with_context(|| format!("the platform script {script:?}"))?;
    if let Some(p) = platform {
        p.set_script(script);
    }
    Ok(())
}

/// Fills the filesystem of `path` with one file, to the last byte it takes.
fn fill_disk(path: &Path) -> anyhow::Result<u64> {
    use std::io::Write as _;
    let mut file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    let mut size = chunk.len();
    while size > 0 {
        match file.write(&chunk[..size]) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => size /= 2,
            Err(e) => return Err(e).context("filling the data disk"),
        }
    }
    let _ = file.sync_all();
    Ok(written)
}

/// The last lines of a log.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The run's parameters, as one line for the report.
fn parameters(args: &Args) -> String {
    let mut p = format!(
        "--pbx {} --scenario {} --calls-per-sec {} {} --duration-secs {} --warmup-secs {}",
        args.pbx,
        scenario(args),
        args.calls_per_sec,
        args.live_calls.map_or(format!("--call-secs {}", args.call_secs), |l| format!("--live-calls {l}")),
        args.duration_secs,
        args.warmup_secs
    );
    if args.queue > 0 {
        p.push_str(&format!(" --queue {} --fill-calls-per-sec {}", args.queue, args.fill_calls_per_sec));
        if args.restart_after_fill {
            p.push_str(" --restart-after-fill");
        }
    }
    if let Some((a, b)) = args.platform_down {
        p.push_str(&format!(" --platform-down {a}:{b}"));
    }
    if let Some(s) = &args.platform_script {
        p.push_str(&format!(" --platform-script {s} --platform-script-at {}", args.platform_script_at));
    }
    if let Some(s) = args.flap_every_secs {
        p.push_str(&format!(" --flap-every-secs {s}"));
    }
    if !args.kill_at.is_empty() {
        p.push_str(&format!(" --kill-at {}", args.kill_at.iter().map(u64::to_string).collect::<Vec<_>>().join(",")));
    }
    if let Some((a, b)) = args.disk_full {
        p.push_str(&format!(" --disk-full {a}:{b}"));
    }
    p
}

/// Least-squares slope of RSS (KiB) over time (s).
fn slope(samples: &[&Sample]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean_t = samples.iter().map(|s| s.t).sum::<f64>() / n;
    let mean_r = samples.iter().map(|s| s.rss_kib as f64).sum::<f64>() / n;
    let cov: f64 = samples.iter().map(|s| (s.t - mean_t) * (s.rss_kib as f64 - mean_r)).sum();
    let var: f64 = samples.iter().map(|s| (s.t - mean_t).powi(2)).sum();
    if var == 0.0 { 0.0 } else { cov / var }
}

/// The `[platform]` keys in `--config-extra` (lines before any section header) go into the
/// `[platform]` section; the rest is appended.
fn platform_extra(extra: &str) -> String {
    extra.lines().take_while(|l| !l.trim_start().starts_with('[')).collect::<Vec<_>>().join("\n")
}

fn strip_platform_extra(extra: &str) -> String {
    extra.lines().skip_while(|l| !l.trim_start().starts_with('[')).collect::<Vec<_>>().join("\n")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn run_with<D: PbxDriver>(args: &Args, driver: D) -> anyhow::Result<Report> {
    let mut machine = machine();
    let binary = match &args.daemon {
        Some(path) => path.clone(),
        None => default_daemon()?,
    };
    let work = tempfile::Builder::new().prefix("pbx-sim-load-").tempdir().context("creating the run's directory")?;
    let dir = work.path().to_owned();
    // Kept from the start, so that a failed run leaves its logs.
    let _work = if args.keep {
        eprintln!("pbx-sim load: the run's directory is {} (kept)", work.keep().display());
        None
    } else {
        Some(work)
    };
    let data_dir = args.data_dir.clone().unwrap_or_else(|| dir.join("state"));
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let secret = secret();

    // The platform.
    let first = start_platform("127.0.0.1:0".parse().context("loopback")?, &secret).await?;
    let platform_addr = first.addr();
    let platform_url = first.url();
    let mut platform = Some(first);

    // The machine's limits, before the daemon competes for the cores.
    let limits = if args.limits {
        let fsyncs = limits::fsyncs_per_sec(&data_dir, Duration::from_secs(3))?;
        let http = limits::http_ceiling(&platform_url, &secret, 64, Duration::from_secs(5), &dir)?;
        Some(Limits { fsyncs_per_sec: fsyncs, http_requests_per_sec: http, delivery_ratio: None })
    } else {
        None
    };

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let sent = Arc::new(Mutex::new(SentPhases::default()));
    let observe = |p: &Platform| tokio::spawn(ledger::follow(p.observe(), Arc::clone(&ledger), Arc::clone(&sent)));
    let mut followers = vec![platform.as_ref().map(observe).context("the platform")?];

    // The configuration.
    std::fs::write(dir.join("platform-secret"), secret.to_whsec()).context("writing the secret")?;
    let admin = format!("127.0.0.1:{}", free_port()?);
    let config = dir.join("pbx-listener.toml");
    let text = format!(
        "[account]\nid = \"9539ee93-64c8-802b-360b-c6f2f7cf2507\"\nname = \"Load\"\n\n[numbers]\ndefault_region = \"GB\"\n\n\
         [[pbx]]\nname = \"sim\"\ntype = \"{ty}\"\n{keys}\n\
         [platform]\nurl = \"{url}\"\nsigning_secret_files = [\"platform-secret\"]\nbackoff_initial_ms = 200\nbackoff_max_secs = 2\n{platform_extra}\n\
         {correlation}\
         [outbox]\ndata_dir = {data:?}\nmax_bytes = {max}\n\n[admin]\nlisten = \"{admin}\"\n\n[log]\nlevel = \"warn\"\n\n{extra}\n",
        ty = driver.pbx_type(),
        keys = driver.pbx_keys(&dir)?,
        url = platform_url,
        platform_extra = platform_extra(&args.config_extra),
        correlation = if args.config_extra.contains("[correlation]") {
            ""
        } else {
            "[correlation]\nwait_for_leg_ms = 0\nnumber_window_ms = 0\n\n"
        },
        data = data_dir.display().to_string(),
        max = args.max_bytes,
        extra = strip_platform_extra(&args.config_extra),
    );
    std::fs::write(&config, text).context("writing the configuration")?;
    let log = dir.join("daemon.log");
    let limit = Duration::from_secs(60);

    // Start-up with an empty outbox.
    let mut daemon = Daemon::start(&binary, &config, &admin, &log, limit).await?;
    let ready_empty_ms = daemon.ready_after.as_secs_f64() * 1000.0;
    let linked = driver.linked(1);
    tokio::time::timeout(limit, linked).await.context("the daemon never subscribed to the PBX")?;

    let (pace_tx, pace_rx) = watch::channel(Pace { calls_per_sec: 0.0, call_secs: args.call_secs, paused: false });
    let (idle_tx, idle_rx) = watch::channel(false);
    let progress = Arc::new(Mutex::new(Progress::default()));
    let driver = Arc::new(driver);
    let scheduler =
        tokio::spawn(schedule(Arc::clone(&driver), pace_rx, Arc::clone(&sent), Arc::clone(&progress), idle_rx));
    let call_secs = |rate: f64| args.live_calls.map_or(args.call_secs, |live| live as f64 / rate.max(0.001));
    let mut links = 1u64;
    let mut faults = Vec::new();

    // The fill: calls run fast while the platform refuses, until the queue is there.
    let (mut ready_queued_ms, mut queued, mut rss_after_fill_kib) = (None, None, None);
    if args.queue > 0 {
        set_script(&platform, "503*4000000000")?;
        pace_tx.send_replace(Pace {
            calls_per_sec: args.fill_calls_per_sec,
            call_secs: call_secs(args.fill_calls_per_sec),
            paused: false,
        });
        let deadline = Instant::now() + Duration::from_secs(3600);
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let pending = daemon.metrics().await?.get("pbx_listener_outbox_pending_events").copied().unwrap_or(0.0);
            if pending as u64 >= args.queue {
                break;
            }
            if Instant::now() > deadline || !daemon.running() {
                bail!("the outbox never reached {} pending events (at {pending})", args.queue);
            }
        }
        rss_after_fill_kib = daemon.sample().map(|s| s.rss_kib);
        if args.restart_after_fill {
            pace_tx.send_modify(|p| p.paused = true);
            let code = daemon.terminate(limit).await?;
            if code != Some(0) {
                bail!("the daemon exited {code:?} on SIGTERM after the fill");
            }
            let stats = daemon::outbox_stats(&binary, &config)?;
            queued = stats["pendingEvents"].as_u64();
            daemon = Daemon::start(&binary, &config, &admin, &log, limit).await?;
            ready_queued_ms = Some(daemon.ready_after.as_secs_f64() * 1000.0);
            links += 1;
            tokio::time::timeout(limit, driver.linked(links)).await.context("the daemon never subscribed again")?;
            pace_tx.send_modify(|p| p.paused = false);
        }
    }

    // The measured stage.
    set_script(&platform, "")?;
    let stage = Instant::now();
    pace_tx.send_replace(Pace {
        calls_per_sec: args.calls_per_sec,
        call_secs: call_secs(args.calls_per_sec),
        paused: false,
    });
    let me = std::process::id();
    let sim_cpu_start = ProcSample::read(me);
    let mut samples: Vec<Sample> = Vec::new();
    let mut window: Option<(Sample, Option<ProcSample>, u64)> = None;
    let warmup = Duration::from_secs(args.warmup_secs.min(args.duration_secs.saturating_sub(1)));
    let duration = Duration::from_secs(args.duration_secs);
    let mut filler: Option<PathBuf> = None;
    let mut next_flap = args.flap_every_secs.map(|s| stage + Duration::from_secs(s.max(1)));
    let mut kills: Vec<u64> = args.kill_at.clone();
    kills.sort_unstable();
    let mut script_pending = args.platform_script.clone();
    let mut disk_full_seen = false;
    let mut links_up_while_full = true;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while stage.elapsed() < duration {
        tick.tick().await;
        let t = stage.elapsed();
        // Faults.
        if let Some((at, for_secs)) = args.platform_down {
            let (at, end) = (Duration::from_secs(at), Duration::from_secs(at + for_secs));
            if t >= at
                && t < end
                && let Some(up) = platform.take()
            {
                faults.push(format!("{:.1} s: platform down (connections refused) for {for_secs} s", t.as_secs_f64()));
                up.stop().await;
            }
            if t >= end && platform.is_none() {
                faults.push(format!("{:.1} s: platform back", t.as_secs_f64()));
                let up = start_platform(platform_addr, &secret).await?;
                followers.push(observe(&up));
                platform = Some(up);
            }
        }
        if let Some(script) = &script_pending
            && t >= Duration::from_secs(args.platform_script_at)
        {
            set_script(&platform, script)?;
            faults.push(format!("{:.1} s: platform answers {script}", t.as_secs_f64()));
            script_pending = None;
        }
        if let Some(at) = next_flap
            && Instant::now() >= at
        {
            if driver.drop_link() {
                faults.push(format!("{:.1} s: PBX link dropped", t.as_secs_f64()));
            }
            next_flap = args.flap_every_secs.map(|s| Instant::now() + Duration::from_secs(s.max(1)));
        }
        if kills.first().is_some_and(|k| t >= Duration::from_secs(*k)) {
            kills.remove(0);
            daemon.kill();
            faults.push(format!("{:.1} s: kill -9", t.as_secs_f64()));
            daemon = Daemon::start(&binary, &config, &admin, &log, limit).await?;
            faults.push(format!("restarted, READY after {:.0} ms", daemon.ready_after.as_secs_f64() * 1000.0));
        }
        if let Some((at, for_secs)) = args.disk_full {
            let (at, end) = (Duration::from_secs(at), Duration::from_secs(at + for_secs));
            if t >= at && t < end && filler.is_none() {
                let path = data_dir.join("disk-filler");
                let bytes = fill_disk(&path)?;
                faults.push(format!("{:.1} s: data disk filled ({bytes} bytes) for {for_secs} s", t.as_secs_f64()));
                filler = Some(path);
            }
            if filler.is_some() {
                let m = daemon.metrics().await.unwrap_or_default();
                disk_full_seen |= m.get("pbx_listener_outbox_disk_full").copied().unwrap_or(0.0) >= 1.0;
                links_up_while_full &= m.get("pbx_listener_pbx_link_up{pbx=\"sim\"}").copied().unwrap_or(0.0) >= 1.0;
            }
            if t >= end
                && let Some(path) = filler.take()
            {
                std::fs::remove_file(&path).ok();
                faults.push(format!(
                    "{:.1} s: space back; the daemon reported the full disk: {disk_full_seen}; PBX link up throughout: {links_up_while_full}",
                    t.as_secs_f64()
                ));
            }
        }
        // The sample.
        daemon.drain_notifications();
        if !daemon.running() {
            bail!("the daemon exited during the measured stage; its log:\n{}", tail(&log));
        }
        let m = daemon.metrics().await.unwrap_or_default();
        let proc = daemon.sample();
        let sample = Sample {
            t: t.as_secs_f64(),
            accepted: m.get("pbx_listener_outbox_appended_events_total").copied().unwrap_or(0.0),
            delivered: m.get("pbx_listener_forwarder_delivered_events_total").copied().unwrap_or(0.0),
            pending: m.get("pbx_listener_outbox_pending_events").copied().unwrap_or(0.0),
            rss_kib: proc.map_or(0, |p| p.rss_kib),
            cpu_secs: proc.map_or(0.0, |p| p.cpu_secs),
        };
        if window.is_none() && t >= warmup {
            window = Some((sample.clone(), ProcSample::read(me), lock(&progress).calls_started));
        }
        samples.push(sample);
    }
    if let Some(path) = filler.take() {
        std::fs::remove_file(&path).ok();
    }
    let window_end_at = Instant::now();
    let calls_at_end = lock(&progress).calls_started;
    let sim_cpu_end = ProcSample::read(me);
    let last = samples.last().cloned().context("the measured stage took no sample (duration 0?)")?;
    if platform.is_none() {
        let up = start_platform(platform_addr, &secret).await?;
        followers.push(observe(&up));
        platform = Some(up);
    }
    set_script(&platform, "")?;

    // The drain: no new calls; the calls in progress end; the outbox empties.
    pace_tx.send_replace(Pace { calls_per_sec: 0.0, call_secs: 0.0, paused: false });
    idle_tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs_f64(call_secs(args.calls_per_sec) + 60.0), scheduler)
        .await
        .context("the calls in progress never ended")?
        .context("the scheduler failed")?;
    // The adapter's timers may still hold the last calls' events.
    tokio::time::sleep(driver.settle()).await;
    let drain_deadline = Instant::now() + Duration::from_secs(args.drain_limit_secs);
    loop {
        let m = daemon.metrics().await.unwrap_or_default();
        let pending = m.get("pbx_listener_outbox_pending_events").copied().unwrap_or(-1.0);
        if pending == 0.0 {
            // Let the last POSTs reach the ledger.
            tokio::time::sleep(Duration::from_millis(300)).await;
            break;
        }
        if Instant::now() > drain_deadline {
            bail!("the outbox did not drain within {} s ({pending} pending)", args.drain_limit_secs);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let exit_code = daemon.terminate(limit).await?;
    let stats = daemon::outbox_stats(&binary, &config)?;
    if let Some(up) = platform.take() {
        up.stop().await;
    }
    for follower in followers {
        let _ = tokio::time::timeout(Duration::from_secs(5), follower).await;
    }

    // The verdict.
    let ledger = std::mem::take(&mut *lock(&ledger));
    let mut conservation = Conservation {
        accepted: stats["appendedTotal"].as_u64().unwrap_or(0),
        delivered_distinct: ledger.distinct(),
        duplicates: ledger.duplicates,
        refused: ledger.refused.clone(),
        problems: ledger.problems.clone(),
        exit_code,
    };
    if ledger.problem_count() > ledger.problems.len() as u64 {
        conservation.problems.push(format!("… {} problems in all", ledger.problem_count()));
    }
    if exit_code != Some(0) {
        conservation.problems.push(format!("the daemon exited {exit_code:?} on SIGTERM"));
    }
    if conservation.accepted != conservation.delivered_distinct {
        conservation.problems.push(format!(
            "the outbox accepted {} events, the platform received {} distinct ones",
            conservation.accepted, conservation.delivered_distinct
        ));
    }
    for key in ["pendingEvents", "quarantinedEvents", "droppedOldestTotal", "droppedNewestTotal", "purgedTotal"] {
        let n = stats[key].as_u64().unwrap_or(0);
        if n > 0 {
            conservation.problems.push(format!("outbox {key} = {n}"));
        }
    }
    if ledger.bad_signatures > 0 {
        conservation.problems.push(format!("{} requests failed the signature check", ledger.bad_signatures));
    }
    let unclosed = ledger.unclosed_devices();
    if !unclosed.is_empty() {
        conservation.problems.push(format!("{} devices never disconnected, e.g. {}", unclosed.len(), unclosed[0]));
    }
    if conservation.accepted == 0 {
        conservation.problems.push("nothing was accepted: the run proves nothing".into());
    }

    // The figures.
    let (first, sim_cpu_first, calls_first) = window.unwrap_or((samples[0].clone(), sim_cpu_start, 0));
    let dt = (last.t - first.t).max(0.001);
    let window_samples: Vec<&Sample> = samples.iter().filter(|s| s.t >= first.t).collect();
    let delivered_per_sec = (last.delivered - first.delivered) / dt;
    let limits = limits.map(|mut l| {
        l.delivery_ratio = l.http_requests_per_sec.map(|h| delivered_per_sec / h);
        l
    });
    let window_from = stage + Duration::from_secs_f64(first.t);
    machine.loadavg_after = loadavg();
    let report = Report {
        machine,
        parameters: parameters(args),
        ready_empty_ms,
        ready_queued_ms,
        queued,
        rss_after_fill_kib,
        window_secs: dt,
        calls_started_per_sec: (calls_at_end.saturating_sub(calls_first)) as f64 / dt,
        accepted_per_sec: (last.accepted - first.accepted) / dt,
        delivered_per_sec,
        backlog_start: first.pending as u64,
        backlog_end: last.pending as u64,
        latency: ledger.latency(window_from, window_end_at),
        unattributed: ledger.unattributed,
        after_the_fact: ledger.after_the_fact,
        rss_end_kib: last.rss_kib,
        rss_max_kib: window_samples.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        rss_min_kib: window_samples.iter().map(|s| s.rss_kib).min().unwrap_or(0),
        rss_slope_kib_per_min: slope(&window_samples) * 60.0,
        cpu_percent: (last.cpu_secs - first.cpu_secs) / dt * 100.0,
        sim_cpu_percent: match (sim_cpu_first, sim_cpu_end) {
            (Some(a), Some(b)) => {
                (b.cpu_secs - a.cpu_secs) / b.at.duration_since(a.at).as_secs_f64().max(0.001) * 100.0
            }
            _ => 0.0,
        },
        limits,
        samples,
        faults,
        conservation,
    };
    Ok(report)
}

impl Report {
    /// The report as text, one figure a line.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(s, "pbx-sim load {}", self.parameters);
        let _ = writeln!(
            s,
            "machine            {} cores, {}; {}; load average {} before, {} after",
            m.nproc, m.cpu, m.date, m.loadavg_before, m.loadavg_after
        );
        let _ = writeln!(s, "READY (empty)      {:.0} ms", self.ready_empty_ms);
        if let (Some(ms), Some(q)) = (self.ready_queued_ms, self.queued) {
            let _ = writeln!(s, "READY (queued)     {ms:.0} ms with {q} events queued");
        }
        if let Some(rss) = self.rss_after_fill_kib {
            let _ = writeln!(s, "RSS after fill     {:.1} MiB", rss as f64 / 1024.0);
        }
        let _ = writeln!(s, "window             {:.1} s after warm-up", self.window_secs);
        let _ = writeln!(s, "calls started      {:.1} /s", self.calls_started_per_sec);
        let _ = writeln!(s, "events accepted    {:.0} /s", self.accepted_per_sec);
        let _ = writeln!(s, "events delivered   {:.0} /s", self.delivered_per_sec);
        let _ = writeln!(
            s,
            "backlog            {} at the window's start, {} at its end",
            self.backlog_start, self.backlog_end
        );
        match &self.latency {
            Some(l) => {
                let _ = writeln!(
                    s,
                    "latency            p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} events; {} reconciled or unattributed)",
                    f64::from(l.p50_us) / 1000.0,
                    f64::from(l.p99_us) / 1000.0,
                    f64::from(l.max_us) / 1000.0,
                    l.samples,
                    self.unattributed
                );
            }
            None => {
                let _ = writeln!(s, "latency            no event measured in the window");
            }
        }
        if self.after_the_fact > 0 {
            let _ = writeln!(
                s,
                "                   {} events came from records written after the call (SMDR, CDR): their latency is from \
                 the phase that carried the record (the hang-up), their timestamps when things happened",
                self.after_the_fact
            );
        }
        let _ = writeln!(
            s,
            "daemon RSS         {:.1} MiB at the end, {:.1}–{:.1} MiB in the window, trend {:+.0} KiB/min",
            self.rss_end_kib as f64 / 1024.0,
            self.rss_min_kib as f64 / 1024.0,
            self.rss_max_kib as f64 / 1024.0,
            self.rss_slope_kib_per_min
        );
        let _ = writeln!(
            s,
            "daemon CPU         {:.0} % of one core (simulator + receiver: {:.0} %)",
            self.cpu_percent, self.sim_cpu_percent
        );
        if let Some(l) = &self.limits {
            let _ = writeln!(s, "data disk          {:.0} fsyncs/s", l.fsyncs_per_sec);
            match (l.http_requests_per_sec, l.delivery_ratio) {
                (Some(h), Some(r)) => {
                    let _ = writeln!(
                        s,
                        "HTTP ceiling       {h:.0} signed requests/s (wrk, 64 connections); delivery = {:.0} % of it",
                        r * 100.0
                    );
                }
                _ => {
                    let _ = writeln!(s, "HTTP ceiling       not measured: wrk is not installed (apt-get install wrk)");
                }
            }
        }
        for f in &self.faults {
            let _ = writeln!(s, "fault              {f}");
        }
        let c = &self.conservation;
        let _ = writeln!(
            s,
            "conservation       {}: {} accepted, {} distinct delivered, {} duplicates, refused {:?}, exit {:?}",
            if c.ok() { "OK" } else { "FAILED" },
            c.accepted,
            c.delivered_distinct,
            c.duplicates,
            c.refused,
            c.exit_code
        );
        for p in &c.problems {
            let _ = writeln!(s, "  problem: {p}");
        }
        s
    }
}
