//! The mock over real sockets on 127.0.0.1, with a real hyper client.
//!
//! Timing is checked on tokio's paused clock where the mock's own timers are
//! the only ones running, and elsewhere only as "never" (a hang, a drip) or
//! through the mock's waits, never against a wall-clock threshold.

use std::{path::Path, time::Duration};

use bytes::Bytes;
use fanout_mock::{Gate, Mock, MockConfig, MockServer, Reply, Script, Stats};
use http::{HeaderMap, Method, Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::Instant,
};

type Http = Client<HttpConnector, Full<Bytes>>;

fn client() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response, read to the end.
#[derive(Debug)]
struct Got {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Got {
    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    fn content_type(&self) -> &str {
        self.headers["content-type"].to_str().unwrap()
    }
}

async fn send_on(client: &Http, request: Request<Full<Bytes>>) -> Got {
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Got {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn send(request: Request<Full<Bytes>>) -> Got {
    send_on(&client(), request).await
}

async fn get(url: &str) -> Got {
    send(Request::get(url).body(Full::default()).unwrap()).await
}

async fn start(routes: &[(&str, Script)]) -> MockServer {
    routes
        .iter()
        .fold(Mock::builder(), |builder, (path, replies)| {
            builder.any(path, replies.clone())
        })
        .start()
        .await
        .unwrap()
}

/// A mock from YAML, served on its own port.
async fn start_yaml(yaml: &str) -> MockServer {
    let config = MockConfig::parse(yaml).unwrap();
    Mock::new(&config, Path::new("."))
        .unwrap()
        .start()
        .await
        .unwrap()
}

// --- Replies -----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn json_replies_carry_their_status_delay_and_captures() {
    let mock = Mock::builder()
        .route(
            Method::GET,
            "/names/{email}",
            Reply::json(r#"{"email":"{email}"}"#),
        )
        .route(Method::GET, "/teapot", Reply::json("{}").status(418))
        .route(
            Method::GET,
            "/slow",
            Reply::json(r#"{"slow":1}"#).delay(Duration::from_secs(30)),
        )
        .start()
        .await
        .unwrap();
    let got = get(&mock.url("/names/a%22b@x")).await;
    assert_eq!((got.status, got.content_type()), (200, "application/json"));
    assert_eq!(got.json(), serde_json::json!({"email": "a%22b@x"}));
    assert_eq!(get(&mock.url("/teapot")).await.status, 418);

    let start = Instant::now();
    let got = get(&mock.url("/slow")).await;
    assert_eq!(got.text(), r#"{"slow":1}"#);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(30) && took < Duration::from_secs(31),
        "took {took:?} on the paused clock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_replies_send_any_body_and_content_type() {
    let mock = start(&[
        ("/html", Reply::raw("text/html", "<html></html>").into()),
        (
            "/garbage",
            Reply::raw("application/json", "{not json").into(),
        ),
        (
            "/bytes",
            Reply::raw("application/octet-stream", &[0u8, 255, 7][..])
                .status(202)
                .into(),
        ),
    ])
    .await;
    let got = get(&mock.url("/html")).await;
    assert_eq!(
        (got.status, got.content_type(), got.text()),
        (200, "text/html", "<html></html>")
    );
    assert_eq!(get(&mock.url("/garbage")).await.text(), "{not json");
    let got = get(&mock.url("/bytes")).await;
    assert_eq!((got.status, &got.body[..]), (202, &[0u8, 255, 7][..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_headers_are_sent_with_every_value() {
    let mock = start(&[(
        "/login",
        Reply::json("{}")
            .header("set-cookie", "a=1")
            .header("set-cookie", "b=2")
            .header("cache-control", "max-age=60")
            .into(),
    )])
    .await;
    let got = get(&mock.url("/login")).await;
    let cookies: Vec<_> = got.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(got.headers["cache-control"], "max-age=60");
    assert_eq!(got.content_type(), "application/json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sized_bodies_are_that_long_and_json() {
    let mock = start(&[
        ("/0", Reply::sized(0).into()),
        ("/1", Reply::sized(1).into()),
        ("/big", Reply::sized(100_000).into()),
    ])
    .await;
    assert_eq!(get(&mock.url("/0")).await.body.len(), 0);
    assert_eq!(get(&mock.url("/1")).await.json(), 0);
    let got = get(&mock.url("/big")).await;
    assert_eq!(got.body.len(), 100_000);
    assert_eq!(got.headers["content-length"], "100000");
    assert_eq!(got.json().as_str().unwrap().len(), 99_998);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_mid_body_announces_a_length_sends_a_little_then_breaks() {
    let mock = start(&[("/reset", Reply::reset_mid_body().into())]).await;
    let response = client()
        .get(mock.url("/reset").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "100");
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(!first.is_empty() && first.len() < 100, "{first:?}");
    assert!(body.collect().await.is_err(), "the rest is cut off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_never_answers_and_counts_as_abandoned_when_the_caller_leaves() {
    let mock = start(&[("/hang", Reply::hang().into())]).await;
    let url = mock.url("/hang");
    let hang = get(&url);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), hang)
            .await
            .is_err(),
        "no answer"
    );
    assert_eq!(mock.wait_abandoned(1).await, 1);
    assert_eq!(mock.wait_idle().await, 0);
    assert_eq!(mock.stats().requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drip_sends_the_head_then_a_byte_at_a_time_forever() {
    let mock = start(&[("/drip", Reply::drip(Duration::from_millis(10)).into())]).await;
    let response = client()
        .get(mock.url("/drip").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("content-length").is_none());
    let mut body = response.into_body();
    for _ in 0..3 {
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(frame.len(), 1);
    }
    assert_eq!(
        mock.stats().in_flight,
        1,
        "a call counts while its body is sent"
    );
    let rest = tokio::time::timeout(Duration::from_millis(300), body.collect()).await;
    assert!(
        rest.is_err(),
        "and never ends (the body is dropped with the timeout)"
    );
    assert_eq!(mock.wait_idle().await, 0, "the dropped body ended the call");
    assert_eq!(mock.stats().abandoned, 0, "its head had been sent");
}

/// Each piece is its own frame, sent after its pause: the caller reads the
/// first before the second exists.
#[tokio::test(start_paused = true)]
async fn chunks_arrive_one_frame_at_a_time_after_their_pauses() {
    let pause = Duration::from_millis(20);
    let mock = start(&[(
        "/chunks",
        Reply::chunks([r#"{"slow": ["a","#, r#" "b"], "#, r#""n": 1}"#], pause).into(),
    )])
    .await;
    let start = Instant::now();
    let response = client()
        .get(mock.url("/chunks").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(response.headers().get("content-length").is_none());
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    let mut body = response.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        frames.push((String::from_utf8(data.to_vec()).unwrap(), start.elapsed()));
    }
    let pieces: Vec<&str> = frames.iter().map(|(piece, _)| piece.as_str()).collect();
    assert_eq!(pieces, [r#"{"slow": ["a","#, r#" "b"], "#, r#""n": 1}"#]);
    let at: Vec<Duration> = frames.iter().map(|(_, at)| *at).collect();
    assert!(at[0] < pause, "the first piece at once: {at:?}");
    assert!(
        at[1] >= pause && at[2] >= pause * 2 && at[2] < pause * 3,
        "then one a pause: {at:?}"
    );
    assert_eq!(mock.wait_idle().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gated_replies_answer_once_every_call_has_arrived() {
    let gate = Gate::new(3);
    let mock = start(&[
        ("/a", Reply::json(r#"{"a":1}"#).gated(&gate).into()),
        ("/b", Reply::json(r#"{"b":2}"#).gated(&gate).into()),
        ("/c", Reply::json(r#"{"c":3}"#).gated(&gate).into()),
    ])
    .await;
    let a = tokio::spawn(get_owned(mock.url("/a")));
    let b = tokio::spawn(get_owned(mock.url("/b")));
    assert_eq!(mock.wait_requests(2).await, 2);
    tokio::task::yield_now().await;
    assert!(!a.is_finished() && !b.is_finished(), "held at the gate");
    let c = get(&mock.url("/c")).await;
    assert_eq!(c.text(), r#"{"c":3}"#);
    assert_eq!(gate.arrived(), 3);
    assert_eq!(a.await.unwrap().text(), r#"{"a":1}"#);
    assert_eq!(b.await.unwrap().text(), r#"{"b":2}"#);
    assert_eq!(mock.stats().max_in_flight, 3);
}

async fn get_owned(url: String) -> Got {
    get(&url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_plays_in_order_and_its_last_reply_repeats() {
    let mock = start(&[(
        "/flaky",
        Script::from([
            Reply::json(r#"{"error":"flaky"}"#).status(503),
            Reply::json(r#"{"error":"flaky"}"#).status(503),
            Reply::json(r#"{"ok":1}"#),
        ]),
    )])
    .await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(get(&mock.url("/flaky")).await.status);
    }
    assert_eq!(statuses, [503, 503, 200, 200, 200]);
}

#[tokio::test(start_paused = true)]
async fn a_script_can_be_slow_the_first_time_only() {
    let mock = start(&[(
        "/slow-first",
        vec![
            Reply::json(r#"{"hedged":1}"#).delay(Duration::from_secs(30)),
            Reply::json(r#"{"hedged":1}"#),
        ]
        .into(),
    )])
    .await;
    let start = Instant::now();
    get(&mock.url("/slow-first")).await;
    assert!(
        start.elapsed() >= Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    let start = Instant::now();
    get(&mock.url("/slow-first")).await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_describes_the_request_it_received() {
    let mock = start(&[("/echo/{*rest}", Reply::echo().into())]).await;
    let request = Request::post(mock.url("/echo/a%2Fb?q=rust%20lang&x=1"))
        .header("content-type", "application/json")
        .header("x-many", "1")
        .header("x-many", "2")
        .body(Full::new(Bytes::from_static(br#"{"n":1}"#)))
        .unwrap();
    let got = send(request).await;
    assert_eq!((got.status, got.content_type()), (200, "application/json"));
    let echo = got.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo/a%2Fb");
    assert_eq!(echo["query"], "q=rust%20lang&x=1");
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["headers"]["content-type"], "application/json");
    assert_eq!(echo["headers"]["x-many"], "1, 2");
    assert_eq!(echo["headers"]["host"], mock.addr().to_string());
    assert_eq!(echo["body"], r#"{"n":1}"#);
    assert_eq!(echo["body_len"], 7);
    assert_eq!(echo["body_truncated"], false);
    assert_eq!(echo, mock.seen()[0].to_json(), "the same as the record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_of_a_binary_body_gives_its_length_only() {
    let mock = Mock::builder()
        .route(Method::PUT, "/blob", Reply::echo())
        .record(false)
        .start()
        .await
        .unwrap();
    let request = Request::put(mock.url("/blob"))
        .body(Full::new(Bytes::from_static(&[0xff, 0xfe, 0, 1])))
        .unwrap();
    let echo = send(request).await.json();
    assert_eq!(echo["body"], serde_json::Value::Null);
    assert_eq!(echo["body_len"], 4);
    assert_eq!(echo["query"], serde_json::Value::Null);
    assert!(mock.seen().is_empty(), "echo works without recording");
}

// --- Recording ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_recorded_whole_in_the_order_received() {
    let mock = Mock::builder()
        .route(Method::GET, "/a", Reply::json("{}"))
        .route(Method::POST, "/orders", Reply::json("{}").status(201))
        .start()
        .await
        .unwrap();
    get(&mock.url("/a?x=1&y=%20")).await;
    let request = Request::post(mock.url("/orders"))
        .header("authorization", "Bearer t")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Full::new(Bytes::from_static(b"first order")))
        .unwrap();
    assert_eq!(send(request).await.status, 201);
    let got = get(&mock.url("/nowhere")).await;
    assert_eq!(got.status, 404);
    assert_eq!(
        got.json()["error"],
        "the mock has no route for GET /nowhere"
    );

    let seen = mock.seen();
    let targets: Vec<_> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.path_and_query()))
        .collect();
    assert_eq!(
        targets,
        [
            ("GET", "/a?x=1&y=%20"),
            ("POST", "/orders"),
            ("GET", "/nowhere")
        ],
        "unrouted requests are recorded too"
    );
    assert_eq!((seen[0].path(), seen[0].query()), ("/a", Some("x=1&y=%20")));
    assert_eq!(seen[0].body_len, 0);
    let order = &seen[1];
    assert_eq!(order.headers["authorization"], "Bearer t");
    let cookies: Vec<_> = order.headers.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(order.body_text(), Some("first order"));
    assert_eq!(order.version, Version::HTTP_11);
    let stats = mock.stats();
    assert_eq!(
        (stats.requests, stats.in_flight, stats.abandoned),
        (3, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_beyond_the_limit_are_counted_not_kept() {
    let mock = Mock::builder()
        .any("/up", Reply::echo())
        .body_limit(10)
        .start()
        .await
        .unwrap();
    let request = Request::post(mock.url("/up"))
        .body(Full::new(Bytes::from(vec![b'a'; 100_000])))
        .unwrap();
    let echo = send(request).await.json();
    assert_eq!(
        (echo["body"].as_str(), echo["body_len"].as_u64()),
        (Some("aaaaaaaaaa"), Some(100_000))
    );
    assert_eq!(echo["body_truncated"], true);
    let seen = &mock.seen()[0];
    assert_eq!(
        (seen.body.len(), seen.body_len, seen.body_truncated()),
        (10, 100_000, true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mock_from_yaml_counts_but_does_not_record() {
    let mock = start_yaml("routes:\n  - { path: /a, body: {} }\n").await;
    get(&mock.url("/a")).await;
    assert_eq!(mock.wait_requests(1).await, 1);
    assert!(mock.seen().is_empty());
}

// --- Counters and waits ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_return_as_soon_as_the_count_is_reached() {
    let mock = start(&[("/hang", Reply::hang().into())]).await;
    let calls: Vec<_> = (0..2)
        .map(|_| tokio::spawn(get_owned(mock.url("/hang"))))
        .collect();
    assert_eq!(mock.wait_requests(2).await, 2, "both calls arrived");
    assert_eq!(mock.stats().in_flight, 2);
    for call in &calls {
        call.abort();
    }
    assert_eq!(mock.wait_abandoned(2).await, 2, "both callers left");
    assert_eq!(mock.wait_idle().await, 0);
    let stats = mock.stats();
    assert_eq!((stats.max_in_flight, stats.in_flight), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_give_up_after_their_timeout_with_the_count_reached() {
    let mock = Mock::builder()
        .any("/drip", Reply::drip(Duration::from_millis(10)))
        .wait_timeout(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    assert_eq!(mock.wait_requests(1).await, 0, "nothing came");
    // A drip's head says the call arrived; its body keeps it in flight.
    let response = client()
        .get(mock.url("/drip").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(mock.wait_requests(2).await, 1, "one call came, not two");
    assert_eq!(mock.wait_abandoned(1).await, 0, "its caller is still there");
    assert_eq!(mock.wait_idle().await, 1, "it is still in flight");
    drop(response);
}

#[tokio::test(start_paused = true)]
async fn on_the_paused_clock_a_wait_times_out_in_virtual_time() {
    let mock = start(&[("/a", Reply::json("{}").into())]).await;
    let start = Instant::now();
    assert_eq!(mock.wait_requests(1).await, 0);
    assert_eq!(mock.wait_abandoned(1).await, 0);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(20),
        "two 10 s timeouts"
    );
    assert_eq!(mock.wait_idle().await, 0, "idle at once");
    assert_eq!(start.elapsed(), Duration::from_secs(20));

    // A request over loopback is not beaten by the timeout: the clock only
    // moves when no task can run and no I/O is ready.
    let call = tokio::spawn(get_owned(mock.url("/a")));
    let start = Instant::now();
    assert_eq!(mock.wait_requests(1).await, 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(call.await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_leaves_before_the_answer_is_counted_as_abandoned() {
    let mock = start(&[
        (
            "/slow",
            Reply::json("{}").delay(Duration::from_secs(60)).into(),
        ),
        ("/fast", Reply::json("{}").into()),
    ])
    .await;
    let mut stream = TcpStream::connect(mock.addr()).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(mock.wait_requests(1).await, 1);
    drop(stream);
    assert_eq!(mock.wait_abandoned(1).await, 1);
    get(&mock.url("/fast")).await;
    assert_eq!(
        mock.stats().abandoned,
        1,
        "an answered call is not abandoned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_concurrency_and_are_served_as_json() {
    let gate = Gate::new(4);
    let mock = start(&[("/work", Reply::json("{}").gated(&gate).into())]).await;
    let calls: Vec<_> = (0..4)
        .map(|_| tokio::spawn(get_owned(mock.url("/work"))))
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().status, 200);
    }
    assert_eq!(mock.wait_idle().await, 0);
    let stats = get(&mock.url("/__mock/stats")).await.json();
    assert_eq!(stats["requests"], 4);
    assert_eq!(stats["in_flight"], 0);
    assert_eq!(stats["max_in_flight"], 4, "the gate held all four at once");
    assert_eq!(stats["abandoned"], 0);
    assert!(stats["connections"].as_u64().unwrap() >= 1);
    assert_eq!(mock.stats().requests, 4, "the stats call is not counted");
    assert_eq!(Stats::default().requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_counted_and_keep_alive_reuses_one() {
    use hyper::client::conn::{http1, http2};
    use hyper_util::rt::TokioIo;

    let mock = start(&[("/a", Reply::json("{}").into())]).await;
    let request = || {
        Request::get(mock.url("/a"))
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    // One HTTP/1.1 connection, two requests on it, one after the other.
    let stream = TcpStream::connect(mock.addr()).await.unwrap();
    let (mut h1, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    for _ in 0..2 {
        h1.ready().await.unwrap();
        let response = h1.send_request(request()).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    assert_eq!(
        mock.stats().connections,
        1,
        "two requests, one keep-alive connection"
    );
    get(&mock.url("/a")).await;
    assert_eq!(
        mock.stats().connections,
        2,
        "a new client, a new connection"
    );
    let on: Vec<_> = mock.seen().iter().map(|s| s.connection).collect();
    assert_eq!(on, [1, 1, 2]);

    // One HTTP/2 connection (prior knowledge), two requests at once on it.
    let stream = TcpStream::connect(mock.addr()).await.unwrap();
    let (h2, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let (one, two) = tokio::join!(
        h2.clone().send_request(request()),
        h2.clone().send_request(request())
    );
    assert_eq!(
        (one.unwrap().status(), two.unwrap().status()),
        (http::StatusCode::OK, http::StatusCode::OK)
    );
    assert_eq!(
        mock.stats().connections,
        3,
        "HTTP/2: two requests, one connection"
    );
    let last = mock.seen().pop().unwrap();
    assert_eq!((last.version, last.connection), (Version::HTTP_2, 3));
    assert_eq!(last.path_and_query(), "/a");
}

// --- Routes and lifecycle ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_their_method_and_any_routes_every_method() {
    let mock = Mock::builder()
        .route(Method::POST, "/orders", Reply::json(r#"{"posted":1}"#))
        .any("/orders", Reply::json(r#"{"any":1}"#))
        .route(Method::GET, "/only-get", Reply::json("{}"))
        .start()
        .await
        .unwrap();
    let post = Request::post(mock.url("/orders"))
        .body(Full::default())
        .unwrap();
    assert_eq!(send(post).await.text(), r#"{"posted":1}"#);
    assert_eq!(get(&mock.url("/orders")).await.text(), r#"{"any":1}"#);
    let delete = Request::delete(mock.url("/only-get"))
        .body(Full::default())
        .unwrap();
    let got = send(delete).await;
    assert_eq!(got.status, 404);
    assert_eq!(
        got.json()["error"],
        "the mock has no route for DELETE /only-get"
    );
}

#[test]
fn bad_routes_and_replies_are_refused_naming_the_route() {
    let refused = |builder: fanout_mock::MockBuilder| builder.build().unwrap_err().to_string();
    assert_eq!(
        refused(Mock::builder().any("/a", Vec::<Reply>::new())),
        "route `/a`: an empty script: give at least one reply"
    );
    assert_eq!(
        refused(Mock::builder().any("/a", Reply::json("{}").status(1000))),
        "route `/a`: status 1000 is not 100 to 999"
    );
    assert_eq!(
        refused(Mock::builder().any("/a", Reply::json("{}").header("bad name", "x"))),
        "route `/a`: `bad name` is not a header name"
    );
    assert_eq!(
        refused(Mock::builder().any("/a", Reply::raw("text/\n", ""))),
        "route `/a`: `text/\n` is not a content type"
    );
    let clash = refused(
        Mock::builder()
            .route(Method::GET, "/a/{x}", Reply::json("{}"))
            .route(Method::GET, "/a/{y}", Reply::json("{}")),
    );
    assert!(clash.starts_with("route `/a/{y}`: "), "{clash}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_port_and_every_connection() {
    let mock = start(&[("/hang", Reply::hang().into())]).await;
    let addr = mock.addr();
    let call = tokio::spawn(async move {
        client()
            .get(format!("http://{addr}/hang").parse().unwrap())
            .await
    });
    assert_eq!(mock.wait_requests(1).await, 1);
    let counts = (*mock).clone();
    mock.shutdown().await;
    assert!(
        call.await.unwrap().is_err(),
        "the hanging call's connection was closed"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the port is closed"
    );
    assert_eq!(counts.wait_idle().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_server_stops_it() {
    let mock = start(&[("/hang", Reply::hang().into())]).await;
    let mut stream = TcpStream::connect(mock.addr()).await.unwrap();
    stream
        .write_all(b"GET /hang HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(mock.wait_requests(1).await, 1);
    drop(mock);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection was closed");
    assert!(rest.is_empty(), "without an answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_on_a_given_listener_until_told_to_stop() {
    let mock = Mock::builder()
        .any("/a", Reply::json(r#"{"a":1}"#))
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(mock.clone().serve(listener, async {
        let _ = stopped.await;
    }));
    assert_eq!(get(&format!("http://{addr}/a")).await.text(), r#"{"a":1}"#);
    stop.send(()).unwrap();
    served.await.unwrap().unwrap();
    assert_eq!(mock.stats().requests, 1);
}

// --- YAML ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_canned_bodies_statuses_and_captures() {
    let mock = start_yaml(
        r#"
routes:
  - { path: "/names/{email}", body: { email: "{email}", name: "Ada" } }
  - { path: /teapot, status: 418, body: { short: true } }
  - { path: /orders, method: POST, body: [1, 2] }
"#,
    )
    .await;
    let got = get(&mock.url("/names/a%22b@x")).await;
    assert_eq!((got.status, got.content_type()), (200, "application/json"));
    assert_eq!(
        got.json(),
        serde_json::json!({"email": "a%22b@x", "name": "Ada"})
    );
    assert_eq!(get(&mock.url("/teapot")).await.status, 418);
    let got = get(&mock.url("/orders")).await;
    assert_eq!(got.status, 404, "GET is not the configured POST");
    assert_eq!(got.json()["error"], "the mock has no route for GET /orders");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_failure_rate_answers_500() {
    let mock = start_yaml(
        "routes:\n  - { path: /always, failure_rate: 100%, body: {} }\n  - { path: /never, failure_rate: 0%, body: {} }\n",
    )
    .await;
    let got = get(&mock.url("/always")).await;
    assert_eq!(
        (got.status, got.text()),
        (500, r#"{"error":"injected failure"}"#)
    );
    assert_eq!(get(&mock.url("/never")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_faults_misbehave_as_described() {
    let mock = start_yaml(
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
    let got = get(&mock.url("/garbage")).await;
    assert_eq!((got.status, got.content_type()), (200, "application/json"));
    assert!(serde_json::from_slice::<serde_json::Value>(&got.body).is_err());
    assert_eq!(get(&mock.url("/html")).await.content_type(), "text/html");

    let response = client()
        .get(mock.url("/reset").parse().unwrap())
        .await
        .unwrap();
    assert!(
        response.into_body().collect().await.is_err(),
        "the body is cut off"
    );

    let hang = client().get(mock.url("/hang").parse().unwrap());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), hang)
            .await
            .is_err(),
        "no answer"
    );

    let response = client()
        .get(mock.url("/drip").parse().unwrap())
        .await
        .unwrap();
    let mut body = response.into_body();
    assert!(body.frame().await.is_some(), "the drip starts");
    let rest = tokio::time::timeout(Duration::from_millis(300), body.collect()).await;
    assert!(rest.is_err(), "and never ends");

    // The hanging call was dropped by its caller before any answer (the drip
    // had answered: its head was sent).
    assert_eq!(mock.wait_abandoned(1).await, 1);
    assert_eq!(mock.wait_idle().await, 0);
    assert_eq!(mock.stats().abandoned, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_scripts_headers_and_echo() {
    let mock = start_yaml(
        r#"
routes:
  - path: /flaky
    replies:
      - { status: 503, body: { error: flaky } }
      - { body: { ok: true }, headers: { set-cookie: [a=1, b=2], cache-control: no-store } }
  - { path: /echo, method: PUT, echo: true, status: 202 }
"#,
    )
    .await;
    let first = get(&mock.url("/flaky")).await;
    assert_eq!((first.status, first.text()), (503, r#"{"error":"flaky"}"#));
    for _ in 0..2 {
        let got = get(&mock.url("/flaky")).await;
        assert_eq!((got.status, got.text()), (200, r#"{"ok":true}"#));
        let cookies: Vec<_> = got.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(got.headers["cache-control"], "no-store");
    }
    let put = Request::put(mock.url("/echo?v=1"))
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let got = send(put).await;
    assert_eq!(got.status, 202);
    let echo = got.json();
    assert_eq!(
        (&echo["method"], &echo["query"], &echo["body"]),
        (&"PUT".into(), &"v=1".into(), &"hello".into())
    );
}

#[test]
fn yaml_errors_say_where() {
    let err = MockConfig::parse("routes:\n  - { path: /a, latncy: 5ms }\n").unwrap_err();
    assert_eq!(err.line, 2);
    assert!(
        err.message.contains("unknown field `latncy`"),
        "{}",
        err.message
    );
    let err = MockConfig::parse("routes:\n  - { path: /a, fault: explode }\n").unwrap_err();
    assert!(err.message.contains("explode"), "{}", err.message);
    let err = MockConfig::parse("routes:\n  - path: /a\n    replies:\n      - { stauts: 503 }\n")
        .unwrap_err();
    assert_eq!(err.line, 4, "{err:?}");
    assert!(
        err.message.contains("unknown field `stauts`"),
        "{}",
        err.message
    );
    let err = MockConfig::parse("routes:\n  - { path: /a,\n      method: get }\n").unwrap_err();
    assert_eq!(err.line, 3, "{err:?}");
    assert!(
        err.message.contains("`get` is not a method"),
        "{}",
        err.message
    );

    let config = MockConfig::parse("routes:\n  - { path: /a, body_file: missing.json }\n").unwrap();
    let err = Mock::new(&config, Path::new("/nonexistent")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("body file /nonexistent/missing.json:"),
        "{err}"
    );
}

#[test]
fn yaml_conflicting_keys_are_refused_naming_the_route() {
    let refused = |yaml: &str| {
        let config = MockConfig::parse(yaml).unwrap();
        Mock::new(&config, Path::new(".")).unwrap_err().to_string()
    };
    assert_eq!(
        refused("routes:\n  - { path: /a, status: 500, replies: [{ body: {} }] }\n"),
        "route `/a`: give `replies` or the keys of one reply (`body`, `status`, `fault`…), not both"
    );
    assert_eq!(
        refused("routes:\n  - { path: /a, replies: [] }\n"),
        "route `/a`: `replies` is empty"
    );
    assert_eq!(
        refused("routes:\n  - { path: /a, fault: hang, body: {} }\n"),
        "route `/a`: give `fault` or a body, not both"
    );
    assert_eq!(
        refused("routes:\n  - { path: /a, replies: [{ echo: true, body: {} }] }\n"),
        "route `/a`: give `echo` or a body, not both"
    );
    assert_eq!(
        refused("routes:\n  - { path: /a, headers: { \"bad name\": x } }\n"),
        "route `/a`: `bad name` is not a header name"
    );
}

#[test]
fn yaml_latency_mixes_parse() {
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
