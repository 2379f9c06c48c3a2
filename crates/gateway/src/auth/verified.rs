//! Tokens verified lately, per scheme: a client sends the same token with
//! every request until it expires, and checking its signature again each
//! time (an RSA verification) would cost more than the rest of a request.
//!
//! An entry is used only while the key set it was verified with is still
//! the scheme's current one (a refresh, a rotation or a removed key makes
//! every token be verified again) and its `exp` (plus the leeway) has not
//! passed; `nbf` was checked when it was verified, and time only moves on.
//! Tokens are looked up by their SHA-256, so no token is kept, and the map
//! is bounded: when full it starts afresh (a burst of many different tokens
//! costs verifications, never memory).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use super::{Claims, jwks::KeySet};

/// Entries kept at most per scheme.
pub(crate) const KEPT: usize = 4096;

type Digest = [u8; 32];

#[derive(Debug)]
struct Entry {
    claims: Arc<Claims>,
    /// The key set it was verified with.
    keys: Arc<KeySet>,
    /// Seconds since the epoch after which it is no longer accepted.
    until: u64,
}

/// One scheme's verified tokens.
#[derive(Debug, Default)]
pub(crate) struct Verified {
    entries: Mutex<HashMap<Digest, Entry>>,
}

impl Verified {
    /// The claims of `token`, if it was verified with `keys` and is still
    /// within its time at `now` (seconds since the epoch).
    pub(crate) fn get(&self, token: &str, keys: &Arc<KeySet>, now: u64) -> Option<Arc<Claims>> {
        let digest = digest(token);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(&digest)?;
        (Arc::ptr_eq(&entry.keys, keys) && now <= entry.until).then(|| entry.claims.clone())
    }

    /// Records `token` as verified with `keys`, good until `until`.
    pub(crate) fn put(&self, token: &str, keys: Arc<KeySet>, claims: Arc<Claims>, until: u64) {
        let digest = digest(token);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= KEPT {
            entries.clear();
        }
        entries.insert(
            digest,
            Entry {
                claims,
                keys,
                until,
            },
        );
    }
}

fn digest(token: &str) -> Digest {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Arc<KeySet> {
        let key = fanout_mock::jwt::SigningKey::es256("k").unwrap();
        Arc::new(KeySet::parse(fanout_mock::jwt::jwks(&[&key]).to_string().as_bytes()).unwrap())
    }

    #[test]
    fn an_entry_serves_only_with_its_keys_and_within_its_time() {
        let cache = Verified::default();
        let (set, other) = (keys(), keys());
        let claims = Arc::new(Claims::new());
        cache.put("t", set.clone(), claims.clone(), 100);
        assert!(cache.get("t", &set, 100).is_some());
        assert!(cache.get("t", &set, 101).is_none(), "expired");
        assert!(cache.get("t", &other, 50).is_none(), "another key set");
        assert!(cache.get("u", &set, 50).is_none(), "another token");
        for i in 0..KEPT {
            cache.put(&i.to_string(), set.clone(), claims.clone(), 100);
        }
        assert!(cache.entries.lock().unwrap().len() <= KEPT, "bounded");
    }
}
