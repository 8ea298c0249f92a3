//! The POP3 consistency toolkit over HTTP, on both backends: the fixPop3Inconsistencies task
//! (drift injected straight into the store), the James-compatible task API, cancellation, the
//! rate limit, a dead node's task, and read repair.

#[macro_use]
mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};
use tern_store::{IdGenerator, TaskRecord, ViewEntry};

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Writes a POP3 view entry whose message does not exist (a stale entry) and returns its id.
fn inject_ghost(s: &TestServer, inbox: tern_store::MailboxId) -> tern_store::MessageId {
    let ghost = IdGenerator::new().next_id();
    let entry = ViewEntry {
        message_id: ghost,
        size: 42,
        uidl: None,
    };
    s.block_on(s.mail_store().put_view_entry(inbox, entry))
        .unwrap();
    ghost
}

fn submit(s: &TestServer, query: &str) -> String {
    let r = s.admin(
        "POST",
        &format!("/mailboxes?task=fixPop3Inconsistencies{query}"),
        None,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    json(&r.body)["taskId"].as_str().unwrap().to_string()
}

fn entry_list(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["mailboxId"].as_str().unwrap().to_string(),
                e["messageId"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn fix_task_repairs_stale_and_missing_entries(b: Backend) {
    let s = TestServer::start(b);
    let alice = s.user("alice");
    for i in 0..3 {
        s.deliver(&[&alice], &message(&format!("m{i}"), "x\r\n"));
    }
    let inbox = s.inbox("alice");
    let mail = s.mail_store();
    let view = s.block_on(mail.pop3_view(inbox)).unwrap();
    // Missing: a message whose view entry is gone. Stale: a view entry with no message.
    let missing = view[1].message_id;
    s.block_on(mail.remove_view_entry(inbox, missing)).unwrap();
    let ghost = inject_ghost(&s, inbox);
    // Before the fix: in message-id mode the view lists the ghost; in UID mode a ghost can get
    // no UID and is not listed. Either way the missing message is not listed.
    let before = if b.is_uid() { 2 } else { 3 };
    assert_eq!(s.login("alice").stat().0, before);

    let id = submit(&s, "");
    let done = json(&s.admin_ok("GET", &format!("/tasks/{id}/await?timeout=60s"), None));
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["type"], "Pop3MetaDataFixInconsistenciesTask");
    let info = &done["additionalInformation"];
    assert_eq!(info["type"], "Pop3MetaDataFixInconsistenciesTask");
    assert_eq!(info["runningOptions"]["messagesPerSecond"], 100);
    assert_eq!(info["processedImapUidEntries"], 3);
    assert_eq!(
        info["processedPop3MetaDataStoreEntries"], 4,
        "3 real entries (one re-added) and the ghost"
    );
    let mb = inbox.to_string();
    // James reports these two as counts, the entries themselves in fixedInconsistencies.
    assert_eq!(info["missingPOP3Entries"], serde_json::json!(1), "{info}");
    assert_eq!(info["stalePOP3Entries"], serde_json::json!(1), "{info}");
    let mut fixed = entry_list(&info["fixedInconsistencies"]);
    fixed.sort();
    let mut expected = vec![
        (mb.clone(), missing.to_string()),
        (mb.clone(), ghost.to_string()),
    ];
    expected.sort();
    assert_eq!(fixed, expected);
    assert!(entry_list(&info["errors"]).is_empty());
    assert_james_date(info["timestamp"].as_str().unwrap());
    for field in ["submitDate", "startedDate", "completedDate"] {
        assert_james_date(
            done[field]
                .as_str()
                .unwrap_or_else(|| panic!("{field}: {done}")),
        );
    }
    for absent in ["canceledDate", "failedDate", "cancelledDate"] {
        assert!(
            done.get(absent).is_none(),
            "{absent} should be left out: {done}"
        );
    }

    // The repaired state: the missing message is back, the ghost is gone.
    let mut c = s.login("alice");
    assert_eq!(c.stat().0, 3);
    let subjects: Vec<String> = (1..=3)
        .map(|i| String::from_utf8(c.retr(i)).unwrap())
        .collect();
    assert!(subjects[1].contains("Subject: m1"));
    // Listing and filtering tasks.
    let all = json(&s.admin_ok("GET", "/tasks", None));
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert_eq!(
        json(&s.admin_ok("GET", "/tasks?status=completed", None))
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(json(&s.admin_ok("GET", "/tasks?status=inProgress", None))
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(s.admin("GET", "/tasks?status=bogus", None).status, 400);
    // A second run finds nothing.
    let again = submit(&s, "");
    let done = json(&s.admin_ok("GET", &format!("/tasks/{again}/await"), None));
    assert!(entry_list(&done["additionalInformation"]["fixedInconsistencies"]).is_empty());
}

fn task_api_errors(b: Backend) {
    let s = TestServer::start(b);
    assert_eq!(s.admin("POST", "/mailboxes", None).status, 400);
    assert_eq!(s.admin("POST", "/mailboxes?task=nope", None).status, 400);
    assert_eq!(
        s.admin(
            "POST",
            "/mailboxes?task=fixPop3Inconsistencies&messagesPerSecond=0",
            None
        )
        .status,
        400
    );
    assert_eq!(
        s.admin(
            "POST",
            "/mailboxes?task=fixPop3Inconsistencies&messagesPerSecond=x",
            None
        )
        .status,
        400
    );
    assert_eq!(s.admin("GET", "/tasks/not-a-uuid", None).status, 400);
    let unknown = uuid::Uuid::new_v4();
    let r = s.admin("GET", &format!("/tasks/{unknown}"), None);
    assert_eq!(r.status, 404);
    assert_eq!(json(&r.body)["type"], "notFound");
    assert_eq!(
        s.admin("DELETE", &format!("/tasks/{unknown}"), None).status,
        404
    );
}

fn rate_limit_holds_and_cancellation_stops_the_task(b: Backend) {
    let s = TestServer::start(b);
    let alice = s.user("alice");
    for i in 0..15 {
        s.deliver(&[&alice], &message(&format!("m{i}"), "x\r\n"));
    }
    // 15 messages + 15 view entries = 30 entries at 10 per second: at least ~3 s.
    let started = Instant::now();
    let id = submit(&s, "&messagesPerSecond=10");
    let done = json(&s.admin_ok("GET", &format!("/tasks/{id}/await"), None));
    let took = started.elapsed();
    assert_eq!(done["status"], "completed");
    assert_eq!(
        done["additionalInformation"]["runningOptions"]["messagesPerSecond"],
        10
    );
    assert!(
        took >= Duration::from_millis(2800),
        "30 entries at 10/s took only {took:?}"
    );

    // A slow run, cancelled from the API.
    let id = submit(&s, "&messagesPerSecond=1");
    let r = s.admin("GET", &format!("/tasks/{id}/await?timeout=1s"), None);
    assert_eq!(r.status, 408, "{}", r.body);
    let running = json(&s.admin_ok("GET", &format!("/tasks/{id}"), None));
    assert_eq!(running["status"], "inProgress");
    assert_eq!(s.admin("DELETE", &format!("/tasks/{id}"), None).status, 204);
    let done = json(&s.admin_ok("GET", &format!("/tasks/{id}/await?timeout=30s"), None));
    assert_eq!(done["status"], "canceled", "{done}");
    assert_james_date(done["canceledDate"].as_str().unwrap());
    assert!(done.get("completedDate").is_none(), "{done}");
    let processed = done["additionalInformation"]["processedImapUidEntries"]
        .as_u64()
        .unwrap();
    assert!(
        processed < 15,
        "the task stopped early ({processed} processed)"
    );
}

fn task_of_a_dead_node_shows_as_failed(b: Backend) {
    let s = TestServer::start(b);
    let store = s.mail_store();
    let id = uuid::Uuid::new_v4();
    let long_ago = tern::tasks::now_ms() - 3_600_000;
    let record = TaskRecord {
        id,
        kind: "Pop3MetaDataFixInconsistenciesTask".into(),
        status: "inProgress".into(),
        submitted_ms: long_ago,
        started_ms: Some(long_ago),
        ended_ms: None,
        node: "a-node-that-died".into(),
        heartbeat_ms: long_ago,
        cancel_requested: false,
        details: "{}".into(),
    };
    s.block_on(store.save_task(&record)).unwrap();
    let t = json(&s.admin_ok("GET", &format!("/tasks/{id}"), None));
    assert_eq!(t["status"], "failed", "{t}");
    assert!(t["failedDate"].is_string());
    assert_eq!(t["executedOn"], "a-node-that-died");
    // Awaiting it returns at once instead of waiting forever.
    assert_eq!(
        json(&s.admin_ok("GET", &format!("/tasks/{id}/await?timeout=5s"), None))["status"],
        "failed"
    );
}

fn read_repair_removes_an_entry_whose_message_is_gone(b: Backend) {
    let s = TestServer::start(b);
    let alice = s.user("alice");
    s.deliver(&[&alice], &message("real", "x\r\n"));
    let inbox = s.inbox("alice");
    inject_ghost(&s, inbox);
    let mut first = s.login("alice");
    if b.is_uid() {
        // A view entry whose message does not exist gets no UID: never listed in UID mode.
        assert_eq!(first.stat().0, 1);
        return;
    }
    assert_eq!(first.stat().0, 2);
    let r = first.cmd("RETR 2");
    assert!(r.starts_with("-ERR [SYS/PERM]"), "{r}");
    assert!(first.cmd("TOP 2 0").starts_with("-ERR"));
    assert!(first.retr(1).ends_with(b"x\r\n"), "the session goes on");
    first.quit();
    let mut second = s.login("alice");
    assert_eq!(second.stat().0, 1, "the next session no longer lists it");
}

fn unreferenced_bodies_are_collected_by_the_gc_task(b: Backend) {
    let s = TestServer::start(b);
    let alice = s.user("alice");
    let big = message("big", &"0123456789abcdefghij\r\n".repeat(30_000));
    s.deliver(&[&alice], &big);
    // A body left by a delivery that never completed.
    let mail = s.mail_store();
    s.block_on(async {
        let mut w = mail.begin_body().await.unwrap();
        w.write(&vec![b'z'; 700_000]).await.unwrap();
        w.finish().await.unwrap();
    });
    let run = |query: &str| {
        let r = s.admin("DELETE", &format!("/blobs?scope=unreferenced{query}"), None);
        assert_eq!(r.status, 201, "{}", r.body);
        let id = json(&r.body)["taskId"].as_str().unwrap().to_string();
        json(&s.admin_ok("GET", &format!("/tasks/{id}/await?timeout=60s"), None))
    };
    // Within the grace period (default 60 minutes) nothing is touched.
    let first = run("");
    assert_eq!(first["status"], "completed", "{first}");
    assert_eq!(first["type"], "BlobGCTask");
    assert_eq!(first["additionalInformation"]["gcedBlobCount"], 0);
    assert!(
        first["additionalInformation"]["skippedRecentBlobCount"]
            .as_u64()
            .unwrap()
            >= 1
    );
    // On Cassandra the abandoned body's in-flight marker is cleared in the background: run
    // until it has been collected.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let done = loop {
        let done = run("&graceMinutes=0");
        assert_eq!(done["additionalInformation"]["errorCount"], 0, "{done}");
        if done["additionalInformation"]["gcedBlobCount"] == 1 {
            break done;
        }
        assert_eq!(done["additionalInformation"]["gcedBlobCount"], 0, "{done}");
        assert!(
            std::time::Instant::now() < deadline,
            "never collected: {done}"
        );
    };
    assert_eq!(done["status"], "completed");
    // The delivered message is untouched.
    assert!(s.login("alice").retr(1).ends_with(&big));
    assert_eq!(s.admin("DELETE", "/blobs", None).status, 400);
    assert_eq!(s.admin("DELETE", "/blobs?scope=all", None).status, 400);
}

on_every_backend_and_listing!(
    unreferenced_bodies_are_collected_by_the_gc_task,
    fix_task_repairs_stale_and_missing_entries,
    task_api_errors,
    rate_limit_holds_and_cancellation_stops_the_task,
    task_of_a_dead_node_shows_as_failed,
    read_repair_removes_an_entry_whose_message_is_gone,
);
