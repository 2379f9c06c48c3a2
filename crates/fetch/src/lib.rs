//! The library behind `fanout fetch`: call many URLs concurrently and report
//! what came back.
//!
//! Every request runs as a task of one collect-all [`fanout_group::Group`],
//! at most [`FetchOptions::limit`] at a time, each with its own
//! [`FetchOptions::timeout`] (counted from when the request starts, not from
//! when it was queued). All requests share one pooled HTTP client, so
//! connections to the same host and port are reused; every body is read to
//! the end so that its connection can go back to the pool. A failed request
//! (refused, timed out, a bad URL, ...) becomes an error in its own row and
//! never stops the others.
//!
//! ```no_run
//! use std::time::Duration;
//! use fanout_fetch::{FetchOptions, fetch_all, parse_header, progress_bar, read_urls};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), fanout_fetch::FetchError> {
//! let urls = read_urls("# health checks\nhttp://127.0.0.1:8080/health\n\nhttp://127.0.0.1:8081/health\n");
//! let options = FetchOptions {
//!     limit: 8,
//!     timeout: Duration::from_secs(2),
//!     headers: vec![parse_header("Accept: application/json")?],
//!     ..FetchOptions::default()
//! };
//! let bar = progress_bar(urls.len() as u64);
//! let report = fetch_all(urls, &options, Some(&bar)).await;
//! bar.finish_and_clear();
//!
//! print!("{}", report.render_table());
//! println!("{}", report.to_json());
//! if report.failed() > 0 {
//!     std::process::exit(1);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Reading a URL list and headers needs no network:
//!
//! ```
//! use fanout_fetch::{parse_header, read_urls};
//!
//! let urls = read_urls("http://a.test/\n  # a comment\n\n  http://b.test/x  \n");
//! assert_eq!(urls, ["http://a.test/", "http://b.test/x"]);
//!
//! let (name, value) = parse_header("X-Request-Id: 42").unwrap();
//! assert_eq!((name.as_str(), value.to_str().unwrap()), ("x-request-id", "42"));
//! assert!(parse_header("no colon here").is_err());
//! ```
#![forbid(unsafe_code)]

mod fetch;
mod options;
mod progress;
mod report;

pub use fetch::fetch_all;
pub use options::{FetchError, FetchOptions, parse_header, read_urls};
pub use progress::progress_bar;
pub use report::{Report, Row};
