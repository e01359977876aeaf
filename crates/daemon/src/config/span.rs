//! Where a key is in the file: errors found after parsing still name the line.
//!
//! serde reports a span for what it rejects, but checks made later (a secret file that does not
//! exist, a duplicate PBX name) only know the key path. [`SpanIndex`] keeps the parsed document
//! with its spans so any key path can be turned back into a line and column.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A parsed TOML document that remembers where every key is.
pub struct SpanIndex<'a> {
    text: &'a str,
    doc: Spanned<DeTable<'a>>,
}

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A key in a table.
    Key(String),
    /// An element of an array (of tables).
    Index(usize),
}

/// A key path, e.g. `pbx[0].password_file`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// A path of plain keys: `KeyPath::keys(&["outbox", "max_bytes"])`.
    pub fn keys(keys: &[&str]) -> KeyPath {
        KeyPath(keys.iter().map(|k| Seg::Key((*k).to_owned())).collect())
    }

    /// This path with one more key.
    pub fn key(&self, key: &str) -> KeyPath {
        let mut p = self.0.clone();
        p.push(Seg::Key(key.to_owned()));
        KeyPath(p)
    }

    /// This path with a dotted relative key appended (`"smdr.listen"`); `""` is the path itself.
    pub fn dotted(&self, relative: &str) -> KeyPath {
        let mut p = self.0.clone();
        p.extend(relative.split('.').filter(|k| !k.is_empty()).map(|k| Seg::Key(k.to_owned())));
        KeyPath(p)
    }

    /// This path with one more index.
    pub fn index(&self, i: usize) -> KeyPath {
        let mut p = self.0.clone();
        p.push(Seg::Index(i));
        KeyPath(p)
    }
}

impl std::fmt::Display for KeyPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

impl<'a> SpanIndex<'a> {
    /// Parses `text`; a syntax error comes back as toml's error (with its span).
    pub fn parse(text: &'a str) -> Result<SpanIndex<'a>, toml::de::Error> {
        Ok(SpanIndex { text, doc: DeTable::parse(text)? })
    }

    /// The document.
    pub fn doc(&self) -> &Spanned<DeTable<'a>> {
        &self.doc
    }

    /// The span of the key at `path` (of the key itself, so the line is where it is written),
    /// or of its nearest ancestor that exists.
    pub fn span_of(&self, path: &KeyPath) -> Option<std::ops::Range<usize>> {
        let mut table: &DeTable<'a> = self.doc.get_ref();
        let mut value: Option<&Spanned<DeValue<'a>>> = None;
        let mut best: Option<std::ops::Range<usize>> = None;
        for seg in &path.0 {
            match seg {
                Seg::Key(k) => {
                    let Some((key, v)) = table.get_key_value(k.as_str()) else { break };
                    best = Some(key.span());
                    value = Some(v);
                }
                Seg::Index(i) => {
                    let Some(v) = value.and_then(|v| v.get_ref().as_array()).and_then(|a| a.get(*i)) else { break };
                    best = Some(v.span());
                    value = Some(v);
                }
            }
            if let Some(DeValue::Table(t)) = value.map(Spanned::get_ref) {
                table = t;
            }
        }
        best
    }

    /// The path of the key written at byte `offset` (serde's span of an unknown key points
    /// there), so an error can name `admin.listenn` rather than `listenn`.
    pub fn path_at(&self, offset: usize) -> Option<KeyPath> {
        // The deepest key whose name or scalar value covers the offset. Tables and arrays are
        // searched whatever their spans say: an array of tables' span need not cover them all.
        fn in_table(table: &DeTable<'_>, offset: usize, path: &mut Vec<Seg>) -> bool {
            for (key, value) in table {
                path.push(Seg::Key(key.get_ref().to_string()));
                if key.span().contains(&offset) || in_value(value, offset, path) {
                    return true;
                }
                path.pop();
            }
            false
        }
        fn in_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut Vec<Seg>) -> bool {
            match value.get_ref() {
                DeValue::Table(t) => in_table(t, offset, path),
                DeValue::Array(items) => items.iter().enumerate().any(|(i, item)| {
                    path.push(Seg::Index(i));
                    let found = in_value(item, offset, path);
                    if !found {
                        path.pop();
                    }
                    found
                }),
                _ => value.span().contains(&offset),
            }
        }
        let mut path = Vec::new();
        in_table(self.doc.get_ref(), offset, &mut path).then_some(KeyPath(path))
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(self.text, offset)
    }

    /// Line and column of a key path, if the key (or an ancestor) is in the file.
    pub fn locate(&self, path: &KeyPath) -> Option<(usize, usize)> {
        self.span_of(path).map(|s| self.line_col(s.start))
    }
}

/// 1-based line and column of a byte offset of `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[account]\nid = \"x\"\n\n[[pbx]]\nname = \"a\"\n\n[[pbx]]\nname = \"b\"\nhost = \"h\"\n";

    #[test]
    fn locates_keys_and_array_elements() {
        let idx = SpanIndex::parse(TEXT).unwrap();
        assert_eq!(idx.locate(&KeyPath::keys(&["account", "id"])), Some((2, 1)));
        assert_eq!(idx.locate(&KeyPath::keys(&["pbx"]).index(1).key("host")), Some((9, 1)));
        // A missing key is reported where its table is.
        let table = idx.locate(&KeyPath::keys(&["pbx"]).index(1));
        assert_eq!(table.map(|(line, _)| line), Some(7));
        assert_eq!(idx.locate(&KeyPath::keys(&["pbx"]).index(1).key("port")), table);
        assert_eq!(idx.locate(&KeyPath::keys(&["nothing"])), None);
        assert_eq!(KeyPath::keys(&["pbx"]).index(1).key("host").to_string(), "pbx[1].host");
        assert_eq!(KeyPath::keys(&["pbx"]).index(0).dotted("smdr.listen").to_string(), "pbx[0].smdr.listen");
        assert_eq!(KeyPath::keys(&["pbx"]).dotted("").to_string(), "pbx");
    }

    #[test]
    fn finds_the_key_written_at_an_offset() {
        let idx = SpanIndex::parse(TEXT).unwrap();
        let at = |needle: &str| idx.path_at(TEXT.find(needle).unwrap()).map(|p| p.to_string());
        assert_eq!(at("host").as_deref(), Some("pbx[1].host"));
        assert_eq!(at("id =").as_deref(), Some("account.id"));
        assert_eq!(at("\"x\"").as_deref(), Some("account.id"), "a value names its key");
        assert_eq!(idx.path_at(TEXT.len() + 10), None);
    }
}
