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
    let mut merged = Merged::default();
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
}

type Object<'a> = IndexMap<Cow<'a, str>, Node<'a>, foldhash::fast::RandomState>;

#[derive(Debug)]
enum Node<'a> {
    /// JSON text as a backend sent it (checked when it arrived).
    Raw(&'a str),
    Value(&'a Value),
    Object(Object<'a>),
}

/// Stands in for a node while it is taken out to be merged into.
static NULL: Value = Value::Null;

impl<'a> Merged<'a> {
    /// Merges in the next part, in declaration order.
    ///
    /// A body's own top-level [`ERRORS_KEY`] is left out: that key belongs to
    /// the gateway, and a backend must not be able to forge it.
    pub(crate) fn add(&mut self, body: &'a Body, into: Option<&'a FieldPath>) {
        match body {
            Body::Json(json) => match into {
                Some(into) => self.place(Node::Raw(json.trimmed()), into),
                None if json.is_object() => {
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
        let mut out = Vec::with_capacity(256);
        write_object(&self.root, &mut out);
        out
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

impl<'a> Node<'a> {
    fn is_object(&self) -> bool {
        match self {
            Node::Raw(text) => text.starts_with('{'),
            Node::Value(value) => value.is_object(),
            Node::Object(_) => true,
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
            Node::Value(_) => Object::default(),
        }
    }
}

fn write_object(object: &Object<'_>, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (key, node)) in object.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, key.as_ref());
        out.push(b':');
        match node {
            Node::Raw(text) => write_compact(text, out),
            Node::Value(value) => {
                let _ = serde_json::to_writer(&mut *out, value);
            }
            Node::Object(object) => write_object(object, out),
        }
    }
    out.push(b'}');
}

#[cfg(test)]
fn object_to_map(object: &Object<'_>) -> Map<String, Value> {
    object
        .iter()
        .map(|(key, node)| {
            let value = match node {
                Node::Raw(text) => serde_json::from_str(text).unwrap_or(Value::Null),
                Node::Value(value) => (*value).clone(),
                Node::Object(object) => Value::Object(object_to_map(object)),
            };
            (key.clone().into_owned(), value)
        })
        .collect()
}
