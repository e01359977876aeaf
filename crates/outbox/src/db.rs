//! Opening the database file: pragmas, the free-space check, schema migration, and the
//! automatic recovery of a file SQLite cannot read.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags};

use crate::error::{OpenError, is_corruption};
use crate::schema::{self, Migrated, SCHEMA_VERSION};
use crate::store::Totals;

/// The disk an outbox may need per byte of cap: rows, indexes, free pages and the WAL come on
/// top of the stored bytes the cap counts. Measured at about 1.3 for 600-byte events; 2 leaves
/// room for the WAL and small events.
pub const SPACE_FACTOR: u64 = 2;

/// How long a statement waits for another connection's lock (the CLI next to the daemon)
/// before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a connection with the outbox's pragmas. `create` allows creating the file.
pub(crate) fn connect(path: &Path, create: bool) -> rusqlite::Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: readers (the forwarder, the CLI) never block the writer. FULL: a commit is on the
    // disk when it returns, which is what "accepted" means.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::ExecuteReturnedResults);
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF;")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Free space for unprivileged writers in the directory, plus what the outbox files already
/// occupy there (they can be reused).
fn check_space(path: &Path, max_bytes: u64) -> Result<(), OpenError> {
    let dir = parent_dir(path);
    let stat = rustix::fs::statvfs(&dir).map_err(|e| OpenError::Io { path: dir.clone(), source: e.into() })?;
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    let used: u64 = sidecars(path).iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    let available_bytes = free.saturating_add(used);
    let needed_bytes = max_bytes.saturating_mul(SPACE_FACTOR);
    if needed_bytes > available_bytes {
        return Err(OpenError::NotEnoughSpace {
            path: dir,
            max_bytes,
            needed_bytes,
            available_bytes,
            factor: SPACE_FACTOR,
        });
    }
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The database file and its WAL and shared-memory files.
fn sidecars(path: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut s = path.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    [path.to_path_buf(), with("-wal"), with("-shm")]
}

/// What opening found, for the caller to report.
#[derive(Debug, Default)]
pub(crate) struct Opened {
    /// The schema version before migrating.
    pub migrated_from: i64,
}

/// Opens (creating if needed) and migrates the outbox for the daemon, checking the space for
/// the cap. A file SQLite cannot read as a database is moved aside and a fresh one created:
/// the outbox must never need a person to start again.
pub(crate) fn open_for_daemon(path: &Path, max_bytes: u64) -> Result<(Connection, Opened), OpenError> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(&dir).map_err(|source| OpenError::Io { path: dir.clone(), source })?;
    check_space(path, max_bytes)?;
    let sqlite = |source| OpenError::Sqlite { path: path.to_path_buf(), source };
    match prepare(path, true) {
        Ok((conn, from)) => Ok((conn, Opened { migrated_from: from })),
        Err(PrepareError::Sqlite(e)) if is_corruption(&e) => {
            let aside = move_aside(path)?;
            tracing::error!(
                path = %path.display(),
                moved_to = %aside.display(),
                error = %e,
                "The outbox database is unreadable; moved it aside and started a new one"
            );
            let (conn, from) = prepare(path, true).map_err(|e| e.into_open_error(path))?;
            let mut before = Totals::load(&conn).map_err(sqlite)?;
            let mut totals = before;
            totals.corrupt_databases += 1;
            totals.store(&conn, &mut before).map_err(sqlite)?;
            Ok((conn, Opened { migrated_from: from }))
        }
        Err(e) => Err(e.into_open_error(path)),
    }
}

/// Opens an existing outbox for inspection (never creates one).
pub(crate) fn open_existing(path: &Path) -> Result<Connection, OpenError> {
    if !path.exists() {
        return Err(OpenError::Missing(path.to_path_buf()));
    }
    prepare(path, false).map(|(conn, _)| conn).map_err(|e| e.into_open_error(path))
}

enum PrepareError {
    Sqlite(rusqlite::Error),
    TooNew(i64),
}

impl PrepareError {
    fn into_open_error(self, path: &Path) -> OpenError {
        match self {
            PrepareError::Sqlite(source) => OpenError::Sqlite { path: path.to_path_buf(), source },
            PrepareError::TooNew(found) => {
                OpenError::SchemaTooNew { path: path.to_path_buf(), found, supported: SCHEMA_VERSION }
            }
        }
    }
}

fn prepare(path: &Path, create: bool) -> Result<(Connection, i64), PrepareError> {
    let mut conn = connect(path, create).map_err(PrepareError::Sqlite)?;
    match schema::migrate(&mut conn).map_err(PrepareError::Sqlite)? {
        Migrated::TooNew(found) => Err(PrepareError::TooNew(found)),
        Migrated::Current { from } => Ok((conn, from)),
    }
}

/// Renames the database and its sidecars to `<name>.corrupt-<unix ms>[-wal|-shm]`.
fn move_aside(path: &Path) -> Result<PathBuf, OpenError> {
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let mut target = path.as_os_str().to_owned();
    target.push(format!(".corrupt-{stamp}"));
    let target = PathBuf::from(target);
    for (from, to) in sidecars(path).iter().zip(sidecars(&target).iter()) {
        match std::fs::rename(from, to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(OpenError::Io { path: from.clone(), source }),
        }
    }
    Ok(target)
}
