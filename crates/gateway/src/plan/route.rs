//! Route specs: `GET /users/{id}`.

use crate::config::Method;

/// A parsed route: a method and a path whose `{name}` segments capture values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    /// The method it answers.
    pub method: Method,
    /// The path, as written (`/users/{id}`).
    pub path: String,
    /// The names of the captured segments, in order.
    pub params: Vec<String>,
}

impl RouteSpec {
    /// Parses `METHOD /path/{param}`.
    ///
    /// ```
    /// use fanout_gateway::plan::route::RouteSpec;
    /// let r = RouteSpec::parse("GET /users/{id}/orders").unwrap();
    /// assert_eq!(r.params, ["id"]);
    /// assert!(RouteSpec::parse("GET users").unwrap_err().contains("must start with /"));
    /// ```
    pub fn parse(spec: &str) -> Result<RouteSpec, String> {
        let spec = spec.trim();
        let Some((method, path)) = spec.split_once(char::is_whitespace) else {
            return Err(format!(
                "route `{spec}` needs a method and a path, like `GET /users/{{id}}`"
            ));
        };
        let method = Method::parse(method).ok_or_else(|| {
            format!("unknown method `{method}` in route `{spec}`: use GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS")
        })?;
        let path = path.trim();
        if !path.starts_with('/') {
            return Err(format!("the path of route `{spec}` must start with /"));
        }
        if path.contains(['?', '#', ' ']) {
            return Err(format!(
                "the path of route `{spec}` cannot hold ?, # or spaces"
            ));
        }
        let mut params: Vec<String> = Vec::new();
        for segment in path.split('/').skip(1) {
            if !segment.contains(['{', '}']) {
                continue;
            }
            let name = segment
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .filter(|n| is_identifier(n))
                .ok_or_else(|| {
                    format!(
                        "segment `{segment}` of route `{spec}`: a capture is a whole segment `{{name}}` (letters, digits, _)"
                    )
                })?;
            if params.iter().any(|p| p == name) {
                return Err(format!("route `{spec}` captures `{name}` twice"));
            }
            params.push(name.to_owned());
        }
        Ok(RouteSpec {
            method,
            path: path.to_owned(),
            params,
        })
    }

    /// The route with its captures blanked out: two routes with the same shape
    /// would match the same requests.
    pub fn shape(&self) -> String {
        let path: Vec<_> = self
            .path
            .split('/')
            .map(|s| if s.starts_with('{') { "{}" } else { s })
            .collect();
        format!("{} {}", self.method.as_str(), path.join("/"))
    }
}

/// Letters, digits and `_`, not empty, not starting with a digit.
pub(crate) fn is_identifier(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_with_reasons() {
        let r = RouteSpec::parse("POST /a/{x}/b/{y}").unwrap();
        assert_eq!(
            (r.method, r.params.as_slice()),
            (Method::Post, &["x".to_string(), "y".to_string()][..])
        );
        assert_eq!(r.shape(), "POST /a/{}/b/{}");
        for (bad, why) in [
            ("/users", "needs a method and a path"),
            ("FETCH /x", "unknown method `FETCH`"),
            ("GET /users/x{id}", "a capture is a whole segment"),
            ("GET /users/{id}/{id}", "captures `id` twice"),
            ("GET /users?x=1", "cannot hold ?"),
            ("GET /{1a}", "a capture is a whole segment"),
        ] {
            let err = RouteSpec::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
