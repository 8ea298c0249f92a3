//! The contract every storage backend passes, in the manner of Apache James's `*Contract` tests
//! and object_store's shared integration suite. A backend instantiates it with
//! [`store_contract_tests!`](crate::store_contract_tests) and a factory expression (it may
//! `.await`) that yields `(Backend, guard)`, the guard living as long as the test.

use crate::{Directory, MailStore, MailboxId, MessageId, ViewEntry};
use std::sync::Arc;

pub struct Backend {
    pub directory: Arc<dyn Directory>,
    pub mail: Arc<dyn MailStore>,
}

impl Backend {
    pub fn new(directory: impl Directory + 'static, mail: impl MailStore + 'static) -> Self {
        Self {
            directory: Arc::new(directory),
            mail: Arc::new(mail),
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
    let mb = MailboxId::random();
    let mut w = b.mail.begin_body().await.unwrap();
    w.write(&vec![b'q'; 2 * 1024 * 1024]).await.unwrap();
    w.abort().await;
    assert!(b.mail.pop3_view(mb).await.unwrap().is_empty());
}

pub async fn concurrent_deliveries_all_land(b: &Backend) {
    let mb = MailboxId::random();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let backend = Backend {
            directory: b.directory.clone(),
            mail: b.mail.clone(),
        };
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
