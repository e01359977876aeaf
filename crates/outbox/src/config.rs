//! What the outbox is told at open: its byte cap and what to do when the cap is reached; and
//! the `[outbox]` section of the daemon's configuration, which this crate owns
//! ([`OutboxSection`] as written, [`OutboxSettings`] validated).

use std::path::{Path, PathBuf};

use listener_core::{SettingError, SettingErrors};
use serde::{Deserialize, Serialize};

/// How the outbox behaves when storing an event would exceed [`OutboxConfig::max_bytes`].
///
/// PBX feeds cannot be back-pressured (the PBX would stall or drop), so blocking is not offered:
/// the loss is explicit, counted and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Evict the oldest stored events (pending first, then quarantined) to make room.
    DropOldest,
    /// Refuse the new event; what is stored stays.
    DropNewest,
}

/// How an outbox is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxConfig {
    /// The cap on stored bytes (event bodies, ids and order keys, pending and quarantined).
    /// SQLite's own overhead comes on top; see [`crate::SPACE_FACTOR`].
    pub max_bytes: u64,
    /// What happens when an append would exceed `max_bytes`.
    pub when_full: WhenFull,
}

impl OutboxConfig {
    /// A config with the given cap and policy.
    pub fn new(max_bytes: u64, when_full: WhenFull) -> OutboxConfig {
        OutboxConfig { max_bytes, when_full }
    }
}

impl Default for WhenFull {
    /// `drop_oldest`: at the cap the newest facts are worth more than the oldest.
    fn default() -> WhenFull {
        WhenFull::DropOldest
    }
}

impl WhenFull {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WhenFull::DropOldest => "drop_oldest",
            WhenFull::DropNewest => "drop_newest",
        }
    }
}

/// The outbox database file inside [`OutboxSection::data_dir`].
pub const OUTBOX_FILE: &str = "outbox.sqlite";

/// The smallest cap accepted: below this the cap would drop events during a short outage.
pub const MIN_OUTBOX_BYTES: u64 = 1 << 20;

/// The `[outbox]` section of the daemon's configuration, as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxSection {
    /// Directory of the outbox database. Default `/var/lib/pbx-listener` (systemd's
    /// `StateDirectory`). Relative paths are relative to the configuration file.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Cap on the stored events, in bytes (at least 1 MiB). Default 1 GiB (about a million
    /// events). The daemon refuses to start if the filesystem cannot hold it.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// What to drop when the cap is reached: `"drop_oldest"` (default) or `"drop_newest"`.
    #[serde(default)]
    pub when_full: WhenFull,
}

impl Default for OutboxSection {
    fn default() -> Self {
        OutboxSection { data_dir: default_data_dir(), max_bytes: default_max_bytes(), when_full: WhenFull::default() }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}

fn default_max_bytes() -> u64 {
    1 << 30
}

/// systemd's `StateDirectory=pbx-listener`, which the unit creates for the service.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/pbx-listener";

/// `[outbox]` validated: the directory resolved, the cap checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxSettings {
    /// Where the database lives.
    pub data_dir: PathBuf,
    /// Its cap and policy.
    pub config: OutboxConfig,
}

/// What [`OutboxSettings::check_dir`] found about the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDirCheck {
    /// It exists and this user can write in it.
    Ready,
    /// It does not exist yet and will be created (by systemd, or by the daemon at start): the
    /// reason, for a warning.
    WillBeCreated(String),
    /// It cannot be used: why, for an error.
    Unusable(String),
}

impl OutboxSection {
    /// Checks the section; `resolve` makes a relative `data_dir` absolute. Errors name their key.
    pub fn load(&self, resolve: impl FnOnce(&Path) -> PathBuf) -> Result<OutboxSettings, SettingErrors> {
        let mut errors = SettingErrors::new();
        if self.max_bytes < MIN_OUTBOX_BYTES {
            errors.push(SettingError::new(
                "max_bytes",
                format!(
                    "must be at least {MIN_OUTBOX_BYTES} bytes (1 MiB): a smaller cap drops events in a short outage"
                ),
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            errors.push(SettingError::new("data_dir", "must not be empty"));
        }
        let data_dir = resolve(&self.data_dir);
        errors.into_result(|| OutboxSettings { data_dir, config: OutboxConfig::new(self.max_bytes, self.when_full) })
    }
}

impl OutboxSettings {
    /// The database file.
    pub fn file(&self) -> PathBuf {
        self.data_dir.join(OUTBOX_FILE)
    }

    /// Whether the data directory can be used, as `check-config` reports it: an existing
    /// directory must be writable; a missing one is fine where systemd's `StateDirectory=`
    /// creates it (the default) or where its parent is writable, and an error otherwise.
    pub fn check_dir(&self) -> DataDirCheck {
        let dir = &self.data_dir;
        match std::fs::metadata(dir) {
            Ok(m) if !m.is_dir() => DataDirCheck::Unusable(format!("{} exists but is not a directory", dir.display())),
            Ok(_) => match writable(dir) {
                Ok(()) => DataDirCheck::Ready,
                Err(e) => DataDirCheck::Unusable(format!("{} is not writable by this user: {e}", dir.display())),
            },
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
                if dir == Path::new(DEFAULT_DATA_DIR) {
                    return DataDirCheck::WillBeCreated(format!(
                        "{} does not exist yet; systemd's StateDirectory=pbx-listener creates it when the service \
                         starts (running by hand, create it first)",
                        dir.display()
                    ));
                }
                let parent = dir.ancestors().skip(1).find(|p| p.exists());
                match parent {
                    Some(p) if !p.is_dir() => DataDirCheck::Unusable(format!(
                        "{} cannot be created: {} is not a directory",
                        dir.display(),
                        p.display()
                    )),
                    Some(p) if writable(p).is_ok() => DataDirCheck::WillBeCreated(format!(
                        "{} does not exist yet; the daemon creates it at start",
                        dir.display()
                    )),
                    Some(p) => DataDirCheck::Unusable(format!(
                        "{} does not exist and cannot be created: {} is not writable by this user",
                        dir.display(),
                        p.display()
                    )),
                    None => DataDirCheck::Unusable(format!("{} cannot be created", dir.display())),
                }
            }
            Err(e) => DataDirCheck::Unusable(format!("{}: {e}", dir.display())),
        }
    }
}

/// Whether this process may create files in `dir` (access(2) with W_OK|X_OK).
fn writable(dir: &Path) -> std::io::Result<()> {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK).map_err(std::io::Error::from)
}
