//! Errors of the outbox, one enum per concern: opening, and operating.

use std::path::PathBuf;
use std::sync::Arc;

/// Why [`crate::Outbox::open`] or [`crate::Inspector::open`] failed. The daemon refuses to
/// start with it.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory or file could not be created, read or renamed.
    #[error("cannot use the outbox at {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// SQLite refused an operation while opening or migrating.
    #[error("cannot open the outbox database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// The configured cap does not fit in the free space of the filesystem.
    #[error(
        "the outbox cap max_bytes = {max_bytes} needs {needed_bytes} bytes of disk \
         (the cap times {factor} for SQLite's overhead) but only {available_bytes} bytes are \
         available for {path}; lower the cap or free disk space"
    )]
    NotEnoughSpace {
        /// The directory holding the outbox.
        path: PathBuf,
        /// The configured cap.
        max_bytes: u64,
        /// What the cap needs on disk.
        needed_bytes: u64,
        /// Free space for unprivileged users plus what the outbox already occupies.
        available_bytes: u64,
        /// The overhead factor applied to the cap.
        factor: u64,
    },
    /// The file was written by a newer version of pbx-listener (its schema is ahead of ours).
    #[error(
        "the outbox {path} has schema version {found}, newer than this build supports ({supported}); \
         run the newer pbx-listener or export the outbox with it"
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// `PRAGMA user_version` found in the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The file does not exist (inspection never creates one).
    #[error("there is no outbox at {0}")]
    Missing(PathBuf),
    /// The writer thread could not be started.
    #[error("cannot start the outbox writer thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Why an outbox operation failed.
///
/// [`OutboxError::is_fatal`] tells the daemon to exit (non-zero) and let systemd restart it:
/// after a failed commit nobody knows what reached the disk, so the only safe recovery is
/// SQLite's own recovery on the next open.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// A commit (write + fsync) failed. Nothing in that transaction counts as accepted. Fatal.
    #[error("the outbox commit failed (I/O error); exiting is the only safe recovery: {0}")]
    CommitFailed(#[source] Arc<rusqlite::Error>),
    /// The filesystem is full (`SQLITE_FULL`): the transaction was rolled back, nothing in it
    /// was accepted, and the outbox is as it was. Not fatal: try again when space returns (the
    /// pipeline holds its batch and retries; `pbx_listener_outbox_disk_full` says so).
    #[error("the outbox's filesystem is full; nothing was written (retried when space returns)")]
    DiskFull,
    /// An earlier commit failed, so the writer no longer accepts work. Fatal.
    #[error("the outbox writer stopped after an earlier failed commit")]
    WriterPoisoned,
    /// The writer thread is gone (the outbox was closed, or the thread panicked). Fatal.
    #[error("the outbox writer thread is gone")]
    WriterGone,
    /// SQLite reported that the database itself is damaged. Fatal; the next open recovers.
    #[error("the outbox database is damaged: {0}")]
    DatabaseCorrupt(#[source] Arc<rusqlite::Error>),
    /// A query failed for another reason (for example a lock held too long by another process).
    #[error("an outbox query failed: {0}")]
    Query(#[source] rusqlite::Error),
    /// The blocking task that ran a read panicked or was cancelled.
    #[error("an outbox read task failed")]
    ReaderFailed,
    /// Writing an export failed.
    #[error("writing the export failed: {0}")]
    Export(#[source] std::io::Error),
}

impl OutboxError {
    /// True when the process must exit: the state on disk can no longer be trusted from here.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            OutboxError::CommitFailed(_)
                | OutboxError::WriterPoisoned
                | OutboxError::WriterGone
                | OutboxError::DatabaseCorrupt(_)
        )
    }

    /// Classifies a SQLite error from a statement (not a commit).
    pub(crate) fn from_query(e: rusqlite::Error) -> OutboxError {
        if is_corruption(&e) {
            OutboxError::DatabaseCorrupt(Arc::new(e))
        } else if is_disk_full(&e) {
            OutboxError::DiskFull
        } else if is_io(&e) {
            OutboxError::CommitFailed(Arc::new(e))
        } else {
            OutboxError::Query(e)
        }
    }
}

/// The database file is damaged or not a database.
pub(crate) fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase))
}

/// The filesystem is full: the write failed before anything was committed.
pub(crate) fn is_disk_full(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
}

/// The storage below SQLite failed (or is full): a write may or may not have reached the disk.
pub(crate) fn is_io(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(
            rusqlite::ErrorCode::SystemIoFailure
                | rusqlite::ErrorCode::DiskFull
                | rusqlite::ErrorCode::ReadOnly
                | rusqlite::ErrorCode::CannotOpen
        )
    )
}
