//! Outbound mail over real sockets: submission with AUTH (STARTTLS and implicit TLS, swaks and
//! curl too), the durable queue, remote delivery through `outbound.transport` to a destination
//! server the test runs (with STARTTLS), retries after 451, bounces (RFC 3464) into the sender's
//! POP3 mailbox, relay refused without AUTH, relay networks, and James's `/mailQueues` routes.

#[macro_use]
mod common;

use common::sink::{free_port, Sink};
use common::*;
use mail_parser::MimeHeaders;
use std::io::BufReader;
use std::time::{Duration, Instant};

/// A server with submission listeners that routes `remote.test` to `destination`.
fn outbound_server(
    b: Backend,
    destination: std::net::SocketAddr,
    adjust: impl FnOnce(&mut tern::config::Config),
) -> (TestServer, tempfile::TempDir) {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = tern::tls::write_self_signed("localhost", certs.path()).unwrap();
    let s = TestServer::start_with(b, |c| {
        c.tls.cert_file = Some(cert);
        c.tls.key_file = Some(key);
        c.smtp.submission_listen = Some("127.0.0.1:0".parse().unwrap());
        c.smtp.submissions_listen = Some("127.0.0.1:0".parse().unwrap());
        c.smtp.loopback_is_secure = false;
        c.outbound
            .transport
            .insert("remote.test".into(), destination.to_string());
        c.outbound.retry_delays_secs = vec![1];
        adjust(c);
    });
    (s, certs)
}

/// Submits over STARTTLS with AUTH PLAIN; returns the final reply.
fn submit(s: &TestServer, certs: &std::path::Path, user: &str, to: &[&str], body: &str) -> String {
    let to: Vec<(&str, &str)> = to.iter().map(|r| (*r, "")).collect();
    submit_with(s, certs, user, "", &to, body)
}

/// Submits with MAIL parameters and per-recipient RCPT parameters (DSN).
fn submit_with(
    s: &TestServer,
    certs: &std::path::Path,
    user: &str,
    mail_params: &str,
    to: &[(&str, &str)],
    body: &str,
) -> String {
    let addr = s.server.as_ref().unwrap().submission_addr.unwrap();
    let mut plain = Lines(BufReader::new(tcp(addr)));
    assert!(plain.line().starts_with("220"));
    plain.send("EHLO client.test\r\n");
    plain.until(|l| &l[3..4] == " ");
    assert!(plain.cmd("STARTTLS").starts_with("220"));
    let tls = tls_wrap(plain.0.into_inner(), &[&certs.join("cert.pem")]);
    let mut c = Lines(BufReader::new(tls));
    c.send("EHLO client.test\r\n");
    c.until(|l| &l[3..4] == " ");
    let auth = format!("\0{user}\0pw-{}", user.split('@').next().unwrap());
    assert!(c
        .cmd(&format!("AUTH PLAIN {}", b64(auth.as_bytes())))
        .starts_with("235"));
    let mail = c.cmd(&format!("MAIL FROM:<{user}>{mail_params}"));
    assert!(mail.starts_with("250"), "{mail}");
    for (r, params) in to {
        let reply = c.cmd(&format!("RCPT TO:<{r}>{params}"));
        assert!(reply.starts_with("250"), "{r}: {reply}");
    }
    assert!(c.cmd("DATA").starts_with("354"));
    let reply = c.cmd(&format!("{body}\r\n."));
    c.cmd("QUIT");
    reply
}

/// Waits until the outgoing queue (James's route) holds `size` mails.
fn wait_queue_size(s: &TestServer, size: u64, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let body = s.admin_ok("GET", "/mailQueues/outgoing", None);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["name"], "outgoing");
        if v["size"].as_u64() == Some(size) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "queue size never reached {size}: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the queue listing (James's route) mentions `needle`, such as a last error.
fn wait_queue_listing_contains(s: &TestServer, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = s.admin_ok("GET", "/mailQueues/outgoing/mails", None);
        if body.contains(needle) {
            return;
        }
        assert!(Instant::now() < deadline, "never saw {needle:?}: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `name`'s mailbox holds `n` messages.
fn wait_mailbox(s: &TestServer, name: &str, n: usize, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let mut c = s.login(name);
        let (count, _) = c.stat();
        c.quit();
        if count >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never got {n} messages");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn submitted_mail_is_relayed_once_retried_and_bounced(b: Backend) {
    let sink = Sink::start(true);
    let (s, certs) = outbound_server(b, sink.addr, |_| {});
    let alice = s.user("alice");
    s.user("bob");
    let reply = submit(
        &s,
        certs.path(),
        &alice,
        &[
            "carol@remote.test",
            "defer@remote.test",
            "reject@remote.test",
            "bob@example.com",
        ],
        "Subject: outbound\r\n\r\nhello world\r\n..dot line",
    );
    assert!(reply.starts_with("250"), "{reply}");
    // The local recipient has it at once, from the local delivery, not the queue.
    wait_mailbox(&s, "bob", 1, 10);
    // carol at once; defer after its 451 and a retry one second later.
    sink.wait_for(30, "carol and defer", |a| {
        let to: Vec<&String> = a.iter().flat_map(|m| &m.recipients).collect();
        to.contains(&&"carol@remote.test".to_string())
            && to.contains(&&"defer@remote.test".to_string())
    });
    wait_queue_size(&s, 0, 30);
    let accepted = sink.accepted();
    for r in ["carol@remote.test", "defer@remote.test"] {
        let n = accepted
            .iter()
            .filter(|m| m.recipients.contains(&r.to_string()))
            .count();
        assert_eq!(n, 1, "{r} got the message {n} times");
    }
    assert!(accepted
        .iter()
        .all(|m| !m.recipients.iter().any(|r| r.starts_with("reject"))));
    let m = &accepted[0];
    assert_eq!(m.sender, alice);
    assert!(m.tls, "opportunistic STARTTLS was used");
    assert_eq!(m.helo, "tern.test");
    let text = String::from_utf8_lossy(&m.data);
    assert!(
        text.contains("with ESMTPSA") && text.contains("\r\nMessage-ID: <"),
        "{text}"
    );
    assert!(
        text.contains("hello world\r\n.dot line\r\n"),
        "dots unstuffed once: {text}"
    );
    // The 550 comes back to alice as a delivery status notification.
    wait_mailbox(&s, "alice", 1, 30);
    let dsn = s.login("alice").retr(1);
    let parsed = mail_parser::MessageParser::default().parse(&dsn).unwrap();
    let ct = parsed.content_type().unwrap();
    assert_eq!(ct.ctype(), "multipart");
    assert_eq!(ct.subtype(), Some("report"));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    let text = String::from_utf8_lossy(&dsn);
    assert!(
        text.contains("From: Mail Delivery System <MAILER-DAEMON@tern.test>"),
        "{text}"
    );
    let status = parsed
        .parts
        .iter()
        .find(|p| {
            p.content_type()
                .is_some_and(|c| c.ctype() == "message" && c.subtype() == Some("delivery-status"))
        })
        .expect("a message/delivery-status part");
    let status = String::from_utf8_lossy(status.contents());
    assert!(status.contains("Reporting-MTA: dns; tern.test"), "{status}");
    assert!(
        status.contains("Final-Recipient: rfc822; reject@remote.test"),
        "{status}"
    );
    assert!(
        status.contains("Action: failed") && status.contains("Status: 5.1.1"),
        "{status}"
    );
    assert!(
        status.contains("Diagnostic-Code: smtp; 550 5.1.1"),
        "{status}"
    );
    assert!(
        !status.contains("carol@") && !status.contains("defer@"),
        "only the failed recipient: {status}"
    );
    assert!(
        text.contains("Subject: outbound"),
        "the original header is returned: {text}"
    );
}

fn relay_needs_auth_or_a_relay_network(b: Backend) {
    let sink = Sink::start(false);
    let (s, _certs) = outbound_server(b, sink.addr, |_| {});
    s.user("alice");
    // Port 25: no relaying for strangers.
    let mut c = s.smtp();
    c.ehlo();
    assert_eq!(c.cmd("MAIL FROM:<x@elsewhere.test>").0, 250);
    let (code, text) = c.cmd("RCPT TO:<carol@remote.test>");
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("5.7.1"), "{text}");
    // Submission: nothing before AUTH.
    let addr = s.server.as_ref().unwrap().submission_addr.unwrap();
    let mut c = SmtpClient::connect(addr);
    c.ehlo();
    let (code, text) = c.cmd("MAIL FROM:<alice@example.com>");
    assert_eq!(code, 530, "{text}");
    drop(s);

    // A relay network (an application server) may send without AUTH on port 25.
    let (s, _certs) = outbound_server(b, sink.addr, |c| {
        c.smtp.relay_networks = vec!["127.0.0.0/8".parse().unwrap()];
    });
    let mut c = s.smtp();
    c.ehlo();
    let (code, text) = c.send_mail(
        "app@example.com",
        &["carol@remote.test"],
        b"Subject: from app\r\n\r\nhi\r\n",
    );
    assert_eq!(code, 250, "{text}");
    sink.wait_for(30, "the relayed message", |a| {
        a.iter().any(|m| m.sender == "app@example.com")
    });
}

fn queue_routes_list_flush_and_delete(b: Backend) {
    // The destination is down; retries are an hour apart, so only a flush brings the mail.
    let down = free_port();
    let (s, certs) = outbound_server(b, down, |c| c.outbound.retry_delays_secs = vec![3600]);
    let alice = s.user("alice");
    assert_eq!(s.admin_ok("GET", "/mailQueues", None), r#"["outgoing"]"#);
    assert_eq!(s.admin("GET", "/mailQueues/spool", None).status, 404);
    for i in 0..3 {
        let to = if i == 2 {
            "dave@remote.test"
        } else {
            "carol@remote.test"
        };
        let reply = submit(
            &s,
            certs.path(),
            &alice,
            &[to],
            &format!("Subject: {i}\r\n\r\nbody {i}"),
        );
        assert!(reply.starts_with("250"), "{reply}");
    }
    wait_queue_size(&s, 3, 10);
    // Each got its first attempt (connection refused) and waits an hour.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mails = loop {
        let body = s.admin_ok("GET", "/mailQueues/outgoing/mails", None);
        let mails: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        if mails.iter().all(|m| m["attempts"] == 1) {
            break mails;
        }
        assert!(
            Instant::now() < deadline,
            "first attempts never made: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(mails[0]["sender"], alice);
    // James's shape: `2026-12-01T10:00:00.000Z`.
    let next = mails[0]["nextDelivery"].as_str().unwrap();
    let pattern = "dddd-dd-ddTdd:dd:dd.dddZ";
    assert_eq!(next.len(), pattern.len(), "{next}");
    for (c, p) in next.chars().zip(pattern.chars()) {
        assert!(if p == 'd' { c.is_ascii_digit() } else { c == p }, "{next}");
    }
    assert!(mails[0]["recipients"].is_array() && mails[0]["name"].is_string());
    assert!(
        mails[0]["lastError"].as_str().unwrap().contains("4.4.1"),
        "{mails:?}"
    );
    let limited = s.admin_ok("GET", "/mailQueues/outgoing/mails?limit=1", None);
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&limited)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.admin("GET", "/mailQueues/outgoing/mails?limit=0", None)
            .status,
        400
    );
    // Delete dave's mail by recipient (a task).
    let task = s.admin(
        "DELETE",
        "/mailQueues/outgoing/mails?recipient=dave@remote.test",
        None,
    );
    assert_eq!(task.status, 201, "{}", task.body);
    let id: serde_json::Value = serde_json::from_str(&task.body).unwrap();
    let done = s.admin_ok(
        "GET",
        &format!("/tasks/{}/await", id["taskId"].as_str().unwrap()),
        None,
    );
    assert!(done.contains(r#""status":"completed""#), "{done}");
    assert!(
        done.contains(r#""initialCount":3"#) && done.contains(r#""remainingCount":2"#),
        "{done}"
    );
    wait_queue_size(&s, 2, 5);
    // A bad flush is refused; the right one makes them due now.
    let bad = s.admin(
        "PATCH",
        "/mailQueues/outgoing?delayed=true",
        Some(r#"{"delayed": true}"#),
    );
    assert_eq!(bad.status, 400);
    let sink = Sink::start_on(down, false);
    let flush = s.admin(
        "PATCH",
        "/mailQueues/outgoing?delayed=true",
        Some(r#"{"delayed": false}"#),
    );
    assert_eq!(flush.status, 204, "{}", flush.body);
    sink.wait_for(30, "both flushed mails", |a| a.len() == 2);
    wait_queue_size(&s, 0, 30);
    assert!(sink
        .accepted()
        .iter()
        .all(|m| m.recipients == vec!["carol@remote.test".to_string()]));
}

/// RFC 3461 on submission: NOTIFY=SUCCESS gets a "relayed" report (the next hop is not asked
/// for DSNs), NOTIFY=NEVER silences a bounce, ENVID and ORCPT come back in the report, and
/// RET=HDRS returns the header only.
fn dsn_parameters_shape_the_reports(b: Backend) {
    let sink = Sink::start(false);
    let (s, certs) = outbound_server(b, sink.addr, |_| {});
    let alice = s.user("alice");
    let reply = submit_with(
        &s,
        certs.path(),
        &alice,
        " RET=HDRS ENVID=order+2B42",
        &[
            (
                "carol@remote.test",
                " NOTIFY=SUCCESS ORCPT=rfc822;carol+40remote.test",
            ),
            ("reject-quiet@remote.test", " NOTIFY=NEVER"),
        ],
        "Subject: dsn\r\n\r\nsecret body",
    );
    assert!(reply.starts_with("250"), "{reply}");
    sink.wait_for(30, "carol's copy", |a| a.len() == 1);
    wait_mailbox(&s, "alice", 1, 30);
    wait_queue_size(&s, 0, 30);
    let mut pop = s.login("alice");
    assert_eq!(
        pop.stat().0,
        1,
        "a report for carol, none for the silenced refusal"
    );
    let report = String::from_utf8_lossy(&pop.retr(1)).to_string();
    assert!(
        report.contains("Original-Envelope-Id: order+42"),
        "{report}"
    );
    assert!(
        report.contains("Final-Recipient: rfc822; carol@remote.test"),
        "{report}"
    );
    assert!(
        report.contains("Original-Recipient: rfc822;carol@remote.test"),
        "{report}"
    );
    assert!(
        report.contains("Action: relayed") && report.contains("Status: 2.0.0"),
        "{report}"
    );
    assert!(
        report.contains("Content-Type: text/rfc822-headers"),
        "{report}"
    );
    assert!(
        report.contains("Subject: dsn") && !report.contains("secret body"),
        "{report}"
    );
    assert!(!report.contains("reject-quiet"), "{report}");
}

on_both_backends!(
    dsn_parameters_shape_the_reports,
    submitted_mail_is_relayed_once_retried_and_bounced,
    relay_needs_auth_or_a_relay_network,
    queue_routes_list_flush_and_delete,
    mx_records_are_followed_by_preference,
    relayhost_gets_everything_with_auth_over_starttls,
    expired_and_looping_mail_bounce,
    bounces_to_remote_senders_are_queued_from_the_null_sender_and_never_bounce,
);

#[test]
fn swaks_and_curl_submit_with_auth_to_a_remote_domain() {
    for tool in ["swaks", "curl"] {
        let found = std::process::Command::new(tool).arg("--version").output();
        assert!(
            found.is_ok(),
            "{tool} is needed for this test (apt-get install {tool})"
        );
    }
    let sink = Sink::start(true);
    let (s, _certs) = outbound_server(Backend::Embedded, sink.addr, |c| {
        c.smtp.loopback_is_secure = true;
    });
    s.user("alice");
    let submission = s.server.as_ref().unwrap().submission_addr.unwrap();
    let submissions = s.server.as_ref().unwrap().submissions_addr.unwrap();
    // swaks over implicit TLS (port-465 role).
    let out = std::process::Command::new("swaks")
        .args([
            "--server",
            &submissions.ip().to_string(),
            "--port",
            &submissions.port().to_string(),
        ])
        .args([
            "--tls-on-connect",
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice@example.com",
        ])
        .args(["--auth-password", "pw-alice", "--from", "alice@example.com"])
        .args([
            "--to",
            "swaks@remote.test",
            "--header",
            "Subject: via swaks",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // curl over the submission port (loopback counts as secure here).
    curl_submit_as_alice(
        submission,
        "curl@remote.test",
        "Subject: via curl\r\n\r\nHi!\r\n",
    );
    sink.wait_for(30, "both submissions", |a| {
        let to: Vec<&String> = a.iter().flat_map(|m| &m.recipients).collect();
        to.contains(&&"swaks@remote.test".to_string())
            && to.contains(&&"curl@remote.test".to_string())
    });
}

/// MX records from a DNS server the test runs: the preferred MX is down, so the next one gets
/// the mail; a domain without MX is reached at its own address (RFC 5321 section 5.1); a domain
/// that does not exist bounces at once.
fn mx_records_are_followed_by_preference(b: Backend) {
    let sink = Sink::start(false);
    // MX hosts are reached on outbound.smtp_port: the sink's. The preferred MX resolves to an
    // address where nothing listens on that port.
    let zone = common::dns::Zone::default()
        .mx("mx.test", 10, "primary.mx.test")
        .mx("mx.test", 20, "backup.mx.test")
        .a("primary.mx.test", "127.0.0.2".parse().unwrap())
        .a("backup.mx.test", "127.0.0.1".parse().unwrap())
        .a("nomx.test", "127.0.0.1".parse().unwrap());
    let dns = zone.serve();
    let (s, certs) = outbound_server(b, sink.addr, |c| {
        c.outbound.transport.clear();
        c.outbound.dns_servers = vec![dns.to_string()];
        c.outbound.smtp_port = sink.addr.port();
        c.outbound.connect_timeout_secs = 5;
    });
    let alice = s.user("alice");
    let reply = submit(
        &s,
        certs.path(),
        &alice,
        &["erin@mx.test", "frank@nomx.test", "gina@nowhere.test"],
        "Subject: via MX\r\n\r\nhi",
    );
    assert!(reply.starts_with("250"), "{reply}");
    sink.wait_for(30, "mail through the backup MX and the A fallback", |a| {
        let to: Vec<&String> = a.iter().flat_map(|m| &m.recipients).collect();
        to.contains(&&"erin@mx.test".to_string()) && to.contains(&&"frank@nomx.test".to_string())
    });
    wait_mailbox(&s, "alice", 1, 30);
    let dsn = String::from_utf8_lossy(&s.login("alice").retr(1)).to_string();
    assert!(
        dsn.contains("Final-Recipient: rfc822; gina@nowhere.test"),
        "{dsn}"
    );
    assert!(dsn.contains("Status: 5.1.2"), "{dsn}");
    wait_queue_size(&s, 0, 30);
}

/// Mail from a domain with a DKIM key leaves signed, and the signature verifies (mail-auth,
/// against the key published in a DNS server the test runs) over the message as received.
#[test]
fn outgoing_mail_is_dkim_signed_and_verifies() {
    use tern::outbound::dkim::{keygen, KeyAlgorithm};
    let keys = tempfile::tempdir().unwrap();
    let (key_file, record) =
        keygen("example.com", "tern1", KeyAlgorithm::Rsa, keys.path()).unwrap();
    let txt = record
        .split_once('"')
        .unwrap()
        .1
        .trim_end_matches('"')
        .to_string();
    let sink = Sink::start(true);
    let (s, certs) = outbound_server(Backend::Embedded, sink.addr, |c| {
        c.outbound.dkim = vec![tern::config::DkimKey {
            domain: "example.com".into(),
            selector: "tern1".into(),
            private_key_file: key_file,
        }];
    });
    let alice = s.user("alice");
    let body = format!(
        "From: Alice <{alice}>\r\nTo: carol@remote.test\r\nSubject: signed\r\n\r\n{}",
        "line of text\r\n".repeat(5000)
    );
    let reply = submit(&s, certs.path(), &alice, &["carol@remote.test"], &body);
    assert!(reply.starts_with("250"), "{reply}");
    sink.wait_for(30, "the signed message", |a| a.len() == 1);
    let data = sink.accepted()[0].data.clone();
    assert!(
        data.starts_with(b"DKIM-Signature: v=1; a=rsa-sha256; s=tern1; d=example.com;"),
        "{}",
        String::from_utf8_lossy(&data[..200])
    );
    let dns = common::dns::Zone::default()
        .txt("tern1._domainkey.example.com", &txt)
        .serve();
    let results = s.block_on(async move {
        use hickory_resolver::config::{
            ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
        };
        let mut udp = ConnectionConfig::udp();
        udp.port = dns.port();
        let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
            dns.ip(),
            true,
            vec![udp],
        )]);
        let authenticator =
            mail_auth::MessageAuthenticator::new(config, ResolverOpts::default()).unwrap();
        let message = mail_auth::AuthenticatedMessage::parse(&data).unwrap();
        authenticator
            .verify_dkim(&message)
            .await
            .iter()
            .map(|r| r.result().clone())
            .collect::<Vec<_>>()
    });
    assert_eq!(results, vec![mail_auth::DkimResult::Pass], "{results:?}");
    // Mail from a domain without a key leaves unsigned.
    let (s2, certs2) = outbound_server(Backend::Embedded, sink.addr, |_| {});
    let bob = s2.user("bob");
    assert!(submit(
        &s2,
        certs2.path(),
        &bob,
        &["dave@remote.test"],
        "Subject: plain\r\n\r\nx"
    )
    .starts_with("250"));
    sink.wait_for(30, "the unsigned message", |a| a.len() == 2);
    assert!(!sink.accepted()[1].data.starts_with(b"DKIM-Signature"));
}

/// A smart host with STARTTLS and AUTH: every remote domain goes there, credentials only
/// inside TLS.
fn relayhost_gets_everything_with_auth_over_starttls(b: Backend) {
    let smart = Sink::start_with(free_port(), true, Some(("tern", "relay-secret")));
    let (s, certs) = outbound_server(b, smart.addr, |c| {
        c.outbound.transport.clear();
        c.outbound.relayhost = Some(smart.addr.to_string());
        c.outbound.relayhost_username = Some("tern".into());
        c.outbound.relayhost_password = Some("relay-secret".into());
    });
    let alice = s.user("alice");
    let reply = submit(
        &s,
        certs.path(),
        &alice,
        &["x@one.test", "y@two.test"],
        "Subject: via smart host\r\n\r\nhi",
    );
    assert!(reply.starts_with("250"), "{reply}");
    smart.wait_for(30, "both recipients at the smart host", |a| {
        a.iter().flat_map(|m| &m.recipients).count() == 2
    });
    let a = smart.accepted();
    assert!(
        a.iter().all(|m| m.tls && m.auth.as_deref() == Some("tern")),
        "{a:?}"
    );
    wait_queue_size(&s, 0, 30);
}

/// `outbound.tls = "required"`: a server without STARTTLS gets nothing, and the mail waits
/// with the reason shown in the queue.
#[test]
fn required_tls_keeps_mail_from_a_server_without_starttls() {
    let plain = Sink::start(false);
    let (s, certs) = outbound_server(Backend::Embedded, plain.addr, |c| {
        c.outbound.tls = tern::config::OutboundTls::Required;
        c.outbound.retry_delays_secs = vec![3600];
    });
    let alice = s.user("alice");
    assert!(submit(
        &s,
        certs.path(),
        &alice,
        &["carol@remote.test"],
        "Subject: secret\r\n\r\nx"
    )
    .starts_with("250"));
    wait_queue_listing_contains(&s, "TLS required");
    assert!(plain.accepted().is_empty());
}

/// Mail that cannot be delivered before `max_queue_lifetime_secs` bounces with 4.4.7; mail that
/// loops (more than 30 Received headers) bounces with 5.4.6 without being sent.
fn expired_and_looping_mail_bounce(b: Backend) {
    let down = free_port();
    let (s, certs) = outbound_server(b, down, |c| {
        c.outbound.max_queue_lifetime_secs = 2;
    });
    let alice = s.user("alice");
    assert!(submit(
        &s,
        certs.path(),
        &alice,
        &["carol@remote.test"],
        "Subject: too late\r\n\r\nx"
    )
    .starts_with("250"));
    wait_mailbox(&s, "alice", 1, 30);
    let report = String::from_utf8_lossy(&s.login("alice").retr(1)).to_string();
    assert!(
        report.contains("Status: 4.4.7") && report.contains("Action: failed"),
        "{report}"
    );
    assert!(
        report.contains("4.4.1"),
        "the last error is given: {report}"
    );
    let received = "Received: from a by b; Tue, 1 Dec 2026 10:00:00 +0000\r\n".repeat(31);
    let sink = Sink::start(false);
    let (s2, certs2) = outbound_server(b, sink.addr, |_| {});
    let bob = s2.user("bob");
    assert!(submit(
        &s2,
        certs2.path(),
        &bob,
        &["carol@remote.test"],
        &format!("{received}Subject: loop\r\n\r\nx")
    )
    .starts_with("250"));
    wait_mailbox(&s2, "bob", 1, 30);
    let report = String::from_utf8_lossy(&s2.login("bob").retr(1)).to_string();
    assert!(
        report.contains("Status: 5.4.6") && report.contains("routing loop"),
        "{report}"
    );
    assert!(sink.accepted().is_empty(), "a looping message is not sent");
}

/// A bounce for a remote sender goes back through the queue from `<>`; a bounce that cannot be
/// delivered is dropped, never bounced again.
fn bounces_to_remote_senders_are_queued_from_the_null_sender_and_never_bounce(b: Backend) {
    let sink = Sink::start(false);
    let (s, _certs) = outbound_server(b, sink.addr, |c| {
        c.smtp.relay_networks = vec!["127.0.0.0/8".parse().unwrap()];
    });
    let mut c = s.smtp();
    c.ehlo();
    // The application's address is on remote.test too: its bounce goes to the sink.
    let (code, text) = c.send_mail(
        "app@remote.test",
        &["reject1@remote.test"],
        b"Subject: a\r\n\r\nx\r\n",
    );
    assert_eq!(code, 250, "{text}");
    sink.wait_for(30, "the bounce to the application", |a| a.len() == 1);
    let bounce = &sink.accepted()[0];
    assert_eq!(bounce.sender, "", "bounces come from the null sender");
    assert_eq!(bounce.recipients, vec!["app@remote.test".to_string()]);
    assert!(String::from_utf8_lossy(&bounce.data)
        .contains("Final-Recipient: rfc822; reject1@remote.test"));
    // Its sender refuses the report: nothing more is sent, and the queue empties.
    let (code, text) = c.send_mail(
        "reject-app@remote.test",
        &["reject2@remote.test"],
        b"Subject: b\r\n\r\nx\r\n",
    );
    assert_eq!(code, 250, "{text}");
    wait_queue_size(&s, 0, 30);
    let attempts = sink
        .state
        .lock()
        .unwrap()
        .attempts
        .get("reject-app@remote.test")
        .copied();
    assert_eq!(attempts, Some(1), "the report was tried once");
    assert_eq!(sink.accepted().len(), 1, "no bounce of a bounce");
}

/// With `outbound.relayhost_ca_file` the smart host's certificate is checked (it receives the
/// credentials): the right CA delivers, another one keeps the mail queued.
#[test]
fn relayhost_certificate_is_verified_when_a_ca_is_given() {
    let smart = Sink::start_with(free_port(), true, Some(("tern", "relay-secret")));
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.pem");
    std::fs::write(&good, smart.cert_pem.as_ref().unwrap()).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, other.cert.pem()).unwrap();
    for (ca, delivered) in [(bad, false), (good, true)] {
        let (s, certs) = outbound_server(Backend::Embedded, smart.addr, |c| {
            c.outbound.transport.clear();
            c.outbound.relayhost = Some(smart.addr.to_string());
            c.outbound.relayhost_username = Some("tern".into());
            c.outbound.relayhost_password = Some("relay-secret".into());
            c.outbound.relayhost_ca_file = Some(ca.clone());
            c.outbound.retry_delays_secs = vec![3600];
        });
        let alice = s.user("alice");
        let before = smart.accepted().len();
        assert!(submit(
            &s,
            certs.path(),
            &alice,
            &["x@one.test"],
            "Subject: verified\r\n\r\nhi"
        )
        .starts_with("250"));
        if delivered {
            smart.wait_for(30, "the message over verified TLS", |a| {
                a.len() == before + 1
            });
            assert!(smart.accepted().last().unwrap().tls);
        } else {
            wait_queue_listing_contains(&s, "TLS handshake");
            assert_eq!(
                smart.accepted().len(),
                before,
                "nothing sent to an unverified host"
            );
        }
    }
}
