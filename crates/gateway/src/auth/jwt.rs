//! Bearer tokens: a JWT (RFC 7519) signed by one of the issuer's keys, for
//! one of the configured audiences, within its time (with leeway), with an
//! accepted algorithm. `jsonwebtoken` does the checks; this file picks the
//! key and says in words what was wrong.

use std::{str::FromStr, sync::Arc, time::Duration};

use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde_json::Value;

use super::{
    Claims,
    jwks::{Jwks, KeySet, Miss},
    verified::Verified,
};

/// The longest token accepted, in bytes: a bigger one is not parsed.
pub(crate) const MAX_TOKEN: usize = 16 * 1024;

/// Why a token was refused. The words (`describe`) never quote the token,
/// a key, or anything else the client sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// Not three base64url parts, bad JSON, too long, `alg: none`, an
    /// unknown critical header.
    Malformed,
    /// Signed with an algorithm the scheme does not accept.
    Algorithm(Algorithm),
    /// Names a key the issuer's set does not hold (after a fetch).
    UnknownKey,
    /// Names no key, and the set has no single key for its algorithm.
    NoKey,
    /// Its key cannot check this algorithm.
    KeyType,
    /// The signature does not verify.
    Signature,
    /// `exp` has passed (beyond the leeway).
    Expired,
    /// `nbf` is still ahead (beyond the leeway).
    NotYetValid,
    /// Another issuer.
    Issuer,
    /// None of the accepted audiences.
    Audience,
    /// A claim it must have is missing or of the wrong type.
    Claim(String),
    /// The issuer's keys have not been fetched (yet): the gateway cannot
    /// tell, so this is the gateway's problem (503), not the client's.
    KeysUnavailable,
}

impl TokenError {
    /// What was wrong, for the client (RFC 6750 `error_description`:
    /// printable ASCII without quotes).
    pub(crate) fn describe(&self) -> String {
        match self {
            TokenError::Malformed => "the token is not a well-formed signed JWT".into(),
            TokenError::Algorithm(alg) => format!("the token's algorithm {alg:?} is not accepted"),
            TokenError::UnknownKey => "the token names a key the issuer does not publish".into(),
            TokenError::NoKey => {
                "the token names no key (kid) and more than one could sign it".into()
            }
            TokenError::KeyType => "the token's key cannot sign with its algorithm".into(),
            TokenError::Signature => "the token's signature does not verify".into(),
            TokenError::Expired => "the token has expired".into(),
            TokenError::NotYetValid => "the token is not valid yet (nbf)".into(),
            TokenError::Issuer => "the token's issuer is not accepted".into(),
            TokenError::Audience => "the token is not for this audience".into(),
            TokenError::Claim(name) => {
                format!("the token's `{name}` claim is missing or malformed")
            }
            TokenError::KeysUnavailable => "the issuer's keys are not available yet".into(),
        }
    }

    /// A short, fixed label for metrics.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::Algorithm(_) => "algorithm",
            TokenError::UnknownKey | TokenError::NoKey | TokenError::KeyType => "unknown_key",
            TokenError::Signature => "signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::Issuer => "issuer",
            TokenError::Audience => "audience",
            TokenError::Claim(_) => "claims",
            TokenError::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// The algorithms a scheme may accept: every asymmetric JWS algorithm
/// `jsonwebtoken` knows.
pub(crate) const ACCEPTABLE: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Parses an algorithm a scheme may accept, or says why not.
pub(crate) fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    if name.eq_ignore_ascii_case("none") {
        return Err("`none` is an unsigned token: never accepted".into());
    }
    if name.to_ascii_uppercase().starts_with("HS") {
        return Err(format!(
            "{name} is HMAC, a shared secret: checked against a JWKS's public key it is the key-confusion attack, so it is never accepted"
        ));
    }
    match Algorithm::from_str(name) {
        Ok(alg) if ACCEPTABLE.contains(&name) => Ok(alg),
        _ => Err(format!(
            "unknown algorithm `{name}` (accepted: {})",
            ACCEPTABLE.join(", ")
        )),
    }
}

/// One issuer's tokens.
#[derive(Debug)]
pub(crate) struct JwtScheme {
    pub(crate) keys: Arc<Jwks>,
    issuer: String,
    /// One validation per accepted algorithm (`jsonwebtoken` wants all the
    /// algorithms of one to share the key's family).
    validations: Vec<(Algorithm, Validation)>,
    leeway: u64,
    /// Tokens verified lately.
    verified: Verified,
}

impl JwtScheme {
    /// A scheme for tokens of `issuer`, for any of `audience`, signed with
    /// one of `algorithms` by a key of `keys`, with `leeway` on `exp`/`nbf`.
    pub(crate) fn new(
        keys: Arc<Jwks>,
        issuer: &str,
        audience: &[String],
        algorithms: &[Algorithm],
        leeway: Duration,
    ) -> JwtScheme {
        let validations = algorithms
            .iter()
            .map(|&alg| {
                let mut v = Validation::new(alg);
                v.leeway = leeway.as_secs();
                v.validate_exp = true;
                v.validate_nbf = true;
                v.validate_aud = true;
                v.set_issuer(&[issuer]);
                v.set_audience(audience);
                v.set_required_spec_claims(&["exp", "iss", "aud"]);
                (alg, v)
            })
            .collect();
        JwtScheme {
            keys,
            issuer: issuer.to_owned(),
            validations,
            leeway: leeway.as_secs(),
            verified: Verified::default(),
        }
    }

    /// Verifies `token`, fetching the issuer's keys again (within `wait`)
    /// if it names one the set lacks.
    pub(crate) async fn verify(
        &self,
        token: &str,
        wait: Duration,
    ) -> Result<Arc<Claims>, TokenError> {
        let now = jsonwebtoken::get_current_timestamp();
        let mut keys = self.keys.current();
        if let Some(claims) = keys.as_ref().and_then(|k| self.verified.get(token, k, now)) {
            return Ok(claims);
        }
        let (alg, kid) = self.header(token)?;
        let mut verified = self.verify_with(token, alg, kid.as_deref(), keys.as_deref());
        if let Err(TokenError::UnknownKey | TokenError::KeysUnavailable) = verified {
            // Another issuer's token is not a reason to fetch this one's keys.
            if keys.is_some() && !self.claims_issuer(token) {
                return Err(TokenError::Issuer);
            }
            keys = self.keys.refreshed(kid.as_deref(), wait).await;
            verified = self.verify_with(token, alg, kid.as_deref(), keys.as_deref());
        }
        let claims = Arc::new(verified?);
        if let (Some(keys), Some(exp)) = (keys, claims.get("exp").and_then(Value::as_u64)) {
            self.verified
                .put(token, keys, claims.clone(), exp.saturating_add(self.leeway));
        }
        Ok(claims)
    }

    /// Verifies `token` with `keys` only (no fetch).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn verify_now(&self, token: &str, keys: &KeySet) -> Result<Claims, TokenError> {
        let (alg, kid) = self.header(token)?;
        self.verify_with(token, alg, kid.as_deref(), Some(keys))
    }

    /// The token's accepted algorithm and key id.
    fn header(&self, token: &str) -> Result<(Algorithm, Option<String>), TokenError> {
        if token.len() > MAX_TOKEN {
            return Err(TokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if !self.validations.iter().any(|(alg, _)| *alg == header.alg) {
            return Err(TokenError::Algorithm(header.alg));
        }
        Ok((header.alg, header.kid))
    }

    fn verify_with(
        &self,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
        keys: Option<&KeySet>,
    ) -> Result<Claims, TokenError> {
        let keys = keys.ok_or(TokenError::KeysUnavailable)?;
        let key = keys.find(kid, alg).map_err(|miss| match miss {
            Miss::UnknownKid => TokenError::UnknownKey,
            Miss::WrongKeyType => TokenError::KeyType,
            Miss::NoKid => TokenError::NoKey,
        })?;
        let validation = self
            .validations
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, v)| v)
            .ok_or(TokenError::Algorithm(alg))?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map(|data| data.claims)
            .map_err(|e| match e.into_kind() {
                ErrorKind::InvalidSignature => TokenError::Signature,
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidIssuer => TokenError::Issuer,
                ErrorKind::InvalidAudience => TokenError::Audience,
                ErrorKind::InvalidAlgorithm => TokenError::KeyType,
                ErrorKind::MissingRequiredClaim(name) | ErrorKind::InvalidClaimFormat(name) => {
                    TokenError::Claim(name)
                }
                _ => TokenError::Malformed,
            })?;
        // `jsonwebtoken` takes an array of issuers too; RFC 7519 §4.1.1 says
        // one string, and a backend reading `iss` expects one.
        if !claims.get("iss").is_some_and(Value::is_string) {
            return Err(TokenError::Claim("iss".into()));
        }
        // So is `sub` (§4.1.2), when there is one.
        if claims.get("sub").is_some_and(|sub| !sub.is_string()) {
            return Err(TokenError::Claim("sub".into()));
        }
        Ok(claims)
    }

    /// Whether the (unverified) token says it is from this scheme's issuer.
    fn claims_issuer(&self, token: &str) -> bool {
        #[derive(serde::Deserialize)]
        struct Iss {
            iss: Option<Value>,
        }
        jsonwebtoken::dangerous::insecure_decode_claims::<Iss>(token)
            .is_ok_and(|c| c.iss.as_ref().and_then(Value::as_str) == Some(&self.issuer))
    }
}

/// Whether `claims` grant every scope of `wanted`: from `scope` (a
/// space-separated string, RFC 8693) and `scp` (a string or an array of
/// strings, as Azure AD and Okta write it).
pub(crate) fn grants(claims: &Claims, wanted: &[String]) -> bool {
    let mut granted: Vec<&str> = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => granted.extend(s.split_ascii_whitespace()),
            Some(Value::Array(items)) => granted.extend(items.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    wanted.iter().all(|w| granted.contains(&w.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Claims {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn scopes_come_from_scope_or_scp() {
        let want = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let c = claims(json!({ "scope": "profile:read  orders:write" }));
        assert!(grants(&c, &want(&["profile:read"])));
        assert!(grants(&c, &want(&["orders:write", "profile:read"])));
        assert!(!grants(&c, &want(&["profile:read", "admin"])));
        assert!(!grants(&c, &want(&["profile"])), "no prefix match");
        let c = claims(json!({ "scp": ["profile:read", "orders:write"] }));
        assert!(grants(&c, &want(&["profile:read", "orders:write"])));
        let c = claims(json!({ "scp": "profile:read" }));
        assert!(grants(&c, &want(&["profile:read"])));
        let c = claims(json!({ "scope": 7, "scp": [1, null] }));
        assert!(!grants(&c, &want(&["7"])));
        assert!(grants(&c, &[]), "nothing wanted, nothing needed");
    }

    /// The checks in-process, with keys made here: what passes and why the
    /// rest does not.
    #[test]
    fn a_token_passes_only_with_the_right_key_issuer_audience_and_time() {
        use fanout_mock::jwt::{SigningKey, hs256, jwks, unsigned};
        let ec = SigningKey::es256("ec").unwrap();
        let other = SigningKey::es256("ec").unwrap();
        assert!(super::super::install_crypto());
        let set = KeySet::parse(jwks(&[&ec]).to_string().as_bytes()).unwrap();
        let scheme = JwtScheme::new(
            Arc::new(super::super::jwks::Jwks::fixed(set.clone())),
            "iss",
            &["api".to_owned()],
            &[Algorithm::ES256],
            Duration::from_secs(30),
        );
        let now = jsonwebtoken::get_current_timestamp();
        let base = json!({ "iss": "iss", "aud": "api", "exp": now + 60, "sub": "ada" });
        let with = |k: &str, v: Value| {
            let mut c = base.clone();
            c[k] = v;
            c
        };
        let verify = |token: String| scheme.verify_now(&token, &set);
        assert_eq!(verify(ec.sign(&base)).unwrap()["sub"], "ada");
        assert!(
            verify(ec.sign(&with("exp", json!(now - 10)))).is_ok(),
            "within the leeway"
        );
        assert_eq!(
            verify(ec.sign(&with("exp", json!(now - 40)))),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(ec.sign(&with("nbf", json!(now + 40)))),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(
            verify(ec.sign(&with("exp", json!("soon")))),
            Err(TokenError::Claim("exp".into()))
        );
        assert_eq!(
            verify(ec.sign(&with("iss", json!("x")))),
            Err(TokenError::Issuer)
        );
        assert_eq!(
            verify(ec.sign(&with("iss", json!(["iss"])))),
            Err(TokenError::Claim("iss".into()))
        );
        assert_eq!(
            verify(ec.sign(&with("aud", json!("x")))),
            Err(TokenError::Audience)
        );
        assert_eq!(verify(other.sign(&base)), Err(TokenError::Signature));
        assert_eq!(verify(unsigned(&base)), Err(TokenError::Malformed));
        assert_eq!(
            verify(hs256(ec.public_pem().as_bytes(), Some("ec"), &base)),
            Err(TokenError::Algorithm(Algorithm::HS256))
        );
        assert_eq!(
            verify(ec.sign_with_header(
                &json!({ "alg": "ES256", "kid": "ec", "crit": ["x"], "x": 1 }),
                &base
            )),
            Err(TokenError::Malformed),
            "an unknown critical extension"
        );
        assert_eq!(
            verify(ec.sign_with_header(&json!({ "alg": "ES256", "kid": "nope" }), &base)),
            Err(TokenError::UnknownKey)
        );
        assert!(
            verify(ec.sign_with_header(&json!({ "alg": "ES256" }), &base)).is_ok(),
            "no kid, one key"
        );
    }

    #[test]
    fn none_and_hmac_are_never_accepted() {
        assert!(parse_algorithm("none").unwrap_err().contains("unsigned"));
        assert!(parse_algorithm("NONE").is_err());
        for hs in ["HS256", "HS384", "HS512", "hs256"] {
            assert!(
                parse_algorithm(hs).unwrap_err().contains("key-confusion"),
                "{hs}"
            );
        }
        assert!(
            parse_algorithm("RS1")
                .unwrap_err()
                .contains("accepted: RS256")
        );
        for good in ACCEPTABLE {
            assert!(parse_algorithm(good).is_ok(), "{good}");
        }
    }
}
