//! Test-only fault switches, compiled in always so the packaged binary can be tested under a
//! real systemd. Nothing here is active unless its environment variable is set; never set one
//! in production.
//!
//! - `PBX_LISTENER_TEST_STALL_FILE=<path>`: while `<path>` exists, the pipeline stops working
//!   (no input is read, nothing is committed, and so the systemd watchdog is not pinged). Used
//!   by `scripts/test-systemd` to check that the watchdog restarts a stalled daemon.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::error;

/// The variable naming the stall file.
pub const STALL_FILE_VAR: &str = "PBX_LISTENER_TEST_STALL_FILE";

/// The stall file, if the switch is set.
pub fn stall_file() -> Option<PathBuf> {
    std::env::var_os(STALL_FILE_VAR).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Returns at once when `path` does not exist; otherwise waits, doing nothing else, until it is
/// removed.
pub async fn stall_while_present(path: &Path) {
    if !path.exists() {
        return;
    }
    error!(
        file = %path.display(),
        "TEST FAULT ({STALL_FILE_VAR}): the pipeline is stalled on purpose until this file is removed."
    );
    while path.exists() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
