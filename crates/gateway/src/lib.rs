//! The fanout gateway: a declarative API-aggregation server.
//!
//! This crate is a placeholder in the workspace layout; the gateway (config →
//! plan → run → shape/merge → respond) is built on [`fanout_group`] in the
//! gateway issue.
#![forbid(unsafe_code)]

pub use fanout_group;
