//! [`Secret`]: a password or key read from a `*_file` key, never printed.

use std::fmt;
use std::sync::Arc;

/// A secret from a file. `Debug` shows `Secret([redacted])`; there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// A secret.
    pub fn new(s: impl Into<Arc<str>>) -> Secret {
        Secret(s.into())
    }

    /// The secret in a file's text: its first line, surrounding whitespace removed (editors
    /// add a final newline); `None` when that is empty.
    pub fn from_file_text(text: &str) -> Option<Secret> {
        let first = text.lines().next().unwrap_or("").trim();
        (!first.is_empty()).then(|| Secret::new(first))
    }

    /// The secret itself (to send it, never to log it).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_trimmed_and_never_debug_printed() {
        let s = Secret::from_file_text("  hunter2 \nsecond line\n");
        assert_eq!(s.as_ref().map(Secret::expose), Some("hunter2"));
        assert_eq!(format!("{s:?}"), "Some(Secret([redacted]))");
        assert_eq!(Secret::from_file_text("\n  \n"), None);
        assert_eq!(Secret::from_file_text(""), None);
    }
}
