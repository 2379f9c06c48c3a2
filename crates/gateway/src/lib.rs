//! The fanout gateway: a declarative API-aggregation server.
//!
//! A configuration file describes endpoints and the backends each one fans
//! out to; the gateway calls them concurrently, merges their answers in
//! declaration order, and says when an answer is partial.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use fanout_gateway::{Gateway, Plan};
//!
//! let plan = Plan::load("gateway.yaml".as_ref())?; // every problem, located
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! fanout_gateway::serve(listener, Gateway::new(plan), std::future::pending()).await?;
//! # Ok(()) }
//! ```
//!
//! # How a request flows
//!
//! The modules follow the data, one job each:
//!
//! | step | module | what happens there |
//! |---|---|---|
//! | the file | `config/` | YAML/TOML/JSON into one model, `${env.…}`, units, positions |
//! | the plan | `plan/` | one compiler checks and builds everything (`compile.rs`); routes, templates, origins |
//! | intake | `server/intake.rs` | route, limits, forwarded headers and query |
//! | the run | `run/` | a task group per request (`mod.rs`), a task per backend (`backend.rs`), dependencies (`deps.rs`), decoding (`decode.rs`), the verdict (`outcome.rs`) |
//! | protection | `resilience/` | cache, coalescing, breaker, retries, hedging, bulkhead, per upstream |
//! | the wire | `client/` | the [`Transport`](client) seam and the pooled HTTP client |
//! | shaping | `shape/` | extract/select/drop/rename/into, then the deterministic merge |
//! | the answer | `respond.rs` | status, body, `x-fanout-complete` |
//! | telling | `metrics.rs`, `dashboard.rs`, `server/admin.rs` | Prometheus names, the waterfall's records, the admin API |
//!
//! Errors a backend call can end with are one vocabulary, [`ErrorKind`].
#![forbid(unsafe_code)]

mod client;
pub mod config;
mod dashboard;
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

pub use client::HttpClient;
pub use error::{BackendError, ErrorKind};
pub use plan::Plan;
pub use server::{
    Connections, Gateway, MAX_CONCURRENT_STREAMS, Peer, bind_reuseport, serve, serve_admin,
    serve_on_threads,
};
