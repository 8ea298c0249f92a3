//! Where bodies too large to sit beside their metadata are kept: a small trait, as
//! object_store's, with one implementation per place. The metadata stores decide what goes
//! here (the embedded store: bodies over `inline_max`; Cassandra: bodies over one chunk, when
//! an object store is configured) and keep the references; a blob store only keeps bytes under
//! an id. Every implementation passes [`crate::contract::blob_store`].
//!
//! - [`files::FileBlobStore`]: one fsync'd file per body (the embedded store's default);
//! - [`s3::S3BlobStore`]: one object per body in an S3-compatible bucket, multipart for large
//!   ones, retried with backoff.

pub mod files;
pub mod s3;

use crate::{BlobId, BodyReader, Result, ScanStream};
use async_trait::async_trait;

/// Bytes kept under a body id.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Starts writing the body `id`, durable once [`BlobUpload::finish`] has returned. (Only
    /// then does any metadata name it, so nothing reads a body still being written.)
    async fn begin(&self, id: BlobId) -> Result<Box<dyn BlobUpload>>;
    /// The body, read in chunks, or `None` if there is none under `id`.
    async fn open(&self, id: BlobId) -> Result<Option<Box<dyn BodyReader>>>;
    /// Removes the body; removing one that is not there is not an error. (One request on S3:
    /// deletions are on the POP3 path.)
    async fn remove(&self, id: BlobId) -> Result<()>;
    /// Whether a body is kept under `id` (for the collector, which reports what it removed).
    async fn contains(&self, id: BlobId) -> Result<bool>;
    /// The id of every body kept, in no particular order.
    fn list(&self) -> ScanStream<'_, BlobId>;
    /// Where the bodies are, for logs and errors (`files in /var/lib/tern/blobs`).
    fn describe(&self) -> String;
}

/// One body being written to a [`BlobStore`].
#[async_trait]
pub trait BlobUpload: Send {
    /// Appends data (buffered by the implementation as it sees fit).
    async fn write(&mut self, data: &[u8]) -> Result<()>;
    /// Makes the body durable and visible under its id.
    async fn finish(self: Box<Self>) -> Result<()>;
    /// Gives the body up; whatever was written is dropped (best effort: what remains is an
    /// unreferenced body, which the collector removes).
    async fn abort(self: Box<Self>);
}

/// New bodies in `new`; bodies written before a change of place read (and removed) from `old`
/// as well: the embedded store switched to S3 keeps serving the files it already had.
pub struct Layered {
    /// Where bodies are written.
    pub new: std::sync::Arc<dyn BlobStore>,
    /// Where older bodies may still be.
    pub old: std::sync::Arc<dyn BlobStore>,
}

#[async_trait]
impl BlobStore for Layered {
    async fn begin(&self, id: BlobId) -> Result<Box<dyn BlobUpload>> {
        self.new.begin(id).await
    }

    async fn open(&self, id: BlobId) -> Result<Option<Box<dyn BodyReader>>> {
        match self.new.open(id).await? {
            Some(body) => Ok(Some(body)),
            None => self.old.open(id).await,
        }
    }

    async fn remove(&self, id: BlobId) -> Result<()> {
        self.new.remove(id).await?;
        self.old.remove(id).await
    }

    async fn contains(&self, id: BlobId) -> Result<bool> {
        Ok(self.new.contains(id).await? || self.old.contains(id).await?)
    }

    fn list(&self) -> ScanStream<'_, BlobId> {
        use futures_util::StreamExt;
        self.new.list().chain(self.old.list()).boxed()
    }

    fn describe(&self) -> String {
        format!(
            "{} (older bodies: {})",
            self.new.describe(),
            self.old.describe()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::files::FileBlobStore;
    use super::*;
    use std::sync::Arc;

    fn layered(dir: &std::path::Path) -> Layered {
        Layered {
            new: Arc::new(FileBlobStore::new(dir.join("new")).unwrap()),
            old: Arc::new(FileBlobStore::new(dir.join("old")).unwrap()),
        }
    }

    crate::blob_store_contract_tests!({
        let dir = tempfile::tempdir().unwrap();
        (layered(dir.path()), dir)
    });

    #[tokio::test]
    async fn older_bodies_are_read_listed_and_removed_where_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let both = layered(dir.path());
        let id = BlobId(crate::IdGenerator::new().next_id().uuid());
        let mut upload = both.old.begin(id).await.unwrap();
        upload.write(b"from before").await.unwrap();
        upload.finish().await.unwrap();
        let mut body = both
            .open(id)
            .await
            .unwrap()
            .expect("read from the old place");
        assert_eq!(
            &body.next_chunk().await.unwrap().unwrap()[..],
            b"from before"
        );
        assert!(both.new.open(id).await.unwrap().is_none(), "not copied");
        let listed: Vec<BlobId> = futures_util::StreamExt::collect::<Vec<_>>(both.list())
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(listed, vec![id]);
        assert!(both.contains(id).await.unwrap());
        both.remove(id).await.unwrap();
        assert!(!both.contains(id).await.unwrap());
        assert!(both.open(id).await.unwrap().is_none());
    }
}
