//! Collection of unreferenced bodies on the embedded store.

use super::*;

#[async_trait]
impl BodyCollection for EmbeddedStore {
    fn all_bodies(&self) -> ScanStream<'_, BlobId> {
        // Bodies inline in the database commit atomically with their references: only those
        // in the blob store can be left unreferenced.
        self.inner.blobs.list()
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
            let refs = txn.open_table(BODIES).map_err(db_err)?;
            if refs.get(blob.0.as_u128()).map_err(db_err)?.is_some() {
                return Ok(false);
            }
        }
        if !self.inner.blobs.contains(blob).await? {
            return Ok(false);
        }
        self.inner.blobs.remove(blob).await?;
        Ok(true)
    }
}
