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
fn schema_is_json_schema() {
    let out = fanout().arg("schema").output().unwrap();
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["title"], "Config");
    assert!(schema["$defs"]["Backend"]["properties"]["after"].is_object());
}

#[test]
fn serve_answers_and_stops_cleanly_on_sigterm() {
    // A backend the gateway can call: a one-shot HTTP server on a std thread.
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in backend.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let body = r#"{"hello":"world"}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = temp_file(
        "serve.yaml",
        &format!(
            "server: {{ listen: \"127.0.0.1:{port}\" }}\nendpoints:\n  - {{ route: GET /hi, backends: [{{ name: a, url: \"http://{backend_addr}/x\" }}] }}\n"
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
    assert!(response.ends_with(r#"{"hello":"world"}"#), "{response}");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "fanout serve did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn serve_refuses_a_bad_config_without_starting() {
    let bad = temp_file("refused.yaml", "endpoints: []\n");
    let out = fanout().args(["serve", "-c"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was started"));
}
