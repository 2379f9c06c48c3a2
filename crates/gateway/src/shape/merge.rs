//! Combining the shaped bodies of one request into a single object.
//!
//! The merge works on a tree of borrowed nodes: a value is either still the
//! text a backend sent ([`Json`], spliced byte for byte), a shaped [`Value`],
//! or an object being merged. Text is parsed only where two objects meet
//! under one key, so a response whose backends answer with disjoint keys is
//! assembled without building a `Value` at all.

use std::borrow::Cow;

use indexmap::{IndexMap, map::Entry};
#[cfg(test)]
use serde_json::Map;
use serde_json::Value;

use serde_json::value::RawValue;

use super::FieldPath;
use super::json::{Json, object_members, write_compact};

/// The key under which [`merge`] places a part that is not an object and has
/// no `into`, such as a backend that answers with a bare array.
pub(crate) const COLLECTION_KEY: &str = "collection";

/// The key under which the gateway reports failed backends (`expose_errors`);
/// only the gateway writes it.
pub(crate) const ERRORS_KEY: &str = "_errors";

/// One backend's answer, ready to merge.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Body {
    /// The body as received, not shaped: the part's `into`, if any, is still
    /// to be applied (the merge does it).
    Json(Json),
    /// A shaped body ([`Shape::apply`](super::Shape::apply)), `into` applied.
    Value(Value),
}

#[cfg(test)]
/// One backend's contribution to a response: its body and the `into` of its
/// [`Shape`](super::Shape).
///
/// [`Shape::apply_part`](super::Shape::apply_part) builds one with the two
/// taken from the same shape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Part {
    /// The body.
    pub(crate) body: Body,
    /// The `into` of the shape; for a [`Body::Value`] only whether it is set
    /// matters when the value is already an object.
    pub(crate) into: Option<FieldPath>,
}

#[cfg(test)]
impl Part {
    /// Pairs a shaped body with the `into` of the shape that produced it.
    pub(crate) fn new(value: Value, into: Option<FieldPath>) -> Self {
        Self {
            body: Body::Value(value),
            into,
        }
    }
}

#[cfg(test)]
/// Deep-merges the parts of one response, which must come in declaration
/// order (never arrival order) for the result to be reproducible.
///
/// Each part is first made an object: an object stays as it is, anything else
/// without an `into` goes under [`COLLECTION_KEY`]. Then, key by key, two
/// objects merge recursively, and in any other collision the later part's
/// value replaces the earlier one (arrays are not concatenated; `null` is a
/// value like any other). Keys keep the place where they first appeared, so
/// the same parts always serialize to the same bytes.
pub(crate) fn merge(parts: impl IntoIterator<Item = Part>) -> Map<String, Value> {
    let parts: Vec<Part> = parts.into_iter().collect();
    let mut merged = Merged::with_room_for(parts.iter().map(|p| (&p.body, p.into.as_ref())));
    for part in &parts {
        merged.add(&part.body, part.into.as_ref());
    }
    merged.to_map()
}

/// A response being merged, part by part, as [`merge`] describes; it borrows
/// the parts and writes the result straight to bytes.
#[derive(Debug, Default)]
pub(crate) struct Merged<'a> {
    root: Object<'a>,
    /// The bytes of JSON text merged in so far: about the size of the
    /// serialized result, so that it is written into one allocation.
    text: usize,
}

type Object<'a> = IndexMap<Cow<'a, str>, Node<'a>, foldhash::fast::RandomState>;

#[derive(Debug, Clone)]
enum Node<'a> {
    /// JSON text as a backend sent it (checked when it arrived).
    Raw(&'a str),
    Value(&'a Value),
    Object(Object<'a>),
    /// Arrays concatenated by `append`.
    Array(Vec<Node<'a>>),
}

/// Why a backend's answer could not be appended ([`Merged::append`]): a
/// `decode` failure of that backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AppendError {
    /// The answer (at its `into`) is not an array.
    #[error("append: the answer is {0}, not an array")]
    NotAnArray(&'static str),
    /// What is already at `into` (or on the way there) is not an array.
    #[error("append: `{at}` already holds {kind}, which an array cannot be appended to")]
    Occupied {
        /// The key, as a dot path.
        at: String,
        /// What it holds.
        kind: &'static str,
    },
}

/// Stands in for a node while it is taken out to be merged into.
static NULL: Value = Value::Null;

impl<'a> Merged<'a> {
    /// An empty merge with room at the top level for the members of `parts`
    /// (each a body and its `into`), so that the top level is allocated once
    /// rather than grown part by part.
    pub(crate) fn with_room_for<'p>(
        parts: impl IntoIterator<Item = (&'p Body, Option<&'p FieldPath>)>,
    ) -> Self {
        let members = parts
            .into_iter()
            .map(|(body, into)| match (body, into) {
                (Body::Json(json), None) if json.is_object() => json.member_count(),
                (Body::Value(Value::Object(map)), _) => map.len(),
                _ => 1,
            })
            .sum();
        Merged {
            root: Object::with_capacity_and_hasher(members, Default::default()),
            text: 0,
        }
    }

    /// Merges in the next part, in declaration order.
    ///
    /// A body's own top-level [`ERRORS_KEY`] is left out: that key belongs to
    /// the gateway, and a backend must not be able to forge it.
    pub(crate) fn add(&mut self, body: &'a Body, into: Option<&'a FieldPath>) {
        self.text += match body {
            Body::Json(json) => json.text().len(),
            Body::Value(_) => 64,
        };
        match body {
            Body::Json(json) => match into {
                Some(into) => self.place(Node::Raw(json.trimmed()), into),
                None if json.is_object() => {
                    // Grown once per part rather than doubling key by key.
                    self.root.reserve(json.member_count());
                    for (key, value) in json.members().filter(|(k, _)| *k != ERRORS_KEY) {
                        insert(&mut self.root, Cow::Borrowed(key), Node::Raw(value));
                    }
                }
                None => self.insert(COLLECTION_KEY, Node::Raw(json.trimmed())),
            },
            Body::Value(Value::Object(map)) => {
                for (key, value) in map.iter().filter(|(k, _)| *k != ERRORS_KEY) {
                    insert(&mut self.root, Cow::Borrowed(key), Node::Value(value));
                }
            }
            Body::Value(value) => match into {
                Some(into) => self.place(Node::Value(value), into),
                None => self.insert(COLLECTION_KEY, Node::Value(value)),
            },
        }
    }

    /// Concatenates the array of `body` (an answer whose `into` is `into`)
    /// onto the array already at `into`, or starts it there. Arrays append in
    /// the order of the calls to this, which is declaration order.
    ///
    /// # Errors
    ///
    /// When the answer is not an array, or `into` (or an object on the way
    /// to it) already holds something else; the merge is then as if this
    /// answer had not come.
    pub(crate) fn append(
        &mut self,
        body: &'a Body,
        into: &'a FieldPath,
    ) -> Result<(), AppendError> {
        let items = items(body, into)?;
        let segments = into.segments();
        let (last, parents) = segments
            .split_last()
            .expect("a parsed FieldPath has at least one segment");
        let mut object = &mut self.root;
        for (depth, segment) in parents.iter().enumerate() {
            let node = object
                .entry(Cow::Borrowed(segment.as_str()))
                .or_insert_with(|| Node::Object(Object::default()));
            if !node.is_object() {
                return Err(AppendError::Occupied {
                    at: segments[..=depth].join("."),
                    kind: node.kind(),
                });
            }
            if !matches!(node, Node::Object(_)) {
                let taken = std::mem::replace(node, Node::Value(&NULL));
                *node = Node::Object(taken.into_object());
            }
            let Node::Object(inner) = node else {
                unreachable!("made an object just above");
            };
            object = inner;
        }
        match object.entry(Cow::Borrowed(last.as_str())) {
            Entry::Vacant(slot) => {
                slot.insert(Node::Array(items));
            }
            Entry::Occupied(mut slot) => {
                let node = slot.get_mut();
                let mut existing = node.array_items().ok_or_else(|| AppendError::Occupied {
                    at: into.to_string(),
                    kind: node.kind(),
                })?;
                existing.extend(items);
                *node = Node::Array(existing);
            }
        }
        Ok(())
    }

    /// Adds the gateway's own `_errors`, replacing nothing a backend sent
    /// (backends' `_errors` are never merged).
    pub(crate) fn insert_errors(&mut self, errors: &'a Value) {
        self.insert(ERRORS_KEY, Node::Value(errors));
    }

    fn insert(&mut self, key: &'a str, node: Node<'a>) {
        insert(&mut self.root, Cow::Borrowed(key), node);
    }

    /// Nests `node` one object per segment of `path`, then merges that in.
    fn place(&mut self, node: Node<'a>, path: &'a FieldPath) {
        let Some((outer, inner)) = path.segments().split_first() else {
            return;
        };
        let node = inner.iter().rev().fold(node, |node, segment| {
            let mut object = Object::default();
            object.insert(Cow::Borrowed(segment.as_str()), node);
            Node::Object(object)
        });
        self.insert(outer, node);
    }

    /// The merged object, serialized compactly.
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.text + 64);
        write_object(&self.root, &mut out);
        out
    }

    /// The value at `path` of the merged object, serialized compactly
    /// (`response.root`), with `errors` added under [`ERRORS_KEY`] when that
    /// value is an object (an array or a scalar has no place for them).
    /// `None` when the merged object has nothing at `path`.
    pub(crate) fn root_to_vec(&self, path: &FieldPath, errors: Option<&Value>) -> Option<Vec<u8>> {
        let mut node = Cow::Borrowed(self.root.get(path.segments()[0].as_str())?);
        for segment in &path.segments()[1..] {
            let child = match &*node {
                Node::Object(object) => object.get(segment.as_str()).cloned(),
                other => other.clone().into_object().shift_remove(segment.as_str()),
            };
            node = Cow::Owned(child?);
        }
        let mut out = Vec::with_capacity(self.text + 64);
        match errors {
            Some(errors) if node.is_object() => {
                let mut object = node.into_owned().into_object();
                object.insert(Cow::Borrowed(ERRORS_KEY), Node::Value(errors));
                write_object(&object, &mut out);
            }
            _ => write_node(&node, &mut out),
        }
        Some(out)
    }

    /// The merged object as a `serde_json` map.
    #[cfg(test)]
    pub(crate) fn to_map(&self) -> Map<String, Value> {
        object_to_map(&self.root)
    }
}

fn insert<'a>(target: &mut Object<'a>, key: Cow<'a, str>, value: Node<'a>) {
    match target.entry(key) {
        Entry::Vacant(slot) => {
            slot.insert(value);
        }
        Entry::Occupied(mut slot) => {
            let old = slot.get_mut();
            if old.is_object() && value.is_object() {
                let mut object = std::mem::replace(old, Node::Value(&NULL)).into_object();
                for (key, value) in value.into_object() {
                    insert(&mut object, key, value);
                }
                *old = Node::Object(object);
            } else {
                // Assigning through the entry keeps the key's first position.
                *old = value;
            }
        }
    }
}

/// The elements of an answer's array, found at its `into` when the answer
/// is shaped (a shaped answer has its `into` applied).
fn items<'a>(body: &'a Body, into: &FieldPath) -> Result<Vec<Node<'a>>, AppendError> {
    let node = match body {
        Body::Json(json) => Node::Raw(json.trimmed()),
        Body::Value(value) => {
            let inner = into
                .segments()
                .iter()
                .try_fold(value, |v, key| v.get(key.as_str()));
            Node::Value(inner.unwrap_or(&NULL))
        }
    };
    node.array_items()
        .ok_or_else(|| AppendError::NotAnArray(node.kind()))
}

impl<'a> Node<'a> {
    fn is_object(&self) -> bool {
        match self {
            Node::Raw(text) => text.starts_with('{'),
            Node::Value(value) => value.is_object(),
            Node::Object(_) => true,
            Node::Array(_) => false,
        }
    }

    /// What kind of JSON value it is, for errors.
    fn kind(&self) -> &'static str {
        match self {
            Node::Object(_) => "an object",
            Node::Array(_) => "an array",
            Node::Value(value) => match value {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::String(_) => "a string",
                Value::Array(_) => "an array",
                Value::Object(_) => "an object",
            },
            Node::Raw(text) => match text.as_bytes().first() {
                Some(b'{') => "an object",
                Some(b'[') => "an array",
                Some(b'"') => "a string",
                Some(b'n') => "null",
                Some(b't' | b'f') => "a boolean",
                _ => "a number",
            },
        }
    }

    /// The elements of an array node, each still as it came; `None` for
    /// anything else.
    fn array_items(&self) -> Option<Vec<Node<'a>>> {
        match self {
            Node::Array(items) => Some(items.clone()),
            Node::Value(Value::Array(items)) => Some(items.iter().map(Node::Value).collect()),
            Node::Raw(text) if text.starts_with('[') => {
                // Checked JSON when it arrived: this parse cannot fail.
                let items: Vec<&'a RawValue> = serde_json::from_str(text).ok()?;
                Some(
                    items
                        .into_iter()
                        .map(|item| Node::Raw(item.get()))
                        .collect(),
                )
            }
            _ => None,
        }
    }

    /// The members of an object node (empty for anything else).
    fn into_object(self) -> Object<'a> {
        match self {
            Node::Object(object) => object,
            Node::Raw(text) => object_members(text)
                .unwrap_or_default()
                .into_iter()
                .map(|(key, value)| (key, Node::Raw(value.get())))
                .collect(),
            Node::Value(Value::Object(map)) => map
                .iter()
                .map(|(key, value)| (Cow::Borrowed(key.as_str()), Node::Value(value)))
                .collect(),
            Node::Value(_) | Node::Array(_) => Object::default(),
        }
    }
}

fn write_object(object: &Object<'_>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (key, node)) in object.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_key(key, out);
        out.push(b':');
        write_node(node, out);
    }
    out.push(b'}');
}

/// A key as a JSON string. Most keys need no escaping (they came without
/// escapes from a backend's text, or are plain names): those are copied as
/// they are; the rest go through `serde_json`'s escaping.
fn write_key(key: &str, out: &mut Vec<u8>) {
    if key.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(key.len() + 2);
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.push(b'"');
    } else {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, key);
    }
}

fn write_node(node: &Node<'_>, out: &mut Vec<u8>) {
    match node {
        Node::Raw(text) => write_compact(text, out),
        Node::Value(value) => {
            let _ = serde_json::to_writer(&mut *out, value);
        }
        Node::Object(object) => write_object(object, out),
        Node::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_node(item, out);
            }
            out.push(b']');
        }
    }
}

#[cfg(test)]
fn object_to_map(object: &Object<'_>) -> Map<String, Value> {
    object
        .iter()
        .map(|(key, node)| (key.clone().into_owned(), node_to_value(node)))
        .collect()
}

#[cfg(test)]
fn node_to_value(node: &Node<'_>) -> Value {
    match node {
        Node::Raw(text) => serde_json::from_str(text).unwrap_or(Value::Null),
        Node::Value(value) => (*value).clone(),
        Node::Object(object) => Value::Object(object_to_map(object)),
        Node::Array(items) => Value::Array(items.iter().map(node_to_value).collect()),
    }
}

#[cfg(test)]
mod room_tests {
    use super::*;

    #[test]
    fn the_top_level_is_allocated_once_for_every_part_s_members() {
        let parse = |text: &str| Body::Json(Json::parse(text.to_owned().into()).unwrap());
        let into = FieldPath::parse("nested.x").unwrap();
        let parts = [
            (parse(r#"{"a": 1, "b": 2, "c": 3}"#), None),
            (parse(r#"{"d": 4, "e": 5}"#), None),
            (parse("[1, 2]"), None),
            (parse(r#"{"f": 6}"#), Some(&into)),
            (
                Body::Value(serde_json::json!({"g": 7, "h": 8})),
                Some(&into),
            ),
        ];
        let mut merged = Merged::with_room_for(parts.iter().map(|(b, i)| (b, *i)));
        let room = merged.root.capacity();
        assert!(room >= 3 + 2 + 1 + 1 + 2, "{room}");
        for (body, into) in &parts {
            merged.add(body, *into);
        }
        assert_eq!(merged.root.capacity(), room, "grown while merging");
        assert_eq!(merged.root.len(), 3 + 2 + 1 + 1 + 2);
    }
}
