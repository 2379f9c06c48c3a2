//! Shape and merge: cutting each backend's JSON body to size, then combining
//! the bodies of one request into a single response object.
//!
//! Everything here is a pure function on JSON: no I/O and no runtime, so the
//! rules can be tested exhaustively on their own and the same inputs always
//! give the same bytes. A body that is only merged (no extract, select, drop
//! or rename) stays the text the backend sent ([`Json`]) and its values are
//! spliced into the response as they are, apart from whitespace; a reshaped
//! body is parsed into a [`serde_json::Value`].
//!
//! # Shape, per backend
//!
//! A [`Shape`] runs five optional steps, always in this order:
//!
//! 1. **extract** a path: the body becomes the value found there, and a
//!    missing path is an error ([`ShapeError::ExtractMissing`]), since the
//!    backend did not answer in the expected form;
//! 2. **select** an allow-list of paths, keeping their enclosing objects, in
//!    the body's own key order;
//! 3. **drop** a deny-list of paths;
//! 4. **rename** keys in place, the new key taking the old one's position;
//! 5. nest the result **into** a path.
//!
//! Paths are [`FieldPath`]s such as `address.city`. When select, drop or
//! rename meet an array on a path, they apply the rest of the path to each
//! element, so `items.id` reaches the `id` of every item. Apart from extract,
//! paths that are not there are not errors: backends omit fields, and a
//! gateway should pass on what it got rather than fail the request.
//!
//! # Merge, per request
//!
//! [`merge`] takes the shaped bodies as [`Part`]s in declaration order and
//! deep-merges them into one object. Objects merge key by key, recursively;
//! in any other collision the later part wins. A part that is not an object
//! (and so had no `into`) goes under the key [`COLLECTION_KEY`]. Each key keeps
//! the position of its first appearance. Since the order is the declaration
//! order and never the order in which backends answered, the response is
//! reproducible byte for byte.
//!
//! # Example

mod apply;
mod json;
mod merge;
mod path;
mod scan;
#[cfg(test)]
mod tests;

pub(crate) use apply::Shape;
#[cfg(test)]
pub(crate) use apply::ShapeError;
#[cfg(feature = "fuzzing")]
pub(crate) use json::assert_scan_agrees;
pub(crate) use json::{Json, JsonError};
pub(crate) use merge::{Body, ERRORS_KEY, Merged};
#[cfg(test)]
pub(crate) use merge::{COLLECTION_KEY, Part, merge};
pub(crate) use path::FieldPath;
#[cfg(test)]
pub(crate) use path::PathError;
pub(crate) use scan::nesting_exceeds;
