//! Dot paths such as `address.city`, parsed once and walked many times.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A path to a field inside a JSON body, written with dots: `data`,
/// `address.city`, `a.b.c`.
///
/// Every segment is an object key taken literally; there is no escaping, so a
/// key that itself contains a dot cannot be addressed. Arrays met on the way
/// are not indexed: [`Shape`](super::Shape) applies the rest of the path to
/// each element instead.
///
/// A `FieldPath` (de)serializes as its dotted string, so it can sit directly
/// in configuration structs and is validated when they are read.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct FieldPath {
    // Never empty, and no segment is empty: `parse` is the only way in.
    segments: Vec<String>,
}

/// Why a string is not a valid [`FieldPath`]. Every message quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum PathError {
    /// The string was empty.
    #[error(
        "invalid field path \"\": a path needs at least one key, like `data` or `address.city`"
    )]
    Empty,
    /// The string started with a dot, as in `.a`.
    #[error("invalid field path {input:?}: it starts with a dot (write `a.b`, not `.a.b`)")]
    LeadingDot {
        /// The rejected input.
        input: String,
    },
    /// The string ended with a dot, as in `a.`.
    #[error("invalid field path {input:?}: it ends with a dot (write `a.b`, not `a.b.`)")]
    TrailingDot {
        /// The rejected input.
        input: String,
    },
    /// Two dots in a row, as in `a..b`, leave an empty key between them.
    #[error("invalid field path {input:?}: two dots in a row at byte {offset} leave an empty key")]
    EmptySegment {
        /// The rejected input.
        input: String,
        /// Byte offset of the second of the two dots.
        offset: usize,
    },
}

impl FieldPath {
    /// Parses a dotted path, rejecting the empty string and empty segments
    /// (`.a`, `a.`, `a..b`).
    ///
    /// # Errors
    ///
    /// Returns a [`PathError`] naming what is wrong and quoting `input`.
    pub(crate) fn parse(input: &str) -> Result<Self, PathError> {
        if input.is_empty() {
            return Err(PathError::Empty);
        }
        if input.starts_with('.') {
            return Err(PathError::LeadingDot {
                input: input.to_owned(),
            });
        }
        if input.ends_with('.') {
            return Err(PathError::TrailingDot {
                input: input.to_owned(),
            });
        }
        if let Some(at) = input.find("..") {
            return Err(PathError::EmptySegment {
                input: input.to_owned(),
                offset: at + 1,
            });
        }
        Ok(Self {
            segments: input.split('.').map(str::to_owned).collect(),
        })
    }

    /// The keys of the path, outermost first; never empty.
    pub(crate) fn segments(&self) -> &[String] {
        &self.segments
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            f.write_str(segment)?;
        }
        Ok(())
    }
}

// The dotted form reads better in assertion failures than a vector of keys.
impl fmt::Debug for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FieldPath").field(&self.to_string()).finish()
    }
}

impl FromStr for FieldPath {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for FieldPath {
    type Error = PathError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl TryFrom<String> for FieldPath {
    type Error = PathError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<FieldPath> for String {
    fn from(path: FieldPath) -> Self {
        path.to_string()
    }
}
