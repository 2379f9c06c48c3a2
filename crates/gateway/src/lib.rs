//! The fanout gateway: a declarative API-aggregation server.
//!
//! A request flows through the modules in this order: [`config`] (the file, as
//! written) → plan (each endpoint compiled once) → run (the backends, on a
//! [`fanout_group::Group`]) → [`shape`] (each body cut to size, then merged) →
//! respond; [`server`] is the HTTP side around it.
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod observe;
pub mod plan;
pub mod resilience;
pub mod run;
pub mod server;
pub mod shape;

pub use admin::serve_admin;
pub use plan::Plan;
pub use server::{Connections, Gateway, serve};
