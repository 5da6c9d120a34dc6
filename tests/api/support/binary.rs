//! Running the real binary: start on ephemeral ports, read its JSON log lines, talk raw HTTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::helpers::repo_root;

/// A running `orders-api serve`.
pub struct Running {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub api: SocketAddr,
    pub ops: SocketAddr,
    _dir: tempfile::TempDir,
}

/// Starts the binary on ephemeral ports with JSON logs and waits for its "listening" line.
pub fn start(env: &[(&str, &str)]) -> Running {
    let (cmd, dir) = command(env);
    spawn(cmd, dir)
}

/// The `serve` command [`start`] runs, and the directory holding its database.
pub fn command(env: &[(&str, &str)]) -> (Command, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("o.db").display());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orders-api"));
    cmd.current_dir(repo_root())
        .env_clear()
        .env("APP_SERVER__HOST", "127.0.0.1")
        .env("APP_SERVER__PORT", "0")
        .env("APP_SERVER__OPS_PORT", "0")
        .env("APP_LOG__FORMAT", "json")
        .env("APP_LOG__LEVEL", "info")
        .env("APP_DATABASE__URL", db)
        // Tests send bursts from one address; a test about limits turns them back on.
        .env("APP_RATE_LIMIT__ENABLED", "false");
    for (k, v) in env {
        cmd.env(k, v);
    }
    (cmd, dir)
}

/// Spawns a prepared `serve` command (JSON logs on stdout, ephemeral ports) and waits for its
/// "listening" line; `dir` holds its data and lives as long as the process.
pub fn spawn(mut cmd: Command, dir: tempfile::TempDir) -> Running {
    cmd.stderr(Stdio::inherit());
    spawn_with_stderr(cmd, dir)
}

/// [`spawn`], with stderr wherever `cmd` already sends it.
pub fn spawn_with_stderr(mut cmd: Command, dir: tempfile::TempDir) -> Running {
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn orders-api");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let listening = wait_line(&lines, |l| l["message"] == "listening");
    let addr = |k: &str| {
        listening[k]
            .as_str()
            .unwrap()
            .parse::<SocketAddr>()
            .unwrap()
    };
    Running {
        child,
        lines,
        api: addr("api"),
        ops: addr("ops"),
        _dir: dir,
    }
}

pub fn wait_line(lines: &mpsc::Receiver<String>, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    // The last lines seen, for the failure message: what the service said instead.
    let mut seen = std::collections::VecDeque::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(line) = lines.recv_timeout(left) else {
            break;
        };
        let json: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        if want(&json) {
            return json;
        }
        if seen.len() == 20 {
            seen.pop_front();
        }
        seen.push_back(line);
    }
    let seen: Vec<String> = seen.into();
    panic!(
        "wanted log line never came within 20 s; the last lines:\n{}",
        seen.join("\n")
    );
}

pub fn http(addr: SocketAddr, request: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

pub fn get_status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let res = http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )?;
    Ok(res.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0))
}

/// Polls `probe` until it holds; the binary is another process, so there is no clock to pause.
pub fn eventually(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if probe() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for: {what}");
}

impl Running {
    /// SIGTERM, then the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().ok()?;
        self.child.wait().ok()?.code()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
