//! Outbound-queue cases: entries are durable with their bodies, due when they should be,
//! rescheduled and removed cleanly, and a queued body is never collected.

use super::*;
use crate::{now_ms, NewQueuedMail, QueuedMail, QueuedRecipient};

async fn stage(b: &Backend, body: &[u8]) -> crate::StagedBody {
    let mut w = b.mail.begin_body().await.expect("begin body");
    for chunk in body.chunks(7919) {
        w.write(chunk).await.expect("write body");
    }
    w.finish().await.expect("finish body")
}

fn new_mail(sender: &str, recipients: &[&str]) -> NewQueuedMail {
    NewQueuedMail {
        sender: sender.into(),
        recipients: recipients
            .iter()
            .map(|r| QueuedRecipient::new(*r))
            .collect(),
        envid: Some("env-1".into()),
        return_full: true,
        header_prefix: Some("DKIM-Signature: v=1; d=here.test\r\n".into()),
    }
}

async fn queued_body(b: &Backend, mail: &QueuedMail) -> Option<Vec<u8>> {
    let mut r = b.queue.open_queued_body(mail).await.expect("open")?;
    let mut out = Vec::new();
    while let Some(chunk) = r.next_chunk().await.expect("read chunk") {
        out.extend_from_slice(&chunk);
    }
    Some(out)
}

async fn all_queued(b: &Backend) -> Vec<QueuedMail> {
    b.queue
        .all_queued()
        .map(|r| r.expect("scan queue"))
        .collect()
        .await
}

pub async fn queued_mail_is_durable_due_and_readable(b: &Backend) {
    let held = b.queue.hold_shards("node-a").await.unwrap();
    assert!(!held.is_empty(), "a lone node holds shards");
    let small = b"Subject: small\r\n\r\nhello\r\n".to_vec();
    let large: Vec<u8> = (0..900_000u32).map(|i| b'a' + (i % 23) as u8).collect();
    let before = now_ms();
    let a = b
        .queue
        .enqueue(
            stage(b, &small).await,
            new_mail("u@here.test", &["x@there.test", "y@there.test"]),
        )
        .await
        .unwrap();
    let c = b
        .queue
        .enqueue(stage(b, &large).await, new_mail("", &["z@else.test"]))
        .await
        .unwrap();
    assert!(
        held.contains(&a.shard) && held.contains(&c.shard),
        "queued into a held shard"
    );
    assert_eq!(a.recipients.len(), 2);
    assert_eq!((a.attempts, a.size), (0, small.len() as u64));
    assert!(a.queued_ms >= before && a.next_attempt_ms <= now_ms());
    assert_eq!(a.envid.as_deref(), Some("env-1"));
    assert!(a
        .header_prefix
        .as_deref()
        .is_some_and(|d| d.starts_with("DKIM-Signature")));
    let mut due = Vec::new();
    for shard in &held {
        due.extend(b.queue.due_mail(*shard, now_ms(), 100).await.unwrap());
    }
    assert!(due.contains(&a) && due.contains(&c), "{due:?}");
    assert_eq!(queued_body(b, &a).await.as_deref(), Some(&small[..]));
    assert_eq!(queued_body(b, &c).await.as_deref(), Some(&large[..]));
    let listed = all_queued(b).await;
    assert_eq!(listed.len(), 2);
    // The collector leaves a queued body alone.
    for blob in [a.blob, c.blob] {
        assert!(!b
            .collection
            .remove_body_if_unreferenced(blob)
            .await
            .unwrap());
    }
    assert!(b
        .queue
        .enqueue(stage(b, b"x").await, new_mail("u@here.test", &[]))
        .await
        .is_err());
}

pub async fn rescheduled_mail_waits_and_removal_frees_the_body(b: &Backend) {
    let held = b.queue.hold_shards("node-a").await.unwrap();
    let body: Vec<u8> = (0..300_000u32).map(|i| b'0' + (i % 10) as u8).collect();
    let first = b
        .queue
        .enqueue(
            stage(b, &body).await,
            new_mail("u@here.test", &["x@there.test", "y@there.test"]),
        )
        .await
        .unwrap();
    assert!(held.contains(&first.shard));
    let later = now_ms() + 3_600_000;
    let mut next = first.clone();
    next.recipients.remove(0);
    next.recipients[0].last_error = Some("451 4.3.0 try later".into());
    next.attempts = 1;
    next.next_attempt_ms = later;
    b.queue.reschedule(&first, &next).await.unwrap();
    let due_now = b.queue.due_mail(first.shard, now_ms(), 100).await.unwrap();
    assert!(due_now.iter().all(|m| m.id != first.id), "{due_now:?}");
    let due_later = b.queue.due_mail(first.shard, later + 1, 100).await.unwrap();
    assert_eq!(due_later, vec![next.clone()]);
    assert_eq!(all_queued(b).await, vec![next.clone()]);
    assert_eq!(queued_body(b, &next).await.as_deref(), Some(&body[..]));
    // Rescheduled back to now (a flush) within the same slice as before, then removed.
    let mut flushed = next.clone();
    flushed.next_attempt_ms = now_ms();
    b.queue.reschedule(&next, &flushed).await.unwrap();
    let due = b.queue.due_mail(first.shard, now_ms(), 100).await.unwrap();
    assert_eq!(due, vec![flushed.clone()]);
    b.queue.remove_queued(&flushed).await.unwrap();
    assert_eq!(all_queued(b).await, vec![]);
    assert!(b
        .queue
        .due_mail(first.shard, later + 1, 100)
        .await
        .unwrap()
        .is_empty());
    // Removed twice is fine; the body went with its last reference.
    b.queue.remove_queued(&flushed).await.unwrap();
    assert_eq!(queued_body(b, &flushed).await, None);
}

pub async fn concurrent_enqueues_all_land(b: &Backend) {
    let held = b.queue.hold_shards("node-a").await.unwrap();
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move {
                let body = format!("Subject: {i}\r\n\r\nbody {i}\r\n");
                let staged = stage(&b, body.as_bytes()).await;
                b.queue
                    .enqueue(staged, new_mail("u@here.test", &["r@there.test"]))
                    .await
                    .unwrap()
                    .id
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    let mut due = Vec::new();
    for shard in &held {
        due.extend(b.queue.due_mail(*shard, now_ms(), 1000).await.unwrap());
    }
    let mut listed: Vec<_> = all_queued(b).await.into_iter().map(|m| m.id).collect();
    let mut due: Vec<_> = due.into_iter().map(|m| m.id).collect();
    ids.sort();
    listed.sort();
    due.sort();
    assert_eq!(listed, ids);
    assert_eq!(due, ids);
    // A due read respects its limit.
    let some = b.queue.due_mail(held[0], now_ms(), 1).await.unwrap();
    assert!(some.len() <= 1);
}
