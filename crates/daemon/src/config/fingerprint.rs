//! What a section of the file says, to tell on reload which parts changed.
//!
//! A [`Fingerprint`] is the section's value (structure, not text: comments and layout do not
//! count) plus a digest of every file its `*_file`/`*_files` keys name, because a rotated
//! secret is a change even when the key still names the same file. Secrets themselves are not
//! kept: only their digests, in memory.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeValue, ValueDeserializer};

use super::resolve;

/// A section's value and the digests of the files it names.
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    value: toml::Value,
    files: Vec<(PathBuf, Option<u64>)>,
}

impl Fingerprint {
    /// The fingerprint of `value` (a section or a `[[pbx]]` block), relative paths resolved
    /// against `base`.
    pub fn of(value: &Spanned<DeValue<'_>>, base: &Path) -> Fingerprint {
        let value =
            toml::Value::deserialize(ValueDeserializer::from(value.clone())).unwrap_or(toml::Value::Boolean(false));
        let mut files = Vec::new();
        collect_files(&value, base, &mut files);
        Fingerprint { value, files }
    }

    /// The fingerprint of a section that is not in the file.
    pub fn absent() -> Fingerprint {
        Fingerprint { value: toml::Value::Boolean(false), files: Vec::new() }
    }
}

/// Every section's fingerprint, and every `[[pbx]]` block's by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fingerprints {
    /// Top-level sections (`platform`, `correlation`, …) by name.
    pub sections: BTreeMap<String, Fingerprint>,
    /// `[[pbx]]` blocks by their `name`.
    pub pbx: BTreeMap<String, Fingerprint>,
}

impl Fingerprints {
    /// A section's fingerprint ([`Fingerprint::absent`] when the file has none).
    pub fn section(&self, name: &str) -> Fingerprint {
        self.sections.get(name).cloned().unwrap_or_else(Fingerprint::absent)
    }
}

fn collect_files(value: &toml::Value, base: &Path, out: &mut Vec<(PathBuf, Option<u64>)>) {
    let toml::Value::Table(table) = value else {
        if let toml::Value::Array(items) = value {
            items.iter().for_each(|v| collect_files(v, base, out));
        }
        return;
    };
    for (key, v) in table {
        let paths: Vec<&str> = match v {
            toml::Value::String(p) if key.ends_with("_file") => vec![p.as_str()],
            toml::Value::Array(items) if key.ends_with("_files") => items.iter().filter_map(|i| i.as_str()).collect(),
            other => {
                collect_files(other, base, out);
                continue;
            }
        };
        for p in paths {
            let path = resolve(base, Path::new(p));
            let digest = std::fs::read(&path).ok().map(|bytes| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut h);
                h.finish()
            });
            out.push((path, digest));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SpanIndex;

    fn prints(text: &str, base: &Path) -> BTreeMap<String, Fingerprint> {
        let index = SpanIndex::parse(text).unwrap();
        index.doc().get_ref().iter().map(|(k, v)| (k.get_ref().to_string(), Fingerprint::of(v, base))).collect()
    }

    #[test]
    fn layout_and_comments_do_not_count_but_values_and_file_contents_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "one").unwrap();
        let a = prints("[s]\nx = 1\npassword_file = \"pw\"\n", dir.path());
        let b = prints("# a comment\n[s]\npassword_file = 'pw'   # same file\nx = 1\n", dir.path());
        assert_eq!(a, b);
        let c = prints("[s]\nx = 2\npassword_file = \"pw\"\n", dir.path());
        assert_ne!(a, c, "a value changed");
        std::fs::write(dir.path().join("pw"), "two").unwrap();
        let d = prints("[s]\nx = 1\npassword_file = \"pw\"\n", dir.path());
        assert_ne!(a, d, "the secret in the same file changed");
    }
}
