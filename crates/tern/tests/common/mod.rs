//! Shared harness of the end-to-end tests: a real server on ephemeral loopback ports, driven
//! with plain blocking sockets speaking real SMTP and POP3. The clients here are written
//! independently of tern-proto, so the server is never checked against its own code.
#![allow(dead_code)]

pub mod dns;
pub mod dovecot;
pub mod process;
pub mod sink;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use tern::admin::client;
use tern::config::Config;
use tern::server::Server;

pub const DOMAIN: &str = "example.com";

/// The store a test server runs on, and how its POP3 lists messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Cassandra,
    /// The embedded store with `pop3.listing = "uid"`.
    EmbeddedUid,
    /// Cassandra with `pop3.listing = "uid"`.
    CassandraUid,
}

impl Backend {
    pub fn is_cassandra(self) -> bool {
        matches!(self, Backend::Cassandra | Backend::CassandraUid)
    }

    pub fn is_uid(self) -> bool {
        matches!(self, Backend::EmbeddedUid | Backend::CassandraUid)
    }
}

/// Like [`on_both_backends!`], and again with the classic UID listing on each backend.
#[macro_export]
macro_rules! on_every_backend_and_listing {
    ($($name:ident),* $(,)?) => {
        $crate::on_both_backends!($($name),*);
        mod embedded_uid {
            $( #[test] fn $name() { super::$name(super::Backend::EmbeddedUid) } )*
        }
        mod cassandra_uid {
            $(
                #[test]
                #[ignore = "needs Cassandra: run scripts/test"]
                fn $name() { super::$name(super::Backend::CassandraUid) }
            )*
        }
    };
}

/// Where the test Cassandra listens (`TERN_TEST_CASSANDRA`, default 127.0.0.1:9042).
pub fn cassandra_contact() -> String {
    std::env::var("TERN_TEST_CASSANDRA").unwrap_or_else(|_| "127.0.0.1:9042".into())
}

/// The CA of the certificate the test Cassandra presents for CQL over TLS (written by
/// scripts/cassandra/run.sh; `TERN_TEST_CASSANDRA_CA` overrides).
pub fn cassandra_ca() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("TERN_TEST_CASSANDRA_CA") {
        return p.into();
    }
    let home = std::env::var("TERN_CASSANDRA_HOME").unwrap_or_else(|_| {
        format!(
            "{}/.cache/tern-cassandra",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    std::path::Path::new(&home).join("run/tls/ca.pem")
}

/// A keyspace no other test uses.
pub fn fresh_keyspace() -> String {
    format!("t{}", uuid::Uuid::new_v4().simple())
}

/// Runs each named test function (taking a [`Backend`]) once per backend. The Cassandra runs
/// are ignored by a plain `cargo test` and run by `scripts/test`, which starts Cassandra.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $( #[test] fn $name() { super::$name(super::Backend::Embedded) } )*
        }
        mod cassandra {
            $(
                #[test]
                #[ignore = "needs Cassandra: run scripts/test"]
                fn $name() { super::$name(super::Backend::Cassandra) }
            )*
        }
    };
}

pub struct TestServer {
    runtime: Option<tokio::runtime::Runtime>,
    pub server: Option<Server>,
    pub smtp_addr: SocketAddr,
    pub pop3_addr: SocketAddr,
    pub pop3_tls_addr: Option<SocketAddr>,
    pub admin_url: String,
    pub config: Config,
    /// Drop the Cassandra keyspace when the server stops (it made its own).
    owns_keyspace: bool,
    _dir: Option<tempfile::TempDir>,
}

/// A configuration for tests: ephemeral ports, cheap password hashing, and for Cassandra a
/// keyspace of its own.
pub fn test_config(data_dir: &std::path::Path, backend: Backend) -> Config {
    let mut c = Config::default();
    if backend.is_uid() {
        c.pop3.listing = tern::config::Pop3ListingMode::Uid;
    }
    if backend.is_cassandra() {
        c.store.backend = tern::config::StoreBackend::Cassandra;
        c.cassandra.contact_points = vec![cassandra_contact()];
        c.cassandra.keyspace = fresh_keyspace();
    }
    c.server.data_dir = data_dir.to_path_buf();
    c.server.hostname = "tern.test".into();
    c.smtp.listen = "127.0.0.1:0".parse().unwrap();
    c.pop3.listen = "127.0.0.1:0".parse().unwrap();
    c.admin.listen = "127.0.0.1:0".parse().unwrap();
    c.auth.argon2_memory_kib = 64;
    c.auth.argon2_iterations = 1;
    c
}

impl TestServer {
    pub fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {})
    }

    pub fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path(), backend);
        adjust(&mut config);
        let s = Self::start_config(config, Some(dir)).owning_keyspace();
        s.admin_ok("PUT", &format!("/domains/{DOMAIN}"), None);
        s
    }

    /// Drops the server's Cassandra keyspace when it stops (a no-op on the embedded store).
    pub fn owning_keyspace(mut self) -> Self {
        self.owns_keyspace = self.config.store.backend == tern::config::StoreBackend::Cassandra;
        self
    }

    pub fn start_config(config: Config, dir: Option<tempfile::TempDir>) -> Self {
        let s = Self::launch(config, dir);
        wait_healthy(&s.admin_url);
        s
    }

    /// Starts without waiting for the store to answer.
    pub fn launch(config: Config, dir: Option<tempfile::TempDir>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(Server::start(config.clone())).unwrap();
        let admin_url = format!("http://{}", server.admin_addr);
        Self {
            smtp_addr: server.smtp_addr,
            pop3_addr: server.pop3_addr,
            pop3_tls_addr: server.pop3_tls_addr,
            admin_url,
            server: Some(server),
            runtime: Some(runtime),
            config,
            owns_keyspace: false,
            _dir: dir,
        }
    }

    /// An admin API call, with the admin token when the server has one.
    pub fn admin(&self, method: &str, path: &str, body: Option<&str>) -> client::Response {
        let token = self.config.admin.token.as_deref();
        client::request_with_token(&self.admin_url, token, method, path, body).unwrap()
    }

    pub fn admin_ok(&self, method: &str, path: &str, body: Option<&str>) -> String {
        let r = self.admin(method, path, body);
        assert!(
            (200..300).contains(&r.status),
            "{method} {path}: {} {}",
            r.status,
            r.body
        );
        r.body
    }

    /// Creates `name@example.com` with password `pw-name` and returns the address.
    pub fn user(&self, name: &str) -> String {
        let addr = format!("{name}@{DOMAIN}");
        let body = format!(r#"{{"password":"pw-{name}"}}"#);
        self.admin_ok("PUT", &format!("/users/{addr}?force"), Some(&body));
        addr
    }

    pub fn smtp(&self) -> SmtpClient {
        SmtpClient::connect(self.smtp_addr)
    }

    pub fn pop3(&self) -> Pop3Client {
        Pop3Client::connect(self.pop3_addr)
    }

    /// A POP3 session logged in as `name@example.com`.
    pub fn login(&self, name: &str) -> Pop3Client {
        let mut c = self.pop3();
        assert!(c.cmd(&format!("USER {name}@{DOMAIN}")).starts_with("+OK"));
        let r = c.cmd(&format!("PASS pw-{name}"));
        assert!(r.starts_with("+OK"), "{r}");
        c
    }

    /// Sends one message and asserts it was accepted.
    pub fn deliver(&self, to: &[&str], body: &[u8]) {
        let mut c = self.smtp();
        c.ehlo();
        let (code, text) = c.send_mail("sender@remote.test", to, body);
        assert_eq!(code, 250, "{text}");
        c.quit();
    }

    /// Runs a future on the server's runtime (to work on its stores directly).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.as_ref().unwrap().block_on(f)
    }

    /// The server's store (every trait: bring the one a test uses into scope).
    pub fn mail_store(&self) -> std::sync::Arc<dyn tern_store::Store> {
        self.server.as_ref().unwrap().store.clone()
    }

    /// The INBOX id of `name@example.com`.
    pub fn inbox(&self, name: &str) -> tern_store::MailboxId {
        let body = self.admin_ok("GET", &format!("/users/{name}@{DOMAIN}/mailboxes"), None);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        tern_store::MailboxId(uuid::Uuid::parse_str(v[0]["mailboxId"].as_str().unwrap()).unwrap())
    }

    pub fn stop(&mut self) {
        if let (Some(rt), Some(server)) = (self.runtime.as_ref(), self.server.take()) {
            rt.block_on(server.shutdown());
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
        // Last, and only here: a test may stop a server and start another on its data.
        if self.owns_keyspace {
            let options = self.config.cassandra.options();
            let dropped = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| {
                    rt.block_on(tern_store::cassandra::drop_keyspace(&options))
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = dropped {
                eprintln!("could not drop test keyspace {}: {e}", options.keyspace);
            }
        }
    }
}

/// Waits until the store answers (a Cassandra store connects in the background).
pub fn wait_healthy(admin_url: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let r = client::request(admin_url, "GET", "/healthcheck", None).unwrap();
        if r.status == 200 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "store never became healthy: {}",
            r.body
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A message with a subject and a body, CRLF line ends.
pub fn message(subject: &str, body: &str) -> Vec<u8> {
    format!("From: sender@remote.test\r\nTo: someone@{DOMAIN}\r\nSubject: {subject}\r\n\r\n{body}")
        .into_bytes()
}

fn connect(addr: SocketAddr) -> (BufReader<TcpStream>, TcpStream) {
    connect_sending(addr, b"")
}

/// Connects and sends `first` (a PROXY protocol header, say) before anything is read.
fn connect_sending(addr: SocketAddr, first: &[u8]) -> (BufReader<TcpStream>, TcpStream) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(first).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    (BufReader::new(s.try_clone().unwrap()), s)
}

fn read_line(r: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.ends_with("\r\n"), "line without CRLF: {line:?}");
    line.truncate(line.len() - 2);
    line
}

pub struct SmtpClient {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
}

impl SmtpClient {
    pub fn connect(addr: SocketAddr) -> Self {
        Self::connect_sending(addr, b"")
    }

    /// Connects, sends `first` (a PROXY header), then expects the greeting.
    pub fn connect_sending(addr: SocketAddr, first: &[u8]) -> Self {
        let (r, w) = connect_sending(addr, first);
        let mut c = Self { r, w };
        let (code, _) = c.reply();
        assert_eq!(code, 220);
        c
    }

    /// Reads one (possibly multi-line) reply.
    pub fn reply(&mut self) -> (u16, String) {
        let mut text = String::new();
        loop {
            let line = read_line(&mut self.r);
            let code = line[..3].parse().unwrap();
            text.push_str(&line);
            text.push('\n');
            if line.as_bytes().get(3) != Some(&b'-') {
                return (code, text);
            }
        }
    }

    pub fn send_raw(&mut self, data: &[u8]) {
        self.w.write_all(data).unwrap();
    }

    pub fn cmd(&mut self, line: &str) -> (u16, String) {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    pub fn ehlo(&mut self) -> String {
        let (code, text) = self.cmd("EHLO client.test");
        assert_eq!(code, 250);
        text
    }

    /// MAIL, RCPT for each recipient (asserting acceptance), DATA with dot-stuffing; returns the
    /// reply to the end of data.
    pub fn send_mail(&mut self, from: &str, to: &[&str], body: &[u8]) -> (u16, String) {
        let (code, text) = self.cmd(&format!("MAIL FROM:<{from}>"));
        assert_eq!(code, 250, "{text}");
        for rcpt in to {
            let (code, text) = self.cmd(&format!("RCPT TO:<{rcpt}>"));
            assert_eq!(code, 250, "{rcpt}: {text}");
        }
        let (code, text) = self.cmd("DATA");
        assert_eq!(code, 354, "{text}");
        self.send_raw(&stuff(body));
        self.send_raw(b".\r\n");
        self.reply()
    }

    pub fn quit(&mut self) {
        let (code, _) = self.cmd("QUIT");
        assert_eq!(code, 221);
    }
}

/// Client-side dot-stuffing of a CRLF body; adds a final CRLF if missing.
pub fn stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 64);
    let mut at_start = true;
    for &b in body {
        if at_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_start = b == b'\n';
    }
    if !body.is_empty() && !body.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

pub struct Pop3Client {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
    /// The server's first line.
    pub greeting: String,
}

impl Pop3Client {
    pub fn connect(addr: SocketAddr) -> Self {
        Self::connect_sending(addr, b"")
    }

    /// Connects, sends `first` (a PROXY header), then expects the greeting.
    pub fn connect_sending(addr: SocketAddr, first: &[u8]) -> Self {
        let (r, w) = connect_sending(addr, first);
        let mut c = Self {
            r,
            w,
            greeting: String::new(),
        };
        c.greeting = c.line();
        assert!(c.greeting.starts_with("+OK"), "{}", c.greeting);
        c
    }

    /// Connects and reads the first line, whatever it is (a refusal, say).
    pub fn connect_any(addr: SocketAddr) -> Self {
        let (r, w) = connect(addr);
        let mut c = Self {
            r,
            w,
            greeting: String::new(),
        };
        c.greeting = c.line();
        c
    }

    pub fn line(&mut self) -> String {
        read_line(&mut self.r)
    }

    pub fn send_raw(&mut self, data: &[u8]) {
        self.w.write_all(data).unwrap();
    }

    pub fn cmd(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.line()
    }

    /// Reads a multi-line body up to "." and undoes the byte-stuffing; returns raw octets.
    pub fn read_multiline(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut line = Vec::new();
            self.r.read_until(b'\n', &mut line).unwrap();
            assert!(line.ends_with(b"\r\n"), "multi-line response cut short");
            if line == b".\r\n" {
                return out;
            }
            let content = if line.starts_with(b".") {
                &line[1..]
            } else {
                &line[..]
            };
            out.extend_from_slice(content);
        }
    }

    /// Runs a command answered with a multi-line response; panics on -ERR.
    pub fn multi(&mut self, line: &str) -> (String, Vec<u8>) {
        let status = self.cmd(line);
        assert!(status.starts_with("+OK"), "{line}: {status}");
        (status, self.read_multiline())
    }

    pub fn retr(&mut self, n: usize) -> Vec<u8> {
        self.multi(&format!("RETR {n}")).1
    }

    pub fn stat(&mut self) -> (usize, u64) {
        let s = self.cmd("STAT");
        let parts: Vec<&str> = s.split_whitespace().collect();
        assert_eq!(parts[0], "+OK", "{s}");
        (parts[1].parse().unwrap(), parts[2].parse().unwrap())
    }

    pub fn list(&mut self) -> Vec<(usize, u64)> {
        let (_, body) = self.multi("LIST");
        String::from_utf8(body)
            .unwrap()
            .lines()
            .map(|l| {
                let (n, s) = l.split_once(' ').unwrap();
                (n.parse().unwrap(), s.parse().unwrap())
            })
            .collect()
    }

    pub fn uidl(&mut self) -> Vec<(usize, String)> {
        let (_, body) = self.multi("UIDL");
        String::from_utf8(body)
            .unwrap()
            .lines()
            .map(|l| {
                let (n, s) = l.split_once(' ').unwrap();
                (n.parse().unwrap(), s.to_string())
            })
            .collect()
    }

    pub fn quit(&mut self) -> String {
        self.cmd("QUIT")
    }

    /// Reads until the server closes the connection.
    pub fn read_to_close(&mut self) -> String {
        let mut rest = String::new();
        let _ = self.r.read_to_string(&mut rest);
        rest
    }
}

/// Runs an external tool (curl, swaks, python3, the tern CLI), asserts that it succeeded, with
/// its stderr in the failure message, and returns what it printed.
/// Submits `body` with curl as alice@example.com (password `pw-alice`) to `recipient`
/// through the submission listener at `addr`, asserting that curl succeeded.
pub fn curl_submit_as_alice(addr: SocketAddr, recipient: &str, body: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail.txt");
    std::fs::write(&mail, body).unwrap();
    run_ok(
        std::process::Command::new("curl")
            .args(["-sS", &format!("smtp://{addr}")])
            .args(["--user", "alice@example.com:pw-alice"])
            .args(["--mail-from", "alice@example.com", "--mail-rcpt", recipient])
            .arg("-T")
            .arg(&mail),
    );
}

pub fn run_ok(command: &mut std::process::Command) -> std::process::Output {
    let out = command.output().expect("the tool runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS client session over `tcp` for "localhost", trusting the given PEM certificates.
pub fn tls_wrap(tcp: TcpStream, trusted: &[&std::path::Path]) -> Tls {
    tls_wrap_with(tcp, tls_client_config(trusted))
}

/// A client configuration trusting `trusted`; connections made with one share its session
/// cache, so the second and later ones can resume.
pub fn tls_client_config(trusted: &[&std::path::Path]) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for pem in trusted {
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(pem).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    std::sync::Arc::new(config)
}

pub fn tls_wrap_with(tcp: TcpStream, config: std::sync::Arc<rustls::ClientConfig>) -> Tls {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Asserts a date in James's task format (`yyyy-MM-dd'T'HH:mm:ss.SSSZ`), such as
/// `2017-12-27T15:15:24.805+0000`.
pub fn assert_james_date(s: &str) {
    let pattern = "dddd-dd-ddTdd:dd:dd.ddd+dddd";
    assert_eq!(s.len(), pattern.len(), "not a James date: {s}");
    for (c, p) in s.chars().zip(pattern.chars()) {
        let ok = if p == 'd' { c.is_ascii_digit() } else { c == p };
        assert!(ok, "not a James date: {s}");
    }
}

/// Writes that report a closed connection instead of panicking (for clients the server is
/// expected to drop).
pub trait WriteChecked {
    fn write_all_checked(&mut self, data: &[u8]) -> std::io::Result<()>;
}

impl WriteChecked for TcpStream {
    fn write_all_checked(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.write_all(data)
    }
}

/// Line-oriented client over any stream (TLS or not).
pub struct Lines<S: Read + Write>(pub BufReader<S>);

impl<S: Read + Write> Lines<S> {
    pub fn line(&mut self) -> String {
        let mut l = String::new();
        self.0.read_line(&mut l).unwrap();
        l.trim_end_matches("\r\n").to_string()
    }
    pub fn send(&mut self, data: &str) {
        let s = self.0.get_mut();
        s.write_all(data.as_bytes()).unwrap();
        s.flush().unwrap();
    }
    pub fn cmd(&mut self, c: &str) -> String {
        self.send(&format!("{c}\r\n"));
        self.line()
    }
    /// Reads a POP3 multi-line body, or an SMTP multi-line reply, to its end.
    pub fn until(&mut self, last: impl Fn(&str) -> bool) -> String {
        let mut all = String::new();
        loop {
            let l = self.line();
            all.push_str(&l);
            all.push('\n');
            if last(&l) {
                return all;
            }
        }
    }
}

pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}
