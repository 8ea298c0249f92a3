//! Bodies on the embedded store. Small bodies go into redb with the message metadata, in the
//! same transaction (one fsync covers both); larger ones go to the blob store (files under
//! `blobs/` by default, or an S3 bucket), durable before the metadata that names them is
//! committed. A body whose metadata never got committed (a crash mid-delivery) is an orphan,
//! never acknowledged: files are swept at start-up, and the collector finds the rest.

use crate::blob_store::{BlobStore, BlobUpload};
use crate::{BlobId, BodyReader, BodyWriter, InFlight, Result, StagedBody, StagedPayload};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// Bodies being received or awaiting their delivery's commit, which the collector must not
/// touch. One process owns the store (redb's lock), so memory is where this belongs.
#[derive(Clone, Default)]
pub(crate) struct PendingBodies(Arc<Mutex<HashSet<u128>>>);

/// One body's place in [`PendingBodies`], released when dropped.
pub(crate) struct PendingBody {
    set: PendingBodies,
    id: u128,
}

impl Drop for PendingBody {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.0.lock() {
            set.remove(&self.id);
        }
    }
}

impl PendingBodies {
    pub(crate) fn hold(&self, id: BlobId) -> PendingBody {
        if let Ok(mut set) = self.0.lock() {
            set.insert(id.0.as_u128());
        }
        PendingBody {
            set: self.clone(),
            id: id.0.as_u128(),
        }
    }

    /// Whether the body is in flight. On a poisoned lock, answers yes: keep on any doubt.
    pub(crate) fn contains(&self, id: BlobId) -> bool {
        self.0
            .lock()
            .map(|set| set.contains(&id.0.as_u128()))
            .unwrap_or(true)
    }
}

pub(crate) struct EmbeddedBodyWriter {
    pub(crate) pending: PendingBody,
    pub(crate) id: BlobId,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) inline_max: usize,
    pub(crate) buf: Vec<u8>,
    /// Started once the body outgrows `inline_max`.
    pub(crate) upload: Option<Box<dyn BlobUpload>>,
    pub(crate) size: u64,
}

#[async_trait]
impl BodyWriter for EmbeddedBodyWriter {
    async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.size += data.len() as u64;
        if let Some(upload) = &mut self.upload {
            return upload.write(data).await;
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() > self.inline_max {
            let mut upload = self.blobs.begin(self.id).await?;
            upload.write(&std::mem::take(&mut self.buf)).await?;
            self.upload = Some(upload);
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<StagedBody> {
        let Some(upload) = self.upload.take() else {
            let data = std::mem::take(&mut self.buf);
            return Ok(StagedBody {
                blob_id: self.id,
                size: self.size,
                payload: StagedPayload::Inline(data),
                in_flight: InFlight::default(),
            });
        };
        upload.finish().await?;
        Ok(StagedBody {
            blob_id: self.id,
            size: self.size,
            payload: StagedPayload::Stored,
            in_flight: InFlight::holding(self.pending),
        })
    }

    async fn abort(mut self: Box<Self>) {
        if let Some(upload) = self.upload.take() {
            upload.abort().await;
        }
    }
}

pub(crate) struct InlineReader(pub(crate) Option<Bytes>);

#[async_trait]
impl BodyReader for InlineReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        Ok(self.0.take())
    }
}
