//! The real `tern` binary as a child process: its configuration, start-up (bound addresses read
//! from its JSON log), and the CLI.

use super::*;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TERN: &str = env!("CARGO_BIN_EXE_tern");

pub struct Proc {
    pub child: Child,
    pub smtp: SocketAddr,
    pub pop3: SocketAddr,
    pub pop3_tls: Option<SocketAddr>,
    pub admin_url: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

pub fn write_config(dir: &Path, backend: Backend) -> PathBuf {
    write_config_with(dir, backend, "")
}

/// A configuration with more TOML appended (whole sections, or keys of a section that is not
/// otherwise written).
pub fn write_config_with(dir: &Path, backend: Backend, extra: &str) -> PathBuf {
    let path = dir.join("tern.toml");
    let data = dir.join("data");
    let mut toml = format!(
        "[server]\nhostname = \"tern.test\"\ndata_dir = \"{}\"\n\n[smtp]\nlisten = \"127.0.0.1:0\"\n\n\
         [pop3]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [auth]\nargon2_memory_kib = 64\nargon2_iterations = 1\n",
        data.display()
    );
    if backend.is_cassandra() {
        toml.push_str(&format!(
            "\n[store]\nbackend = \"cassandra\"\n\n[cassandra]\ncontact_points = [\"{}\"]\nkeyspace = \"{}\"\n",
            cassandra_contact(),
            fresh_keyspace()
        ));
    }
    toml.push_str(extra);
    std::fs::write(&path, toml).unwrap();
    path
}

/// Starts `tern serve` with JSON logs and reads the bound addresses from them.
pub fn spawn(config: &Path) -> Proc {
    spawn_logging(config, true)
}

/// Starts `tern serve`, logging JSON lines or (with `json` false) the text format.
pub fn spawn_logging(config: &Path, json: bool) -> Proc {
    let mut cmd = Command::new(TERN);
    cmd.arg("serve");
    if json {
        cmd.arg("--log-json");
    }
    let mut child = cmd
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                let f = &v["fields"];
                if let (Some(m), Some(a)) = (f["message"].as_str(), f["addr"].as_str()) {
                    let _ = tx.send((m.to_string(), a.to_string()));
                }
            } else if let Some((head, addr)) = line.split_once(" listening addr=") {
                // Text format: "... tern::server: SMTP listening addr=127.0.0.1:4321".
                let what = head.rsplit(": ").next().unwrap_or_default();
                let _ = tx.send((format!("{what} listening"), addr.trim().to_string()));
            }
            sink.lock().unwrap().push(line);
        }
    });
    let (mut smtp, mut pop3, mut admin, mut pop3_tls) = (None, None, None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while smtp.is_none() || pop3.is_none() || admin.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((m, a)) = rx.recv_timeout(left) else {
            panic!("tern did not start; log: {:?}", log.lock().unwrap());
        };
        let addr: SocketAddr = a.parse().unwrap();
        match m.as_str() {
            "SMTP listening" => smtp = Some(addr),
            "POP3 listening" => pop3 = Some(addr),
            "admin API listening" => admin = Some(addr),
            "POP3 over TLS listening" => pop3_tls = Some(addr),
            _ => {}
        }
    }
    let admin_url = format!("http://{}", admin.unwrap());
    wait_healthy(&admin_url);
    Proc {
        child,
        smtp: smtp.unwrap(),
        pop3: pop3.unwrap(),
        pop3_tls,
        admin_url,
        log,
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn tern_cli(admin_url: &str, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(TERN)
        .args(args)
        .env("TERN_ADMIN_URL", admin_url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// Runs a CLI command against the server, asserts it succeeded and returns its output.
pub fn cli_ok(admin_url: &str, args: &[&str]) -> String {
    let out = tern_cli(admin_url, args, None);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub fn setup_user(p: &Proc, user: &str, password: &str) {
    let out = tern_cli(&p.admin_url, &["domain", "add", "example.com"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tern_cli(
        &p.admin_url,
        &["user", "add", user],
        Some(&format!("{password}\n")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn pop3_login(addr: SocketAddr, user: &str, password: &str) -> Pop3Client {
    let mut c = Pop3Client::connect(addr);
    c.cmd(&format!("USER {user}"));
    let r = c.cmd(&format!("PASS {password}"));
    assert!(r.starts_with("+OK"), "{r}");
    c
}
