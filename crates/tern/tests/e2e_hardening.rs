//! Regression tests for the hardening issue, over real sockets: a body being received survives
//! a collection that ignores age, trickling clients meet deadlines, guessing recipients ends the
//! session, EHLO arguments are checked, NOOP before login is an error.

#[macro_use]
mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::Value;
use std::io::Read;
use std::time::{Duration, Instant};

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Runs the unreferenced-body collector with no grace period and returns its report.
fn collect_now(s: &TestServer) -> Value {
    let r = s.admin("DELETE", "/blobs?scope=unreferenced&graceMinutes=0", None);
    assert_eq!(r.status, 201, "{}", r.body);
    let id = json(&r.body)["taskId"].as_str().unwrap().to_string();
    json(&s.admin_ok("GET", &format!("/tasks/{id}/await?timeout=60s"), None))
}

/// The data-loss report: a collection with `graceMinutes=0` while a ~700 KB DATA was arriving
/// removed the body; DATA was answered 250 and the message was gone.
fn a_body_being_received_survives_the_collector(b: Backend) {
    let s = TestServer::start(b);
    let alice = s.user("alice");
    let body = message(
        "big",
        &"0123456789abcdefghijklmnopqrstuvwxyz\r\n".repeat(20_000),
    );
    let stuffed = stuff(&body);
    let (first, rest) = stuffed.split_at(stuffed.len() / 2);
    let mut c = s.smtp();
    c.ehlo();
    assert_eq!(c.cmd("MAIL FROM:<bob@remote.test>").0, 250);
    assert_eq!(c.cmd(&format!("RCPT TO:<{alice}>")).0, 250);
    assert_eq!(c.cmd("DATA").0, 354);
    c.send_raw(first);
    // Half of the body is on its way to the store; wait until it has a body there, then
    // collect with no grace period.
    let mail = s.mail_store();
    let deadline = Instant::now() + Duration::from_secs(30);
    while s
        .block_on(async { mail.all_bodies().next().await })
        .transpose()
        .unwrap()
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the body never reached the store"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let report = collect_now(&s);
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(
        report["additionalInformation"]["gcedBlobCount"], 0,
        "{report}"
    );
    c.send_raw(rest);
    c.send_raw(b".\r\n");
    let (code, text) = c.reply();
    assert_eq!(code, 250, "{text}");
    // After delivery the body is referenced: still never collected.
    let report = collect_now(&s);
    assert_eq!(
        report["additionalInformation"]["gcedBlobCount"], 0,
        "{report}"
    );
    let got = s.login("alice").retr(1);
    assert!(got.ends_with(&body), "the message came back whole");
}

fn guessing_recipients_ends_the_session(b: Backend) {
    let s = TestServer::start(b);
    let mut c = s.smtp();
    c.ehlo();
    assert_eq!(c.cmd("MAIL FROM:<bob@remote.test>").0, 250);
    let mut refused = 0;
    let closing = loop {
        let (code, text) = c.cmd(&format!("RCPT TO:<guess{refused}@example.com>"));
        if text.contains("Too many errors") {
            break text;
        }
        assert_eq!(code, 550, "{text}");
        refused += 1;
        assert!(
            refused < 100,
            "60 unknown recipients never closed the session"
        );
    };
    assert_eq!(
        refused, 20,
        "the 20th refusal closes (smtp.max_errors = 20): {closing}"
    );
    assert!(closing.contains("421"), "{closing}");
}

on_both_backends!(
    a_body_being_received_survives_the_collector,
    guessing_recipients_ends_the_session,
);

#[test]
fn ehlo_with_control_characters_is_refused_not_echoed() {
    let s = TestServer::start(Backend::Embedded);
    let mut c = s.smtp();
    c.send_raw(b"EHLO evil\x00\x1b[2J\r\n");
    let (code, text) = c.reply();
    assert_eq!(code, 501, "{text}");
    assert!(!text.contains('\u{1b}') && !text.contains('\0'), "{text:?}");
    assert_eq!(c.cmd("MAIL FROM:<a@b.test>").0, 503, "no HELO was recorded");
    c.ehlo();
}

#[test]
fn trickled_commands_and_data_meet_their_deadlines() {
    let s = TestServer::start_with(Backend::Embedded, |c| {
        c.smtp.command_timeout_secs = 2;
        c.smtp.data_timeout_secs = 2;
        c.smtp.data_deadline_secs = 3;
        c.pop3.idle_timeout_secs = 2;
    });
    let trickle = |c: &mut SmtpClient, what: &[u8]| -> (Duration, String) {
        // One byte every 300 ms: every read arrives well within the per-read timeout.
        let started = Instant::now();
        for &byte in what.iter().cycle() {
            if c.w.write_all_checked(&[byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
            if started.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
        let mut rest = String::new();
        let _ = c.r.read_to_string(&mut rest);
        (started.elapsed(), rest)
    };
    let mut c = s.smtp();
    let (took, said) = trickle(&mut c, b"NOOP NOOP NOOP NOOP ");
    assert!(said.contains("421 4.4.2"), "{said}");
    assert!(
        took < Duration::from_secs(30),
        "a trickled command held the connection {took:?}"
    );

    let mut c = s.smtp();
    c.ehlo();
    assert_eq!(c.cmd("MAIL FROM:<bob@remote.test>").0, 250);
    s.user("alice");
    assert_eq!(c.cmd("RCPT TO:<alice@example.com>").0, 250);
    assert_eq!(c.cmd("DATA").0, 354);
    let (took, said) = trickle(&mut c, b"Subject: slow\r\n");
    assert!(said.contains("421 4.4.2"), "{said}");
    assert!(
        took < Duration::from_secs(30),
        "a trickled DATA held the connection {took:?}"
    );

    let mut p = s.pop3();
    let started = Instant::now();
    for &byte in b"CAPACAPACAPACAPACAPA".iter().cycle() {
        if p.w.write_all_checked(&[byte]).is_err() || started.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut rest = String::new();
    let _ = p.r.read_to_string(&mut rest);
    assert!(rest.starts_with("-ERR"), "{rest}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn noop_before_login_is_an_error() {
    let s = TestServer::start(Backend::Embedded);
    let mut c = s.pop3();
    assert!(c.cmd("NOOP").starts_with("-ERR"));
    c.cmd("USER a@example.com");
    s.user("alice");
    let mut c = s.login("alice");
    assert_eq!(c.cmd("NOOP"), "+OK ");
}
