//! Running the requests: one collect-all group, one pooled client.

use std::{error::Error as StdError, fmt, io, time::Duration};

use bytes::Bytes;
use fanout_group::{Group, TaskError};
use http::{HeaderMap, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use indicatif::ProgressBar;
use tokio::time::Instant;

use crate::{FetchOptions, Report, Row};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Calls every URL and reports what came back, one [`Row`] per URL in input
/// order.
///
/// Each URL must be an `http://` URL; anything else (`https://`, no scheme,
/// garbage) gets an `invalid URL: ...` error in its row and is not requested.
/// The others run as tasks of one collect-all [`fanout_group::Group`] with
/// [`FetchOptions::limit`] and a per-task timeout of
/// [`FetchOptions::timeout`]; they share one pooled client, so connections
/// are reused, and every response body is read to the end (its size goes in
/// [`Row::bytes`]). A failure never stops the other requests: it becomes the
/// row's [`Row::error`], such as `connection refused` or
/// `timed out after 2s`.
///
/// `progress`, if given, is advanced by one as each URL is done (invalid ones
/// at once), whatever the outcome.
///
/// Must be called within a tokio runtime with the timer enabled.
pub async fn fetch_all(
    urls: Vec<String>,
    options: &FetchOptions,
    progress: Option<&ProgressBar>,
) -> Report {
    let started = Instant::now();
    let limit = options.limit.max(1);
    let client = client();
    let mut headers = HeaderMap::new();
    for (name, value) in &options.headers {
        headers.append(name.clone(), value.clone());
    }

    let group = Group::<Failure>::builder()
        .collect_all()
        .limit(limit)
        .task_timeout(options.timeout)
        .build();
    let timeline = group.timeline();

    let mut rows = Vec::with_capacity(urls.len());
    // Row index of each spawned task, in submission order, and its handle.
    let mut spawned = Vec::new();
    let mut handles = Vec::new();
    for url in urls {
        let request = check_url(&url).and_then(|uri| {
            let mut request = Request::builder()
                .method(options.method.clone())
                .uri(uri)
                .body(Empty::<Bytes>::new())
                .map_err(|e| format!("invalid request: {e}"))?;
            *request.headers_mut() = headers.clone();
            Ok(request)
        });
        match request {
            Ok(request) => {
                let client = client.clone();
                // Moved into the task: it ticks when the task's future (or its
                // closure, if it never ran) is dropped, so timeouts count too.
                let tick = Tick(progress.cloned());
                spawned.push(rows.len());
                handles.push(group.spawn(url.clone(), move |_ctx| async move {
                    let _tick = tick;
                    fetch_one(&client, request).await
                }));
                rows.push(Row::pending(url));
            }
            Err(error) => {
                if let Some(bar) = progress {
                    bar.inc(1);
                }
                rows.push(Row::failed(url, error));
            }
        }
    }

    let outcomes = group.join(handles).await;
    // How long each task ran, by submission index: the latency of the requests
    // that did not come back by themselves (timed out, cancelled, panicked).
    let mut ran = vec![None; outcomes.len()];
    for entry in timeline.entries() {
        if let Some(slot) = ran.get_mut(entry.index) {
            *slot = Some(entry.ran());
        }
    }
    for ((outcome, row_index), ran) in outcomes.into_iter().zip(spawned).zip(ran) {
        let row = &mut rows[row_index];
        match outcome {
            Ok(done) => {
                row.status = Some(done.status);
                row.bytes = done.bytes;
                row.latency = done.latency;
            }
            Err(TaskError::Failed(failure)) => {
                row.status = failure.status;
                row.bytes = failure.bytes;
                row.latency = failure.latency;
                row.error = Some(failure.message);
            }
            Err(TaskError::TimedOut { after }) => {
                row.latency = ran.unwrap_or(after);
                row.error = Some(format!("timed out after {after:?}"));
            }
            Err(TaskError::Panicked { message }) => {
                row.latency = ran.unwrap_or_default();
                row.error = Some(format!("internal error: the request panicked: {message}"));
            }
            Err(other) => {
                row.latency = ran.unwrap_or_default();
                row.error = Some(other.to_string());
            }
        }
    }

    Report {
        rows,
        elapsed: started.elapsed(),
        limit,
    }
}

/// The shared client: keep-alive pool per host and port, `TCP_NODELAY`.
fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// Checks that `url` is an `http://` URL with a host.
fn check_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(format!(
                "invalid URL: unsupported scheme `{other}` (only http:// is supported)"
            ));
        }
        None => return Err("invalid URL: expected http://host[:port][/path]".to_owned()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("invalid URL: no host".to_owned());
    }
    Ok(uri)
}

/// A request that came back with a complete body.
#[derive(Debug)]
struct Fetched {
    status: u16,
    bytes: u64,
    latency: Duration,
}

/// A request that failed by itself (not by timeout or cancellation); it may
/// have got as far as a status and part of the body.
#[derive(Debug)]
struct Failure {
    status: Option<u16>,
    bytes: u64,
    latency: Duration,
    message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Sends `request` and reads the whole body, counting its bytes.
async fn fetch_one(
    client: &HttpClient,
    request: Request<Empty<Bytes>>,
) -> Result<Fetched, Failure> {
    let start = Instant::now();
    let response = client.request(request).await.map_err(|e| Failure {
        status: None,
        bytes: 0,
        latency: start.elapsed(),
        message: describe(&e),
    })?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    bytes += data.len() as u64;
                }
            }
            Err(e) => {
                return Err(Failure {
                    status: Some(status),
                    bytes,
                    latency: start.elapsed(),
                    message: format!("body cut off after {bytes} bytes: {}", describe(&e)),
                });
            }
        }
    }
    Ok(Fetched {
        status,
        bytes,
        latency: start.elapsed(),
    })
}

/// A short description of a client error: the common network failures by
/// name, anything else as its chain of causes.
fn describe(error: &(dyn StdError + 'static)) -> String {
    let mut chain: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            let known = match io.kind() {
                io::ErrorKind::ConnectionRefused => Some("connection refused"),
                io::ErrorKind::ConnectionReset => Some("connection reset"),
                io::ErrorKind::ConnectionAborted => Some("connection aborted"),
                io::ErrorKind::TimedOut => Some("connect timed out"),
                io::ErrorKind::HostUnreachable => Some("host unreachable"),
                io::ErrorKind::NetworkUnreachable => Some("network unreachable"),
                io::ErrorKind::AddrNotAvailable => Some("address not available"),
                _ => None,
            };
            if let Some(known) = known {
                return known.to_owned();
            }
        }
        let message = e.to_string();
        // Wrappers often repeat their cause's text; keep it once.
        if !chain.last().is_some_and(|last| last.contains(&message)) {
            chain.push(message);
        }
        current = e.source();
    }
    // The outermost error of the client is a generic wrapper such as
    // "client error (Connect)"; its causes say more.
    if chain.len() > 1 {
        chain.remove(0);
    }
    chain.join(": ")
}

/// Advances the progress bar by one when dropped.
#[derive(Debug)]
struct Tick(Option<ProgressBar>);

impl Drop for Tick {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.inc(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_with_a_host_pass() {
        assert!(check_url("http://127.0.0.1:8080/a?b=c").is_ok());
        assert!(check_url("HTTP://example.test").is_ok());
        assert_eq!(
            check_url("https://example.test/").unwrap_err(),
            "invalid URL: unsupported scheme `https` (only http:// is supported)"
        );
        assert_eq!(
            check_url("ftp://example.test/").unwrap_err(),
            "invalid URL: unsupported scheme `ftp` (only http:// is supported)"
        );
        for no_scheme in ["example.test", "example.test:80", "/just/a/path"] {
            assert_eq!(
                check_url(no_scheme).unwrap_err(),
                "invalid URL: expected http://host[:port][/path]",
                "{no_scheme}"
            );
        }
        for garbage in ["not a url", "http://exa mple.test/", ""] {
            let error = check_url(garbage).unwrap_err();
            assert!(error.starts_with("invalid URL: "), "{garbage}: {error}");
        }
    }

    #[test]
    fn io_errors_are_named() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(describe(&refused), "connection refused");
        let other = io::Error::other("dns error: no such host");
        assert_eq!(describe(&other), "dns error: no such host");
    }
}
