//! Who the client is, by address: the peer of the connection, or — when the
//! peer is one of `server.trusted_proxies` — the address those proxies
//! recorded in `x-forwarded-for`.
//!
//! Each proxy appends the address it received the request from, so the
//! list reads client, proxy 1, proxy 2…, and only its right end can be
//! trusted: anything to the left of the first untrusted address may have
//! been written by the client itself. The client is therefore the
//! right-most address that is not a trusted proxy (nginx's
//! `real_ip_recursive on`, Envoy's trusted hops).

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The proxies whose `x-forwarded-for` is believed.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// The networks, as checked by [`parse_network`].
    pub(crate) fn new(networks: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(networks)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a request from `peer` with `headers`.
    pub(crate) fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        if self.0.is_empty() || !self.trusts(client) {
            return client;
        }
        // Several headers are one list, in order (RFC 9110 §5.3).
        let hops: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .map(str::trim)
            .collect();
        for hop in hops.into_iter().rev() {
            // An entry that is not an address ends the walk: the trusted
            // proxy right of it is the last address known to be real.
            let Some(ip) = parse_hop(hop) else { break };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// An `x-forwarded-for` entry: an address, possibly with a port
/// (`1.2.3.4:5678`, `[::1]:5678`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    hop.parse::<std::net::SocketAddr>()
        .ok()
        .map(|s| canonical(s.ip()))
}

/// An IPv4 address mapped into IPv6 (`::ffff:1.2.3.4`, what a dual-stack
/// socket reports) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The bytes a rate limit keyed by `ip` uses for a client: the IPv4
/// address, or the /64 network of an IPv6 one — one subscriber usually
/// holds a whole /64 and could otherwise step through its 2^64 addresses
/// to escape the limit.
pub(crate) fn ip_key(ip: IpAddr) -> Vec<u8> {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => {
            let mut key = vec![6u8];
            key.extend_from_slice(&v6.octets()[..8]);
            key
        }
    }
}

/// A `trusted_proxies` entry: a CIDR (`10.0.0.0/8`, `fd00::/8`) or an
/// address (a /32 or /128).
pub(crate) fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| {
            format!("`{text}` is not a network: write a CIDR like 10.0.0.0/8 or an address")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|n| parse_network(n).unwrap()).collect())
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(X_FORWARDED_FOR, v.parse().unwrap());
        }
        headers
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_it_claims() {
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_ip(ip("203.0.113.9"), &xff(&["198.51.100.1"])),
            ip("203.0.113.9")
        );
        let some = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            some.client_ip(ip("203.0.113.9"), &xff(&["198.51.100.1"])),
            ip("203.0.113.9"),
            "x-forwarded-for from an untrusted peer is ignored"
        );
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_hop() {
        let p = proxies(&["10.0.0.0/8", "192.168.1.7"]);
        // A client-written entry on the left is never taken.
        let headers = xff(&["6.6.6.6, 198.51.100.1", "192.168.1.7"]);
        assert_eq!(p.client_ip(ip("10.1.2.3"), &headers), ip("198.51.100.1"));
        // Every hop trusted: the left-most is as far as we can see.
        assert_eq!(
            p.client_ip(ip("10.1.2.3"), &xff(&["10.9.9.9, 192.168.1.7"])),
            ip("10.9.9.9")
        );
        // No header: the proxy itself.
        assert_eq!(
            p.client_ip(ip("10.1.2.3"), &HeaderMap::new()),
            ip("10.1.2.3")
        );
        // Garbage stops the walk at the last real address.
        assert_eq!(
            p.client_ip(ip("10.1.2.3"), &xff(&["198.51.100.1, junk, 10.0.0.2"])),
            ip("10.0.0.2")
        );
        // Ports and IPv4-mapped peers.
        assert_eq!(
            p.client_ip(ip("::ffff:10.1.2.3"), &xff(&["198.51.100.1:4711"])),
            ip("198.51.100.1")
        );
        assert_eq!(
            p.client_ip(ip("10.1.2.3"), &xff(&["[2001:db8::1]:4711"])),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn an_ipv6_client_is_keyed_by_its_64_bit_network() {
        assert_eq!(
            ip_key(ip("2001:db8:1:2:aaaa::1")),
            ip_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(ip_key(ip("2001:db8:1:2::1")), ip_key(ip("2001:db8:1:3::1")));
        assert_eq!(ip_key(ip("::ffff:1.2.3.4")), ip_key(ip("1.2.3.4")));
        assert_ne!(ip_key(ip("1.2.3.4")), ip_key(ip("1.2.3.5")));
    }

    #[test]
    fn networks_are_cidrs_or_addresses() {
        assert_eq!(
            parse_network("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(parse_network("::1").unwrap().to_string(), "::1/128");
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("proxy.internal").is_err());
    }
}
