//! Rules about headers that the compiler and the intake share.

use http::{HeaderMap, HeaderName, header};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1,
/// and the older names proxies still meet): never passed on in either
/// direction, whatever the configuration.
pub(crate) fn is_connection_specific(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// The [connection-specific](is_connection_specific) headers plus `host` and
/// `content-length`, which the gateway sets itself: never forwarded, and
/// refused in `forward_headers` and `return_headers`.
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    is_connection_specific(name) || matches!(name.as_str(), "host" | "content-length")
}

/// Headers of a merged answer that only the gateway can set: they describe
/// the body it wrote, not a backend's.
pub(crate) fn describes_merged_body(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "content-type" | "content-encoding" | "content-range" | "x-fanout-complete"
    )
}

/// Removes the connection-specific headers and those `Connection` names
/// (RFC 9110 §7.6.1): what is left is end-to-end, for a message passed
/// through.
pub(crate) fn remove_connection_headers(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let specific: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_connection_specific(name))
        .cloned()
        .collect();
    for name in specific {
        headers.remove(name);
    }
}

/// Whether the client's `Connection` header names `name`, which makes it
/// hop-by-hop for this message (RFC 9110 §7.6.1).
pub(crate) fn named_in_connection(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case(name.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_tokens_are_matched_whatever_their_case_and_spacing() {
        let mut headers = HeaderMap::new();
        headers.append(header::CONNECTION, "keep-alive, X-Api-Key".parse().unwrap());
        headers.append(header::CONNECTION, "x-other".parse().unwrap());
        let name = |s: &str| HeaderName::from_bytes(s.as_bytes()).unwrap();
        assert!(named_in_connection(&headers, &name("x-api-key")));
        assert!(named_in_connection(&headers, &name("x-other")));
        assert!(!named_in_connection(&headers, &name("x-api")));
        assert!(is_hop_by_hop(&name("te")) && !is_hop_by_hop(&name("authorization")));
    }

    #[test]
    fn a_passed_message_keeps_only_end_to_end_headers() {
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("connection", "close, X-Secret"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("te", "trailers"),
            ("x-secret", "s"),
            ("content-type", "text/plain"),
            ("content-length", "3"),
            ("set-cookie", "a=1"),
        ] {
            headers.append(k, v.parse().unwrap());
        }
        remove_connection_headers(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "content-type", "set-cookie"]);
    }
}
