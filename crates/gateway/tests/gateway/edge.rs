//! The edge (product.md §2.8) on loopback: TLS on the listener with
//! certificates made here (HTTP/1.1 and h2 by ALPN, reload, mTLS); CORS;
//! rate limits; response compression.

use std::{net::SocketAddr, path::Path, sync::Arc};

use bytes::Bytes;
use fanout_gateway::{Gateway, Plan};
use fanout_mock::{MockServer, Reply};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

use super::{
    pki::{Leaf, Pki, Validity},
    support::*,
};

/// A gateway serving `config` (a file, so that relative paths and reloads
/// work as they do for `fanout serve`).
async fn start_file(config: &Path) -> (SocketAddr, Gateway, tokio::sync::oneshot::Sender<()>) {
    let gateway = Gateway::new(Plan::load(config).unwrap_or_else(|e| panic!("{e}")));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(fanout_gateway::serve(listener, gateway.clone(), async {
        let _ = stopped.await;
    }));
    (addr, gateway, stop)
}

/// A TLS client trusting `ca`, showing `client` if given, offering `alpn`.
async fn connect(
    addr: SocketAddr,
    ca: &Pki,
    client: Option<&Leaf>,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    let ca_pem = std::fs::read(ca.ca_file()).unwrap();
    for cert in CertificateDer::pem_slice_iter(&ca_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// The certificate the server showed on `stream`.
fn served(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// The DER of a leaf's certificate.
fn der(leaf: &Leaf) -> Vec<u8> {
    CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// An HTTP/1.1 connection over `stream`: a sender of GETs.
async fn http1(
    stream: TlsStream<TcpStream>,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// GET `path` on an HTTP/1.1 connection: status and body.
async fn get1(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    path: &str,
) -> Result<(u16, String), hyper::Error> {
    sender.ready().await?;
    let request = Request::get(path)
        .header("host", "127.0.0.1")
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A config file in `dir` serving `GET /x` from `backend`, with `tls` as
/// the `server.tls` block.
fn write_config(dir: &Path, backend: &str, tls: &str) -> std::path::PathBuf {
    let path = dir.join("gateway.yaml");
    std::fs::write(
        &path,
        format!(
            "server:\n  tls: {tls}\nendpoints:\n  - route: GET /x\n    backends: [{{ name: a, url: \"{backend}/data\" }}]\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn the_listener_serves_https_and_http2_by_alpn() {
    let backend = backend(&[("/data", Reply::json(r#"{"ok":true}"#))]).await;
    let pki = Pki::new("listener");
    pki.server("gw", &["127.0.0.1", "localhost"], Validity::Now);
    let config = write_config(
        pki.dir(),
        &backend.url(""),
        "{ cert: gw.pem, key: gw-key.pem }",
    );
    let (addr, gateway, _stop) = start_file(&config).await;
    assert!(gateway.is_tls());

    let stream = connect(addr, &pki, None, &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let response = h2
        .send_request(
            Request::get(format!("https://127.0.0.1:{}/x", addr.port()))
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"ok":true}"#);

    let stream = connect(addr, &pki, None, &[b"http/1.1"]).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut h1 = http1(stream).await;
    assert_eq!(
        get1(&mut h1, "/x").await.unwrap(),
        (200, r#"{"ok":true}"#.to_owned())
    );

    // Plain HTTP on the TLS port is not served.
    let plain = raw(addr, "GET /x HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(!plain.contains("200"), "{plain}");
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_new_connections_while_open_ones_keep_working() {
    let backend = backend(&[("/data", Reply::json(r#"{"ok":true}"#))]).await;
    let pki = Pki::new("renew");
    let old = pki.server("gw", &["127.0.0.1"], Validity::Now);
    let config = write_config(
        pki.dir(),
        &backend.url(""),
        "{ cert: gw.pem, key: gw-key.pem }",
    );
    let (addr, gateway, _stop) = start_file(&config).await;
    let before = connect(addr, &pki, None, &[b"http/1.1"]).await.unwrap();
    assert_eq!(served(&before), der(&old));
    let mut open = http1(before).await;
    assert_eq!(get1(&mut open, "/x").await.unwrap().0, 200);

    // The renewal writes the certificate first: until the key follows, the
    // pair does not match, the config is refused, and the old pair serves.
    let renewed = Pki::new("renew-next");
    let new = renewed.server("next", &["127.0.0.1"], Validity::Now);
    std::fs::copy(&new.cert, pki.dir().join("gw.pem")).unwrap();
    let refused = Plan::load(&config).unwrap_err().to_string();
    assert!(
        refused.contains("gateway.yaml:2:")
            && refused.contains("the key does not go with the certificate"),
        "{refused}"
    );
    let during = connect(addr, &pki, None, &[b"http/1.1"]).await.unwrap();
    assert_eq!(served(&during), der(&old), "the old pair keeps serving");

    std::fs::copy(&new.key, pki.dir().join("gw-key.pem")).unwrap();
    gateway.reload(Plan::load(&config).unwrap());
    // The new leaf is signed by another CA: trust that one now.
    let after = connect(addr, &renewed, None, &[b"http/1.1"]).await.unwrap();
    assert_eq!(served(&after), der(&new));
    let mut fresh = http1(after).await;
    assert_eq!(get1(&mut fresh, "/x").await.unwrap().0, 200);

    // The connection opened before the renewal still works, on its old certificate.
    assert_eq!(
        get1(&mut open, "/x").await.unwrap(),
        (200, r#"{"ok":true}"#.to_owned())
    );
    assert_eq!(backend.seen().len(), 3);
}

#[tokio::test]
async fn with_a_client_ca_only_clients_with_a_certificate_from_it_are_served() {
    let backend = backend(&[("/data", Reply::json(r#"{"ok":true}"#))]).await;
    let pki = Pki::new("mtls");
    pki.server("gw", &["127.0.0.1"], Validity::Now);
    let clients = Pki::new("mtls-clients");
    let good = clients.client("app", "app.internal");
    let stranger = Pki::new("strangers").client("other", "other.internal");
    let config = write_config(
        pki.dir(),
        &backend.url(""),
        &format!(
            "{{ cert: gw.pem, key: gw-key.pem, client_ca: {} }}",
            clients.ca_file().display()
        ),
    );
    let (addr, _gateway, _stop) = start_file(&config).await;

    let stream = connect(addr, &pki, Some(&good), &[b"http/1.1"])
        .await
        .unwrap();
    let mut sender = http1(stream).await;
    assert_eq!(get1(&mut sender, "/x").await.unwrap().0, 200);

    // Without a certificate, or with one from another CA, the handshake is
    // refused (TLS 1.3 reports it on the client's first read): no request
    // is answered and no backend is called.
    for client in [None, Some(&stranger)] {
        let refused = async {
            let stream = connect(addr, &pki, client, &[b"http/1.1"]).await?;
            let mut sender = http1(stream).await;
            get1(&mut sender, "/x")
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
        };
        assert!(refused.await.is_err());
    }
    assert_eq!(backend.seen().len(), 1);
}

#[test]
fn listener_tls_problems_are_located_at_their_key() {
    let pki = Pki::new("check");
    pki.server("gw", &["127.0.0.1"], Validity::Now);
    let other = pki.server("other", &["127.0.0.1"], Validity::Now);
    std::fs::write(pki.dir().join("junk.pem"), "not a certificate").unwrap();
    let cases = [
        (
            "{ cert: missing.pem, key: gw-key.pem }",
            "2:16: server.tls: cannot read",
        ),
        (
            "{ cert: junk.pem, key: gw-key.pem }",
            "2:16: server.tls: `junk.pem`: the certificate file holds no PEM certificate",
        ),
        (
            "{ cert: gw.pem, key: junk.pem }",
            "2:29: server.tls: `junk.pem`: the key file holds no PEM private key",
        ),
        (
            "{ cert: gw.pem, key: gw-key.pem, client_ca: junk.pem }",
            "2:52: server.tls: `junk.pem`: the client CA file holds no certificate",
        ),
    ];
    for (tls, expected) in cases {
        let config = write_config(pki.dir(), "http://127.0.0.1:1", tls);
        let err = Plan::load(&config).unwrap_err().to_string();
        assert!(err.contains(expected), "{tls}: {err}");
    }
    let config = write_config(
        pki.dir(),
        "http://127.0.0.1:1",
        &format!("{{ cert: gw.pem, key: {} }}", other.key.display()),
    );
    let err = Plan::load(&config).unwrap_err().to_string();
    assert!(
        err.contains("the key does not go with the certificate"),
        "{err}"
    );
    let plan = Plan::load(&write_config(
        pki.dir(),
        "http://127.0.0.1:1",
        "{ cert: gw.pem, key: gw-key.pem }",
    ))
    .unwrap();
    assert!(plan.files().iter().any(|f| f.ends_with("gw-key.pem")));
}

const CORS: &str = r#"
server:
  cors:
    origins: ["https://app.example.com"]
    methods: [GET, POST]
    headers: [authorization, content-type]
    expose_headers: [x-fanout-complete]
    credentials: true
    max_age: 10m
endpoints:
  - route: GET /x
    backends: [{ name: a, url: "${env.B}/data" }]
  - route: DELETE /x
    backends: [{ name: a, url: "${env.B}/data", method: DELETE }]
"#;

/// The `access-control-*` headers of a response.
fn cors_headers(got: &Got) -> Vec<String> {
    got.headers
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_by_the_gateway() {
    let backend = backend(&[("/data", Reply::json("{}"))]).await;
    let gw = TestGateway::start(CORS, &[("B", backend.url(""))]).await;
    let got = send(
        "OPTIONS",
        &gw.url("/x"),
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "GET"),
            (
                "access-control-request-headers",
                "authorization, content-type",
            ),
        ],
    )
    .await;
    assert_eq!(got.status, 204, "{}", got.body);
    let h = |name: &str| got.headers[name].to_str().unwrap().to_owned();
    assert_eq!(h("access-control-allow-origin"), "https://app.example.com");
    assert_eq!(h("access-control-allow-methods"), "GET, POST");
    assert_eq!(
        h("access-control-allow-headers"),
        "authorization, content-type"
    );
    assert_eq!(h("access-control-allow-credentials"), "true");
    assert_eq!(h("access-control-max-age"), "600");
    assert!(h("vary").contains("origin"));
    assert!(got.body.is_empty());
    assert!(backend.seen().is_empty(), "a preflight reached the backend");
}

#[tokio::test]
async fn a_preflight_that_is_not_allowed_is_refused_without_cors_headers() {
    let backend = backend(&[("/data", Reply::json("{}"))]).await;
    let gw = TestGateway::start(CORS, &[("B", backend.url(""))]).await;
    let cases = [
        (
            "https://evil.example",
            "GET",
            "",
            "origin `https://evil.example`",
        ),
        (
            "https://app.example.com",
            "DELETE",
            "",
            "DELETE is not in server.cors.methods",
        ),
        (
            "https://app.example.com",
            "POST",
            "",
            "no endpoint serves POST",
        ),
        (
            "https://app.example.com",
            "GET",
            "x-secret",
            "header `x-secret`",
        ),
    ];
    for (origin, method, headers, why) in cases {
        let mut sent = vec![
            ("origin", origin),
            ("access-control-request-method", method),
        ];
        if !headers.is_empty() {
            sent.push(("access-control-request-headers", headers));
        }
        let got = send("OPTIONS", &gw.url("/x"), &sent).await;
        assert_eq!(got.status, 403, "{origin} {method} {headers}");
        assert!(
            got.json()["error"].as_str().unwrap().contains(why),
            "{}",
            got.body
        );
        assert_eq!(cors_headers(&got), Vec::<String>::new());
    }
    assert!(backend.seen().is_empty());
}

#[tokio::test]
async fn answers_carry_cors_headers_only_for_an_allowed_origin() {
    let backend = backend(&[("/data", Reply::json(r#"{"ok":true}"#))]).await;
    let gw = TestGateway::start(CORS, &[("B", backend.url(""))]).await;
    let allowed = get_with(&gw.url("/x"), &[("origin", "https://app.example.com")]).await;
    assert_eq!(allowed.status, 200);
    assert_eq!(
        allowed.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(allowed.headers["access-control-allow-credentials"], "true");
    assert_eq!(
        allowed.headers["access-control-expose-headers"],
        "x-fanout-complete"
    );
    assert_eq!(allowed.headers["vary"], "origin");

    // Served (CORS is the browser's to enforce), but nothing lets a page read it.
    let other = get_with(&gw.url("/x"), &[("origin", "https://evil.example")]).await;
    assert_eq!(other.status, 200);
    assert_eq!(cors_headers(&other), Vec::<String>::new());
    assert_eq!(other.headers["vary"], "origin");

    // The gateway's own errors are readable by an allowed page too.
    let missing = get_with(&gw.url("/nope"), &[("origin", "https://app.example.com")]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    // An OPTIONS without the preflight's header is an ordinary request.
    let options = send(
        "OPTIONS",
        &gw.url("/x"),
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(options.status, 405);
}

#[tokio::test]
async fn an_upstreams_own_cors_headers_never_reach_the_browser() {
    // A pass-through upstream (a GraphQL server, say) with a policy of its
    // own: any origin, with credentials.
    let upstream = backend(&[(
        "/graphql",
        Reply::json(r#"{"data":{}}"#)
            .header("access-control-allow-origin", "*")
            .header("access-control-allow-credentials", "true")
            .header("access-control-allow-methods", "GET, POST, DELETE"),
    )])
    .await;
    let gw = TestGateway::start(
        r#"
server:
  cors:
    origins: ["https://app.example.com"]
upstreams:
  api: { url: "${env.B}" }
endpoints:
  - route: GET /graphql
    proxy: { upstream: api }
"#,
        &[("B", upstream.url(""))],
    )
    .await;
    let other = get_with(&gw.url("/graphql"), &[("origin", "https://evil.example")]).await;
    assert_eq!(other.status, 200, "{}", other.body);
    assert_eq!(
        cors_headers(&other),
        Vec::<String>::new(),
        "the upstream's policy does not let another origin read the answer"
    );
    let allowed = get_with(
        &gw.url("/graphql"),
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(
        cors_headers(&allowed),
        ["access-control-allow-origin"],
        "only the gateway's policy: no credentials, no methods"
    );
    assert_eq!(
        allowed.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
}

#[test]
fn cors_problems_are_located() {
    let check = |cors: &str| {
        let yaml = format!(
            "server:\n  cors: {cors}\nendpoints:\n  - {{ route: GET /x, backends: [{{ name: a, url: \"http://127.0.0.1:1/\" }}] }}\n"
        );
        problems(&yaml)
    };
    let err = check(r#"{ origins: ["*"], credentials: true }"#);
    assert!(
        err.contains("t.yaml:2:40: credentials: true with origins: [\"*\"]"),
        "{err}"
    );
    let err = check(r#"{ origins: ["https://a.example/", "*"] }"#);
    assert!(
        err.contains("2:21: `https://a.example/` is not an origin"),
        "{err}"
    );
    assert!(err.contains("stands alone"), "{err}");
    let err = check(r#"{ origins: ["https://a.example"], headers: ["*"], credentials: true }"#);
    assert!(err.contains("taken literally"), "{err}");
    let err = check(r#"{ origins: ["https://a.example"], max_age: 2d }"#);
    assert!(err.contains("max_age 2days is more than 1day"), "{err}");
    assert_eq!(check(r#"{ origins: ["*"], headers: ["*"] }"#), "");
}

/// A gateway whose `GET /x` calls `backend` under `rate_limit` (and `server`).
async fn limited(backend: &MockServer, server: &str, rate_limit: &str) -> TestGateway {
    let yaml = format!(
        "server: {{ {server} }}\nendpoints:\n  - route: GET /x\n    rate_limit: {rate_limit}\n    backends: [{{ name: a, url: \"${{env.B}}/data\" }}]\n  - route: GET /free\n    backends: [{{ name: a, url: \"${{env.B}}/data\" }}]\n"
    );
    TestGateway::start(&yaml, &[("B", backend.url(""))]).await
}

#[tokio::test]
async fn a_client_over_its_limit_gets_429_with_ratelimit_headers_and_no_backend_call() {
    let backend = backend(&[("/data", Reply::json(r#"{"ok":true}"#))]).await;
    let gw = limited(
        &backend,
        "",
        "{ rate: 1/m, burst: 2, key: \"header:x-client\" }",
    )
    .await;
    let as_a = [("x-client", "a")];
    let first = get_with(&gw.url("/x"), &as_a).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.headers["ratelimit-limit"], "2");
    assert_eq!(first.headers["ratelimit-remaining"], "1");
    assert_eq!(first.headers["ratelimit-reset"], "60");
    assert_eq!(first.headers["ratelimit-policy"], "2;w=120");
    assert!(first.headers.get("retry-after").is_none());
    let second = get_with(&gw.url("/x"), &as_a).await;
    assert_eq!(
        (second.status, &second.headers["ratelimit-remaining"]),
        (200, &"0".parse().unwrap())
    );

    let refused = get_with(&gw.url("/x"), &as_a).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.headers["retry-after"], "60");
    assert_eq!(refused.headers["ratelimit-remaining"], "0");
    assert_eq!(refused.headers["ratelimit-reset"], "120");
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("too many requests")
    );
    assert_eq!(
        backend.seen().len(),
        2,
        "a refused request called the backend"
    );

    // Another client has its own bucket; an endpoint without a limit has none.
    assert_eq!(
        get_with(&gw.url("/x"), &[("x-client", "b")]).await.status,
        200
    );
    let free = get(&gw.url("/free")).await;
    assert_eq!(free.status, 200);
    assert!(free.headers.get("ratelimit-limit").is_none());

    // Requests without the header share one bucket.
    assert_eq!(get(&gw.url("/x")).await.status, 200);
    assert_eq!(get(&gw.url("/x")).await.status, 200);
    assert_eq!(get(&gw.url("/x")).await.status, 429);
}

#[tokio::test]
async fn the_ip_key_believes_x_forwarded_for_only_from_trusted_proxies() {
    let backend = backend(&[("/data", Reply::json("{}"))]).await;
    let from = |xff: &'static str| [("x-forwarded-for", xff)];
    // The test client connects from 127.0.0.1: a trusted proxy here.
    let gw = limited(
        &backend,
        "trusted_proxies: [127.0.0.0/8, 10.0.0.0/8]",
        "{ rate: 1/h, burst: 1, key: ip }",
    )
    .await;
    assert_eq!(
        get_with(&gw.url("/x"), &from("198.51.100.1")).await.status,
        200
    );
    assert_eq!(
        get_with(&gw.url("/x"), &from("198.51.100.1")).await.status,
        429
    );
    assert_eq!(
        get_with(&gw.url("/x"), &from("198.51.100.2")).await.status,
        200
    );
    // A client-written address on the left does not get a new bucket.
    assert_eq!(
        get_with(&gw.url("/x"), &from("6.6.6.6, 198.51.100.1, 10.0.0.7"))
            .await
            .status,
        429
    );

    // Not trusted: every request from here is 127.0.0.1, whatever it says.
    let gw = limited(&backend, "", "{ rate: 1/h, burst: 1 }").await;
    assert_eq!(
        get_with(&gw.url("/x"), &from("198.51.100.1")).await.status,
        200
    );
    assert_eq!(
        get_with(&gw.url("/x"), &from("198.51.100.2")).await.status,
        429
    );
}

#[tokio::test]
async fn the_endpoint_key_is_one_bucket_for_everyone_and_refusals_are_readable_by_allowed_pages() {
    let backend = backend(&[("/data", Reply::json("{}"))]).await;
    let gw = limited(
        &backend,
        r#"cors: { origins: ["https://app.example.com"], expose_headers: [retry-after] }"#,
        "{ rate: 1/h, burst: 1, key: endpoint }",
    )
    .await;
    assert_eq!(
        get_with(&gw.url("/x"), &[("x-client", "a")]).await.status,
        200
    );
    let refused = get_with(&gw.url("/x"), &[("origin", "https://app.example.com")]).await;
    assert_eq!(refused.status, 429);
    assert_eq!(
        refused.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(
        refused.headers["access-control-expose-headers"],
        "retry-after"
    );
}

#[tokio::test]
async fn a_reload_keeps_the_buckets_of_an_unchanged_limit() {
    let backend = backend(&[("/data", Reply::json("{}"))]).await;
    let yaml = |burst: u32| {
        format!(
            "endpoints:\n  - route: GET /x\n    rate_limit: {{ rate: 1/h, burst: {burst}, key: endpoint }}\n    backends: [{{ name: a, url: \"${{env.B}}/data\" }}]\n"
        )
    };
    let vars = [("B", backend.url(""))];
    let gw = TestGateway::start(&yaml(1), &vars).await;
    assert_eq!(get(&gw.url("/x")).await.status, 200);
    gw.gateway.reload(compile(&yaml(1), &vars));
    assert_eq!(
        get(&gw.url("/x")).await.status,
        429,
        "the bucket was forgotten"
    );
    gw.gateway.reload(compile(&yaml(2), &vars));
    assert_eq!(
        get(&gw.url("/x")).await.status,
        200,
        "a changed limit starts afresh"
    );
}

#[test]
fn rate_limit_problems_are_located() {
    let check = |limit: &str, server: &str| {
        let yaml = format!(
            "server: {{ {server} }}\nendpoints:\n  - route: GET /x\n    rate_limit: {limit}\n    backends: [{{ name: a, url: \"http://127.0.0.1:1/\" }}]\n"
        );
        problems(&yaml)
    };
    let cases = [
        (
            "{ rate: 0/s }",
            "",
            "t.yaml:4:25: the rate's count must be at least 1",
        ),
        (
            "{ rate: 10/fortnight }",
            "",
            "t.yaml:4:25: invalid rate `10/fortnight`",
        ),
        (
            "{ rate: 10/s, burst: 0 }",
            "",
            "t.yaml:4:38: burst must be at least 1",
        ),
        (
            "{ rate: 10/s, burst: 2000000 }",
            "",
            "burst 2000000 is more than 1000000",
        ),
        (
            "{ rate: 10/s, key: client }",
            "",
            "t.yaml:4:36: key `client`: use ip, header:NAME, claim:NAME or endpoint",
        ),
        (
            "{ rate: 10/s, key: \"header:a b\" }",
            "",
            "`a b` is not a valid header name",
        ),
        ("{ rate: 1/d, burst: 1000 }", "", "takes more than a year"),
        (
            "{ rate: 10/s }",
            "trusted_proxies: [10.0.0.0/33]",
            "t.yaml:1:29: `10.0.0.0/33` is not a network",
        ),
    ];
    for (limit, server, expected) in cases {
        let err = check(limit, server);
        assert!(err.contains(expected), "{limit} {server}: {err}");
    }
    assert_eq!(
        check(
            "{ rate: 10/s, burst: 20, key: \"header:x-api-key\" }",
            "trusted_proxies: [10.0.0.1, \"fd00::/8\"]"
        ),
        ""
    );
}

/// A JSON body of about `n` bytes that compresses well.
fn big_json(n: usize) -> &'static str {
    let items: Vec<String> = (0..n / 16).map(|i| format!(r#"{{"item":{i}}}"#)).collect();
    Box::leak(format!(r#"{{"items":[{}]}}"#, items.join(",")).into_boxed_str())
}

async fn decode(encoding: &str, body: &[u8]) -> Vec<u8> {
    use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    match encoding {
        "gzip" => GzipDecoder::new(body).read_to_end(&mut out).await,
        "br" => BrotliDecoder::new(body).read_to_end(&mut out).await,
        "zstd" => ZstdDecoder::new(body).read_to_end(&mut out).await,
        other => panic!("unexpected encoding {other}"),
    }
    .unwrap();
    out
}

/// GET with `accept-encoding`, the body as bytes (not decoded).
async fn get_encoded(url: &str, accept: &str) -> (u16, http::HeaderMap, Bytes) {
    let request = Request::get(url)
        .header("accept-encoding", accept)
        .body(Empty::new())
        .unwrap();
    let response = client().request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    (
        parts.status.as_u16(),
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn answers_are_compressed_for_clients_that_accept_it_and_never_when_tiny() {
    let big = big_json(64 << 10);
    let backend = backend(&[
        ("/big", Reply::json(big)),
        ("/small", Reply::json(r#"{"ok":true}"#)),
    ])
    .await;
    let gw = TestGateway::start(
        "server: { compression: true }\nendpoints:\n  - route: GET /big\n    backends: [{ name: a, url: \"${env.B}/big\" }]\n  - route: GET /small\n    backends: [{ name: a, url: \"${env.B}/small\" }]\n",
        &[("B", backend.url(""))],
    )
    .await;
    for encoding in ["gzip", "br", "zstd"] {
        let (status, headers, body) = get_encoded(&gw.url("/big"), encoding).await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-encoding"], encoding);
        assert_eq!(headers["vary"], "accept-encoding");
        assert!(headers.get("content-length").is_none());
        assert!(
            body.len() * 4 < big.len(),
            "{encoding}: {} bytes",
            body.len()
        );
        assert_eq!(decode(encoding, &body).await, big.as_bytes(), "{encoding}");
    }
    // The client's preference (q-values) decides.
    let (_, headers, _) = get_encoded(&gw.url("/big"), "gzip;q=1, br;q=0.5").await;
    assert_eq!(headers["content-encoding"], "gzip");
    // Not asked for: sent as it is, still varying.
    let (_, headers, body) = get_encoded(&gw.url("/big"), "identity").await;
    assert!(headers.get("content-encoding").is_none());
    assert_eq!(headers["vary"], "accept-encoding");
    assert_eq!(body.len(), big.len());
    // Tiny: never.
    let (_, headers, body) = get_encoded(&gw.url("/small"), "gzip, br, zstd").await;
    assert!(headers.get("content-encoding").is_none());
    assert_eq!(&body[..], br#"{"ok":true}"#);

    // A reload turns it off.
    gw.gateway.reload(compile(
        "endpoints:\n  - route: GET /big\n    backends: [{ name: a, url: \"${env.B}/big\" }]\n",
        &[("B", backend.url(""))],
    ));
    let (_, headers, body) = get_encoded(&gw.url("/big"), "gzip").await;
    assert!(headers.get("content-encoding").is_none());
    assert_eq!(body.len(), big.len());
}

#[tokio::test]
async fn the_response_budget_counts_what_the_gateway_holds_before_compression() {
    let big = big_json(256 << 10);
    let backend = backend(&[("/big", Reply::json(big))]).await;
    let gw = TestGateway::start(
        "server: { compression: true, response_buffer: { per_connection: 128KiB } }\nendpoints:\n  - route: GET /big\n    backends: [{ name: a, url: \"${env.B}/big\" }]\n",
        &[("B", backend.url(""))],
    )
    .await;
    // Compressed, the answer would be small; the gateway still holds the
    // whole uncompressed body while it is sent, and that is what is bounded.
    let (status, _, body) = get_encoded(&gw.url("/big"), "gzip").await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
}
