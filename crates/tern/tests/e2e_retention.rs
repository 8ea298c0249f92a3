//! Retention end to end: CAPA's EXPIRE (RFC 2449) from the policy, before and after login, and
//! James's `DELETE /messages?olderThan=` task deleting the old messages a POP3 client then no
//! longer sees, the recent ones kept.

#[macro_use]
mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

fn capa(c: &mut Pop3Client) -> String {
    let (status, body) = c.multi("CAPA");
    assert!(status.starts_with("+OK"), "{status}");
    String::from_utf8(body).unwrap()
}

fn old_messages_expire(b: Backend) {
    let s = TestServer::start_with(b, |c| {
        c.pop3.expire_days = Some(30);
        c.pop3
            .expire_days_per_domain
            .insert("example.com".into(), 7);
    });
    s.user("alice");
    s.user("bob");
    // Before login the default, marked as per user; after, the user's own.
    let mut c = s.pop3();
    assert!(capa(&mut c).contains("EXPIRE 30 USER\r\n"));
    c.cmd("USER alice@example.com");
    assert!(c.cmd("PASS pw-alice").starts_with("+OK"));
    assert!(capa(&mut c).contains("EXPIRE 7\r\n"));
    c.quit();

    // An old message (aged past the threshold by waiting for the clock) and a recent one.
    s.deliver(
        &["alice@example.com", "bob@example.com"],
        &message("old", "x\r\n"),
    );
    let old_enough = Instant::now() + Duration::from_secs(6);
    while Instant::now() < old_enough {
        std::thread::sleep(Duration::from_millis(200));
    }
    s.deliver(&["alice@example.com"], &message("recent", "y\r\n"));
    assert_eq!(s.login("alice").stat().0, 2);
    for bad in [
        "olderThan=0d",
        "olderThan=soon",
        "olderThan=30d&mailbox=Archived",
        "byExpiresHeader",
    ] {
        assert_eq!(
            s.admin("DELETE", &format!("/messages?{bad}"), None).status,
            400,
            "{bad}"
        );
    }
    assert_eq!(
        s.admin(
            "DELETE",
            "/messages?olderThan=3s&user=nobody@example.com",
            None
        )
        .status,
        404
    );
    let r = s.admin(
        "DELETE",
        "/messages?olderThan=3s&user=alice@example.com&usersPerSecond=50",
        None,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = serde_json::from_str::<Value>(&r.body).unwrap()["taskId"]
        .as_str()
        .unwrap()
        .to_string();
    let task: Value =
        serde_json::from_str(&s.admin_ok("GET", &format!("/tasks/{id}/await?timeout=60s"), None))
            .unwrap();
    assert_eq!(task["type"], "ExpireMailboxTask");
    let info = &task["additionalInformation"];
    assert_eq!(info["type"], "ExpireMailboxTask");
    assert_eq!(
        (
            info["mailboxesProcessed"].clone(),
            info["mailboxesExpired"].clone(),
            info["mailboxesFailed"].clone(),
            info["messagesDeleted"].clone()
        ),
        (1.into(), 1.into(), 0.into(), 1.into())
    );
    let mut alice = s.login("alice");
    assert_eq!(alice.stat().0, 1, "the old message is gone");
    assert!(String::from_utf8(alice.retr(1))
        .unwrap()
        .contains("Subject: recent"));
    assert_eq!(s.login("bob").stat().0, 1, "only alice was asked for");
}

on_both_backends!(old_messages_expire);
