//! Authentication at the edge (product.md §2.8): the named schemes of the
//! config's `auth` map (a JWT issuer [`jwt`] with its keys [`jwks`], or a
//! set of API keys [`api_key`]), and what an endpoint requires of a request
//! before any backend is called: one of its schemes accepting, the scopes
//! it names, and the claims it passes on as headers.
//!
//! Statuses: no or bad credentials `401` with `www-authenticate` (RFC 6750
//! `Bearer` for JWT schemes, `ApiKey header="…"` for API-key schemes); a
//! valid token without a needed scope `403`; an issuer whose keys could not
//! be fetched yet `503`. Every message says what was wrong without quoting
//! a token or a key.

pub(crate) mod api_key;
mod crypto;
pub(crate) mod jwks;
pub(crate) mod jwt;
mod verified;

use std::{borrow::Cow, sync::Arc, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde_json::Value;

use crate::shape::FieldPath;

pub(crate) use self::{api_key::ApiKeys, jwt::JwtScheme};

/// A verified token's claims.
pub(crate) type Claims = serde_json::Map<String, Value>;

/// One named scheme of the config's `auth` map, compiled.
#[derive(Debug)]
pub(crate) struct Scheme {
    /// Its name in `auth`.
    pub(crate) name: String,
    /// How it checks a request.
    pub(crate) kind: Kind,
    /// The configuration it was built from, and a digest of the files it
    /// read: a reload keeps a scheme (and the keys it fetched) when both
    /// are the same.
    pub(crate) config: crate::config::AuthScheme,
    pub(crate) files: u64,
}

/// How a scheme checks a request.
#[derive(Debug)]
pub(crate) enum Kind {
    /// A bearer token.
    Jwt(JwtScheme),
    /// A key in a header.
    ApiKey(ApiKeys),
}

impl Scheme {
    /// Starts what it does in the background (fetching a remote JWKS).
    pub(crate) fn start(&self) {
        if let Kind::Jwt(jwt) = &self.kind {
            jwt.keys.start();
        }
    }

    pub(crate) fn is_jwt(&self) -> bool {
        matches!(self.kind, Kind::Jwt(_))
    }
}

/// Makes the gateway's `ring` provider the one `jsonwebtoken` uses.
pub(crate) fn install_crypto() -> bool {
    crypto::install()
}

/// What an endpoint requires of a request.
#[derive(Debug)]
pub(crate) struct EndpointAuth {
    /// Any one of them accepting is enough; tried in this order.
    pub(crate) schemes: Vec<Arc<Scheme>>,
    /// Scopes a token must grant, all of them.
    pub(crate) scopes: Vec<String>,
    /// Headers set from claims on every backend call (and never taken from
    /// the client).
    pub(crate) claim_headers: Vec<(HeaderName, FieldPath)>,
}

/// Why a request is refused, decided before any backend call.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    /// For the JSON body.
    pub(crate) message: String,
    /// `www-authenticate` values.
    pub(crate) challenges: Vec<HeaderValue>,
    /// A short fixed label for metrics (`missing`, `expired`, `scope`…).
    pub(crate) reason: &'static str,
}

/// What one scheme made of a request's credentials.
enum Verdict {
    Token(jwt::TokenError),
    Key,
}

impl EndpointAuth {
    /// Checks the request's credentials: the claims of the token a JWT
    /// scheme accepted (`None` when an API key did), or why not. A token
    /// naming a key the issuer's set lacks may wait for a fetch of the set,
    /// at most `wait`.
    pub(crate) async fn check(
        &self,
        headers: &HeaderMap,
        wait: Duration,
    ) -> Result<Option<Arc<Claims>>, Refusal> {
        let bearer = bearer(headers);
        let mut refused: Option<Verdict> = None;
        for scheme in &self.schemes {
            match &scheme.kind {
                Kind::Jwt(jwt) => {
                    let Some(token) = bearer else { continue };
                    match jwt.verify(token, wait).await {
                        Ok(claims) => return self.allow(claims),
                        // An issuer mismatch says least: another scheme's
                        // refusal of the same token says more.
                        Err(e) => {
                            if !matches!(refused, Some(Verdict::Token(ref old)) if *old != jwt::TokenError::Issuer)
                            {
                                refused = Some(Verdict::Token(e));
                            }
                        }
                    }
                }
                Kind::ApiKey(keys) => match keys.check(headers) {
                    api_key::Presented::Absent => {}
                    api_key::Presented::Accepted => return Ok(None),
                    api_key::Presented::Refused => {
                        refused.get_or_insert(Verdict::Key);
                    }
                },
            }
        }
        Err(self.refuse(refused))
    }

    /// A token accepted: it must grant the scopes.
    fn allow(&self, claims: Arc<Claims>) -> Result<Option<Arc<Claims>>, Refusal> {
        if jwt::grants(&claims, &self.scopes) {
            return Ok(Some(claims));
        }
        let scope = self.scopes.join(" ");
        let description = "the token does not grant every scope this endpoint needs";
        Err(Refusal {
            status: StatusCode::FORBIDDEN,
            message: format!("{description}: {scope}"),
            challenges: header_value(&format!(
                "Bearer error=\"insufficient_scope\", error_description=\"{description}\", scope=\"{scope}\""
            ))
            .into_iter()
            .collect(),
            reason: "scope",
        })
    }

    fn refuse(&self, verdict: Option<Verdict>) -> Refusal {
        let (status, message, reason, token_error) = match &verdict {
            None => (
                StatusCode::UNAUTHORIZED,
                format!("this endpoint needs {}", self.wanted()),
                "missing",
                None,
            ),
            Some(Verdict::Key) => (
                StatusCode::UNAUTHORIZED,
                "the API key is not an accepted one".to_owned(),
                "api_key",
                None,
            ),
            Some(Verdict::Token(jwt::TokenError::KeysUnavailable)) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the token cannot be checked now: the issuer's keys have not been fetched yet"
                    .to_owned(),
                "keys_unavailable",
                None,
            ),
            Some(Verdict::Token(e)) => {
                (StatusCode::UNAUTHORIZED, e.describe(), e.reason(), Some(e))
            }
        };
        let mut challenges = Vec::new();
        if status == StatusCode::UNAUTHORIZED {
            if self.schemes.iter().any(|s| s.is_jwt()) {
                let bearer = match token_error {
                    Some(e) => format!(
                        "Bearer error=\"invalid_token\", error_description=\"{}\"",
                        e.describe()
                    ),
                    None => "Bearer".to_owned(),
                };
                challenges.extend(header_value(&bearer));
            }
            for scheme in &self.schemes {
                if let Kind::ApiKey(keys) = &scheme.kind {
                    challenges.extend(header_value(&format!("ApiKey header=\"{}\"", keys.header)));
                }
            }
        }
        Refusal {
            status,
            message,
            challenges,
            reason,
        }
    }

    /// The credentials the endpoint takes, in words.
    fn wanted(&self) -> String {
        let mut ways: Vec<String> = Vec::new();
        if self.schemes.iter().any(|s| s.is_jwt()) {
            ways.push("a bearer token (authorization: Bearer …)".into());
        }
        for scheme in &self.schemes {
            if let Kind::ApiKey(keys) = &scheme.kind {
                ways.push(format!("an API key in `{}`", keys.header));
            }
        }
        ways.dedup();
        ways.join(" or ")
    }

    /// Sets the claim headers on `headers` (what the backends get),
    /// replacing any value of the same name; a claim the token lacks (or
    /// an API key's request, which has none) leaves the header out.
    pub(crate) fn set_claim_headers(&self, claims: Option<&Claims>, headers: &mut HeaderMap) {
        for (name, path) in &self.claim_headers {
            headers.remove(name);
            let value = claims
                .and_then(|c| claim(c, path))
                .and_then(text)
                .and_then(|v| HeaderValue::from_str(&v).ok());
            if let Some(value) = value {
                headers.insert(name.clone(), value);
            }
        }
    }
}

/// The token of `authorization: Bearer <token>` (RFC 6750 §2.1; the scheme
/// name in any case), if there is exactly one such header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn header_value(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(text).ok()
}

/// The claim at `path` (top-level name or a dot path into objects).
pub(crate) fn claim<'c>(claims: &'c Claims, path: &FieldPath) -> Option<&'c Value> {
    let (first, rest) = path.segments().split_first()?;
    let mut value = claims.get(first)?;
    for segment in rest {
        value = value.as_object()?.get(segment)?;
    }
    Some(value)
}

/// A claim as text: a string as it is, a number or a boolean as its JSON
/// text; other values (objects, arrays, null) have none.
pub(crate) fn text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Owned(b.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_token_is_taken_from_one_authorization_header() {
        let with = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(header::AUTHORIZATION, v.parse().unwrap());
            }
            bearer(&headers).map(str::to_owned)
        };
        assert_eq!(with(&["Bearer abc.def.ghi"]), Some("abc.def.ghi".into()));
        assert_eq!(with(&["bearer abc"]), Some("abc".into()));
        assert_eq!(with(&["Basic dXNlcjpwYXNz"]), None);
        assert_eq!(with(&["Bearer "]), None);
        assert_eq!(with(&["Bearer a", "Bearer b"]), None, "two tokens: none");
        assert_eq!(with(&[]), None);
    }

    #[test]
    fn claims_are_found_by_dot_paths_and_written_as_text() {
        let claims: Claims = serde_json::from_str(
            r#"{"sub":"ada","n":42,"ok":true,"org":{"id":"o1"},"roles":["a"]}"#,
        )
        .unwrap();
        let at = |p: &str| claim(&claims, &FieldPath::parse(p).unwrap()).and_then(text);
        assert_eq!(at("sub").as_deref(), Some("ada"));
        assert_eq!(at("n").as_deref(), Some("42"));
        assert_eq!(at("ok").as_deref(), Some("true"));
        assert_eq!(at("org.id").as_deref(), Some("o1"));
        assert_eq!(at("org").as_deref(), None);
        assert_eq!(at("roles").as_deref(), None);
        assert_eq!(at("nope").as_deref(), None);
    }
}
