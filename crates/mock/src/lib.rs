//! `fanout mock`: canned JSON with configurable latency, failures and faults,
//! for trying fanout configs without real services, and for fanout's own tests,
//! demo and benchmarks.
//!
//! ```yaml
//! listen: 127.0.0.1:9101
//! routes:
//!   - path: /names/{email}
//!     body: { email: "{email}", name: "Ada Lovelace" }   # {param} is filled in
//!     latency: 50ms
//!   - path: /search
//!     body_file: search.json
//!     latency: [{ share: 97%, delay: 1ms }, { share: 3%, delay: 100ms }]
//!     failure_rate: 1%              # those answer 500
//!   - path: /broken
//!     fault: reset                  # or hang, drip, invalid_json, wrong_content_type
//! ```
//!
//! `GET /__mock/stats` answers `{"requests", "in_flight", "max_in_flight",
//! "abandoned"}`: how many calls arrived, how many run now and at most, and how
//! many the caller dropped before they were answered.
#![forbid(unsafe_code)]

mod config;
mod serve;

pub use config::{Fault, Latency, LatencyShare, MockConfig, MockRoute};
pub use serve::{Mock, MockError, Stats};
