//! Authentication (product.md §2.8) end to end: tokens signed by keys made
//! here, an issuer's JWKS served by a mock, API keys; every refused request
//! is answered by the gateway, and the backend never sees it.

use std::{
    sync::LazyLock,
    time::{SystemTime, UNIX_EPOCH},
};

use fanout_mock::{
    Mock, MockServer, Reply, Script,
    jwt::{SigningKey, hs256, jwks, unsigned},
};
use http::Method;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::support::*;

const ISSUER: &str = "https://idp.test/";

/// Keys made once per test binary (an RSA key takes a moment).
static RSA: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::rs256("rsa-1").unwrap());
static EC: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::es256("ec-1").unwrap());
static LATER: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::es256("ec-2").unwrap());

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims that pass, with `changes` merged in (`null` removes a claim).
fn claims(changes: Value) -> Value {
    let mut claims = json!({
        "iss": ISSUER,
        "aud": "api",
        "sub": "ada",
        "exp": now() + 600,
        "iat": now(),
        "scope": "profile:read orders:read",
    });
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

const CONFIG: &str = r#"
auth:
  users:
    jwt:
      jwks_url: "${env.IDP}/jwks.json"
      issuer: "https://idp.test/"
      audience: [api, other]
      algorithms: [RS256, ES256]
      leeway: 30s
  partners:
    api_key: { header: x-api-key, keys: ["${env.KEY_HASH}"] }
upstreams:
  app: { url: "${env.APP}" }
endpoints:
  - route: GET /me
    auth: users
    scopes: [profile:read]
    claims_to_headers: { x-user-id: sub, x-org: org.id }
    backends:
      - { name: me, upstream: app, path: "/users/{jwt.sub}", required: true }
  - route: GET /either
    auth: [users, partners]
    claims_to_headers: { x-user-id: sub }
    backends:
      - { name: e, upstream: app, path: /either, required: true }
  - route: GET /open
    forward_headers: [x-user-id]
    backends:
      - { name: o, upstream: app, path: /open, required: true }
"#;

/// The partners' key, and its hash for the config.
const PARTNER_KEY: &str = "partner-key-0123456789";

struct Setup {
    idp: MockServer,
    app: MockServer,
    gw: TestGateway,
}

/// An issuer serving `keys` (each answer of the script in turn, the last
/// repeating), an app backend, and a gateway between them.
async fn setup(keys: Vec<Value>) -> Setup {
    let script: Script = keys
        .into_iter()
        .map(|k| Reply::json(k.to_string()))
        .collect();
    let idp = Mock::builder()
        .route(Method::GET, "/jwks.json", script)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let app = Mock::builder()
        .any("/users/{id}", Reply::json(r#"{"user":"{id}"}"#))
        .any("/either", Reply::json(r#"{"either":true}"#))
        .any("/open", Reply::json(r#"{"open":true}"#))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let gw = TestGateway::start(
        CONFIG,
        &[
            ("IDP", idp.url("")),
            ("APP", app.url("")),
            ("KEY_HASH", fanout_gateway::hash_api_key(PARTNER_KEY)),
        ],
    )
    .await;
    Setup { idp, app, gw }
}

/// An issuer serving a JWKS of `keys`, for a config of its own.
async fn issuer(keys: &[&SigningKey]) -> MockServer {
    Mock::builder()
        .route(
            Method::GET,
            "/jwks.json",
            Reply::json(jwks(keys).to_string()),
        )
        .start()
        .await
        .unwrap()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn challenges(got: &Got) -> Vec<String> {
    got.headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_tokens_pass_with_their_claims_and_every_bad_one_is_refused_before_any_call() {
    let s = setup(vec![jwks(&[&RSA, &EC])]).await;
    let me = s.gw.url("/me");

    // RS256 and ES256, the claim in the path and in a header that the
    // client's own value of it does not survive.
    let token = RSA.sign(&claims(json!({ "org": { "id": "o-7" } })));
    let got = get_with(
        &me,
        &[("authorization", &bearer(&token)), ("x-user-id", "mallory")],
    )
    .await;
    assert_eq!((got.status, got.body.as_str()), (200, r#"{"user":"ada"}"#));
    let token = EC.sign(&claims(json!({ "sub": "grace", "aud": ["other", "x"] })));
    let got = get_with(&me, &[("authorization", &bearer(&token))]).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (200, r#"{"user":"grace"}"#)
    );
    let seen = s.app.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].uri.path(), "/users/ada");
    let values = |i: usize, name: &str| -> Vec<String> {
        seen[i]
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        values(0, "x-user-id"),
        ["ada"],
        "the claim, never the client's value"
    );
    assert_eq!(values(0, "x-org"), ["o-7"], "a nested claim");
    assert_eq!(values(1, "x-user-id"), ["grace"]);
    assert!(
        values(1, "x-org").is_empty(),
        "a claim the token lacks sets nothing"
    );
    assert!(
        values(0, "authorization").is_empty(),
        "the token is not forwarded"
    );

    let hour = 3600;
    let refused: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            RSA.sign(&claims(json!({ "exp": now() - hour }))),
            "has expired",
        ),
        (
            "not yet valid",
            RSA.sign(&claims(json!({ "nbf": now() + hour }))),
            "not valid yet",
        ),
        (
            "wrong issuer",
            RSA.sign(&claims(json!({ "iss": "https://evil.test/" }))),
            "issuer",
        ),
        (
            "wrong audience",
            EC.sign(&claims(json!({ "aud": "billing" }))),
            "audience",
        ),
        (
            "no audience",
            EC.sign(&claims(json!({ "aud": null }))),
            "`aud` claim",
        ),
        (
            "no expiry",
            EC.sign(&claims(json!({ "exp": null }))),
            "`exp` claim",
        ),
        (
            "alg none",
            unsigned(&claims(json!({}))),
            "not a well-formed",
        ),
        (
            "HMAC with the RSA public key as the secret",
            hs256(
                RSA.public_pem().as_bytes(),
                Some(RSA.kid()),
                &claims(json!({})),
            ),
            "algorithm HS256 is not accepted",
        ),
        (
            "a signature of other claims",
            {
                let good = RSA.sign(&claims(json!({})));
                let forged = RSA.sign(&claims(json!({ "sub": "root" })));
                let sig = good.rsplit('.').next().unwrap();
                let (input, _) = forged.rsplit_once('.').unwrap();
                format!("{input}.{sig}")
            },
            "signature does not verify",
        ),
        (
            "an ES256 header on an RSA key",
            RSA.sign_with_header(
                &json!({ "alg": "ES256", "kid": RSA.kid(), "typ": "JWT" }),
                &claims(json!({})),
            ),
            "cannot sign with its algorithm",
        ),
        ("garbage", "not.a.token".to_owned(), "not a well-formed"),
        (
            "huge",
            format!("{}.e30.x", "e".repeat(20_000)),
            "not a well-formed",
        ),
    ];
    for (case, token, why) in &refused {
        let got = get_with(&me, &[("authorization", &bearer(token))]).await;
        assert_eq!(got.status, 401, "{case}: {}", got.body);
        let message = got.json()["error"].as_str().unwrap().to_owned();
        assert!(message.contains(why), "{case}: {message}");
        let challenge = challenges(&got);
        assert_eq!(challenge.len(), 1, "{case}");
        assert!(
            challenge[0].starts_with(r#"Bearer error="invalid_token", error_description=""#),
            "{case}: {challenge:?}"
        );
        assert!(
            !got.body.contains(token.as_str()),
            "{case}: the token is not repeated"
        );
    }

    let got = get(&me).await;
    assert_eq!(got.status, 401);
    assert_eq!(challenges(&got), ["Bearer"]);
    assert!(
        got.json()["error"]
            .as_str()
            .unwrap()
            .contains("bearer token")
    );
    let got = get_with(&me, &[("authorization", "Basic dXNlcjpwYXNz")]).await;
    assert_eq!(
        (got.status, challenges(&got)),
        (401, vec!["Bearer".to_owned()])
    );

    assert_eq!(
        s.app.stats().requests,
        2,
        "no refused request reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_come_from_scope_or_scp_and_a_missing_one_is_a_403() {
    let s = setup(vec![jwks(&[&EC])]).await;
    let me = s.gw.url("/me");
    let with = |c: Value| EC.sign(&claims(c));
    for (case, token, status) in [
        ("scope string", with(json!({})), 200),
        (
            "scp array",
            with(json!({ "scope": null, "scp": ["x", "profile:read"] })),
            200,
        ),
        (
            "scp string",
            with(json!({ "scope": null, "scp": "profile:read" })),
            200,
        ),
        (
            "another scope",
            with(json!({ "scope": "orders:read" })),
            403,
        ),
        (
            "a prefix is not the scope",
            with(json!({ "scope": "profile" })),
            403,
        ),
        ("no scope at all", with(json!({ "scope": null })), 403),
    ] {
        let got = get_with(&me, &[("authorization", &bearer(&token))]).await;
        assert_eq!(got.status, status, "{case}: {}", got.body);
        if status == 403 {
            assert_eq!(
                challenges(&got),
                [
                    r#"Bearer error="insufficient_scope", error_description="the token does not grant every scope this endpoint needs", scope="profile:read""#
                ],
                "{case}"
            );
            assert!(
                got.json()["error"]
                    .as_str()
                    .unwrap()
                    .ends_with("profile:read")
            );
        }
    }
    assert_eq!(s.app.stats().requests, 3, "a 403 calls no backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_scheme_of_a_list_accepts_and_api_keys_are_checked_by_their_hash() {
    let s = setup(vec![jwks(&[&EC])]).await;
    let either = s.gw.url("/either");

    let got = get_with(
        &either,
        &[("x-api-key", PARTNER_KEY), ("x-user-id", "mallory")],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let token = EC.sign(&claims(json!({ "scope": null })));
    let got = get_with(
        &either,
        &[("authorization", &bearer(&token)), ("x-user-id", "mallory")],
    )
    .await;
    assert_eq!(
        got.status, 200,
        "a token without scopes: the endpoint needs none"
    );
    let seen = s.app.seen();
    assert!(
        seen[0].headers.get("x-user-id").is_none(),
        "an API key has no claims: the spoofed header is dropped, not passed"
    );
    assert_eq!(seen[1].headers["x-user-id"], "ada");
    assert!(
        seen[0].headers.get("x-api-key").is_none(),
        "the key is not forwarded"
    );

    let got = get_with(&either, &[("x-api-key", "partner-key-0123456780")]).await;
    assert_eq!(got.status, 401);
    assert_eq!(got.json()["error"], "the API key is not an accepted one");
    assert_eq!(challenges(&got), ["Bearer", r#"ApiKey header="x-api-key""#]);
    assert!(!got.body.contains("partner-key"));
    let got = get(&either).await;
    assert_eq!(got.status, 401);
    assert_eq!(
        got.json()["error"],
        "this endpoint needs a bearer token (authorization: Bearer …) or an API key in `x-api-key`"
    );
    assert_eq!(challenges(&got), ["Bearer", r#"ApiKey header="x-api-key""#]);
    let got = get_with(
        &either,
        &[("x-api-key", PARTNER_KEY), ("x-api-key", "other")],
    )
    .await;
    assert_eq!(got.status, 401, "two keys at once are refused");
    // A bad token does not hide a good key, nor the other way round.
    let got = get_with(
        &either,
        &[
            ("authorization", "Bearer x.y.z"),
            ("x-api-key", PARTNER_KEY),
        ],
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(s.app.stats().requests, 3);

    // An endpoint without auth forwards what its allow-list says.
    let got = get_with(&s.gw.url("/open"), &[("x-user-id", "anyone")]).await;
    assert_eq!(got.status, 200);
    assert_eq!(s.app.seen()[3].headers["x-user-id"], "anyone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_id_fetches_the_keys_again_at_most_once_a_minute() {
    // The issuer publishes a second key after the gateway's first fetch.
    let s = setup(vec![jwks(&[&EC]), jwks(&[&EC, &LATER])]).await;
    let me = s.gw.url("/me");
    let first = EC.sign(&claims(json!({})));
    assert_eq!(
        get_with(&me, &[("authorization", &bearer(&first))])
            .await
            .status,
        200
    );
    assert_eq!(s.idp.stats().requests, 1, "fetched once at start");

    let rotated = LATER.sign(&claims(json!({})));
    let got = get_with(&me, &[("authorization", &bearer(&rotated))]).await;
    assert_eq!(got.status, 200, "the new key was fetched: {}", got.body);
    assert_eq!(s.idp.stats().requests, 2);

    // Made-up key ids: refused, without another fetch within the minute.
    for i in 0..5 {
        let unknown = EC.sign_with_header(
            &json!({ "alg": "ES256", "kid": format!("made-up-{i}") }),
            &claims(json!({})),
        );
        let got = get_with(&me, &[("authorization", &bearer(&unknown))]).await;
        assert_eq!(got.status, 401);
        assert!(
            got.json()["error"]
                .as_str()
                .unwrap()
                .contains("does not publish")
        );
    }
    // Another issuer's token never makes this scheme fetch.
    let elsewhere = LATER.sign_with_header(
        &json!({ "alg": "ES256", "kid": "theirs" }),
        &claims(json!({ "iss": "https://elsewhere.test/" })),
    );
    assert_eq!(
        get_with(&me, &[("authorization", &bearer(&elsewhere))])
            .await
            .status,
        401
    );
    assert_eq!(
        s.idp.stats().requests,
        2,
        "no fetch for the made-up key ids"
    );
    assert_eq!(s.app.stats().requests, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_a_token_is_a_503_and_a_failed_refresh_keeps_the_last_good_keys() {
    // No issuer listening: the keys never come.
    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", gone.local_addr().unwrap());
    drop(gone);
    let app = Mock::builder()
        .any("/users/{id}", Reply::json("{}"))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let gw = TestGateway::start(
        CONFIG,
        &[
            ("IDP", dead),
            ("APP", app.url("")),
            ("KEY_HASH", fanout_gateway::hash_api_key(PARTNER_KEY)),
        ],
    )
    .await;
    let token = EC.sign(&claims(json!({})));
    let got = get_with(&gw.url("/me"), &[("authorization", &bearer(&token))]).await;
    assert_eq!(got.status, 503, "{}", got.body);
    assert_eq!(got.headers["retry-after"], "1");
    assert!(
        got.json()["error"]
            .as_str()
            .unwrap()
            .contains("keys have not been fetched")
    );
    assert_eq!(app.stats().requests, 0);

    // Keys fetched once, then the issuer fails: the keys stay.
    let s = setup(vec![jwks(&[&EC]), Value::Null]).await;
    let got = get_with(&s.gw.url("/me"), &[("authorization", &bearer(&token))]).await;
    assert_eq!(got.status, 200);
    let unknown = EC.sign_with_header(
        &json!({ "alg": "ES256", "kid": "nope" }),
        &claims(json!({})),
    );
    let got = get_with(&s.gw.url("/me"), &[("authorization", &bearer(&unknown))]).await;
    assert_eq!(got.status, 401, "the refetch found garbage");
    assert_eq!(s.idp.stats().requests, 2);
    let got = get_with(&s.gw.url("/me"), &[("authorization", &bearer(&token))]).await;
    assert_eq!(got.status, 200, "the last good keys are still in use");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_per_endpoint_in_metrics_and_on_the_dashboard() {
    // The recorder first: the keys are fetched (and counted) at start.
    let metrics = super::operate::metrics();
    let s = setup(vec![jwks(&[&EC])]).await;
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_url = format!("http://{}", admin.local_addr().unwrap());
    tokio::spawn(fanout_gateway::serve_admin(
        admin,
        s.gw.gateway.clone(),
        Some(metrics),
        std::future::pending(),
    ));
    let me = s.gw.url("/me");
    // Give the admin listener a moment to take its first connection.
    assert_eq!(get(&format!("{admin_url}/healthz")).await.status, 200);
    for _ in 0..3 {
        assert_eq!(get(&me).await.status, 401);
    }
    let no_scope = EC.sign(&claims(json!({ "scope": "other" })));
    assert_eq!(
        get_with(&me, &[("authorization", &bearer(&no_scope))])
            .await
            .status,
        403
    );

    // The dashboard's table of refusals (kept apart from the waterfall, so
    // a flood of them never pushes the requests that ran out of it).
    let stats = get(&format!("{admin_url}/api/stats")).await.json();
    let refused: Vec<(String, u64, u64)> = stats["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["endpoint"].as_str().unwrap().to_owned(),
                r["status"].as_u64().unwrap(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        refused,
        [
            ("GET /me".to_owned(), 401, 3),
            ("GET /me".to_owned(), 403, 1)
        ]
    );
    assert!(
        stats["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["endpoint"] != "GET /me"),
        "a refused request is not in the waterfall: {stats}"
    );

    let text = get(&format!("{admin_url}/metrics")).await.body;
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    assert!(line(r#"fanout_requests_total{endpoint="GET /me",status="401"}"#) >= 3.0);
    assert!(line(r#"fanout_requests_total{endpoint="GET /me",status="403"}"#) >= 1.0);
    assert!(line(r#"fanout_auth_refused_total{endpoint="GET /me",reason="missing"}"#) >= 3.0);
    assert!(line(r#"fanout_auth_refused_total{endpoint="GET /me",reason="scope"}"#) >= 1.0);
    assert!(line(r#"fanout_jwks_fetches_total{scheme="users",outcome="ok"}"#) >= 1.0);

    let config = get(&format!("{admin_url}/config")).await.json();
    assert_eq!(
        config["auth"]["partners"]["api_key"]["keys"][0],
        "<redacted>"
    );
    assert_eq!(s.app.stats().requests, 0);
}

/// A config's problems, as `line: message`.
fn problems(yaml: &str) -> Vec<String> {
    match fanout_gateway::Plan::parse(
        yaml,
        fanout_gateway::config::Format::Yaml,
        "auth.yaml",
        |_| None,
    ) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.line, p.message))
            .collect(),
    }
}

#[test]
fn check_refuses_none_hmac_bad_hashes_and_misused_claims_at_their_line() {
    let yaml = r#"auth:
  users:
    jwt:
      jwks_url: "ftp://idp.test/keys"
      issuer: ""
      audience: []
      algorithms: [RS256, none, HS256, XX1]
      leeway: 1h
  partners:
    api_key:
      header: "bad header"
      keys: ["sha256:abc", "my-plain-secret-key"]
  both:
    jwt: { jwks_file: keys.json, issuer: i, audience: a }
    api_key: { keys: [] }
  files:
    jwt: { jwks_file: does-not-exist.json, issuer: i, audience: a }
endpoints:
  - route: GET /a
    auth: [users, nobody]
    scopes: [profile:read, "two words"]
    claims_to_headers: { x-forwarded-for: sub, x-user: "a..b" }
    backends:
      - { name: jwt, url: "http://127.0.0.1:1/{jwt.sub}" }
  - route: GET /b
    auth: partners
    scopes: [x]
    forward_headers: [x-user-id]
    claims_to_headers: { x-user-id: sub }
    backends:
      - { name: b, url: "http://127.0.0.1:1/{jwt.sub}" }
  - route: GET /c
    backends:
      - { name: c, url: "http://127.0.0.1:1/{jwt.sub}" }
"#;
    let found = problems(yaml);
    let expect = [
        "4: jwks_url `ftp://idp.test/keys` must start with http:// or https://",
        "5: issuer must not be empty",
        "6: audience must name at least one audience",
        "7: `none` is an unsigned token: never accepted",
        "7: HS256 is HMAC, a shared secret",
        "7: unknown algorithm `XX1` (accepted: RS256,",
        "8: leeway 1h is more than 10m",
        "11: `bad header` is not a valid header name",
        "12: an API key is stored as `sha256:` and 64 hex digits",
        "14: scheme `both` needs exactly one of `jwt` or `api_key`",
        "17: cannot read `does-not-exist.json`",
        "20: unknown auth scheme `nobody` (defined schemes: both, files, partners, users)",
        "21: scope `two words`: a scope is one word",
        "22: `x-forwarded-for` is set by the gateway",
        "22: claim ",
        "24: `jwt` is reserved for {jwt.claim}",
        "27: scopes come from a token's claims, and `partners` is an API-key scheme",
        "29: claims_to_headers reads a token's claims: add `auth` with a JWT scheme",
        "29: `x-user-id` is also in forward_headers",
        "31: {jwt.sub} reads the request's token, and `partners` is an API-key scheme",
        "34: {jwt.sub} reads the request's token: add `auth` with a JWT scheme",
    ];
    for want in expect {
        assert!(
            found.iter().any(|p| p.starts_with(want)),
            "missing `{want}` in:\n{}",
            found.join("\n")
        );
    }
    let joined = found.join("\n");
    assert!(
        !joined.contains("my-plain-secret-key"),
        "a pasted key is not repeated:\n{joined}"
    );
    assert_eq!(
        found.len(),
        expect.len() + 1,
        "one more: the second bad key\n{joined}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_file_is_read_with_the_config_and_named_among_its_files() {
    let dir = std::env::temp_dir().join(format!("fanout-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys.json");
    std::fs::write(&keys, jwks(&[&EC]).to_string()).unwrap();
    let app = Mock::builder()
        .any("/x", Reply::json("{}"))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let config = dir.join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "auth:\n  users:\n    jwt: {{ jwks_file: keys.json, issuer: \"{ISSUER}\", audience: api, algorithms: [ES256] }}\n\
             endpoints:\n  - route: GET /x\n    auth: users\n    backends: [{{ name: x, url: \"{}/x\" }}]\n",
            app.url("")
        ),
    )
    .unwrap();
    let plan = fanout_gateway::Plan::load(&config).unwrap();
    assert!(
        plan.files().contains(&keys),
        "a change to it reloads: {:?}",
        plan.files()
    );
    let gateway = fanout_gateway::Gateway::new(plan);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(fanout_gateway::serve(
        listener,
        gateway.clone(),
        std::future::pending(),
    ));
    let url = format!("http://{addr}/x");
    let token = EC.sign(&claims(json!({})));
    assert_eq!(
        get_with(&url, &[("authorization", &bearer(&token))])
            .await
            .status,
        200
    );
    let other = LATER.sign(&claims(json!({})));
    assert_eq!(
        get_with(&url, &[("authorization", &bearer(&other))])
            .await
            .status,
        401
    );

    // A new key in the file, and a reload: the new key's tokens pass.
    std::fs::write(&keys, jwks(&[&EC, &LATER]).to_string()).unwrap();
    gateway.reload(fanout_gateway::Plan::load(&config).unwrap());
    assert_eq!(
        get_with(&url, &[("authorization", &bearer(&other))])
            .await
            .status,
        200
    );

    // A file the check cannot use is refused at its line.
    std::fs::write(&keys, r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).unwrap();
    let err = fanout_gateway::Plan::load(&config).unwrap_err().to_string();
    assert!(
        err.contains("gateway.yaml:3:") && err.contains("no public signing key"),
        "{err}"
    );
    std::fs::write(&keys, jwks(&[&RSA]).to_string()).unwrap();
    let err = fanout_gateway::Plan::load(&config).unwrap_err().to_string();
    assert!(
        err.contains("holds no key for the scheme's algorithms (ES256)"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_a_template_needs_must_be_in_the_token_or_the_request_is_a_400() {
    let s = setup(vec![jwks(&[&EC])]).await;
    let me = s.gw.url("/me");
    for (case, changes, why) in [
        (
            "no sub",
            json!({ "sub": null }),
            "no value for {jwt.sub}: the token has no such claim",
        ),
        ("empty", json!({ "sub": "" }), "{jwt.sub} is empty"),
    ] {
        let token = EC.sign(&claims(changes));
        let got = get_with(&me, &[("authorization", &bearer(&token))]).await;
        assert_eq!(got.status, 400, "{case}: {}", got.body);
        assert!(
            got.json()["error"].as_str().unwrap().starts_with(why),
            "{case}: {}",
            got.body
        );
    }
    // `sub` is a string (RFC 7519 §4.1.2): anything else is a bad token.
    for sub in [json!(42), json!({ "id": 1 })] {
        let token = EC.sign(&claims(json!({ "sub": sub })));
        assert_eq!(
            get_with(&me, &[("authorization", &bearer(&token))])
                .await
                .status,
            401
        );
    }
    // A claim value is percent-encoded like any value.
    let token = EC.sign(&claims(json!({ "sub": "a/../b?c" })));
    assert_eq!(
        get_with(&me, &[("authorization", &bearer(&token))])
            .await
            .status,
        200
    );
    let seen = s.app.seen();
    assert_eq!(seen.len(), 1, "no 400 or 401 reached the backend");
    assert_eq!(seen[0].uri.path(), "/users/a%2F..%2Fb%3Fc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_fills_a_body_template_keeping_its_json_type() {
    let idp = issuer(&[&EC]).await;
    let audit = Mock::builder()
        .route(Method::POST, "/events", Reply::echo())
        .start()
        .await
        .unwrap();
    let gw = TestGateway::start(
        r#"
auth:
  users:
    jwt: { jwks_url: "${env.IDP}/jwks.json", issuer: "https://idp.test/", audience: api, algorithms: [ES256] }
endpoints:
  - route: POST /orders
    auth: users
    backends:
      - name: audit
        url: "${env.AUDIT}/events"
        method: POST
        required: true
        body: { by: "{jwt.sub}", org: "{jwt.org}", label: "order by {jwt.sub}", item: "{body.item}" }
"#,
        &[("IDP", idp.url("")), ("AUDIT", audit.url(""))],
    )
    .await;
    let token = EC.sign(&claims(json!({ "org": { "id": 7, "name": "acme" } })));
    let request = http::Request::post(gw.url("/orders"))
        .header("authorization", bearer(&token))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"item": "x-1"}"#,
        )))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        audit.seen()[0].body_text(),
        Some(r#"{"by":"ada","org":{"id":7,"name":"acme"},"label":"order by ada","item":"x-1"}"#),
        "a whole-placeholder claim keeps its type; an embedded one is text"
    );
    // Without a token the body is not even read, and nothing is called.
    let request = http::Request::post(gw.url("/orders"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            br#"{"item": "x-2"}"#,
        )))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(audit.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_keyed_rate_limit_gives_each_value_its_own_bucket() {
    let idp = issuer(&[&EC]).await;
    let app = Mock::builder()
        .any("/users/{id}", Reply::json(r#"{"user":"{id}"}"#))
        .start()
        .await
        .unwrap();
    let gw = TestGateway::start(
        r#"
auth:
  users:
    jwt: { jwks_url: "${env.IDP}/jwks.json", issuer: "https://idp.test/", audience: api, algorithms: [ES256] }
endpoints:
  - route: GET /me
    auth: users
    rate_limit: { rate: 1/h, burst: 2, key: "claim:org.id" }
    backends:
      - { name: me, url: "${env.APP}/users/{jwt.sub}", required: true }
"#,
        &[("IDP", idp.url("")), ("APP", app.url(""))],
    )
    .await;
    let me = gw.url("/me");
    // A dot path to a number: each organisation has its own bucket.
    let ada = bearer(&EC.sign(&claims(json!({ "sub": "ada", "org": { "id": 1 } }))));
    let bob = bearer(&EC.sign(&claims(json!({ "sub": "bob", "org": { "id": 2 } }))));
    for _ in 0..2 {
        assert_eq!(get_with(&me, &[("authorization", &ada)]).await.status, 200);
    }
    let refused = get_with(&me, &[("authorization", &ada)]).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(refused.headers.contains_key("retry-after"));
    // Another organisation has a bucket of its own, whatever the address.
    let got = get_with(&me, &[("authorization", &bob)]).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.headers["ratelimit-remaining"], "1");
    // A request refused for its credentials is not counted against anyone.
    assert_eq!(get(&me).await.status, 401);
    assert_eq!(app.stats().requests, 3);
}

#[test]
fn a_claim_key_without_a_jwt_only_auth_is_refused_at_its_line() {
    let found = problems(
        r#"auth:
  partners:
    api_key: { keys: ["sha256:4b3c1bf421d96f1b49942450483ffb00bad52cbc5be4cc39b9552bb8fa56395c"] }
endpoints:
  - route: GET /a
    rate_limit: { rate: 1/s, key: "claim:sub" }
    backends:
      - { name: a, url: "http://127.0.0.1:1/a" }
  - route: GET /b
    auth: partners
    rate_limit: { rate: 1/s, key: "claim:sub" }
    backends:
      - { name: b, url: "http://127.0.0.1:1/b" }
  - route: GET /c
    rate_limit: { rate: 1/s, key: "claim:a..b" }
    backends:
      - { name: c, url: "http://127.0.0.1:1/c" }
"#,
    );
    for want in [
        "6: key `claim:sub` reads the request's token: add `auth` with a JWT scheme",
        "11: key `claim:sub` reads the request's token, and `partners` is an API-key scheme",
        "15: key `claim:a..b`",
    ] {
        assert!(
            found.iter().any(|p| p.starts_with(want)),
            "{want}: {found:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keys_are_fetched_with_the_issuers_host() {
    let s = setup(vec![jwks(&[&EC])]).await;
    let token = EC.sign(&claims(json!({})));
    let got = get_with(&s.gw.url("/me"), &[("authorization", &bearer(&token))]).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let fetch = &s.idp.seen()[0];
    let authority = s.idp.url("").trim_start_matches("http://").to_owned();
    assert_eq!(
        fetch.headers.get("host").map(|v| v.to_str().unwrap()),
        Some(authority.trim_end_matches('/')),
        "a name-based server needs the Host to find the issuer"
    );
}
