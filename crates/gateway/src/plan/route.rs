//! Routes: `GET /users/{id}` parsed once, and the table that matches
//! requests to endpoints.

use std::collections::HashMap;

use crate::config::Method;
use crate::template::names::{NAME_RULE, is_name};

/// A parsed route: a method and a path whose `{name}` segments capture values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RouteSpec {
    /// The method it answers.
    pub(crate) method: Method,
    /// The path, as written (`/users/{id}`).
    pub(crate) path: String,
    /// The names of the captured segments, in order.
    pub(crate) params: Vec<String>,
}

impl RouteSpec {
    /// Parses `METHOD /path/{param}`.
    pub(crate) fn parse(spec: &str) -> Result<RouteSpec, String> {
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
                .filter(|n| is_name(n))
                .ok_or_else(|| {
                    format!(
                        "segment `{segment}` of route `{spec}`: a capture is a whole segment `{{name}}` ({NAME_RULE})"
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
    pub(crate) fn shape(&self) -> String {
        let path: Vec<_> = self
            .path
            .split('/')
            .map(|s| if s.starts_with('{') { "{}" } else { s })
            .collect();
        format!("{} {}", self.method.as_str(), path.join("/"))
    }
}

/// Requests to endpoints: one matcher per method.
#[derive(Debug, Default)]
pub(crate) struct Router {
    by_method: HashMap<Method, matchit::Router<usize>>,
    /// Each route's shape, and the endpoint that has it, to name a clash.
    shapes: HashMap<String, usize>,
}

impl Router {
    /// Adds endpoint `index`'s route. A route that would match the same
    /// requests as an earlier one is refused, naming that endpoint.
    pub(crate) fn add(
        &mut self,
        route: &RouteSpec,
        index: usize,
        written: impl Fn(usize) -> String,
    ) -> Result<(), String> {
        if let Some(&first) = self.shapes.get(&route.shape()) {
            return Err(format!(
                "route `{} {}` matches the same requests as endpoints[{first}] (`{}`)",
                route.method.as_str(),
                route.path,
                written(first)
            ));
        }
        self.by_method
            .entry(route.method)
            .or_default()
            .insert(route.path.clone(), index)
            .map_err(|e| format!("route `{} {}`: {e}", route.method.as_str(), route.path))?;
        self.shapes.insert(route.shape(), index);
        Ok(())
    }

    /// The endpoint for a request, with its route captures (still
    /// percent-encoded, as they were in the request path).
    pub(crate) fn find<'p>(
        &self,
        method: Method,
        path: &'p str,
    ) -> Option<(usize, Vec<(String, &'p str)>)> {
        let matched = self.by_method.get(&method)?.at(path).ok()?;
        let params = matched
            .params
            .iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        Some((*matched.value, params))
    }

    /// Whether any endpoint serves this path with another method (for 405).
    pub(crate) fn serves_path(&self, path: &str) -> bool {
        self.by_method.values().any(|r| r.at(path).is_ok())
    }
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

    #[test]
    fn routes_that_match_the_same_requests_are_refused() {
        let mut router = Router::default();
        let a = RouteSpec::parse("GET /users/{id}").unwrap();
        let b = RouteSpec::parse("GET /users/{name}").unwrap();
        router.add(&a, 0, |_| "GET /users/{id}".into()).unwrap();
        let err = router.add(&b, 1, |_| "GET /users/{id}".into()).unwrap_err();
        assert!(
            err.contains("matches the same requests as endpoints[0]"),
            "{err}"
        );
        let (index, params) = router.find(Method::Get, "/users/7").unwrap();
        assert_eq!((index, params), (0, vec![("id".to_owned(), "7")]));
        assert!(router.serves_path("/users/7"));
        assert!(router.find(Method::Post, "/users/7").is_none());
    }
}
