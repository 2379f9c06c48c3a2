//! Real upstreams (product.md §2.6) on loopback: TLS with certificates made
//! here, mTLS, HTTP/2 over TLS and h2c, several targets with failover,
//! ejection and return, a name with two addresses, compressed bodies.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use fanout_mock::{Mock, MockServer, Reply, Script};
use http::Version;
use tokio::net::TcpListener;

use super::{
    pki::{Pki, Validity},
    support::*,
};

const OK: &str = r#"{"ok":true}"#;

/// A gateway with one endpoint, `GET /x`, calling `/data` on upstream `u`,
/// whose keys (indented for the `u:` block) are `upstream`.
async fn gateway(upstream: &str) -> TestGateway {
    let yaml = format!(
        "upstreams:\n  u:\n{upstream}\nendpoints:\n  - route: GET /x\n    expose_errors: true\n    \
         backends:\n      - {{ name: b, upstream: u, path: /data, required: true }}\n"
    );
    TestGateway::start(&yaml, &[]).await
}

async fn tls_mock(tls: fanout_gateway::ServerTls) -> MockServer {
    Mock::builder()
        .any("/data", Reply::json(OK))
        .tls(tls)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap()
}

/// The error the gateway reports for backend `b`: (status, kind, message).
async fn failure(gw: &TestGateway) -> (u16, String, String) {
    let got = get(&gw.url("/x")).await;
    let error = &got.json()["_errors"]["b"];
    (
        got.status,
        error["kind"].as_str().unwrap_or_default().to_owned(),
        error["message"].as_str().unwrap_or_default().to_owned(),
    )
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

#[tokio::test]
async fn a_backend_certified_by_the_configured_ca_is_called_over_h2_on_one_connection() {
    let pki = Pki::new("internal");
    let mock = tls_mock(pki.server("b", &["127.0.0.1"], Validity::Now).server(None)).await;
    let gw = gateway(&format!(
        "    url: {}\n    tls: {{ ca: {} }}",
        mock.url(""),
        path(&pki.ca_file())
    ))
    .await;

    let url = gw.url("/x");
    let calls = (0..10).map(|_| get(&url));
    for got in futures::future::join_all(calls).await {
        assert_eq!(
            (got.status, got.json()["ok"].as_bool()),
            (200, Some(true)),
            "{}",
            got.body
        );
    }
    for _ in 0..5 {
        assert_eq!(get(&gw.url("/x")).await.status, 200);
    }
    let seen = mock.seen();
    assert_eq!(seen.len(), 15);
    assert!(
        seen.iter().all(|s| s.version == Version::HTTP_2),
        "ALPN chose h2"
    );
    assert_eq!(
        mock.stats().connections,
        1,
        "15 calls, 10 at once, multiplexed on one connection"
    );
}

#[tokio::test]
async fn http2_never_keeps_tls_calls_on_http1() {
    let pki = Pki::new("internal");
    let mock = tls_mock(pki.server("b", &["127.0.0.1"], Validity::Now).server(None)).await;
    let gw = gateway(&format!(
        "    url: {}\n    http2: never\n    tls: {{ ca: {} }}",
        mock.url(""),
        path(&pki.ca_file())
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/x")).await.status, 200);
    }
    assert!(mock.seen().iter().all(|s| s.version == Version::HTTP_11));
    assert_eq!(
        mock.stats().connections,
        1,
        "sequential calls reuse the keep-alive connection"
    );
}

#[tokio::test]
async fn http2_always_on_http_is_h2c_with_prior_knowledge() {
    let mock = Mock::builder()
        .any("/data", Reply::json(OK))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let gw = gateway(&format!("    url: {}\n    http2: always", mock.url(""))).await;
    let url = gw.url("/x");
    let calls = (0..8).map(|_| get(&url));
    for got in futures::future::join_all(calls).await {
        assert_eq!(got.status, 200, "{}", got.body);
    }
    assert!(mock.seen().iter().all(|s| s.version == Version::HTTP_2));
    assert_eq!(mock.stats().connections, 1);
}

#[tokio::test]
async fn handshake_failures_are_connect_errors_that_say_why() {
    let internal = Pki::new("internal");
    let other = Pki::new("other");
    let impostor = Pki::new("internal");
    let cases = [
        (
            "a CA of the same name",
            impostor.server("b", &["127.0.0.1"], Validity::Now),
            "did not sign it",
        ),
        (
            "untrusted",
            other.server("b", &["127.0.0.1"], Validity::Now),
            "unknown issuer",
        ),
        (
            "expired",
            internal.server("old", &["127.0.0.1"], Validity::Expired),
            "expired",
        ),
        (
            "wrong name",
            internal.server("named", &["users.test"], Validity::Now),
            "name mismatch",
        ),
    ];
    for (case, leaf, why) in cases {
        let mock = tls_mock(leaf.server(None)).await;
        let gw = gateway(&format!(
            "    url: {}\n    tls: {{ ca: {} }}",
            mock.url(""),
            path(&internal.ca_file())
        ))
        .await;
        let (status, kind, message) = failure(&gw).await;
        assert_eq!(
            (status, kind.as_str()),
            (502, "connect"),
            "{case}: {message}"
        );
        assert!(message.contains(why), "{case}: {message}");
        assert_eq!(
            mock.stats().requests,
            0,
            "{case}: nothing is sent to an unverified backend"
        );
    }
}

#[tokio::test]
async fn server_name_is_the_name_verified_for_an_address() {
    let pki = Pki::new("internal");
    let mock = tls_mock(pki.server("b", &["users.test"], Validity::Now).server(None)).await;
    let gw = gateway(&format!(
        "    url: {}\n    tls: {{ ca: {}, server_name: users.test }}",
        mock.url(""),
        path(&pki.ca_file())
    ))
    .await;
    let got = get(&gw.url("/x")).await;
    assert_eq!(got.status, 200, "{}", got.body);
}

#[tokio::test]
async fn mtls_the_gateways_certificate_is_given_and_checked() {
    let pki = Pki::new("internal");
    let stranger = Pki::new("stranger");
    let mock = tls_mock(
        pki.server("b", &["127.0.0.1"], Validity::Now)
            .server(Some(&pki)),
    )
    .await;
    let ours = pki.client("gateway", "gateway.test");
    let theirs = stranger.client("gateway", "gateway.test");
    let ca = path(&pki.ca_file());

    let given = gateway(&format!(
        "    url: {}\n    tls: {{ ca: {ca}, client_cert: {}, client_key: {} }}",
        mock.url(""),
        path(&ours.cert),
        path(&ours.key)
    ))
    .await;
    let got = get(&given.url("/x")).await;
    assert_eq!(got.status, 200, "{}", got.body);

    let missing = gateway(&format!(
        "    url: {}\n    tls: {{ ca: {ca} }}",
        mock.url("")
    ))
    .await;
    let (status, kind, message) = failure(&missing).await;
    assert_eq!((status, kind.as_str()), (502, "connect"), "{message}");
    assert!(
        message.contains("requires a client certificate"),
        "{message}"
    );

    let refused = gateway(&format!(
        "    url: {}\n    tls: {{ ca: {ca}, client_cert: {}, client_key: {} }}",
        mock.url(""),
        path(&theirs.cert),
        path(&theirs.key)
    ))
    .await;
    let (status, kind, message) = failure(&refused).await;
    assert_eq!((status, kind.as_str()), (502, "connect"), "{message}");
    assert!(
        message.contains("refused the gateway's client certificate"),
        "{message}"
    );
    assert_eq!(
        mock.stats().requests,
        1,
        "only the call with our certificate got through"
    );
}

#[test]
fn certificate_files_are_checked_at_their_line() {
    let pki = Pki::new("internal");
    let not_pem = pki.dir().join("notes.txt");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let yaml = format!(
        "upstreams:\n  u:\n    url: https://127.0.0.1:1\n    tls:\n      ca: {}\n      \
         client_cert: missing.pem\n      client_key: {}\n\
         endpoints:\n  - route: GET /x\n    backends:\n      - {{ name: b, upstream: u, path: /x }}\n",
        path(&not_pem),
        path(&pki.ca_file()),
    );
    let error = fanout_gateway::Plan::parse(
        &yaml,
        fanout_gateway::config::Format::Yaml,
        "gw.yaml",
        |_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("gw.yaml:5:"), "the ca's line: {error}");
    assert!(
        error.contains("gw.yaml:6:"),
        "the client_cert's line: {error}"
    );
    assert!(error.contains("missing.pem"), "{error}");
}

/// A mock serving `reply` at `/data` on `listener`, until the returned
/// sender is dropped.
fn serve_on(mock: &Mock, listener: TcpListener) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(mock.clone().serve(listener, async {
        let _ = stopped.await;
    }));
    stop
}

fn data(reply: impl Into<Script>) -> Mock {
    Mock::builder().any("/data", reply).build().unwrap()
}

#[tokio::test]
async fn a_retry_goes_to_another_target() {
    let a = data(Reply::json("{}").status(503)).start().await.unwrap();
    let b = data(Reply::json("{}").status(503)).start().await.unwrap();
    let gw = gateway(&format!(
        "    url: [{}, {}]\n    eject: {{ failures: 0 }}\n    \
         retry: {{ attempts: 2, backoff: 1ms, budget: 100% }}",
        a.url(""),
        b.url("")
    ))
    .await;
    for round in 1..=3u64 {
        assert_eq!(get(&gw.url("/x")).await.status, 502);
        assert_eq!(
            (a.stats().requests, b.stats().requests),
            (round, round),
            "each call's two attempts went to different targets"
        );
    }
}

async fn target_states(admin: &str) -> Vec<(String, String)> {
    let stats = get(&format!("{admin}/api/stats")).await.json();
    stats["upstreams"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["target"].as_str().unwrap().to_owned(),
                t["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_dies_is_ejected_the_others_take_over_and_it_comes_back() {
    let a = data(Reply::json(r#"{"from":"a"}"#)).start().await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_addr = listener.local_addr().unwrap();
    // Its waits are as generous as the bound on its return below.
    let b = Mock::builder()
        .any("/data", Reply::json(r#"{"from":"b"}"#))
        .wait_timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let stop_b = serve_on(&b, listener);
    let gw = gateway(&format!(
        "    url: [{}, http://{b_addr}]\n    balance: round_robin\n    \
         eject: {{ failures: 2, base: 1s, max_percent: 50% }}",
        a.url("")
    ))
    .await;
    let admin_url = format!("http://{}", gw.admin(None).await);

    for _ in 0..4 {
        assert_eq!(get(&gw.url("/x")).await.status, 200);
    }
    assert!(b.stats().requests >= 1, "round robin reached b");

    drop(stop_b);
    b.wait_idle().await;
    // b's port is closed: every call still succeeds (a refused connect was
    // never sent, so it fails over to a), and b is soon ejected.
    for _ in 0..10 {
        let got = get(&gw.url("/x")).await;
        assert_eq!(
            (got.status, got.json()["from"].as_str()),
            (200, Some("a")),
            "{}",
            got.body
        );
    }
    let states = target_states(&admin_url).await;
    assert!(
        states.contains(&(b_addr.to_string(), "ejected".to_owned())),
        "{states:?}"
    );

    // b comes back on the same port and gets calls again once its ejection
    // ends (1 s, or 2 s if it was ejected twice): bounded, generously (20 s),
    // while calls keep coming, each answered.
    let listener = TcpListener::bind(b_addr).await.unwrap();
    let before = b.stats().requests;
    let _stop_b = serve_on(&b, listener);
    let calling = Arc::new(AtomicBool::new(true));
    let caller = tokio::spawn({
        let (url, calling) = (gw.url("/x"), calling.clone());
        async move {
            let mut statuses = Vec::new();
            while calling.load(Ordering::SeqCst) {
                statuses.push(get(&url).await.status);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            statuses
        }
    });
    assert!(
        b.wait_requests(before + 1).await > before,
        "b never came back"
    );
    calling.store(false, Ordering::SeqCst);
    let statuses = caller.await.unwrap();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let states = target_states(&admin_url).await;
    assert!(states.iter().all(|(_, state)| state == "up"), "{states:?}");
}

#[tokio::test]
async fn a_name_with_two_addresses_is_two_targets() {
    let v4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = v4.local_addr().unwrap().port();
    let Ok(v6) = TcpListener::bind(("::1", port)).await else {
        eprintln!("skipped: this machine has no ::1, or its port {port} is taken");
        return;
    };
    let resolved: Vec<_> = tokio::net::lookup_host(("localhost", port))
        .await
        .map(|addrs| addrs.collect())
        .unwrap_or_default();
    if !(resolved.iter().any(|a: &std::net::SocketAddr| a.is_ipv4())
        && resolved.iter().any(|a| a.is_ipv6()))
    {
        eprintln!("skipped: localhost resolves to {resolved:?} here, not to both families");
        return;
    }
    let four = data(Reply::json(r#"{"from":"v4"}"#));
    let six = data(Reply::json(r#"{"from":"v6"}"#));
    let _stop4 = serve_on(&four, v4);
    let _stop6 = serve_on(&six, v6);
    let gw = gateway(&format!(
        "    url: http://localhost:{port}\n    balance: round_robin"
    ))
    .await;
    let mut from = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let got = get(&gw.url("/x")).await;
        assert_eq!(got.status, 200, "{}", got.body);
        from.insert(got.json()["from"].as_str().unwrap().to_owned());
    }
    assert_eq!(from.into_iter().collect::<Vec<_>>(), ["v4", "v6"]);
}

async fn encode(encoding: &str, bytes: &[u8]) -> Vec<u8> {
    use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZstdEncoder};
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    match encoding {
        "gzip" => GzipEncoder::new(bytes).read_to_end(&mut out).await,
        // The fastest levels: the bombs are megabytes, and this is a debug build.
        "br" => {
            BrotliEncoder::with_quality(bytes, async_compression::Level::Fastest)
                .read_to_end(&mut out)
                .await
        }
        "zstd" => {
            ZstdEncoder::with_quality(bytes, async_compression::Level::Fastest)
                .read_to_end(&mut out)
                .await
        }
        other => panic!("{other}"),
    }
    .unwrap();
    out
}

#[tokio::test]
async fn compressed_bodies_are_decoded_and_a_bomb_is_too_large() {
    let body = format!(r#"{{"items":[{}]}}"#, vec!["\"abcdefgh\""; 2000].join(","));
    let mut builder = Mock::builder();
    for encoding in ["gzip", "br", "zstd"] {
        builder = builder.any(
            &format!("/{encoding}"),
            Reply::raw("application/json", encode(encoding, body.as_bytes()).await)
                .header("content-encoding", encoding),
        );
    }
    // 64 MiB of spaces, compressed to some 64 KiB (16 MiB for br and zstd,
    // slower to make): each expands far past max_backend_body.
    for (encoding, size) in [("gzip", 64 << 20), ("br", 16 << 20), ("zstd", 16 << 20)] {
        let mut expanded = vec![b' '; size];
        expanded[0] = b'[';
        let bomb = encode(encoding, &expanded).await;
        drop(expanded);
        assert!(bomb.len() < 1 << 20, "{encoding}");
        builder = builder.any(
            &format!("/bomb-{encoding}"),
            Reply::raw("application/json", bomb).header("content-encoding", encoding),
        );
    }
    let mock = builder.build().unwrap().start().await.unwrap();
    let yaml = format!(
        "server:\n  max_backend_body: 1MiB\n\
         upstreams:\n  u:\n    url: {}\n    compression: true\n\
         endpoints:\n  - route: GET /{{enc}}\n    expose_errors: true\n    \
         backends:\n      - {{ name: b, upstream: u, path: '/{{enc}}', required: true }}\n",
        mock.url("")
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    for encoding in ["gzip", "br", "zstd"] {
        let got = get(&gw.url(&format!("/{encoding}"))).await;
        assert_eq!(got.status, 200, "{encoding}: {}", got.body);
        assert_eq!(
            got.json()["items"].as_array().map(Vec::len),
            Some(2000),
            "{encoding}"
        );
    }
    for encoding in ["gzip", "br", "zstd"] {
        let got = get(&gw.url(&format!("/bomb-{encoding}"))).await;
        assert_eq!(got.status, 502, "{encoding}: {}", got.body);
        assert_eq!(
            got.json()["_errors"]["b"]["kind"],
            "body_too_large",
            "{encoding}: {}",
            got.body
        );
    }
    let asked = mock.seen()[0].headers["accept-encoding"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(asked, "gzip, br, zstd");
}

#[tokio::test]
async fn without_compression_identity_is_asked_for() {
    let mock = data(Reply::json(OK)).start().await.unwrap();
    let gw = gateway(&format!("    url: {}", mock.url(""))).await;
    assert_eq!(get(&gw.url("/x")).await.status, 200);
    assert_eq!(mock.seen()[0].headers["accept-encoding"], "identity");
}
