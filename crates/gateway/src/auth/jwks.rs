//! An issuer's public keys (a JWKS, RFC 7517): parsed once into keys ready
//! to verify with, and, for `jwks_url`, kept fresh by a background task.
//!
//! The rules for a remote set:
//! - fetched at start, then every [`REFRESH`] (or the answer's
//!   `cache-control: max-age`, kept within [`MIN_REFRESH`]..[`MAX_REFRESH`]);
//! - a failed fetch keeps the last good set and is tried again sooner
//!   (1 s, doubling, at most a minute);
//! - a token naming a key the set lacks asks for a fetch at once, at most
//!   once per [`MISS_REFETCH`] per scheme (a stream of tokens with made-up
//!   key ids cannot turn the gateway into a load generator for the issuer);
//! - each fetch has a timeout ([`FETCH_TIMEOUT`]) and a size limit
//!   ([`MAX_BYTES`]); a request waits for a fetch at most its caller's bound.

use std::{
    str::FromStr,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwapOption;
use http_body_util::{BodyExt, Limited};
use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse},
};
use tokio::{sync::Notify, time::Instant};

use crate::client::{ClientSettings, Dial, HttpClient, Transport};

/// How often a remote set is fetched again when its answer says nothing.
pub(crate) const REFRESH: Duration = Duration::from_secs(300);
/// The shortest refresh a `max-age` can ask for.
pub(crate) const MIN_REFRESH: Duration = Duration::from_secs(60);
/// The longest refresh a `max-age` can ask for.
pub(crate) const MAX_REFRESH: Duration = Duration::from_secs(3600);
/// A token with an unknown key id fetches the set again at most this often.
pub(crate) const MISS_REFETCH: Duration = Duration::from_secs(60);
/// The longest a fetch may take, connection included.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWKS accepted, in bytes.
pub(crate) const MAX_BYTES: usize = 1 << 20;
/// The most keys a set may hold.
pub(crate) const MAX_KEYS: usize = 100;

/// What a key can verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyType {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyType {
    fn fits(self, algorithm: Algorithm) -> bool {
        match self {
            KeyType::Rsa => matches!(
                algorithm,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            KeyType::P256 => algorithm == Algorithm::ES256,
            KeyType::P384 => algorithm == Algorithm::ES384,
            KeyType::Ed25519 => algorithm == Algorithm::EdDSA,
        }
    }
}

/// One public key of a set.
#[derive(Clone, Debug)]
struct Key {
    kid: Option<String>,
    /// The key's own `alg`, when it names one: then only that one.
    alg: Option<Algorithm>,
    kind: KeyType,
    key: DecodingKey,
}

impl Key {
    fn fits(&self, algorithm: Algorithm) -> bool {
        self.kind.fits(algorithm) && self.alg.is_none_or(|alg| alg == algorithm)
    }
}

/// Why no key was found for a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Miss {
    /// The token names a key id the set does not hold (a fetch may help).
    UnknownKid,
    /// The named key cannot verify the token's algorithm.
    WrongKeyType,
    /// The token names no key, and the set has no single key that fits.
    NoKid,
}

/// The usable public keys of a JWKS.
#[derive(Clone, Debug, Default)]
pub(crate) struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// Parses a JWKS document. Keys the gateway cannot verify with are left
    /// out: encryption keys (`use: enc`), symmetric (`oct`) keys, other
    /// curves and key types. A set without any usable key is an error.
    pub(crate) fn parse(bytes: &[u8]) -> Result<KeySet, String> {
        #[derive(serde::Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc = serde_json::from_slice(bytes)
            .map_err(|e| format!("not a JWKS (a JSON object with `keys`): {e}"))?;
        if doc.keys.len() > MAX_KEYS {
            return Err(format!(
                "{} keys: a JWKS of more than {MAX_KEYS} keys is refused",
                doc.keys.len()
            ));
        }
        let keys: Vec<Key> = doc
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| usable(&jwk))
            .collect();
        if keys.is_empty() {
            return Err(
                "no public signing key in it (RSA, EC P-256/P-384 or Ed25519; symmetric `oct` keys are never used)"
                    .into(),
            );
        }
        Ok(KeySet { keys })
    }

    /// The key to verify a token of `algorithm` that names `kid`.
    pub(crate) fn find(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<&DecodingKey, Miss> {
        match kid {
            Some(kid) => {
                let mut named = self
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .peekable();
                if named.peek().is_none() {
                    return Err(Miss::UnknownKid);
                }
                named
                    .find(|k| k.fits(algorithm))
                    .map(|k| &k.key)
                    .ok_or(Miss::WrongKeyType)
            }
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.fits(algorithm));
                match (fitting.next(), fitting.next()) {
                    (Some(only), None) => Ok(&only.key),
                    _ => Err(Miss::NoKid),
                }
            }
        }
    }

    /// Whether some key can verify one of `algorithms`.
    pub(crate) fn fits_any(&self, algorithms: &[Algorithm]) -> bool {
        self.keys
            .iter()
            .any(|k| algorithms.iter().any(|&alg| k.fits(alg)))
    }

    /// How many usable keys it holds.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

/// The key of a JWK, if the gateway can verify with it.
fn usable(jwk: &Jwk) -> Option<Key> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyType::Rsa,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => KeyType::P256,
            EllipticCurve::P384 => KeyType::P384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => KeyType::Ed25519,
            _ => return None,
        },
        // `oct` keys are secrets: never published, never used here.
        _ => return None,
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        // A key for another algorithm (RSA-OAEP, an unknown one) signs nothing here.
        Some(alg) => Some(Algorithm::from_str(&alg.to_string()).ok()?),
    };
    if alg.is_some_and(|alg| !kind.fits(alg)) {
        return None;
    }
    Some(Key {
        kid: jwk.common.key_id.clone(),
        alg,
        kind,
        key: DecodingKey::from_jwk(jwk).ok()?,
    })
}

/// A scheme's keys: fixed (read from `jwks_file` with the config), or
/// fetched from `jwks_url` and kept fresh.
#[derive(Debug)]
pub(crate) struct Jwks {
    current: ArcSwapOption<KeySet>,
    remote: Option<Remote>,
}

/// Where a remote set comes from, and the state of its fetching.
#[derive(Debug)]
struct Remote {
    /// The scheme's name, for logs and metrics.
    scheme: String,
    url: http::Uri,
    client: Arc<ClientSettings>,
    /// Asks the background task to fetch now.
    wake: Arc<Notify>,
    /// Counts finished fetches (good or not): waiting requests watch it.
    fetched: tokio::sync::watch::Sender<u64>,
    /// When a key-id miss last asked for a fetch.
    last_miss: Mutex<Option<Instant>>,
    started: AtomicBool,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Jwks {
    /// Keys read from a file.
    pub(crate) fn fixed(keys: KeySet) -> Jwks {
        Jwks {
            current: ArcSwapOption::from_pointee(keys),
            remote: None,
        }
    }

    /// Keys fetched from `url` (checked: `http` or `https`), with `client`
    /// settings (TLS roots); nothing is fetched before [`Jwks::start`].
    pub(crate) fn remote(scheme: &str, url: http::Uri, client: Arc<ClientSettings>) -> Jwks {
        Jwks {
            current: ArcSwapOption::empty(),
            remote: Some(Remote {
                scheme: scheme.to_owned(),
                url,
                client,
                wake: Arc::new(Notify::new()),
                fetched: tokio::sync::watch::Sender::new(0),
                last_miss: Mutex::new(None),
                started: AtomicBool::new(false),
                task: Mutex::new(None),
            }),
        }
    }

    /// Starts fetching a remote set in the background on the current
    /// runtime (once; a no-op for a file, or outside a runtime). The task
    /// ends when the keys are dropped (a reload that changed the scheme).
    pub(crate) fn start(self: &Arc<Self>) {
        let Some(remote) = &self.remote else { return };
        if tokio::runtime::Handle::try_current().is_err()
            || remote.started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let task = tokio::spawn(refresh(Arc::downgrade(self), remote.wake.clone()));
        *remote.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
    }

    /// The keys now, if there are any yet.
    pub(crate) fn current(&self) -> Option<Arc<KeySet>> {
        self.current.load_full()
    }

    /// The keys, after a fetch if the set is not there yet or does not
    /// hold `kid` (and no key-id miss asked for one in the last
    /// [`MISS_REFETCH`]); waits for that fetch at most `wait`.
    pub(crate) async fn refreshed(&self, kid: Option<&str>, wait: Duration) -> Option<Arc<KeySet>> {
        let current = self.current();
        let Some(remote) = &self.remote else {
            return current;
        };
        let mut fetched = remote.fetched.subscribe();
        match &current {
            // Not fetched yet: the background task is at it.
            None => {}
            Some(_) if kid.is_none() => return current,
            Some(_) => {
                let now = Instant::now();
                let mut last = remote.last_miss.lock().unwrap_or_else(|e| e.into_inner());
                if last.is_some_and(|at| now.duration_since(at) < MISS_REFETCH) {
                    return current;
                }
                *last = Some(now);
                drop(last);
                tracing::info!(
                    scheme = remote.scheme,
                    "a token names a key the set lacks: fetching the JWKS again"
                );
                remote.wake.notify_one();
            }
        }
        let _ = tokio::time::timeout(wait, fetched.changed()).await;
        self.current()
    }

    /// Sets the keys (a fetch's result).
    fn store(&self, keys: KeySet) {
        self.current.store(Some(Arc::new(keys)));
    }
}

impl Drop for Jwks {
    fn drop(&mut self) {
        if let Some(remote) = &self.remote {
            if let Some(task) = remote.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
                task.abort();
            }
        }
    }
}

/// Fetches the set, then again when it is due or asked for, for as long as
/// the keys live.
async fn refresh(jwks: Weak<Jwks>, wake: Arc<Notify>) {
    let client = HttpClient::new();
    let mut failures: u32 = 0;
    loop {
        let next = {
            let Some(live) = jwks.upgrade() else { return };
            let Some(remote) = &live.remote else { return };
            let next = match fetch(&client, remote).await {
                Ok((keys, max_age)) => {
                    if failures > 0 || live.current().is_none() {
                        tracing::info!(scheme = remote.scheme, keys = keys.len(), "JWKS fetched");
                    }
                    failures = 0;
                    live.store(keys);
                    metrics::counter!(crate::metrics::JWKS_FETCHES, "scheme" => remote.scheme.clone(), "outcome" => "ok").increment(1);
                    max_age.map_or(REFRESH, |age| age.clamp(MIN_REFRESH, MAX_REFRESH))
                }
                Err(message) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(
                        scheme = remote.scheme,
                        url = %remote.url,
                        error = message,
                        kept = live.current().is_some(),
                        "JWKS fetch failed; the last good keys (if any) stay in use"
                    );
                    metrics::counter!(crate::metrics::JWKS_FETCHES, "scheme" => remote.scheme.clone(), "outcome" => "error").increment(1);
                    retry_after(failures)
                }
            };
            remote.fetched.send_modify(|n| *n += 1);
            next
        };
        tokio::select! {
            () = tokio::time::sleep(next) => {}
            () = wake.notified() => {}
        }
    }
}

/// Where a fetch of `url` connects: the first address its host resolves to
/// now (through the system resolver, like an upstream's names), verified as
/// that host.
async fn dial(url: &http::Uri) -> Result<Arc<Dial>, String> {
    let host = url.host().ok_or("the URL has no host")?;
    let port = url
        .port_u16()
        .unwrap_or(if url.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addr = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))?;
    Ok(Arc::new(Dial::new(addr, host)))
}

/// How long after the `failures`-th failure in a row to try again: 1 s,
/// doubling, at most a minute.
fn retry_after(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(MIN_REFRESH)
}

/// One fetch of the set, within [`FETCH_TIMEOUT`] and [`MAX_BYTES`], with
/// the `max-age` its answer gives.
async fn fetch(client: &HttpClient, remote: &Remote) -> Result<(KeySet, Option<Duration>), String> {
    let request = http::Request::get(remote.url.clone())
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::ACCEPT_ENCODING, "identity")
        .body(crate::client::Body::empty())
        .map_err(|e| e.to_string())?;
    let fetched = tokio::time::timeout(FETCH_TIMEOUT, async {
        let dial = dial(&remote.url).await?;
        let response = client
            .send(&remote.client, &dial, request)
            .await
            .map_err(|e| e.message)?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let max_age = max_age(response.headers());
        let body = Limited::new(response.into_body(), MAX_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        Ok((body, max_age))
    })
    .await
    .map_err(|_| format!("no answer within {FETCH_TIMEOUT:?}"))??;
    let (body, max_age) = fetched;
    Ok((KeySet::parse(&body)?, max_age))
}

/// `cache-control: max-age=N`, if the answer gives one.
fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|directive| {
            let (name, value) = directive.trim().split_once('=')?;
            name.eq_ignore_ascii_case("max-age")
                .then(|| value.trim().trim_matches('"').parse().ok())
                .flatten()
                .map(Duration::from_secs)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanout_mock::jwt::{SigningKey, jwks};
    use serde_json::json;

    #[test]
    fn only_public_signing_keys_of_known_curves_are_kept() {
        let ec = SigningKey::es256("ec").unwrap();
        let mut enc = ec.jwk();
        enc["use"] = json!("enc");
        enc["kid"] = json!("enc");
        let mut wrong_alg = ec.jwk();
        wrong_alg["alg"] = json!("RS256");
        wrong_alg["kid"] = json!("wrong");
        let doc = json!({ "keys": [
            ec.jwk(), enc, wrong_alg,
            { "kty": "oct", "kid": "secret", "k": "c2VjcmV0" },
            { "kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA" },
            { "kty": "weird" },
            "not even an object",
        ]});
        let set = KeySet::parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.find(Some("ec"), Algorithm::ES256).is_ok());
        assert_eq!(
            set.find(Some("ec"), Algorithm::RS256).err(),
            Some(Miss::WrongKeyType)
        );
        assert_eq!(
            set.find(Some("secret"), Algorithm::HS256).err(),
            Some(Miss::UnknownKid)
        );
        assert_eq!(
            set.find(Some("enc"), Algorithm::ES256).err(),
            Some(Miss::UnknownKid)
        );
        assert!(
            set.find(None, Algorithm::ES256).is_ok(),
            "one key fits: no kid needed"
        );

        let two = SigningKey::es256("ec2").unwrap();
        let set = KeySet::parse(jwks(&[&ec, &two]).to_string().as_bytes()).unwrap();
        assert_eq!(set.find(None, Algorithm::ES256).err(), Some(Miss::NoKid));

        for bad in [
            r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#,
            r#"{"keys":[]}"#,
            r#"[1,2]"#,
            "",
        ] {
            assert!(KeySet::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        let many = json!({ "keys": vec![ec.jwk(); MAX_KEYS + 1] });
        assert!(
            KeySet::parse(many.to_string().as_bytes())
                .unwrap_err()
                .contains("more than")
        );
    }

    /// A remote set whose fetches the test stands in for: a key-id miss
    /// wakes the fetcher at most once a minute, on the paused clock.
    #[tokio::test(start_paused = true)]
    async fn a_key_id_miss_asks_for_a_fetch_at_most_once_a_minute() {
        let ec = SigningKey::es256("ec").unwrap();
        let keys = Jwks::remote(
            "users",
            "http://127.0.0.1:1/jwks".parse().unwrap(),
            Arc::new(ClientSettings::new(None, crate::config::Http2::Never)),
        );
        let remote = keys.remote.as_ref().unwrap();
        let woken = || {
            let wake = remote.wake.clone();
            async move {
                tokio::time::timeout(Duration::ZERO, wake.notified())
                    .await
                    .is_ok()
            }
        };
        // No keys yet: a request waits (at most its bound) for the first fetch.
        let started = Instant::now();
        assert!(
            keys.refreshed(Some("ec"), Duration::from_secs(1))
                .await
                .is_none()
        );
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert!(
            !woken().await,
            "the first fetch is the fetcher's own business"
        );

        keys.store(KeySet::parse(jwks(&[&ec]).to_string().as_bytes()).unwrap());
        // A known kid never asks.
        assert!(keys.refreshed(None, Duration::ZERO).await.is_some());
        assert!(!woken().await);
        // A miss asks once; the next ones within the minute do not.
        keys.refreshed(Some("new"), Duration::ZERO).await;
        assert!(woken().await);
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(19)).await;
            keys.refreshed(Some("other"), Duration::ZERO).await;
            assert!(!woken().await, "within the minute");
        }
        tokio::time::advance(Duration::from_secs(3)).await;
        keys.refreshed(Some("other"), Duration::ZERO).await;
        assert!(woken().await, "a minute after the last one");

        // A fetch that finishes while a request waits ends its wait.
        tokio::time::advance(MISS_REFETCH).await;
        let waiting = keys.refreshed(Some("late"), Duration::from_secs(1));
        let finish = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            remote.fetched.send_modify(|n| *n += 1);
        };
        let started = Instant::now();
        let (got, ()) = tokio::join!(waiting, finish);
        assert!(got.is_some());
        assert_eq!(started.elapsed(), Duration::from_millis(10));
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CACHE_CONTROL,
            "public, max-age=600, must-revalidate".parse().unwrap(),
        );
        assert_eq!(max_age(&headers), Some(Duration::from_secs(600)));
        headers.insert(http::header::CACHE_CONTROL, "no-store".parse().unwrap());
        assert_eq!(max_age(&headers), None);
    }

    #[test]
    fn failed_fetches_are_retried_sooner_then_at_most_each_minute() {
        let waits: Vec<u64> = (1..=10).map(|n| retry_after(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
    }
}
