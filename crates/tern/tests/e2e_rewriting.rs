//! Recipient rewriting end to end: James's routes for aliases, groups, forwards, domain aliases
//! and mappings (shapes and error codes from webadmin.adoc), and mail sent over SMTP reaching
//! the rewritten recipients, local ones in their POP3 mailboxes and remote ones (a group member,
//! a forward) through the outbound queue at a destination server the test runs.

#[macro_use]
mod common;

use common::sink::{server_with_remote_sink, Sink};
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn get_json(s: &TestServer, path: &str) -> Value {
    serde_json::from_str(&s.admin_ok("GET", path, None)).unwrap()
}

fn status(s: &TestServer, method: &str, path: &str) -> u16 {
    s.admin(method, path, None).status
}

fn wait_count(s: &TestServer, user: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (count, _) = s.login(user).stat();
        if count >= n {
            assert_eq!(count, n, "{user} got more than {n}");
            return;
        }
        assert!(Instant::now() < deadline, "{user} has {count} of {n}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn rewriting_routes_and_delivery(b: Backend) {
    let (sink, s) = server_with_remote_sink(b);
    s.user("alice");
    s.user("bob");

    // Aliases.
    assert_eq!(
        status(
            &s,
            "PUT",
            "/address/aliases/alice@example.com/sources/info@example.com"
        ),
        204
    );
    assert_eq!(
        get_json(&s, "/address/aliases"),
        json!(["alice@example.com"])
    );
    assert_eq!(
        get_json(&s, "/address/aliases/alice@example.com"),
        json!([{"source": "info@example.com"}])
    );
    assert_eq!(
        status(
            &s,
            "PUT",
            "/address/aliases/alice@example.com/sources/bob@example.com"
        ),
        409,
        "a user is no alias"
    );
    assert_eq!(
        status(
            &s,
            "PUT",
            "/address/aliases/alice@example.com/sources/alice@example.com"
        ),
        400
    );
    assert_eq!(
        status(
            &s,
            "PUT",
            "/address/aliases/alice@example.com/sources/x@unknown.test"
        ),
        400
    );
    assert_eq!(
        status(
            &s,
            "PUT",
            "/address/aliases/alice@example.com/sources/not-an-address"
        ),
        400
    );
    assert_eq!(
        get_json(&s, "/users/alice@example.com/allowedFromHeaders"),
        json!(["alice@example.com", "info@example.com"])
    );
    assert_eq!(
        status(&s, "GET", "/users/nobody@example.com/allowedFromHeaders"),
        404
    );

    // Groups, with a remote member.
    for m in ["bob@example.com", "alice@example.com", "carol@remote.test"] {
        assert_eq!(
            status(&s, "PUT", &format!("/address/groups/team@example.com/{m}")),
            204
        );
    }
    assert_eq!(get_json(&s, "/address/groups"), json!(["team@example.com"]));
    assert_eq!(
        get_json(&s, "/address/groups/team@example.com"),
        json!(["alice@example.com", "bob@example.com", "carol@remote.test"])
    );
    assert_eq!(status(&s, "GET", "/address/groups/none@example.com"), 404);
    assert_eq!(
        status(
            &s,
            "PUT",
            "/address/groups/bob@example.com/alice@example.com"
        ),
        409
    );
    assert_eq!(
        status(
            &s,
            "PUT",
            "/address/groups/g@unknown.test/alice@example.com"
        ),
        400
    );

    // Forwards: bob keeps a copy and sends one to dave.
    for t in ["bob@example.com", "dave@remote.test"] {
        assert_eq!(
            status(
                &s,
                "PUT",
                &format!("/address/forwards/bob@example.com/targets/{t}")
            ),
            204
        );
    }
    assert_eq!(
        get_json(&s, "/address/forwards"),
        json!(["bob@example.com"])
    );
    assert_eq!(
        get_json(&s, "/address/forwards/bob@example.com"),
        json!([{"mailAddress": "bob@example.com"}, {"mailAddress": "dave@remote.test"}])
    );
    assert_eq!(
        status(
            &s,
            "PUT",
            "/address/forwards/nobody@example.com/targets/bob@example.com"
        ),
        404
    );
    assert_eq!(
        status(&s, "GET", "/address/forwards/alice@example.com"),
        404
    );

    // A loop is refused (409) and leaves nothing behind.
    assert_eq!(
        status(
            &s,
            "POST",
            "/mappings/address/x@example.com/targets/y@example.com"
        ),
        204
    );
    assert_eq!(
        status(
            &s,
            "POST",
            "/mappings/address/y@example.com/targets/x@example.com"
        ),
        409
    );
    assert_eq!(get_json(&s, "/mappings/user/y@example.com"), json!([]));
    assert_eq!(
        status(
            &s,
            "DELETE",
            "/mappings/address/x@example.com/targets/y@example.com"
        ),
        204
    );

    // Domain aliases.
    assert_eq!(
        status(&s, "PUT", "/domains/example.com/aliases/old.example"),
        204
    );
    assert_eq!(
        get_json(&s, "/domains/example.com/aliases"),
        json!([{"source": "old.example"}])
    );
    assert_eq!(
        status(&s, "PUT", "/domains/unknown.test/aliases/old2.example"),
        404
    );
    assert_eq!(
        status(&s, "PUT", "/domains/example.com/aliases/example.com"),
        400
    );

    // Domain mappings (James's /domainMappings: the destination in the body).
    let mapped = s.admin("PUT", "/domainMappings/mapped.example", Some("example.com"));
    assert_eq!(mapped.status, 204, "{}", mapped.body);
    assert_eq!(
        get_json(&s, "/domainMappings"),
        json!({"mapped.example": ["example.com"]})
    );
    assert_eq!(
        get_json(&s, "/domainMappings/mapped.example"),
        json!(["example.com"])
    );
    assert_eq!(status(&s, "GET", "/domainMappings/none.example"), 404);
    assert_eq!(
        s.admin(
            "PUT",
            "/domainMappings/mapped.example",
            Some("not a domain")
        )
        .status,
        400
    );

    // The whole table, James's shape.
    let all = get_json(&s, "/mappings");
    assert_eq!(
        all["info@example.com"],
        json!([{"type": "Alias", "mapping": "alice@example.com"}])
    );
    assert_eq!(
        all["old.example"],
        json!([{"type": "DomainAlias", "mapping": "example.com"}])
    );
    assert_eq!(all["team@example.com"].as_array().unwrap().len(), 3);
    assert_eq!(
        get_json(&s, "/mappings/user/bob@example.com"),
        json!([{"type": "Forward", "mapping": "bob@example.com"}, {"type": "Forward", "mapping": "dave@remote.test"}])
    );
    assert_eq!(
        get_json(&s, "/mappings/sources/alice@example.com?type=group"),
        json!(["team@example.com"])
    );
    assert_eq!(
        status(&s, "GET", "/mappings/sources/alice@example.com"),
        400
    );

    // Mail from a stranger on port 25 (no relay rights): rewriting decides where it goes.
    s.deliver(&["info@example.com"], &message("to info", "x\r\n"));
    s.deliver(&["team@example.com"], &message("to team", "x\r\n"));
    s.deliver(&["alice@old.example"], &message("to old domain", "x\r\n"));
    s.deliver(
        &["alice@mapped.example"],
        &message("to mapped domain", "x\r\n"),
    );
    wait_count(&s, "alice", 4);
    wait_count(&s, "bob", 1);
    sink.wait_for(30, "carol (group) and dave (forward)", |a| {
        let to: Vec<&String> = a.iter().flat_map(|m| &m.recipients).collect();
        to.contains(&&"carol@remote.test".to_string())
            && to.contains(&&"dave@remote.test".to_string())
    });
    assert!(sink
        .accepted()
        .iter()
        .all(|m| String::from_utf8_lossy(&m.data).contains("Subject: to team")));
    // Strangers still cannot send to remote addresses directly.
    let mut c = s.smtp();
    c.ehlo();
    c.cmd("MAIL FROM:<x@elsewhere.test>");
    assert_eq!(c.cmd("RCPT TO:<carol@remote.test>").0, 550);

    // A loop that got into the table anyway is refused at RCPT.
    use tern_store::{Mapping, MappingKind};
    let store = s.mail_store();
    s.block_on(async {
        store
            .add_mapping(
                "p@example.com",
                &Mapping::new(MappingKind::Address, "q@example.com"),
            )
            .await
            .unwrap();
        store
            .add_mapping(
                "q@example.com",
                &Mapping::new(MappingKind::Address, "p@example.com"),
            )
            .await
            .unwrap();
    });
    let (code, text) = c.cmd("RCPT TO:<p@example.com>");
    assert_eq!(code, 550, "{text}");
    assert!(text.contains("5.4.6"), "{text}");

    // Removals.
    assert_eq!(
        status(
            &s,
            "DELETE",
            "/address/aliases/alice@example.com/sources/info@example.com"
        ),
        204
    );
    assert_eq!(get_json(&s, "/address/aliases"), json!([]));
    assert_eq!(status(&s, "DELETE", "/address/groups"), 204);
    assert_eq!(get_json(&s, "/address/groups"), json!([]));
    assert_eq!(
        status(&s, "DELETE", "/domains/example.com/aliases/old.example"),
        204
    );
    let (code, _) = c.cmd("RCPT TO:<info@example.com>");
    assert_eq!(code, 550, "the alias is gone");
    let gone = s.admin(
        "DELETE",
        "/domainMappings/mapped.example",
        Some("example.com"),
    );
    assert_eq!(gone.status, 204);
    assert_eq!(get_json(&s, "/domainMappings"), json!({}));
    assert_eq!(c.cmd("RCPT TO:<alice@mapped.example>").0, 550);
}

/// Forwarded mail leaves with an SRS sender of ours (so SPF passes at the next hop); a bounce to
/// that address goes back to the original sender; a forged one is refused.
fn forwards_leave_with_srs_and_bounces_come_back(b: Backend) {
    let sink = Sink::start(false);
    let s = TestServer::start_with(b, |c| {
        for d in ["remote.test", "elsewhere.test"] {
            c.outbound.transport.insert(d.into(), sink.addr.to_string());
        }
        c.outbound.srs_secret = Some("a shared secret for srs".into());
        c.outbound.srs_domain = Some("fwd.example.com".into());
    });
    s.user("bob");
    assert_eq!(
        status(
            &s,
            "PUT",
            "/address/forwards/bob@example.com/targets/dave@remote.test"
        ),
        204
    );
    s.deliver(&["bob@example.com"], &message("forwarded", "x\r\n"));
    sink.wait_for(30, "the forwarded copy", |a| a.len() == 1);
    let srs_sender = sink.accepted()[0].sender.clone();
    assert!(
        srs_sender.starts_with("SRS0=")
            && srs_sender.ends_with("=remote.test=sender@fwd.example.com"),
        "{srs_sender}"
    );
    // dave's server bounces it: the bounce reaches the original sender, from <>.
    let mut c = s.smtp();
    c.ehlo();
    assert_eq!(c.cmd("MAIL FROM:<>").0, 250);
    let (code, text) = c.cmd(&format!("RCPT TO:<{srs_sender}>"));
    assert_eq!(code, 250, "{text}");
    assert_eq!(c.cmd("DATA").0, 354);
    c.send_raw(b"Subject: undeliverable\r\n\r\nbounce\r\n.\r\n");
    assert_eq!(c.reply().0, 250);
    sink.wait_for(30, "the bounce at the original sender", |a| {
        a.iter()
            .any(|m| m.recipients == vec!["sender@remote.test".to_string()])
    });
    // A forged or altered SRS address is refused.
    assert_eq!(c.cmd("MAIL FROM:<>").0, 250);
    let forged = srs_sender.replacen("=sender@", "=victim@", 1);
    assert_eq!(c.cmd(&format!("RCPT TO:<{forged}>")).0, 550);
}

/// Each local copy starts with the Delivered-To of its user (counted in its size); a forwarded
/// copy leaves with the Delivered-To of the forwarding address, so that when a forward at the
/// other end sends it back, the loop is seen: 554 5.4.6 for that recipient alone.
fn delivered_to_marks_copies_and_stops_forwarding_loops(b: Backend) {
    let (sink, s) = server_with_remote_sink(b);
    s.user("alice");
    s.user("bob");
    let alias = "/address/aliases/alice@example.com/sources/info@example.com";
    assert_eq!(status(&s, "PUT", alias), 204);
    let forward = "/address/forwards/bob@example.com/targets/dave@remote.test";
    assert_eq!(status(&s, "PUT", forward), 204);
    s.deliver(&["info@example.com"], &message("to the alias", "x\r\n"));
    let mut alice = s.login("alice");
    let copy = alice.retr(1);
    assert!(
        copy.starts_with(
            b"Return-Path: <sender@remote.test>\r\nDelivered-To: alice@example.com\r\nReceived: "
        ),
        "{}",
        String::from_utf8_lossy(&copy)
    );
    assert_eq!(
        alice.list(),
        vec![(1, copy.len() as u64)],
        "LIST counts the header"
    );
    alice.quit();

    s.deliver(&["bob@example.com"], &message("forwarded", "y\r\n"));
    sink.wait_for(30, "the forwarded copy", |a| a.len() == 1);
    let forwarded = sink.accepted()[0].data.clone();
    assert!(
        forwarded.starts_with(b"Delivered-To: bob@example.com\r\n"),
        "{}",
        String::from_utf8_lossy(&forwarded)
    );
    // dave forwards it back to bob: a loop. Alone, it is refused; beside another recipient,
    // the other gets it.
    let mut c = s.smtp();
    c.ehlo();
    assert_eq!(c.cmd("MAIL FROM:<sender@remote.test>").0, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@example.com>").0, 250);
    assert_eq!(c.cmd("DATA").0, 354);
    c.send_raw(&stuff(&forwarded));
    c.send_raw(b".\r\n");
    let (code, text) = c.reply();
    assert!(code == 554 && text.contains("5.4.6 Mail loop"), "{text}");
    let (code, text) = c.send_mail(
        "sender@remote.test",
        &["bob@example.com", "alice@example.com"],
        &forwarded,
    );
    assert_eq!(code, 250, "{text}");
    wait_count(&s, "alice", 2);
    assert_eq!(sink.accepted().len(), 1, "the loop went no further");
    assert_eq!(s.login("bob").stat().0, 0);
}

on_both_backends!(
    delivered_to_marks_copies_and_stops_forwarding_loops,
    rewriting_routes_and_delivery,
    forwards_leave_with_srs_and_bounces_come_back,
);
