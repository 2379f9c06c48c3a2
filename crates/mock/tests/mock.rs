//! The mock server over real sockets.

use std::{path::Path, time::Duration};

use bytes::Bytes;
use fanout_mock::{Mock, MockConfig, Stats};
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::net::TcpListener;

async fn start(yaml: &str) -> (String, Mock) {
    let config = MockConfig::parse(yaml).unwrap();
    let mock = Mock::new(&config, Path::new(".")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(mock.clone().serve(listener, std::future::pending()));
    (base, mock)
}

fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn get(url: &str) -> (u16, String, String) {
    let response = client().get(url.parse().unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canned_bodies_statuses_and_captures() {
    let (base, _) = start(
        r#"
routes:
  - { path: "/names/{email}", body: { email: "{email}", name: "Ada" } }
  - { path: /teapot, status: 418, body: { short: true } }
  - { path: /orders, method: POST, body: [1, 2] }
"#,
    )
    .await;
    let (status, content_type, body) = get(&format!("{base}/names/a%22b@x")).await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body, serde_json::json!({"email": "a%22b@x", "name": "Ada"}));
    assert_eq!(get(&format!("{base}/teapot")).await.0, 418);
    let (status, _, body) = get(&format!("{base}/orders")).await;
    assert_eq!(status, 404, "GET is not the configured POST");
    assert!(
        body.contains("the mock has no route for GET /orders"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_rate_answers_500() {
    let (base, _) = start("routes:\n  - { path: /always, failure_rate: 100%, body: {} }\n  - { path: /never, failure_rate: 0%, body: {} }\n").await;
    assert_eq!(get(&format!("{base}/always")).await.0, 500);
    assert_eq!(get(&format!("{base}/never")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_misbehave_as_described() {
    let (base, mock) = start(
        r#"
routes:
  - { path: /reset, fault: reset }
  - { path: /hang, fault: hang }
  - { path: /drip, fault: drip }
  - { path: /garbage, fault: invalid_json }
  - { path: /html, fault: wrong_content_type }
"#,
    )
    .await;
    let (status, content_type, body) = get(&format!("{base}/garbage")).await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    assert!(serde_json::from_str::<serde_json::Value>(&body).is_err());
    assert_eq!(get(&format!("{base}/html")).await.1, "text/html");

    let response = client()
        .get(format!("{base}/reset").parse().unwrap())
        .await
        .unwrap();
    assert!(
        response.into_body().collect().await.is_err(),
        "the body is cut off"
    );

    let hang = client().get(format!("{base}/hang").parse().unwrap());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), hang)
            .await
            .is_err(),
        "no answer"
    );

    let response = client()
        .get(format!("{base}/drip").parse().unwrap())
        .await
        .unwrap();
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .unwrap();
    assert!(first.is_some(), "the drip starts");
    let rest = tokio::time::timeout(Duration::from_millis(500), body.collect()).await;
    assert!(
        rest.is_err(),
        "and never ends (the body is dropped with the timeout)"
    );

    // The hanging call was dropped by its caller before any answer (the drip
    // had answered: its headers were sent).
    let mut stats = mock.stats();
    for _ in 0..300 {
        if stats.abandoned >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        stats = mock.stats();
    }
    assert_eq!(stats.abandoned, 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_requests_and_concurrency() {
    let (base, _) = start("routes:\n  - { path: /slow, latency: 200ms, body: {} }\n").await;
    let calls: Vec<_> = (0..4)
        .map(|_| tokio::spawn(get_owned(format!("{base}/slow"))))
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    let (_, _, body) = get(&format!("{base}/__mock/stats")).await;
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["requests"], 4);
    assert_eq!(stats["in_flight"], 0);
    assert_eq!(
        stats["max_in_flight"], 4,
        "the four calls overlapped in their 200 ms"
    );
    assert_eq!(stats["abandoned"], 0);
    let _: Stats = Stats::default();
}

async fn get_owned(url: String) -> u16 {
    get(&url).await.0
}

#[test]
fn config_errors_say_where() {
    let err = MockConfig::parse("routes:\n  - { path: /a, latncy: 5ms }\n").unwrap_err();
    assert_eq!(err.line, 2);
    assert!(
        err.message.contains("unknown field `latncy`"),
        "{}",
        err.message
    );
    let err = MockConfig::parse("routes:\n  - { path: /a, fault: explode }\n").unwrap_err();
    assert!(err.message.contains("explode"), "{}", err.message);
    let config = MockConfig::parse("routes:\n  - { path: /a, body_file: missing.json }\n").unwrap();
    let err = Mock::new(&config, Path::new("/nonexistent")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("body file /nonexistent/missing.json:"),
        "{err}"
    );
}

#[test]
fn latency_mixes_parse() {
    let config = MockConfig::parse(
        "routes:\n  - { path: /a, latency: [{ share: 97%, delay: 1ms }, { share: 3%, delay: 100ms }] }\n  - { path: /b, latency: 20ms }\n",
    )
    .unwrap();
    assert!(
        matches!(config.routes[0].latency, Some(fanout_mock::Latency::Mix(ref m)) if m.len() == 2)
    );
    assert!(matches!(
        config.routes[1].latency,
        Some(fanout_mock::Latency::Fixed(_))
    ));
}
