//! Rules about headers that the compiler and the intake share.

use http::{HeaderMap, HeaderName, header};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// plus `host` and `content-length`, which the gateway sets itself: never
/// forwarded, and refused in `forward_headers`.
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
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
            | "host"
            | "content-length"
    )
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
}
