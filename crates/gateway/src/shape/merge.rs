//! Combining the shaped bodies of one request into a single object.

use serde_json::map::Entry;
use serde_json::{Map, Value};

use super::FieldPath;
use super::apply::nest;

/// The key under which [`merge`] places a part that is not an object and has
/// no `into`, such as a backend that answers with a bare array.
pub const COLLECTION_KEY: &str = "collection";

/// One backend's contribution to a response: its shaped body and the `into`
/// of its [`Shape`](super::Shape).
///
/// [`Shape::apply_part`](super::Shape::apply_part) builds one with the two
/// taken from the same shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// The body after [`Shape::apply`](super::Shape::apply).
    pub value: Value,
    /// The `into` of the shape that produced `value`; only whether it is set
    /// matters when `value` is already an object.
    pub into: Option<FieldPath>,
}

impl Part {
    /// Pairs a shaped body with the `into` of the shape that produced it.
    pub fn new(value: Value, into: Option<FieldPath>) -> Self {
        Self { value, into }
    }

    /// The object this part contributes to the merge.
    fn into_object(self) -> Map<String, Value> {
        match (self.value, self.into) {
            (Value::Object(map), _) => map,
            // `Shape::apply` never leaves this case; nesting here keeps a
            // hand-built part where its shape said it should go.
            (value, Some(into)) => nest(value, &into),
            (value, None) => Map::from_iter([(COLLECTION_KEY.to_owned(), value)]),
        }
    }
}

/// Deep-merges the parts of one response, which must come in declaration
/// order (never arrival order) for the result to be reproducible.
///
/// Each part is first made an object: an object stays as it is, anything else
/// without an `into` goes under [`COLLECTION_KEY`]. Then, key by key, two
/// objects merge recursively, and in any other collision the later part's
/// value replaces the earlier one (arrays are not concatenated; `null` is a
/// value like any other). Keys keep the place where they first appeared, so
/// the same parts always serialize to the same bytes.
///
/// ```
/// use fanout_gateway::shape::{merge, Part};
/// use serde_json::{json, Value};
///
/// let merged = merge([
///     Part::new(json!({"user": {"id": 1, "name": "old"}}), None),
///     Part::new(json!({"user": {"name": "new"}, "count": 2}), None),
///     Part::new(json!([1, 2]), None),
/// ]);
/// assert_eq!(
///     Value::Object(merged),
///     json!({"user": {"id": 1, "name": "new"}, "count": 2, "collection": [1, 2]}),
/// );
/// ```
pub fn merge(parts: impl IntoIterator<Item = Part>) -> Map<String, Value> {
    let mut merged = Map::new();
    for part in parts {
        merge_object(&mut merged, part.into_object());
    }
    merged
}

fn merge_object(target: &mut Map<String, Value>, source: Map<String, Value>) {
    for (key, value) in source {
        match target.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert(value);
            }
            Entry::Occupied(mut slot) => match (slot.get_mut(), value) {
                (Value::Object(old), Value::Object(new)) => merge_object(old, new),
                // Assigning through the entry keeps the key's first position.
                (old, new) => *old = new,
            },
        }
    }
}
