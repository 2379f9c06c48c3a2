//! Write endpoints, pass-through routes and response control (product.md
//! §2.7), black-box: a real gateway, `fanout-mock` backends that record the
//! bytes they receive, real clients on loopback.

use std::time::Duration;

use bytes::Bytes;
use fanout_gateway::{Plan, config::Format};
use fanout_mock::{Mock, MockServer, Reply, Script};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::support::*;

async fn mock(routes: Vec<(Method, &str, Script)>) -> MockServer {
    let mut builder = Mock::builder();
    for (method, path, script) in routes {
        builder = builder.route(method, path, script);
    }
    builder.start().await.unwrap()
}

/// Sends `method url` with these headers and body; reads the answer whole.
async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: &str) -> Got {
    let mut request = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Got {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn post_json(url: &str, body: &str) -> Got {
    send(
        Method::POST,
        url,
        &[("content-type", "application/json")],
        body,
    )
    .await
}

const CHECKOUT: &str = r#"
upstreams:
  payments: { url: "${env.PAY}" }
  audit: { url: "${env.AUDIT}" }
endpoints:
  - route: POST /checkout/{cart}
    forward_query: [lang]
    backends:
      - { name: payment, upstream: payments, path: /charges, method: POST, body: forward, required: true }
      - name: audit
        upstream: audit
        path: "/events/{body.user.id}"
        method: POST
        after: [payment]
        body:
          amount: "{body.amount}"
          items: "{body.items}"
          charge: "{payment.id}"
          cart: "{cart}"
          label: "order-{cart} ({query.lang})"
          query: "{{ charge(id: {payment.id}) {{ status }} }}"
"#;

async fn checkout() -> (MockServer, MockServer, TestGateway) {
    let pay = mock(vec![(
        Method::POST,
        "/charges",
        Reply::json(r#"{"id":"ch_1","status":"paid"}"#).into(),
    )])
    .await;
    let audit = mock(vec![(Method::POST, "/events/{user}", Reply::echo().into())]).await;
    let gw = TestGateway::start(CHECKOUT, &[("PAY", pay.url("")), ("AUDIT", audit.url(""))]).await;
    (pay, audit, gw)
}

#[tokio::test]
async fn forwarded_and_templated_bodies_reach_the_backends_as_the_contract_says() {
    let (pay, audit, gw) = checkout().await;
    let sent = "{\"user\": {\"id\": 7},\n \"amount\": 12.50, \"items\": [{\"sku\": \"a\"}]}";
    let got = post_json(&gw.url("/checkout/c-9?lang=fr&other=x"), sent).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.complete(), Some("true"));

    let charge = &pay.seen()[0];
    assert_eq!(charge.body_text(), Some(sent), "forwarded byte for byte");
    assert_eq!(charge.headers["content-type"], "application/json");
    assert_eq!(charge.path_and_query(), "/charges?lang=fr");

    let event = &audit.seen()[0];
    assert_eq!(event.path(), "/events/7", "{{body.user.id}} in the path");
    assert_eq!(event.headers["content-type"], "application/json");
    assert_eq!(
        event.body_text(),
        Some(
            r#"{"amount":12.5,"items":[{"sku":"a"}],"charge":"ch_1","cart":"c-9","label":"order-c-9 (fr)","query":"{ charge(id: ch_1) { status } }"}"#
        ),
        "types kept, braces escaped"
    );
}

#[tokio::test]
async fn a_body_that_is_not_the_json_a_template_needs_is_a_400_before_any_call() {
    let (pay, audit, gw) = checkout().await;
    let url = gw.url("/checkout/c-9");
    for (body, says) in [
        (
            "{\"amount\": 1",
            "the request body is not JSON (EOF while parsing an object at line 1 column 12), and {body.user.id} needs its JSON",
        ),
        (
            r#"{"amount": 1, "items": []}"#,
            "the request body has no `user.id` ({body.user.id})",
        ),
        (
            r#"{"user": {"id": 7}, "items": []}"#,
            "the request body has no `amount` ({body.amount})",
        ),
        (
            r#"{"user": {"id": {"nested": true}}, "amount": 1, "items": []}"#,
            "{body.user.id} is an object, which cannot fill a URL",
        ),
        (
            r#"{"user": {"id": ""}, "amount": 1, "items": []}"#,
            "{body.user.id} is empty, and would leave an empty path segment",
        ),
    ] {
        let got = post_json(&url, body).await;
        assert_eq!(got.status, 400, "{body}: {}", got.body);
        assert_eq!(got.json()["error"], says, "{body}");
    }
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let got = post_json(&url, &deep).await;
    assert_eq!(got.status, 400);
    assert!(
        got.body.contains("nested deeper than 64 levels"),
        "{}",
        got.body
    );
    let got = send(
        Method::POST,
        &url,
        &[("content-encoding", "gzip")],
        "\u{1f}\u{8b}",
    )
    .await;
    assert_eq!(got.status, 400);
    assert!(got.body.contains("encoded (gzip)"), "{}", got.body);
    assert_eq!(pay.stats().requests, 0, "no backend was called");
    assert_eq!(audit.stats().requests, 0);
}

/// Sends raw HTTP/1.1 bytes; returns what came back until the server
/// closed or 5 s passed.
async fn raw_exchange(addr: std::net::SocketAddr, parts: &[&[u8]], pause: Duration) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    for part in parts {
        // The server may answer (and close) before every part is sent.
        if stream.write_all(part).await.is_err() {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_with_no_call_however_it_is_sent() {
    let echo = mock(vec![(Method::POST, "/in", Reply::echo().into())]).await;
    let gw = TestGateway::start(
        r#"
server: { max_request_body: 1KiB }
endpoints:
  - route: POST /in
    timeout: 2s
    backends:
      - { name: in, url: "${env.B}/in", method: POST, body: forward }
"#,
        &[("B", echo.url(""))],
    )
    .await;
    let big = "x".repeat(2000);
    let got = send(Method::POST, &gw.url("/in"), &[], &big).await;
    assert_eq!(got.status, 413, "declared: {}", got.body);
    assert_eq!(
        got.json()["error"],
        "the request body is larger than the 1024 bytes allowed"
    );

    // Chunked, with no length announced, growing past the limit.
    let head = b"POST /in HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\n\r\n";
    let chunk = format!("200\r\n{}\r\n", "y".repeat(512));
    let answer = raw_exchange(
        gw.addr,
        &[
            head,
            chunk.as_bytes(),
            chunk.as_bytes(),
            chunk.as_bytes(),
            b"0\r\n\r\n",
        ],
        Duration::from_millis(20),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "chunked: {answer}");

    // Just within the limit, chunked: forwarded whole.
    let answer = raw_exchange(
        gw.addr,
        &[head, chunk.as_bytes(), chunk.as_bytes(), b"0\r\n\r\nGET"],
        Duration::from_millis(20),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        echo.stats().requests,
        1,
        "only the body within the limit was sent on"
    );
    assert_eq!(echo.seen()[0].body_len, 1024);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_within_the_deadline_is_a_408() {
    let echo = mock(vec![(Method::POST, "/in", Reply::echo().into())]).await;
    let gw = TestGateway::start(
        r#"
endpoints:
  - route: POST /in
    timeout: 300ms
    backends:
      - { name: in, url: "${env.B}/in", method: POST, body: forward }
"#,
        &[("B", echo.url(""))],
    )
    .await;
    let answer = raw_exchange(
        gw.addr,
        &[b"POST /in HTTP/1.1\r\nhost: gw\r\ncontent-length: 10\r\n\r\nabc"],
        Duration::from_millis(10),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("within the endpoint's deadline of 300ms"),
        "{answer}"
    );
    assert_eq!(echo.stats().requests, 0);
}

#[tokio::test]
async fn a_retried_put_sends_the_same_bytes_to_every_attempt() {
    let store = mock(vec![(
        Method::PUT,
        "/docs/{id}",
        Script::from([
            Reply::json("{}").status(503),
            Reply::json("{}").status(502),
            Reply::echo(),
        ]),
    )])
    .await;
    let gw = TestGateway::start(
        r#"
upstreams:
  store: { url: "${env.B}", retry: { attempts: 3, backoff: 5ms, budget: 100% } }
endpoints:
  - route: PUT /docs/{id}
    backends:
      - { name: put, upstream: store, path: "/docs/{id}", method: PUT, body: forward, required: true }
"#,
        &[("B", store.url(""))],
    )
    .await;
    let sent = "\u{1}binary\u{0}-ish body";
    let got = send(
        Method::PUT,
        &gw.url("/docs/7"),
        &[("content-type", "application/octet-stream")],
        sent,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let seen = store.seen();
    assert_eq!(seen.len(), 3);
    for attempt in &seen {
        assert_eq!(attempt.body_text(), Some(sent));
        assert_eq!(attempt.headers["content-type"], "application/octet-stream");
    }
}

#[tokio::test]
async fn arrays_answered_in_reverse_order_are_appended_in_declaration_order() {
    let posts = mock(vec![
        (
            Method::GET,
            "/mine",
            Reply::json(r#"[{"id":1},{"id":2}]"#)
                .delay(Duration::from_millis(400))
                .into(),
        ),
        (
            Method::GET,
            "/group",
            Reply::json(r#"[{"id":3}]"#)
                .delay(Duration::from_millis(200))
                .into(),
        ),
        (Method::GET, "/pinned", Reply::json(r#"[{"id":4}]"#).into()),
    ])
    .await;
    let gw = TestGateway::start(
        r#"
upstreams:
  posts: { url: "${env.B}" }
endpoints:
  - route: GET /feed
    response: { root: items }
    backends:
      - { name: mine, upstream: posts, path: /mine, into: items }
      - { name: group, upstream: posts, path: /group, into: items, append: true }
      - { name: pinned, upstream: posts, path: /pinned, into: items, append: true }
"#,
        &[("B", posts.url(""))],
    )
    .await;
    let got = get(&gw.url("/feed")).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body, r#"[{"id":1},{"id":2},{"id":3},{"id":4}]"#);
    let arrival: Vec<String> = posts.seen().iter().map(|s| s.path().to_owned()).collect();
    assert_eq!(arrival.len(), 3, "{arrival:?}");
}

#[tokio::test]
async fn a_fallback_stands_in_for_a_failed_backend_and_return_headers_follow_the_rules() {
    let b = mock(vec![
        (
            Method::GET,
            "/main",
            Reply::json(r#"{"title":"t"}"#)
                .header("set-cookie", "session=1; HttpOnly")
                .header("cache-control", "max-age=60")
                .header("x-version", "main")
                .into(),
        ),
        (
            Method::GET,
            "/prefs",
            Reply::json(r#"{"theme":"dark"}"#)
                .header("set-cookie", "theme=dark")
                .header("set-cookie", "lang=fr")
                .header("cache-control", "no-store")
                .header("x-version", "prefs")
                .header("x-other", "kept")
                .into(),
        ),
        (
            Method::GET,
            "/ads",
            Script::from([
                Reply::json(r#"{"slots":[1]}"#),
                Reply::json("{}").status(500),
            ]),
        ),
    ])
    .await;
    let gw = TestGateway::start(
        r#"
upstreams:
  b: { url: "${env.B}" }
endpoints:
  - route: GET /page
    backends:
      - { name: main, upstream: b, path: /main, required: true, return_headers: [set-cookie, cache-control, x-version] }
      - { name: prefs, upstream: b, path: /prefs, return_headers: [set-cookie, x-version, x-other, cache-control] }
      - { name: ads, upstream: b, path: /ads, into: ads, fallback: { slots: [] } }
"#,
        &[("B", b.url(""))],
    )
    .await;
    let values = |got: &Got, name: &str| -> Vec<String> {
        got.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };

    let got = get(&gw.url("/page")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.complete(), Some("true"));
    assert_eq!(
        got.json(),
        serde_json::json!({"title": "t", "theme": "dark", "ads": {"slots": [1]}})
    );
    assert_eq!(
        values(&got, "set-cookie"),
        ["session=1; HttpOnly", "theme=dark", "lang=fr"],
        "every backend's cookies, in declaration order"
    );
    assert_eq!(
        values(&got, "cache-control"),
        ["max-age=60"],
        "the first backend's"
    );
    assert_eq!(values(&got, "x-version"), ["main"]);
    assert_eq!(values(&got, "x-other"), ["kept"]);
    assert_eq!(values(&got, "content-type"), ["application/json"]);

    // Now ads fails: its fallback stands in, the answer is partial and
    // carries no cache-control.
    let got = get(&gw.url("/page")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.complete(), Some("false"));
    assert_eq!(got.json()["ads"], serde_json::json!({"slots": []}));
    assert!(
        got.headers.get("cache-control").is_none(),
        "{:?}",
        got.headers
    );
    assert_eq!(values(&got, "set-cookie").len(), 3);
}

const PASS: &str = r#"
upstreams:
  graph: { url: "${env.B}", breaker: { failures: 2, cooldown: 1m } }
endpoints:
  - route: POST /graphql
    forward_headers: [authorization, x-secret]
    proxy: { upstream: graph, path: /api/graphql }
  - route: GET /files/{name}
    timeout: 1s
    forward_query: [v]
    proxy: { upstream: graph }
  - route: PUT /small
    proxy: { upstream: graph, path: /echo, max_body: 100 }
"#;

#[tokio::test]
async fn a_pass_through_passes_body_status_and_end_to_end_headers_and_drops_hop_by_hop_ones() {
    let graph = mock(vec![
        (Method::POST, "/api/graphql", Reply::echo().into()),
        (
            Method::GET,
            "/files/{name}",
            Reply::raw("text/plain", "a file")
                .status(203)
                .header("etag", "\"v1\"")
                .header("connection", "x-upstream-hop")
                .header("x-upstream-hop", "leaks")
                .header("keep-alive", "timeout=5")
                .header("set-cookie", "a=1")
                .header("set-cookie", "b=2")
                .into(),
        ),
    ])
    .await;
    let gw = TestGateway::start(PASS, &[("B", graph.url(""))]).await;

    let query = r#"{"query":"{ me { name } }"}"#;
    let got = send(
        Method::POST,
        &gw.url("/graphql?x=1"),
        &[
            ("content-type", "application/graphql+json"),
            ("accept", "application/json"),
            ("authorization", "Bearer t"),
            ("connection", "x-secret"),
            ("x-secret", "hop"),
            ("x-not-allowed", "no"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic x"),
        ],
        query,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(
        got.headers.get("x-fanout-complete").is_none(),
        "not a merged answer"
    );
    let seen = &graph.seen()[0];
    assert_eq!(seen.body_text(), Some(query));
    assert_eq!(
        seen.path_and_query(),
        "/api/graphql",
        "only allow-listed query values"
    );
    let sent = |name: &str| {
        seen.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(
        sent("content-type").as_deref(),
        Some("application/graphql+json")
    );
    assert_eq!(sent("content-length"), Some(query.len().to_string()));
    assert_eq!(sent("accept").as_deref(), Some("application/json"));
    assert_eq!(sent("authorization").as_deref(), Some("Bearer t"));
    for dropped in [
        "x-secret",
        "x-not-allowed",
        "te",
        "proxy-authorization",
        "connection",
    ] {
        assert_eq!(sent(dropped), None, "{dropped} reached the upstream");
    }
    assert!(sent("x-forwarded-for").is_some());

    let got = get(&gw.url("/files/a.txt?v=2&w=3")).await;
    assert_eq!(got.status, 203);
    assert_eq!(got.body, "a file");
    assert_eq!(got.headers["content-type"], "text/plain");
    assert_eq!(got.headers["etag"], "\"v1\"");
    assert_eq!(got.headers.get_all("set-cookie").iter().count(), 2);
    for dropped in ["x-upstream-hop", "keep-alive"] {
        assert!(
            got.headers.get(dropped).is_none(),
            "{dropped} reached the client"
        );
    }
    assert_eq!(graph.seen()[1].path_and_query(), "/files/a.txt?v=2");
}

#[tokio::test]
async fn a_pass_through_refuses_an_upload_over_its_max_body_with_413() {
    let graph = mock(vec![(Method::PUT, "/echo", Reply::echo().into())]).await;
    let gw = TestGateway::start(PASS, &[("B", graph.url(""))]).await;
    let got = send(Method::PUT, &gw.url("/small"), &[], &"x".repeat(101)).await;
    assert_eq!(got.status, 413, "{}", got.body);
    assert_eq!(
        graph.stats().requests,
        0,
        "declared: refused before any call"
    );

    let head = b"PUT /small HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\n\r\n";
    let chunk = format!("40\r\n{}\r\n", "y".repeat(64));
    // Twice: the upstream's breaker opens after two failures, and these are
    // the client's, not the upstream's.
    for _ in 0..2 {
        let answer = raw_exchange(
            gw.addr,
            &[head, chunk.as_bytes(), chunk.as_bytes(), b"0\r\n\r\n"],
            Duration::from_millis(50),
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "streamed past the limit: {answer}"
        );
    }
    // The upstream saw the call begin, then break off within the limit.
    for seen in graph.seen() {
        assert!(seen.body_len <= 100, "{} bytes went up", seen.body_len);
    }

    let got = send(Method::PUT, &gw.url("/small"), &[], &"z".repeat(100)).await;
    assert_eq!(got.status, 200, "the circuit is closed: {}", got.body);
}

#[tokio::test]
async fn a_pass_through_answer_is_cut_when_the_deadline_passes_mid_body() {
    let graph = mock(vec![(
        Method::GET,
        "/files/{name}",
        Reply::drip(Duration::from_millis(20)).into(),
    )])
    .await;
    let gw = TestGateway::start(PASS, &[("B", graph.url(""))]).await;
    let started = std::time::Instant::now();
    let response = client()
        .get(gw.url("/files/slow").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the head came in time");
    let body = response.into_body().collect().await;
    assert!(body.is_err(), "the body was cut off, not ended cleanly");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "cut at the 1 s deadline: {took:?}"
    );
    assert_eq!(graph.wait_idle().await, 0, "the upstream call was dropped");
}

#[tokio::test]
async fn a_pass_through_goes_through_its_upstreams_breaker() {
    let graph = mock(vec![(
        Method::POST,
        "/api/graphql",
        Reply::json(r#"{"errors":["down"]}"#).status(500).into(),
    )])
    .await;
    let gw = TestGateway::start(PASS, &[("B", graph.url(""))]).await;
    for _ in 0..2 {
        let got = post_json(&gw.url("/graphql"), "{}").await;
        assert_eq!(got.status, 500, "the upstream's own answer, passed on");
        assert_eq!(got.body, r#"{"errors":["down"]}"#);
    }
    let got = post_json(&gw.url("/graphql"), "{}").await;
    assert_eq!(got.status, 503, "{}", got.body);
    assert_eq!(got.json()["error"], "required backend `graph` failed");
    assert_eq!(graph.stats().requests, 2, "the open circuit made no call");
}

#[tokio::test]
async fn a_pass_through_download_stops_the_upstream_while_the_client_does_not_read() {
    const SIZE: usize = 64 << 20;
    let graph = Mock::builder()
        .route(Method::GET, "/files/{name}", Reply::sized(SIZE))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let config = format!(
        "server: {{ request_timeout: 60s }}\n{}",
        PASS.replace("timeout: 1s", "timeout: 60s")
    );
    let gw = TestGateway::start(&config, &[("B", graph.url(""))]).await;
    // A client that reads the head, then nothing (a small receive buffer,
    // so that what waits in the kernel on its side is small too).
    let stream = stalled_reader(&gw, "/files/big").await;
    // With the socket buffers full, the gateway stops reading the upstream,
    // which cannot finish sending: a gateway that buffered the answer would
    // have taken all 64 MiB from it by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(graph.stats().in_flight, 1, "the upstream is still sending");
    assert_eq!(graph.stats().abandoned, 0);
    // The client goes away: the upstream call ends with it.
    drop(stream);
    assert_eq!(graph.wait_idle().await, 0, "the upstream call was dropped");
}

/// A client that connects with a tiny receive buffer, asks for `path` and
/// reads the answer's first bytes.
async fn stalled_reader(gw: &TestGateway, path: &str) -> tokio::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&gw.addr.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    let mut stream = tokio::net::TcpStream::from_std(socket.into()).unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: gw\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    stream
}

#[tokio::test]
async fn a_pass_through_whose_client_stops_reading_is_closed_after_the_write_timeout() {
    let graph = mock(vec![(
        Method::GET,
        "/files/{name}",
        Reply::sized(64 << 20).into(),
    )])
    .await;
    let config = format!(
        "server: {{ write_timeout: 300ms, request_timeout: 60s }}\n{}",
        PASS.replace("timeout: 1s", "timeout: 60s")
    );
    let gw = TestGateway::start(&config, &[("B", graph.url(""))]).await;
    let mut stream = stalled_reader(&gw, "/files/big").await;
    // The gateway gives up on the connection, and drops the upstream call.
    assert_eq!(graph.wait_idle().await, 0, "the upstream call was dropped");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection was closed");
    assert!(
        rest.len() < 64 << 20,
        "{} bytes reached a stalled reader",
        rest.len()
    );
}

#[tokio::test]
async fn a_pass_through_keeps_its_connection_while_the_upstream_pauses_longer_than_idle_timeout() {
    let graph = mock(vec![(
        Method::GET,
        "/files/{name}",
        Reply::drip(Duration::from_millis(600)).into(),
    )])
    .await;
    let config = format!(
        "server: {{ idle_timeout: 400ms }}\n{}",
        PASS.replace("timeout: 1s", "timeout: 3s")
    );
    let gw = TestGateway::start(&config, &[("B", graph.url(""))]).await;
    let started = std::time::Instant::now();
    let mut stream = stalled_reader(&gw, "/files/slow").await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got)).await;
    let took = started.elapsed();
    let dripped = String::from_utf8_lossy(&got).matches(' ').count();
    assert!(
        took >= Duration::from_millis(2500),
        "cut by the 3 s deadline, not the 400 ms idle timeout: {took:?}"
    );
    assert!(
        dripped >= 3,
        "bytes kept coming with pauses over idle_timeout: {dripped}"
    );
}

/// `fanout check`'s view: each problem of the write keys at its line and
/// column.
#[test]
fn write_keys_that_cannot_work_are_refused_where_they_are_written() {
    let yaml = r#"upstreams:
  u: { url: "http://127.0.0.1:1" }
endpoints:
  - route: GET /a
    backends:
      - { name: one, upstream: u, path: /one, method: POST, body: forward }
      - { name: two, upstream: u, path: "/two/{body.id}" }
      - { name: three, upstream: u, path: /three, body: { a: 1 } }
  - route: POST /b
    backends:
      - { name: body, upstream: u, path: /b }
      - name: one
        upstream: u
        path: /one
        method: POST
        body:
          ref: "{two.id}"
          list: ["{nope.id}", "{x"]
          cap: "{cart}"
      - { name: two, upstream: u, path: /two, required: true, fallback: {} }
      - { name: three, upstream: u, path: /three, append: true }
      - { name: four, upstream: u, path: /four, return_headers: [connection, content-type, set-cookie] }
  - route: POST /c
    backends: [{ name: one, upstream: u, path: /one }]
    proxy: { upstream: u }
  - route: GET /d/{id}
    proxy: { upstream: nope, path: "/d/{body.x}", max_body: 100GiB }
    response: { root: "a..b" }
"#;
    let err = Plan::parse(yaml, Format::Yaml, "write.yaml", |_| None).unwrap_err();
    let got: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
    let expected = [
        "6:67: `body: forward` sends the client's body, and a GET request has none: use it on a POST, PUT or PATCH route",
        "7:41: {body.id} reads the client's body, and a GET request has none: use it on a POST, PUT or PATCH route",
        "8:57: a GET call sends no body: give the backend `method: POST` (or PUT, PATCH)",
        "11:17: `body` is reserved for {body.field} in templates: pick another name",
        "17:16: {two.id} uses `two`'s answer, so `two` must be listed in `after`",
        "18:18: {nope.id}: no backend named `nope` in this endpoint (backends: body, four, one, three, two)",
        "18:31: `{` is not closed in template `{x`",
        "19:16: {cart} is not captured by route `POST /b` (it captures: none)",
        "20:73: a fallback stands in for an optional backend that failed, and a required one fails the response: remove `required: true` or the fallback",
        "21:59: append concatenates onto the array at the backend's `into`: give it an `into`",
        "22:66: `connection` describes a connection, not the answer: hop-by-hop headers are never passed on",
        "22:78: `content-type` is the gateway's own: it describes the merged answer, not this backend's",
        "25:12: an endpoint either calls `backends` or passes requests through with `proxy`, not both",
        "27:24: unknown upstream `nope` (defined upstreams: u)",
        "27:36: {body.x}: a pass-through streams the client's body without reading it",
        "27:61: max_body 100.0 GiB is more than 64.0 GiB",
        "28:15: a pass-through answers with the upstream's own answer: `response` shapes merged backends",
        "28:23: invalid field path \"a..b\": two dots in a row at byte 2 leave an empty key",
    ];
    for line in &expected {
        assert!(
            got.contains(&line.to_string()),
            "missing: {line}\ngot:\n{}",
            got.join("\n")
        );
    }
    assert_eq!(got.len(), expected.len(), "got:\n{}", got.join("\n"));
}

#[test]
fn a_body_template_problem_is_located_in_toml_and_json_too() {
    let toml = r#"
[upstreams.u]
url = "http://127.0.0.1:1"

[[endpoints]]
route = "POST /a"

[[endpoints.backends]]
name = "one"
upstream = "u"
path = "/one"
method = "POST"

[endpoints.backends.body]
amount = "{body.amount}"
ref = "{missing.id}"
"#;
    let err = Plan::parse(toml, Format::Toml, "write.toml", |_| None).unwrap_err();
    let got: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        ["16:7: {missing.id}: no backend named `missing` in this endpoint (backends: one)"]
    );
    let json = r#"{"upstreams": {"u": {"url": "http://127.0.0.1:1"}},
 "endpoints": [{"route": "POST /a", "backends": [
   {"name": "one", "upstream": "u", "path": "/one", "method": "POST",
    "body": {"nested": {"ref": "{missing.id}"}}}]}]}"#;
    let err = Plan::parse(json, Format::Json, "write.json", |_| None).unwrap_err();
    let got: Vec<String> = err.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        ["4:32: {missing.id}: no backend named `missing` in this endpoint (backends: one)"]
    );
}
