//! A backend's JSON body kept as it arrived.
//!
//! Most backends are merged as they are: no `extract`, `select`, `drop` or
//! `rename`. Building a [`Value`] tree for such a body, only to serialize it
//! again, was the largest cost per request in the gateway's profile (about a
//! third of its allocations). [`Json`] instead checks the body once (UTF-8,
//! then JSON syntax, with [`scan`](super::scan) or else `serde_json`) and
//! records where the members of a top-level object are; merging then copies their values byte for byte.
//! A value is parsed further only where two backends' objects meet under the
//! same key and must be deep-merged.

use std::{borrow::Cow, fmt, ops::Range};

use bytes::Bytes;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, value::RawValue};

use super::{FieldPath, scan::nesting_exceeds};

/// A JSON document checked once and kept as received, with the members of a
/// top-level object located.
#[derive(Clone)]
pub(crate) struct Json {
    /// Valid JSON. A `String` rather than the `Bytes` it came in: UTF-8 is
    /// checked once, and `text()` is free afterwards.
    text: String,
    /// The members of a top-level object, in order; `None` for anything else.
    members: Option<Vec<Member>>,
}

/// One member of the top-level object: where its key and value are.
#[derive(Debug, Clone)]
struct Member {
    key: Key,
    value: Range<usize>,
}

/// A key as it appears in the text, or decoded when it has escapes.
#[derive(Debug, Clone)]
enum Key {
    Plain(Range<usize>),
    Decoded(Box<str>),
}

/// Why a body is not JSON.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JsonError {
    /// The bytes are not UTF-8.
    #[error("not UTF-8: {0}")]
    Utf8(#[from] std::str::Utf8Error),
    /// The text is not JSON.
    #[error("{0}")]
    Syntax(#[from] serde_json::Error),
    /// Arrays and objects nest deeper than this many levels.
    #[error("nested deeper than {0} levels")]
    TooDeep(u32),
}

impl Json {
    /// Checks `text` and locates the members of a top-level object.
    ///
    /// # Errors
    ///
    /// [`JsonError`] when `text` is not UTF-8 or not one JSON value.
    pub(crate) fn parse(text: Bytes) -> Result<Json, JsonError> {
        Json::parse_within(text, u32::MAX)
    }

    /// [`Json::parse`], refusing arrays and objects nested deeper than
    /// `max_depth` ([`JsonError::TooDeep`]) before anything recursive sees
    /// them: the scanner counts the depth as it goes, and what it leaves to
    /// `serde_json` is measured by [`nesting_exceeds`] first.
    ///
    /// # Errors
    ///
    /// [`JsonError`] when `text` is not UTF-8, not one JSON value, or too deep.
    pub(crate) fn parse_within(text: Bytes, max_depth: u32) -> Result<Json, JsonError> {
        // Reuses the buffer when nothing else holds it; else one copy.
        let text = String::from_utf8(Vec::from(text)).map_err(|e| e.utf8_error())?;
        let str = text.as_str();
        if let Some(found) = super::scan::scan(str, max_depth) {
            let members = found.map(|members| {
                let members = members
                    .into_iter()
                    .map(|(key, value)| Member {
                        key: match key {
                            Ok(range) => Key::Plain(range),
                            Err(decoded) => Key::Decoded(decoded),
                        },
                        value,
                    })
                    .collect();
                unique_members(members, str)
            });
            return Ok(Json { text, members });
        }
        // What the scanner leaves to `serde_json`: an invalid body (for its
        // message), a top-level scalar, a key with escapes it could not
        // decode; and a body nested too deep, which this finds.
        if nesting_exceeds(str.as_bytes(), max_depth) {
            return Err(JsonError::TooDeep(max_depth));
        }
        let members = match serde_json::from_str::<Top<'_>>(str)? {
            Top::Object(members) => Some(unique_members(
                members
                    .into_iter()
                    .map(|(key, value)| Member {
                        key: match key {
                            Cow::Borrowed(k) => Key::Plain(offset(str, k)),
                            Cow::Owned(k) => Key::Decoded(k.into_boxed_str()),
                        },
                        value: offset(str, value.get()),
                    })
                    .collect(),
                str,
            )),
            Top::Other => None,
        };
        Ok(Json { text, members })
    }

    /// The text as received.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// Whether the document is an object.
    pub(crate) fn is_object(&self) -> bool {
        self.members.is_some()
    }

    /// How many members a top-level object has (0 for anything else).
    pub(crate) fn member_count(&self) -> usize {
        self.members.as_ref().map_or(0, Vec::len)
    }

    /// The members of a top-level object, each value as its JSON text.
    pub(crate) fn members(&self) -> impl Iterator<Item = (&str, &str)> {
        let text = self.text();
        self.members.iter().flat_map(|m| m.iter()).map(move |m| {
            let key = match &m.key {
                Key::Plain(range) => &text[range.clone()],
                Key::Decoded(key) => key,
            };
            (key, &text[m.value.clone()])
        })
    }

    /// The value at a dot path of object keys (`user.id`), parsed; `None` if
    /// a key is missing or a step is not an object. A key repeated in one
    /// object means its last value, as `serde_json` reads it.
    pub(crate) fn lookup(&self, path: &FieldPath) -> Option<Value> {
        let (first, rest) = path.segments().split_first()?;
        let mut current = self.members().filter(|(k, _)| k == first).last()?.1;
        for segment in rest {
            current = object_members(current)?
                .into_iter()
                .rfind(|(k, _)| k == segment)?
                .1
                .get();
        }
        serde_json::from_str(current).ok()
    }

    /// The whole document as a [`Value`], for shaping.
    ///
    /// # Errors
    ///
    /// When the text, valid JSON syntax, cannot be a value: a number out of
    /// range (`1e400`), a lone surrogate (`"\ud800"`), or nesting past the
    /// parser's limit. Never silently `null`: the data would be lost.
    pub(crate) fn to_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(self.text())
    }

    #[cfg(test)]
    /// A document from a [`Value`] (serialized once).
    pub(crate) fn from_value(value: &Value) -> Json {
        let text = serde_json::to_vec(value).unwrap_or_default();
        Json::parse(Bytes::from(text)).unwrap_or_else(|_| Json {
            text: "null".to_owned(),
            members: None,
        })
    }

    /// The text without the whitespace around it.
    pub(crate) fn trimmed(&self) -> &str {
        self.text().trim_matches([' ', '\t', '\n', '\r'])
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Json").field(&self.text()).finish()
    }
}

impl PartialEq for Json {
    /// Equal as JSON values (whitespace and key order inside objects aside).
    fn eq(&self, other: &Json) -> bool {
        self.to_value().ok() == other.to_value().ok()
    }
}

/// The members with each repeated key once: at its first place, with its last
/// value, as `serde_json` reads an object (so a repeated key means the same
/// whether a body is reshaped or merged as received).
fn unique_members(mut members: Vec<Member>, text: &str) -> Vec<Member> {
    // Borrowed: this runs on every body merged as received, and a copy per
    // comparison was most of the gateway's allocations per request.
    fn key<'a>(m: &'a Member, text: &'a str) -> &'a str {
        match &m.key {
            Key::Plain(range) => &text[range.clone()],
            Key::Decoded(key) => key,
        }
    }
    // Most objects have few members and no repeats: compare directly then,
    // the last bytes first (keys such as `item_1`, `item_2` share a prefix
    // and their length).
    let same = |a: &str, b: &str| a.as_bytes().last() == b.as_bytes().last() && a == b;
    let repeated = if members.len() <= 16 {
        // Each key looked up once.
        let mut keys = [""; 16];
        for (slot, m) in keys.iter_mut().zip(&members) {
            *slot = key(m, text);
        }
        let keys = &keys[..members.len()];
        keys.iter()
            .enumerate()
            .any(|(i, k)| keys[..i].iter().any(|o| same(o, k)))
    } else {
        let mut seen = std::collections::HashSet::with_capacity(members.len());
        !members.iter().all(|m| seen.insert(key(m, text)))
    };
    if !repeated {
        return members;
    }
    let mut first: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut kept: Vec<Member> = Vec::with_capacity(members.len());
    for member in members.drain(..) {
        match first.get(key(&member, text)) {
            Some(&at) => kept[at].value = member.value,
            None => {
                first.insert(key(&member, text).to_owned(), kept.len());
                kept.push(member);
            }
        }
    }
    kept
}

/// Asserts that the scanner agrees with `serde_json` on `text`: whatever it
/// decides (valid, and where the members are), `serde_json` decides the
/// same; and it decides every object and array that `serde_json` accepts.
/// For the tests and the `json` fuzz target.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn assert_scan_agrees(text: &str) {
    let by_serde = serde_json::from_str::<Top<'_>>(text).map(|top| match top {
        Top::Object(members) => Some(
            members
                .into_iter()
                .map(|(key, value)| (key.into_owned(), offset(text, value.get())))
                .collect::<Vec<_>>(),
        ),
        Top::Other => None,
    });
    let unbounded = super::scan::scan(text, u32::MAX);
    // With a depth limit the scanner decides exactly what it decides without
    // one, within the limit as `nesting_exceeds` counts it.
    for max in [0, 1, 2, 3, 8] {
        let within = !nesting_exceeds(text.as_bytes(), max);
        match super::scan::scan(text, max) {
            Some(found) => {
                assert!(
                    within,
                    "the scanner accepts {text:?} nested deeper than {max}"
                );
                assert_eq!(Some(&found), unbounded.as_ref(), "{text:?} within {max}");
            }
            None => assert!(
                !(within && unbounded.is_some()),
                "the scanner refuses {text:?} within {max}, which it accepts unbounded"
            ),
        }
    }
    match unbounded {
        Some(found) => {
            let found = found.map(|members| {
                members
                    .into_iter()
                    .map(|(key, value)| {
                        let key = match key {
                            Ok(range) => text[range].to_owned(),
                            Err(decoded) => decoded.into_string(),
                        };
                        (key, value)
                    })
                    .collect::<Vec<_>>()
            });
            match by_serde {
                Ok(expected) => assert_eq!(found, expected, "members of {text:?}"),
                Err(e) => panic!("the scanner accepts {text:?}, serde_json says {e}"),
            }
        }
        None => {
            let container = text
                .trim_start_matches([' ', '\t', '\n', '\r'])
                .starts_with(['{', '[']);
            assert!(
                !(container && by_serde.is_ok()),
                "the scanner leaves {text:?} to serde_json, which accepts it"
            );
        }
    }
}

/// Where `part`, a slice of `whole`, lies in it.
fn offset(whole: &str, part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
}

/// The members of `text` if it is a JSON object, keys borrowed where they
/// have no escapes.
pub(crate) fn object_members(text: &str) -> Option<Vec<(Cow<'_, str>, &RawValue)>> {
    match serde_json::from_str::<Top<'_>>(text).ok()? {
        Top::Object(members) => Some(members),
        Top::Other => None,
    }
}

/// A document's top level: an object's members, or anything else (checked
/// and skipped).
enum Top<'a> {
    Object(Vec<(Cow<'a, str>, &'a RawValue)>),
    Other,
}

impl<'de> Deserialize<'de> for Top<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TopVisitor)
    }
}

struct TopVisitor;

macro_rules! other {
    ($($name:ident: $ty:ty),*) => {
        $(fn $name<E: de::Error>(self, _: $ty) -> Result<Top<'de>, E> { Ok(Top::Other) })*
    };
}

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(key) = map.next_key::<MaybeBorrowed<'de>>()? {
            members.push((key.0, map.next_value::<&'de RawValue>()?));
        }
        Ok(Top::Object(members))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Top<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Top::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Top<'de>, E> {
        Ok(Top::Other)
    }

    other!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
}

/// A key borrowed from the text when it has no escapes.
struct MaybeBorrowed<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for MaybeBorrowed<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = MaybeBorrowed<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MaybeBorrowed(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MaybeBorrowed(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Appends `text`, valid JSON, without the whitespace between its tokens, so
/// spliced values serialize as compactly as `serde_json` writes. Copies runs
/// of bytes, not bytes one by one.
pub(crate) fn write_compact(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    // Most values (a string, a number, compact JSON) have no whitespace at
    // all: copied whole, without the token walk below.
    if !bytes.iter().any(|&b| is_space(b)) {
        out.extend_from_slice(bytes);
        return;
    }
    out.reserve(bytes.len());
    let (mut i, mut start) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // To the closing quote, stepping over escapes.
                i += 1;
                while let Some(at) = bytes
                    .get(i..)
                    .and_then(|rest| rest.iter().position(|&b| b == b'"' || b == b'\\'))
                {
                    i += at;
                    if bytes[i] == b'"' {
                        break;
                    }
                    i += 2;
                }
                i += 1;
            }
            b if is_space(b) => {
                out.extend_from_slice(&bytes[start..i]);
                while i < bytes.len() && is_space(bytes[i]) {
                    i += 1;
                }
                start = i;
            }
            _ => i += 1,
        }
    }
    out.extend_from_slice(&bytes[start.min(bytes.len())..]);
}
