//! Collection of unreferenced bodies on the embedded store.

use super::*;

#[async_trait]
impl BodyCollection for EmbeddedStore {
    fn all_bodies(&self) -> ScanStream<'_, BlobId> {
        paged(self.clone(), |store, cursor| async move {
            store.scan_bodies_page(cursor, SCAN_PAGE).await
        })
    }

    async fn remove_body_if_unreferenced(&self, blob: BlobId) -> Result<bool> {
        // In-flight first, references second: a delivery leaves the pending set only after
        // its references are committed, so a body seen neither pending nor referenced can
        // never be referenced later.
        if self.inner.pending.contains(blob) {
            return Ok(false);
        }
        {
            let txn = self.read()?;
            let refs = txn.open_table(BLOB_REFS).map_err(db_err)?;
            if refs.get(blob.0.as_u128()).map_err(db_err)?.is_some() {
                return Ok(false);
            }
        }
        match tokio::fs::remove_file(blob_path(&self.inner.blobs_dir, blob)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

impl EmbeddedStore {
    pub(crate) async fn scan_bodies_page(
        &self,
        cursor: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<ScanPage<BlobId>> {
        // Bodies inline in the database commit atomically with their references: only files
        // can be left unreferenced. The cursor is the last id returned.
        let after = cursor
            .as_deref()
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| Uuid::parse_str(c).ok());
        let dir = self.inner.blobs_dir.clone();
        let mut ids = tokio::task::spawn_blocking(move || blobs::list_body_files(&dir))
            .await
            .map_err(|e| StoreError::unavailable(e.to_string()))??;
        ids.sort();
        let items: Vec<BlobId> = ids
            .into_iter()
            .filter(|id| after.is_none_or(|a| *id > a))
            .take(limit)
            .map(BlobId)
            .collect();
        let next = (items.len() == limit)
            .then(|| items.last().map(|b| b.0.to_string().into_bytes()))
            .flatten();
        Ok(ScanPage { items, next })
    }
}
