//! The configuration file: formats, units, environment, located problems.

use std::time::Duration;

use fanout_gateway::{
    Plan,
    config::{Config, ConfigError, Format, Method},
};

const YAML: &str = r#"server:
  listen: 127.0.0.1:8080
  request_timeout: 5s
  max_request_body: 1MiB

upstreams:
  users:
    url: http://127.0.0.1:9101
    timeout: 500ms
    max_in_flight: 512
    retry: { attempts: 3, backoff: 20ms, budget: 20% }
    hedge: { delay: 30ms }
    breaker: { failures: 5, cooldown: 10s }
    cache: { ttl: 30s, max_entries: 10000 }
    coalesce: true
    headers: { X-Api-Key: "${env.USERS_KEY}" }
  orders:
    url: http://127.0.0.1:9102

endpoints:
  - route: GET /users/{id}
    timeout: 1s
    forward_headers: [Authorization]
    forward_query: [lang]
    expose_errors: false
    backends:
      - name: profile
        upstream: users
        path: /users/{id}?lang={query.lang}
        method: GET
        required: true
        timeout: 300ms
        extract: data
        select: [id, name, address.city]
        drop: [password]
        rename: { name: full_name }
        into: profile
        pass_status: false
      - name: orders
        upstream: orders
        path: /orders?user={profile.account_id}
        after: [profile]
        into: orders
"#;

fn parse(source: &str, format: Format) -> Result<Config, ConfigError> {
    Plan::parse(source, format, "gateway.conf", |name| {
        (name == "USERS_KEY").then(|| "k-123".to_string())
    })
    .map(|plan| plan.config().clone())
}

fn problems(source: &str, format: Format) -> Vec<String> {
    parse(source, format)
        .unwrap_err()
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect()
}

#[test]
fn the_spec_example_loads_with_every_key() {
    let config = parse(YAML, Format::Yaml).unwrap();
    assert_eq!(config.server.request_timeout.0, Duration::from_secs(5));
    assert_eq!(config.server.max_request_body.0, 1 << 20);
    let users = &config.upstreams["users"];
    assert_eq!(users.headers["X-Api-Key"], "k-123", "env expanded");
    assert_eq!(users.retry.as_ref().unwrap().budget.fraction(), 0.2);
    let profile = &config.endpoints[0].backends[0];
    assert_eq!((profile.method, profile.required), (Method::Get, true));
    assert_eq!(profile.rename["name"], "full_name");
    assert_eq!(config.endpoints[0].backends[1].after, ["profile"]);
}

#[test]
fn yaml_toml_and_json_are_one_model() {
    let yaml = parse(YAML, Format::Yaml).unwrap();
    let as_json = serde_json::to_string_pretty(&yaml).unwrap();
    let as_toml = toml::to_string(&yaml).unwrap();
    let from_json = parse(&as_json, Format::Json).unwrap();
    let from_toml = parse(&as_toml, Format::Toml).unwrap();
    let canonical = |c: &Config| serde_json::to_string(c).unwrap();
    assert_eq!(canonical(&from_json), canonical(&yaml));
    assert_eq!(canonical(&from_toml), canonical(&yaml));
}

#[test]
fn unknown_keys_are_refused_with_their_position() {
    let source = YAML.replace(
        "    expose_errors: false\n",
        "    expose_errors: false\n    exposeErrors: true\n",
    );
    let found = problems(&source, Format::Yaml);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0],
        "26:5: unknown field `exposeErrors`, expected one of route, timeout, forward_headers, forward_query, expose_errors, auth, scopes, claims_to_headers, rate_limit, backends, proxy, response"
    );
}

#[test]
fn bad_units_say_what_to_write() {
    let found = problems(
        &YAML.replace("timeout: 500ms", "timeout: 500"),
        Format::Yaml,
    );
    assert!(found[0].starts_with("9:"), "{found:?}");
    assert!(found[0].contains("like 250ms or 2s"), "{found:?}");
}

#[test]
fn syntax_errors_are_located_in_every_format() {
    let yaml = problems("endpoints: [\n  {route: GET /x\n", Format::Yaml);
    assert_eq!(yaml.len(), 1);
    let json = problems("{\n  \"endpoints\": [,]\n}", Format::Json);
    assert!(json[0].starts_with("2:"), "{json:?}");
    let toml = problems("[server]\nlisten = \n", Format::Toml);
    assert!(toml[0].starts_with("2:"), "{toml:?}");
}

#[test]
fn every_semantic_problem_is_reported_at_its_line() {
    let source = r#"server: { request_timeout: 2s }
upstreams:
  users: { url: "ftp://users.internal" }
endpoints:
  - route: GET /users/{id}
    timeout: 3s
    backends:
      - name: profile
        upstream: user
        path: /users/{uid}
        timeout: 5s
      - name: orders
        url: http://{id}.orders.internal/orders
      - name: audit
        upstream: users
        path: /audit?u={profile.id}&t={query.token}
        after: [history]
      - name: profile
        url: http://127.0.0.1:9/x
  - route: GET /users/{name}
    backends:
      - { name: a, url: "http://127.0.0.1:1/", after: [b] }
      - { name: b, url: "http://127.0.0.1:1/", after: [a], pass_status: true }
"#;
    let found = problems(source, Format::Yaml);
    let expect = [
        "3:17: upstream `users`: `ftp://users.internal` must start with http:// or https://",
        "6:14: timeout 3s is longer than server.request_timeout (2s)",
        "9:19: unknown upstream `user` (defined upstreams: users)",
        "10:15: {uid} is not captured by route `GET /users/{id}` (it captures: id)",
        "11:18: timeout 5s is longer than the endpoint's deadline (3s)",
        "13:14: `http://{id}.orders.internal/orders`: the host and port cannot hold {…} values",
        "16:15: {profile.id} uses `profile`'s answer, so `profile` must be listed in `after`",
        "16:15: {query.token} would send the client's `token` on: add `token` to the endpoint's forward_query",
        "17:17: no backend named `history` in this endpoint",
        "18:15: two backends are named `profile` (also backends[0])",
        "20:12: route `GET /users/{name}` matches the same requests as endpoints[0]",
        "22:55: `after` makes a cycle: a → b → a",
        "23:73: pass_status applies to required backends",
    ];
    assert_eq!(found.len(), expect.len(), "{found:#?}");
    for (got, want) in found.iter().zip(expect) {
        assert!(got.starts_with(want), "\n got: {got}\nwant: {want}…");
    }
}

#[test]
fn errors_name_the_file() {
    let err = Plan::parse("endpoints: []", Format::Yaml, "conf/gw.yaml", |_| None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "conf/gw.yaml:1:12: no endpoints: add at least one under `endpoints`"
    );
}

#[test]
fn missing_environment_variables_are_located() {
    let source = YAML.replace("${env.USERS_KEY}", "${env.NOT_SET}");
    let found = problems(&source, Format::Yaml);
    assert_eq!(
        found,
        [
            "16:28: environment variable NOT_SET is not set: set it, or give a default with ${env.NOT_SET:-value}"
        ]
    );
}

#[test]
fn loading_picks_the_format_by_extension() {
    let dir = std::env::temp_dir().join(format!("fanout-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("gw.yml");
    std::fs::write(
        &good,
        "endpoints:\n  - { route: GET /, backends: [{ name: a, url: \"http://127.0.0.1:1/\" }] }\n",
    )
    .unwrap();
    assert_eq!(Plan::load(&good).unwrap().config().endpoints.len(), 1);
    let odd = dir.join("gw.ini");
    std::fs::write(&odd, "").unwrap();
    assert!(
        Plan::load(&odd)
            .unwrap_err()
            .to_string()
            .contains("name the file .yaml, .yml, .toml or .json")
    );
    let missing = dir.join("absent.yaml");
    assert!(
        Plan::load(&missing)
            .unwrap_err()
            .to_string()
            .contains("cannot read the file")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_schema_describes_the_contract() {
    let schema = Config::json_schema();
    let text = schema.to_string();
    for key in [
        "request_timeout",
        "max_in_flight",
        "forward_headers",
        "pass_status",
        "after",
    ] {
        assert!(text.contains(key), "schema lacks {key}");
    }
    assert!(
        text.contains("Backends whose answers this one needs"),
        "doc comments become descriptions"
    );
    assert!(text.contains("a duration such as 250ms"));
}

// Regression tests of issue 16: each was accepted by `fanout check` before
// its fix, and then broke serving.

/// A minimal valid config with `server` set to `server`.
fn with_server(server: &str) -> String {
    format!(
        "server: {{ {server} }}\nendpoints:\n  - {{ route: GET /a, backends: [{{ name: a, url: \"http://127.0.0.1:1/\" }}] }}\n"
    )
}

#[test]
fn json_nesting_deeper_than_the_parser_allows_is_refused() {
    let found = problems(&with_server("max_json_depth: 6000"), Format::Yaml);
    assert_eq!(
        found,
        [
            "1:27: max_json_depth 6000 is more than 127, the deepest JSON the gateway can parse and merge safely"
        ]
    );
    assert!(problems(&with_server("max_json_depth: 0"), Format::Yaml)[0].contains("at least 1"));
    assert!(parse(&with_server("max_json_depth: 127"), Format::Yaml).is_ok());
}

#[test]
fn absurd_durations_and_sizes_are_refused_where_they_are_written() {
    let found = problems(
        &with_server(
            "header_read_timeout: 100000000h, request_timeout: 10000h, max_request_body: 100GiB",
        ),
        Format::Yaml,
    );
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(
        found[0].starts_with("1:32: header_read_timeout 11407years"),
        "{found:#?}"
    );
    assert!(found[0].ends_with("is more than 1h"), "{found:#?}");
    assert!(
        found[1].contains("request_timeout") && found[1].ends_with("is more than 1h"),
        "{found:#?}"
    );
    assert!(
        found[2].starts_with("1:87: max_request_body 100.0 GiB is more than 1.0 GiB"),
        "{found:#?}"
    );

    let upstream = YAML
        .replace("cooldown: 10s", "cooldown: 100000000h")
        .replace("backoff: 20ms", "backoff: 10h")
        .replace("ttl: 30s", "ttl: 400d")
        .replace("attempts: 3", "attempts: 1000");
    let found = problems(&upstream, Format::Yaml);
    let expect = [
        ("11:24", "attempts 1000 is more than 10"),
        ("11:39", "backoff 10h is more than 1m"),
        ("13:39", "cooldown 11407years"),
        (
            "14:19",
            "ttl 1year 1month 4days 7h 26m 24s is more than 1day",
        ),
    ];
    assert_eq!(found.len(), expect.len(), "{found:#?}");
    for (got, (at, what)) in found.iter().zip(expect) {
        assert!(
            got.starts_with(at) && got.contains(what),
            "\n got: {got}\nwant: {at}: …{what}…"
        );
    }
}

#[test]
fn hop_by_hop_headers_cannot_be_forwarded() {
    let found = problems(
        &YAML.replace(
            "forward_headers: [Authorization]",
            "forward_headers: [Authorization, Connection, te]",
        ),
        Format::Yaml,
    );
    assert_eq!(
        found,
        [
            "23:38: `Connection` describes the client's connection, not the request: hop-by-hop headers are never forwarded",
            "23:50: `te` describes the client's connection, not the request: hop-by-hop headers are never forwarded",
        ]
    );
}

#[test]
fn duplicate_keys_are_refused_in_every_format() {
    let json = r#"{
  "upstreams": {
    "users": { "url": "http://127.0.0.1:1" },
    "users": { "url": "http://127.0.0.1:2" }
  },
  "endpoints": [{ "route": "GET /a", "backends": [{ "name": "a", "upstream": "users" }] }]
}"#;
    let found = problems(json, Format::Json);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].starts_with("4:5: ") && found[0].contains("duplicate key `users`"),
        "{found:#?}"
    );
    let yaml = "upstreams:\n  users: { url: \"http://127.0.0.1:1\" }\n  users: { url: \"http://127.0.0.1:2\" }\nendpoints: []\n";
    assert!(
        problems(yaml, Format::Yaml)[0].contains("duplicate"),
        "YAML refuses them too"
    );
}

#[test]
fn a_user_name_in_a_url_cannot_move_a_call_to_another_host() {
    let found = problems(
        &YAML.replace(
            "url: http://127.0.0.1:9102",
            "url: http://127.0.0.1:9101@evil.com/x",
        ),
        Format::Yaml,
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].contains("cannot hold a user name or password"),
        "{found:#?}"
    );
}
