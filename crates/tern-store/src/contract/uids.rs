//! UID-mode cases.

use super::*;

pub async fn uids_increase_and_list_in_order(b: &Backend) {
    let mb = MailboxId::random();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.extend(deliver(b, format!("m{i}\r\n").as_bytes(), &[mb]).await);
    }
    let first = b.uids.assign_uids(mb, &ids[..2]).await.unwrap();
    let rest = b.uids.assign_uids(mb, &ids[2..]).await.unwrap();
    let uids: Vec<u64> = first.iter().chain(&rest).copied().collect();
    assert!(uids.windows(2).all(|w| w[0] < w[1]), "{uids:?}");
    assert!(uids[0] >= 1);
    // Assigning again keeps the same UIDs.
    assert_eq!(b.uids.assign_uids(mb, &ids).await.unwrap(), uids);
    let listing = b.uids.uid_listing(mb).await.unwrap();
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
        b.repair.message_meta(ids[0]).await.unwrap().unwrap().uid,
        Some(uids[0])
    );
    // Deletion and view repair both drop the UID entry; UIDs are never reused.
    b.mail.delete_messages(mb, &ids[..1]).await.unwrap();
    b.repair.remove_view_entry(mb, ids[1]).await.unwrap();
    let left: Vec<u64> = b
        .uids
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
        b.uids.assign_uids(mb, &ids[1..2]).await.unwrap(),
        vec![uids[1]]
    );
    let listing = b.uids.uid_listing(mb).await.unwrap();
    let left: Vec<u64> = listing.entries.iter().map(|e| e.uid).collect();
    assert_eq!(left, uids[1..].to_vec());
    let ghost = crate::IdGenerator::new().next_id();
    assert_eq!(
        b.uids.assign_uids(mb, &[ghost]).await.unwrap(),
        vec![0],
        "no UID for a missing message"
    );
    let newer = deliver(b, b"new\r\n", &[mb]).await;
    let new_uid = b.uids.assign_uids(mb, &newer).await.unwrap()[0];
    assert!(new_uid > uids[4]);
}

pub async fn concurrent_uid_assignment_never_repeats(b: &Backend) {
    let mb = MailboxId::random();
    let mut tasks = Vec::new();
    for i in 0..12 {
        let backend = b.clone();
        tasks.push(tokio::spawn(async move {
            let ids = deliver(&backend, format!("c{i}\r\n").as_bytes(), &[mb]).await;
            backend.uids.assign_uids(mb, &ids).await.unwrap()[0]
        }));
    }
    let mut uids = Vec::new();
    for t in tasks {
        uids.push(t.await.unwrap());
    }
    let unique: std::collections::HashSet<_> = uids.iter().collect();
    assert_eq!(unique.len(), 12, "{uids:?}");
    assert_eq!(b.uids.uid_listing(mb).await.unwrap().entries.len(), 12);
}
