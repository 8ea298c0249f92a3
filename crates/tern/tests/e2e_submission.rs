//! Message submission (RFC 6409) and submission over TLS (RFC 8314) with SMTP AUTH (RFC 4954),
//! over real sockets with a rustls client and curl: STARTTLS before AUTH, AUTH before MAIL, the
//! sender must be the user, mail for local users is delivered and marked ESMTPSA, the inbound
//! port offers no AUTH. Mail for other domains: e2e_outbound.

#[macro_use]
mod common;

use common::*;
use std::io::BufReader;
use std::path::Path;

/// A server with a certificate, a submission listener and a submission-over-TLS listener; on
/// loopback, passwords still need TLS (as for any other client).
fn submission_server(b: Backend) -> (TestServer, tempfile::TempDir) {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = tern::tls::write_self_signed("localhost", certs.path()).unwrap();
    let s = TestServer::start_with(b, |c| {
        c.tls.cert_file = Some(cert);
        c.tls.key_file = Some(key);
        c.smtp.submission_listen = Some("127.0.0.1:0".parse().unwrap());
        c.smtp.submissions_listen = Some("127.0.0.1:0".parse().unwrap());
        c.smtp.loopback_is_secure = false;
    });
    (s, certs)
}

fn wrap(tcp: std::net::TcpStream, certs: &Path) -> Tls {
    tls_wrap(tcp, &[&certs.join("cert.pem")])
}

fn submission_with_starttls_and_auth_delivers_locally(b: Backend) {
    let (s, certs) = submission_server(b);
    let alice = s.user("alice");
    let bob = s.user("bob");
    let addr = s.server.as_ref().unwrap().submission_addr.unwrap();
    let mut plain = Lines(BufReader::new(tcp(addr)));
    assert!(plain.line().starts_with("220"));
    plain.send("EHLO client.test\r\n");
    let ehlo = plain.until(|l| &l[3..4] == " ");
    assert!(
        ehlo.contains("250-STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert!(plain
        .cmd("MAIL FROM:<alice@example.com>")
        .starts_with("530 5.7.0"));
    let plain_auth = plain.cmd(&format!(
        "AUTH PLAIN {}",
        b64(b"\0alice@example.com\0pw-alice")
    ));
    assert!(plain_auth.starts_with("538 5.7.11"), "{plain_auth}");
    assert!(plain.cmd("STARTTLS").starts_with("220"));
    let mut c = Lines(BufReader::new(wrap(plain.0.into_inner(), certs.path())));
    c.send("EHLO client.test\r\n");
    let ehlo = c.until(|l| &l[3..4] == " ");
    assert!(ehlo.contains("250-AUTH PLAIN LOGIN"), "{ehlo}");
    let wrong = c.cmd(&format!("AUTH PLAIN {}", b64(b"\0alice@example.com\0nope")));
    assert!(wrong.starts_with("535 5.7.8"), "{wrong}");
    let ok = c.cmd(&format!(
        "AUTH PLAIN {}",
        b64(b"\0Alice@Example.com\0pw-alice")
    ));
    assert!(ok.starts_with("235 2.7.0"), "{ok}");
    let other = c.cmd("MAIL FROM:<bob@example.com>");
    assert!(other.starts_with("553 5.7.1"), "{other}");
    assert!(c.cmd(&format!("MAIL FROM:<{alice}>")).starts_with("250"));
    assert!(c.cmd(&format!("RCPT TO:<{bob}>")).starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    assert!(c
        .cmd("Subject: submitted\r\nBcc: secret@example.com,\r\n\tother@example.com\r\n\r\nhello bob\r\n.")
        .starts_with("250"));
    let m = String::from_utf8(s.login("bob").retr(1)).unwrap();
    assert!(m.contains("with ESMTPSA"), "{m}");
    assert!(m.contains("hello bob"), "{m}");
    // RFC 6409 section 8: the blind copies stay blind, Date and Message-ID are added.
    let (header, _) = m.split_once("\r\n\r\n").unwrap();
    assert!(
        !header.contains("Bcc") && !m.contains("secret@example.com"),
        "{m}"
    );
    assert!(
        header.contains("\r\nDate: ") && header.contains("\r\nMessage-ID: <"),
        "{header}"
    );
}

fn submission_over_implicit_tls_with_auth_login(b: Backend) {
    let (s, certs) = submission_server(b);
    let alice = s.user("alice");
    let addr = s.server.as_ref().unwrap().submissions_addr.unwrap();
    let mut c = Lines(BufReader::new(wrap(tcp(addr), certs.path())));
    assert!(c.line().starts_with("220"));
    c.send("EHLO client.test\r\n");
    let ehlo = c.until(|l| &l[3..4] == " ");
    assert!(
        ehlo.contains("250-AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    assert_eq!(c.cmd("AUTH LOGIN"), "334 VXNlcm5hbWU6");
    assert_eq!(c.cmd(&b64(alice.as_bytes())), "334 UGFzc3dvcmQ6");
    assert!(c.cmd(&b64(b"pw-alice")).starts_with("235"));
    assert!(c.cmd(&format!("MAIL FROM:<{alice}>")).starts_with("250"));
    assert!(c.cmd(&format!("RCPT TO:<{alice}>")).starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    assert!(c
        .cmd("Subject: to myself\r\n\r\nnote\r\n.")
        .starts_with("250"));
    let m = String::from_utf8(s.login("alice").retr(1)).unwrap();
    assert!(
        m.contains("with ESMTPSA") && m.contains("Subject: to myself"),
        "{m}"
    );
    assert_eq!(m.matches("\r\nDate: ").count(), 1, "one Date, added: {m}");
}

/// An alias that rewrites to the user is an address the user owns: a valid MAIL FROM on
/// submission (James's allowed From addresses); anyone else's address is not.
fn aliases_a_user_owns_are_valid_senders(b: Backend) {
    let (s, certs) = submission_server(b);
    let alice = s.user("alice");
    let bob = s.user("bob");
    s.admin_ok(
        "PUT",
        "/address/aliases/alice@example.com/sources/info@example.com",
        None,
    );
    let addr = s.server.as_ref().unwrap().submissions_addr.unwrap();
    let mut c = Lines(BufReader::new(wrap(tcp(addr), certs.path())));
    assert!(c.line().starts_with("220"));
    c.send("EHLO client.test\r\n");
    c.until(|l| &l[3..4] == " ");
    let auth = format!("\0{alice}\0pw-alice");
    assert!(c
        .cmd(&format!("AUTH PLAIN {}", b64(auth.as_bytes())))
        .starts_with("235"));
    let other = c.cmd(&format!("MAIL FROM:<{bob}>"));
    assert!(other.starts_with("553 5.7.1"), "{other}");
    assert!(c.cmd("MAIL FROM:<Info@Example.com>").starts_with("250"));
    assert!(c.cmd(&format!("RCPT TO:<{bob}>")).starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    assert!(c
        .cmd("Subject: from the alias\r\n\r\nhi\r\n.")
        .starts_with("250"));
    let m = String::from_utf8(s.login("bob").retr(1)).unwrap();
    assert!(m.starts_with("Return-Path: <Info@example.com>"), "{m}");
}

on_both_backends!(
    aliases_a_user_owns_are_valid_senders,
    submission_with_starttls_and_auth_delivers_locally,
    submission_over_implicit_tls_with_auth_login,
);

#[test]
fn the_inbound_port_offers_no_auth() {
    let (s, _certs) = submission_server(Backend::Embedded);
    s.user("alice");
    let mut c = s.smtp();
    let ehlo = c.ehlo();
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    let (code, text) = c.cmd(&format!(
        "AUTH PLAIN {}",
        b64(b"\0alice@example.com\0pw-alice")
    ));
    assert_eq!(code, 503, "{text}");
}

#[test]
fn curl_submits_with_auth_on_loopback() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("curl is needed for this test (apt-get install curl)");
    }
    // Loopback counts as secure here (the default): curl may send its password in clear.
    let s = TestServer::start_with(Backend::Embedded, |c| {
        c.smtp.submission_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    s.user("alice");
    s.user("bob");
    let addr = s.server.as_ref().unwrap().submission_addr.unwrap();
    curl_submit_as_alice(
        addr,
        "bob@example.com",
        "Subject: via curl\r\n\r\nHi Bob!\r\n",
    );
    let m = String::from_utf8(s.login("bob").retr(1)).unwrap();
    assert!(m.contains("Hi Bob!") && m.contains("with ESMTPA"), "{m}");
    // Without credentials, submission refuses the mail.
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail.txt");
    std::fs::write(&mail, "Subject: via curl\r\n\r\nHi Bob!\r\n").unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", &format!("smtp://{addr}")])
        .args([
            "--mail-from",
            "alice@example.com",
            "--mail-rcpt",
            "bob@example.com",
            "-T",
        ])
        .arg(&mail)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(s.login("bob").stat().0, 1, "nothing more was delivered");
}
