#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod auth;
mod client;
pub mod config;
mod dashboard;
mod edge;
#[cfg(test)]
mod engine_tests;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod headers;
mod metrics;
mod plan;
mod resilience;
mod respond;
mod run;
mod server;
mod shape;
mod store;
mod template;
mod upstream;

pub use auth::api_key::hash as hash_api_key;
pub use client::HttpClient;
pub use edge::tls::{ServerTls, TlsError};
pub use error::{BackendError, ErrorKind};
pub use plan::Plan;
pub use server::{
    ConnectionLimit, Connections, Gateway, MAX_CONCURRENT_STREAMS, Peer, bind_reuseport, serve,
    serve_admin, serve_on_threads,
};
