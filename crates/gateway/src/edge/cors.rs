//! Cross-origin requests from browsers (CORS, the Fetch standard §3.2):
//! preflights answered by the gateway itself, and the headers that let a
//! page from an allowed origin read an answer.
//!
//! Written here rather than with tower-http's `CorsLayer`, which answers
//! every `OPTIONS` request as a preflight, with `200` and its
//! `allow-methods`/`allow-headers`/`allow-credentials` headers whatever the
//! origin, and knows nothing of the gateway's routes. The contract here is
//! stricter: a preflight is answered only for a path and method an endpoint
//! serves, an origin, method or header that is not allowed gets a `403` with
//! no CORS header at all (the browser then blocks the call, and the log says
//! why), and the policy lives in the plan, so a reload changes it for
//! connections already open too.
//!
//! The policy is plain data, compiled once; its decisions are functions of
//! the request's headers.

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::config::Method;

/// The `Origin` values allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AllowedOrigins {
    /// Any origin (`origins: ["*"]`); never with credentials.
    Any,
    /// These origins, lower-case, as browsers serialize them.
    List(Vec<String>),
}

/// A compiled `server.cors`.
#[derive(Debug, Clone)]
pub(crate) struct CorsPolicy {
    origins: AllowedOrigins,
    /// The methods a preflight may ask for; `None`: any an endpoint serves.
    methods: Option<Vec<Method>>,
    /// Request headers a preflight may ask for; `None`: any (`headers: ["*"]`).
    headers: Option<Vec<HeaderName>>,
    credentials: bool,
    /// Precomputed header values.
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
}

/// What a request is, for CORS.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CorsRequest {
    /// No `Origin`: not a browser's cross-origin call; nothing to do.
    Plain,
    /// `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
    Preflight {
        origin: HeaderValue,
        /// The method asked for, if it is one the gateway knows.
        method: Option<Method>,
        requested: HeaderValue,
        headers: Option<HeaderValue>,
    },
    /// A cross-origin call itself.
    Actual { origin: HeaderValue },
}

const SAFELISTED: &[&str] = &["accept", "accept-language", "content-language"];

impl CorsPolicy {
    /// A policy; its lists are checked by the compiler (see [`parse_origin`]).
    pub(crate) fn new(
        origins: AllowedOrigins,
        methods: Option<Vec<Method>>,
        headers: Option<Vec<HeaderName>>,
        expose_headers: &[HeaderName],
        credentials: bool,
        max_age: Option<std::time::Duration>,
    ) -> CorsPolicy {
        let join = |names: &mut dyn Iterator<Item = &str>| {
            let joined = names.collect::<Vec<_>>().join(", ");
            (!joined.is_empty()).then(|| HeaderValue::from_str(&joined).ok())?
        };
        CorsPolicy {
            allow_methods: methods
                .as_ref()
                .and_then(|m| join(&mut m.iter().map(|m| m.as_str()))),
            allow_headers: match &headers {
                None => Some(HeaderValue::from_static("*")),
                Some(names) => join(&mut names.iter().map(HeaderName::as_str)),
            },
            expose_headers: join(&mut expose_headers.iter().map(HeaderName::as_str)),
            max_age: max_age.map(|d| HeaderValue::from(d.as_secs())),
            origins,
            methods,
            headers,
            credentials,
        }
    }

    /// Whether responses vary with `Origin` (they do unless every origin
    /// gets the same `*`).
    fn varies(&self) -> bool {
        self.credentials || self.origins != AllowedOrigins::Any
    }

    fn allows_origin(&self, origin: &HeaderValue) -> bool {
        match &self.origins {
            AllowedOrigins::Any => true,
            AllowedOrigins::List(list) => {
                let origin = origin.as_bytes();
                list.iter()
                    .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin))
            }
        }
    }

    /// `access-control-allow-origin` for an allowed origin.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.origins == AllowedOrigins::Any && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// The headers of a `204` answering a preflight, or why it is refused.
    /// `served`: whether an endpoint serves the method asked for on this path.
    pub(crate) fn preflight(
        &self,
        origin: &HeaderValue,
        method: Option<Method>,
        requested: &HeaderValue,
        headers: Option<&HeaderValue>,
        served: bool,
    ) -> Result<HeaderMap, String> {
        if !self.allows_origin(origin) {
            return Err(format!(
                "CORS preflight refused: origin `{}` is not in server.cors.origins",
                String::from_utf8_lossy(origin.as_bytes())
            ));
        }
        let asked = String::from_utf8_lossy(requested.as_bytes());
        let method = match method {
            Some(m) if self.methods.as_ref().is_none_or(|list| list.contains(&m)) => m,
            Some(_) => {
                return Err(format!(
                    "CORS preflight refused: method {asked} is not in server.cors.methods"
                ));
            }
            None => {
                return Err(format!(
                    "CORS preflight refused: method {asked} is not served"
                ));
            }
        };
        if !served {
            return Err(format!(
                "CORS preflight refused: no endpoint serves {} on this path",
                method.as_str()
            ));
        }
        if let (Some(allowed), Some(asked)) = (&self.headers, headers) {
            for name in header_list(asked) {
                let known = SAFELISTED.iter().any(|s| s.eq_ignore_ascii_case(name))
                    || allowed
                        .iter()
                        .any(|a| a.as_str().eq_ignore_ascii_case(name));
                if !known {
                    return Err(format!(
                        "CORS preflight refused: header `{name}` is not in server.cors.headers"
                    ));
                }
            }
        }
        let mut out = HeaderMap::new();
        out.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin(origin),
        );
        out.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods
                .clone()
                .unwrap_or_else(|| HeaderValue::from_static(method.as_str())),
        );
        if let Some(allowed) = &self.allow_headers {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed.clone());
        }
        if self.credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(max_age) = &self.max_age {
            out.insert(header::ACCESS_CONTROL_MAX_AGE, max_age.clone());
        }
        self.vary_preflight(&mut out);
        Ok(out)
    }

    /// The `vary` a preflight's answer (or refusal) carries: it depends on
    /// the origin and on what was asked.
    pub(crate) fn vary_preflight(&self, headers: &mut HeaderMap) {
        headers.insert(
            header::VARY,
            HeaderValue::from_static(
                "origin, access-control-request-method, access-control-request-headers",
            ),
        );
    }

    /// Adds to a response the headers that let a page from `origin` read
    /// it, when the origin is allowed; nothing else for another origin. CORS
    /// headers the answer already carries (a pass-through's upstream, a
    /// backend's `return_headers`) are dropped first: the gateway's policy is
    /// the only one a browser sees.
    pub(crate) fn decorate(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        for name in [
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            header::ACCESS_CONTROL_ALLOW_METHODS,
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            header::ACCESS_CONTROL_MAX_AGE,
        ] {
            headers.remove(name);
        }
        if self.varies() {
            headers.append(header::VARY, HeaderValue::from_static("origin"));
        }
        let Some(origin) = origin.filter(|o| self.allows_origin(o)) else {
            return;
        };
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin(origin),
        );
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose_headers {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

/// What a request is for CORS, from its method and headers.
pub(crate) fn classify(method: &http::Method, headers: &HeaderMap) -> CorsRequest {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return CorsRequest::Plain;
    };
    match headers.get(header::ACCESS_CONTROL_REQUEST_METHOD) {
        Some(requested) if method == http::Method::OPTIONS => CorsRequest::Preflight {
            origin: origin.clone(),
            method: requested.to_str().ok().and_then(Method::parse),
            requested: requested.clone(),
            headers: headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned(),
        },
        _ => CorsRequest::Actual {
            origin: origin.clone(),
        },
    }
}

/// The names in an `access-control-request-headers` value.
fn header_list(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value
        .to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// An origin as configured, checked and lower-cased: `scheme://host[:port]`
/// with `http` or `https`, nothing after the authority.
pub(crate) fn parse_origin(text: &str) -> Result<String, String> {
    if text == "null" {
        return Err(
            "`null` is the origin of sandboxed pages and local files: allowing it would allow any of them"
                .into(),
        );
    }
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("`{text}` is not an origin: write scheme://host[:port]"))?;
    let scheme = uri.scheme_str().unwrap_or("");
    if !matches!(scheme, "http" | "https") {
        return Err(format!(
            "`{text}` is not an origin: it starts with http:// or https://"
        ));
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("`{text}` is not an origin: it has no host"));
    };
    if authority.as_str().contains('@') || authority.host().contains('*') {
        return Err(format!(
            "`{text}` is not an origin: no user name and no wildcard (use `*` alone for any origin)"
        ));
    }
    let rest = &text[text.find(authority.as_str()).unwrap_or(0) + authority.as_str().len()..];
    if !rest.is_empty() {
        let bare = &text[..text.len() - rest.len()];
        return Err(format!(
            "`{text}` is not an origin: an origin has no path, query or trailing slash (`{bare}`)"
        ));
    }
    Ok(text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    fn policy(origins: AllowedOrigins, credentials: bool) -> CorsPolicy {
        CorsPolicy::new(
            origins,
            Some(vec![Method::Get, Method::Post]),
            Some(vec![HeaderName::from_static("authorization")]),
            &[HeaderName::from_static("x-fanout-complete")],
            credentials,
            Some(std::time::Duration::from_secs(600)),
        )
    }

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        assert_eq!(
            parse_origin("https://App.Example.com").unwrap(),
            "https://app.example.com"
        );
        assert_eq!(
            parse_origin("http://127.0.0.1:3000").unwrap(),
            "http://127.0.0.1:3000"
        );
        for bad in [
            "https://app.example.com/",
            "https://app.example.com/path",
            "app.example.com",
            "ftp://app.example.com",
            "https://*.example.com",
            "https://user@app.example.com",
            "null",
            "",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
        assert!(
            parse_origin("https://a.example/")
                .unwrap_err()
                .contains("(`https://a.example`)")
        );
    }

    #[test]
    fn requests_are_told_apart_by_origin_and_the_requested_method() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            classify(&http::Method::OPTIONS, &headers),
            CorsRequest::Plain
        );
        headers.insert(header::ORIGIN, value("https://a.example"));
        assert!(matches!(
            classify(&http::Method::OPTIONS, &headers),
            CorsRequest::Actual { .. }
        ));
        headers.insert(header::ACCESS_CONTROL_REQUEST_METHOD, value("PUT"));
        assert!(matches!(
            classify(&http::Method::OPTIONS, &headers),
            CorsRequest::Preflight {
                method: Some(Method::Put),
                ..
            }
        ));
        assert!(matches!(
            classify(&http::Method::GET, &headers),
            CorsRequest::Actual { .. }
        ));
    }

    #[test]
    fn a_preflight_is_answered_only_for_what_is_allowed_and_served() {
        let p = policy(AllowedOrigins::List(vec!["https://a.example".into()]), true);
        let origin = value("https://A.example");
        let ok = p
            .preflight(
                &origin,
                Some(Method::Post),
                &value("POST"),
                Some(&value("Authorization, accept")),
                true,
            )
            .unwrap();
        assert_eq!(ok[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://A.example");
        assert_eq!(ok[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
        assert_eq!(ok[header::ACCESS_CONTROL_ALLOW_HEADERS], "authorization");
        assert_eq!(ok[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(ok[header::ACCESS_CONTROL_MAX_AGE], "600");
        let refused = |o: &str, m: Option<Method>, h: Option<&str>, served: bool| {
            p.preflight(&value(o), m, &value("X"), h.map(value).as_ref(), served)
                .unwrap_err()
        };
        assert!(refused("https://b.example", Some(Method::Get), None, true).contains("origin"));
        assert!(refused("https://a.example", Some(Method::Delete), None, true).contains("methods"));
        assert!(refused("https://a.example", None, None, true).contains("not served"));
        assert!(
            refused("https://a.example", Some(Method::Get), None, false).contains("no endpoint")
        );
        assert!(
            refused(
                "https://a.example",
                Some(Method::Get),
                Some("x-secret"),
                true
            )
            .contains("`x-secret`")
        );
    }

    #[test]
    fn only_an_allowed_origin_gets_cors_headers_on_an_answer() {
        let p = policy(AllowedOrigins::List(vec!["https://a.example".into()]), true);
        let mut allowed = HeaderMap::new();
        p.decorate(Some(&value("https://a.example")), &mut allowed);
        assert_eq!(
            allowed[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://a.example"
        );
        assert_eq!(allowed[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(
            allowed[header::ACCESS_CONTROL_EXPOSE_HEADERS],
            "x-fanout-complete"
        );
        assert_eq!(allowed[header::VARY], "origin");
        let mut other = HeaderMap::new();
        p.decorate(Some(&value("https://evil.example")), &mut other);
        assert_eq!(other.len(), 1, "only vary: {other:?}");
        let mut none = HeaderMap::new();
        p.decorate(None, &mut none);
        assert_eq!(none.len(), 1);

        let any = policy(AllowedOrigins::Any, false);
        let mut headers = HeaderMap::new();
        any.decorate(Some(&value("https://x.example")), &mut headers);
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(headers.get(header::VARY).is_none());
    }
}
