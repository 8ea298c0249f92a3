//! Distributed mode: several Tern nodes on one Cassandra keyspace, and the measured absence of
//! lightweight transactions on the delivery and POP3 paths. Needs the test Cassandra
//! (`scripts/test` starts it); a plain `cargo test` reports these as ignored.

mod common;

use common::*;
use std::process::Command;

fn cluster_config(keyspace: &str) -> tern::config::Config {
    let dir = std::env::temp_dir();
    let mut c = test_config(&dir, Backend::Cassandra);
    c.cassandra.keyspace = keyspace.to_string();
    c
}

#[test]
#[ignore = "needs Cassandra: run scripts/test"]
fn two_nodes_share_one_cluster() {
    let keyspace = fresh_keyspace();
    let a = TestServer::start_config(cluster_config(&keyspace), None);
    let b = TestServer::start_config(cluster_config(&keyspace), None).owning_keyspace();
    a.admin_ok("PUT", &format!("/domains/{DOMAIN}"), None);
    let alice = a.user("alice");
    // Directory changes made on A are seen by B.
    assert_eq!(
        b.admin("GET", &format!("/domains/{DOMAIN}"), None).status,
        204
    );

    let body = message("across nodes", "sent via A, read via B\r\n");
    a.deliver(&[&alice], &body);
    a.deliver(&[&alice], &message("second", "x\r\n"));
    let mut on_b = b.login("alice");
    assert_eq!(on_b.stat().0, 2);
    assert!(on_b.retr(1).ends_with(&body));
    assert!(on_b.cmd("DELE 1").starts_with("+OK"));
    assert!(on_b.quit().starts_with("+OK"));

    let mut on_a = a.login("alice");
    assert_eq!(
        on_a.stat().0,
        1,
        "the deletion made through B is seen through A"
    );
    assert!(String::from_utf8(on_a.retr(1))
        .unwrap()
        .contains("Subject: second"));
    // A mail delivered through B while A's session is open is not in A's snapshot.
    b.deliver(&[&alice], &message("third", "x\r\n"));
    assert_eq!(on_a.stat().0, 1);
    on_a.quit();
    assert_eq!(a.login("alice").stat().0, 2);
}

/// LWT counts of one keyspace's tables (and the node-wide ones, for the log) from Cassandra's
/// JMX metrics, leaving out the outbound queue's shard leases: they are renewed by
/// compare-and-set every few seconds in the background, per shard, never per message.
fn lwt_count(keyspace: &str) -> u64 {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/cassandra/run.sh"
    );
    let out = Command::new("bash")
        .arg(script)
        .args(["cas-count", keyspace])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cas-count failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(text.lines().any(|l| l.starts_with("keyspace ")), "{text}");
    text.lines()
        .filter_map(|l| l.strip_prefix("table "))
        .filter(|l| !l.starts_with("outbound_leases "))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
#[ignore = "needs Cassandra: run scripts/test"]
fn no_lightweight_transaction_on_delivery_and_pop3_paths() {
    let keyspace = fresh_keyspace();
    // Mail for remote.test is relayed (queued, then sent to a sink): the outbound queue is on
    // the SMTP-delivery path too.
    let sink = common::sink::Sink::start(false);
    let config = || {
        let mut c = cluster_config(&keyspace);
        c.smtp.relay_networks = vec!["127.0.0.0/8".parse().unwrap()];
        c.outbound
            .transport
            .insert("remote.test".into(), sink.addr.to_string());
        c
    };
    let a = TestServer::start_config(config(), None);
    let b = TestServer::start_config(config(), None).owning_keyspace();
    a.admin_ok("PUT", &format!("/domains/{DOMAIN}"), None);
    let users: Vec<String> = (0..4).map(|i| a.user(&format!("u{i}"))).collect();
    // Creating a user is the one place that uses an LWT (its INBOX): the counter must see it,
    // or a zero below would prove nothing.
    let before = lwt_count(&keyspace);
    assert!(
        before >= 4,
        "user creation should have counted LWTs, saw {before}"
    );

    let refs: Vec<&str> = users.iter().map(String::as_str).collect();
    for i in 0..20 {
        let node = if i % 2 == 0 { &a } else { &b };
        node.deliver(
            &refs[i % 4..i % 4 + 1],
            &message(&format!("m{i}"), "body\r\n"),
        );
    }
    a.deliver(&refs, &message("to all", "everyone\r\n"));
    let large: Vec<u8> = message("large", &"0123456789abcdef\r\n".repeat(40_000));
    b.deliver(&refs[..1], &large);
    for (i, node) in [&a, &b, &a, &b].into_iter().enumerate() {
        let mut c = node.login(&format!("u{i}"));
        let (n, _) = c.stat();
        c.list();
        c.uidl();
        for m in 1..=n {
            c.retr(m);
        }
        c.multi("TOP 1 0");
        c.cmd("DELE 1");
        c.cmd("RSET");
        c.cmd("DELE 2");
        assert!(c.quit().starts_with("+OK"));
    }
    let mut c = b.login("u0");
    c.stat();
    c.quit();
    for (i, node) in [&a, &b].into_iter().enumerate() {
        let mut c = node.smtp();
        c.ehlo();
        let (code, text) = c.send_mail(
            "app@example.com",
            &["carol@remote.test"],
            &message(&format!("relayed {i}"), "out\r\n"),
        );
        assert_eq!(code, 250, "{text}");
    }
    sink.wait_for(60, "both relayed messages", |m| m.len() == 2);
    let after = lwt_count(&keyspace);
    assert_eq!(
        after, before,
        "lightweight transactions ran during deliveries and POP3 sessions"
    );
}

#[test]
fn unreachable_cassandra_gives_temporary_errors_and_an_unhealthy_healthcheck() {
    let mut config = cluster_config(&fresh_keyspace());
    config.cassandra.contact_points = vec!["127.0.0.1:1".into()];
    config.cassandra.connect_timeout_ms = 200;
    let s = TestServer::launch(config, None);
    let h = s.admin("GET", "/healthcheck", None);
    assert_eq!(h.status, 503, "{}", h.body);
    assert!(
        h.body.contains("\"unhealthy\"") && h.body.contains("Cassandra"),
        "{}",
        h.body
    );

    let mut smtp = s.smtp();
    smtp.ehlo();
    assert_eq!(smtp.cmd("MAIL FROM:<a@remote.test>").0, 250);
    let (code, text) = smtp.cmd("RCPT TO:<alice@example.com>");
    assert_eq!(code, 451, "{text}");
    assert!(text.contains("4.3.0"));

    let mut pop = s.pop3();
    pop.cmd("USER alice@example.com");
    assert!(pop.cmd("PASS pw").starts_with("-ERR [SYS/TEMP]"));
    // The admin API reports the store's state instead of hanging.
    let r = s.admin("PUT", "/domains/example.com", None);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("Cassandra"), "{}", r.body);
}

#[test]
#[ignore = "needs Cassandra: run scripts/test"]
fn cql_over_tls_verifies_the_cluster_certificate() {
    // Trusting the cluster's certificate: everything works over TLS.
    let mut config = cluster_config(&fresh_keyspace());
    config.cassandra.tls_ca_file = Some(cassandra_ca());
    let s = TestServer::start_config(config, None).owning_keyspace();
    s.admin_ok("PUT", &format!("/domains/{DOMAIN}"), None);
    let alice = s.user("alice");
    s.deliver(&[&alice], &message("over cql tls", "x\r\n"));
    assert_eq!(s.login("alice").stat().0, 1);

    // Trusting another certificate: the handshake is refused, the node says so and stays
    // unhealthy rather than falling back to plaintext.
    let other = tempfile::tempdir().unwrap();
    let (wrong_ca, _) = tern::tls::write_self_signed("localhost", other.path()).unwrap();
    let mut config = cluster_config(&fresh_keyspace());
    config.cassandra.tls_ca_file = Some(wrong_ca);
    config.cassandra.connect_timeout_ms = 1000;
    let bad = TestServer::launch(config, None);
    // The node reports the failed handshake once its first attempt is over.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let h = bad.admin("GET", "/healthcheck", None);
        assert_eq!(h.status, 503, "{}", h.body);
        let cause = h.body.to_lowercase();
        if cause.contains("certificate") || cause.contains("tls") {
            assert!(cause.contains("cassandra"), "{}", h.body);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no TLS failure reported: {}",
            h.body
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs Cassandra: run scripts/test"]
fn any_node_answers_for_and_cancels_any_task() {
    let keyspace = fresh_keyspace();
    let a = TestServer::start_config(cluster_config(&keyspace), None);
    let b = TestServer::start_config(cluster_config(&keyspace), None).owning_keyspace();
    a.admin_ok("PUT", &format!("/domains/{DOMAIN}"), None);
    let alice = a.user("alice");
    for i in 0..5 {
        a.deliver(&[&alice], &message(&format!("m{i}"), "x\r\n"));
    }
    // Submitted on A at one entry per second: still running when B is asked about it.
    let r = a.admin(
        "POST",
        "/mailboxes?task=fixPop3Inconsistencies&messagesPerSecond=1",
        None,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let id = v["taskId"].as_str().unwrap().to_string();
    // B sees A's progress (through the store) while the task runs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let seen: serde_json::Value =
            serde_json::from_str(&b.admin_ok("GET", &format!("/tasks/{id}"), None)).unwrap();
        let processed = seen["additionalInformation"]["processedImapUidEntries"]
            .as_u64()
            .unwrap_or(0);
        if processed >= 1 {
            assert_eq!(seen["status"], "inProgress", "{seen}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B never saw progress: {seen}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Cancelled through B, stopped by A.
    assert_eq!(b.admin("DELETE", &format!("/tasks/{id}"), None).status, 204);
    let done: serde_json::Value =
        serde_json::from_str(&a.admin_ok("GET", &format!("/tasks/{id}/await?timeout=30s"), None))
            .unwrap();
    assert_eq!(done["status"], "canceled", "{done}");
}
