//! The machine's own limits, measured in the same run as the daemon so that its figures can be
//! read as a fraction of what the machine allows:
//!
//! - [`fsyncs_per_sec`]: appends of one 4 KiB page plus `fdatasync` on the data disk (what one
//!   WAL commit with `synchronous = FULL` costs at least);
//! - [`http_ceiling`]: signed POSTs per second that `wrk` (Debian package `wrk`) gets answered
//!   by the same platform receiver, over loopback, with as many connections as the forwarder
//!   uses.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use webhook_signature::SigningSecret;

/// fsyncs per second of a file in `dir` during `time`.
pub fn fsyncs_per_sec(dir: &Path, time: Duration) -> anyhow::Result<f64> {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let page = [0x5au8; 4096];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < time {
        file.write_all(&page).context("writing the fsync probe")?;
        file.sync_data().context("fdatasync of the fsync probe")?;
        n += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path).ok();
    Ok(rate)
}

/// A representative Level 3 event body (560 bytes, as the daemon sends).
const BODY: &str = r#"{"accountId":"9539ee93-64c8-802b-360b-c6f2f7cf2507","accountName":"Load","parentCallSid":null,"callSid":null,"childSid":"0b4f3c52-6f0a-5c1e-8a7d-2f4e9b1c3d5a","type":"voice","event":"phone","status":"ringing","from":"447700900001","to":"441234567890","extension":"4002","meta":{"correlation":"none","direction":"inbound","pbx":"sim","pbxCallId":"c0a82a03.1","pbxType":"avaya-r11","queue":"200","source":"devlink3","callerName":"Caller 1","sipCallId":"sim-00000001@platform.invalid","trunk":"17.4097.1"},"timestamp":1764000000000}"#;

/// Requests per second `wrk` gets answered (2xx) by the receiver at `url`, with `connections`
/// keep-alive connections on one thread during `time`, each request signed as the forwarder
/// signs (distinct ids, the current timestamp). `Ok(None)` when `wrk` is not installed.
pub fn http_ceiling(
    url: &str,
    secret: &SigningSecret,
    connections: usize,
    time: Duration,
    dir: &Path,
) -> anyhow::Result<Option<f64>> {
    if Command::new("wrk").arg("--version").output().is_err() {
        return Ok(None);
    }
    // Pre-signed requests, cycled: the receiver verifies each as it verifies the daemon's.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut lua = String::from("local reqs = {}\n");
    for i in 0..1000 {
        let id = format!("wrk-{i}");
        let signature = webhook_signature::sign_header(std::slice::from_ref(secret), &id, now, BODY.as_bytes());
        lua.push_str(&format!(
            "reqs[{}] = wrk.format(\"POST\", nil, {{[\"content-type\"]=\"application/json\", [\"webhook-id\"]=\"{id}\", \
             [\"webhook-timestamp\"]=\"{now}\", [\"webhook-signature\"]=\"{signature}\"}}, {body:?})\n",
            i + 1,
            body = BODY
        ));
    }
    lua.push_str(
        "local i = 0\nrequest = function()\n  i = i % #reqs + 1\n  return reqs[i]\nend\n\
         done = function(summary, latency, requests)\n  io.write(string.format(\"non2xx %d\\n\", summary.errors.status))\nend\n",
    );
    let script = dir.join("wrk-signed.lua");
    std::fs::write(&script, lua).context("writing the wrk script")?;
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{}s", time.as_secs().max(1)), "-s"])
        .arg(&script)
        .arg(url)
        .output()
        .context("running wrk")?;
    std::fs::remove_file(&script).ok();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    let rate: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output: {text}"))?;
    let non2xx: u64 =
        text.lines().find_map(|l| l.strip_prefix("non2xx ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    if non2xx > 0 {
        bail!("the receiver refused {non2xx} of wrk's signed requests: {text}");
    }
    Ok(Some(rate))
}
