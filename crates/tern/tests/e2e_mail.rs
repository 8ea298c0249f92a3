//! End to end: mail sent over real SMTP, fetched over real POP3, on a server on loopback.

#[macro_use]
mod common;

use common::*;

fn auth_plain_login_and_user_pass_succeed_and_fail(b: Backend) {
    let s = TestServer::start(b);
    let alice = s.user("alice");
    let mut c = s.pop3();
    let good = b64(format!("\0{alice}\0pw-alice").as_bytes());
    assert!(c.cmd(&format!("AUTH PLAIN {good}")).starts_with("+OK"));
    c.quit();

    let mut c = s.pop3();
    let bad = b64(format!("\0{alice}\0wrong").as_bytes());
    assert!(c
        .cmd(&format!("AUTH PLAIN {bad}"))
        .starts_with("-ERR [AUTH]"));
    // Continuation form, then a cancellation, then success with LOGIN.
    assert_eq!(c.cmd("AUTH PLAIN"), "+ ");
    assert!(c.cmd(&good).starts_with("+OK"));
    c.quit();

    let mut c = s.pop3();
    assert_eq!(c.cmd("AUTH LOGIN"), "+ VXNlcm5hbWU6");
    assert_eq!(c.cmd("*"), "-ERR authentication cancelled");
    assert_eq!(
        c.cmd(&format!("AUTH LOGIN {}", b64(alice.as_bytes()))),
        "+ UGFzc3dvcmQ6"
    );
    assert!(c.cmd(&b64(b"pw-alice")).starts_with("+OK"));
    c.quit();

    // Unknown user and wrong password answer alike.
    let mut c = s.pop3();
    c.cmd("USER nobody@example.com");
    let unknown = c.cmd("PASS pw-alice");
    c.cmd(&format!("USER {alice}"));
    let wrong = c.cmd("PASS nope");
    assert_eq!(unknown, wrong);
    assert!(unknown.starts_with("-ERR [AUTH]"));
    // The login name is case-insensitive.
    let mut c = s.pop3();
    c.cmd("USER Alice@Example.COM");
    assert!(c.cmd("PASS pw-alice").starts_with("+OK"));
}

fn repeated_failed_logins_close_the_connection(b: Backend) {
    let s = TestServer::start(b);
    s.user("alice");
    let mut c = s.pop3();
    for _ in 0..2 {
        c.cmd("USER alice@example.com");
        assert!(c.cmd("PASS bad").starts_with("-ERR [AUTH]"));
    }
    c.cmd("USER alice@example.com");
    assert!(c.cmd("PASS bad").contains("closing"));
    assert_eq!(c.read_to_close(), "");
}

fn message_is_read_back_byte_exact_and_list_size_matches_retr(b: Backend) {
    let s = TestServer::start(b);
    let alice = s.user("alice");
    let body = message(
        "exact",
        "line one\r\n.starts with a dot\r\n..two dots\r\n.\r\n \r\nend\r\n",
    );
    s.deliver(&[&alice], &body);
    let mut c = s.login("alice");
    let list = c.list();
    assert_eq!(list.len(), 1);
    let got = c.retr(1);
    assert!(got.ends_with(&body), "stored body differs");
    assert!(got.starts_with(
        b"Return-Path: <sender@remote.test>\r\nDelivered-To: alice@example.com\r\nReceived: from client.test"
    ));
    assert_eq!(
        list[0].1,
        got.len() as u64,
        "LIST size must equal RETR octets"
    );
    assert_eq!(c.stat(), (1, got.len() as u64));
    let uidl = c.uidl();
    if b.is_uid() {
        let (validity, uid) = uidl[0].1.split_once('.').unwrap();
        assert!(
            validity.parse::<u64>().unwrap() > 0 && uid.parse::<u64>().unwrap() >= 1,
            "{uidl:?}"
        );
    } else {
        assert_eq!(uidl[0].1.len(), 36);
    }
    assert!(uidl[0].1.chars().all(|ch| ('\x21'..='\x7e').contains(&ch)));
    c.quit();
}

fn fifty_messages_listed_in_order_of_receipt_and_retrieved(b: Backend) {
    let s = TestServer::start(b);
    let alice = s.user("alice");
    for i in 0..50 {
        s.deliver(
            &[&alice],
            &message(&format!("number {i}"), &format!("body {i}\r\n")),
        );
    }
    let mut c = s.login("alice");
    assert_eq!(c.list().len(), 50);
    let uidls = c.uidl();
    let distinct: std::collections::HashSet<_> = uidls.iter().map(|u| &u.1).collect();
    assert_eq!(distinct.len(), 50);
    for i in 1..=50 {
        let m = c.retr(i);
        let text = String::from_utf8(m).unwrap();
        assert!(
            text.contains(&format!("Subject: number {}\r\n", i - 1)),
            "message {i} out of order"
        );
    }
    c.quit();
}

fn attachment_survives_intact(b: Backend) {
    let s = TestServer::start(b);
    let alice = s.user("alice");
    let payload: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let encoded = b64(&payload);
    let mut body = String::from(
        "MIME-Version: 1.0\r\nSubject: attachment\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b1\r\n\
         Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"data.bin\"\r\n\r\n",
    );
    for line in encoded.as_bytes().chunks(76) {
        body.push_str(std::str::from_utf8(line).unwrap());
        body.push_str("\r\n");
    }
    body.push_str("--b1--\r\n");
    s.deliver(&[&alice], body.as_bytes());
    let mut c = s.login("alice");
    let got = String::from_utf8(c.retr(1)).unwrap();
    let start =
        got.find("filename=\"data.bin\"\r\n\r\n").unwrap() + "filename=\"data.bin\"\r\n\r\n".len();
    let end = got.rfind("--b1--").unwrap();
    let b64_text: String = got[start..end].split("\r\n").collect();
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64_text)
        .unwrap();
    assert!(decoded == payload, "attachment bytes differ");
}

fn mail_arriving_during_a_session_is_not_listed_until_the_next(b: Backend) {
    let s = TestServer::start(b);
    let alice = s.user("alice");
    s.deliver(&[&alice], &message("first", "1\r\n"));
    let mut c = s.login("alice");
    assert_eq!(c.stat().0, 1);
    s.deliver(&[&alice], &message("second", "2\r\n"));
    assert_eq!(c.stat().0, 1);
    assert_eq!(c.list().len(), 1);
    assert!(c.cmd("RETR 2").starts_with("-ERR"));
    c.cmd("RSET");
    assert_eq!(c.stat().0, 1, "RSET does not renumber or reload");
    c.quit();
    let mut c = s.login("alice");
    assert_eq!(c.stat().0, 2);
}

fn dele_is_immediate_in_session_rset_cancels_and_quit_applies(b: Backend) {
    let s = TestServer::start(b);
    let alice = s.user("alice");
    for i in 0..3 {
        s.deliver(&[&alice], &message(&format!("m{i}"), "x\r\n"));
    }
    let mut c = s.login("alice");
    let sizes = c.list();
    assert!(c.cmd("DELE 2").starts_with("+OK"));
    assert_eq!(c.stat(), (2, sizes[0].1 + sizes[2].1));
    assert!(c.cmd("RETR 2").starts_with("-ERR"));
    assert!(c.cmd("LIST 2").starts_with("-ERR"));
    assert_eq!(
        c.list().iter().map(|l| l.0).collect::<Vec<_>>(),
        [1, 3],
        "numbers stay stable"
    );
    assert!(c.cmd("RSET").starts_with("+OK"));
    assert_eq!(c.stat().0, 3);
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.quit().starts_with("+OK"));
    let mut c = s.login("alice");
    let left: Vec<String> = (1..=2)
        .map(|i| String::from_utf8(c.retr(i)).unwrap())
        .collect();
    assert!(left[0].contains("Subject: m1") && left[1].contains("Subject: m2"));
}

fn pending_deletions_are_invisible_to_a_concurrent_session(b: Backend) {
    let s = TestServer::start(b);
    let alice = s.user("alice");
    s.deliver(&[&alice], &message("a", "x\r\n"));
    s.deliver(&[&alice], &message("b", "x\r\n"));
    let mut first = s.login("alice");
    assert!(first.cmd("DELE 1").starts_with("+OK"));
    let mut second = s.login("alice");
    assert_eq!(second.stat().0, 2);
    second.quit();
    first.quit();
    let mut third = s.login("alice");
    assert_eq!(third.stat().0, 1);
}

/// A POP3 connection once the server admits one (with `server.max_connections = 1`, only when
/// the previous connection is over), logged in as alice.
fn alice_when_admitted(s: &TestServer) -> Pop3Client {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut c = loop {
        let mut c = Pop3Client::connect_any(s.pop3_addr);
        if c.greeting.starts_with("+OK") {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the previous session never ended: {}",
            c.greeting
        );
        let _ = c.read_to_close();
    };
    c.cmd("USER alice@example.com");
    assert!(c.cmd("PASS pw-alice").starts_with("+OK"));
    c
}

fn dropped_connection_applies_no_deletion(b: Backend) {
    // One connection at a time: a new one is admitted only once the server has finished with
    // the dropped one, which is the evidence that it is done (and applied nothing).
    let s = TestServer::start_with(b, |c| c.server.max_connections = 1);
    let alice = s.user("alice");
    s.deliver(&[&alice], &message("a", "x\r\n"));
    {
        let mut c = alice_when_admitted(&s);
        assert!(c.cmd("DELE 1").starts_with("+OK"));
        // Dropped without QUIT.
    }
    let mut c = alice_when_admitted(&s);
    assert_eq!(c.stat().0, 1);
}

fn top_sends_headers_and_requested_lines(b: Backend) {
    let s = TestServer::start(b);
    let alice = s.user("alice");
    s.deliver(&[&alice], &message("top", "l1\r\n.l2\r\nl3\r\n"));
    let mut c = s.login("alice");
    let (_, top0) = c.multi("TOP 1 0");
    let text = String::from_utf8(top0).unwrap();
    assert!(text.ends_with("Subject: top\r\n\r\n"), "{text}");
    let (_, top2) = c.multi("TOP 1 2");
    assert!(String::from_utf8(top2)
        .unwrap()
        .ends_with("Subject: top\r\n\r\nl1\r\n.l2\r\n"));
    assert!(c.cmd("TOP 1").starts_with("-ERR"));
}

fn twenty_mib_message_round_trips(b: Backend) {
    let s = TestServer::start(b);
    let alice = s.user("alice");
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    let line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-_0123456789\r\n";
    while body.len() < 20 * 1024 * 1024 {
        body.extend_from_slice(line);
        body.extend_from_slice(b".leading dot\r\n");
    }
    s.deliver(&[&alice], &body);
    let mut c = s.login("alice");
    let listed = c.list()[0].1;
    let got = c.retr(1);
    assert_eq!(got.len() as u64, listed);
    assert!(got.ends_with(&body), "20 MiB body differs");
}

fn one_mail_to_fifty_recipients_and_deleting_one_copy(b: Backend) {
    let s = TestServer::start(b);
    let users: Vec<String> = (0..50).map(|i| s.user(&format!("u{i}"))).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    let body = message("to fifty", "hello all\r\n");
    s.deliver(&refs, &body);
    for i in 0..50 {
        let mut c = s.login(&format!("u{i}"));
        assert_eq!(c.stat().0, 1, "u{i}");
        if i == 7 {
            c.cmd("DELE 1");
        }
        c.quit();
    }
    for i in 0..50 {
        let mut c = s.login(&format!("u{i}"));
        if i == 7 {
            assert_eq!(c.stat().0, 0);
        } else {
            assert!(c.retr(1).ends_with(&body), "u{i} lost its copy");
        }
    }
    let mb = s.admin_ok("GET", "/users/u7@example.com/mailboxes", None);
    assert!(mb.contains("\"messageCount\":0"), "{mb}");
    let mb = s.admin_ok("GET", "/users/u8@example.com/mailboxes", None);
    assert!(mb.contains("\"messageCount\":1"), "{mb}");
}

fn unknown_recipient_and_foreign_domain_are_rejected(b: Backend) {
    let s = TestServer::start(b);
    s.user("alice");
    let mut c = s.smtp();
    c.ehlo();
    assert_eq!(c.cmd("MAIL FROM:<a@remote.test>").0, 250);
    let (code, text) = c.cmd("RCPT TO:<nobody@example.com>");
    assert_eq!(code, 550);
    assert!(text.contains("5.1.1"));
    let (code, text) = c.cmd("RCPT TO:<someone@elsewhere.test>");
    assert_eq!(code, 550);
    assert!(text.contains("5.7.1"));
    let (code, _) = c.cmd("DATA");
    assert_eq!(code, 554);
    assert_eq!(c.cmd("RCPT TO:<Alice@EXAMPLE.com>").0, 250);
    // RFC 5321 4.5.1: the bare <postmaster> goes to a served domain's postmaster user.
    assert_eq!(
        c.cmd("RCPT TO:<Postmaster>").0,
        550,
        "no postmaster user yet"
    );
    s.user("postmaster");
    assert_eq!(c.cmd("RCPT TO:<Postmaster>").0, 250);
    c.quit();
}

fn smuggling_attempt_is_rejected_and_nothing_is_delivered(b: Backend) {
    let s = TestServer::start(b);
    let alice = s.user("alice");
    s.user("victim");
    let mut c = s.smtp();
    c.ehlo();
    assert_eq!(c.cmd("MAIL FROM:<a@remote.test>").0, 250);
    assert_eq!(c.cmd(&format!("RCPT TO:<{alice}>")).0, 250);
    assert_eq!(c.cmd("DATA").0, 354);
    // The classic payload: a bare-LF end of data followed by a second, forged transaction.
    c.send_raw(
        b"Subject: innocent\r\n\r\nhello\n.\nMAIL FROM:<admin@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nSubject: forged\r\n\r\nforged\r\n.\r\n",
    );
    let (code, text) = c.reply();
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("bare LF"), "{text}");
    // The session is still in sync: the next command is answered as a command.
    assert_eq!(c.cmd("NOOP").0, 250);
    c.quit();
    assert_eq!(s.login("alice").stat().0, 0);
    assert_eq!(s.login("victim").stat().0, 0);
}

fn size_limit_is_enforced_at_mail_from_and_in_data(b: Backend) {
    let s = TestServer::start_with(b, |c| c.smtp.max_message_size = 10_000);
    let alice = s.user("alice");
    let mut c = s.smtp();
    assert!(c.ehlo().contains("SIZE 10000"));
    let (code, text) = c.cmd("MAIL FROM:<a@remote.test> SIZE=20000");
    assert_eq!(code, 552, "{text}");
    let big = vec![b'x'; 30_000];
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    for chunk in big.chunks(100) {
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    let (code, text) = c.send_mail("a@remote.test", &[&alice], &body);
    assert_eq!(code, 552, "{text}");
    assert_eq!(c.cmd("NOOP").0, 250);
    assert_eq!(s.login("alice").stat().0, 0);
}

fn pipelined_smtp_transaction(b: Backend) {
    let s = TestServer::start(b);
    let alice = s.user("alice");
    let mut c = s.smtp();
    c.send_raw(
        format!("EHLO c\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<{alice}>\r\nDATA\r\nSubject: piped\r\n\r\nbody\r\n.\r\nQUIT\r\n")
            .as_bytes(),
    );
    let codes: Vec<u16> = (0..6).map(|_| c.reply().0).collect();
    assert_eq!(codes, [250, 250, 250, 354, 250, 221]);
    assert_eq!(s.login("alice").stat().0, 1);
}

fn pipelined_pop3_commands_are_answered_in_order(b: Backend) {
    let s = TestServer::start(b);
    let alice = s.user("alice");
    s.deliver(&[&alice], &message("p", "x\r\n"));
    let mut c = s.pop3();
    c.send_raw(
        b"CAPA\r\nUSER alice@example.com\r\nPASS pw-alice\r\nSTAT\r\nRETR 1\r\nNOOP\r\nQUIT\r\n",
    );
    let capa = c.read_multiline();
    assert!(String::from_utf8(capa).unwrap().contains("PIPELINING"));
    assert!(c.line().starts_with("+OK"));
    assert!(c.line().starts_with("+OK maildrop has 1"));
    assert!(c.line().starts_with("+OK 1 "));
    assert!(c.line().starts_with("+OK"));
    assert!(String::from_utf8(c.read_multiline())
        .unwrap()
        .contains("Subject: p"));
    assert_eq!(c.line(), "+OK ");
    assert!(c.line().starts_with("+OK"));
}

fn bad_commands_get_errors_and_the_session_goes_on(b: Backend) {
    let s = TestServer::start(b);
    s.user("alice");
    let mut c = s.login("alice");
    for bad in [
        "RETR",
        "RETR x",
        "RETR 1",
        "DELE 99",
        "TOP 1 x",
        "LIST 0",
        "XYZZY",
        "USER again",
    ] {
        assert!(c.cmd(bad).starts_with("-ERR "), "{bad}");
    }
    // An over-long line is refused without losing sync.
    let long = format!("NOOP {}\r\n", "x".repeat(100_000));
    c.send_raw(long.as_bytes());
    assert!(c.line().starts_with("-ERR line too long"));
    assert_eq!(c.cmd("NOOP"), "+OK ");
    let mut m = s.smtp();
    m.send_raw(format!("NOOP {}\r\n", "y".repeat(100_000)).as_bytes());
    assert_eq!(m.reply().0, 500);
    assert_eq!(m.cmd("NOOP").0, 250);
}

fn idle_pop3_and_smtp_clients_are_logged_out(b: Backend) {
    let s = TestServer::start_with(b, |c| {
        c.pop3.idle_timeout_secs = 1;
        c.smtp.command_timeout_secs = 1;
    });
    let mut c = s.pop3();
    let started = std::time::Instant::now();
    assert!(c.line().starts_with("-ERR autologout"));
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let mut m = s.smtp();
    assert_eq!(m.reply().0, 421);
}

fn graceful_shutdown_answers_idle_sessions_and_finishes_a_message_in_flight(b: Backend) {
    let mut s = TestServer::start(b);
    let alice = s.user("alice");
    let mut idle_pop = s.login("alice");
    let mut idle_smtp = s.smtp();
    idle_smtp.ehlo();
    let mut busy = s.smtp();
    busy.ehlo();
    assert_eq!(busy.cmd("MAIL FROM:<a@remote.test>").0, 250);
    assert_eq!(busy.cmd(&format!("RCPT TO:<{alice}>")).0, 250);
    assert_eq!(busy.cmd("DATA").0, 354);
    busy.send_raw(b"Subject: in flight\r\n\r\nfirst half\r\n");
    let config = s.config.clone();
    let stopper = std::thread::spawn(move || {
        s.stop();
        s
    });
    // The idle sessions are told first (each read waits for its line).
    assert!(idle_pop.line().starts_with("-ERR [SYS/TEMP]"));
    assert_eq!(idle_smtp.reply().0, 421);
    busy.send_raw(b"second half\r\n.\r\n");
    assert_eq!(busy.reply().0, 250, "the message in flight is accepted");
    assert_eq!(
        busy.reply().0,
        421,
        "then the session is told the server is stopping"
    );
    let stopped = stopper.join().unwrap();
    // Restart on the same data: the message accepted during shutdown is there.
    let s2 = TestServer::start_config(config, None);
    assert_eq!(s2.login("alice").stat().0, 1);
    drop(stopped);
}

on_every_backend_and_listing!(
    auth_plain_login_and_user_pass_succeed_and_fail,
    repeated_failed_logins_close_the_connection,
    message_is_read_back_byte_exact_and_list_size_matches_retr,
    fifty_messages_listed_in_order_of_receipt_and_retrieved,
    attachment_survives_intact,
    mail_arriving_during_a_session_is_not_listed_until_the_next,
    dele_is_immediate_in_session_rset_cancels_and_quit_applies,
    pending_deletions_are_invisible_to_a_concurrent_session,
    dropped_connection_applies_no_deletion,
    top_sends_headers_and_requested_lines,
    twenty_mib_message_round_trips,
    one_mail_to_fifty_recipients_and_deleting_one_copy,
    unknown_recipient_and_foreign_domain_are_rejected,
    smuggling_attempt_is_rejected_and_nothing_is_delivered,
    size_limit_is_enforced_at_mail_from_and_in_data,
    pipelined_smtp_transaction,
    pipelined_pop3_commands_are_answered_in_order,
    bad_commands_get_errors_and_the_session_goes_on,
    idle_pop3_and_smtp_clients_are_logged_out,
    graceful_shutdown_answers_idle_sessions_and_finishes_a_message_in_flight,
);
