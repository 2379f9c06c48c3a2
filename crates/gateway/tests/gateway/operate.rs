//! Operating the gateway: the admin API and reloading under load.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use fanout_mock::{Mock, MockServer, Reply};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::support::*;

/// The process-wide metrics recorder (one per test binary, as in `fanout serve`).
pub(crate) fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_reports_health_readiness_config_and_metrics() {
    let b = backend(&[
        ("/a", Reply::json(r#"{"a":1}"#)),
        ("/down", Reply::json("{}").status(500)),
    ])
    .await;
    let gw = TestGateway::start(
        r#"
upstreams:
  s: { url: "${env.S}", headers: { X-Api-Key: "${env.SECRET}" }, hedge: { delay: 1s } }
  d: { url: "${env.S}", breaker: { failures: 1, cooldown: 60s } }
endpoints:
  - route: GET /ops
    backends:
      - { name: a, upstream: s, path: /a }
      - { name: down, upstream: d, path: /down }
"#,
        &[("S", b.url("")), ("SECRET", "s3cret-value".into())],
    )
    .await;
    let admin_url = format!("http://{}", gw.admin(Some(metrics())).await);

    assert_eq!(get(&format!("{admin_url}/healthz")).await.status, 200);
    let ready = get(&format!("{admin_url}/readyz")).await;
    assert_eq!(
        (ready.status, ready.json()["status"].as_str()),
        (200, Some("ready"))
    );

    let config = get(&format!("{admin_url}/config")).await;
    assert_eq!(config.status, 200);
    assert_eq!(
        config.json()["upstreams"]["s"]["headers"]["X-Api-Key"],
        "<redacted>"
    );
    assert!(
        !config.body.contains("s3cret-value"),
        "secrets never leave through /config"
    );

    for _ in 0..3 {
        assert_eq!(get(&gw.url("/ops")).await.status, 200);
    }
    let metrics = get(&format!("{admin_url}/metrics")).await;
    assert_eq!(metrics.status, 200);
    let text = metrics.body;
    for line in [
        r#"fanout_requests_total{endpoint="GET /ops",status="200"} 3"#,
        r#"fanout_backend_calls_total{endpoint="GET /ops",backend="a",outcome="ok"} 3"#,
        r#"fanout_backend_calls_total{endpoint="GET /ops",backend="down",outcome="status"} 1"#,
        r#"fanout_backend_calls_total{endpoint="GET /ops",backend="down",outcome="circuit_open"} 2"#,
        r#"fanout_breaker_state{upstream="d"} 2"#,
        r#"fanout_hedges_total{upstream="s"} 0"#,
        // Its value is shared with the tests running beside this one.
        "fanout_in_flight_requests ",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert!(text.contains("fanout_request_duration_seconds"), "{text}");

    let unknown = get(&format!("{admin_url}/nope")).await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_loses_no_request() {
    let b = backend(&[
        ("/one", slow(5, r#"{"v":1}"#)),
        ("/two", slow(5, r#"{"v":2}"#)),
    ])
    .await;
    let vars = [("S", b.url(""))];
    let config = |path: &str| {
        format!(
            "upstreams: {{ s: {{ url: \"${{env.S}}\" }} }}\nendpoints:\n  - {{ route: GET /x, backends: [{{ name: x, upstream: s, path: {path}, required: true }}] }}\n"
        )
    };
    let gw = TestGateway::start(&config("/one"), &vars).await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop) = (gw.url("/x"), stop.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let got = get(&url).await;
                    answers.push((got.status, got.body));
                }
                answers
            })
        })
        .collect();
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(15)).await;
        gw.gateway.reload(compile(
            &config(if i % 2 == 0 { "/two" } else { "/one" }),
            &vars,
        ));
    }
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    let mut seen_versions = std::collections::BTreeSet::new();
    for client in clients {
        for (status, body) in client.await.unwrap() {
            assert_eq!(status, 200, "{body}");
            seen_versions.insert(body);
            total += 1;
        }
    }
    assert!(total >= 20, "only {total} requests were made");
    assert_eq!(
        seen_versions.into_iter().collect::<Vec<_>>(),
        [r#"{"v":1}"#, r#"{"v":2}"#]
    );
    assert_eq!(
        b.seen().len(),
        total,
        "every request was answered by exactly one backend call"
    );
}

/// A gateway whose requests give the dashboard something of each kind: a
/// complete answer, a partial one (a timed-out optional call) and a fail-fast
/// 502 (a cancelled sibling). Returns the admin URL.
async fn gateway_with_history() -> (TestGateway, String, MockServer) {
    let b = Mock::builder()
        .any("/fast", Reply::json(r#"{"fast":1}"#))
        .any("/slow", slow(30_000, "{}"))
        .any(
            "/fail",
            Reply::json("{}")
                .status(500)
                .delay(Duration::from_millis(20)),
        )
        // Fails once, then succeeds: retried.
        .any(
            "/flaky",
            [
                Reply::json(r#"{"error":"flaky"}"#).status(503),
                Reply::json(r#"{"flaky":1}"#),
            ],
        )
        // Slow the first time only: hedged.
        .any(
            "/slow-first",
            [
                Reply::json(r#"{"hedged":1}"#).delay(Duration::from_secs(30)),
                Reply::json(r#"{"hedged":1}"#),
            ],
        )
        .start()
        .await
        .unwrap();
    let gw = TestGateway::start(
        r#"
upstreams:
  s: { url: "${env.S}" }
  retrying: { url: "${env.S}", retry: { attempts: 3, backoff: 5ms, budget: 100% } }
  hedging: { url: "${env.S}", hedge: { delay: 30ms, max_extra: 100% } }
endpoints:
  - { route: GET /retried, backends: [{ name: flaky, upstream: retrying, path: /flaky }] }
  - { route: GET /hedged, backends: [{ name: hedged, upstream: hedging, path: /slow-first }] }
  - { route: GET /complete, backends: [{ name: fast, upstream: s, path: /fast }, { name: also, upstream: s, path: /fast }] }
  - route: GET /partial
    backends:
      - { name: fast, upstream: s, path: /fast }
      - { name: slow, upstream: s, path: /slow, timeout: 50ms }
  - route: GET /failing
    backends:
      - { name: fail, upstream: s, path: /fail, required: true }
      - { name: slow, upstream: s, path: /slow }
"#,
        &[("S", b.url(""))],
    )
    .await;
    // The dashboard records requests from when its admin API starts.
    let admin_url = format!("http://{}", gw.admin(None).await);
    for path in [
        "/retried",
        "/hedged",
        "/complete",
        "/partial",
        "/failing",
        "/complete",
    ] {
        get(&gw.url(path)).await;
    }
    (gw, admin_url, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_api_lists_recent_requests_and_their_calls() {
    let (_gw, admin, _b) = gateway_with_history().await;
    let all = get(&format!("{admin}/api/requests")).await.json();
    let requests = all["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 6);
    let endpoints: Vec<&str> = requests
        .iter()
        .map(|r| r["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(
        endpoints,
        [
            "GET /complete",
            "GET /failing",
            "GET /partial",
            "GET /complete",
            "GET /hedged",
            "GET /retried"
        ],
        "newest first"
    );
    let call = |r: &serde_json::Value| {
        (
            r["outcome"].as_str().map(str::to_owned),
            r["hedged"].as_bool(),
            r["attempts"].as_u64(),
        )
    };
    assert_eq!(
        call(&requests[4]["backends"][0]),
        (Some("ok".into()), Some(true), Some(2)),
        "hedged"
    );
    assert_eq!(
        call(&requests[5]["backends"][0]),
        (Some("ok".into()), Some(false), Some(2)),
        "retried once"
    );
    let failing = &requests[1];
    assert_eq!(
        (failing["status"].as_u64(), failing["complete"].as_bool()),
        (Some(502), Some(false))
    );
    let outcomes: Vec<&str> = failing["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["status", "cancelled"]);
    let partial = &requests[2]["backends"][1];
    assert_eq!(partial["outcome"], "timeout");
    let took = partial["end_ms"].as_f64().unwrap() - partial["start_ms"].as_f64().unwrap();
    assert!(
        (45.0..5_000.0).contains(&took),
        "the timed-out call's bar spans its 50 ms: {took}"
    );

    let newest = requests[0]["id"].as_u64().unwrap();
    let none = get(&format!("{admin}/api/requests?since={newest}"))
        .await
        .json();
    assert_eq!(
        none["requests"].as_array().unwrap().len(),
        0,
        "since= returns only newer requests"
    );

    let stats = get(&format!("{admin}/api/stats")).await.json();
    let complete = stats["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == "GET /complete")
        .unwrap();
    assert_eq!(complete["requests"], 2);
    assert_eq!(complete["backends"].as_array().unwrap().len(), 2);
    let failing = stats["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == "GET /failing")
        .unwrap();
    assert_eq!(failing["error_rate"], 1.0);
}

/// Debian's Chromium, or `None` outside CI when it is not installed.
fn chromium() -> Option<&'static str> {
    let path = "/usr/bin/chromium";
    if std::path::Path::new(path).exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "chromium is not installed: .ci/run installs it (apt-get install chromium)"
    );
    eprintln!("skipping the browser test: /usr/bin/chromium is not installed");
    None
}

/// The dashboard at `admin` as headless Chromium renders it (after 3 s of
/// its virtual time), or `None` when Chromium is not installed (outside CI).
pub(crate) async fn dashboard_dom(admin: &str) -> Option<String> {
    let chromium = chromium()?;
    let profile = std::env::temp_dir().join(format!(
        "fanout-chromium-{}-{}",
        std::process::id(),
        admin.rsplit(':').next().unwrap_or("")
    ));
    let output = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("{admin}/"))
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_the_waterfall_in_a_browser() {
    let (_gw, admin, _b) = gateway_with_history().await;
    let Some(dom) = dashboard_dom(&admin).await else {
        return;
    };
    assert!(
        dom.contains("6 recent requests"),
        "the page loaded the API:\n{dom}"
    );
    for (what, needle) in [
        (
            "a complete request",
            r#"data-status="200" data-complete="true""#,
        ),
        (
            "a partial request",
            r#"data-status="200" data-complete="false""#,
        ),
        (
            "the fail-fast 502",
            r#"data-status="502" data-complete="false""#,
        ),
        ("an ok call", r#"data-outcome="ok""#),
        (
            "the timed-out call",
            r#"data-backend="slow" data-outcome="timeout""#,
        ),
        (
            "the cancelled call",
            r#"data-backend="slow" data-outcome="cancelled""#,
        ),
        (
            "the failed call",
            r#"data-backend="fail" data-outcome="status""#,
        ),
        ("the stats table", r#"data-endpoint="GET /partial""#),
        ("an upstream's target and its state", r#"data-state="up""#),
        ("the retried call", r#"class="bar ok retried""#),
        ("the hedged call", r#"class="bar ok hedged""#),
    ] {
        assert!(
            dom.contains(needle),
            "the dashboard does not show {what} ({needle}):\n{dom}"
        );
    }
}

/// `serve_on_threads`: the listeners share one port, the threads answer,
/// a reload reaches all of them, and a shutdown stops them all and frees the
/// port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_threads_share_the_port_the_plan_and_the_shutdown() {
    let b = backend(&[
        ("/v1", Reply::json(r#"{"version":1}"#)),
        ("/v2", Reply::json(r#"{"version":2}"#)),
    ])
    .await;
    let config = |path: &str| {
        compile(
            &format!(
                "endpoints:\n  - route: GET /v\n    backends: [{{ name: v, url: \"${{env.B}}{path}\" }}]\n"
            ),
            &[("B", b.url(""))],
        )
    };
    let listeners = fanout_gateway::bind_reuseport("127.0.0.1:0".parse().unwrap(), 3).unwrap();
    let addr = listeners[0].local_addr().unwrap();
    assert!(listeners.iter().all(|l| l.local_addr().unwrap() == addr));
    let gateway = fanout_gateway::Gateway::new(config("/v1"));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let served = tokio::spawn(fanout_gateway::serve_on_threads(
        listeners,
        gateway.clone(),
        stopped,
    ));
    let url = format!("http://{addr}/v");
    // A new connection per request (a new client each time), so the kernel
    // spreads them over the threads; every one is answered.
    for _ in 0..12 {
        let got = get(&url).await;
        assert_eq!((got.status, got.body.as_str()), (200, r#"{"version":1}"#));
    }
    gateway.reload(config("/v2"));
    for _ in 0..12 {
        assert_eq!(get(&url).await.body, r#"{"version":2}"#);
    }
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("every thread stops")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the port is closed"
    );
}

/// The admin API answers requests addressed to an IP or `localhost`, and
/// refuses any other name in `Host` (a page on another site whose name was
/// pointed at 127.0.0.1: DNS rebinding).
#[tokio::test]
async fn the_admin_api_refuses_names_other_than_localhost() {
    let gw = TestGateway::start(
        "endpoints:\n  - { route: GET /x, backends: [{ name: a, url: \"http://127.0.0.1:1/x\" }] }\n",
        &[],
    )
    .await;
    let addr = gw.admin(None).await;
    let ask = |host: String| async move {
        let request =
            format!("GET /api/stats HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
        raw(addr, &request).await
    };
    let port = addr.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "[::1]".into(),
    ] {
        let response = ask(host.clone()).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{host}: {response}");
    }
    for host in [
        format!("evil.example:{port}"),
        "localhost.evil.example".into(),
    ] {
        let response = ask(host.clone()).await;
        assert!(response.starts_with("HTTP/1.1 403"), "{host}: {response}");
        assert!(response.contains("DNS rebinding"), "{host}: {response}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_before_any_call_is_counted_in_metrics() {
    let metrics = metrics();
    let b = backend(&[("/u/{id}", Reply::json(r#"{"u":1}"#))]).await;
    let gw = TestGateway::start(
        r#"
server: { max_request_body: 1KiB }
endpoints:
  - route: POST /refused/{id}
    backends:
      - { name: u, url: "${env.S}/u/{id}", method: POST, body: forward }
"#,
        &[("S", b.url(""))],
    )
    .await;
    let admin = gw.admin(Some(metrics)).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"POST /refused/1 HTTP/1.1\r\nhost: gw\r\ncontent-length: 4096\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let text = get(&format!("http://{admin}/metrics")).await.body;
    assert!(
        text.lines().any(|l| l
            .starts_with(r#"fanout_requests_total{endpoint="POST /refused/{id}",status="413"}"#)),
        "a 413 is counted:\n{text}"
    );
    assert!(b.seen().is_empty());
}
