//! Body-collection cases: unreferenced bodies go, referenced and in-flight ones stay.

use super::*;

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
    let bodies = all_bodies(b).await;
    assert!(bodies.contains(&orphan), "{bodies:?}");
    // Giving a body up ends its in-flight protection; on Cassandra the marker is cleared in
    // the background, so collection is retried until it happens.
    let removed = collect_until(b, orphan).await;
    assert_eq!(removed, vec![orphan]);
    assert_eq!(read(b, mb, kept).await.as_deref(), Some(&kept_body[..]));
    assert!(
        !b.collection
            .remove_body_if_unreferenced(orphan)
            .await
            .unwrap(),
        "already gone"
    );
}

/// Every body the scan lists, collected if the store allows it; returns the removed ones.
async fn collect_all(b: &Backend) -> Vec<crate::BlobId> {
    let mut removed = Vec::new();
    for blob in all_bodies(b).await {
        if b.collection
            .remove_body_if_unreferenced(blob)
            .await
            .unwrap()
        {
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
