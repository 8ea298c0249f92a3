//! TLS on every listener, the plaintext-auth policy, STARTTLS command injection, and abuse
//! limits, over real sockets with a rustls client and with `openssl s_client`.

mod common;

use common::*;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A server with a fresh self-signed certificate, STARTTLS/STLS and an implicit-TLS POP3 port.
fn tls_server(adjust: impl FnOnce(&mut tern::config::Config)) -> (TestServer, tempfile::TempDir) {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = tern::tls::write_self_signed("localhost", certs.path()).unwrap();
    let s = TestServer::start_with(Backend::Embedded, |c| {
        c.tls.cert_file = Some(cert);
        c.tls.key_file = Some(key);
        c.pop3.tls_listen = Some("127.0.0.1:0".parse().unwrap());
        adjust(c);
    });
    (s, certs)
}

fn wrap(tcp: TcpStream, certs: &Path) -> Tls {
    tls_wrap(tcp, &[&certs.join("cert.pem")])
}

#[test]
fn implicit_tls_pop3_serves_a_full_session() {
    let (s, certs) = tls_server(|_| {});
    let alice = s.user("alice");
    s.deliver(&[&alice], &message("over tls", "secret body\r\n"));
    let mut c = Lines(BufReader::new(wrap(
        tcp(s.pop3_tls_addr.unwrap()),
        certs.path(),
    )));
    assert!(c.line().starts_with("+OK"));
    let capa = {
        c.send("CAPA\r\n");
        c.until(|l| l == ".")
    };
    assert!(
        capa.contains("\nUSER\n") && !capa.contains("STLS"),
        "{capa}"
    );
    assert!(c.cmd("USER alice@example.com").starts_with("+OK"));
    assert!(c.cmd("PASS pw-alice").starts_with("+OK maildrop has 1"));
    assert!(c.cmd("RETR 1").starts_with("+OK"));
    assert!(c.until(|l| l == ".").contains("secret body"));
    assert!(c.cmd("QUIT").starts_with("+OK"));
    let version = c.0.get_ref().conn.protocol_version().unwrap();
    assert!(matches!(
        version,
        rustls::ProtocolVersion::TLSv1_3 | rustls::ProtocolVersion::TLSv1_2
    ));
}

#[test]
fn stls_upgrades_and_pipelined_plaintext_is_discarded() {
    let (s, certs) = tls_server(|c| c.pop3.loopback_is_secure = false);
    s.user("alice");
    let mut plain = Lines(BufReader::new(tcp(s.pop3_addr)));
    assert!(plain.line().starts_with("+OK"));
    plain.send("CAPA\r\n");
    let capa = plain.until(|l| l == ".");
    assert!(capa.contains("\nSTLS\n"), "{capa}");
    assert!(
        !capa.contains("\nUSER\n") && !capa.contains("SASL"),
        "no plaintext auth before TLS: {capa}"
    );
    assert!(plain
        .cmd("USER alice@example.com")
        .starts_with("-ERR [AUTH]"));
    assert!(plain.cmd("AUTH PLAIN").starts_with("-ERR [AUTH]"));
    // STLS with a login pipelined behind it in the same packet: the login must never run.
    plain.send("STLS\r\nUSER alice@example.com\r\nPASS pw-alice\r\n");
    assert_eq!(plain.line(), "+OK begin TLS negotiation");
    let tcp_stream = plain.0.into_inner();
    let mut c = Lines(BufReader::new(wrap(tcp_stream, certs.path())));
    c.send("CAPA\r\n");
    let capa = c.until(|l| l == ".");
    assert!(
        capa.starts_with("+OK capability"),
        "the first answer inside TLS is CAPA's: {capa}"
    );
    assert!(
        capa.contains("\nUSER\n") && !capa.contains("STLS"),
        "{capa}"
    );
    assert!(
        c.cmd("STLS").starts_with("-ERR"),
        "a second STLS is refused"
    );
    assert!(
        c.cmd("STAT").starts_with("-ERR"),
        "not logged in: the injected PASS did not run"
    );
    assert!(c.cmd("USER alice@example.com").starts_with("+OK"));
    assert!(c.cmd("PASS pw-alice").starts_with("+OK"));
}

#[test]
fn smtp_starttls_resets_the_session_and_marks_received() {
    let (s, certs) = tls_server(|_| {});
    let alice = s.user("alice");
    let mut plain = Lines(BufReader::new(tcp(s.smtp_addr)));
    assert!(plain.line().starts_with("220"));
    plain.send("EHLO client.test\r\n");
    assert!(plain.until(|l| &l[3..4] == " ").contains("250-STARTTLS"));
    plain.send("STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n");
    assert!(plain.line().starts_with("220 2.0.0"));
    let mut c = Lines(BufReader::new(wrap(plain.0.into_inner(), certs.path())));
    assert!(
        c.cmd("MAIL FROM:<a@remote.test>").starts_with("503"),
        "EHLO is needed again"
    );
    c.send("EHLO client.test\r\n");
    let ehlo = c.until(|l| &l[3..4] == " ");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(
        c.cmd("MAIL FROM:<a@remote.test>").starts_with("250"),
        "the injected MAIL did not run"
    );
    assert!(c.cmd(&format!("RCPT TO:<{alice}>")).starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    assert!(c.cmd("Subject: tls\r\n\r\nbody\r\n.").starts_with("250"));
    let mut p = s.login("alice");
    let m = String::from_utf8(p.retr(1)).unwrap();
    assert!(m.contains("with ESMTPS"), "{m}");
}

/// A client that connected once resumes its session on POP3S, after STLS and after STARTTLS
/// (tickets by default), and gets full handshakes only when resumption is off.
#[test]
fn returning_clients_resume_their_tls_sessions() {
    use rustls::HandshakeKind::{Full, Resumed};
    for (tickets, cache, expected) in [
        (true, 20_000, Resumed),
        (false, 20_000, Resumed),
        (false, 0, Full),
    ] {
        let (s, certs) = tls_server(|c| {
            c.tls.session_tickets = tickets;
            c.tls.session_cache_entries = cache;
        });
        s.user("alice");
        let client = tls_client_config(&[&certs.path().join("cert.pem")]);
        let how = |lines: &Lines<Tls>| lines.0.get_ref().conn.handshake_kind();
        let pop3s = || {
            let mut c = Lines(BufReader::new(tls_wrap_with(
                tcp(s.pop3_tls_addr.unwrap()),
                client.clone(),
            )));
            assert!(c.line().starts_with("+OK"));
            assert!(c.cmd("USER alice@example.com").starts_with("+OK"));
            assert!(c.cmd("PASS pw-alice").starts_with("+OK"));
            assert!(c.cmd("QUIT").starts_with("+OK"));
            how(&c)
        };
        let stls = || {
            let mut plain = Lines(BufReader::new(tcp(s.pop3_addr)));
            assert!(plain.line().starts_with("+OK"));
            assert!(plain.cmd("STLS").starts_with("+OK"));
            let mut c = Lines(BufReader::new(tls_wrap_with(
                plain.0.into_inner(),
                client.clone(),
            )));
            assert!(c.cmd("QUIT").starts_with("+OK"));
            how(&c)
        };
        let starttls = || {
            let mut plain = Lines(BufReader::new(tcp(s.smtp_addr)));
            assert!(plain.line().starts_with("220"));
            plain.send("EHLO client.test\r\n");
            plain.until(|l| &l[3..4] == " ");
            assert!(plain.cmd("STARTTLS").starts_with("220"));
            let mut c = Lines(BufReader::new(tls_wrap_with(
                plain.0.into_inner(),
                client.clone(),
            )));
            assert!(c.cmd("QUIT").starts_with("221"));
            how(&c)
        };
        assert_eq!(pop3s(), Some(Full), "the first connection");
        for (what, kind) in [
            ("POP3S", pop3s()),
            ("STLS", stls()),
            ("STARTTLS", starttls()),
        ] {
            assert_eq!(
                kind,
                Some(expected),
                "{what}, tickets {tickets}, cache {cache}"
            );
        }
    }
}

#[test]
fn no_tls_offered_without_a_certificate() {
    let s = TestServer::start(Backend::Embedded);
    let mut p = Lines(BufReader::new(tcp(s.pop3_addr)));
    p.line();
    p.send("CAPA\r\n");
    assert!(!p.until(|l| l == ".").contains("STLS"));
    assert!(p.cmd("STLS").starts_with("-ERR"));
    let mut m = Lines(BufReader::new(tcp(s.smtp_addr)));
    m.line();
    m.send("EHLO c\r\n");
    assert!(!m.until(|l| &l[3..4] == " ").contains("STARTTLS"));
    assert!(m.cmd("STARTTLS").starts_with("454"));
}

fn s_client(args: &[&str], input: &str) -> String {
    // -ign_eof: the end of the input does not end the connection (the server's close after
    // QUIT does); -nocommands: a line starting with Q is sent, not taken as "quit".
    let mut child = Command::new("openssl")
        .arg("s_client")
        .args(["-ign_eof", "-nocommands"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is needed for this test (apt-get install openssl)");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn openssl_s_client_implicit_tls_and_starttls() {
    let (s, certs) = tls_server(|_| {});
    s.user("alice");
    let ca = certs.path().join("cert.pem");
    let ca = ca.to_str().unwrap();
    let pop3s = s.pop3_tls_addr.unwrap().to_string();
    let out = s_client(
        &[
            "-connect",
            &pop3s,
            "-CAfile",
            ca,
            "-verify_return_error",
            "-crlf",
        ],
        "USER alice@example.com\nPASS pw-alice\nQUIT\n",
    );
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    assert!(out.contains("+OK maildrop has 0 messages"), "{out}");
    let pop3 = s.pop3_addr.to_string();
    let out = s_client(
        &[
            "-starttls",
            "pop3",
            "-connect",
            &pop3,
            "-CAfile",
            ca,
            "-verify_return_error",
            "-crlf",
        ],
        "CAPA\nQUIT\n",
    );
    assert!(
        out.contains("Verify return code: 0 (ok)") && out.contains("IMPLEMENTATION Tern"),
        "{out}"
    );
    let smtp = s.smtp_addr.to_string();
    let out = s_client(
        &[
            "-starttls",
            "smtp",
            "-connect",
            &smtp,
            "-CAfile",
            ca,
            "-verify_return_error",
            "-crlf",
        ],
        "EHLO c\nQUIT\n",
    );
    assert!(
        out.contains("Verify return code: 0 (ok)")
            && out.contains("250 HELP")
            && out.contains("221 2.0.0"),
        "{out}"
    );
    let protocol = out
        .lines()
        .find(|l| l.contains("Protocol"))
        .unwrap_or_default()
        .to_string();
    assert!(
        protocol.contains("TLSv1.3") || protocol.contains("TLSv1.2"),
        "{protocol}"
    );
}

#[test]
fn connection_cap_answers_busy_and_frees_up() {
    let s = TestServer::start_with(Backend::Embedded, |c| c.server.max_connections = 3);
    let held: Vec<Pop3Client> = (0..3).map(|_| s.pop3()).collect();
    let mut extra = Lines(BufReader::new(tcp(s.pop3_addr)));
    assert!(extra
        .line()
        .starts_with("-ERR [SYS/TEMP] too many connections"));
    let mut smtp = Lines(BufReader::new(tcp(s.smtp_addr)));
    assert!(smtp.line().starts_with("421 4.3.2"));
    drop(held);
    // Places come back once the server has seen the connections close.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut again = Lines(BufReader::new(tcp(s.pop3_addr)));
        if again.line().starts_with("+OK") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "places never freed");
    }
}
