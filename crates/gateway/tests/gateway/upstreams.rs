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

use fanout_mock::{Gate, Mock, MockServer, Reply, Script};
use http::Version;
use tokio::{io::AsyncReadExt, net::TcpListener};

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

/// A TLS backend whose certificate a CA of its own signed: one the gateway,
/// trusting another, refuses as "unknown issuer".
async fn untrusted_mock() -> MockServer {
    let other = Pki::new("other");
    tls_mock(
        other
            .server("b", &["127.0.0.1"], Validity::Now)
            .server(None),
    )
    .await
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

/// Regression: with `http2: auto`, the calls that queued behind a target's
/// first call were then sent one at a time, each holding the turn.
#[tokio::test]
async fn the_calls_waiting_for_a_first_h2_call_go_together_once_it_answered() {
    let pki = Pki::new("internal");
    let gate = Gate::new(5);
    let mock = Mock::builder()
        .any(
            "/data",
            [
                Reply::json(OK).delay(Duration::from_millis(100)),
                Reply::json(OK).gated(&gate),
            ],
        )
        .tls(pki.server("b", &["127.0.0.1"], Validity::Now).server(None))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let gw = gateway(&format!(
        "    url: {}\n    timeout: 5s\n    tls: {{ ca: {} }}",
        mock.url(""),
        path(&pki.ca_file())
    ))
    .await;
    let url = gw.url("/x");
    let calls = (0..6).map(|_| get(&url));
    for got in futures::future::join_all(calls).await {
        assert_eq!(got.status, 200, "{}", got.body);
    }
    assert_eq!(
        gate.arrived(),
        5,
        "the five after the first were in flight together"
    );
    assert_eq!(mock.stats().connections, 1);
}

/// A TCP proxy on `listener` to `to` that holds each new connection for
/// `hold` before passing it on (a far backend, or a slow handshake: calls
/// made meanwhile find no connection ready). It counts the connections it
/// accepted; dropping the sender closes the listener and every connection.
fn slow_proxy(
    listener: TcpListener,
    to: std::net::SocketAddr,
    hold: Duration,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::sync::oneshot::Sender<()>,
) {
    use std::sync::{Arc, atomic::AtomicUsize};
    let accepted = Arc::new(AtomicUsize::new(0));
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut links = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                accepted = listener.accept() => {
                    let Ok((mut inbound, _)) = accepted else { return };
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    links.spawn(async move {
                        tokio::time::sleep(hold).await;
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            }
        }
    });
    (accepted, stop)
}

/// Regression: once a target's h2 connection had closed (an idle timeout
/// on the backend, a restart), a burst of calls each opened a TLS
/// connection before ALPN said h2, and all but one were dropped: the h2
/// benchmark's warm-ups made 48 handshakes for 6 connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_its_h2_connection_closed_a_burst_to_a_target_opens_one_connection() {
    use std::sync::atomic::Ordering;
    let pki = Pki::new("internal");
    let mock = tls_mock(pki.server("b", &["127.0.0.1"], Validity::Now).server(None)).await;
    let hold = Duration::from_millis(200);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, stop) = slow_proxy(listener, mock.addr(), hold);
    let gw = gateway(&format!(
        "    url: https://{addr}\n    tls: {{ ca: {} }}",
        path(&pki.ca_file())
    ))
    .await;
    let url = gw.url("/x");
    let burst = || async {
        for got in futures::future::join_all((0..10).map(|_| get(&url))).await {
            assert_eq!(got.status, 200, "{}", got.body);
        }
    };
    burst().await;
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    // The connection closes (the proxy goes, with every connection), and a
    // new proxy takes the same port.
    drop(stop);
    let (accepted, _stop) = slow_proxy(rebind(addr).await, mock.addr(), hold);
    // The gateway hears of the close at once; a generous pause all the same.
    tokio::time::sleep(Duration::from_millis(500)).await;
    burst().await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the burst after the close shares one new connection"
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

/// A TLS server whose ALPN offers HTTP/1.1 alone (as nginx's `ssl` without
/// `http2`), answering `OK` to everything; it records the protocols each
/// client offered (one list per connection) and the `Host` values of each
/// request.
async fn http1_tls_server(leaf: &super::pki::Leaf) -> (String, Recorded, Recorded) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let offered = Recorded::default();
    let hosts = Recorded::default();
    let (record, record_hosts) = (offered.clone(), hosts.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (config, record) = (config.clone(), record.clone());
            let record_hosts = record_hosts.clone();
            tokio::spawn(async move {
                let start =
                    tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
                let Ok(start) = start.await else { return };
                let alpn = start
                    .client_hello()
                    .alpn()
                    .map(|protocols| {
                        protocols
                            .map(|p| String::from_utf8_lossy(p).into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                record.lock().unwrap().push(alpn);
                let Ok(tls) = start.into_stream(config).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |request: http::Request<_>| {
                    let host = request
                        .headers()
                        .get_all(http::header::HOST)
                        .iter()
                        .map(|v| v.to_str().unwrap().to_owned())
                        .collect();
                    record_hosts.lock().unwrap().push(host);
                    async {
                        let mut answer =
                            http::Response::new(http_body_util::Full::new(bytes::Bytes::from(OK)));
                        answer.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(answer)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (url, offered, hosts)
}

type Recorded = Arc<std::sync::Mutex<Vec<Vec<String>>>>;

/// With `http2: auto`, a target whose ALPN chose HTTP/1.1 is called as with
/// `http2: never` from then on: the first call's connection offered h2 and
/// HTTP/1.1 (hyper-util's pool), every later call goes over a connection the
/// call drives itself, which offers HTTP/1.1 alone (so no server can pick h2
/// for a connection driven as HTTP/1.1) and is kept alive for the next.
#[tokio::test]
async fn a_target_alpn_showed_to_speak_http1_is_called_over_its_own_http1_connections() {
    let pki = Pki::new("internal");
    let leaf = pki.server("b", &["127.0.0.1"], Validity::Now);
    let (url, offered, hosts) = http1_tls_server(&leaf).await;
    let gw = gateway(&format!(
        "    url: {url}\n    tls: {{ ca: {} }}",
        path(&pki.ca_file())
    ))
    .await;
    for _ in 0..5 {
        let got = get(&gw.url("/x")).await;
        assert_eq!(got.status, 200, "{}", got.body);
    }
    let offered = offered.lock().unwrap().clone();
    assert_eq!(
        offered,
        [vec!["h2", "http/1.1"], vec!["http/1.1"]],
        "one connection through the pool that may speak h2, then one kept alive for the rest"
    );
    // Each request has one `Host`, the URL's authority: added by the pool's
    // client for the first, set from the target's for the rest.
    let authority = url.trim_start_matches("https://").to_owned();
    assert_eq!(*hosts.lock().unwrap(), vec![vec![authority]; 5]);
}

/// With `http2: never` a call drives its own HTTP/1.1 connection instead of
/// going through hyper-util's pool: its TLS failures say why all the same,
/// nothing reaches an unverified backend, and a refused client certificate
/// (which TLS 1.3 reports on the first read, after the request went out) is
/// named too.
#[tokio::test]
async fn http1_only_connections_say_why_a_handshake_failed() {
    let internal = Pki::new("internal");
    let untrusted = untrusted_mock().await;
    let gw = gateway(&format!(
        "    url: {}\n    http2: never\n    tls: {{ ca: {} }}",
        untrusted.url(""),
        path(&internal.ca_file())
    ))
    .await;
    let (status, kind, message) = failure(&gw).await;
    assert_eq!((status, kind.as_str()), (502, "connect"), "{message}");
    assert!(message.contains("unknown issuer"), "{message}");
    assert_eq!(untrusted.stats().requests, 0, "nothing sent: {message}");

    let strict = tls_mock(
        internal
            .server("b", &["127.0.0.1"], Validity::Now)
            .server(Some(&internal)),
    )
    .await;
    let gw = gateway(&format!(
        "    url: {}\n    http2: never\n    tls: {{ ca: {} }}",
        strict.url(""),
        path(&internal.ca_file())
    ))
    .await;
    let (status, kind, message) = failure(&gw).await;
    assert_eq!((status, kind.as_str()), (502, "connect"), "{message}");
    assert!(
        message.contains("requires a client certificate"),
        "{message}"
    );
    assert_eq!(strict.stats().requests, 0);
}

/// A call that no target could be sent to says why for both it tried: a
/// refused port must not hide the other target's certificate problem.
#[tokio::test]
async fn a_call_that_fails_over_and_fails_again_says_both_whys() {
    let internal = Pki::new("internal");
    let untrusted = untrusted_mock().await;
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let gw = gateway(&format!(
        "    url: [\"{}\", \"https://{closed}\"]\n    tls: {{ ca: {} }}",
        untrusted.url(""),
        path(&internal.ca_file())
    ))
    .await;
    // Whichever target the balancer picks first, the other one is next.
    for _ in 0..4 {
        let (status, kind, message) = failure(&gw).await;
        assert_eq!((status, kind.as_str()), (502, "connect"), "{message}");
        assert!(message.contains("unknown issuer"), "{message}");
        assert!(message.contains("refused"), "{message}");
        assert!(message.contains("; before it, 127.0.0.1:"), "{message}");
    }
    assert_eq!(untrusted.stats().requests, 0);
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
    let authority = mock.addr().to_string();
    assert!(
        mock.seen().iter().all(|s| s.headers.get("host").is_none()
            && s.uri.authority().map(|a| a.as_str()) == Some(authority.as_str())),
        "the host goes as :authority alone"
    );
    assert_eq!(mock.stats().connections, 1);
}

/// Regression: over HTTP/2 the gateway sent a `host` header beside
/// `:authority`, which nginx answers with 400 ("client sent duplicate host
/// header"); the benchmark against nginx found it.
#[tokio::test]
async fn over_http2_the_host_goes_as_the_authority_alone_and_over_http1_as_host() {
    let pki = Pki::new("internal");
    let mock = tls_mock(pki.server("b", &["localhost"], Validity::Now).server(None)).await;
    let port = mock.addr().port();
    let ca = path(&pki.ca_file());
    for extra in [
        "",
        "\n    headers: { Host: api.test }",
        "\n    http2: never",
    ] {
        let gw = gateway(&format!(
            "    url: https://localhost:{port}\n    tls: {{ ca: {ca} }}{extra}"
        ))
        .await;
        let got = get(&gw.url("/x")).await;
        assert_eq!(got.status, 200, "{extra}: {}", got.body);
    }
    let seen = mock.seen();
    let named = format!("localhost:{port}");
    let authority = |i: usize| seen[i].uri.authority().map(|a| a.as_str().to_owned());
    assert_eq!(seen[0].version, Version::HTTP_2);
    assert_eq!(
        authority(0).as_deref(),
        Some(named.as_str()),
        "the URL's name, not the address"
    );
    assert!(
        seen[0].headers.get("host").is_none(),
        "{:?}",
        seen[0].headers
    );
    assert_eq!(seen[1].version, Version::HTTP_2);
    assert_eq!(
        authority(1).as_deref(),
        Some("api.test"),
        "a configured Host"
    );
    assert!(
        seen[1].headers.get("host").is_none(),
        "{:?}",
        seen[1].headers
    );
    assert_eq!(seen[2].version, Version::HTTP_11);
    assert_eq!(seen[2].headers["host"], named.as_str());
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

    // Relative paths are found from the config file's folder, wherever the
    // gateway runs from.
    let file = pki.dir().join("gateway.yaml");
    std::fs::write(
        &file,
        "upstreams:\n  u:\n    url: https://127.0.0.1:1\n    tls: { ca: ca.pem }\n\
         endpoints:\n  - route: GET /x\n    backends:\n      - { name: b, upstream: u, path: /x }\n",
    )
    .unwrap();
    assert_ne!(std::env::current_dir().unwrap(), pki.dir());
    let plan = fanout_gateway::Plan::load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.files(), [pki.dir().join("ca.pem")]);
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

/// Binds `addr` again once the server that had it has let it go (5 s at
/// most: a stopped mock closes its listener from its own task).
async fn rebind(addr: std::net::SocketAddr) -> TcpListener {
    for _ in 0..250 {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot bind {addr}: {e}"),
        }
    }
    panic!("{addr} is still in use after 5 s")
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

/// The admin API of `gw` on a port of its own, with the metrics: its base URL.
async fn admin(gw: &TestGateway) -> String {
    format!("http://{}", gw.admin(Some(super::operate::metrics())).await)
}

/// The targets of the first upstream in `/api/stats`.
async fn targets_of(admin: &str) -> Vec<serde_json::Value> {
    let stats = get(&format!("{admin}/api/stats")).await.json();
    stats["upstreams"][0]["targets"].as_array().unwrap().clone()
}

async fn target_states(admin: &str) -> Vec<(String, String)> {
    targets_of(admin)
        .await
        .iter()
        .map(|t| {
            (
                t["target"].as_str().unwrap().to_owned(),
                t["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Waits (10 s at most) until `/api/stats` shows `target` in `state`.
async fn wait_for_state(admin: &str, target: std::net::SocketAddr, state: &str) {
    let want = (target.to_string(), state.to_owned());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let states = target_states(admin).await;
        if states.contains(&want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{target} is not {state}: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_hedge_goes_to_another_target() {
    let slow = || data(Reply::json(OK).delay(Duration::from_millis(200)));
    let a = slow().start().await.unwrap();
    let b = slow().start().await.unwrap();
    let gw = gateway(&format!(
        "    url: [{}, {}]\n    hedge: {{ delay: 20ms, max_extra: 100% }}",
        a.url(""),
        b.url("")
    ))
    .await;
    for round in 1..=3u64 {
        assert_eq!(get(&gw.url("/x")).await.status, 200);
        assert_eq!(
            (a.wait_requests(round).await, b.wait_requests(round).await),
            (round, round),
            "each call and its hedge went to different targets"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_failing_its_health_check_takes_no_calls_until_it_passes() {
    let a = Mock::builder()
        .any("/data", Reply::json(r#"{"from":"a"}"#))
        .any("/healthz", Reply::json("{}"))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_addr = listener.local_addr().unwrap();
    let b = |health: u16| {
        Mock::builder()
            .any("/data", Reply::json(r#"{"from":"b"}"#))
            .any("/healthz", Reply::json("{}").status(health))
            .build()
            .unwrap()
    };
    let sick = b(503);
    let stop_sick = serve_on(&sick, listener);
    let gw = gateway(&format!(
        "    url: [{}, http://{b_addr}]\n    balance: round_robin\n    \
         health: {{ path: /healthz, interval: 100ms, timeout: 100ms }}",
        a.url("")
    ))
    .await;
    let admin = admin(&gw).await;
    wait_for_state(&admin, b_addr, "unhealthy").await;
    let data_calls = |mock: &Mock| mock.seen().iter().filter(|s| s.path() == "/data").count();
    let before = data_calls(&sick);
    for _ in 0..6 {
        let got = get(&gw.url("/x")).await;
        assert_eq!(got.json()["from"], "a", "{}", got.body);
    }
    assert_eq!(
        data_calls(&sick),
        before,
        "an unhealthy target takes no call"
    );
    assert!(
        sick.seen()
            .iter()
            .all(|s| s.headers["host"] == b_addr.to_string().as_str()),
        "checks carry the target's Host"
    );

    // b recovers: the next check that passes lets it take calls again.
    drop(stop_sick);
    sick.wait_idle().await;
    let well = b(200);
    let _stop_well = serve_on(&well, rebind(b_addr).await);
    wait_for_state(&admin, b_addr, "up").await;
    let mut from = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let got = get(&gw.url("/x")).await;
        from.insert(got.json()["from"].as_str().unwrap().to_owned());
    }
    assert_eq!(from.into_iter().collect::<Vec<_>>(), ["a", "b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_targets_calls_state_and_share_are_in_metrics_and_stats() {
    let a = data(Reply::json(OK)).start().await.unwrap();
    let b = data(Reply::json("{}").status(500)).start().await.unwrap();
    let gw = gateway(&format!(
        "    url: [{}, {}]\n    balance: round_robin\n    \
         eject: {{ failures: 2, base: 1h }}",
        a.url(""),
        b.url("")
    ))
    .await;
    let admin = admin(&gw).await;
    // Round robin: a, b, a, b (b ejected after its second failure), then a.
    for _ in 0..6 {
        get(&gw.url("/x")).await;
    }
    let targets = targets_of(&admin).await;
    let row = |addr: std::net::SocketAddr| {
        targets
            .iter()
            .find(|t| t["target"] == addr.to_string().as_str())
            .unwrap_or_else(|| panic!("{addr} in {targets:?}"))
            .clone()
    };
    let (ra, rb) = (row(a.addr()), row(b.addr()));
    assert_eq!(
        (&ra["state"], &ra["calls"], &ra["failures"]),
        (&"up".into(), &4.into(), &0.into()),
        "{ra}"
    );
    assert_eq!(
        (&rb["state"], &rb["calls"], &rb["failures"]),
        (&"ejected".into(), &2.into(), &2.into()),
        "{rb}"
    );
    assert!(
        (ra["share"].as_f64().unwrap() - 4.0 / 6.0).abs() < 1e-9,
        "{ra}"
    );

    let text = get(&format!("{admin}/metrics")).await.body;
    for line in [
        format!(
            r#"fanout_target_calls_total{{upstream="u",target="{}"}} 4"#,
            a.addr()
        ),
        format!(
            r#"fanout_target_calls_total{{upstream="u",target="{}"}} 2"#,
            b.addr()
        ),
        format!(
            r#"fanout_target_failures_total{{upstream="u",target="{}"}} 2"#,
            b.addr()
        ),
        format!(
            r#"fanout_target_state{{upstream="u",target="{}"}} 0"#,
            a.addr()
        ),
        format!(
            r#"fanout_target_state{{upstream="u",target="{}"}} 1"#,
            b.addr()
        ),
        format!(
            r#"fanout_target_in_flight{{upstream="u",target="{}"}} 0"#,
            a.addr()
        ),
        format!(
            r#"fanout_target_latency_seconds{{upstream="u",target="{}"}} "#,
            a.addr()
        ),
    ] {
        assert!(text.contains(&line), "missing `{line}` in:\n{text}");
    }
}

#[tokio::test]
async fn a_reload_reads_a_renewed_ca_file_and_keeps_an_unchanged_upstreams_targets() {
    let right = Pki::new("internal");
    let wrong = Pki::new("internal");
    let mock = tls_mock(
        right
            .server("b", &["127.0.0.1"], Validity::Now)
            .server(None),
    )
    .await;
    let ca = wrong.dir().join("trusted.pem");
    std::fs::copy(wrong.ca_file(), &ca).unwrap();
    let yaml = format!(
        "upstreams:\n  u:\n    url: {}\n    tls: {{ ca: {} }}\n\
         endpoints:\n  - route: GET /x\n    expose_errors: true\n    \
         backends:\n      - {{ name: b, upstream: u, path: /data, required: true }}\n",
        mock.url(""),
        path(&ca)
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    let (status, _, message) = failure(&gw).await;
    assert_eq!(status, 502);
    assert!(message.contains("did not sign it"), "{message}");

    // The same config, its CA file unchanged: the upstream is kept as it
    // was (its target's count of calls goes on).
    let admin = admin(&gw).await;
    let calls = || async { targets_of(&admin).await[0]["calls"].as_u64().unwrap() };
    assert_eq!(calls().await, 1);
    gw.gateway.reload(compile(&yaml, &[]));
    assert_eq!(failure(&gw).await.0, 502);
    assert_eq!(calls().await, 2, "kept");

    // The file renewed with the right CA: the reload rebuilds the upstream,
    // which trusts it.
    std::fs::copy(right.ca_file(), &ca).unwrap();
    gw.gateway.reload(compile(&yaml, &[]));
    assert_eq!(calls().await, 0, "rebuilt");
    let got = get(&gw.url("/x")).await;
    assert_eq!(got.status, 200, "{}", got.body);
}

#[test]
fn the_upstream_keys_are_checked_where_they_are_written() {
    let yaml = "upstreams:
  names:
    url: http://users.internal
    dns_refresh: 100ms
    eject: { failures: 2000000, base: 2h }
    health: { path: healthz, interval: 1s, timeout: 2s }
  mixed:
    url: [http://10.0.0.1, https://10.0.0.2]
  plain:
    url: http://10.0.0.1
    tls: { server_name: users.internal }
  halves:
    url: https://10.0.0.1
    tls: { client_cert: gw.pem }
  checked:
    url: http://10.0.0.1
    health: { path: /a b, interval: 50ms }
    headers: { Host: 'users internal' }
endpoints:
  - route: GET /x
    backends:
      - { name: a, upstream: names, path: /x }
      - { name: b, upstream: mixed, path: /x }
      - { name: c, upstream: plain, path: /x }
      - { name: d, upstream: halves, path: /x }
      - { name: e, upstream: checked, path: /x }
";
    let error = fanout_gateway::Plan::parse(
        yaml,
        fanout_gateway::config::Format::Yaml,
        "gw.yaml",
        |_| None,
    )
    .unwrap_err()
    .to_string();
    for (line, says) in [
        (4, "dns_refresh 100ms is less than 1s"),
        (5, "failures 2000000 is more than 1000000"),
        (5, "base 2h is more than 1h"),
        (6, "path `healthz` must start with /"),
        (6, "timeout 2s is more than 1s"),
        (8, "share their scheme and base path"),
        (11, "tls applies to https:// URLs"),
        (14, "client_cert needs client_key beside it"),
        (17, "path `/a b` is not a valid URL path"),
        (17, "interval 50ms is less than 100ms"),
        (18, "a Host header is a host and an optional port"),
    ] {
        assert!(
            error
                .lines()
                .any(|l| l.contains(&format!("gw.yaml:{line}:")) && l.contains(says)),
            "line {line}: {says}\n{error}"
        );
    }
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
    let admin_url = admin(&gw).await;

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
    let listener = rebind(b_addr).await;
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
    // A few bytes of zstd whose frame asks for a 128 MiB window (the most
    // zstd allows by default): decoding it would allocate that much.
    let mut wide = Vec::new();
    async_compression::tokio::bufread::ZstdEncoder::with_quality_and_params(
        &b"{}"[..],
        async_compression::Level::Fastest,
        &[async_compression::zstd::CParameter::window_log(27)],
    )
    .read_to_end(&mut wide)
    .await
    .unwrap();
    builder = builder.any(
        "/bomb-zstd-window",
        Reply::raw("application/json", wide).header("content-encoding", "zstd"),
    );
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
    for encoding in ["gzip", "br", "zstd", "zstd-window"] {
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
