//! Endpoints compiled once, at load: route matchers, URL templates, dependency
//! order. The per-request path does no parsing of the configuration.

pub mod route;
pub mod template;
