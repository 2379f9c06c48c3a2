//! `fetch_all` against real servers on 127.0.0.1, and the small parsers.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use fanout_fetch::{
    FetchError, FetchOptions, Report, Row, fetch_all, parse_header, progress_bar, read_urls,
};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use indicatif::ProgressBar;
use serde_json::json;
use tokio::net::TcpListener;

/// Size of the `/ok` body.
const OK_BYTES: usize = 1234;

/// A test server and what it has seen.
#[derive(Clone, Default)]
struct Counters {
    /// TCP connections accepted.
    accepted: Arc<AtomicUsize>,
    /// Requests on `/held` being answered right now.
    current: Arc<AtomicUsize>,
    /// The most requests on `/held` answered at once.
    max: Arc<AtomicUsize>,
    /// Requests seen.
    requests: Arc<AtomicUsize>,
    /// The last `x-test` header value seen.
    x_test: Arc<std::sync::Mutex<Option<String>>>,
}

struct Server {
    addr: SocketAddr,
    counters: Counters,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Starts a server on 127.0.0.1 with the routes:
/// - `/ok`: 200 with `OK_BYTES` bytes;
/// - `/missing`: 404 with `not found` (9 bytes);
/// - `/slow`: 200 after 10 s;
/// - `/held`: 200 (`held`) after 50 ms, tracking concurrent requests.
async fn server() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counters = Counters::default();
    let shared = counters.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            shared.accepted.fetch_add(1, Ordering::SeqCst);
            let counters = shared.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| route(request, counters.clone()));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Server { addr, counters }
}

async fn route(
    request: Request<Incoming>,
    counters: Counters,
) -> Result<Response<Full<Bytes>>, Infallible> {
    counters.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(value) = request.headers().get("x-test") {
        *counters.x_test.lock().unwrap() = Some(value.to_str().unwrap().to_owned());
    }
    let (status, body) = match request.uri().path() {
        "/ok" => (StatusCode::OK, Bytes::from(vec![b'x'; OK_BYTES])),
        "/missing" => (StatusCode::NOT_FOUND, Bytes::from_static(b"not found")),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(10)).await;
            (StatusCode::OK, Bytes::from_static(b"finally"))
        }
        "/held" => {
            let now = counters.current.fetch_add(1, Ordering::SeqCst) + 1;
            counters.max.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            counters.current.fetch_sub(1, Ordering::SeqCst);
            (StatusCode::OK, Bytes::from_static(b"held"))
        }
        _ => (StatusCode::NOT_FOUND, Bytes::new()),
    };
    Ok(Response::builder()
        .status(status)
        .body(Full::new(body))
        .unwrap())
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_mix_of_outcomes_in_table_and_json() {
    let server = server().await;
    let refused = format!("http://127.0.0.1:{}/nothing", closed_port());
    let urls = vec![
        server.url("/ok"),
        server.url("/missing"),
        refused.clone(),
        server.url("/slow"),
        format!("https://{}/ok", server.addr),
        "not a url".to_owned(),
        server.url("/ok"),
    ];
    let options = FetchOptions {
        timeout: Duration::from_millis(500),
        headers: vec![parse_header("X-Test: mixed").unwrap()],
        ..FetchOptions::default()
    };
    let bar = ProgressBar::hidden();
    let report = fetch_all(urls.clone(), &options, Some(&bar)).await;

    // Every URL counted on the progress bar, whatever happened to it.
    assert_eq!(bar.position(), 7);
    // The header went out.
    assert_eq!(
        server.counters.x_test.lock().unwrap().as_deref(),
        Some("mixed")
    );

    let got: Vec<&str> = report.rows.iter().map(|r| r.url.as_str()).collect();
    assert_eq!(got, urls, "rows in input order");
    let statuses: Vec<Option<u16>> = report.rows.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [Some(200), Some(404), None, None, None, None, Some(200)]
    );
    let bytes: Vec<u64> = report.rows.iter().map(|r| r.bytes).collect();
    assert_eq!(bytes, [OK_BYTES as u64, 9, 0, 0, 0, 0, OK_BYTES as u64]);
    let errors: Vec<Option<&str>> = report.rows.iter().map(|r| r.error.as_deref()).collect();
    assert_eq!(errors[0], None);
    assert_eq!(errors[1], None, "a 404 is a response, not an error");
    assert_eq!(errors[2], Some("connection refused"));
    assert_eq!(errors[3], Some("timed out after 500ms"));
    assert_eq!(
        errors[4],
        Some("invalid URL: unsupported scheme `https` (only http:// is supported)")
    );
    assert!(
        errors[5].unwrap().starts_with("invalid URL: "),
        "{:?}",
        errors[5]
    );
    assert_eq!(errors[6], None);
    let oks: Vec<bool> = report.rows.iter().map(Row::is_ok).collect();
    assert_eq!(oks, [true, false, false, false, false, false, true]);
    assert_eq!((report.ok(), report.failed()), (2, 5));
    assert_eq!(report.limit, 16);

    // The timed-out request ran for its timeout; the quick ones did not.
    assert!(report.rows[3].latency >= Duration::from_millis(450));
    assert!(report.rows[0].latency < Duration::from_millis(500));
    assert!(report.elapsed >= Duration::from_millis(450));

    // The table.
    let table = report.render_table();
    println!("{table}{:#}", report.to_json());
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 1 + 7 + 2, "{table}");
    let header = lines[0];
    assert!(header.starts_with("URL "));
    for (i, name) in ["STATUS", "LATENCY", "BYTES", "ERROR"]
        .into_iter()
        .enumerate()
    {
        assert!(header.contains(name), "{header}");
        if i > 0 {
            let before = ["STATUS", "LATENCY", "BYTES", "ERROR"][i - 1];
            assert!(header.find(before) < header.find(name));
        }
    }
    // Right-aligned columns end where their heading ends; ERROR starts where its heading starts.
    let status_end = header.find("STATUS").unwrap() + "STATUS".len();
    let latency_end = header.find("LATENCY").unwrap() + "LATENCY".len();
    let bytes_end = header.find("BYTES").unwrap() + "BYTES".len();
    let error_start = header.find("ERROR").unwrap();
    for (line, row) in lines[1..8].iter().zip(&report.rows) {
        assert!(line.starts_with(&row.url), "{line}");
        let status = row.status.map_or("-".to_owned(), |s| s.to_string());
        assert_eq!(
            &line[status_end - status.len()..status_end],
            status,
            "{line}"
        );
        assert_eq!(&line[latency_end - 3..latency_end], " ms", "{line}");
        let tenths = (row.latency.as_micros() + 50) / 100;
        let latency = format!(" {}.{} ms", tenths / 10, tenths % 10);
        assert!(
            line[..latency_end].ends_with(&latency),
            "{line} / {latency}"
        );
        let bytes = row.bytes.to_string();
        assert_eq!(&line[bytes_end - bytes.len()..bytes_end], bytes, "{line}");
        assert_eq!(
            &line[error_start..],
            row.error.as_deref().unwrap_or("-"),
            "{line}"
        );
        assert_eq!(line.trim_end(), *line);
    }
    assert!(lines[1].contains("  200  "));
    assert!(lines[3].ends_with("connection refused"));
    assert!(lines[4].ends_with("timed out after 500ms"));
    assert_eq!(lines[8], "");
    let summary = lines[9];
    assert!(
        summary.starts_with("7 requests: 2 ok, 5 failed, in "),
        "{summary}"
    );
    assert!(summary.ends_with(" s (limit 16)"), "{summary}");
    assert_eq!(summary, report.summary());
    assert!(table.ends_with(" s (limit 16)\n"));

    // The JSON.
    let value = report.to_json();
    assert_eq!(value["ok"], 2);
    assert_eq!(value["failed"], 5);
    assert!(value["elapsed_ms"].as_f64().unwrap() >= 450.0);
    let requests = value["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 7);
    for (request, row) in requests.iter().zip(&report.rows) {
        let keys: Vec<&str> = request
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys, ["url", "status", "latency_ms", "bytes", "error"]);
        assert_eq!(request["url"], row.url.as_str());
        let latency = request["latency_ms"].as_f64().unwrap();
        assert!((latency - row.latency.as_secs_f64() * 1000.0).abs() < 0.01);
    }
    assert_eq!(requests[0]["status"], 200);
    assert_eq!(requests[0]["bytes"], OK_BYTES);
    assert_eq!(requests[0]["error"], json!(null));
    assert_eq!(requests[1]["status"], 404);
    assert_eq!(requests[1]["bytes"], 9);
    assert_eq!(requests[2]["status"], json!(null));
    assert_eq!(requests[2]["error"], "connection refused");
    assert_eq!(requests[3]["error"], "timed out after 500ms");
    assert_eq!(requests[4]["bytes"], 0);
    assert_eq!(
        serde_json::to_value(&report).unwrap(),
        value,
        "Serialize gives the same JSON"
    );
}

#[tokio::test]
async fn the_limit_is_honoured() {
    let server = server().await;
    let urls = vec![server.url("/held"); 20];
    let options = FetchOptions {
        limit: 3,
        ..FetchOptions::default()
    };
    let report = fetch_all(urls, &options, None).await;

    assert_eq!(report.ok(), 20, "{}", report.render_table());
    assert!(report.rows.iter().all(|r| r.bytes == 4));
    assert_eq!(server.counters.requests.load(Ordering::SeqCst), 20);
    assert_eq!(
        server.counters.max.load(Ordering::SeqCst),
        3,
        "at most 3 in flight, and 3 were reached"
    );
    assert!(report.render_table().ends_with("(limit 3)\n"));
    // 20 requests of 50 ms, 3 at a time: at least 7 rounds.
    assert!(report.elapsed >= Duration::from_millis(7 * 50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_reused() {
    let server = server().await;
    let urls = vec![server.url("/ok"); 10];
    let options = FetchOptions {
        limit: 1,
        ..FetchOptions::default()
    };
    let report = fetch_all(urls, &options, None).await;
    assert_eq!(report.ok(), 10, "{}", report.render_table());
    assert!(report.rows.iter().all(|r| r.bytes == OK_BYTES as u64));
    // Give any stray connection time to show up.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.counters.requests.load(Ordering::SeqCst), 10);
    assert_eq!(server.counters.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn latency_counts_from_the_request_start_not_the_spawn() {
    let server = server().await;
    let urls = vec![server.url("/held"); 5];
    let options = FetchOptions {
        limit: 1,
        ..FetchOptions::default()
    };
    let report = fetch_all(urls, &options, None).await;
    assert_eq!(report.ok(), 5);
    // One at a time, so the requests' own times are disjoint and add up to
    // less than the whole. Counted from the spawn, the last one alone would
    // take about as long as the whole.
    let total: Duration = report.rows.iter().map(|r| r.latency).sum();
    assert!(total <= report.elapsed, "{total:?} > {:?}", report.elapsed);
    for row in &report.rows {
        assert!(row.latency >= Duration::from_millis(50), "{row:?}");
    }
    assert!(report.rows[4].latency < report.elapsed - report.rows[0].latency);
}

#[tokio::test]
async fn the_method_is_used_and_an_empty_list_gives_an_empty_report() {
    let server = server().await;
    let options = FetchOptions {
        method: http::Method::HEAD,
        limit: 0, // taken as 1
        ..FetchOptions::default()
    };
    let report = fetch_all(vec![server.url("/ok")], &options, None).await;
    assert_eq!(report.rows[0].status, Some(200));
    assert_eq!(report.rows[0].bytes, 0, "a HEAD response has no body");
    assert_eq!(report.limit, 1);
    assert!(
        report
            .summary()
            .starts_with("1 request: 1 ok, 0 failed, in ")
    );

    let bar = progress_bar(0);
    let report = fetch_all(Vec::new(), &FetchOptions::default(), Some(&bar)).await;
    assert!(report.rows.is_empty());
    assert_eq!((report.ok(), report.failed()), (0, 0));
    assert_eq!(
        report.to_json()["requests"],
        json!([]),
        "{}",
        report.to_json()
    );
    bar.finish_and_clear();
}

#[test]
fn fetch_all_can_be_spawned() {
    fn assert_send<T: Send>(_: &T) {}
    let options = FetchOptions::default();
    let future = fetch_all(Vec::new(), &options, None);
    assert_send(&future);
}

#[test]
fn the_table_layout() {
    let row = |url: &str, status, ms, bytes, error: Option<&str>| Row {
        url: url.to_owned(),
        status,
        latency: Duration::from_micros(ms),
        bytes,
        error: error.map(str::to_owned),
    };
    let report = Report {
        rows: vec![
            row("http://a.test/ok", Some(200), 12_345, 1234, None),
            row("http://a.test/gone", Some(404), 3_050, 9, None),
            row(
                "http://b.test/",
                None,
                2_000_000,
                0,
                Some("timed out after 2s"),
            ),
            row("https://a.test/", None, 0, 0, Some("invalid URL: no")),
        ],
        elapsed: Duration::from_millis(1024),
        limit: 16,
    };
    let expected = "\
URL                 STATUS    LATENCY  BYTES  ERROR
http://a.test/ok       200    12.3 ms   1234  -
http://a.test/gone     404     3.1 ms      9  -
http://b.test/           -  2000.0 ms      0  timed out after 2s
https://a.test/          -     0.0 ms      0  invalid URL: no

4 requests: 1 ok, 3 failed, in 1.02 s (limit 16)
";
    assert_eq!(report.render_table(), expected);
    assert_eq!(report.to_string(), expected);
    assert_eq!(
        report.to_json(),
        json!({
            "requests": [
                {"url": "http://a.test/ok", "status": 200, "latency_ms": 12.345, "bytes": 1234, "error": null},
                {"url": "http://a.test/gone", "status": 404, "latency_ms": 3.05, "bytes": 9, "error": null},
                {"url": "http://b.test/", "status": null, "latency_ms": 2000.0, "bytes": 0, "error": "timed out after 2s"},
                {"url": "https://a.test/", "status": null, "latency_ms": 0.0, "bytes": 0, "error": "invalid URL: no"},
            ],
            "ok": 1,
            "failed": 3,
            "elapsed_ms": 1024.0,
        })
    );
}

#[test]
fn status_classes() {
    let row = |status: Option<u16>, error: Option<&str>| Row {
        url: "http://a.test/".to_owned(),
        status,
        latency: Duration::ZERO,
        bytes: 0,
        error: error.map(str::to_owned),
    };
    assert!(row(Some(200), None).is_ok());
    assert!(row(Some(204), None).is_ok());
    assert!(row(Some(301), None).is_ok());
    assert!(row(Some(399), None).is_ok());
    assert!(!row(Some(199), None).is_ok());
    assert!(!row(Some(400), None).is_ok());
    assert!(!row(Some(503), None).is_ok());
    assert!(!row(None, None).is_ok());
    assert!(!row(Some(200), Some("body cut off")).is_ok());
}

#[test]
fn read_urls_edge_cases() {
    assert!(read_urls("").is_empty());
    assert!(read_urls("\n\n   \n\t\n").is_empty());
    assert!(read_urls("# only\n  # comments\n#").is_empty());
    assert_eq!(
        read_urls("http://a.test/\nhttp://b.test/"),
        ["http://a.test/", "http://b.test/"],
        "no final newline"
    );
    assert_eq!(
        read_urls("\u{feff}http://a.test/\r\n\r\n  http://b.test/x?q=1  \r\n"),
        ["http://a.test/", "http://b.test/x?q=1"],
        "BOM, CRLF, surrounding blanks"
    );
    assert_eq!(
        read_urls("http://a.test/#frag\n\t# http://commented.test/\n"),
        ["http://a.test/#frag"],
        "only whole-line comments"
    );
    assert_eq!(
        read_urls("http://a.test/\nhttp://a.test/\n"),
        ["http://a.test/", "http://a.test/"],
        "duplicates are kept"
    );
    assert_eq!(
        read_urls("not a url\n"),
        ["not a url"],
        "checked later, per row"
    );
}

#[test]
fn parse_header_edge_cases() {
    let (name, value) = parse_header("Content-Type: application/json").unwrap();
    assert_eq!(name, http::header::CONTENT_TYPE);
    assert_eq!(value, "application/json");

    let (name, value) = parse_header("  X-Trace-ID :   abc  ").unwrap();
    assert_eq!(name.as_str(), "x-trace-id");
    assert_eq!(value, "abc");

    let (name, value) = parse_header("Host: example.test:8080").unwrap();
    assert_eq!(name, http::header::HOST);
    assert_eq!(value, "example.test:8080", "split at the first colon only");

    let (_, value) = parse_header("X-Empty:").unwrap();
    assert_eq!(value, "", "an empty value is allowed");

    let (_, value) = parse_header("X-Tab: a\tb").unwrap();
    assert_eq!(value.as_bytes(), b"a\tb");

    let err = parse_header("no colon").unwrap_err();
    assert!(matches!(err, FetchError::MissingColon { .. }));
    assert_eq!(
        err.to_string(),
        "invalid header `no colon`: expected `Name: value`"
    );

    let err = parse_header("").unwrap_err();
    assert!(matches!(err, FetchError::MissingColon { .. }));

    let err = parse_header("  : value").unwrap_err();
    assert!(matches!(err, FetchError::EmptyName { .. }));
    assert_eq!(
        err.to_string(),
        "invalid header `  : value`: the name is empty"
    );

    let err = parse_header("X Bad: 1").unwrap_err();
    assert!(matches!(err, FetchError::InvalidName { ref name, .. } if name == "X Bad"));
    assert!(err.to_string().starts_with("invalid header name `X Bad`: "));
    assert!(std::error::Error::source(&err).is_some());

    let err = parse_header("Caf\u{e9}: 1").unwrap_err();
    assert!(matches!(err, FetchError::InvalidName { .. }));

    let err = parse_header("X-Bad: line\nbreak").unwrap_err();
    assert!(matches!(err, FetchError::InvalidValue { ref name, .. } if name == "X-Bad"));
    assert!(
        err.to_string()
            .starts_with("invalid value for header `X-Bad`: ")
    );

    let (_, value) = parse_header("X-Name: caf\u{e9}").unwrap();
    assert_eq!(
        value.as_bytes(),
        "caf\u{e9}".as_bytes(),
        "UTF-8 is passed on as is"
    );
}

#[test]
fn default_options() {
    let options = FetchOptions::default();
    assert_eq!(options.limit, 16);
    assert_eq!(options.timeout, Duration::from_secs(10));
    assert_eq!(options.method, http::Method::GET);
    assert!(options.headers.is_empty());
}
