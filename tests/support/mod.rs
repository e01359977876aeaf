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
