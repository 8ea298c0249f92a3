//! Mail repositories end to end: what processing could not deliver (a group member without a
//! user, a recipient a forward sent round in a loop, a bounce nobody can receive) is kept, read
//! through James's `/mailRepositories` routes (JSON compared with webadmin.adoc field by field),
//! moved, deleted, and reprocessed into mailboxes once the operator fixed the cause.

#[macro_use]
mod common;

use common::sink::server_with_remote_sink;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const ERROR: &str = "var%2Fmail%2Ferror%2F";
const ADDRESS_ERROR: &str = "var%2Fmail%2Faddress-error%2F";

/// A kept mail as `message/rfc822`, fetched with curl (asserting the request succeeded).
fn raw_mail(s: &TestServer, repository: &str, key: &str) -> Vec<u8> {
    let out = run_ok(
        std::process::Command::new("curl")
            .args(["-sf", "-H", "Accept: message/rfc822"])
            .arg(format!(
                "{}/mailRepositories/{repository}/mails/{key}",
                s.admin_url
            )),
    );
    out.stdout
}

fn get_json(s: &TestServer, path: &str) -> Value {
    serde_json::from_str(&s.admin_ok("GET", path, None)).unwrap()
}

fn status(s: &TestServer, method: &str, path: &str) -> u16 {
    s.admin(method, path, None).status
}

/// The keys of a repository once it holds `n` mails (polled: some arrive from the queue).
fn keys_when(s: &TestServer, repository: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let keys: Vec<String> = serde_json::from_value(get_json(
            s,
            &format!("/mailRepositories/{repository}/mails"),
        ))
        .unwrap();
        if keys.len() >= n {
            assert_eq!(keys.len(), n, "{keys:?}");
            return keys;
        }
        assert!(
            Instant::now() < deadline,
            "{repository} holds {keys:?}, waiting for {n}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a task route and waits for the task; returns the task's JSON.
fn run_task(s: &TestServer, method: &str, path: &str, body: Option<&str>) -> Value {
    let r = s.admin(method, path, body);
    assert_eq!(r.status, 201, "{}", r.body);
    let id = serde_json::from_str::<Value>(&r.body).unwrap()["taskId"]
        .as_str()
        .unwrap()
        .to_string();
    let task = get_json(s, &format!("/tasks/{id}/await?timeout=60s"));
    assert_eq!(task["status"], "completed", "{task}");
    task
}

fn kept_mail_is_listed_read_moved_reprocessed_and_deleted(b: Backend) {
    let s = TestServer::start(b);
    s.user("alice");
    s.user("bob");
    // A group with a member that has no user: alice gets her copy, carol's is kept.
    let group = "/address/groups/team@example.com/carol@example.com";
    assert_eq!(status(&s, "PUT", group), 204);
    assert_eq!(
        status(
            &s,
            "PUT",
            "/address/groups/team@example.com/alice@example.com"
        ),
        204
    );
    let message = message("for the team", "agenda\r\n");
    s.deliver(&["team@example.com"], &message);
    assert_eq!(s.login("alice").stat().0, 1);
    let keys = keys_when(&s, ADDRESS_ERROR, 1);

    // Listing: Tern's own repositories, and one created by PUT.
    assert_eq!(
        status(
            &s,
            "PUT",
            "/mailRepositories/var%2Fmail%2Fsaved%2F?protocol=file"
        ),
        204
    );
    let listed = get_json(&s, "/mailRepositories");
    assert_eq!(
        listed,
        json!([
            { "repository": "var/mail/address-error/", "path": "var%2Fmail%2Faddress-error%2F" },
            { "repository": "var/mail/error/", "path": "var%2Fmail%2Ferror%2F" },
            { "repository": "var/mail/saved/", "path": "var%2Fmail%2Fsaved%2F" },
        ])
    );
    assert_eq!(
        get_json(&s, &format!("/mailRepositories/{ADDRESS_ERROR}")),
        json!({ "repository": "var/mail/address-error/", "path": ADDRESS_ERROR, "size": 1 })
    );
    assert_eq!(
        status(&s, "GET", "/mailRepositories/var%2Fmail%2Fnone%2F"),
        404
    );
    assert_eq!(
        status(&s, "GET", "/mailRepositories/var%2Fmail%2Fnone%2F/mails"),
        404
    );

    // One mail, as James shows it.
    let key = &keys[0];
    let details = get_json(
        &s,
        &format!("/mailRepositories/{ADDRESS_ERROR}/mails/{key}"),
    );
    let fields: Vec<&String> = details.as_object().unwrap().keys().collect();
    assert_eq!(
        fields,
        [
            "error",
            "lastUpdated",
            "name",
            "recipients",
            "remoteAddr",
            "remoteHost",
            "sender",
            "state"
        ]
    );
    assert_eq!(details["name"], json!(key));
    assert_eq!(details["sender"], "sender@remote.test");
    assert_eq!(details["recipients"], json!(["carol@example.com"]));
    assert_eq!(details["state"], "address-error");
    assert_eq!(details["remoteHost"], "client.test");
    assert_eq!(details["remoteAddr"], "127.0.0.1");
    assert!(details["error"]
        .as_str()
        .unwrap()
        .contains("team@example.com is rewritten to carol@example.com"));
    assert_james_date(details["lastUpdated"].as_str().unwrap());
    let more = get_json(
        &s,
        &format!("/mailRepositories/{ADDRESS_ERROR}/mails/{key}?additionalFields=messageSize,headers,textBody,attributes,perRecipientsHeaders"),
    );
    assert_eq!(more["headers"]["Subject"], json!(["for the team"]));
    assert_eq!(more["textBody"], "agenda\r\n");
    assert_eq!(more["attributes"], json!({}));
    assert_eq!(more["perRecipientsHeaders"], json!({}));
    let raw = raw_mail(&s, ADDRESS_ERROR, key);
    assert!(raw.ends_with(&message), "the kept message is the message");
    assert!(
        raw.starts_with(b"Received: from client.test"),
        "without alice's own header"
    );
    assert_eq!(more["messageSize"], json!(raw.len()));
    assert_eq!(
        status(
            &s,
            "GET",
            &format!("/mailRepositories/{ADDRESS_ERROR}/mails/{key}?additionalFields=bogus")
        ),
        400
    );
    assert_eq!(
        status(
            &s,
            "GET",
            &format!("/mailRepositories/{ADDRESS_ERROR}/mails/not-a-key")
        ),
        404
    );

    // Filters and paging.
    for (query, expected) in [
        ("recipient=*@example.com", 1),
        ("recipient=*@other.test", 0),
        ("sender=sender@remote.test", 1),
        ("remoteAddress=192.0.2.1", 0),
        ("updatedBefore=1d", 0),
        ("updatedAfter=1d", 1),
        ("offset=1", 0),
        ("limit=1", 1),
    ] {
        let got = get_json(
            &s,
            &format!("/mailRepositories/{ADDRESS_ERROR}/mails?{query}"),
        );
        assert_eq!(got.as_array().unwrap().len(), expected, "{query}");
    }
    for bad in ["limit=0", "offset=-1", "updatedBefore=soon"] {
        assert_eq!(
            status(
                &s,
                "GET",
                &format!("/mailRepositories/{ADDRESS_ERROR}/mails?{bad}")
            ),
            400,
            "{bad}"
        );
    }

    // Move it to the saved repository and back.
    let to_saved = json!({ "mailRepository": "var/mail/saved/" }).to_string();
    let r = s.admin(
        "PATCH",
        &format!("/mailRepositories/{ADDRESS_ERROR}/mails/{key}"),
        Some(&to_saved),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(keys_when(&s, ADDRESS_ERROR, 0).is_empty());
    let moved = keys_when(&s, "var%2Fmail%2Fsaved%2F", 1);
    let nowhere = json!({ "mailRepository": "var/mail/nowhere/" }).to_string();
    let r = s.admin(
        "PATCH",
        "/mailRepositories/var%2Fmail%2Fsaved%2F/mails",
        Some(&nowhere),
    );
    assert_eq!(r.status, 400);
    let back = json!({ "mailRepository": "var/mail/address-error/" }).to_string();
    let r = s.admin(
        "PATCH",
        "/mailRepositories/var%2Fmail%2Fsaved%2F/mails",
        Some(&back),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let keys = keys_when(&s, ADDRESS_ERROR, 1);
    assert_ne!(keys[0], moved[0], "a moved mail gets a new key");

    // Reprocessing without carol still fails: the mail stays. With carol, she gets it.
    assert_eq!(
        status(
            &s,
            "PATCH",
            &format!("/mailRepositories/{ADDRESS_ERROR}/mails/{}", keys[0])
        ),
        400,
        "action is compulsory"
    );
    let task = run_task(
        &s,
        "PATCH",
        &format!("/mailRepositories/{ADDRESS_ERROR}/mails?action=reprocess"),
        None,
    );
    assert_eq!(task["type"], "reprocessing-all");
    let info = &task["additionalInformation"];
    assert_eq!(info["mailRepositoryPath"], "var/mail/address-error/");
    assert_eq!(info["targetQueue"], "spool");
    assert_eq!(info["targetProcessor"], Value::Null);
    assert_eq!(
        (info["initialCount"].clone(), info["remainingCount"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(
        keys_when(&s, ADDRESS_ERROR, 1),
        keys,
        "still undeliverable: kept as it was"
    );
    s.user("carol");
    let task = run_task(
        &s,
        "PATCH",
        &format!(
            "/mailRepositories/{ADDRESS_ERROR}/mails/{}?action=reprocess&processor=transport",
            keys[0]
        ),
        None,
    );
    assert_eq!(task["type"], "reprocessing-one");
    assert_eq!(task["additionalInformation"]["mailKey"], json!(keys[0]));
    assert_eq!(
        task["additionalInformation"]["targetProcessor"],
        "transport"
    );
    let copy = s.login("carol").retr(1);
    assert!(
        copy.ends_with(&message)
            && copy.starts_with(
                b"Return-Path: <sender@remote.test>\r\nDelivered-To: carol@example.com\r\n"
            )
    );
    assert!(keys_when(&s, ADDRESS_ERROR, 0).is_empty());
    assert_eq!(s.login("alice").stat().0, 1, "alice got no second copy");

    // A forwarding loop beside a genuine recipient: alice gets it, bob's copy is kept; once
    // the loop is undone (no forward), reprocessing hands bob his copy.
    let looped = [&b"Delivered-To: bob@example.com\r\n"[..], &message].concat();
    let mut c = s.smtp();
    c.ehlo();
    let (code, text) = c.send_mail(
        "sender@remote.test",
        &["bob@example.com", "alice@example.com"],
        &looped,
    );
    assert_eq!(code, 250, "{text}");
    let kept = keys_when(&s, ERROR, 1);
    let details = get_json(&s, &format!("/mailRepositories/{ERROR}/mails/{}", kept[0]));
    assert_eq!(details["recipients"], json!(["bob@example.com"]));
    assert_eq!(details["state"], "error");
    assert!(
        details["error"].as_str().unwrap().contains("Mail loop"),
        "{details}"
    );
    assert_eq!(s.login("bob").stat().0, 0);
    run_task(
        &s,
        "PATCH",
        &format!("/mailRepositories/{ERROR}/mails?action=reprocess&consume=false"),
        None,
    );
    assert_eq!(s.login("bob").stat().0, 1, "delivered");
    assert_eq!(keys_when(&s, ERROR, 1), kept, "consume=false keeps it");

    // Deletion: one, then all (a task).
    assert_eq!(
        status(
            &s,
            "DELETE",
            &format!("/mailRepositories/{ERROR}/mails/{}", kept[0])
        ),
        204
    );
    assert_eq!(
        status(
            &s,
            "DELETE",
            &format!("/mailRepositories/{ERROR}/mails/{}", kept[0])
        ),
        204
    );
    assert!(keys_when(&s, ERROR, 0).is_empty());
    c.send_mail(
        "sender@remote.test",
        &["bob@example.com", "alice@example.com"],
        &looped,
    );
    keys_when(&s, ERROR, 1);
    let task = run_task(
        &s,
        "DELETE",
        &format!("/mailRepositories/{ERROR}/mails"),
        None,
    );
    assert_eq!(task["type"], "clear-mail-repository");
    let info = &task["additionalInformation"];
    assert_eq!(info["mailRepositoryPath"], "var/mail/error/");
    assert_eq!(
        (info["initialCount"].clone(), info["remainingCount"].clone()),
        (json!(1), json!(0))
    );
    assert!(keys_when(&s, ERROR, 0).is_empty());
    assert_eq!(
        status(&s, "DELETE", "/mailRepositories/var%2Fmail%2Fnone%2F/mails"),
        404
    );
}

/// A bounce (null sender) that its destination refuses cannot be bounced in turn: it is kept.
fn an_undeliverable_bounce_is_kept(b: Backend) {
    let (_sink, s) = server_with_remote_sink(b);
    s.user("bob");
    let forward = "/address/forwards/bob@example.com/targets/reject-me@remote.test";
    assert_eq!(status(&s, "PUT", forward), 204);
    let mut c = s.smtp();
    c.ehlo();
    let bounce = message("Undelivered Mail Returned to Sender", "report\r\n");
    let (code, text) = c.send_mail("", &["bob@example.com"], &bounce);
    assert_eq!(code, 250, "{text}");
    let keys = keys_when(&s, ERROR, 1);
    let details = get_json(&s, &format!("/mailRepositories/{ERROR}/mails/{}", keys[0]));
    assert_eq!(details["sender"], Value::Null, "the null sender");
    assert_eq!(details["recipients"], json!(["reject-me@remote.test"]));
    let error = details["error"].as_str().unwrap();
    assert!(
        error.starts_with("undeliverable bounce: reject-me@remote.test: 550"),
        "{error}"
    );
    let raw = s.admin(
        "GET",
        &format!(
            "/mailRepositories/{ERROR}/mails/{}?additionalFields=textBody",
            keys[0]
        ),
        None,
    );
    assert!(raw.body.contains("report"), "{}", raw.body);
}

/// Two group members without a user: each gets a kept copy of its own, whole, and both stay
/// readable once the one delivered copy is deleted (they never depended on it).
fn every_kept_copy_has_the_whole_message(b: Backend) {
    let s = TestServer::start(b);
    s.user("alice");
    for member in ["alice", "x1", "x2"] {
        let path = format!("/address/groups/team@example.com/{member}@example.com");
        assert_eq!(status(&s, "PUT", &path), 204);
    }
    let body = message("for the team", &"a line of the agenda\r\n".repeat(20_000));
    s.deliver(&["team@example.com"], &body);
    let keys = keys_when(&s, ADDRESS_ERROR, 2);
    let mut alice = s.login("alice");
    assert!(alice.cmd("DELE 1").starts_with("+OK"));
    alice.quit();
    assert_eq!(s.login("alice").stat().0, 0);
    let mut targets = Vec::new();
    for key in &keys {
        assert!(
            raw_mail(&s, ADDRESS_ERROR, key).ends_with(&body),
            "kept copy {key} is whole"
        );
        let details = get_json(
            &s,
            &format!("/mailRepositories/{ADDRESS_ERROR}/mails/{key}"),
        );
        targets.push(details["recipients"][0].as_str().unwrap().to_string());
    }
    targets.sort();
    assert_eq!(targets, ["x1@example.com", "x2@example.com"]);
}

on_both_backends!(
    every_kept_copy_has_the_whole_message,
    kept_mail_is_listed_read_moved_reprocessed_and_deleted,
    an_undeliverable_bounce_is_kept,
);
