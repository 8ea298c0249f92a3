//! The contract every storage backend passes, in the manner of Apache James's `*Contract` tests
//! and object_store's shared integration suite. A backend instantiates it with
//! [`store_contract_tests!`](crate::store_contract_tests) and a factory expression (it may
//! `.await`) that yields `(Backend, guard)`, the guard living as long as the test.

use crate::{Directory, MailStore, MailboxId, MessageId, TaskRecord, TaskStore, ViewEntry};
use std::sync::Arc;

#[derive(Clone)]
pub struct Backend {
    pub directory: Arc<dyn Directory>,
    pub mail: Arc<dyn MailStore>,
    pub tasks: Arc<dyn TaskStore>,
}

impl Backend {
    pub fn new<S: Directory + MailStore + TaskStore + Clone + 'static>(store: S) -> Self {
        Self {
            directory: Arc::new(store.clone()),
            mail: Arc::new(store.clone()),
            tasks: Arc::new(store),
        }
    }
}

/// Generates one `#[tokio::test]` per contract case.
#[macro_export]
macro_rules! store_contract_tests {
    (#[ignore = $reason:literal] $factory:expr) => {
        $crate::store_contract_tests!(@cases [#[ignore = $reason]] $factory);
    };
    ($factory:expr) => {
        $crate::store_contract_tests!(@cases [] $factory);
    };
    (@cases $attrs:tt $factory:expr) => {
        $crate::store_contract_tests!(@each $attrs $factory;
            domains_add_list_remove,
            users_put_get_update_delete,
            recreated_user_finds_its_inbox,
            deliver_and_read_back,
            empty_and_large_bodies_round_trip,
            one_body_many_mailboxes,
            view_lists_in_delivery_order,
            delete_is_scoped_and_idempotent,
            aborted_body_leaves_nothing,
            concurrent_deliveries_all_land,
            view_keeps_imported_uidl_room,
            metadata_and_view_entries_read_back,
            scans_cover_everything_across_pages,
            uids_increase_and_list_in_order,
            concurrent_uid_assignment_never_repeats,
            tasks_save_and_cancellation_survives_updates,
            unreferenced_bodies_are_collected_and_referenced_ones_kept,
            bodies_in_flight_are_never_collected,
        );
    };
    (@each $attrs:tt $factory:expr; $($name:ident),* $(,)?) => {
        $( $crate::store_contract_tests!(@one $attrs $factory; $name); )*
    };
    (@one [$($attr:tt)*] $factory:expr; $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $($attr)*
        async fn $name() {
            let (backend, _guard) = $factory;
            $crate::contract::$name(&backend).await;
        }
    };
}

pub async fn deliver(b: &Backend, body: &[u8], mailboxes: &[MailboxId]) -> Vec<MessageId> {
    let mut w = b.mail.begin_body().await.expect("begin body");
    // Several writes, as a network peer would produce them.
    for chunk in body.chunks(7919) {
        w.write(chunk).await.expect("write body");
    }
    let staged = w.finish().await.expect("finish body");
    assert_eq!(staged.size, body.len() as u64);
    b.mail.deliver(staged, mailboxes).await.expect("deliver")
}

pub async fn read(b: &Backend, mailbox: MailboxId, id: MessageId) -> Option<Vec<u8>> {
    let mut r = b.mail.open_body(mailbox, id).await.expect("open body")?;
    let mut out = Vec::new();
    while let Some(chunk) = r.next_chunk().await.expect("read chunk") {
        out.extend_from_slice(&chunk);
    }
    Some(out)
}

fn ids(view: &[ViewEntry]) -> Vec<MessageId> {
    view.iter().map(|e| e.message_id).collect()
}

pub async fn domains_add_list_remove(b: &Backend) {
    let d = &b.directory;
    assert!(!d.domain_exists("example.com").await.unwrap());
    d.add_domain("example.com").await.unwrap();
    d.add_domain("example.com").await.unwrap();
    d.add_domain("example.org").await.unwrap();
    assert!(d.domain_exists("example.com").await.unwrap());
    let mut all = d.list_domains().await.unwrap();
    all.sort();
    assert_eq!(all, ["example.com", "example.org"]);
    assert!(d.remove_domain("example.com").await.unwrap());
    assert!(!d.remove_domain("example.com").await.unwrap());
    assert!(!d.domain_exists("example.com").await.unwrap());
}

pub async fn users_put_get_update_delete(b: &Backend) {
    let d = &b.directory;
    assert_eq!(d.get_user("a@x").await.unwrap(), None);
    let created = d.put_user("a@x", "hash1").await.unwrap();
    assert_eq!(created.password_hash, "hash1");
    let updated = d.put_user("a@x", "hash2").await.unwrap();
    assert_eq!(
        updated.inbox, created.inbox,
        "a password change keeps the INBOX"
    );
    assert_eq!(d.get_user("a@x").await.unwrap(), Some(updated));
    d.put_user("b@x", "h").await.unwrap();
    let mut users = d.list_users().await.unwrap();
    users.sort();
    assert_eq!(users, ["a@x", "b@x"]);
    let boxes = d.list_mailboxes("a@x").await.unwrap();
    assert_eq!(boxes.len(), 1);
    assert_eq!(
        (boxes[0].name.as_str(), boxes[0].id),
        ("INBOX", created.inbox)
    );
    assert!(d.delete_user("a@x").await.unwrap());
    assert!(!d.delete_user("a@x").await.unwrap());
    assert_eq!(d.get_user("a@x").await.unwrap(), None);
    assert_eq!(d.list_users().await.unwrap(), ["b@x"]);
    assert_ne!(
        d.get_user("b@x").await.unwrap().unwrap().inbox,
        created.inbox
    );
}

pub async fn recreated_user_finds_its_inbox(b: &Backend) {
    let d = &b.directory;
    let first = d.put_user("a@x", "h").await.unwrap();
    let id = deliver(b, b"Subject: kept\r\n\r\nhello\r\n", &[first.inbox]).await;
    d.delete_user("a@x").await.unwrap();
    let again = d.put_user("a@x", "h2").await.unwrap();
    assert_eq!(again.inbox, first.inbox);
    assert_eq!(ids(&b.mail.pop3_view(again.inbox).await.unwrap()), id);
}

pub async fn deliver_and_read_back(b: &Backend) {
    let mb = MailboxId::random();
    let body = b"From: a@x\r\nSubject: hi\r\n\r\nline 1\r\n.line 2\r\n";
    let ids = deliver(b, body, &[mb]).await;
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0].uuid().get_version_num(), 1);
    let view = b.mail.pop3_view(mb).await.unwrap();
    assert_eq!(
        view,
        vec![ViewEntry {
            message_id: ids[0],
            size: body.len() as u64,
            uidl: None
        }]
    );
    assert_eq!(read(b, mb, ids[0]).await.as_deref(), Some(&body[..]));
    assert_eq!(b.mail.message_count(mb).await.unwrap(), 1);
    // Another mailbox cannot read it, and unknown ids read as gone.
    assert_eq!(read(b, MailboxId::random(), ids[0]).await, None);
    let unknown = crate::IdGenerator::new().next_id();
    assert_eq!(read(b, mb, unknown).await, None);
    assert!(b
        .mail
        .pop3_view(MailboxId::random())
        .await
        .unwrap()
        .is_empty());
}

pub async fn empty_and_large_bodies_round_trip(b: &Backend) {
    let mb = MailboxId::random();
    let empty = deliver(b, b"", &[mb]).await;
    assert_eq!(read(b, mb, empty[0]).await, Some(vec![]));
    // 3 MiB of varied bytes crosses every backend's inline/chunk threshold.
    let large: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let id = deliver(b, &large, &[mb]).await;
    let back = read(b, mb, id[0]).await.unwrap();
    assert!(back == large, "large body differs");
    let view = b.mail.pop3_view(mb).await.unwrap();
    assert_eq!(view[1].size, large.len() as u64);
}

pub async fn one_body_many_mailboxes(b: &Backend) {
    let boxes: Vec<MailboxId> = (0..50).map(|_| MailboxId::random()).collect();
    let body = vec![b'z'; 200_000];
    let ids = deliver(b, &body, &boxes).await;
    assert_eq!(ids.len(), 50);
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 50);
    b.mail.delete_messages(boxes[0], &ids[..1]).await.unwrap();
    assert_eq!(read(b, boxes[0], ids[0]).await, None);
    for (mb, id) in boxes.iter().zip(&ids).skip(1) {
        assert_eq!(read(b, *mb, *id).await.as_deref(), Some(&body[..]));
    }
    for (mb, id) in boxes.iter().zip(&ids).skip(1) {
        b.mail.delete_messages(*mb, &[*id]).await.unwrap();
    }
    for mb in &boxes {
        assert!(b.mail.pop3_view(*mb).await.unwrap().is_empty());
    }
}

pub async fn view_lists_in_delivery_order(b: &Backend) {
    let mb = MailboxId::random();
    let mut expected = Vec::new();
    for i in 0..30 {
        expected.extend(deliver(b, format!("Subject: {i}\r\n\r\n").as_bytes(), &[mb]).await);
    }
    assert_eq!(ids(&b.mail.pop3_view(mb).await.unwrap()), expected);
}

pub async fn delete_is_scoped_and_idempotent(b: &Backend) {
    let (mb, other) = (MailboxId::random(), MailboxId::random());
    let mut all = Vec::new();
    for i in 0..5 {
        all.extend(deliver(b, format!("m{i}\r\n").as_bytes(), &[mb]).await);
    }
    let theirs = deliver(b, b"theirs\r\n", &[other]).await;
    // Deleting another mailbox's message through this mailbox does nothing.
    b.mail.delete_messages(mb, &theirs).await.unwrap();
    assert_eq!(
        read(b, other, theirs[0]).await.as_deref(),
        Some(&b"theirs\r\n"[..])
    );
    b.mail.delete_messages(mb, &[all[1], all[3]]).await.unwrap();
    b.mail.delete_messages(mb, &[all[1], all[3]]).await.unwrap();
    assert_eq!(
        ids(&b.mail.pop3_view(mb).await.unwrap()),
        vec![all[0], all[2], all[4]]
    );
    assert_eq!(read(b, mb, all[1]).await, None);
    assert_eq!(read(b, mb, all[2]).await.as_deref(), Some(&b"m2\r\n"[..]));
}

pub async fn aborted_body_leaves_nothing(b: &Backend) {
    let before = all_bodies(b).await;
    let mut w = b.mail.begin_body().await.unwrap();
    w.write(&vec![b'q'; 2 * 1024 * 1024]).await.unwrap();
    let during = all_bodies(b).await;
    assert_eq!(
        during.len(),
        before.len() + 1,
        "a large body is stored as it arrives"
    );
    w.abort().await;
    assert_eq!(all_bodies(b).await, before, "the aborted body is gone");
}

/// Every stored body the collector could consider.
async fn all_bodies(b: &Backend) -> Vec<crate::BlobId> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = b.mail.scan_bodies(cursor, 100).await.unwrap();
        out.extend(page.items);
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    out.sort_by_key(|id| id.0);
    out
}

pub async fn concurrent_deliveries_all_land(b: &Backend) {
    let mb = MailboxId::random();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let backend = b.clone();
        tasks.push(tokio::spawn(async move {
            let body = format!("Subject: {i}\r\n\r\nbody {i}\r\n");
            (deliver(&backend, body.as_bytes(), &[mb]).await[0], body)
        }));
    }
    let mut delivered = Vec::new();
    for t in tasks {
        delivered.push(t.await.unwrap());
    }
    let view = b.mail.pop3_view(mb).await.unwrap();
    assert_eq!(view.len(), 64);
    for (id, body) in delivered {
        assert_eq!(read(b, mb, id).await.as_deref(), Some(body.as_bytes()));
    }
    let listed = ids(&view);
    let mut by_time = listed.clone();
    by_time.sort_by_key(|id| id.sort_key());
    assert_eq!(listed, by_time, "the view is ordered by the ids' time");
}

pub async fn view_keeps_imported_uidl_room(b: &Backend) {
    // The contract only fixes that a delivered message has no imported UIDL; importing is a
    // later feature, but the view carries the field on every backend.
    let mb = MailboxId::random();
    deliver(b, b"x\r\n", &[mb]).await;
    assert!(b
        .mail
        .pop3_view(mb)
        .await
        .unwrap()
        .iter()
        .all(|e| e.uidl.is_none()));
}

pub async fn metadata_and_view_entries_read_back(b: &Backend) {
    let mb = MailboxId::random();
    let body = b"Subject: m\r\n\r\nx\r\n";
    let size = body.len() as u64;
    let id = deliver(b, body, &[mb]).await[0];
    let meta = b.mail.message_meta(id).await.unwrap().unwrap();
    assert_eq!((meta.mailbox, meta.size, meta.uid), (mb, size, None));
    let entry = b.mail.view_entry(mb, id).await.unwrap().unwrap();
    assert_eq!(entry.size, size);
    // Removing the view entry leaves the message (read repair of a stale entry never deletes mail).
    b.mail.remove_view_entry(mb, id).await.unwrap();
    assert_eq!(b.mail.view_entry(mb, id).await.unwrap(), None);
    assert!(b.mail.pop3_view(mb).await.unwrap().is_empty());
    assert!(b.mail.message_meta(id).await.unwrap().is_some());
    // An imported UIDL survives a round trip.
    let imported = ViewEntry {
        message_id: id,
        size,
        uidl: Some("imported-uidl-1".into()),
    };
    b.mail.put_view_entry(mb, imported.clone()).await.unwrap();
    assert_eq!(b.mail.pop3_view(mb).await.unwrap(), vec![imported]);
    let unknown = crate::IdGenerator::new().next_id();
    assert_eq!(b.mail.message_meta(unknown).await.unwrap(), None);
}

pub async fn scans_cover_everything_across_pages(b: &Backend) {
    let boxes: Vec<MailboxId> = (0..3).map(|_| MailboxId::random()).collect();
    let mut all = std::collections::HashSet::new();
    for i in 0..9 {
        for id in deliver(b, format!("m{i}\r\n").as_bytes(), &boxes[i % 3..i % 3 + 1]).await {
            all.insert((id, boxes[i % 3]));
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut cursor = None;
    loop {
        let page = b.mail.scan_messages(cursor, 4).await.unwrap();
        assert!(page.items.len() <= 4);
        for item in page.items {
            assert!(seen.insert(item), "scan repeated {item:?}");
        }
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, all);
    let mut seen_view = std::collections::HashSet::new();
    let mut cursor = None;
    loop {
        let page = b.mail.scan_view(cursor, 4).await.unwrap();
        for (mb, id) in page.items {
            assert!(seen_view.insert((id, mb)));
        }
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen_view, all);
}

pub async fn uids_increase_and_list_in_order(b: &Backend) {
    let mb = MailboxId::random();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.extend(deliver(b, format!("m{i}\r\n").as_bytes(), &[mb]).await);
    }
    let first = b.mail.assign_uids(mb, &ids[..2]).await.unwrap();
    let rest = b.mail.assign_uids(mb, &ids[2..]).await.unwrap();
    let uids: Vec<u64> = first.iter().chain(&rest).copied().collect();
    assert!(uids.windows(2).all(|w| w[0] < w[1]), "{uids:?}");
    assert!(uids[0] >= 1);
    // Assigning again keeps the same UIDs.
    assert_eq!(b.mail.assign_uids(mb, &ids).await.unwrap(), uids);
    let listing = b.mail.uid_listing(mb).await.unwrap();
    assert!(listing.validity > 0);
    assert_eq!(
        listing.entries.iter().map(|e| e.uid).collect::<Vec<_>>(),
        uids
    );
    assert_eq!(
        listing
            .entries
            .iter()
            .map(|e| e.message_id)
            .collect::<Vec<_>>(),
        ids
    );
    assert_eq!(
        b.mail.message_meta(ids[0]).await.unwrap().unwrap().uid,
        Some(uids[0])
    );
    // Deletion and view repair both drop the UID entry; UIDs are never reused.
    b.mail.delete_messages(mb, &ids[..1]).await.unwrap();
    b.mail.remove_view_entry(mb, ids[1]).await.unwrap();
    let left: Vec<u64> = b
        .mail
        .uid_listing(mb)
        .await
        .unwrap()
        .entries
        .iter()
        .map(|e| e.uid)
        .collect();
    assert_eq!(left, uids[2..].to_vec());
    // A repaired entry gets its old UID back, in place.
    assert_eq!(
        b.mail.assign_uids(mb, &ids[1..2]).await.unwrap(),
        vec![uids[1]]
    );
    let listing = b.mail.uid_listing(mb).await.unwrap();
    let left: Vec<u64> = listing.entries.iter().map(|e| e.uid).collect();
    assert_eq!(left, uids[1..].to_vec());
    let ghost = crate::IdGenerator::new().next_id();
    assert_eq!(
        b.mail.assign_uids(mb, &[ghost]).await.unwrap(),
        vec![0],
        "no UID for a missing message"
    );
    let newer = deliver(b, b"new\r\n", &[mb]).await;
    let new_uid = b.mail.assign_uids(mb, &newer).await.unwrap()[0];
    assert!(new_uid > uids[4]);
}

pub async fn concurrent_uid_assignment_never_repeats(b: &Backend) {
    let mb = MailboxId::random();
    let mut tasks = Vec::new();
    for i in 0..12 {
        let backend = b.clone();
        tasks.push(tokio::spawn(async move {
            let ids = deliver(&backend, format!("c{i}\r\n").as_bytes(), &[mb]).await;
            backend.mail.assign_uids(mb, &ids).await.unwrap()[0]
        }));
    }
    let mut uids = Vec::new();
    for t in tasks {
        uids.push(t.await.unwrap());
    }
    let unique: std::collections::HashSet<_> = uids.iter().collect();
    assert_eq!(unique.len(), 12, "{uids:?}");
    assert_eq!(b.mail.uid_listing(mb).await.unwrap().entries.len(), 12);
}

pub async fn tasks_save_and_cancellation_survives_updates(b: &Backend) {
    let id = uuid::Uuid::new_v4();
    let mut t = TaskRecord {
        id,
        kind: "test".into(),
        status: "inProgress".into(),
        submitted_ms: 1,
        started_ms: Some(2),
        ended_ms: None,
        node: "n1".into(),
        heartbeat_ms: 3,
        cancel_requested: false,
        details: "{}".into(),
    };
    b.tasks.save_task(&t).await.unwrap();
    assert_eq!(b.tasks.get_task(id).await.unwrap(), Some(t.clone()));
    assert!(b.tasks.request_cancel(id).await.unwrap());
    assert!(!b.tasks.request_cancel(uuid::Uuid::new_v4()).await.unwrap());
    // The running node saves progress without knowing of the cancellation: it must survive.
    t.heartbeat_ms = 4;
    b.tasks.save_task(&t).await.unwrap();
    let got = b.tasks.get_task(id).await.unwrap().unwrap();
    assert!(got.cancel_requested);
    assert_eq!(got.heartbeat_ms, 4);
    assert_eq!(b.tasks.list_tasks().await.unwrap().len(), 1);
    assert!(b.tasks.delete_task(id).await.unwrap());
    assert!(b.tasks.get_task(id).await.unwrap().is_none());
    assert!(b.tasks.list_tasks().await.unwrap().is_empty());
    assert!(!b.tasks.delete_task(id).await.unwrap(), "already gone");
}

pub async fn unreferenced_bodies_are_collected_and_referenced_ones_kept(b: &Backend) {
    let mb = MailboxId::random();
    let kept_body = vec![b'k'; 600_000];
    let kept = deliver(b, &kept_body, &[mb]).await[0];
    // A body written but never delivered, as after a crash in the middle of a delivery.
    let mut w = b.mail.begin_body().await.unwrap();
    w.write(&vec![b'o'; 600_000]).await.unwrap();
    let orphan = w.finish().await.unwrap().blob_id;
    assert!(orphan
        .created()
        .is_some_and(|t| t <= std::time::SystemTime::now()));
    let mut bodies = Vec::new();
    let mut cursor = None;
    loop {
        let page = b.mail.scan_bodies(cursor, 1).await.unwrap();
        bodies.extend(page.items);
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert!(bodies.contains(&orphan), "{bodies:?}");
    // Giving a body up ends its in-flight protection; on Cassandra the marker is cleared in
    // the background, so collection is retried until it happens.
    let removed = collect_until(b, orphan).await;
    assert_eq!(removed, vec![orphan]);
    assert_eq!(read(b, mb, kept).await.as_deref(), Some(&kept_body[..]));
    assert!(
        !b.mail.remove_body_if_unreferenced(orphan).await.unwrap(),
        "already gone"
    );
}

/// Every body the scan lists, collected if the store allows it; returns the removed ones.
async fn collect_all(b: &Backend) -> Vec<crate::BlobId> {
    let mut removed = Vec::new();
    for blob in all_bodies(b).await {
        if b.mail.remove_body_if_unreferenced(blob).await.unwrap() {
            removed.push(blob);
        }
    }
    removed
}

/// A body still arriving, or arrived and not yet delivered, survives a collection that ignores
/// age (graceMinutes=0), and its delivery then reads back whole. Once given up, it is collected.
pub async fn bodies_in_flight_are_never_collected(b: &Backend) {
    let mb = MailboxId::random();
    let body: Vec<u8> = (0..700_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut w = b.mail.begin_body().await.unwrap();
    w.write(&body[..400_000]).await.unwrap();
    assert_eq!(
        collect_all(b).await,
        vec![],
        "a body being received was collected"
    );
    w.write(&body[400_000..]).await.unwrap();
    let staged = w.finish().await.unwrap();
    assert_eq!(
        collect_all(b).await,
        vec![],
        "a body awaiting delivery was collected"
    );
    let id = b.mail.deliver(staged, &[mb]).await.unwrap()[0];
    assert_eq!(
        collect_all(b).await,
        vec![],
        "a delivered body was collected"
    );
    assert_eq!(read(b, mb, id).await.as_deref(), Some(&body[..]));

    // Given up while arriving (the peer vanished): collectable, the delivered one kept.
    let mut w = b.mail.begin_body().await.unwrap();
    w.write(&body).await.unwrap();
    let staged = w.finish().await.unwrap();
    let abandoned = staged.blob_id;
    drop(staged);
    assert_eq!(collect_until(b, abandoned).await, vec![abandoned]);
    assert_eq!(read(b, mb, id).await.as_deref(), Some(&body[..]));
}

/// Collects until `blob` is removed (an in-flight marker may take a moment to clear); returns
/// everything removed meanwhile.
async fn collect_until(b: &Backend, blob: crate::BlobId) -> Vec<crate::BlobId> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut removed = Vec::new();
    while !removed.contains(&blob) {
        assert!(
            std::time::Instant::now() < deadline,
            "{blob} was never collected"
        );
        removed.extend(collect_all(b).await);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    removed
}
