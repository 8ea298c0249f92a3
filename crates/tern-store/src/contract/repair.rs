//! Repair cases: fresh reads, targeted writes, full scans.

use super::*;

pub async fn metadata_and_view_entries_read_back(b: &Backend) {
    let mb = MailboxId::random();
    let body = b"Subject: m\r\n\r\nx\r\n";
    let size = body.len() as u64;
    let id = deliver(b, body, &[mb]).await[0];
    let meta = b.repair.message_meta(id).await.unwrap().unwrap();
    assert_eq!((meta.mailbox, meta.size, meta.uid), (mb, size, None));
    let entry = b.repair.view_entry(mb, id).await.unwrap().unwrap();
    assert_eq!(entry.size, size);
    // Removing the view entry leaves the message (read repair of a stale entry never deletes mail).
    b.repair.remove_view_entry(mb, id).await.unwrap();
    assert_eq!(b.repair.view_entry(mb, id).await.unwrap(), None);
    assert!(b.mail.pop3_view(mb).await.unwrap().is_empty());
    assert!(b.repair.message_meta(id).await.unwrap().is_some());
    // An imported UIDL survives a round trip.
    let imported = ViewEntry {
        message_id: id,
        size,
        uidl: Some("imported-uidl-1".into()),
    };
    b.repair.put_view_entry(mb, imported.clone()).await.unwrap();
    assert_eq!(b.mail.pop3_view(mb).await.unwrap(), vec![imported]);
    let unknown = crate::IdGenerator::new().next_id();
    assert_eq!(b.repair.message_meta(unknown).await.unwrap(), None);
}

pub async fn scans_cover_everything_across_pages(b: &Backend) {
    let boxes: Vec<MailboxId> = (0..3).map(|_| MailboxId::random()).collect();
    let mut all = std::collections::HashSet::new();
    for i in 0..9 {
        for id in deliver(b, format!("m{i}\r\n").as_bytes(), &boxes[i % 3..i % 3 + 1]).await {
            all.insert((id, boxes[i % 3]));
        }
    }
    // Nine items, pages of three in the crate's tests (crate::SCAN_PAGE): page boundaries are
    // crossed, and nothing is repeated or lost at them.
    let mut seen = std::collections::HashSet::new();
    let mut messages = b.repair.all_messages();
    while let Some(item) = messages.next().await {
        let item = item.unwrap();
        assert!(seen.insert(item), "scan repeated {item:?}");
    }
    assert_eq!(seen, all);
    let mut seen_view = std::collections::HashSet::new();
    let mut view = b.repair.all_view_entries();
    while let Some(item) = view.next().await {
        let (mb, id) = item.unwrap();
        assert!(seen_view.insert((id, mb)), "scan repeated {id}");
    }
    assert_eq!(seen_view, all);
}
