//! Hostile clients against a real gateway on loopback: slow readers, silent
//! connections, smuggled headers, malformed values (issue 16). Each test
//! failed on the code before its fix. Waits are bounded generously: the
//! assertions are about what happens, and in which order, never about how
//! fast.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use fanout_mock::Reply;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::support::*;

/// Far longer than any timeout these tests configure.
const BOUND: Duration = Duration::from_secs(10);

/// A JSON body of about `n` bytes.
fn big_json(n: usize) -> String {
    format!(r#"{{"blob":"{}"}}"#, "x".repeat(n))
}

/// Reads until the peer closes; `None` if it is still open after `BOUND`.
async fn read_until_closed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 65536];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| out)
}

async fn h2_client(addr: SocketAddr, window: u32) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake(tcp)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_cannot_pin_more_than_its_connections_budget() {
    let b = backend(&[("/big", Reply::json(big_json(1 << 20)))]).await;
    let gw = TestGateway::start(
        r#"
server: { response_buffer: { per_connection: 4MiB } }
endpoints:
  - route: GET /big
    backends: [{ name: big, url: "${env.B}/big" }]
"#,
        &[("B", b.url(""))],
    )
    .await;
    // A zero flow-control window: the gateway can send headers, never data.
    let mut client = h2_client(gw.addr, 0).await;
    let mut pending = Vec::new();
    for _ in 0..20 {
        let request = http::Request::get(gw.url("/big")).body(()).unwrap();
        client = client.ready().await.unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        pending.push(response);
    }
    let mut statuses = Vec::new();
    // Kept, unread: a dropped response resets its stream, which frees its bytes.
    let mut unread = Vec::new();
    for response in pending {
        let response = tokio::time::timeout(BOUND, response)
            .await
            .unwrap()
            .unwrap();
        statuses.push(response.status().as_u16());
        unread.push(response);
    }
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let shed = statuses.iter().filter(|&&s| s == 503).count();
    assert!(
        ok <= 4,
        "at most 4 MiB of 1 MiB answers held for one connection: {statuses:?}"
    );
    assert!(ok >= 3, "the budget admits what fits: {statuses:?}");
    assert_eq!(ok + shed, 20, "the rest are shed: {statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_h2_connection_is_closed_after_the_write_timeout() {
    let b = backend(&[("/big", Reply::json(big_json(1 << 20)))]).await;
    let gw = TestGateway::start(
        r#"
server: { write_timeout: 300ms }
endpoints:
  - route: GET /big
    backends: [{ name: big, url: "${env.B}/big" }]
"#,
        &[("B", b.url(""))],
    )
    .await;
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get(gw.url("/big")).body(()).unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    // The body can never be sent: the gateway gives up on the connection.
    let ended = tokio::time::timeout(BOUND, connection).await;
    assert!(ended.is_ok(), "the stalled connection is still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_http1_reader_is_disconnected_after_the_write_timeout() {
    let b = backend(&[("/big", Reply::json(big_json(16 << 20)))]).await;
    let gw = TestGateway::start(
        r#"
server: { write_timeout: 300ms, max_backend_body: 32MiB, response_buffer: { per_connection: 64MiB } }
endpoints:
  - route: GET /big
    backends: [{ name: big, url: "${env.B}/big" }]
"#,
        &[("B", b.url(""))],
    )
    .await;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&gw.addr.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    let mut stream = TcpStream::from_std(socket.into()).unwrap();
    stream
        .write_all(b"GET /big HTTP/1.1\r\nhost: gw\r\n\r\n")
        .await
        .unwrap();
    // Once the answer has started (the gateway fetches and shapes 16 MiB
    // first, which takes long on a loaded machine), read nothing for a
    // while: the gateway's writes stall, then it gives up.
    let mut got = vec![0u8; 4096];
    let first = tokio::time::timeout(BOUND, stream.read(&mut got))
        .await
        .expect("the answer started")
        .unwrap();
    got.truncate(first);
    tokio::time::sleep(Duration::from_secs(2)).await;
    got.extend(read_until_closed(&mut stream).await.expect("still open"));
    assert!(
        got.len() < 16 << 20,
        "the whole body was sent to a stalled reader ({} bytes)",
        got.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_read_timeout() {
    let b = backend(&[("/a", Reply::json("{}"))]).await;
    let gw = TestGateway::start(
        r#"
server: { header_read_timeout: 300ms }
endpoints:
  - route: GET /a
    backends: [{ name: a, url: "${env.B}/a" }]
"#,
        &[("B", b.url(""))],
    )
    .await;
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    assert!(
        read_until_closed(&mut silent).await.is_some(),
        "a silent connection stays open"
    );
    // Only the h2 preface, then silence.
    let mut preface = TcpStream::connect(gw.addr).await.unwrap();
    preface
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_until_closed(&mut preface).await.is_some(),
        "a preface-only connection stays open"
    );
    // Regular clients are still served.
    assert_eq!(get(&gw.url("/a")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_shed_with_503() {
    let b = backend(&[("/a", Reply::json(r#"{"a":1}"#))]).await;
    let gw = TestGateway::start(
        r#"
server: { max_connections: 3, header_read_timeout: 30s }
endpoints:
  - route: GET /a
    backends: [{ name: a, url: "${env.B}/a" }]
"#,
        &[("B", b.url(""))],
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        // Part of a request, so each connection is busy reading headers.
        stream.write_all(b"GET /a HTTP/1.1\r\n").await.unwrap();
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(gw.addr).await.unwrap();
    let got = read_until_closed(&mut extra)
        .await
        .expect("the extra connection stays open");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    drop(held);
    // Room again once they are gone.
    let mut ok = false;
    for _ in 0..50 {
        let answer = raw(
            gw.addr,
            "GET /a HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n",
        )
        .await;
        if answer.starts_with("HTTP/1.1 200") {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "connections are accepted again under the cap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_named_in_connection_is_not_forwarded() {
    let b = backend(&[("/a", Reply::json("{}"))]).await;
    let gw = TestGateway::start(
        r#"
endpoints:
  - route: GET /a
    forward_headers: [X-Api-Key, X-Trace]
    backends: [{ name: a, url: "${env.B}/a" }]
"#,
        &[("B", b.url(""))],
    )
    .await;
    let answer = raw(
        gw.addr,
        "GET /a HTTP/1.1\r\nhost: gw\r\nconnection: close, X-Api-Key\r\nx-api-key: secret\r\nx-trace: t1\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = &b.seen()[0].headers;
    assert!(
        seen.get("x-api-key").is_none(),
        "named in Connection: hop-by-hop (RFC 9110 §7.6.1)"
    );
    assert_eq!(seen["x-trace"], "t1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_values_and_host_headers_are_400_before_any_call() {
    let b = backend(&[
        ("/echo/x/tail", Reply::json("{}")),
        ("/s/x/t", Reply::json("{}")),
    ])
    .await;
    let gw = TestGateway::start(
        r#"
endpoints:
  - route: GET /echo/{v}
    backends: [{ name: a, url: "${env.B}/echo/{v}/tail" }]
  - route: GET /s
    forward_query: [q]
    backends: [{ name: a, url: "${env.B}/s/{query.q}/t" }]
"#,
        &[("B", b.url(""))],
    )
    .await;
    for (request, why) in [
        (
            "GET /echo/%ff%fe HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n",
            "{v} is not valid UTF-8",
        ),
        (
            "GET /s?q=%ff HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n",
            "query parameter `q` is not valid UTF-8",
        ),
        (
            "GET /s?q= HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n",
            "{query.q} is empty",
        ),
        (
            "GET /s HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n",
            "no value for {query.q}",
        ),
        (
            "GET /echo/x HTTP/1.1\r\nhost: a\r\nhost: b\r\nconnection: close\r\n\r\n",
            "one Host header",
        ),
        (
            "GET /echo/x HTTP/1.1\r\nconnection: close\r\n\r\n",
            "one Host header",
        ),
    ] {
        let answer = raw(gw.addr, request).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{request:?}: {answer}");
        assert!(answer.contains(why), "{request:?}: {answer}");
    }
    assert!(b.seen().is_empty(), "no backend was called: {:?}", b.seen());
}
