//! API keys: a header's value, hashed (SHA-256) and compared in constant
//! time with the hashes in the config. The config never holds a key itself,
//! and how long a comparison takes says nothing about how close a guess was.

use http::{HeaderMap, HeaderName};
use subtle::ConstantTimeEq;

/// The prefix of a stored key hash.
pub(crate) const PREFIX: &str = "sha256:";

/// A scheme's accepted keys, as hashes, and where a client puts its key.
#[derive(Debug)]
pub(crate) struct ApiKeys {
    pub(crate) header: HeaderName,
    hashes: Vec<[u8; 32]>,
}

/// What a request's key header says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Presented {
    /// No such header.
    Absent,
    /// A key that is one of the accepted ones.
    Accepted,
    /// A key that is not (or several values of the header).
    Refused,
}

impl ApiKeys {
    pub(crate) fn new(header: HeaderName, hashes: Vec<[u8; 32]>) -> ApiKeys {
        ApiKeys { header, hashes }
    }

    /// Checks the request's key against every accepted hash (all of them,
    /// whatever matches first).
    pub(crate) fn check(&self, headers: &HeaderMap) -> Presented {
        let mut values = headers.get_all(&self.header).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return if headers.contains_key(&self.header) {
                Presented::Refused
            } else {
                Presented::Absent
            };
        };
        let presented = digest(value.as_bytes());
        let mut matched = subtle::Choice::from(0);
        for hash in &self.hashes {
            matched |= hash.ct_eq(&presented);
        }
        if bool::from(matched) {
            Presented::Accepted
        } else {
            Presented::Refused
        }
    }
}

fn digest(key: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, key);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// `sha256:<hex>` of a key, as the config stores it (`fanout hash-key`).
pub fn hash(key: &str) -> String {
    let mut out = String::with_capacity(PREFIX.len() + 64);
    out.push_str(PREFIX);
    for byte in digest(key.as_bytes()) {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Parses a stored hash: `sha256:` and 64 hex digits (either case).
pub(crate) fn parse_hash(text: &str) -> Result<[u8; 32], String> {
    let bad = || {
        format!(
            "an API key is stored as `sha256:` and 64 hex digits (`fanout hash-key` prints it), not `{}`",
            redact(text)
        )
    };
    let hex = text.strip_prefix(PREFIX).ok_or_else(bad)?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Enough of a wrong entry to find it, not enough to leak it if someone
/// pasted a key itself where its hash belongs.
fn redact(text: &str) -> String {
    let shown: String = text.chars().take(4).collect();
    if text.chars().count() > 4 {
        format!("{shown}…")
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_of_a_key_is_its_sha256_in_hex() {
        // `printf %s test | sha256sum`
        assert_eq!(
            hash("test"),
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        assert_eq!(parse_hash(&hash("test")).unwrap(), digest(b"test"));
        assert_eq!(
            parse_hash(&hash("test").to_uppercase().replace("SHA256", "sha256")).unwrap(),
            digest(b"test")
        );
    }

    #[test]
    fn a_malformed_hash_is_refused_without_repeating_it() {
        for bad in [
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "sha256:9f86",
            "sha256:zz86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "md5:098f6bcd4621d373cade4e832627b4f6",
            "my-secret-key",
        ] {
            let err = parse_hash(bad).unwrap_err();
            assert!(err.contains("64 hex digits"), "{err}");
            assert!(!err.contains(&bad[5..]), "{err} repeats {bad}");
        }
    }

    #[test]
    fn only_an_accepted_key_passes() {
        let keys = ApiKeys::new(
            HeaderName::from_static("x-api-key"),
            vec![digest(b"one"), digest(b"two")],
        );
        let with = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append("x-api-key", v.parse().unwrap());
            }
            keys.check(&headers)
        };
        assert_eq!(with(&[]), Presented::Absent);
        assert_eq!(with(&["one"]), Presented::Accepted);
        assert_eq!(with(&["two"]), Presented::Accepted);
        assert_eq!(with(&["three"]), Presented::Refused);
        assert_eq!(with(&["One"]), Presented::Refused);
        assert_eq!(
            with(&["one", "two"]),
            Presented::Refused,
            "two keys at once"
        );
    }
}
