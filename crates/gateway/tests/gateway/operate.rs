//! Operating the gateway: the admin API and reloading under load.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use super::support::*;

/// The process-wide metrics recorder (one per test binary, as in `fanout serve`).
fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_reports_health_readiness_config_and_metrics() {
    let b = Backend::start(&[
        ("/a", json(r#"{"a":1}"#)),
        ("/down", Reply::Json(500, "{}", Duration::ZERO)),
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
        &[
            ("S", format!("http://{}", b.addr)),
            ("SECRET", "s3cret-value".into()),
        ],
    )
    .await;
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_url = format!("http://{}", admin.local_addr().unwrap());
    tokio::spawn(fanout_gateway::serve_admin(
        admin,
        gw.gateway.clone(),
        Some(metrics()),
        std::future::pending(),
    ));

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
    let b = Backend::start(&[
        ("/one", slow(5, r#"{"v":1}"#)),
        ("/two", slow(5, r#"{"v":2}"#)),
    ])
    .await;
    let vars = [("S", format!("http://{}", b.addr))];
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
