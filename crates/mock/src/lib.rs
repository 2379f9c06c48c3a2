//! Fake backends: canned answers with configurable latency, failures and
//! faults, which record what reached them. `fanout mock` serves one from a
//! YAML file, for trying fanout configs without real services; fanout's own
//! tests, demo and benchmarks start them from Rust.
//!
//! From Rust, routes and [`Reply`]s are given to a builder; the started
//! [`MockServer`] records each request ([`Seen`]), counts calls ([`Stats`]),
//! and waits for what a test expects without polling and without hanging
//! (each wait gives up after a timeout and returns the count it reached):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::time::Duration;
//! use fanout_mock::{Mock, Reply};
//! use http::Method;
//! use http_body_util::{BodyExt, Empty};
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//!
//! let mock = Mock::builder()
//!     .route(Method::GET, "/users/{id}", Reply::json(r#"{"id":"{id}"}"#))
//!     .any("/flaky", [Reply::json("{}").status(503), Reply::json(r#"{"ok":1}"#)])
//!     .route(Method::GET, "/slow", Reply::json("{}").delay(Duration::from_secs(30)))
//!     .start()
//!     .await
//!     .unwrap();
//!
//! let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
//! let answer = client.get(mock.url("/users/7?full=1").parse().unwrap()).await.unwrap();
//! let body = answer.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(&body[..], br#"{"id":"7"}"#);
//!
//! assert_eq!(mock.wait_requests(1).await, 1);
//! let seen = mock.seen();
//! assert_eq!(seen[0].path_and_query(), "/users/7?full=1");
//! assert_eq!(mock.wait_idle().await, 0, "no call in flight");
//! # }
//! ```
//!
//! The same from YAML ([`MockConfig`], served by [`Mock::new`]):
//!
//! ```yaml
//! listen: 127.0.0.1:9101           # or a list: [127.0.0.1:9101, 127.0.0.1:9103]
//! tls:                             # the same routes over HTTPS too (optional)
//!   listen: 127.0.0.1:9102
//!   cert: certs/mock.pem           # `fanout mock --make-certs certs` writes these
//!   key: certs/mock-key.pem
//! routes:
//!   - path: /names/{email}
//!     body: { email: "{email}", name: "Ada Lovelace" }   # {param} is filled in
//!     latency: 50ms
//!   - path: /search
//!     body_file: search.json
//!     latency: [{ share: 97%, delay: 1ms }, { share: 3%, delay: 100ms }]
//!     failure_rate: 1%              # those answer 500
//!     headers: { cache-control: max-age=60, set-cookie: [a=1, b=2] }
//!   - path: /broken
//!     fault: reset                  # or hang, drip, invalid_json, wrong_content_type
//!   - path: /flaky                  # successive calls, the last one repeating
//!     replies: [{ status: 503 }, { body: { ok: true } }]
//!   - { path: /orders, method: POST, echo: true }   # answers what it received
//! ```
//!
//! `GET /__mock/stats` answers [`Stats`] as JSON: `{"requests", "in_flight",
//! "max_in_flight", "abandoned", "connections"}`: how many calls arrived, how
//! many run now and at most, how many the caller dropped before they were
//! answered, and how many connections were accepted. A mock built from YAML
//! counts requests but does not keep them.
#![forbid(unsafe_code)]

pub mod certs;
mod config;
mod error;
pub mod jwt;
mod record;
pub mod redis;
mod reply;
mod serve;

pub use config::{
    Fault, HeaderValues, Latency, LatencyShare, MockConfig, MockReply, MockRoute, MockTls,
};
pub use error::MockError;
pub use record::{Seen, Stats};
pub use reply::{Gate, Reply, Script};
pub use serve::{Mock, MockBuilder, MockServer};
