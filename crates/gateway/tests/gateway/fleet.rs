//! A fleet of gateways sharing one real `redis-server` (product.md §2.9):
//! fleet-wide rate limits, shared caches, and what happens when Redis is
//! down, slow, or back.

use std::time::{Duration, Instant};

use fanout_mock::{Reply, redis::RedisServer};

use super::support::*;

/// A gateway and its admin API (for the store's state in `/api/stats`).
struct Node {
    gw: TestGateway,
    admin: String,
}

impl Node {
    async fn start(yaml: &str, vars: &[(&str, String)]) -> Node {
        let gw = TestGateway::start(yaml, vars).await;
        let admin = format!("http://{}", gw.admin(None).await);
        Node { gw, admin }
    }

    /// The store's state: `{url, up, rate_limit_fallbacks, cache_fallbacks}`.
    async fn store(&self) -> serde_json::Value {
        get(&format!("{}/api/stats", self.admin)).await.json()["store"].clone()
    }

    /// The first answer to `GET path` served through the store again (no
    /// fallback counted meanwhile), within 10 s: the store is back in use.
    async fn through_the_store(&self, path: &str) -> Got {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.wait_store(true).await;
            let before = self.store().await["rate_limit_fallbacks"].clone();
            let got = get(&self.gw.url(path)).await;
            if self.store().await["rate_limit_fallbacks"] == before {
                return got;
            }
            // A call that missed the budget (a busy machine) put the store
            // down again: the next probe brings it back.
            assert!(Instant::now() < deadline, "the store is not used again");
        }
    }

    /// Waits (10 s at most) until the store is `up` (or not).
    async fn wait_store(&self, up: bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.store().await["up"] != up {
            assert!(Instant::now() < deadline, "the store never became up={up}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A config whose `GET /x` calls `/data` on `backend` under `rate_limit`,
/// with the fleet's store at `${env.REDIS}` and `extra` top-level keys.
fn config(rate_limit: &str, extra: &str) -> String {
    format!(
        "store: {{ redis: \"${{env.REDIS}}\" }}\nrate_limits_shared: true\n{extra}\nendpoints:\n  - route: GET /x\n    rate_limit: {rate_limit}\n    backends: [{{ name: a, url: \"${{env.B}}/data\" }}]\n"
    )
}

async fn redis() -> RedisServer {
    tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap()
        .expect("redis-server (apt-get install -y redis-server)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_enforce_one_limit_between_them() {
    let redis = redis().await;
    let backend = backend(&[("/data", Reply::json("{}"))]).await;
    let vars = [("REDIS", redis.url()), ("B", backend.url(""))];
    let yaml = config("{ rate: 1/h, burst: 5, key: \"header:x-client\" }", "");
    let (a, b) = (
        Node::start(&yaml, &vars).await,
        Node::start(&yaml, &vars).await,
    );
    // One client's requests, alternating between the gateways. A run in
    // which a call missed the 50 ms budget (a busy machine) fell back to the
    // local limiters and says nothing of the shared one: another client
    // tries again.
    let fallbacks = async || {
        let (x, y) = (a.store().await, b.store().await);
        x["rate_limit_fallbacks"].as_u64().unwrap() + y["rate_limit_fallbacks"].as_u64().unwrap()
    };
    let mut measured = None;
    for client in 0..5 {
        a.wait_store(true).await;
        b.wait_store(true).await;
        let before = fallbacks().await;
        let id = format!("client-{client}");
        let mut statuses = Vec::new();
        for i in 0..12 {
            let node = if i % 2 == 0 { &a } else { &b };
            let got = get_with(&node.gw.url("/x"), &[("x-client", &id)]).await;
            statuses.push(got.status);
            if got.status == 200 {
                assert_eq!(got.headers["ratelimit-limit"], "5");
            }
        }
        if fallbacks().await == before {
            measured = Some(statuses);
            break;
        }
    }
    let statuses = measured.expect("the store was never used for a whole run");
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(statuses[..5], [200; 5], "{statuses:?}");

    // The bucket lives in Redis, named by digests, and expires when it
    // would be full again: memory there stays bounded.
    let key = redis_keys(&redis).await.pop().unwrap();
    assert!(key.starts_with("fanout:rl:") && key.len() == 59, "{key}");
    let ttl = redis.integer(&["PTTL", &key]).unwrap();
    assert!(ttl > 0 && ttl <= 5 * 3_600_000, "{ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_each_gateway_enforces_its_share() {
    let mut redis = redis().await;
    redis.stop();
    let backend = backend(&[("/data", Reply::json("{}"))]).await;
    let vars = [
        ("REDIS", format!("redis://127.0.0.1:{}", redis.port())),
        ("B", backend.url("")),
    ];
    let yaml = config("{ rate: 1/h, burst: 4, key: endpoint }", "")
        .replace("store: {", "store: { fleet_size: 2,");
    let (a, b) = (
        Node::start(&yaml, &vars).await,
        Node::start(&yaml, &vars).await,
    );
    let mut allowed = 0;
    for node in [&a, &b] {
        for _ in 0..4 {
            let started = Instant::now();
            let got = get(&node.gw.url("/x")).await;
            assert!(started.elapsed() < Duration::from_secs(1));
            allowed += usize::from(got.status == 200);
        }
    }
    assert_eq!(allowed, 4, "each gateway its half of the burst");
    let state = a.store().await;
    assert_eq!(state["up"], false);
    assert_eq!(state["rate_limit_fallbacks"], 4);
    assert_eq!(state["url"], vars[0].1);

    // Back, without a restart of the gateways: shared limiting resumes.
    let _redis = tokio::task::spawn_blocking(move || {
        redis.restart().unwrap();
        redis
    })
    .await
    .unwrap();
    let got = a.through_the_store("/x").await;
    assert_eq!(got.status, 200, "a fresh bucket in Redis: {}", got.body);
    assert_eq!(
        got.headers["ratelimit-remaining"], "3",
        "the whole burst, shared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_never_holds_a_request_past_the_budget() {
    let redis = redis().await;
    let backend = backend(&[("/data", Reply::json("{}"))]).await;
    let vars = [("REDIS", redis.url()), ("B", backend.url(""))];
    let node = Node::start(
        &config("{ rate: 1/s, burst: 1000, key: endpoint }", ""),
        &vars,
    )
    .await;
    node.wait_store(true).await;
    assert_eq!(get(&node.gw.url("/x")).await.status, 200);

    // Redis stops answering anyone for 2 s.
    let port = redis.port();
    let sleeper = std::thread::spawn(move || {
        let _ = fanout_mock::redis::command(port, &["DEBUG", "SLEEP", "2"]);
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let one = Instant::now();
        assert_eq!(get(&node.gw.url("/x")).await.status, 200);
        slowest = slowest.max(one.elapsed());
    }
    // The first request waits the budget (50 ms) and marks the store down;
    // the others do not try it at all. Generous bounds: the machine is shared.
    assert!(slowest < Duration::from_millis(500), "{slowest:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let state = node.store().await;
    assert_eq!(state["up"], false);
    assert!(
        state["rate_limit_fallbacks"].as_u64().unwrap() >= 20,
        "{state}"
    );

    sleeper.join().unwrap();
    assert_eq!(node.through_the_store("/x").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gateway_serves_from_the_cache_what_another_fetched() {
    let redis = redis().await;
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(4096));
    let backend = backend(&[
        ("/data", Reply::json(r#"{"v":1}"#)),
        ("/big", Reply::json(big)),
    ])
    .await;
    let vars = [("REDIS", redis.url()), ("B", backend.url(""))];
    let yaml = "store: { redis: \"${env.REDIS}\", max_value: 1KiB }\ncache_shared: true\nupstreams:\n  u: { url: \"${env.B}\", cache: { ttl: 30s, max_entries: 100 } }\nendpoints:\n  - route: GET /x\n    backends: [{ name: a, upstream: u, path: /data }]\n  - route: GET /big\n    backends: [{ name: a, upstream: u, path: /big }]\n";
    let (a, b) = (
        Node::start(yaml, &vars).await,
        Node::start(yaml, &vars).await,
    );
    a.wait_store(true).await;
    b.wait_store(true).await;

    // The same request, as a load balancer would send it to either.
    let host = [("host", "api.example.com")];
    assert_eq!(get_with(&a.gw.url("/x"), &host).await.body, r#"{"v":1}"#);
    // The write is in the background: wait for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.integer(&["DBSIZE"]).unwrap() == 0 {
        assert!(Instant::now() < deadline, "nothing was shared");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(get_with(&b.gw.url("/x"), &host).await.body, r#"{"v":1}"#);
    assert_eq!(
        backend.seen().len(),
        1,
        "the second gateway used the shared answer"
    );

    // Every key expires within the upstream's TTL.
    let keys = redis_keys(&redis).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = &keys[0];
    assert!(key.starts_with("fanout:cache:u:"), "{key}");
    let ttl = redis.integer(&["PTTL", key]).unwrap();
    assert!(ttl > 0 && ttl <= 30_000, "{ttl}");

    // An answer over max_value is not shared.
    assert_eq!(get_with(&a.gw.url("/big"), &host).await.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(redis.integer(&["DBSIZE"]).unwrap(), 1);
    assert_eq!(get_with(&b.gw.url("/big"), &host).await.status, 200);
    assert_eq!(backend.seen().len(), 3);
}

/// The keys in `redis`.
async fn redis_keys(redis: &RedisServer) -> Vec<String> {
    use redis::AsyncCommands;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    connection.keys("*").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_gone_the_local_cache_still_answers() {
    let mut redis = redis().await;
    let backend = backend(&[("/data", Reply::json(r#"{"v":1}"#))]).await;
    let vars = [("REDIS", redis.url()), ("B", backend.url(""))];
    let yaml = "store: { redis: \"${env.REDIS}\" }\ncache_shared: true\nupstreams:\n  u: { url: \"${env.B}\", cache: { ttl: 30s, max_entries: 100 } }\nendpoints:\n  - route: GET /x\n    backends: [{ name: a, upstream: u, path: /data }]\n  - route: GET /y\n    backends: [{ name: a, upstream: u, path: /data?other }]\n";
    let node = Node::start(yaml, &vars).await;
    node.wait_store(true).await;
    assert_eq!(get(&node.gw.url("/x")).await.status, 200);
    redis.stop();
    // Answered from the local cache without waiting on Redis.
    let started = Instant::now();
    assert_eq!(get(&node.gw.url("/x")).await.body, r#"{"v":1}"#);
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(backend.seen().len(), 1);
    // A miss asks Redis (which does not answer), then the backend.
    assert_eq!(get(&node.gw.url("/y")).await.status, 200);
    node.wait_store(false).await;
    assert!(node.store().await["cache_fallbacks"].as_u64().unwrap() >= 1);
}

#[test]
fn store_problems_are_located() {
    let check = |yaml: &str| {
        let yaml = format!(
            "{yaml}\nendpoints:\n  - route: GET /x\n    backends: [{{ name: a, url: \"http://127.0.0.1:1/\" }}]\n"
        );
        problems(&yaml)
    };
    let cases = [
        (
            "rate_limits_shared: true",
            "t.yaml:1:21: rate_limits_shared needs a store",
        ),
        (
            "cache_shared: true",
            "t.yaml:1:15: cache_shared needs a store",
        ),
        (
            "store: { redis: \"http://127.0.0.1\" }",
            "t.yaml:1:17: `http://127.0.0.1` is not a Redis URL",
        ),
        (
            "store: { redis: \"redis://h:6379\", timeout: 1s }",
            "t.yaml:1:44: timeout 1s is more than 50ms",
        ),
        (
            "store: { redis: \"redis://h:6379\", fleet_size: 0 }",
            "fleet_size must be at least 1",
        ),
        (
            "store: { redis: \"redis://h:6379\", max_value: 1GiB }",
            "max_value 1.0 GiB is more than 64.0 MiB",
        ),
        (
            "store: { redis: \"redis://h:6379\", prefix: \"a b\" }",
            "prefix `a b`",
        ),
        (
            "store: { redis: \"redis://:pw@h:6379/x\" }",
            "`redis://h:6379/x`",
        ),
    ];
    for (yaml, expected) in cases {
        let err = check(yaml);
        assert!(err.contains(expected), "{yaml}: {err}");
        assert!(!err.contains(":pw@"), "a password in an error: {err}");
    }
    assert_eq!(
        check(
            "store: { redis: \"rediss://u:p@h:6380/1\", fleet_size: 3, timeout: 20ms, prefix: \"shop:eu\" }\nrate_limits_shared: true\ncache_shared: true"
        ),
        ""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_refusals_per_endpoint_and_the_store() {
    let redis = redis().await;
    let backend = backend(&[("/data", Reply::json("{}"))]).await;
    let vars = [("REDIS", redis.url()), ("B", backend.url(""))];
    let node = Node::start(&config("{ rate: 1/h, burst: 1, key: endpoint }", ""), &vars).await;
    node.wait_store(true).await;
    let url = node.gw.url("/x");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get(&url).await.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );

    let stats = get(&format!("{}/api/stats", node.admin)).await.json();
    assert_eq!(
        stats["refused"],
        serde_json::json!([{ "endpoint": "GET /x", "status": 429, "count": 2 }])
    );
    assert_eq!(stats["store"]["up"], true);
    assert_eq!(stats["store"]["url"], redis.url());

    let Some(dom) = super::operate::dashboard_dom(&node.admin).await else {
        return;
    };
    let row =
        r#"<tr data-refused="GET /x"><td>GET /x</td><td>0</td><td>0</td><td>2</td><td>0</td></tr>"#;
    assert!(dom.contains(row), "the refusals are not shown:\n{dom}");
    assert!(
        dom.contains(r#"data-up="true""#)
            && dom.contains(&format!("Shared store {}: up", redis.url())),
        "the store is not shown:\n{dom}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_redis_never_answers_serves_and_shows_no_password() {
    let backend = backend(&[("/data", Reply::json("{}"))]).await;
    // Nothing listens on port 1.
    let vars = [
        ("REDIS", "redis://fleet:s3cret@127.0.0.1:1".to_owned()),
        ("B", backend.url("")),
    ];
    let node = Node::start(&config("{ rate: 1/h, burst: 2, key: endpoint }", ""), &vars).await;
    let statuses = [
        get(&node.gw.url("/x")).await.status,
        get(&node.gw.url("/x")).await.status,
        get(&node.gw.url("/x")).await.status,
    ];
    assert_eq!(statuses, [200, 200, 429], "the local limiter, whole");
    let state = node.store().await;
    assert_eq!(
        (&state["up"], &state["url"]),
        (&false.into(), &"redis://127.0.0.1:1".into())
    );
    let config = get(&format!("{}/config", node.admin)).await;
    assert_eq!(config.json()["store"]["redis"], "redis://127.0.0.1:1");
    assert!(!config.body.contains("s3cret"));
}
