//! The PROXY protocol (v1 and v2, real headers) from a trusted and an untrusted address, and
//! login throttling by the real client address: behind a load balancer per-address lockouts
//! follow the client the header names, and plain loopback is never locked out per address.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn v1(client: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 {port} 25\r\n").into_bytes()
}

fn v2(client: &str) -> Vec<u8> {
    let client: SocketAddr = format!("{client}:6000").parse().unwrap();
    let server: SocketAddr = "127.0.0.1:110".parse().unwrap();
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (client, server),
    )
    .build()
    .unwrap()
}

fn trusting_loopback() -> TestServer {
    TestServer::start_with(Backend::Embedded, |c| {
        c.server.proxy_trusted_networks = vec!["127.0.0.1/32".parse().unwrap()];
        c.auth.max_failures_per_ip = 3;
        c.auth.lockout_secs = 2;
        c.auth.failure_delay_ms = 10;
        c.pop3.max_auth_failures = 10;
        // The proxied clients are not loopback: without this, passwords need TLS.
        c.pop3.allow_plaintext_auth = true;
    })
}

/// The Received header of the only message in `user`'s mailbox, read through POP3 (itself over
/// a v2 header when `proxied`).
fn received_line(s: &TestServer, user: &str, proxied: bool) -> String {
    let mut c = if proxied {
        Pop3Client::connect_sending(s.pop3_addr, &v2("198.51.100.9"))
    } else {
        s.pop3()
    };
    c.cmd(&format!("USER {user}@{DOMAIN}"));
    assert!(c.cmd(&format!("PASS pw-{user}")).starts_with("+OK"));
    let text = String::from_utf8(c.retr(1)).unwrap();
    c.quit();
    text.lines()
        .find(|l| l.starts_with("Received:"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn trusted_balancer_headers_name_the_client() {
    let s = trusting_loopback();
    s.user("alice");
    let mut smtp = SmtpClient::connect_sending(s.smtp_addr, &v1("192.0.2.7", 51000));
    smtp.ehlo();
    let (code, text) = smtp.send_mail(
        "bob@remote.test",
        &["alice@example.com"],
        &message("hi", "x\r\n"),
    );
    assert_eq!(code, 250, "{text}");
    smtp.quit();
    let received = received_line(&s, "alice", true);
    assert!(received.contains("192.0.2.7"), "{received}");
    assert!(!received.contains("127.0.0.1"), "{received}");
    // A trusted peer must send the header: anything else is dropped without a greeting.
    let mut raw = TcpStream::connect(s.smtp_addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    raw.write_all(b"EHLO sneaky\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer);
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
}

#[test]
fn a_proxied_client_is_not_treated_as_local() {
    let s = TestServer::start_with(Backend::Embedded, |c| {
        c.server.proxy_trusted_networks = vec!["127.0.0.1/32".parse().unwrap()];
    });
    s.user("alice");
    let mut c = Pop3Client::connect_sending(s.pop3_addr, &v2("198.51.100.9"));
    let answer = c.cmd("USER alice@example.com");
    assert!(answer.starts_with("-ERR [AUTH] plaintext"), "{answer}");
}

#[test]
fn headers_from_untrusted_peers_are_not_believed() {
    let s = TestServer::start_with(Backend::Embedded, |c| {
        c.server.proxy_trusted_networks = vec!["192.0.2.0/24".parse().unwrap()];
    });
    s.user("alice");
    let mut smtp = SmtpClient::connect_sending(s.smtp_addr, &v1("203.0.113.5", 1234));
    let (code, _) = smtp.reply();
    assert_eq!(code, 500, "the header is just a bad command here");
    smtp.ehlo();
    let (code, text) = smtp.send_mail(
        "bob@remote.test",
        &["alice@example.com"],
        &message("hi", "x\r\n"),
    );
    assert_eq!(code, 250, "{text}");
    let received = received_line(&s, "alice", false);
    assert!(received.contains("127.0.0.1"), "{received}");
    assert!(!received.contains("203.0.113.5"), "{received}");
}

#[test]
fn lockouts_follow_the_proxied_client_and_recover() {
    let s = trusting_loopback();
    s.user("alice");
    let login = |client: &str, password: &str| {
        let mut c = Pop3Client::connect_sending(s.pop3_addr, &v1(client, 40000));
        c.cmd("USER alice@example.com");
        c.cmd(&format!("PASS {password}"))
    };
    for _ in 0..3 {
        assert!(login("192.0.2.7", "wrong").starts_with("-ERR [AUTH]"));
    }
    // That client is locked out, even with the right password; another one is not.
    let refused = login("192.0.2.7", "pw-alice");
    assert!(refused.starts_with("-ERR [LOGIN-DELAY]"), "{refused}");
    assert!(login("192.0.2.8", "pw-alice").starts_with("+OK"));
    // The lockout is temporary (lockout_secs = 2).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = login("192.0.2.7", "pw-alice");
        if answer.starts_with("+OK") {
            break;
        }
        assert!(answer.starts_with("-ERR [LOGIN-DELAY]"), "{answer}");
        assert!(Instant::now() < deadline, "the lockout never ended");
    }
}

#[test]
fn plain_loopback_is_never_locked_out_per_address() {
    let s = TestServer::start_with(Backend::Embedded, |c| {
        c.auth.max_failures_per_ip = 3;
        c.auth.failure_delay_ms = 1;
        c.pop3.max_auth_failures = 10;
    });
    s.user("alice");
    let mut c = s.pop3();
    for i in 0..10 {
        c.cmd(&format!("USER guess{i}@example.com"));
        assert!(c.cmd("PASS wrong").starts_with("-ERR [AUTH]"));
    }
    // Everyone behind a local proxy shares 127.0.0.1: ten failures by one of them must not
    // lock the others out.
    let mut other = s.pop3();
    other.cmd("USER alice@example.com");
    let answer = other.cmd("PASS pw-alice");
    assert!(answer.starts_with("+OK"), "{answer}");
}
