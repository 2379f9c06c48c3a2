//! A real `redis-server` for tests (never a fake): started on a free
//! loopback port with a folder of its own, no persistence
//! (`--save '' --appendonly no`), the `DEBUG` command allowed from
//! loopback (to slow it down on purpose), and killed when dropped.
//!
//! It needs Debian's `redis-server` package (`apt-get install -y
//! redis-server`).
//!
//! ```no_run
//! let mut redis = fanout_mock::redis::RedisServer::start().unwrap();
//! assert_eq!(redis.command(&["PING"]).unwrap(), "+PONG");
//! redis.stop();
//! redis.restart().unwrap(); // on the same port, empty
//! ```

use std::{
    io::{self, BufRead, BufReader, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// A `redis-server` process on 127.0.0.1.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts one on a free port and waits (10 s at most) until it answers.
    ///
    /// # Errors
    ///
    /// When `redis-server` is not installed, or does not start.
    pub fn start() -> io::Result<RedisServer> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fanout-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let mut last = None;
        // A free port can be taken between finding it and binding it: try
        // another then.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let mut server = RedisServer {
                child: None,
                port,
                dir: dir.clone(),
            };
            match server.restart() {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills it (SIGKILL: no goodbye to its clients) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty (stopping it first if it
    /// runs), and waits until it answers.
    ///
    /// # Errors
    ///
    /// When `redis-server` is not installed, or does not start.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot start redis-server ({e}): install it with `apt-get install -y redis-server`"),
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(reply) = self.command(&["PING"]) {
                if reply == "+PONG" {
                    return Ok(());
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(io::Error::other(format!("redis-server exited: {status}")));
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(io::Error::other("redis-server did not answer within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends one command (see [`command`]).
    ///
    /// # Errors
    ///
    /// When the server cannot be reached or does not answer.
    pub fn command(&self, args: &[&str]) -> io::Result<String> {
        command(self.port, args)
    }

    /// An integer reply (`DBSIZE`, `PTTL key`…).
    ///
    /// # Errors
    ///
    /// When the reply is not an integer.
    pub fn integer(&self, args: &[&str]) -> io::Result<i64> {
        let reply = self.command(args)?;
        reply
            .strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| io::Error::other(format!("not an integer reply: {reply}")))
    }
}

/// Sends one command to the server on 127.0.0.1:`port` on a new
/// connection and returns the first line of the reply (`+OK`, `:3`,
/// `$5`…), waiting 30 s at most. A free function, for a thread that sends
/// `DEBUG SLEEP` while the test goes on.
///
/// # Errors
///
/// When the server cannot be reached or does not answer.
pub fn command(port: u16, args: &[&str]) -> io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line.trim_end().to_owned())
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
