//! The contract every [`BlobStore`] passes (files, S3): bytes back as written, whatever the
//! size and the pieces they came in; nothing left by an abort; removal and listing.
//! Instantiated with [`blob_store_contract_tests!`](crate::blob_store_contract_tests).

use crate::blob_store::BlobStore;
use crate::{BlobId, IdGenerator};
use futures_util::StreamExt;

fn new_id() -> BlobId {
    BlobId(IdGenerator::new().next_id().uuid())
}

/// Bytes that differ from one offset to the next, so that a part sent twice, lost or out of
/// order shows.
pub fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

async fn put(store: &dyn BlobStore, id: BlobId, data: &[u8], piece: usize) {
    let mut upload = store.begin(id).await.expect("begin");
    for chunk in data.chunks(piece.max(1)) {
        upload.write(chunk).await.expect("write");
    }
    upload.finish().await.expect("finish");
}

async fn get(store: &dyn BlobStore, id: BlobId) -> Option<Vec<u8>> {
    let mut reader = store.open(id).await.expect("open")?;
    let mut out = Vec::new();
    while let Some(chunk) = reader.next_chunk().await.expect("read") {
        out.extend_from_slice(&chunk);
    }
    Some(out)
}

async fn listed(store: &dyn BlobStore) -> Vec<BlobId> {
    store
        .list()
        .map(|r| r.expect("list"))
        .collect::<Vec<_>>()
        .await
}

pub async fn small_and_empty_bodies_round_trip(store: &dyn BlobStore) {
    for len in [0, 1, 4096, 100_000] {
        let id = new_id();
        let data = patterned(len);
        put(store, id, &data, 7919).await;
        assert_eq!(
            get(store, id).await.as_deref(),
            Some(&data[..]),
            "{len} octets"
        );
    }
}

/// Larger than S3's smallest part twice over, written in the pieces a network peer sends:
/// stored in several parts by a multipart store.
pub async fn large_bodies_round_trip_in_order(store: &dyn BlobStore) {
    let id = new_id();
    let data = patterned(11 * 1024 * 1024 + 12_345);
    put(store, id, &data, 65_536).await;
    let back = get(store, id).await.expect("stored");
    assert_eq!(back.len(), data.len());
    assert!(back == data, "bytes differ");
}

pub async fn a_missing_body_is_none(store: &dyn BlobStore) {
    assert!(store.open(new_id()).await.expect("open").is_none());
}

pub async fn an_aborted_body_leaves_nothing(store: &dyn BlobStore) {
    for len in [10_000, 6 * 1024 * 1024] {
        let id = new_id();
        let mut upload = store.begin(id).await.expect("begin");
        upload.write(&patterned(len)).await.expect("write");
        upload.abort().await;
        assert!(get(store, id).await.is_none(), "{len} octets");
        assert!(!listed(store).await.contains(&id), "{len} octets");
    }
}

pub async fn removal_is_idempotent_and_contains_follows(store: &dyn BlobStore) {
    let id = new_id();
    put(store, id, b"to be removed", 4).await;
    assert!(store.contains(id).await.expect("contains"));
    store.remove(id).await.expect("remove");
    assert!(get(store, id).await.is_none());
    assert!(!store.contains(id).await.expect("contains after removal"));
    store.remove(id).await.expect("second remove");
    store.remove(new_id()).await.expect("never stored");
    assert!(!store
        .contains(new_id())
        .await
        .expect("contains, never stored"));
}

pub async fn listing_shows_every_stored_body(store: &dyn BlobStore) {
    let ids: Vec<BlobId> = (0..5).map(|_| new_id()).collect();
    for id in &ids {
        put(store, *id, b"listed", 100).await;
    }
    store.remove(ids[4]).await.expect("remove");
    let found = listed(store).await;
    for id in &ids[..4] {
        assert!(found.contains(id), "{id} missing from {found:?}");
    }
    assert!(!found.contains(&ids[4]));
}

pub async fn writing_again_replaces_the_body(store: &dyn BlobStore) {
    // A retried upload of the same body (same id) must not leave a mix of both.
    let id = new_id();
    put(store, id, &patterned(50_000), 1000).await;
    put(store, id, b"second", 3).await;
    assert_eq!(get(store, id).await.as_deref(), Some(&b"second"[..]));
}

/// Generates one `#[tokio::test]` per blob store contract case; the factory expression (it may
/// `.await`) yields `(store, guard)`, the store an `Arc<dyn BlobStore>` or a concrete one.
#[macro_export]
macro_rules! blob_store_contract_tests {
    (#[ignore = $reason:literal] $factory:expr) => {
        $crate::blob_store_contract_tests!(@cases [#[ignore = $reason]] $factory);
    };
    ($factory:expr) => {
        $crate::blob_store_contract_tests!(@cases [] $factory);
    };
    (@cases $attrs:tt $factory:expr) => {
        $crate::blob_store_contract_tests!(@each $attrs $factory;
            small_and_empty_bodies_round_trip,
            large_bodies_round_trip_in_order,
            a_missing_body_is_none,
            an_aborted_body_leaves_nothing,
            removal_is_idempotent_and_contains_follows,
            listing_shows_every_stored_body,
            writing_again_replaces_the_body,
        );
    };
    (@each $attrs:tt $factory:expr; $($name:ident),* $(,)?) => {
        $( $crate::blob_store_contract_tests!(@one $attrs $factory; $name); )*
    };
    (@one [$($attr:tt)*] $factory:expr; $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $($attr)*
        async fn $name() {
            let (store, _guard) = $factory;
            $crate::contract::blob_store::$name(&store).await;
        }
    };
}
