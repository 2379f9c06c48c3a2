//! The gateway end to end: real backends and a real gateway on loopback, a real
//! HTTP client. Each test proves one rule of product.md §2.2–2.3.

use std::time::Duration;

use fanout_mock::{Gate, Reply};
use serde_json::json;
use tokio::time::Instant;

use super::support::*;

/// A generous bound: far below the slow call that must not be waited for,
/// far above any scheduling noise.
const WELL_BEFORE_THE_SLOW_CALL: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_in_declaration_order_whatever_the_arrival_order() {
    let b = backend(&[
        ("/key1", slow(80, r#"{"key1":"value1","shared":{"a":1}}"#)),
        ("/key2", slow(1, r#"{"key2":"value2","shared":{"b":2}}"#)),
        ("/key3", slow(40, r#"{"key3":"value3","shared":{"a":3}}"#)),
    ])
    .await;
    let gw = TestGateway::start(
        r#"
upstreams: { kv: { url: "${env.KV}" } }
endpoints:
  - route: GET /merged
    backends:
      - { name: one, upstream: kv, path: /key1 }
      - { name: two, upstream: kv, path: /key2 }
      - { name: three, upstream: kv, path: /key3 }
"#,
        &[("KV", b.url(""))],
    )
    .await;
    let expected = r#"{"key1":"value1","shared":{"a":3,"b":2},"key2":"value2","key3":"value3"}"#;
    for _ in 0..3 {
        let got = get(&gw.url("/merged")).await;
        assert_eq!((got.status, got.complete()), (200, Some("true")));
        assert_eq!(
            got.body, expected,
            "same inputs, same bytes, in declaration order"
        );
        assert_eq!(got.headers["content-type"], "application/json");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_are_called_at_the_same_time() {
    // Each backend answers only once all three calls have arrived: a gateway
    // that called them one after another would never get an answer.
    let gate = Gate::new(3);
    let b = backend(&[
        ("/a", Reply::json(r#"{"a":1}"#).gated(&gate)),
        ("/b", Reply::json(r#"{"b":2}"#).gated(&gate)),
        ("/c", Reply::json(r#"{"c":3}"#).gated(&gate)),
    ])
    .await;
    let gw = TestGateway::start(
        r#"
upstreams: { s: { url: "${env.S}" } }
endpoints:
  - route: GET /all
    timeout: 3s
    backends:
      - { name: a, upstream: s, path: /a, required: true }
      - { name: b, upstream: s, path: /b, required: true }
      - { name: c, upstream: s, path: /c, required: true }
"#,
        &[("S", b.url(""))],
    )
    .await;
    let got = get(&gw.url("/all")).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (200, r#"{"a":1,"b":2,"c":3}"#)
    );
}

const PARTIAL: &str = r#"
upstreams: { s: { url: "${env.S}" } }
endpoints:
  - route: GET /users/{id}
    expose_errors: true
    backends:
      - { name: profile, upstream: s, path: "/profile/{id}", required: true, into: user }
      - { name: loyalty, upstream: s, path: "/loyalty/{id}", into: loyalty }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optional_failure_gives_a_partial_answer_that_says_so() {
    let b = backend(&[
        ("/profile/7", Reply::json(r#"{"name":"Ada"}"#)),
        ("/loyalty/7", Reply::json(r#"{"oops":true}"#).status(500)),
    ])
    .await;
    let gw = TestGateway::start(PARTIAL, &[("S", b.url(""))]).await;
    let got = get(&gw.url("/users/7")).await;
    assert_eq!((got.status, got.complete()), (200, Some("false")));
    assert!(
        got.headers.get("cache-control").is_none(),
        "partial answers carry no cache-control"
    );
    assert_eq!(
        got.json(),
        json!({
            "user": {"name": "Ada"},
            "_errors": {"loyalty": {"kind": "status", "status": 500, "message": "answered 500 Internal Server Error"}}
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_failure_fails_fast_and_cancels_the_other_calls() {
    let b = backend(&[
        (
            "/authorize",
            Reply::json(r#"{"declined":true}"#)
                .status(503)
                .delay(Duration::from_millis(30)),
        ),
        ("/stock", slow(30_000, r#"{"left":7}"#)),
    ])
    .await;
    let gw = TestGateway::start(
        r#"
server: { request_timeout: 60s }
upstreams: { s: { url: "${env.S}" } }
endpoints:
  - route: GET /checkout
    expose_errors: true
    timeout: 60s
    backends:
      - { name: payment, upstream: s, path: /authorize, required: true }
      - { name: stock, upstream: s, path: /stock, required: true }
"#,
        &[("S", b.url(""))],
    )
    .await;
    let start = Instant::now();
    let got = get(&gw.url("/checkout")).await;
    assert!(
        start.elapsed() < WELL_BEFORE_THE_SLOW_CALL,
        "took {:?}",
        start.elapsed()
    );
    assert_eq!((got.status, got.complete()), (502, Some("false")));
    let body = got.json();
    assert_eq!(body["error"], "required backend `payment` failed");
    assert_eq!(body["_errors"]["payment"]["kind"], "status");
    assert_eq!(body["_errors"]["stock"]["kind"], "cancelled");
    assert_eq!(
        b.wait_abandoned(1).await,
        1,
        "the slow backend saw its call dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_give_504_when_required_and_partial_answers_when_optional() {
    let b = backend(&[
        ("/fast", Reply::json(r#"{"fast":1}"#)),
        ("/slow", slow(30_000, r#"{"slow":1}"#)),
    ])
    .await;
    let gw = TestGateway::start(
        r#"
upstreams: { s: { url: "${env.S}" } }
endpoints:
  - route: GET /own-timeout
    expose_errors: true
    backends:
      - { name: fast, upstream: s, path: /fast }
      - { name: slow, upstream: s, path: /slow, required: true, timeout: 100ms }
  - route: GET /deadline-optional
    timeout: 150ms
    expose_errors: true
    backends:
      - { name: fast, upstream: s, path: /fast }
      - { name: slow, upstream: s, path: /slow }
  - route: GET /deadline-required
    timeout: 150ms
    backends:
      - { name: fast, upstream: s, path: /fast }
      - { name: slow, upstream: s, path: /slow, required: true }
"#,
        &[("S", b.url(""))],
    )
    .await;
    let got = get(&gw.url("/own-timeout")).await;
    assert_eq!(got.status, 504);
    assert_eq!(got.json()["_errors"]["slow"]["kind"], "timeout");

    let got = get(&gw.url("/deadline-optional")).await;
    assert_eq!((got.status, got.complete()), (200, Some("false")));
    assert_eq!(got.json()["fast"], 1);
    assert_eq!(got.json()["_errors"]["slow"]["kind"], "timeout");

    let got = get(&gw.url("/deadline-required")).await;
    assert_eq!(got.status, 504);
    assert_eq!(
        got.json(),
        json!({"error": "required backend `slow` failed"}),
        "no details unless exposed"
    );
    assert!(
        b.wait_abandoned(3).await >= 3,
        "every timed-out call was dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_status_returns_a_required_backends_4xx_as_is() {
    let b = backend(&[(
        "/profile/9",
        Reply::json(r#"{"error":"no user 9"}"#).status(404),
    )])
    .await;
    let gw = TestGateway::start(
        r#"
upstreams: { s: { url: "${env.S}" } }
endpoints:
  - route: GET /users/{id}
    backends:
      - { name: profile, upstream: s, path: "/profile/{id}", required: true, pass_status: true }
"#,
        &[("S", b.url(""))],
    )
    .await;
    let got = get(&gw.url("/users/9")).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (404, r#"{"error":"no user 9"}"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_call_gets_a_value_from_its_dependency() {
    let b = backend(&[
        (
            "/users/5",
            Reply::json(r#"{"account_id":"acc 42/x","name":"Ada"}"#),
        ),
        ("/orders", Reply::json(r#"[{"id":1},{"id":2}]"#)),
        ("/avatars/5", Reply::json(r#"{"url":"a.png"}"#)),
    ])
    .await;
    let gw = TestGateway::start(
        r#"
upstreams: { s: { url: "${env.S}" } }
endpoints:
  - route: GET /users/{id}/overview
    backends:
      - { name: profile, upstream: s, path: "/users/{id}", required: true, select: [name], into: profile }
      - { name: orders, upstream: s, path: "/orders?user={profile.account_id}", after: [profile], into: orders }
      - { name: avatar, upstream: s, path: "/avatars/{id}", into: avatar }
"#,
        &[("S", b.url(""))],
    )
    .await;
    let got = get(&gw.url("/users/5/overview")).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.json(),
        json!({"profile": {"name": "Ada"}, "orders": [{"id": 1}, {"id": 2}], "avatar": {"url": "a.png"}})
    );
    let paths: Vec<_> = b
        .seen()
        .into_iter()
        .map(|s| s.path_and_query().to_owned())
        .collect();
    assert!(
        paths.contains(&"/orders?user=acc%2042%2Fx".to_string()),
        "{paths:?}"
    );
    let orders_at = paths.iter().position(|p| p.starts_with("/orders")).unwrap();
    let profile_at = paths.iter().position(|p| p == "/users/5").unwrap();
    assert!(
        profile_at < orders_at,
        "orders waits for profile: {paths:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_after_another_that_reads_none_of_its_fields_still_runs() {
    // `after` only for ordering: `audit` reads nothing of `save`'s answer, and
    // used to be refused as if `save` had failed.
    let b = backend(&[
        ("/save", Reply::json(r#"{"saved":true}"#)),
        ("/audit", Reply::json(r#"{"logged":true}"#)),
    ])
    .await;
    let gw = TestGateway::start(
        r#"
upstreams: { s: { url: "${env.S}" } }
endpoints:
  - route: GET /save
    expose_errors: true
    backends:
      - { name: save, upstream: s, path: /save, required: true }
      - { name: audit, upstream: s, path: /audit, after: [save], required: true }
"#,
        &[("S", b.url(""))],
    )
    .await;
    let got = get(&gw.url("/save")).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.json(), json!({"saved": true, "logged": true}));
    let paths: Vec<_> = b
        .seen()
        .into_iter()
        .map(|s| s.path_and_query().to_owned())
        .collect();
    assert_eq!(paths, ["/save", "/audit"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_kind_is_reported_by_name() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let b = backend(&[
        ("/ok", Reply::json(r#"{"ok":true}"#)),
        ("/garbage", Reply::raw("application/json", "{not json")),
        ("/html", Reply::raw("text/html", "<html></html>")),
        ("/big", Reply::sized(200)),
        (
            "/deep",
            Reply::raw("application/json", r#"{"a":{"b":{"c":{"d":{}}}}}"#),
        ),
        ("/reset", Reply::reset_mid_body()),
        ("/down", Reply::json("{}").status(503)),
        ("/slow", slow(30_000, "{}")),
        ("/shape", Reply::json(r#"{"other":1}"#)),
    ])
    .await;
    // The body limit is above the 100 bytes the reset announces (it must
    // fail mid-body, not on its length) and below the 200 of `/big`.
    let gw = TestGateway::start(
        r#"
server: { max_backend_body: 128B, max_json_depth: 3 }
upstreams: { s: { url: "${env.S}" } }
endpoints:
  - route: GET /faults
    expose_errors: true
    backends:
      - { name: ok, upstream: s, path: /ok }
      - { name: refused, url: "${env.CLOSED}/x" }
      - { name: garbage, upstream: s, path: /garbage }
      - { name: html, upstream: s, path: /html }
      - { name: big, upstream: s, path: /big }
      - { name: deep, upstream: s, path: /deep }
      - { name: reset, upstream: s, path: /reset }
      - { name: down, upstream: s, path: /down }
      - { name: slow, upstream: s, path: /slow, timeout: 50ms }
      - { name: shape, upstream: s, path: /shape, extract: data }
      - { name: orphan, upstream: s, path: "/x/{down.id}", after: [down] }
"#,
        &[("S", b.url("")), ("CLOSED", format!("http://{closed}"))],
    )
    .await;
    let got = get(&gw.url("/faults")).await;
    assert_eq!((got.status, got.complete()), (200, Some("false")));
    let body = got.json();
    assert_eq!(body["ok"], true);
    let kinds: Vec<(String, String)> = body["_errors"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["kind"].as_str().unwrap().to_owned()))
        .collect();
    let expected = [
        ("refused", "connect"),
        ("garbage", "decode"),
        ("html", "decode"),
        ("big", "body_too_large"),
        ("deep", "decode"),
        ("reset", "connect"),
        ("down", "status"),
        ("slow", "timeout"),
        ("shape", "decode"),
        ("orphan", "dependency"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(kinds, expected, "{body:#}");
    // The gateway keeps serving normally afterwards.
    assert_eq!(get(&gw.url("/faults")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_every_backend_call() {
    let b = backend(&[
        ("/slow1", slow(30_000, "{}")),
        ("/slow2", slow(30_000, "{}")),
    ])
    .await;
    let gw = TestGateway::start(
        r#"
server: { request_timeout: 60s }
upstreams: { s: { url: "${env.S}" } }
endpoints:
  - route: GET /both
    timeout: 60s
    backends:
      - { name: one, upstream: s, path: /slow1 }
      - { name: two, upstream: s, path: /slow2 }
"#,
        &[("S", b.url(""))],
    )
    .await;
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /both HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(b.wait_requests(2).await, 2, "both calls were made");
    drop(stream);
    assert_eq!(
        b.wait_abandoned(2).await,
        2,
        "both calls were dropped when the client left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_path_values_never_leave_their_segment() {
    let b = backend(&[]).await;
    let gw = TestGateway::start(
        r#"
upstreams: { users: { url: "${env.S}/api" } }
endpoints:
  - route: GET /users/{id}
    backends:
      - { name: user, upstream: users, path: "/users/{id}" }
"#,
        &[("S", b.url(""))],
    )
    .await;
    for (sent, reached) in [
        ("..%2Fadmin", "/api/users/..%2Fadmin"),
        ("..", "/api/users/%2E%2E"),
        ("a@evil.com", "/api/users/a%40evil.com"),
        ("x%3Fy%23z", "/api/users/x%3Fy%23z"),
        ("%252e%252e", "/api/users/%252e%252e"),
        ("%2e%2e", "/api/users/%2E%2E"),
    ] {
        let before = b.seen().len();
        raw(
            gw.addr,
            &format!("GET /users/{sent} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
        )
        .await;
        let seen = b.seen();
        assert_eq!(seen.len(), before + 1, "{sent}");
        assert_eq!(seen[before].path_and_query(), reached, "{sent}");
    }
    // Raw traversal in the client's own path does not match the route at all.
    let response = raw(
        gw.addr,
        "GET /users/../admin HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    assert!(
        b.seen()
            .iter()
            .all(|s| !s.path_and_query().contains("/admin") || s.path_and_query().contains("%2F"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allow_listed_headers_and_query_reach_backends() {
    let b = backend(&[("/search", Reply::json(r#"{"hits":[]}"#))]).await;
    let gw = TestGateway::start(
        r#"
upstreams:
  s: { url: "${env.S}", headers: { X-Api-Key: "${env.KEY:-dev}" } }
endpoints:
  - route: GET /search
    forward_headers: [Authorization, Accept-Language]
    forward_query: [q]
    backends:
      - { name: search, upstream: s, path: /search }
"#,
        &[("S", b.url(""))],
    )
    .await;
    let got = get_with(
        &gw.url("/search?q=rust%20lang&admin=1"),
        &[
            ("authorization", "Bearer t"),
            ("cookie", "session=secret"),
            ("x-internal", "1"),
            ("accept-language", "fr"),
            ("x-forwarded-for", "10.0.0.1"),
        ],
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = b.seen().pop().unwrap();
    assert_eq!(seen.path_and_query(), "/search?q=rust%20lang");
    let h = &seen.headers;
    assert_eq!(h["authorization"], "Bearer t");
    assert_eq!(h["accept-language"], "fr");
    assert_eq!(h["x-api-key"], "dev");
    assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    assert_eq!(h["x-forwarded-host"], gw.addr.to_string());
    // The backend's own host, once, never the client's.
    assert_eq!(h["host"], b.addr().to_string());
    assert_eq!(h.get_all("host").iter().count(), 1);
    assert!(
        h.get("cookie").is_none() && h.get("x-internal").is_none(),
        "{h:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_methods_and_oversized_bodies_get_clear_errors() {
    let b = backend(&[("/a", Reply::json("{}"))]).await;
    let gw = TestGateway::start(
        r#"
server: { max_request_body: 1KiB }
upstreams: { s: { url: "${env.S}" } }
endpoints:
  - { route: GET /a, backends: [{ name: a, upstream: s, path: /a }] }
"#,
        &[("S", b.url(""))],
    )
    .await;
    let got = get(&gw.url("/nope")).await;
    assert_eq!(
        (got.status, got.json()),
        (404, json!({"error": "no endpoint for GET /nope"}))
    );
    let response = raw(
        gw.addr,
        "POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
    let response = raw(
        gw.addr,
        "GET /a HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response.contains("larger than the 1024 bytes allowed"),
        "{response}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_without_tls_is_served() {
    let b = backend(&[("/a", Reply::json(r#"{"a":1}"#))]).await;
    let gw = TestGateway::start(
        r#"
upstreams: { s: { url: "${env.S}" } }
endpoints:
  - { route: GET /a, backends: [{ name: a, upstream: s, path: /a }] }
"#,
        &[("S", b.url(""))],
    )
    .await;
    use http_body_util::{BodyExt, Empty};
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Empty<bytes::Bytes>>();
    let response = h2.get(gw.url("/a").parse().unwrap()).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"a":1}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_and_stops_accepting() {
    let b = backend(&[("/slow", slow(300, r#"{"done":true}"#))]).await;
    let mut gw = TestGateway::start(
        r#"
server: { shutdown_grace: 10s }
upstreams: { s: { url: "${env.S}" } }
endpoints:
  - { route: GET /slow, backends: [{ name: s, upstream: s, path: /slow }] }
"#,
        &[("S", b.url(""))],
    )
    .await;
    let url = gw.url("/slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    assert_eq!(b.wait_requests(1).await, 1, "the call is in flight");
    gw.shutdown();
    let got = in_flight.await.unwrap();
    assert_eq!((got.status, got.body.as_str()), (200, r#"{"done":true}"#));
    gw.stopped.take().unwrap().await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(gw.addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_backend_fails_the_answer_is_502_or_504() {
    let b = backend(&[
        ("/down1", Reply::json("{}").status(500)),
        ("/down2", Reply::raw("application/json", "nope")),
        ("/slow", slow(30_000, "{}")),
    ])
    .await;
    let gw = TestGateway::start(
        r#"
upstreams: { s: { url: "${env.S}" } }
endpoints:
  - route: GET /broken
    backends:
      - { name: a, upstream: s, path: /down1 }
      - { name: b, upstream: s, path: /down2 }
  - route: GET /stuck
    timeout: 100ms
    backends:
      - { name: a, upstream: s, path: /slow }
      - { name: b, upstream: s, path: /slow }
"#,
        &[("S", b.url(""))],
    )
    .await;
    let got = get(&gw.url("/broken")).await;
    assert_eq!((got.status, got.complete()), (502, Some("false")));
    assert_eq!(got.json(), json!({"error": "every backend failed"}));
    let got = get(&gw.url("/stuck")).await;
    assert_eq!((got.status, got.complete()), (504, Some("false")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_only_see_allow_listed_query_parameters() {
    let b = backend(&[("/s", Reply::json("{}"))]).await;
    let gw = TestGateway::start(
        r#"
upstreams: { s: { url: "${env.S}" } }
endpoints:
  - route: GET /s
    forward_query: [q]
    backends:
      - { name: s, upstream: s, path: "/s?term={query.q}" }
"#,
        &[("S", b.url(""))],
    )
    .await;
    let got = get(&gw.url("/s?q=a%26b&secret=1")).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        b.seen().pop().unwrap().path_and_query(),
        "/s?term=a%26b&q=a%26b"
    );
}

/// A body that arrives in several chunks, with pauses between them, is
/// joined whole (and the keys of the one that arrived as one frame are kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_in_many_chunks_are_joined() {
    let pieces = [r#"{"slow": ["a","#, r#" "b"], "#, r#""n": 1}"#];
    let b = backend(&[
        ("/one", Reply::json(r#"{"fast": true}"#)),
        ("/chunked", Reply::chunks(pieces, Duration::from_millis(20))),
    ])
    .await;
    let gw = TestGateway::start(
        r#"
endpoints:
  - route: GET /both
    backends:
      - { name: fast, url: "${env.B}/one" }
      - { name: slow, url: "${env.B}/chunked" }
"#,
        &[("B", b.url(""))],
    )
    .await;
    let got = get(&gw.url("/both")).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body, r#"{"fast":true,"slow":["a","b"],"n":1}"#);
}
