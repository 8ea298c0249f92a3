//! Quotas end to end: James's `/quota` routes (global, domain, user; count and size; -1 and
//! null), enforcement over SMTP (452 4.2.2 at RCPT when full, 552 5.2.2 at the end of DATA when
//! the message would not fit), POP3 deletions releasing usage, and the recompute task.

#[macro_use]
mod common;

use common::*;
use serde_json::{json, Value};

fn get_json(s: &TestServer, path: &str) -> Value {
    serde_json::from_str(&s.admin_ok("GET", path, None)).unwrap()
}

fn put(s: &TestServer, path: &str, body: &str) -> u16 {
    s.admin("PUT", path, Some(body)).status
}

fn quotas_are_administered_and_enforced(b: Backend) {
    let s = TestServer::start(b);
    let alice = s.user("alice");
    let q = format!("/quota/users/{alice}");
    assert_eq!(get_json(&s, "/quota"), json!({"count": null, "size": null}));
    assert_eq!(put(&s, &q, r#"{"count": 2, "size": -1}"#), 204);
    assert_eq!(get_json(&s, &format!("{q}/count")), json!(2));
    assert_eq!(get_json(&s, &format!("{q}/size")), json!(-1));
    assert_eq!(s.admin("DELETE", &format!("{q}/size"), None).status, 204);
    assert_eq!(
        s.admin("GET", &format!("{q}/size"), None).status,
        204,
        "not set"
    );
    assert_eq!(put(&s, "/quota/domains/example.com/size", "3000"), 204);
    assert_eq!(
        get_json(&s, "/quota/domains/example.com"),
        json!({
            "global": {"count": null, "size": null},
            "domain": {"count": null, "size": 3000},
            "computed": {"count": null, "size": 3000}
        })
    );
    assert_eq!(put(&s, "/quota/count", "100"), 204);
    assert_eq!(get_json(&s, "/quota"), json!({"count": 100, "size": null}));
    for (path, body) in [
        (format!("{q}/count"), "abc"),
        (format!("{q}/count"), "-5"),
        (q.clone(), "{\"count\": -2}"),
    ] {
        assert_eq!(put(&s, &path, body), 400, "{path} {body}");
    }
    assert_eq!(put(&s, "/quota/users/nobody@example.com/count", "1"), 404);
    assert_eq!(put(&s, "/quota/domains/unknown.test/count", "1"), 404);

    // One small message fits.
    s.deliver(&[&alice], &message("one", "small\r\n"));
    let view = get_json(&s, &q);
    assert_eq!(view["user"], json!({"count": 2, "size": null}));
    assert_eq!(view["computed"], json!({"count": 2, "size": 3000}));
    assert_eq!(view["occupation"]["count"], json!(1));
    let used = view["occupation"]["size"].as_i64().unwrap();
    assert!(used > 0 && used < 3000, "{view}");
    assert_eq!(view["occupation"]["ratio"]["count"], json!(0.5));

    // A message that would pass the size limit is refused after DATA, and nothing is stored.
    let mut c = s.smtp();
    c.ehlo();
    let (code, text) = c.send_mail(
        "x@remote.test",
        &[&alice],
        &message("big", &"z".repeat(4000)),
    );
    assert_eq!(code, 552, "{text}");
    assert!(text.contains("5.2.2"), "{text}");
    assert_eq!(s.login("alice").stat().0, 1);

    // The count limit: the second message fits, then RCPT says the mailbox is full.
    s.deliver(&[&alice], &message("two", "small\r\n"));
    let (code, text) = c.cmd("MAIL FROM:<x@remote.test>");
    assert_eq!(code, 250, "{text}");
    let (code, text) = c.cmd(&format!("RCPT TO:<{alice}>"));
    assert_eq!(code, 452, "{text}");
    assert!(text.contains("4.2.2"), "{text}");
    c.cmd("RSET");

    // Deleting over POP3 frees room.
    let mut p = s.login("alice");
    assert!(p.cmd("DELE 1").starts_with("+OK"));
    assert!(p.quit().starts_with("+OK"));
    assert_eq!(get_json(&s, &q)["occupation"]["count"], json!(1));
    c.cmd("MAIL FROM:<x@remote.test>");
    assert_eq!(c.cmd(&format!("RCPT TO:<{alice}>")).0, 250);
    c.cmd("RSET");

    // Usage that drifted is corrected by the recompute task.
    let inbox = s.inbox("alice");
    let store = s.mail_store();
    s.block_on(async {
        store
            .set_quota_usage(inbox, tern_store::QuotaUsage { count: 50, size: 0 })
            .await
            .unwrap()
    });
    c.cmd("MAIL FROM:<x@remote.test>");
    assert_eq!(c.cmd(&format!("RCPT TO:<{alice}>")).0, 452);
    c.cmd("RSET");
    let task = s.admin(
        "POST",
        "/quota/users?task=RecomputeCurrentQuotas&usersPerSecond=100",
        None,
    );
    assert_eq!(task.status, 201, "{}", task.body);
    let id: Value = serde_json::from_str(&task.body).unwrap();
    let done = s.admin_ok(
        "GET",
        &format!("/tasks/{}/await", id["taskId"].as_str().unwrap()),
        None,
    );
    let done: Value = serde_json::from_str(&done).unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["type"], "recompute-current-quotas");
    assert_eq!(
        done["additionalInformation"]["recomputeSingleQuotaComponentResults"][0]
            ["processedIdentifierCount"],
        json!(1)
    );
    assert_eq!(get_json(&s, &q)["occupation"]["count"], json!(1));
    c.cmd("MAIL FROM:<x@remote.test>");
    assert_eq!(c.cmd(&format!("RCPT TO:<{alice}>")).0, 250);
    assert_eq!(s.admin("POST", "/quota/users?task=Nope", None).status, 400);
}

/// LMTP (RFC 2033) behind another MTA: LHLO, then one reply per recipient after the data, so
/// a recipient over its quota is refused alone. Python's `smtplib.LMTP` speaks it too.
fn lmtp_answers_each_recipient(b: Backend) {
    let s = TestServer::start_with(b, |c| {
        c.lmtp.listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let alice = s.user("alice");
    let bob = s.user("bob");
    assert_eq!(put(&s, &format!("/quota/users/{bob}/size"), "100"), 204);
    let addr = s.server.as_ref().unwrap().lmtp_addr.unwrap();
    let mut c = SmtpClient::connect(addr);
    let (code, _) = c.cmd("EHLO mx.test");
    assert_eq!(code, 500, "LMTP wants LHLO");
    let (code, text) = c.cmd("LHLO mx.test");
    assert_eq!(code, 250, "{text}");
    assert_eq!(c.cmd("MAIL FROM:<x@remote.test>").0, 250);
    assert_eq!(c.cmd(&format!("RCPT TO:<{alice}>")).0, 250);
    assert_eq!(c.cmd(&format!("RCPT TO:<{bob}>")).0, 250);
    assert_eq!(
        c.cmd("RCPT TO:<carol@remote.test>").0,
        550,
        "no relaying over LMTP"
    );
    assert_eq!(c.cmd("DATA").0, 354);
    c.send_raw(&stuff(&message("via lmtp", &"y".repeat(300))));
    c.send_raw(b".\r\n");
    let (first, text) = c.reply();
    assert_eq!(first, 250, "{text}");
    assert!(text.contains(&alice), "{text}");
    let (second, text) = c.reply();
    assert_eq!(second, 552, "{text}");
    assert!(text.contains(&bob) && text.contains("5.2.2"), "{text}");
    assert_eq!(s.login("alice").stat().0, 1);
    assert_eq!(s.login("bob").stat().0, 0);
    let m = String::from_utf8(s.login("alice").retr(1)).unwrap();
    assert!(m.contains("with LMTP"), "{m}");
    // A real LMTP client.
    let script = format!(
        "import smtplib\n\
         c = smtplib.LMTP('{}', {})\n\
         r = c.sendmail('x@remote.test', ['{alice}'], b'Subject: py\\r\\n\\r\\nhi\\r\\n')\n\
         assert r == {{}}, r\n\
         c.quit()\n",
        addr.ip(),
        addr.port()
    );
    run_ok(std::process::Command::new("python3").arg("-c").arg(&script));
    assert_eq!(s.login("alice").stat().0, 2);
}

on_both_backends!(
    quotas_are_administered_and_enforced,
    lmtp_answers_each_recipient
);
