//! Reading a `*_file` key's secret.

use std::path::{Path, PathBuf};

use listener_core::Secret;

/// A secret file that cannot be used. Never contains the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file's first line is empty.
    #[error("{path} is empty (the secret is its first line)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// The secret in `path`: its first line, surrounding whitespace removed.
pub fn read_secret_file(path: &Path) -> Result<Secret, SecretFileError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| SecretFileError::Read { path: path.to_owned(), source })?;
    Secret::from_file_text(&text).ok_or_else(|| SecretFileError::Empty { path: path.to_owned() })
}
