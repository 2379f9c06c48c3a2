//! Where a path of the document (`endpoints[0].backends[1].upstream`) is written.
//!
//! Semantic checks run on the typed model, which has no positions; they report
//! a path, and this module finds it in a positioned parse of the same text:
//! saphyr's marked tree for YAML and JSON (JSON is YAML), toml's spanned tables
//! for TOML. A path that is not written (a missing key) resolves to its closest
//! written ancestor.

use std::fmt;

use saphyr::{LoadableYamlNode, MarkedYaml};
use toml::de::{DeTable, DeValue};

use super::Format;

/// One step of a path into the document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A path into the document, built with [`Path::key`] and [`Path::index`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Path(Vec<Seg>);

impl Path {
    pub(crate) fn root() -> Path {
        Path(Vec::new())
    }

    pub(crate) fn key(&self, key: impl Into<String>) -> Path {
        let mut path = self.clone();
        path.0.push(Seg::Key(key.into()));
        path
    }

    pub(crate) fn index(&self, index: usize) -> Path {
        let mut path = self.clone();
        path.0.push(Seg::Index(index));
        path
    }

    /// This path followed by `rest`.
    pub(crate) fn join(&self, rest: &Path) -> Path {
        let mut path = self.clone();
        path.0.extend(rest.0.iter().cloned());
        path
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// A positioned parse of the configuration text.
pub(crate) enum Locator<'a> {
    Yaml(Option<MarkedYaml<'a>>),
    Toml(Option<DeTable<'a>>, &'a str),
}

impl<'a> Locator<'a> {
    pub(crate) fn new(source: &'a str, format: Format) -> Locator<'a> {
        match format {
            Format::Yaml | Format::Json => {
                Locator::Yaml(MarkedYaml::load_from_str(source).ok().and_then(|mut docs| {
                    if docs.is_empty() {
                        None
                    } else {
                        Some(docs.swap_remove(0))
                    }
                }))
            }
            Format::Toml => {
                Locator::Toml(DeTable::parse(source).ok().map(|t| t.into_inner()), source)
            }
        }
    }

    /// 1-based line and column of `path`, or of its closest written ancestor.
    pub(crate) fn locate(&self, path: &Path) -> (usize, usize) {
        match self {
            Locator::Yaml(Some(root)) => {
                let mut node = root;
                for seg in &path.0 {
                    let next = match seg {
                        Seg::Key(k) => node.data.as_mapping_get(k),
                        Seg::Index(i) => node.data.as_sequence_get(*i),
                    };
                    match next {
                        Some(n) => node = n,
                        None => break,
                    }
                }
                (node.span.start.line(), node.span.start.col() + 1)
            }
            Locator::Toml(Some(table), source) => {
                let mut offset = 0;
                let mut current: Option<&DeValue<'_>> = None;
                for seg in &path.0 {
                    let found = match (seg, current) {
                        (Seg::Key(k), None) => find_key(table, k),
                        (Seg::Key(k), Some(DeValue::Table(t))) => find_key(t, k),
                        (Seg::Index(i), Some(DeValue::Array(a))) => a.get(*i),
                        _ => None,
                    };
                    match found {
                        Some(value) => {
                            offset = value.span().start;
                            current = Some(value.get_ref());
                        }
                        None => break,
                    }
                }
                line_col(source, offset)
            }
            _ => (1, 1),
        }
    }
}

fn find_key<'t, 'i>(table: &'t DeTable<'i>, key: &str) -> Option<&'t toml::Spanned<DeValue<'i>>> {
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, v)| v)
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}
