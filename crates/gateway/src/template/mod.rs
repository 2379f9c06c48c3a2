//! Templates: text and JSON with `{…}` holes that a request fills.
//!
//! One variable vocabulary ([`Var`]) serves every template: a backend's
//! path and query ([`url`]), its JSON body ([`body`]), a pass-through's
//! path. A request offers its values through one lookup ([`Values::get`]),
//! so a new source of values (a namespace such as `{jwt.sub}`) is one
//! variant of [`Var`] (with its name in [`NAMESPACES`], its arm in
//! `text::parse_var` and in `Display`), one arm in the request's lookup
//! (`run::Inputs::get`), and its rule in the compiler's `check_var`; every
//! template kind (paths, bodies, pass-through paths), the 400 before any
//! call and the encoders follow.
//!
//! Everything here is pure: parsing happens once when the plan is compiled,
//! rendering per request writes into a buffer, and nothing touches a runtime.
//!
//! - [`text`]: a string with holes, parsed once ([`Template`]).
//! - [`url`]: a template rendered into a URL, every value percent-encoded
//!   for where it goes.
//! - [`body`]: a JSON template rendered into a request body: a value that is
//!   a whole placeholder keeps its JSON type; one inside text becomes text.

mod body;
pub(crate) mod names;
mod text;
pub(crate) mod url;

use std::{borrow::Cow, fmt};

use serde_json::Value;

pub(crate) use self::{
    body::BodyTemplate,
    text::{Part, Place, Template},
};
use crate::shape::FieldPath;

/// Where a template's value comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Var {
    /// `{id}`: a value captured by the route.
    Route(String),
    /// `{query.lang}`: a query parameter of the client's request.
    Query(String),
    /// `{body.amount}`: a field of the client's JSON body (dot path).
    Body(FieldPath),
    /// `{jwt.sub}`: a claim of the request's verified token (a dot path).
    Jwt(FieldPath),
    /// `{profile.account_id}`: a field of a dependency's answer.
    Field {
        /// The backend it comes from (it must be in `after`).
        backend: String,
        /// The path inside that backend's body.
        path: FieldPath,
    },
}

impl Var {
    /// Whether the client's request gives the value (route, query, body, a
    /// token's claim), so that a missing one is the client's `400`, found
    /// before any call.
    pub(crate) fn given_by_client(&self) -> bool {
        !matches!(self, Var::Field { .. })
    }
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Var::Route(name) => write!(f, "{{{name}}}"),
            Var::Query(name) => write!(f, "{{query.{name}}}"),
            Var::Body(path) => write!(f, "{{body.{path}}}"),
            Var::Jwt(path) => write!(f, "{{jwt.{path}}}"),
            Var::Field { backend, path } => write!(f, "{{{backend}.{path}}}"),
        }
    }
}

/// The names a template reserves as namespaces: no backend can be called so.
pub(crate) const NAMESPACES: [&str; 3] = ["query", "body", "jwt"];

/// A value a request has for a [`Var`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Found<'a> {
    /// Text (route captures and query values, decoded): always a string.
    Text(&'a str),
    /// A JSON value (a field of a body or a claim), with its type.
    Json(&'a Value),
}

impl<'a> Found<'a> {
    /// The value as URL text: a string as it is, a number or a boolean as
    /// written; `None` for `null`, an array or an object, which cannot fill a
    /// URL.
    pub(crate) fn scalar_text(self) -> Option<Cow<'a, str>> {
        match self {
            Found::Text(text) => Some(Cow::Borrowed(text)),
            Found::Json(Value::String(text)) => Some(Cow::Borrowed(text)),
            Found::Json(Value::Number(n)) => Some(Cow::Owned(n.to_string())),
            Found::Json(Value::Bool(b)) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            Found::Json(_) => None,
        }
    }

    /// What kind of JSON value it is, for errors (`a string`, `an object`…).
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Found::Text(_) | Found::Json(Value::String(_)) => "a string",
            Found::Json(Value::Number(_)) => "a number",
            Found::Json(Value::Bool(_)) => "a boolean",
            Found::Json(Value::Null) => "null",
            Found::Json(Value::Array(_)) => "an array",
            Found::Json(Value::Object(_)) => "an object",
        }
    }
}

/// The values one request offers its templates.
pub(crate) trait Values {
    /// The value of `var`, or `None` when the request has none.
    fn get(&self, var: &Var) -> Option<Found<'_>>;
}

/// The value at a dot path of object keys in `value` (arrays are not
/// indexed, as everywhere a [`FieldPath`] is walked).
pub(crate) fn lookup<'v>(value: &'v Value, path: &FieldPath) -> Option<&'v Value> {
    path.segments()
        .iter()
        .try_fold(value, |current, key| current.as_object()?.get(key.as_str()))
}
