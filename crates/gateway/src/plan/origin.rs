//! Where calls go: the fixed scheme, host, port and base path of an
//! upstream's URL or a backend's `url`. One parser for both, so a full
//! backend URL and an upstream's base URL follow the same rules.

use http::HeaderValue;

pub(crate) use crate::upstream::Scheme;

/// One URL of an upstream: fixed text from the config, never touched by
/// request values (templates only ever add to its base path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) scheme: Scheme,
    /// The host as written (an IPv6 address without its brackets).
    pub(crate) host: String,
    /// The port, written or implied by the scheme.
    pub(crate) port: u16,
    /// The base path, without a trailing `/` (empty for none).
    pub(crate) prefix: String,
    /// The `Host` header for it: the host, and the port unless it is the
    /// scheme's default.
    pub(crate) host_header: HeaderValue,
}

impl Origin {
    /// An upstream's base URL: `http[s]://host[:port][/prefix]`, nothing
    /// after the path.
    pub(crate) fn parse(url: &str) -> Result<Origin, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("`{url}` is not a URL ({e})"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            _ => return Err(format!("`{url}` must start with http:// or https://")),
        };
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
        let default_port = match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        let port = uri.port_u16().unwrap_or(default_port);
        let host_header = if port == default_port {
            host.to_owned()
        } else {
            format!("{host}:{port}")
        };
        Ok(Origin {
            scheme,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            prefix: uri.path().trim_end_matches('/').to_owned(),
            host_header: HeaderValue::from_str(&host_header)
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
            .ok_or_else(|| format!("`{url}` must start with http:// or https://"))?;
        let path_start = after_scheme.find('/').unwrap_or(after_scheme.len());
        let origin = &url[..url.len() - after_scheme.len() + path_start];
        if origin.contains(['{', '}']) {
            return Err(format!(
                "`{url}`: the host and port cannot hold {{…}} values, only the path can"
            ));
        }
        Ok((Origin::parse(origin)?, &after_scheme[path_start..]))
    }

    /// The host, if it is an IP address rather than a name.
    pub(crate) fn ip(&self) -> Option<std::net::IpAddr> {
        self.host.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_keeps_its_prefix_and_names_its_host() {
        let o = Origin::parse("http://127.0.0.1:9101/v1/").unwrap();
        assert_eq!(
            (o.prefix.as_str(), o.port, o.scheme),
            ("/v1", 9101, Scheme::Http)
        );
        assert_eq!(o.host_header, "127.0.0.1:9101");
        assert_eq!(Origin::parse("http://users").unwrap().host_header, "users");
        assert_eq!(
            Origin::parse("http://users:80").unwrap().host_header,
            "users"
        );
        let o = Origin::parse("https://users.internal").unwrap();
        assert_eq!(
            (o.port, o.host_header.to_str().unwrap()),
            (443, "users.internal")
        );
        let o = Origin::parse("https://[::1]:8443").unwrap();
        assert_eq!((o.host.as_str(), o.ip().is_some()), ("::1", true));
        assert_eq!(o.host_header, "[::1]:8443");
    }

    #[test]
    fn a_full_url_splits_at_its_path() {
        let (o, path) = Origin::split("http://127.0.0.1:9101/users/{id}?x=1").unwrap();
        assert_eq!(
            (o.host.as_str(), o.prefix.as_str(), path),
            ("127.0.0.1", "", "/users/{id}?x=1")
        );
        let (o, path) = Origin::split("https://h:1").unwrap();
        assert_eq!((o.scheme, path), (Scheme::Https, ""));
    }

    #[test]
    fn what_could_move_a_call_elsewhere_is_refused() {
        for (bad, why) in [
            ("ftp://h/x", "must start with http:// or https://"),
            ("http://{host}/x", "cannot hold {…} values"),
            ("http://h:{port}/x", "cannot hold {…} values"),
            ("http://127.0.0.1:9101@evil.com/x", "user name or password"),
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
