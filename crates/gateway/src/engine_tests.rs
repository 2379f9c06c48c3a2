//! The engine's rules, in-process: a request runs against a scripted
//! [`Transport`] on tokio's paused clock, so every rule is checked at the
//! exact instant it must hold (no sockets, no scheduling noise). The
//! black-box tests in `tests/` prove the same over real connections.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{
    Plan,
    client::{ClientSettings, Dial, Request, Transport},
    config::Format,
    error::BackendError,
    respond::{json_response, respond},
    run::{Inputs, Verdict, execute},
};

/// What a scripted backend does with a call to one path.
#[derive(Clone, Debug)]
enum Reply {
    /// Answers `status` with a JSON body after `ms` milliseconds.
    Json(u16, &'static str, u64),
    /// Never answers.
    Hang,
    /// Answers 503 to its first `n` calls, then 200 with this JSON body.
    Flaky(usize, &'static str),
}

/// One call as the scripted backend saw it.
#[derive(Clone, Debug)]
struct Call {
    /// Path and query.
    uri: String,
    /// The headers it came with.
    headers: http::HeaderMap,
    /// Its method.
    method: http::Method,
    /// Its body, whole.
    body: Bytes,
    /// When it arrived, from the test's start.
    at: Duration,
    /// When it ended, from the test's start (`None`: still running).
    ended: Option<Duration>,
    /// Whether it was dropped before it answered.
    abandoned: bool,
}

#[derive(Clone)]
struct Script {
    replies: Arc<HashMap<&'static str, Reply>>,
    calls: Arc<Mutex<Vec<Call>>>,
    start: Instant,
}

impl Call {
    fn body_text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

impl Script {
    fn new(replies: &[(&'static str, Reply)]) -> Script {
        Script {
            replies: Arc::new(replies.iter().cloned().collect()),
            calls: Arc::default(),
            start: Instant::now(),
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn call_to(&self, path: &str) -> Option<Call> {
        self.calls().into_iter().find(|c| c.uri.starts_with(path))
    }
}

/// Marks its call ended when dropped, and abandoned if it had not answered.
struct Ending {
    script: Script,
    index: usize,
    answered: bool,
}

impl Drop for Ending {
    fn drop(&mut self) {
        let mut calls = self.script.calls.lock().unwrap();
        calls[self.index].ended = Some(self.script.start.elapsed());
        calls[self.index].abandoned = !self.answered;
    }
}

impl Transport for Script {
    type Body = Full<Bytes>;

    async fn send(
        &self,
        _: &Arc<ClientSettings>,
        _: &Arc<Dial>,
        request: Request,
    ) -> Result<Response<Full<Bytes>>, BackendError> {
        let uri = request
            .uri()
            .path_and_query()
            .map(ToString::to_string)
            .unwrap_or_default();
        let path = request.uri().path().to_owned();
        let reply = self.replies.get(path.as_str()).cloned();
        let (parts, body) = request.into_parts();
        let body = match body {
            crate::client::Body::Full(bytes) => bytes,
            crate::client::Body::Stream(_) => panic!("the engine streams no body"),
        };
        let index = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(Call {
                uri,
                headers: parts.headers,
                method: parts.method,
                body,
                at: self.start.elapsed(),
                ended: None,
                abandoned: false,
            });
            calls.len() - 1
        };
        let mut ending = Ending {
            script: self.clone(),
            index,
            answered: false,
        };
        let response = match reply {
            None => json(404, r#"{"error":"no such path"}"#),
            Some(Reply::Json(status, body, ms)) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                json(status, body)
            }
            Some(Reply::Hang) => std::future::pending().await,
            Some(Reply::Flaky(n, body)) => {
                let earlier = self
                    .calls()
                    .iter()
                    .filter(|c| request_path(&c.uri) == path)
                    .count()
                    - 1;
                if earlier < n {
                    json(503, r#"{"error":"flaky"}"#)
                } else {
                    json(200, body)
                }
            }
        };
        ending.answered = true;
        Ok(response)
    }
}

fn request_path(uri: &str) -> &str {
    uri.split('?').next().unwrap_or(uri)
}

fn json(status: u16, body: &'static str) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(status).unwrap();
    json_response(status, Bytes::from_static(body.as_bytes())).map(Full::new)
}

fn plan(yaml: &str) -> Plan {
    Plan::parse(yaml, Format::Yaml, "engine.yaml", |_| None)
        .unwrap_or_else(|e| panic!("test config refused:\n{e}"))
}

/// A response as the client would read it.
struct Answer {
    status: StatusCode,
    complete: String,
    body: Value,
    verdict: Verdict,
    took: Duration,
}

/// Runs the plan's first endpoint once with `params` as route captures.
async fn run(plan: &Plan, script: &Script, params: &[(&str, &str)]) -> Answer {
    let inputs = Inputs {
        params: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Inputs::default()
    };
    run_with(plan, script, inputs).await
}

/// Runs the plan's first endpoint once with these inputs.
async fn run_with(plan: &Plan, script: &Script, inputs: Inputs) -> Answer {
    let endpoint = &plan.endpoints[0];
    let mut outcome = execute(endpoint, inputs, script.clone(), true).await;
    let response = respond(endpoint, &mut outcome);
    let (parts, body) = response.into_parts();
    let bytes = body;
    Answer {
        status: parts.status,
        complete: parts.headers["x-fanout-complete"]
            .to_str()
            .unwrap()
            .to_owned(),
        body: serde_json::from_slice(&bytes).unwrap(),
        verdict: outcome.verdict,
        took: outcome.took,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn a_dependent_starts_the_instant_its_dependency_answers() {
    let plan = plan(
        r#"
endpoints:
  - route: GET /users/{id}
    backends:
      - { name: profile, url: "http://10.0.0.1/profile/{id}", required: true }
      - { name: orders, url: "http://10.0.0.1/orders?account={profile.account}", after: [profile], into: orders }
      - { name: ads, url: "http://10.0.0.1/ads", into: ads }
"#,
    );
    let script = Script::new(&[
        (
            "/profile/7",
            Reply::Json(200, r#"{"name":"Ada","account":"a-1"}"#, 30),
        ),
        ("/orders", Reply::Json(200, "[1,2]", 20)),
        ("/ads", Reply::Json(200, r#"{"n":1}"#, 40)),
    ]);
    let answer = run(&plan, &script, &[("id", "7")]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.body,
        json!({"name": "Ada", "account": "a-1", "orders": [1, 2], "ads": {"n": 1}})
    );
    let orders = script.call_to("/orders").unwrap();
    assert_eq!(
        orders.uri, "/orders?account=a-1",
        "the dependency's field, encoded"
    );
    assert_eq!(
        orders.at,
        ms(30),
        "starts when profile answers, not before, not later"
    );
    assert_eq!(
        script.call_to("/ads").unwrap().at,
        ms(0),
        "independent calls start at once"
    );
    assert_eq!(
        answer.took,
        ms(50),
        "30 + 20, in parallel with the 40 of ads"
    );
}

#[tokio::test(start_paused = true)]
async fn a_required_failure_cancels_the_rest_at_once_and_names_itself() {
    let plan = plan(
        r#"
endpoints:
  - route: GET /checkout
    expose_errors: true
    backends:
      - { name: inventory, url: "http://10.0.0.1/inventory", into: inventory }
      - { name: payment, url: "http://10.0.0.1/payment", required: true, into: payment }
"#,
    );
    let script = Script::new(&[
        ("/inventory", Reply::Json(200, r#"{"left":3}"#, 2000)),
        ("/payment", Reply::Json(500, r#"{"error":"declined"}"#, 50)),
    ]);
    let answer = run(&plan, &script, &[]).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.verdict, Verdict::RequiredFailed(1));
    assert_eq!(answer.complete, "false");
    assert_eq!(answer.took, ms(50));
    let inventory = script.call_to("/inventory").unwrap();
    assert_eq!(
        (inventory.ended, inventory.abandoned),
        (Some(ms(50)), true),
        "the slow call is dropped the instant payment fails"
    );
    assert_eq!(
        answer.body,
        json!({
            "error": "required backend `payment` failed",
            "_errors": {
                "inventory": {"kind": "cancelled", "message": "required backend `payment` failed"},
                "payment": {"kind": "status", "status": 500, "message": "answered 500 Internal Server Error"},
            }
        })
    );
}

#[tokio::test(start_paused = true)]
async fn the_endpoint_deadline_answers_504_when_it_expires() {
    let plan = plan(
        r#"
endpoints:
  - route: GET /slow
    timeout: 100ms
    expose_errors: true
    backends:
      - { name: slow, url: "http://10.0.0.1/slow", required: true }
      - { name: stuck, url: "http://10.0.0.1/stuck" }
"#,
    );
    let script = Script::new(&[
        ("/slow", Reply::Json(200, "{}", 1000)),
        ("/stuck", Reply::Hang),
    ]);
    let answer = run(&plan, &script, &[]).await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(answer.took, ms(100));
    assert_eq!(
        answer.body["_errors"]["slow"],
        json!({"kind": "timeout", "message": "the endpoint's deadline of 100ms expired first"})
    );
    for call in script.calls() {
        assert_eq!(
            (call.ended, call.abandoned),
            (Some(ms(100)), true),
            "{call:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_backend_timeout_is_its_own_and_a_required_one_gives_504() {
    let plan = plan(
        r#"
endpoints:
  - route: GET /t
    timeout: 1s
    backends:
      - { name: quick, url: "http://10.0.0.1/quick", required: true, timeout: 30ms }
"#,
    );
    let script = Script::new(&[("/quick", Reply::Json(200, "{}", 500))]);
    let answer = run(&plan, &script, &[]).await;
    assert_eq!(
        (answer.status, answer.took),
        (StatusCode::GATEWAY_TIMEOUT, ms(30))
    );
}

#[tokio::test(start_paused = true)]
async fn an_optional_failure_gives_a_partial_answer_with_its_error() {
    let plan = plan(
        r#"
endpoints:
  - route: GET /users/{id}
    expose_errors: true
    backends:
      - { name: profile, url: "http://10.0.0.1/profile", required: true, into: user }
      - { name: loyalty, url: "http://10.0.0.1/loyalty", timeout: 50ms, into: loyalty }
"#,
    );
    let script = Script::new(&[
        ("/profile", Reply::Json(200, r#"{"name":"Ada"}"#, 10)),
        ("/loyalty", Reply::Hang),
    ]);
    let answer = run(&plan, &script, &[("id", "7")]).await;
    assert_eq!(
        (answer.status, answer.complete.as_str()),
        (StatusCode::OK, "false")
    );
    assert_eq!(answer.verdict, Verdict::Partial);
    assert_eq!(
        answer.took,
        ms(50),
        "waits for the optional call up to its own timeout"
    );
    assert_eq!(
        answer.body,
        json!({
            "user": {"name": "Ada"},
            "_errors": {"loyalty": {"kind": "timeout", "message": "no answer within 50ms"}}
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_after_a_failed_dependency_is_never_made() {
    let plan = plan(
        r#"
endpoints:
  - route: GET /a
    expose_errors: true
    backends:
      - { name: first, url: "http://10.0.0.1/first" }
      - { name: second, url: "http://10.0.0.1/second?x={first.id}", after: [first] }
      - { name: other, url: "http://10.0.0.1/other" }
"#,
    );
    let script = Script::new(&[
        ("/first", Reply::Json(503, "{}", 20)),
        ("/second", Reply::Json(200, "{}", 0)),
        ("/other", Reply::Json(200, r#"{"ok":true}"#, 0)),
    ]);
    let answer = run(&plan, &script, &[]).await;
    assert!(script.call_to("/second").is_none(), "{:?}", script.calls());
    assert_eq!((answer.status, answer.took), (StatusCode::OK, ms(20)));
    assert_eq!(
        answer.body["_errors"]["second"],
        json!({"kind": "dependency", "message": "`first` failed, so this call was not made"})
    );
    assert_eq!(answer.body["ok"], json!(true));
}

#[tokio::test(start_paused = true)]
async fn a_dependency_stopped_by_its_timeout_still_releases_its_dependents() {
    // The dependency's task ends without publishing an answer: its dependent
    // hears of the failure at that instant instead of waiting for the deadline.
    let plan = plan(
        r#"
endpoints:
  - route: GET /a
    timeout: 5s
    backends:
      - { name: first, url: "http://10.0.0.1/first", timeout: 40ms }
      - { name: second, url: "http://10.0.0.1/second?x={first.id}", after: [first] }
"#,
    );
    let script = Script::new(&[("/first", Reply::Hang)]);
    let answer = run(&plan, &script, &[]).await;
    assert_eq!(answer.took, ms(40), "not the 5 s deadline");
    // One timed out, one was not called: not all timeouts, so 502.
    assert_eq!(
        (answer.status, answer.verdict),
        (StatusCode::BAD_GATEWAY, Verdict::AllFailed)
    );
}

#[tokio::test(start_paused = true)]
async fn status_rules_follow_the_decisive_failure() {
    let case = |reply: Reply, extra: &'static str| async move {
        let plan = plan(&format!(
            r#"
endpoints:
  - route: GET /s
    backends:
      - {{ name: main, url: "http://10.0.0.1/main", required: true{extra} }}
      - {{ name: side, url: "http://10.0.0.1/side" }}
"#
        ));
        let script = Script::new(&[("/main", reply), ("/side", Reply::Json(200, "{}", 0))]);
        let answer = run(&plan, &script, &[]).await;
        (answer.status.as_u16(), answer.body)
    };
    // The backend's own 4xx, body and all, when asked for.
    assert_eq!(
        case(
            Reply::Json(404, r#"{"missing":"user"}"#, 0),
            ", pass_status: true"
        )
        .await,
        (404, json!({"missing": "user"}))
    );
    // Without pass_status, or for a 5xx, a 502.
    assert_eq!(case(Reply::Json(404, "{}", 0), "").await.0, 502);
    assert_eq!(
        case(Reply::Json(500, "{}", 0), ", pass_status: true")
            .await
            .0,
        502
    );
    // Not JSON: a decode failure, 502.
    assert_eq!(case(Reply::Json(200, "{oops", 0), "").await.0, 502);
}

#[tokio::test(start_paused = true)]
async fn every_backend_failing_is_502_or_504_if_they_all_timed_out() {
    let plan = plan(
        r#"
endpoints:
  - route: GET /a
    timeout: 200ms
    backends:
      - { name: one, url: "http://10.0.0.1/one" }
      - { name: two, url: "http://10.0.0.1/two" }
"#,
    );
    let script = Script::new(&[("/one", Reply::Json(500, "{}", 0)), ("/two", Reply::Hang)]);
    let answer = run(&plan, &script, &[]).await;
    assert_eq!(
        (answer.status, answer.verdict),
        (StatusCode::BAD_GATEWAY, Verdict::AllFailed)
    );
    let script = Script::new(&[("/one", Reply::Hang), ("/two", Reply::Hang)]);
    let answer = run(&plan, &script, &[]).await;
    assert_eq!(
        (answer.status, answer.took),
        (StatusCode::GATEWAY_TIMEOUT, ms(200))
    );
}

#[tokio::test(start_paused = true)]
async fn an_overloaded_required_upstream_is_503() {
    let plan = plan(
        r#"
upstreams:
  small: { url: "http://10.0.0.1", max_in_flight: 1 }
endpoints:
  - route: GET /a
    backends:
      - { name: one, upstream: small, path: /slow, required: true }
      - { name: two, upstream: small, path: /slow, required: true }
"#,
    );
    let script = Script::new(&[("/slow", Reply::Json(200, "{}", 100))]);
    let answer = run(&plan, &script, &[]).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        answer.took,
        ms(0),
        "shed at once, and the other call cancelled"
    );
    assert_eq!(
        script.calls().len(),
        1,
        "the second attempt never reached the backend"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_the_state_of_an_unchanged_upstream_only() {
    let yaml = |cooldown: &str, route: &str| {
        format!(
            r#"
upstreams:
  users: {{ url: "http://10.0.0.1", breaker: {{ failures: 1, cooldown: {cooldown} }} }}
  other: {{ url: "http://10.0.0.2" }}
endpoints:
  - route: GET {route}
    expose_errors: true
    backends:
      - {{ name: one, upstream: users, path: /one }}
"#
        )
    };
    let script = Script::new(&[("/one", Reply::Json(500, "{}", 0))]);
    let first = plan(&yaml("10s", "/a"));
    run(&first, &script, &[]).await;
    assert_eq!(script.calls().len(), 1, "the failure opened the breaker");

    // Same upstream, another endpoint: the open breaker is kept.
    let mut second = plan(&yaml("10s", "/b"));
    second.keep_state_of(&first);
    let answer = run(&second, &script, &[]).await;
    assert_eq!(answer.body["_errors"]["one"]["kind"], json!("circuit_open"));
    assert_eq!(script.calls().len(), 1, "no call through an open circuit");

    // A changed upstream starts afresh.
    let mut third = plan(&yaml("20s", "/b"));
    third.keep_state_of(&second);
    let answer = run(&third, &script, &[]).await;
    assert_eq!(answer.body["_errors"]["one"]["kind"], json!("status"));
    assert_eq!(script.calls().len(), 2);
}

// Regression tests of issue 16 (hostile backends and clients): each failed
// on the code before its fix.

/// `depth` nested arrays around `1`.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test(start_paused = true)]
async fn a_reshaped_body_that_cannot_be_a_value_is_a_decode_failure_not_null() {
    // serde_json's parser refuses what its syntax check let through: a
    // number out of range, a lone surrogate. Reshaping such a body used to
    // give `null` and a complete answer.
    for body in [r#"{"n": 1e400}"#, r#"{"n": "\ud800"}"#] {
        let plan = plan(
            r#"
endpoints:
  - route: GET /a
    expose_errors: true
    backends:
      - { name: one, url: "http://10.0.0.1/one", required: true, select: [n] }
"#,
        );
        let leaked: &'static str = Box::leak(body.to_owned().into_boxed_str());
        let script = Script::new(&[("/one", Reply::Json(200, leaked, 0))]);
        let answer = run(&plan, &script, &[]).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_GATEWAY,
            "{body}: {}",
            answer.body
        );
        assert_eq!(
            answer.body["_errors"]["one"]["kind"],
            json!("decode"),
            "{body}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_deepest_nesting_the_config_allows_is_shaped_and_merged() {
    // 127 levels (the most `max_json_depth` accepts), shaped and deep-merged
    // with a second body of the same depth under the same key.
    let deep: &'static str = Box::leak(format!(r#"{{"k": {}}}"#, nested(126)).into_boxed_str());
    let plan = plan(
        r#"
server: { max_json_depth: 127 }
endpoints:
  - route: GET /a
    backends:
      - { name: one, url: "http://10.0.0.1/one", required: true, select: [k] }
      - { name: two, url: "http://10.0.0.1/two", required: true }
"#,
    );
    let script = Script::new(&[
        ("/one", Reply::Json(200, deep, 0)),
        ("/two", Reply::Json(200, deep, 0)),
    ]);
    let answer = run(&plan, &script, &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.complete, "true");
    let expected: Value = serde_json::from_str(deep).unwrap();
    assert_eq!(answer.body, expected);
}

/// Objects nested `depth` levels under `k`, the innermost holding `leaf`.
fn nested_objects(depth: usize, leaf: &str) -> &'static str {
    let text = format!(
        "{}{{{leaf}}}{}",
        r#"{"k":"#.repeat(depth - 1),
        "}".repeat(depth - 1)
    );
    Box::leak(text.into_boxed_str())
}

#[tokio::test(start_paused = true)]
async fn objects_as_deep_as_the_config_allows_merge_deeply_and_repeated_keys_do_not_recurse() {
    // The deep merge recurses into objects that meet under one key: 127
    // levels (the most `max_json_depth` accepts) from two backends meet all
    // the way down. A key repeated in one body means its last value: it is
    // not merged with the first one, whatever their depth.
    let one = nested_objects(127, r#""a":1"#);
    let two = nested_objects(127, r#""b":2"#);
    let repeated: &'static str = Box::leak(
        format!(
            r#"{{"r":{},"r":{}}}"#,
            nested_objects(126, r#""a":1"#),
            nested_objects(126, r#""c":3"#)
        )
        .into_boxed_str(),
    );
    // Addresses, not names: nothing to resolve.
    let plan = plan(
        r#"
server: { max_json_depth: 127 }
endpoints:
  - route: GET /a
    expose_errors: true
    backends:
      - { name: one, url: "http://127.0.0.1:9/one", required: true }
      - { name: two, url: "http://127.0.0.1:9/two", required: true }
      - { name: repeated, url: "http://127.0.0.1:9/repeated", required: true }
"#,
    );
    let script = Script::new(&[
        ("/one", Reply::Json(200, one, 0)),
        ("/two", Reply::Json(200, two, 0)),
        ("/repeated", Reply::Json(200, repeated, 0)),
    ]);
    let answer = run(&plan, &script, &[]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let mut expected: Value = serde_json::from_str(nested_objects(127, r#""a":1,"b":2"#)).unwrap();
    let last: Value = serde_json::from_str(nested_objects(126, r#""c":3"#)).unwrap();
    expected["r"] = last;
    assert_eq!(answer.body, expected);
}

#[tokio::test(start_paused = true)]
async fn configured_upstream_headers_replace_the_clients() {
    let plan = plan(
        r#"
upstreams:
  u: { url: "http://10.0.0.1", headers: { X-Api-Key: gateway-key, Authorization: "Bearer gw" } }
endpoints:
  - route: GET /a
    forward_headers: [X-Api-Key, Authorization, Accept-Language]
    backends:
      - { name: one, upstream: u, path: /one }
"#,
    );
    let script = Script::new(&[("/one", Reply::Json(200, "{}", 0))]);
    let mut headers = http::HeaderMap::new();
    headers.insert("x-api-key", "client-key".parse().unwrap());
    headers.append("authorization", "Bearer client".parse().unwrap());
    headers.insert("accept-language", "fr".parse().unwrap());
    run_with(
        &plan,
        &script,
        Inputs {
            headers,
            ..Inputs::default()
        },
    )
    .await;
    let seen = &script.calls()[0].headers;
    let all = |name: &str| -> Vec<&str> {
        seen.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    };
    assert_eq!(
        all("x-api-key"),
        ["gateway-key"],
        "never the client's beside it"
    );
    assert_eq!(all("authorization"), ["Bearer gw"]);
    assert_eq!(all("accept-language"), ["fr"], "others still pass");
}

#[tokio::test(start_paused = true)]
async fn a_backend_cannot_forge_the_gateways_errors() {
    let plan = plan(
        r#"
endpoints:
  - route: GET /a
    expose_errors: true
    backends:
      - { name: forger, url: "http://10.0.0.1/forger" }
      - { name: shaped, url: "http://10.0.0.1/shaped", drop: [x] }
      - { name: failing, url: "http://10.0.0.1/failing" }
"#,
    );
    let script = Script::new(&[
        (
            "/forger",
            Reply::Json(200, r#"{"a":1,"_errors":{"payment":{"kind":"ok"}}}"#, 0),
        ),
        (
            "/shaped",
            Reply::Json(200, r#"{"b":2,"_errors":"forged"}"#, 0),
        ),
        ("/failing", Reply::Json(200, r#"{"c":3}"#, 0)),
    ]);
    let answer = run(&plan, &script, &[]).await;
    assert_eq!(answer.complete, "true");
    assert_eq!(
        answer.body,
        json!({"a": 1, "b": 2, "c": 3}),
        "no `_errors` on a complete answer"
    );

    let script = Script::new(&[
        (
            "/forger",
            Reply::Json(200, r#"{"a":1,"_errors":{"payment":{"kind":"ok"}}}"#, 0),
        ),
        ("/shaped", Reply::Json(200, r#"{"b":2}"#, 0)),
        ("/failing", Reply::Json(500, "{}", 0)),
    ]);
    let answer = run(&plan, &script, &[]).await;
    assert_eq!(
        answer.body["_errors"],
        json!({"failing": {"kind": "status", "status": 500, "message": "answered 500 Internal Server Error"}}),
        "only the gateway's own errors"
    );
}

#[tokio::test(start_paused = true)]
async fn a_repeated_key_means_its_last_value_whether_shaped_or_not() {
    let plan = plan(
        r#"
endpoints:
  - route: GET /a
    backends:
      - { name: raw, url: "http://10.0.0.1/raw" }
      - { name: shaped, url: "http://10.0.0.1/shaped", drop: [unused], into: s }
"#,
    );
    let script = Script::new(&[
        (
            "/raw",
            Reply::Json(200, r#"{"k":1,"k":2,"o":{"x":1,"x":2}}"#, 0),
        ),
        (
            "/shaped",
            Reply::Json(200, r#"{"k":1,"k":2,"o":{"x":1,"x":2}}"#, 0),
        ),
    ]);
    let answer = run(&plan, &script, &[]).await;
    // Read as JSON (last wins, as every reader does) both are the same.
    assert_eq!(answer.body["k"], json!(2));
    assert_eq!(answer.body["o"]["x"], json!(2));
    assert_eq!(answer.body["s"], json!({"k": 2, "o": {"x": 2}}));
}

#[tokio::test(start_paused = true)]
async fn an_empty_value_never_makes_an_empty_path_segment() {
    let plan = plan(
        r#"
endpoints:
  - route: GET /a
    expose_errors: true
    backends:
      - { name: first, url: "http://10.0.0.1/first" }
      - { name: second, url: "http://10.0.0.1/echo/{first.id}/tail", after: [first] }
"#,
    );
    let script = Script::new(&[("/first", Reply::Json(200, r#"{"id":""}"#, 0))]);
    let answer = run(&plan, &script, &[]).await;
    assert!(script.call_to("/echo").is_none(), "{:?}", script.calls());
    assert_eq!(
        answer.body["_errors"]["second"]["kind"],
        json!("dependency")
    );
    assert_eq!(
        answer.body["_errors"]["second"]["message"],
        json!("{first.id} is empty, and would leave an empty path segment")
    );
}

/// Inputs of a request whose body is `body` (JSON when `json`).
fn with_body(body: &'static str, content_type: &'static str, json: bool) -> Inputs {
    Inputs {
        body: Some(crate::run::ClientBody {
            bytes: Bytes::from_static(body.as_bytes()),
            content_type: Some(http::HeaderValue::from_static(content_type)),
            content_encoding: None,
            json: json.then(|| serde_json::from_str(body).unwrap()),
        }),
        ..Inputs::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_forwarded_body_reaches_the_backend_byte_for_byte_with_its_type() {
    let plan = plan(
        r#"
endpoints:
  - route: POST /upload
    backends:
      - { name: store, url: "http://10.0.0.1/store", method: POST, body: forward, required: true }
      - { name: log, url: "http://10.0.0.1/log", method: PUT, body: forward }
      - { name: plain, url: "http://10.0.0.1/plain", method: POST }
"#,
    );
    let script = Script::new(&[
        ("/store", Reply::Json(200, "{}", 0)),
        ("/log", Reply::Json(200, "{}", 0)),
        ("/plain", Reply::Json(200, "{}", 0)),
    ]);
    // Not JSON, and spaced oddly: forwarded as it came.
    let sent = "name=a b&x=1 \n";
    let answer = run_with(
        &plan,
        &script,
        with_body(sent, "text/plain; charset=utf-8", false),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    for path in ["/store", "/log"] {
        let call = script.call_to(path).unwrap();
        assert_eq!(call.body_text(), sent, "{path}");
        assert_eq!(call.headers["content-type"], "text/plain; charset=utf-8");
    }
    assert_eq!(script.call_to("/log").unwrap().method, http::Method::PUT);
    let plain = script.call_to("/plain").unwrap();
    assert!(plain.body.is_empty(), "a backend without `body` sends none");
    assert!(plain.headers.get("content-type").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_template_body_keeps_its_values_types_and_is_sent_as_json() {
    let plan = plan(
        r#"
endpoints:
  - route: POST /checkout/{cart}
    forward_query: [lang]
    backends:
      - { name: payment, url: "http://10.0.0.1/charges", method: POST, body: forward, required: true }
      - name: audit
        url: "http://10.0.0.1/events"
        method: POST
        after: [payment]
        body:
          amount: "{body.amount}"
          items: "{body.items}"
          gift: "{body.gift}"
          note: "{body.note}"
          charge: "{payment.id}"
          fee: "{payment.fee}"
          cart: "{cart}"
          label: "cart-{cart} for {body.amount} ({query.lang})"
          fixed: { source: gateway, version: 2 }
"#,
    );
    let script = Script::new(&[
        (
            "/charges",
            Reply::Json(200, r#"{"id":"ch_1","fee":0.3}"#, 10),
        ),
        ("/events", Reply::Json(200, "{}", 0)),
    ]);
    let mut inputs = with_body(
        r#"{"amount": 12.5, "items": [{"sku": "a", "n": 2}], "gift": false, "note": null}"#,
        "application/json",
        true,
    );
    inputs.params = vec![("cart".into(), "42".into())];
    inputs.query = vec![("lang".into(), "fr".into())];
    let answer = run_with(&plan, &script, inputs).await;
    assert_eq!(answer.status, StatusCode::OK);
    let audit = script.call_to("/events").unwrap();
    assert_eq!(audit.headers["content-type"], "application/json");
    assert_eq!(
        audit.body_text(),
        r#"{"amount":12.5,"items":[{"sku":"a","n":2}],"gift":false,"note":null,"charge":"ch_1","fee":0.3,"cart":"42","label":"cart-42 for 12.5 (fr)","fixed":{"source":"gateway","version":2}}"#,
        "the exact bytes: whole placeholders keep their JSON type, embedded ones are text"
    );
    assert_eq!(audit.at, ms(10), "after the payment answered");
}

#[tokio::test(start_paused = true)]
async fn a_retried_call_sends_the_same_body_again() {
    let plan = plan(
        r#"
upstreams:
  store: { url: "http://10.0.0.1", retry: { attempts: 3, backoff: 10ms, budget: 100% } }
endpoints:
  - route: PUT /docs/{id}
    backends:
      - { name: put, upstream: store, path: "/docs/{id}", method: PUT, body: forward, required: true }
      - { name: index, upstream: store, path: /index, method: POST, body: { doc: "{id}", size: "{body.size}" } }
"#,
    );
    let script = Script::new(&[
        ("/docs/7", Reply::Flaky(2, r#"{"ok":true}"#)),
        ("/index", Reply::Flaky(1, r#"{"ok":true}"#)),
    ]);
    let mut inputs = with_body(r#"{"size": 3, "text": "abc"}"#, "application/json", true);
    inputs.params = vec![("id".into(), "7".into())];
    let answer = run_with(&plan, &script, inputs).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.complete, "false",
        "the POST is not retried: {:?}",
        answer.body
    );
    let puts: Vec<Call> = script
        .calls()
        .into_iter()
        .filter(|c| c.uri == "/docs/7")
        .collect();
    assert_eq!(puts.len(), 3, "two 503s, then the answer");
    for put in &puts {
        assert_eq!(put.body_text(), r#"{"size": 3, "text": "abc"}"#);
    }
    let posts: Vec<Call> = script
        .calls()
        .into_iter()
        .filter(|c| c.uri == "/index")
        .collect();
    assert_eq!(posts.len(), 1, "a POST is never retried");
    assert_eq!(posts[0].body_text(), r#"{"doc":"7","size":3}"#);
}

#[tokio::test(start_paused = true)]
async fn a_dependency_field_missing_from_a_body_template_fails_only_that_backend() {
    let plan = plan(
        r#"
endpoints:
  - route: POST /a
    expose_errors: true
    backends:
      - { name: first, url: "http://10.0.0.1/first", required: true }
      - { name: second, url: "http://10.0.0.1/second", method: POST, after: [first], body: { ref: "{first.ref}" } }
"#,
    );
    let script = Script::new(&[
        ("/first", Reply::Json(200, r#"{"other":1}"#, 0)),
        ("/second", Reply::Json(200, "{}", 0)),
    ]);
    let answer = run_with(&plan, &script, Inputs::default()).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.body["_errors"]["second"],
        json!({"kind": "dependency", "message": "no value for {first.ref} (at `ref` of the body)"})
    );
    assert!(script.call_to("/second").is_none(), "never called");
}

#[tokio::test(start_paused = true)]
async fn arrays_append_in_declaration_order_whatever_the_order_of_arrival() {
    let plan = plan(
        r#"
endpoints:
  - route: GET /feed
    response: { root: items }
    backends:
      - { name: mine, url: "http://10.0.0.1/mine", into: items }
      - { name: group, url: "http://10.0.0.1/group", into: items, append: true, select: [id] }
      - { name: more, url: "http://10.0.0.1/more", into: items, append: true }
"#,
    );
    // The last declared answers first, the first declared last.
    let script = Script::new(&[
        ("/mine", Reply::Json(200, r#"[{"id":1},{"id":2}]"#, 30)),
        ("/group", Reply::Json(200, r#"[{"id":3,"secret":"x"}]"#, 20)),
        ("/more", Reply::Json(200, r#"[{"id":4}, 5]"#, 10)),
    ]);
    let answer = run(&plan, &script, &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.complete, "true");
    assert_eq!(
        answer.body,
        json!([{"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}, 5])
    );
}

#[tokio::test(start_paused = true)]
async fn appending_onto_something_that_is_not_an_array_fails_that_backend_as_decode() {
    let plan = plan(
        r#"
endpoints:
  - route: GET /feed
    expose_errors: true
    backends:
      - { name: head, url: "http://10.0.0.1/head", into: items }
      - { name: tail, url: "http://10.0.0.1/tail", into: items, append: true }
      - { name: odd, url: "http://10.0.0.1/odd", into: items, append: true }
      - { name: must, url: "http://10.0.0.1/must", into: other, append: true, required: true }
"#,
    );
    let script = Script::new(&[
        ("/head", Reply::Json(200, r#"{"not":"an array"}"#, 0)),
        ("/tail", Reply::Json(200, "[1]", 0)),
        ("/odd", Reply::Json(200, r#""text""#, 0)),
        ("/must", Reply::Json(200, "[true]", 0)),
    ]);
    let answer = run(&plan, &script, &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.verdict, Verdict::Partial);
    assert_eq!(answer.complete, "false");
    assert_eq!(answer.body["items"], json!({"not": "an array"}));
    assert_eq!(answer.body["other"], json!([true]));
    assert_eq!(
        answer.body["_errors"],
        json!({
            "tail": {"kind": "decode", "message": "append: `items` already holds an object, which an array cannot be appended to"},
            "odd": {"kind": "decode", "message": "append: the answer is a string, not an array"},
        })
    );

    // A required backend that cannot be appended fails the request.
    let script = Script::new(&[
        ("/head", Reply::Json(200, "[]", 0)),
        ("/tail", Reply::Json(200, "[1]", 0)),
        ("/odd", Reply::Json(200, "[2]", 0)),
        ("/must", Reply::Json(200, "{}", 0)),
    ]);
    let answer = run(&plan, &script, &[]).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.verdict, Verdict::RequiredFailed(3));
    assert_eq!(answer.body["_errors"]["must"]["kind"], "decode");
}

#[tokio::test(start_paused = true)]
async fn a_fallback_stands_in_for_a_failed_optional_backend_and_the_answer_stays_partial() {
    let plan = plan(
        r#"
endpoints:
  - route: GET /page
    timeout: 100ms
    expose_errors: true
    backends:
      - { name: main, url: "http://10.0.0.1/main", required: true }
      - { name: ads, url: "http://10.0.0.1/ads", into: ads, fallback: { slots: [] } }
      - { name: extra, url: "http://10.0.0.1/extra", into: list, append: true, fallback: [] }
      - { name: tips, url: "http://10.0.0.1/tips", fallback: { tips: none } }
"#,
    );
    let script = Script::new(&[
        ("/main", Reply::Json(200, r#"{"title":"t","list":[0]}"#, 0)),
        ("/ads", Reply::Json(500, "{}", 0)),
        ("/extra", Reply::Hang),
        ("/tips", Reply::Json(200, r#"{"tips":["a"]}"#, 0)),
    ]);
    let answer = run(&plan, &script, &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.complete, "false");
    assert_eq!(
        answer.body,
        json!({
            "title": "t",
            "list": [0],
            "ads": {"slots": []},
            "tips": ["a"],
            "_errors": {
                "ads": {"kind": "status", "status": 500, "message": "answered 500 Internal Server Error"},
                "extra": {"kind": "timeout", "message": "the endpoint's deadline of 100ms expired first"},
            }
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_root_answers_with_its_value_and_a_missing_root_is_a_502() {
    let plan = plan(
        r#"
endpoints:
  - route: GET /feed
    expose_errors: true
    response: { root: data.page }
    backends:
      - { name: one, url: "http://10.0.0.1/one", into: data.page }
      - { name: two, url: "http://10.0.0.1/two" }
"#,
    );
    let script = Script::new(&[
        ("/one", Reply::Json(200, r#"{"n": 1}"#, 0)),
        ("/two", Reply::Json(500, "{}", 0)),
    ]);
    let answer = run(&plan, &script, &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.complete, "false");
    assert_eq!(
        answer.body,
        json!({"n": 1, "_errors": {"two": {"kind": "status", "status": 500, "message": "answered 500 Internal Server Error"}}}),
        "an object root carries the errors"
    );

    let script = Script::new(&[
        ("/one", Reply::Json(500, "{}", 0)),
        ("/two", Reply::Json(200, r#"{"n": 2}"#, 0)),
    ]);
    let answer = run(&plan, &script, &[]).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        answer.body["error"],
        "the merged answer has no `data.page` (response.root)"
    );
    assert_eq!(answer.body["_errors"]["one"]["kind"], "status");
}
