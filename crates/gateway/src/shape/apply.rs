//! The per-backend pipeline: extract → select → drop → rename → into.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::FieldPath;
#[cfg(test)]
use super::Part;

/// How one backend's body is cut to size before it is merged.
///
/// Build it with struct-update syntax over [`Shape::default`], which changes
/// nothing; each field is one step of the pipeline, and the steps always run
/// in the order of the fields: `extract`, `select`, `drop`, `rename`, `into`.
/// So `select`, `drop` and `rename` paths are relative to the extracted body
/// and use the backend's own key names, and `into` sees the finished result.
///
/// Wherever `select`, `drop` or `rename` meet an array on a path, they apply
/// the rest of the path to each element. On a body (or array element) that is
/// not an object they do nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Replace the body by the value at this path; it is an error
    /// ([`ShapeError::ExtractMissing`]) if the path does not exist. Arrays are
    /// not looked through here: a path that needs to go through one does not
    /// exist.
    pub(crate) extract: Option<FieldPath>,
    /// Keep only these paths, with their enclosing objects; `None` keeps
    /// everything and `Some(vec![])` keeps nothing.
    ///
    /// Paths that do not exist are absent from the result, and so are
    /// enclosing objects left with nothing selected in them, except that an
    /// array's elements keep their places (an object element with nothing
    /// selected becomes `{}`). Keys come out in the body's order, not the
    /// order of this list. When one path is a prefix of another, the shorter
    /// one wins and its whole value is kept.
    pub(crate) select: Option<Vec<FieldPath>>,
    /// Remove these paths, one after the other; paths that do not exist are
    /// ignored. The remaining keys keep their order.
    pub(crate) drop: Vec<FieldPath>,
    /// Move the value at each path to a sibling key with the new name, one
    /// rename after the other (so `a → b` then `b → c` moves `a` to `c`).
    ///
    /// The new key takes the old key's place in the key order; an existing
    /// key with the new name is replaced. The new name is a literal key,
    /// dots included. Paths that do not exist are ignored, and then an
    /// existing key with the new name is left alone.
    pub(crate) rename: Vec<(FieldPath, String)>,
    /// Nest the result under this path: `a.b` gives `{"a": {"b": result}}`.
    pub(crate) into: Option<FieldPath>,
}

/// Why a [`Shape`] could not be applied to a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ShapeError {
    /// The `extract` path is not in the body: a key on it is missing, or a
    /// value on the way is not an object.
    #[error(
        "extract path \"{path}\" does not exist in the body \
         (a key is missing or a value on the way is not an object)"
    )]
    ExtractMissing {
        /// The `extract` path of the shape.
        path: FieldPath,
    },
}

impl Shape {
    /// Runs the pipeline on one backend body, moving values rather than
    /// copying them.
    ///
    /// # Errors
    ///
    /// [`ShapeError::ExtractMissing`] when `extract` is set and its path is
    /// not in the body. No other step can fail.
    pub(crate) fn apply(&self, body: Value) -> Result<Value, ShapeError> {
        let mut body = match &self.extract {
            Some(path) => extract(body, path)?,
            None => body,
        };
        if let Some(paths) = &self.select {
            body = select_body(body, &selection(paths));
        }
        for path in &self.drop {
            drop_path(&mut body, path.segments());
        }
        for (path, name) in &self.rename {
            rename_path(&mut body, path.segments(), name);
        }
        Ok(match &self.into {
            Some(path) => Value::Object(nest(body, path)),
            None => body,
        })
    }

    /// Whether any step but `into` is set. A body that is not reshaped is
    /// merged as received ([`Part::json`]), without being parsed into a tree.
    pub(crate) fn reshapes(&self) -> bool {
        self.extract.is_some()
            || self.select.is_some()
            || !self.drop.is_empty()
            || !self.rename.is_empty()
    }

    #[cfg(test)]
    /// Applies the shape and pairs the result with this shape's `into`, ready
    /// for [`merge`](super::merge), so the two cannot come from different
    /// shapes.
    ///
    /// # Errors
    ///
    /// As for [`Shape::apply`].
    pub(crate) fn apply_part(&self, body: Value) -> Result<Part, ShapeError> {
        Ok(Part::new(self.apply(body)?, self.into.clone()))
    }
}

fn extract(body: Value, path: &FieldPath) -> Result<Value, ShapeError> {
    let mut current = body;
    for segment in path.segments() {
        let next = match current {
            // The rest of this object is discarded, so the cheap removal that
            // disturbs key order is fine.
            Value::Object(mut map) => map.swap_remove(segment.as_str()),
            _ => None,
        };
        current = next.ok_or_else(|| ShapeError::ExtractMissing { path: path.clone() })?;
    }
    Ok(current)
}

/// Wraps `value` in one single-key object per segment of `path`.
fn nest(value: Value, path: &FieldPath) -> Map<String, Value> {
    let (outer, inner) = path
        .segments()
        .split_first()
        .expect("a parsed FieldPath has at least one segment");
    let value = inner.iter().rev().fold(value, |value, segment| {
        Value::Object(Map::from_iter([(segment.clone(), value)]))
    });
    Map::from_iter([(outer.clone(), value)])
}

/// The selected paths as a tree, so one pass over the body in its own key
/// order serves every path at once.
type Selection<'a> = BTreeMap<&'a str, Selected<'a>>;

#[derive(Debug)]
enum Selected<'a> {
    /// A selected path ends here: keep the whole value.
    Whole,
    /// Selected paths go on below this key.
    Below(Selection<'a>),
}

fn selection(paths: &[FieldPath]) -> Selection<'_> {
    let mut root = Selection::new();
    for path in paths {
        add_to_selection(&mut root, path.segments());
    }
    root
}

fn add_to_selection<'a>(level: &mut Selection<'a>, segments: &'a [String]) {
    match segments {
        [] => {}
        [last] => {
            // Replaces any longer paths below: the whole value is kept now.
            level.insert(last.as_str(), Selected::Whole);
        }
        [first, rest @ ..] => {
            let next = level
                .entry(first.as_str())
                .or_insert_with(|| Selected::Below(Selection::new()));
            // A shorter path that already keeps the whole value covers this one.
            if let Selected::Below(below) = next {
                add_to_selection(below, rest);
            }
        }
    }
}

/// Selection on a body or an array element, which is always kept in some form.
fn select_body(value: Value, selection: &Selection<'_>) -> Value {
    match value {
        Value::Object(map) => Value::Object(select_object(map, selection)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| select_body(item, selection))
                .collect(),
        ),
        scalar => scalar,
    }
}

/// Selection below a key, where a path that finds nothing leaves nothing.
fn select_nested(value: Value, selection: &Selection<'_>) -> Option<Value> {
    match value {
        Value::Object(map) => {
            let kept = select_object(map, selection);
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        array @ Value::Array(_) => Some(select_body(array, selection)),
        // The path goes on through a scalar, so it does not exist.
        _ => None,
    }
}

fn select_object(map: Map<String, Value>, selection: &Selection<'_>) -> Map<String, Value> {
    let mut kept = Map::new();
    for (key, value) in map {
        match selection.get(key.as_str()) {
            None => {}
            Some(Selected::Whole) => {
                kept.insert(key, value);
            }
            Some(Selected::Below(below)) => {
                if let Some(value) = select_nested(value, below) {
                    kept.insert(key, value);
                }
            }
        }
    }
    kept
}

fn drop_path(value: &mut Value, segments: &[String]) {
    match value {
        Value::Object(map) => match segments {
            [last] => {
                map.shift_remove(last.as_str());
            }
            [first, rest @ ..] => {
                if let Some(child) = map.get_mut(first.as_str()) {
                    drop_path(child, rest);
                }
            }
            [] => {}
        },
        Value::Array(items) => {
            for item in items {
                drop_path(item, segments);
            }
        }
        _ => {}
    }
}

fn rename_path(value: &mut Value, segments: &[String], to: &str) {
    match value {
        Value::Object(map) => match segments {
            [from] => rename_key(map, from, to),
            [first, rest @ ..] => {
                if let Some(child) = map.get_mut(first.as_str()) {
                    rename_path(child, rest, to);
                }
            }
            [] => {}
        },
        Value::Array(items) => {
            for item in items {
                rename_path(item, segments, to);
            }
        }
        _ => {}
    }
}

fn rename_key(map: &mut Map<String, Value>, from: &str, to: &str) {
    if from == to || !map.contains_key(from) {
        return;
    }
    // The map exposes no positional access, so rebuild it: the values are
    // moved, only the key list is reallocated.
    let len = map.len();
    let old = std::mem::replace(map, Map::with_capacity(len));
    for (key, value) in old {
        if key == from {
            map.insert(to.to_owned(), value);
        } else if key != to {
            map.insert(key, value);
        }
    }
}
