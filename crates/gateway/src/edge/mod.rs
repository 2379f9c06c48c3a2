//! The gateway's edge: what it does for clients before and after an
//! endpoint runs — TLS on the listener ([`tls`]), CORS ([`cors`]).

pub(crate) mod cors;
pub(crate) mod tls;
