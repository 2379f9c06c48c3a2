//! Where calls go: the fixed scheme, host, port and base path of an
//! upstream or a backend's `url`. One parser for both, so a full backend URL
//! and an upstream's base URL follow the same rules.

use http::HeaderValue;

/// `http://host:port` plus any base path: fixed text from the config, never
/// touched by request values (templates only ever add to it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    /// Scheme, authority and base path, without a trailing `/`.
    pub(crate) base: String,
    /// The `Host` header for it: the host, and the port unless it is 80.
    pub(crate) host: HeaderValue,
}

impl Origin {
    /// An upstream's base URL: `http://host[:port][/prefix]`, nothing after
    /// the path.
    pub(crate) fn parse(url: &str) -> Result<Origin, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("`{url}` is not a URL ({e})"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "`{url}`: https upstreams are not supported yet; use http"
                ));
            }
            _ => return Err(format!("`{url}` must start with http://")),
        }
        let Some(authority) = uri.authority() else {
            return Err(format!("`{url}` has no host"));
        };
        if authority.as_str().contains('@') {
            return Err(format!(
                "`{url}`: a base URL cannot hold a user name or password (`…@`)"
            ));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(format!("`{url}` has no host"));
        }
        if uri.query().is_some() || url.contains('#') {
            return Err(format!(
                "`{url}`: a base URL cannot hold a query or a fragment"
            ));
        }
        let host_header = match uri.port_u16() {
            Some(port) if port != 80 => format!("{host}:{port}"),
            _ => host.to_owned(),
        };
        Ok(Origin {
            base: url.trim_end_matches('/').to_owned(),
            host: HeaderValue::from_str(&host_header)
                .map_err(|_| format!("`{url}`: the host cannot be sent as a header"))?,
        })
    }

    /// Splits a backend's full URL into its origin (checked as [`Origin::parse`]
    /// checks a base URL) and its path template: holes are only allowed in the
    /// path, so no value can change the host.
    pub(crate) fn split(url: &str) -> Result<(Origin, &str), String> {
        let after_scheme = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(|| format!("`{url}` must start with http://"))?;
        let path_start = after_scheme.find('/').unwrap_or(after_scheme.len());
        let origin = &url[..url.len() - after_scheme.len() + path_start];
        if origin.contains(['{', '}']) {
            return Err(format!(
                "`{url}`: the host and port cannot hold {{…}} values, only the path can"
            ));
        }
        Ok((Origin::parse(origin)?, &after_scheme[path_start..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_keeps_its_prefix_and_names_its_host() {
        let o = Origin::parse("http://127.0.0.1:9101/v1/").unwrap();
        assert_eq!(o.base, "http://127.0.0.1:9101/v1");
        assert_eq!(o.host, "127.0.0.1:9101");
        assert_eq!(Origin::parse("http://users").unwrap().host, "users");
        assert_eq!(Origin::parse("http://users:80").unwrap().host, "users");
    }

    #[test]
    fn a_full_url_splits_at_its_path() {
        let (o, path) = Origin::split("http://127.0.0.1:9101/users/{id}?x=1").unwrap();
        assert_eq!(
            (o.base.as_str(), path),
            ("http://127.0.0.1:9101", "/users/{id}?x=1")
        );
        let (o, path) = Origin::split("http://h:1").unwrap();
        assert_eq!((o.base.as_str(), path), ("http://h:1", ""));
    }

    #[test]
    fn what_could_move_a_call_elsewhere_is_refused() {
        for (bad, why) in [
            ("ftp://h/x", "must start with http://"),
            ("http://{host}/x", "cannot hold {…} values"),
            ("http://h:{port}/x", "cannot hold {…} values"),
            ("http://127.0.0.1:9101@evil.com/x", "user name or password"),
            ("http://h/x?y=1", "a query or a fragment"),
            ("https://h/x", "https upstreams are not supported yet"),
        ] {
            let err = match Origin::split(bad) {
                Ok(_) => Origin::parse(bad).map(|_| ()).unwrap_err(),
                Err(e) => e,
            };
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(
            Origin::parse("http://h/x?y=1")
                .unwrap_err()
                .contains("a query")
        );
    }
}
