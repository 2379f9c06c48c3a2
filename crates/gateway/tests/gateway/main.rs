//! Black-box tests of the gateway crate. One test binary, one module per layer.

mod auth;
mod config;
mod edge;
mod fleet;
mod hostile;
mod operate;
mod pki;
mod resilience;
mod serve;
mod support;
mod upstreams;
mod write;
