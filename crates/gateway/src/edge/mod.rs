//! The gateway's edge: what it does for clients before and after an
//! endpoint runs — TLS on the listener ([`tls`]), CORS ([`cors`]), rate
//! limits ([`ratelimit`], keyed by the client's address from
//! [`client_ip`]), response compression ([`compress`]).

pub(crate) mod client_ip;
pub(crate) mod compress;
pub(crate) mod cors;
pub(crate) mod ratelimit;
pub(crate) mod tls;
