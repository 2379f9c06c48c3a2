//! The `fanout` binary as a user runs it: real processes, real signals.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

fn fanout() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fanout"))
}

/// A free port on 127.0.0.1 (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `fanout mock` with these routes (YAML list items) on a free port;
/// returns it (killed when dropped), its base URL and the line it printed.
fn start_mock(file: &str, routes: &str) -> (Running, String, String) {
    let port = free_port();
    let config = temp_file(
        file,
        &format!("listen: 127.0.0.1:{port}\nroutes:\n{routes}"),
    );
    let (mock, first) = run_mock(&config);
    (mock, format!("http://127.0.0.1:{port}"), first)
}

/// Runs `fanout mock -c CONFIG`; returns it (killed when dropped) and the
/// line it printed once listening.
fn run_mock(config: &std::path::Path) -> (Running, String) {
    let mut mock = Running(
        fanout()
            .args(["mock", "-c"])
            .arg(config)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let first = BufReader::new(mock.0.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    (mock, first)
}

/// `fanout serve --log-format json -c CONFIG` (killed when dropped), and
/// its log, read as it comes.
struct Serving {
    child: Running,
    log: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl Serving {
    fn start(config: &std::path::Path) -> Serving {
        let mut child = Running(
            fanout()
                .args(["serve", "--log-format", "json", "-c"])
                .arg(config)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let (tx, log) = std::sync::mpsc::channel();
        let stdout = child.0.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let event: serde_json::Value =
                    serde_json::from_str(&line).expect("--log-format json writes JSON lines");
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        Serving { child, log }
    }

    /// The next log event whose JSON text contains `needle`, within 30 s.
    fn wait_for(&self, needle: &str) -> serde_json::Value {
        loop {
            let event = self
                .log
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no log line with {needle}"));
            if event.to_string().contains(needle) {
                return event;
            }
        }
    }

    /// Sends it a signal (`HUP`, `TERM`).
    fn signal(&self, name: &str) {
        let pid = self.child.0.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    }
}

/// A child process that is killed when the test ends, passing or failing, so
/// that a failed assertion never leaves a server running.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to 30 s for the process to exit; `what` says what failed if it does not.
fn wait_exit(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `fanout mock --make-certs DIR`: a test CA, a localhost certificate and
/// a client certificate in `dir`.
fn make_certs(dir: &std::path::Path) {
    let status = fanout()
        .args(["mock", "--make-certs"])
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "fanout mock --make-certs {}",
        dir.display()
    );
}

fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fanout-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn check_accepts_a_good_file_and_locates_every_problem_in_a_bad_one() {
    let good = temp_file(
        "good.yaml",
        "endpoints:\n  - { route: GET /a, backends: [{ name: a, url: \"http://127.0.0.1:1/a\" }] }\n",
    );
    let out = fanout().args(["check", "-c"]).arg(&good).output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok (0 upstreams, 1 endpoints, 1 backends)")
    );

    let bad = temp_file(
        "bad.yaml",
        "endpoints:\n  - route: GET /a\n    backends:\n      - { name: a, upstream: nope }\n      - { name: b, url: \"http://127.0.0.1:1/{x}\" }\n",
    );
    let out = fanout().args(["check", "-c"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = bad.display();
    assert!(
        err.contains(&format!("{file}:4:30: unknown upstream `nope`")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{file}:5:25: {{x}} is not captured by route `GET /a`"
        )),
        "{err}"
    );
    assert!(
        err.trim_end().ends_with(&format!("{file}: 2 problems")),
        "{err}"
    );
}

#[test]
fn hash_key_prints_the_hash_the_config_stores() {
    use std::io::Write;
    let run = |input: &str| {
        let mut child = fanout()
            .arg("hash-key")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let sha_of_test = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n";
    for input in ["test", "test\n", "test\r\n"] {
        let out = run(input);
        assert!(out.status.success(), "{input:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            sha_of_test,
            "{input:?}"
        );
    }
    let out = run("");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no key on standard input"));
    assert!(!run("a\nb\n").status.success(), "one key per run");
    assert!(
        schema_has_auth(),
        "the schema describes the auth map for editors"
    );
}

fn schema_has_auth() -> bool {
    let out = fanout().arg("schema").output().unwrap();
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    schema["$defs"]["Jwt"]["properties"]["jwks_url"].is_object()
        && schema["$defs"]["Endpoint"]["properties"]["claims_to_headers"].is_object()
}

#[test]
fn schema_is_json_schema() {
    let out = fanout().arg("schema").output().unwrap();
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["title"], "Config");
    assert!(schema["$defs"]["Backend"]["properties"]["after"].is_object());
}

#[test]
fn serve_answers_and_stops_cleanly_on_sigterm() {
    let (_backend, backend) = path_backend("serve-backend.yaml");
    let port = free_port();
    let config = temp_file(
        "serve.yaml",
        &format!(
            "server: {{ listen: \"127.0.0.1:{port}\" }}\nendpoints:\n  - {{ route: GET /hi, backends: [{{ name: a, url: \"{backend}/x\" }}] }}\n  - {{ route: GET /two, backends: [{{ name: a, url: \"{backend}/x\" }}, {{ name: gone, url: \"http://127.0.0.1:1/x\", required: false }}] }}\n"
        ),
    );
    let mut child = fanout()
        .args(["serve", "-c"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it listens (it logs the address), within a generous bound.
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "fanout serve did not start");
        match lines.next() {
            Some(Ok(line)) if line.contains("listening on") => break,
            Some(_) => continue,
            None => panic!("fanout serve exited early"),
        }
    }
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET /hi HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(r#"{"path":"/x"}"#), "{response}");
    let (status, response, _) = http_get(&format!("http://127.0.0.1:{port}/two"));
    assert_eq!(status, 200, "{response}");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_exit(&mut child, "fanout serve did not stop on SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    // One access log line per request, each backend's outcome by name in
    // declaration order (read once the process has exited and closed its
    // output, so a missing line cannot hang the test).
    let log: Vec<String> = lines.map_while(Result::ok).collect();
    let request = |route: &str| {
        log.iter()
            .find(|l| {
                l.contains(&format!(
                    r#" request endpoint="GET {route}" status=200 ms="#
                ))
            })
            .unwrap_or_else(|| panic!("no access log line for {route} in {log:#?}"))
    };
    assert!(request("/hi").ends_with(" backends=a=ok"), "{log:#?}");
    assert!(
        request("/two").ends_with(" backends=a=ok gone=connect"),
        "{log:#?}"
    );
}

/// Issue 16: the SIGHUP handler used to be installed after the listener
/// accepted, so a reload signal sent as soon as the port answered could kill
/// the process (SIGHUP's default action).
#[test]
fn a_sighup_as_soon_as_the_port_is_open_reloads_instead_of_killing() {
    let (_backend, backend) = path_backend("hup-backend.yaml");
    let port = free_port();
    let config = temp_file(
        "hup.yaml",
        &format!(
            "server: {{ listen: \"127.0.0.1:{port}\" }}\nendpoints:\n  - {{ route: GET /hi, backends: [{{ name: a, url: \"{backend}/x\" }}] }}\n"
        ),
    );
    let child = fanout()
        .args(["serve", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Running(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "fanout serve did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    // The first moment anyone can see it listening.
    for _ in 0..3 {
        Command::new("kill")
            .args(["-HUP", &child.0.id().to_string()])
            .status()
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "SIGHUP killed fanout serve"
    );
    let (status, _, _) = http_get(&format!("http://127.0.0.1:{port}/hi"));
    assert_eq!(status, 200);
}

#[test]
fn serve_refuses_a_bad_config_without_starting() {
    let bad = temp_file("refused.yaml", "endpoints: []\n");
    let out = fanout().args(["serve", "-c"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was started"));
}

/// A GET over a fresh connection: (status, headers and body as text, elapsed).
fn http_get(url: &str) -> (u16, String, Duration) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let start = Instant::now();
    let mut stream = TcpStream::connect(host).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    (status, response, start.elapsed())
}

/// A request with a body over a fresh connection: (status, headers and body
/// as text).
fn http_send(method: &str, url: &str, content_type: &str, body: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = TcpStream::connect(host).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    (response[9..12].parse().unwrap(), response)
}

fn mock_abandoned(mocks: &str) -> u64 {
    let (_, response, _) = http_get(&format!("{mocks}/__mock/stats"));
    let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
    let stats: serde_json::Value = serde_json::from_str(body).unwrap();
    stats["abandoned"].as_u64().unwrap()
}

/// The mock's count of abandoned calls once it reaches `n`, or what it is
/// after 5 s: the mock hears of a call given up when its connection closes,
/// a moment after the gateway has answered.
fn mock_abandoned_reaches(mocks: &str, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let abandoned = mock_abandoned(mocks);
        if abandoned >= n || Instant::now() > deadline {
            return abandoned;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_demo_replays_every_scenario() {
    let mut child = fanout()
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut gateway, mut mocks, mut dashboard) = (String::new(), String::new(), String::new());
    while gateway.is_empty() || mocks.is_empty() || dashboard.is_empty() {
        let line = lines
            .next()
            .expect("the demo printed its addresses")
            .unwrap();
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("gateway"), Some(url)) => gateway = url.to_owned(),
            (Some("mocks"), Some(url)) => mocks = url.to_owned(),
            (Some("dashboard"), Some(url)) => dashboard = url.trim_end_matches('/').to_owned(),
            _ => {}
        }
    }
    // Keep reading the banner so the demo never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});

    let body = |response: &str| response[response.find("\r\n\r\n").unwrap() + 4..].to_owned();
    let complete = |response: &str| {
        response
            .lines()
            .find_map(|l| l.strip_prefix("x-fanout-complete: "))
            .map(str::to_owned)
    };

    let (status, response, _) = http_get(&format!("{gateway}/merged"));
    assert_eq!(status, 200, "{response}");
    assert_eq!(
        body(&response),
        r#"{"key1":"value1","key2":"value2","key3":"value3"}"#
    );
    assert_eq!(complete(&response).as_deref(), Some("true"));

    let (status, response, _) = http_get(&format!("{gateway}/users/ada@example.com"));
    assert_eq!(status, 200, "{response}");
    assert_eq!(
        body(&response),
        r#"{"name":"Ada Lovelace","loyalty_points":1200}"#
    );

    let before = mock_abandoned(&mocks);
    let (status, response, elapsed) = http_get(&format!("{gateway}/users/ada@example.com/fast"));
    assert_eq!(status, 200, "{response}");
    assert_eq!(complete(&response).as_deref(), Some("false"));
    let parsed: serde_json::Value = serde_json::from_str(&body(&response)).unwrap();
    assert_eq!(parsed["name"], "Ada Lovelace");
    assert!(parsed.get("loyalty_points").is_none());
    assert!(
        elapsed < Duration::from_millis(1000),
        "answered before the 1 s loyalty call: {elapsed:?}"
    );
    assert_eq!(
        mock_abandoned_reaches(&mocks, before + 1),
        before + 1,
        "the loyalty call was cancelled"
    );

    let (status, response, elapsed) = http_get(&format!("{gateway}/checkout"));
    assert_eq!(status, 502, "{response}");
    assert!(
        elapsed < Duration::from_secs(2),
        "answered before the 2 s inventory call: {elapsed:?}"
    );
    let parsed: serde_json::Value = serde_json::from_str(&body(&response)).unwrap();
    assert_eq!(parsed["_errors"]["inventory"]["kind"], "cancelled");
    assert_eq!(
        mock_abandoned_reaches(&mocks, before + 2),
        before + 2,
        "the inventory call was cancelled"
    );

    // A write: the order forwarded as it came, then an audit event built
    // from it and the charge, each value with its JSON type.
    let order = r#"{"user":"ada","amount":42.5,"items":[{"sku":"tea","qty":2}]}"#;
    let (status, response) = http_send(
        "POST",
        &format!("{gateway}/checkout"),
        "application/json",
        order,
    );
    assert_eq!(status, 200, "{response}");
    assert_eq!(complete(&response).as_deref(), Some("true"));
    let parsed: serde_json::Value = serde_json::from_str(&body(&response)).unwrap();
    assert_eq!(
        parsed["payment"],
        serde_json::json!({"id": "ch_1042", "status": "paid"})
    );
    assert_eq!(
        parsed["audit"]["body"],
        r#"{"event":"checkout","user":"ada","amount":42.5,"items":[{"sku":"tea","qty":2}],"charge":"ch_1042"}"#
    );
    let (status, response) = http_send(
        "POST",
        &format!("{gateway}/checkout"),
        "application/json",
        r#"{"user":"ada"}"#,
    );
    assert_eq!(status, 400, "{response}");
    assert!(body(&response).contains("{body.amount}"), "{response}");

    // A pass-through: the body streams up, the upstream's answer comes back.
    let (status, response) = http_send("POST", &format!("{gateway}/audit"), "text/plain", "hello");
    assert_eq!(status, 200, "{response}");
    let parsed: serde_json::Value = serde_json::from_str(&body(&response)).unwrap();
    assert_eq!(parsed["body"], "hello");
    assert_eq!(parsed["headers"]["content-type"], "text/plain");
    assert!(complete(&response).is_none(), "not a merged answer");

    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    wait_exit(&mut child, "the demo did not stop on Ctrl-C");
}

/// The peak resident memory of process `pid` so far (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/PID/status");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kb * 1024
}

/// A pass-through streams: a 50 MiB upload and a 50 MiB download (read
/// slowly) through `fanout serve` raise its peak resident memory by far less
/// than the 50 MiB each of them passes.
///
/// Measured as the peak RSS (VmHWM) of the gateway in a process of its own,
/// not by counting bytes in flight from the test: RSS is everything the
/// gateway holds (hyper's buffers, the allocator's, ours), other tests of
/// this binary do not add to it, and it does not depend on the kernel's
/// socket buffers, which on loopback can hold tens of MiB in flight between
/// the three processes (net.ipv4.tcp_rmem allows 32 MiB per socket here) and
/// would blur a count of bytes.
#[test]
fn a_pass_through_streams_50_mib_each_way_in_bounded_memory() {
    const SIZE: usize = 50 << 20;
    let mut big = vec![b'x'; SIZE];
    big[0] = b'"';
    big[SIZE - 1] = b'"';
    let file = temp_file("big.json", "");
    std::fs::write(&file, &big).unwrap();
    let (_mock, mock, _) = start_mock(
        "stream-mock.yaml",
        "  - { path: /big, body_file: big.json }\n  - { path: /sink, method: POST }\n",
    );
    let port = free_port();
    let config = temp_file(
        "stream.yaml",
        &format!(
            "server: {{ listen: \"127.0.0.1:{port}\", max_request_body: 64MiB, request_timeout: 2m }}\n\
             upstreams: {{ files: {{ url: \"{mock}\" }} }}\n\
             endpoints:\n\
             \x20 - {{ route: GET /big, timeout: 2m, proxy: {{ upstream: files }} }}\n\
             \x20 - {{ route: POST /sink, timeout: 2m, proxy: {{ upstream: files }} }}\n\
             \x20 - {{ route: POST /buffered, timeout: 2m, backends: [{{ name: sink, upstream: files, path: /sink, method: POST, body: forward }}] }}\n"
        ),
    );
    let mut child = Running(
        fanout()
            .args(["serve", "--threads", "1", "-c"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("listening on") => break,
            Some(_) => continue,
            None => panic!("fanout serve exited early"),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let gateway = format!("http://127.0.0.1:{port}");
    // Warm up: connections, pools and buffers made once.
    assert_eq!(
        http_send("POST", &format!("{gateway}/sink"), "text/plain", "hi").0,
        200
    );
    let before = peak_rss(pid);

    let upload = |path: &str| {
        let mut upload = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            upload,
            "POST {path} HTTP/1.1\r\nhost: gw\r\nconnection: close\r\ncontent-length: {SIZE}\r\n\r\n"
        )
        .unwrap();
        for chunk in big.chunks(64 << 10) {
            upload.write_all(chunk).unwrap();
        }
        let mut answer = String::new();
        upload.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    };
    upload("/sink");

    let mut download = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        download,
        "GET /big HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    // A slow reader: 256 KiB, then a pause. A gateway that read ahead of it
    // would hold what the upstream sent meanwhile.
    let mut got = 0usize;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = download.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got += n;
        std::thread::sleep(Duration::from_millis(4));
    }
    assert!(got > SIZE, "the whole body and its head came: {got}");

    let after = peak_rss(pid);
    let grew = after.saturating_sub(before);
    eprintln!(
        "pass-through: peak RSS {} KiB before, grew by {} KiB",
        before >> 10,
        grew >> 10
    );
    assert!(
        grew < 16 << 20,
        "the gateway's peak memory grew by {} MiB passing 50 MiB each way",
        grew >> 20
    );

    // The control: the same upload to an endpoint that reads the body whole
    // (`body: forward`) shows in the measure.
    upload("/buffered");
    let buffered = peak_rss(pid).saturating_sub(after);
    eprintln!("buffered: grew by {} KiB", buffered >> 10);
    assert!(
        buffered > 40 << 20,
        "a body read whole shows: {} MiB",
        buffered >> 20
    );
    let _ = std::fs::remove_file(file);
}

#[test]
fn mock_serves_a_config_file() {
    let (_mock, base, first) = start_mock(
        "mock.yaml",
        "  - { path: \"/hello/{who}\", body: { hello: \"{who}\" } }\n",
    );
    assert!(first.contains(&format!("1 routes on {base}")), "{first}");
    let (status, response, _) = http_get(&format!("{base}/hello/world"));
    assert_eq!(status, 200);
    assert!(response.ends_with(r#"{"hello":"world"}"#), "{response}");
}

#[test]
fn fetch_reports_a_table_or_json_honours_its_limit_and_exit_codes() {
    let (_mock, base, _) = start_mock(
        "fetch-mock.yaml",
        "  - { path: \"/item/{n}\", latency: 100ms, body: { n: \"{n}\" } }\n",
    );

    // Six calls of 100 ms, two at a time: a table, exit 0.
    let urls: Vec<String> = (0..6).map(|n| format!("{base}/item/{n}")).collect();
    let out = fanout()
        .args(["fetch", "--limit", "2"])
        .args(&urls)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("URL"), "{table}");
    assert_eq!(table.lines().filter(|l| l.contains("/item/")).count(), 6);
    assert!(table.contains("6 requests: 6 ok, 0 failed"), "{table}");
    assert!(
        !table.contains('\u{1b}'),
        "no progress bar when stdout is not a terminal"
    );
    let (_, response, _) = http_get(&format!("{base}/__mock/stats"));
    let stats: serde_json::Value =
        serde_json::from_str(&response[response.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(
        stats["max_in_flight"], 2,
        "the mock saw at most --limit calls at once"
    );

    // URLs from standard input, one of them failing: JSON, exit 1.
    let mut child = fanout()
        .args(["fetch", "--json", "--timeout", "2s", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    write!(
        child.stdin.take().unwrap(),
        "# two URLs\n{base}/item/1\n{base}/nowhere\n"
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["ok"].as_u64(), report["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(report["requests"][1]["status"], 404);

    // Nothing to do is a usage error, said plainly.
    let out = fanout().arg("fetch").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no URLs"));
}

/// `fanout mock` answering every GET with `{"path": <the path it was asked
/// for>}`, configured in `file`; returns it (killed when dropped) and its
/// base URL.
fn path_backend(file: &str) -> (Running, String) {
    let (mock, base, _) = start_mock(
        file,
        "  - { path: \"/{*rest}\", body: { path: \"/{rest}\" } }\n",
    );
    (mock, base)
}

#[test]
fn serve_reloads_a_good_config_and_refuses_a_bad_one() {
    let (_backend, backend) = path_backend("reload-backend.yaml");
    let port = free_port();
    let config = |path: &str| {
        format!(
            "server: {{ listen: \"127.0.0.1:{port}\" }}\nendpoints:\n  - {{ route: GET /x, backends: [{{ name: a, url: \"{backend}{path}\" }}] }}\n"
        )
    };
    let file = temp_file("reload.yaml", &config("/one"));
    let mut serving = Serving::start(&file);
    let wait_for = |needle: &str| serving.wait_for(needle);
    wait_for("listening on");
    let body = |url: &str| {
        let (_, response, _) = http_get(url);
        response[response.find("\r\n\r\n").unwrap() + 4..].to_owned()
    };
    let url = format!("http://127.0.0.1:{port}/x");
    assert_eq!(body(&url), r#"{"path":"/one"}"#);
    let request_line = wait_for("\"request\"");
    assert_eq!(request_line["fields"]["backends"], "a=ok", "{request_line}");

    std::fs::write(
        &file,
        "endpoints:\n  - { route: GET /x, backends: [{ name: a, upstream: nope }] }\n",
    )
    .unwrap();
    serving.signal("HUP");
    let refused = wait_for("config change refused");
    assert!(
        refused.to_string().contains("unknown upstream `nope`"),
        "{refused}"
    );
    assert_eq!(
        body(&url),
        r#"{"path":"/one"}"#,
        "the previous config keeps serving"
    );

    std::fs::write(&file, config("/two")).unwrap();
    serving.signal("HUP");
    wait_for("config reloaded");
    assert_eq!(body(&url), r#"{"path":"/two"}"#);

    // A listener setting cannot change without a restart: it says so for
    // each, the rest is reloaded, and the gateway keeps its address.
    let other = free_port();
    std::fs::write(
        &file,
        config("/three")
            .replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{other}"))
            .replace(
                "server: {",
                "server: { admin: \"127.0.0.1:1\", max_connections: 7,",
            ),
    )
    .unwrap();
    serving.signal("HUP");
    let notice = wait_for("takes effect at the next restart");
    assert!(notice.to_string().contains("server.listen"), "{notice}");
    wait_for("server.admin");
    wait_for("server.max_connections");
    wait_for("config reloaded");
    assert_eq!(body(&url), r#"{"path":"/three"}"#);

    serving.signal("TERM");
    assert!(wait_exit(&mut serving.child.0, "did not stop").success());
}

/// `fanout mock --make-certs` and `tls` in a mock config: a backend over
/// HTTPS. A gateway trusting the wrong CA gets a connect error that says
/// why; once the CA file it names is replaced by the right one, `serve`
/// reloads by itself (the file is watched like the config) and the call
/// succeeds, without a restart.
#[test]
fn a_changed_certificate_file_is_reloaded_without_a_restart() {
    let dir = std::env::temp_dir().join(format!("fanout-cli-certs-{}", std::process::id()));
    for sub in ["right", "wrong"] {
        make_certs(&dir.join(sub));
    }
    let trusted = dir.join("trusted-ca.pem");
    std::fs::copy(dir.join("wrong/ca.pem"), &trusted).unwrap();

    let tls_port = free_port();
    let mock_file = temp_file(
        "tls-mock.yaml",
        &format!(
            "listen: 127.0.0.1:{}\ntls: {{ listen: \"127.0.0.1:{tls_port}\", cert: {}, key: {} }}\nroutes:\n  - {{ path: /data, body: {{ ok: true }} }}\n",
            free_port(),
            dir.join("right/mock.pem").display(),
            dir.join("right/mock-key.pem").display(),
        ),
    );
    let (mock, first) = run_mock(&mock_file);
    assert!(
        first.contains(&format!("https://127.0.0.1:{tls_port}")),
        "{first}"
    );

    let port = free_port();
    // Dialled by address and verified as `localhost`: a URL naming
    // localhost is two targets where it resolves to ::1 too, and the error
    // told would be the last target's (refused), not the TLS one.
    let config = temp_file(
        "tls-gateway.yaml",
        &format!(
            "server: {{ listen: \"127.0.0.1:{port}\" }}\nupstreams:\n  secure:\n    url: https://127.0.0.1:{tls_port}\n    tls: {{ ca: {}, server_name: localhost }}\nendpoints:\n  - {{ route: GET /x, expose_errors: true, backends: [{{ name: a, upstream: secure, path: /data }}] }}\n",
            trusted.display()
        ),
    );
    let serving = Serving::start(&config);
    let wait_for = |needle: &str| serving.wait_for(needle);
    wait_for("listening on");
    let url = format!("http://127.0.0.1:{port}/x");
    let (_, response, _) = http_get(&url);
    assert!(response.contains("unknown issuer"), "{response}");

    std::fs::copy(dir.join("right/ca.pem"), &trusted).unwrap();
    let reloaded = wait_for("config reloaded");
    assert!(
        reloaded.to_string().contains("a file changed"),
        "{reloaded}"
    );
    let (_, response, _) = http_get(&url);
    assert!(response.contains(r#"{"ok":true}"#), "{response}");
    drop(serving);
    drop(mock);
    let _ = std::fs::remove_dir_all(&dir);
}

/// With the `otel` feature: spans reach an OTLP/HTTP collector and backends
/// receive the W3C trace context.
#[cfg(feature = "otel")]
#[test]
fn otel_exports_spans_and_propagates_traceparent() {
    use std::sync::{Arc, Mutex};

    // A collector: records the path of every POST (spans are protobuf).
    let collector = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let collector_addr = collector.local_addr().unwrap();
    let exports = Arc::new(Mutex::new(Vec::<(String, usize)>::new()));
    let seen = exports.clone();
    std::thread::spawn(move || {
        for mut stream in collector.incoming().flatten() {
            let mut buf = vec![0u8; 1 << 20];
            let mut got = 0;
            // Read the head, then as much body as announced.
            loop {
                let n = stream.read(&mut buf[got..]).unwrap_or(0);
                got += n;
                let text = String::from_utf8_lossy(&buf[..got]).to_string();
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let length = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if n == 0 || got >= head_end + 4 + length {
                        let path = text.split_whitespace().nth(1).unwrap_or("").to_owned();
                        seen.lock().unwrap().push((path, length));
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });

    // A backend that answers with what it received, headers included.
    let (_backend, backend, _) =
        start_mock("traced-backend.yaml", "  - { path: /t, echo: true }\n");

    let port = free_port();
    let config = temp_file(
        "otel.yaml",
        &format!(
            "server: {{ listen: \"127.0.0.1:{port}\" }}\nendpoints:\n  - {{ route: GET /traced, backends: [{{ name: a, url: \"{backend}/t\" }}] }}\n"
        ),
    );
    let mut child = fanout()
        .args(["serve", "-c"])
        .arg(&config)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{collector_addr}"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while !lines.next().unwrap().unwrap().contains("listening on") {}
    std::thread::spawn(move || for _ in lines {});

    let (status, response, _) = http_get(&format!("http://127.0.0.1:{port}/traced"));
    assert_eq!(status, 200, "{response}");
    let body: serde_json::Value =
        serde_json::from_str(&response[response.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    let traceparent = body["headers"]["traceparent"].as_str().unwrap();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(
        parts.len(),
        4,
        "a W3C traceparent reached the backend: {traceparent:?}"
    );
    assert_eq!(
        (parts[0], parts[1].len(), parts[2].len()),
        ("00", 32, 16),
        "{traceparent}"
    );

    // Shutting down flushes the spans.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    wait_exit(&mut child, "did not stop");
    let exports = exports.lock().unwrap().clone();
    assert!(
        exports
            .iter()
            .any(|(path, length)| path == "/v1/traces" && *length > 0),
        "spans were exported: {exports:?}"
    );
}

#[test]
fn a_second_signal_stops_at_once_without_waiting_for_the_grace_period() {
    // A backend that accepts and never answers: the request stays in flight.
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in backend.incoming().flatten() {
            held.push(stream);
        }
    });
    let port = free_port();
    let config = temp_file(
        "grace.yaml",
        &format!(
            "server: {{ listen: \"127.0.0.1:{port}\", shutdown_grace: 60s, request_timeout: 60s }}\nendpoints:\n  - {{ route: GET /stuck, timeout: 60s, backends: [{{ name: a, url: \"http://{backend_addr}/\" }}] }}\n"
        ),
    );
    let mut child = fanout()
        .args(["serve", "-c"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while !lines.next().unwrap().unwrap().contains("listening on") {}
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut in_flight = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(in_flight, "GET /stuck HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200)); // let the request reach the gateway

    let pid = child.id().to_string();
    let term = || Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    term();
    // The first signal starts the graceful stop, which waits for the request.
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the shutdown was logged");
        if line.contains("shutting down") {
            break;
        }
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "still waiting for the request in flight"
    );
    term();
    let status = wait_exit(&mut child, "the second signal did not stop it");
    assert_eq!(
        status.code(),
        Some(130),
        "stopped by the second signal, not by the grace period"
    );
}

/// A TLS connection to 127.0.0.1:`port` trusting the CAs in `roots`.
struct TlsClient(rustls::StreamOwned<rustls::ClientConnection, TcpStream>);

impl TlsClient {
    fn connect(port: u16, roots: &[std::path::PathBuf]) -> TlsClient {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let mut store = rustls::RootCertStore::empty();
        for file in roots {
            for cert in CertificateDer::pem_file_iter(file).unwrap() {
                store.add(cert.unwrap()).unwrap();
            }
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut stream = rustls::StreamOwned::new(connection, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).unwrap();
        }
        TlsClient(stream)
    }

    /// The certificate the server showed.
    fn served(&self) -> Vec<u8> {
        self.0.conn.peer_certificates().unwrap()[0].to_vec()
    }

    /// GET `path` on this (kept-alive) connection: status and body.
    fn get(&mut self, path: &str) -> (u16, String) {
        write!(self.0, "GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").unwrap();
        read_response(&mut self.0)
    }
}

/// One HTTP/1.1 response with a `content-length`, read from `stream`.
fn read_response(stream: &mut impl Read) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (
        head[9..12].parse().unwrap(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// A listener certificate renewed on disk is taken by `serve` by itself,
/// once the key beside it matches: while only the certificate is new, the
/// old pair keeps serving; a connection opened before keeps working.
#[test]
fn a_renewed_listener_certificate_is_taken_once_its_key_matches() {
    let dir = std::env::temp_dir().join(format!("fanout-cli-listener-{}", std::process::id()));
    for sub in ["old", "new"] {
        make_certs(&dir.join(sub));
    }
    let pem = |sub: &str, file: &str| dir.join(sub).join(file);
    let der = |sub: &str| {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::from_pem_file(pem(sub, "mock.pem"))
            .unwrap()
            .to_vec()
    };
    std::fs::copy(pem("old", "mock.pem"), dir.join("gw.pem")).unwrap();
    std::fs::copy(pem("old", "mock-key.pem"), dir.join("gw-key.pem")).unwrap();
    let (_backend, backend) = path_backend("listener-backend.yaml");
    let port = free_port();
    let config = dir.join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "server: {{ listen: \"127.0.0.1:{port}\", tls: {{ cert: gw.pem, key: gw-key.pem }} }}\nendpoints:\n  - {{ route: GET /hi, backends: [{{ name: a, url: \"{backend}/x\" }}] }}\n"
        ),
    )
    .unwrap();
    let serving = Serving::start(&config);
    serving.wait_for(&format!("listening on https://127.0.0.1:{port}"));
    let roots = [pem("old", "ca.pem"), pem("new", "ca.pem")];
    let mut open = TlsClient::connect(port, &roots);
    assert_eq!(open.served(), der("old"));
    assert_eq!(open.get("/hi"), (200, r#"{"path":"/x"}"#.to_owned()));

    // Each file is replaced whole (written beside, then renamed), as
    // certificate tools and Kubernetes do.
    let replace = |from: std::path::PathBuf, to: &str| {
        let temp = dir.join(format!("{to}.new"));
        std::fs::copy(from, &temp).unwrap();
        std::fs::rename(&temp, dir.join(to)).unwrap();
    };
    replace(pem("new", "mock.pem"), "gw.pem");
    let refused = serving.wait_for("config change refused").to_string();
    assert!(
        refused.contains("the key does not go with the certificate"),
        "{refused}"
    );
    assert_eq!(TlsClient::connect(port, &roots).served(), der("old"));

    replace(pem("new", "mock-key.pem"), "gw-key.pem");
    serving.wait_for("config reloaded");
    let mut renewed = TlsClient::connect(port, &roots);
    assert_eq!(renewed.served(), der("new"));
    assert_eq!(renewed.get("/hi").0, 200);
    assert_eq!(open.get("/hi"), (200, r#"{"path":"/x"}"#.to_owned()));
    drop(serving);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A gateway config on `port` (admin on `admin`) whose `GET /x` calls
/// `backend` under a rate limit shared through `redis`.
fn fleet_config(
    name: &str,
    port: u16,
    admin: u16,
    redis: &str,
    backend: &str,
    limit: &str,
    store: &str,
) -> std::path::PathBuf {
    temp_file(
        name,
        &format!(
            "server: {{ listen: \"127.0.0.1:{port}\", admin: \"127.0.0.1:{admin}\" }}\nstore: {{ redis: \"{redis}\"{store} }}\nrate_limits_shared: true\nendpoints:\n  - route: GET /x\n    rate_limit: {limit}\n    backends: [{{ name: a, url: \"{backend}/data\" }}]\n"
        ),
    )
}

/// The value of the first `/metrics` line that starts with `series`.
fn metric(admin: u16, series: &str) -> Option<f64> {
    let (_, text, _) = http_get(&format!("http://127.0.0.1:{admin}/metrics"));
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Waits (20 s at most) until the gateway with admin port `admin` says its
/// store is `up` (or not).
fn wait_store(admin: u16, up: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let want = if up { 1.0 } else { 0.0 };
    while metric(admin, "fanout_store_up") != Some(want) {
        assert!(Instant::now() < deadline, "the store never became up={up}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Three `fanout serve` processes sharing one real redis-server enforce one
/// limit between them: the fleet-wide count of 200s is the limit's, not
/// three times it.
#[test]
fn three_gateway_processes_enforce_one_redis_limit() {
    let redis = fanout_mock::redis::RedisServer::start()
        .expect("redis-server (apt-get install -y redis-server)");
    let (_mock, backend, _) = start_mock(
        "fleet3-mock.yaml",
        "  - { path: /data, body: { ok: true } }\n",
    );
    let nodes: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let mut running = Vec::new();
    for (i, (port, admin)) in nodes.iter().enumerate() {
        let config = fleet_config(
            &format!("fleet3-{i}.yaml"),
            *port,
            *admin,
            &redis.url(),
            &backend,
            "{ rate: 1/h, burst: 10, key: \"header:x-client\" }",
            "",
        );
        let serving = Serving::start(&config);
        serving.wait_for("listening on");
        running.push(serving);
    }
    // A run in which a call missed the 50 ms budget (a busy machine) fell
    // back to the local limiters and says nothing of the shared one: another
    // client tries again.
    let fallbacks = || -> f64 {
        nodes
            .iter()
            .map(|(_, admin)| {
                metric(*admin, "fanout_store_fallbacks_total{use=\"rate_limit\"}").unwrap_or(0.0)
            })
            .sum()
    };
    for client in 0..5 {
        for (_, admin) in &nodes {
            wait_store(*admin, true);
        }
        let before = fallbacks();
        let mut ok = 0;
        for i in 0..30 {
            let (port, _) = nodes[i % 3];
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            write!(
                s,
                "GET /x HTTP/1.1\r\nhost: fleet\r\nx-client: c{client}\r\nconnection: close\r\n\r\n"
            )
            .unwrap();
            let (status, body) = read_response(&mut s);
            assert!(status == 200 || status == 429, "{status} {body}");
            ok += usize::from(status == 200);
        }
        if fallbacks() == before {
            assert_eq!(ok, 10, "the fleet-wide count of 200s");
            return;
        }
    }
    panic!("the store was never used for a whole run");
}

/// One load-generating client: keep-alive GETs of `/x` on `port`, each with
/// a new `x-client` (so each is the first of its bucket), until `stop`;
/// returns (status, latency) of each, and the number of failed requests.
fn load(
    port: u16,
    id: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<(u16, Duration)>, usize) {
    let mut results = Vec::new();
    let mut failed = 0;
    let mut stream: Option<TcpStream> = None;
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        n += 1;
        let started = Instant::now();
        let attempt = (|| -> std::io::Result<(u16, String)> {
            if stream.is_none() {
                let s = TcpStream::connect(("127.0.0.1", port))?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                stream = Some(s);
            }
            let s = stream.as_mut().unwrap();
            write!(
                s,
                "GET /x HTTP/1.1\r\nhost: fleet\r\nx-client: load-{id}-{n}\r\n\r\n"
            )?;
            Ok(read_response(s))
        })();
        match attempt {
            Ok((status, _)) => results.push((status, started.elapsed())),
            Err(_) => {
                failed += 1;
                stream = None;
            }
        }
    }
    (results, failed)
}

/// Redis slowed (DEBUG SLEEP 1), then killed, then started again, while
/// clients keep calling: every request is answered, none waits long (the
/// store's budget is 50 ms; the bound here is generous, the machine is
/// shared), the fallbacks are counted in /metrics, and shared limiting
/// resumes by itself.
#[test]
fn redis_slowed_stopped_and_restarted_under_load() {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };
    let mut redis = fanout_mock::redis::RedisServer::start()
        .expect("redis-server (apt-get install -y redis-server)");
    let (_mock, backend, _) = start_mock(
        "fleet-load-mock.yaml",
        "  - { path: /data, body: { ok: true } }\n",
    );
    let (port, admin) = (free_port(), free_port());
    let config = fleet_config(
        "fleet-load.yaml",
        port,
        admin,
        &redis.url(),
        &backend,
        "{ rate: 1/h, burst: 8, key: \"header:x-client\" }",
        ", fleet_size: 4",
    );
    let serving = Serving::start(&config);
    serving.wait_for("listening on");
    wait_store(admin, true);

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|id| {
            let stop = stop.clone();
            std::thread::spawn(move || load(port, id, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // Slowed: Redis answers nobody for a second.
    assert_eq!(redis.command(&["DEBUG", "SLEEP", "1"]).unwrap(), "+OK");
    wait_store(admin, true);
    // Stopped, under load, then started again (empty) on the same port.
    redis.stop();
    wait_store(admin, false);
    std::thread::sleep(Duration::from_millis(500));
    redis.restart().unwrap();
    wait_store(admin, true);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);

    let mut answered = 0;
    let mut slowest = Duration::ZERO;
    for client in clients {
        let (results, failed) = client.join().unwrap();
        assert_eq!(failed, 0, "a request was not answered");
        for (status, took) in results {
            assert_eq!(status, 200);
            slowest = slowest.max(took);
            answered += 1;
        }
    }
    assert!(answered > 100, "{answered} requests");
    assert!(slowest < Duration::from_secs(1), "slowest {slowest:?}");
    let fallbacks =
        metric(admin, "fanout_store_fallbacks_total{use=\"rate_limit\"}").unwrap_or(0.0);
    assert!(fallbacks > 0.0, "fallbacks counted");
    let down = serving
        .log
        .try_iter()
        .any(|event| event.to_string().contains("the store does not answer"));
    assert!(down, "the fallback is in the log");

    // Shared again: one client gets the whole burst of 8 (not its local
    // share of 2), without a restart. (On a busy machine a call may miss the
    // 50 ms budget and put the store down for a probe's time: then that
    // client's count is not the fleet's, and another client tries again.)
    let fallbacks = || metric(admin, "fanout_store_fallbacks_total{use=\"rate_limit\"}");
    for attempt in 0..5 {
        wait_store(admin, true);
        let before = fallbacks();
        let mut ok = 0;
        for _ in 0..10 {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            write!(
                s,
                "GET /x HTTP/1.1\r\nhost: fleet\r\nx-client: after-{attempt}\r\nconnection: close\r\n\r\n"
            )
            .unwrap();
            ok += usize::from(read_response(&mut s).0 == 200);
        }
        if fallbacks() == before {
            assert_eq!(ok, 8);
            return;
        }
    }
    panic!("the store was not used again");
}
