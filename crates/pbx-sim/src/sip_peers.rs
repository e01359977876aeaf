//! Real SIP peers for tests: the platform's B-leg calls placed by SIPp (Debian `sip-tester`)
//! through Kamailio (Debian `kamailio`), whose `siptrace` mirrors every message as HEPv3 to a
//! listener under test, to a SIPp UAS standing in for the PBX's trunk.
//!
//! The scenario files and the proxy configuration live in `testdata/peers/`. Everything runs on
//! 127.0.0.1, every wait is bounded, and every process is killed when its [`Peer`] is dropped.
//! A missing tool is an error that says how to install it: tests fail, they never skip.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the SIPp scenarios and the Kamailio configuration are.
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/peers")
}

/// A child process that is killed and reaped when dropped, so no peer outlives its test.
#[derive(Debug)]
pub struct Peer {
    name: &'static str,
    child: Child,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    /// Starts `cmd` with stdin closed and stdout/stderr in `log`.
    pub fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Result<Peer, String> {
        let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        Ok(Peer { name, child })
    }

    /// Waits (bounded) for the process to exit; its exit code.
    pub fn wait(&mut self, limit: Duration) -> Result<Option<i32>, String> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(status.code());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("{} did not exit within {limit:?}", self.name))
    }

    /// Sends SIGTERM and waits (bounded) for the exit.
    pub fn terminate(&mut self, limit: Duration) -> Result<Option<i32>, String> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        self.wait(limit)
    }
}

/// The path of `tool`, or an error that says which Debian package provides it.
pub fn require(tool: &str, package: &str) -> Result<PathBuf, String> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "`{tool}` is not installed. This test needs real SIP peers: \
                 `apt-get update && apt-get install -y sip-tester kamailio` (Debian package `{package}`)"
            )
        })
}

/// Debian's multiarch module directory (`/usr/lib/<triplet>/kamailio/modules`).
pub fn kamailio_modules() -> Result<PathBuf, String> {
    std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("kamailio/modules"))
        .chain([PathBuf::from("/usr/lib/kamailio/modules")])
        .find(|p| p.join("siptrace.so").is_file())
        .ok_or_else(|| "kamailio's siptrace module is missing: `apt-get install -y kamailio`".to_owned())
}

/// A free UDP port on 127.0.0.1 (free when asked; the caller binds it soon after).
pub fn free_udp_port() -> std::io::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The last lines of every log in `dir`, for a failure message.
pub fn dump_logs(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        out.push_str(&format!("\n--- {} ---\n{}\n", entry.path().display(), tail.join("\n")));
    }
    out
}

/// Sends OPTIONS to Kamailio until it answers 200 (it answers probes itself), for at most
/// `limit`.
pub fn wait_for_kamailio(port: u16, limit: Duration) -> bool {
    let Ok(probe) = UdpSocket::bind("127.0.0.1:0") else { return false };
    let _ = probe.set_read_timeout(Some(Duration::from_millis(100)));
    let Ok(local) = probe.local_addr() else { return false };
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

/// The B-leg calls of `testdata/peers/sipp/bleg_calls.csv` (`callSid;parentCallSid;caller;
/// DID`), with the Call-IDs SIPp gives them (`bleg-1@sipp.test`, `bleg-2@sipp.test`).
pub const BLEG_CALLS: [BLegCall; 2] = [
    BLegCall {
        sip_call_id: "bleg-1@sipp.test",
        call_sid: "7c1f0d2e-9a4b-4c3d-8e5f-6a7b8c9d0e1f",
        parent_call_sid: "2a3b4c5d-6e7f-4809-9a1b-2c3d4e5f6a7b",
        caller: "15557654321",
        did: "15551230100",
    },
    BLegCall {
        sip_call_id: "bleg-2@sipp.test",
        call_sid: "0d9e8f7a-6b5c-4d3e-9f2a-1b0c9d8e7f6a",
        parent_call_sid: "2a3b4c5d-6e7f-4809-9a1b-2c3d4e5f6a7b",
        caller: "15557654321",
        did: "15551230100",
    },
];

/// One B-leg call SIPp places.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BLegCall {
    /// Its SIP Call-ID.
    pub sip_call_id: &'static str,
    /// `X-Call-Sid`.
    pub call_sid: &'static str,
    /// `X-Parent-Call-Sid`.
    pub parent_call_sid: &'static str,
    /// The caller (From user, without `+`).
    pub caller: &'static str,
    /// The number dialled (Request-URI and To user, without `+`).
    pub did: &'static str,
}

/// Places the [`BLEG_CALLS`], one after the other, from a SIPp UAC through Kamailio to a SIPp
/// UAS; Kamailio sends HEPv3 copies (with `hep_key` as auth key) to `hep_addr`. Blocks until the
/// calls are over and Kamailio has stopped (so every copy was sent). Logs go to `dir`.
pub fn place_bleg_calls(dir: &Path, hep_addr: SocketAddr, hep_key: &str) -> Result<(), String> {
    place_bleg_calls_from(dir, hep_addr, hep_key, &peers_dir().join("sipp/bleg_calls.csv"), BLEG_CALLS.len())
}

/// [`place_bleg_calls`] with other calls: `calls` lines of a SIPp injection file in the format
/// of `testdata/peers/sipp/bleg_calls.csv` (`SEQUENTIAL`, then `callSid;parentCallSid;caller;
/// did;` per call); their Call-IDs are `bleg-<n>@sipp.test`.
pub fn place_bleg_calls_from(
    dir: &Path,
    hep_addr: SocketAddr,
    hep_key: &str,
    csv: &Path,
    calls: usize,
) -> Result<(), String> {
    let calls = calls.to_string();
    let sipp = require("sipp", "sip-tester")?;
    let kamailio = require("kamailio", "kamailio")?;
    let peers = peers_dir();
    let port = |what: &str| free_udp_port().map_err(|e| format!("no free port for {what}: {e}"));
    let (kam_port, uas_port, uac_port) = (port("kamailio")?, port("the UAS")?, port("the UAC")?);
    let mut uas = Peer::spawn(
        "sipp UAS",
        Command::new(&sipp).current_dir(dir).arg("-sf").arg(peers.join("sipp/uas_pbx.xml")).args([
            "-i",
            "127.0.0.1",
            "-p",
            &uas_port.to_string(),
            "-m",
            &calls,
            "-timeout",
            "60",
            "-timeout_error",
            "-nostdin",
        ]),
        &dir.join("uas.log"),
    )?;
    let mut proxy = Peer::spawn(
        "kamailio",
        Command::new(&kamailio)
            .current_dir(dir)
            .arg("-f")
            .arg(peers.join("kamailio/kamailio.cfg"))
            .arg("-L")
            .arg(kamailio_modules()?)
            .args(["-DD", "-E", "-m", "32", "-M", "4", "-Y"])
            .arg(dir)
            .args(["-l", &format!("udp:127.0.0.1:{kam_port}")])
            .args(["-A", &format!("HEP_URI=\"sip:{hep_addr}\"")])
            .args(["-A", &format!("UAS_URI=\"sip:127.0.0.1:{uas_port}\"")])
            .args(["-A", &format!("HEP_KEY=\"{hep_key}\"")]),
        &dir.join("kamailio.log"),
    )?;
    if !wait_for_kamailio(kam_port, Duration::from_secs(20)) {
        return Err(format!("kamailio did not answer on 127.0.0.1:{kam_port}{}", dump_logs(dir)));
    }
    // The calls, one after the other (-l 1), with known Call-IDs.
    let mut uac = Peer::spawn(
        "sipp UAC",
        Command::new(&sipp)
            .current_dir(dir)
            .arg("-sf")
            .arg(peers.join("sipp/uac_bleg.xml"))
            .arg("-inf")
            .arg(csv)
            .args(["-i", "127.0.0.1", "-p", &uac_port.to_string(), "-m", &calls, "-l", "1", "-nostdin"])
            .args(["-cid_str", "bleg-%u@sipp.test", "-timeout", "60", "-timeout_error"])
            .arg(format!("127.0.0.1:{kam_port}")),
        &dir.join("uac.log"),
    )?;
    let codes = (uac.wait(Duration::from_secs(90))?, uas.wait(Duration::from_secs(30))?);
    if codes != (Some(0), Some(0)) {
        return Err(format!("SIPp failed (UAC, UAS exit codes {codes:?}){}", dump_logs(dir)));
    }
    // Stop the proxy so that it has sent every copy it will send.
    proxy.terminate(Duration::from_secs(20))?;
    Ok(())
}
