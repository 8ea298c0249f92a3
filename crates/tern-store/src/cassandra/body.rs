//! Bodies in Cassandra: one partition per body in table `blobs`, cut into chunks of at most
//! `chunk_size` octets (one row each), so no cell grows past ~256 KiB. A body of one chunk is
//! written by the delivery itself, in the same statement as its size and references; a larger
//! one has its chunks written as it arrives and is completed (size, chunk count, references) by
//! the delivery. A body without `chunk_count` is incomplete and is never read.
//!
//! With an object store configured (`Connected::objects`), a body larger than one chunk goes
//! there instead, under its id, and its partition keeps the size, the references and a
//! `chunk_count` of 0, which means "in the object store" (a chunked body has at least one).
//! The in-flight marker protects the object while it is uploaded, as it protects chunks.

use super::Connected;
use crate::blob_store::BlobUpload;
use crate::{
    BlobId, BodyReader, BodyWriter, InFlight, Result, StagedBody, StagedPayload, StoreError,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Life of an in-flight marker (`bodies_in_flight`) without a refresh. A body whose delivery
/// died keeps its marker this long at most, then becomes collectable.
pub(crate) const IN_FLIGHT_TTL: Duration = Duration::from_secs(2 * 3600);
/// A body still arriving refreshes its marker this often, so a DATA of any length stays
/// protected (the SMTP DATA deadline bounds it anyway).
const IN_FLIGHT_REFRESH: Duration = Duration::from_secs(10 * 60);

/// Completes a staged body with its references (the messages or the queue entry about to name
/// it): written whole for a single chunk, size, chunk count and references for a chunked one.
/// Afterwards nothing can collect it; the caller drops its in-flight guard.
pub(crate) async fn commit(
    c: &Connected,
    blob: Uuid,
    size: u64,
    payload: StagedPayload,
    refs: Vec<scylla::value::CqlTimeuuid>,
) -> Result<()> {
    match payload {
        StagedPayload::Inline(data) => {
            c.exec(
                &c.st.insert_single_chunk_blob,
                (blob, data, size as i64, refs),
            )
            .await?;
        }
        StagedPayload::Stored if c.objects.is_some() => {
            c.exec(&c.st.insert_object_blob, (blob, size as i64, refs))
                .await?;
        }
        StagedPayload::Stored => {
            let chunks = chunk_count(size, c.chunk_size);
            c.exec(&c.st.complete_blob, (size as i64, chunks, refs, blob))
                .await?;
        }
    }
    Ok(())
}

/// Removes a body once its last reference is gone (the caller just removed one): its partition,
/// then its object if it has one. A failure leaves an unreferenced body, which the collector
/// removes later.
pub(crate) async fn release(c: &Connected, blob: Uuid) -> Result<()> {
    let row = c
        .first_row::<(Option<Vec<scylla::value::CqlTimeuuid>>, Option<i32>)>(
            &c.st.select_blob_refs,
            (blob,),
        )
        .await?;
    let (refs, chunks) = row.unwrap_or((None, None));
    if refs.is_some_and(|r| !r.is_empty()) {
        return Ok(());
    }
    remove(c, blob, chunks == Some(0)).await
}

/// Removes a body's partition and, when `in_object_store`, its object.
pub(crate) async fn remove(c: &Connected, blob: Uuid, in_object_store: bool) -> Result<()> {
    c.exec(&c.st.delete_blob, (blob,)).await?;
    if let (true, Some(objects)) = (in_object_store, &c.objects) {
        objects.remove(BlobId(blob)).await?;
    }
    Ok(())
}

pub(crate) fn chunk_count(size: u64, chunk_size: usize) -> i32 {
    size.div_ceil(chunk_size as u64).max(1) as i32
}

pub(crate) struct CassandraBodyWriter {
    conn: Arc<Connected>,
    blob: Uuid,
    buf: Vec<u8>,
    chunks_written: i32,
    size: u64,
    /// When the in-flight marker was last written, and the guard that clears it; `None`
    /// before the first chunk (a body of one chunk is written by the delivery itself and needs
    /// none).
    marked: Option<(Instant, MarkerGuard)>,
    /// The body's upload to the object store, once it outgrew one chunk (with one configured).
    upload: Option<Box<dyn BlobUpload>>,
}

/// Clears a body's in-flight marker when dropped: after the delivery has written the body's
/// references, or when the body is given up (aborted, or dropped with its connection). The
/// removal runs in the background and is best effort: a marker left behind only delays the
/// collection of that body until its TTL runs out.
pub(crate) struct MarkerGuard {
    conn: Arc<Connected>,
    blob: Uuid,
}

impl Drop for MarkerGuard {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (conn, blob) = (self.conn.clone(), self.blob);
        runtime.spawn(async move {
            if let Err(e) = conn.exec(&conn.st.clear_in_flight, (blob,)).await {
                tracing::warn!(blob = %blob, error = %e, "could not clear a body's in-flight marker");
            }
        });
    }
}

impl CassandraBodyWriter {
    pub(crate) fn new(conn: Arc<Connected>, blob: Uuid) -> Self {
        Self {
            conn,
            blob,
            buf: Vec::new(),
            chunks_written: 0,
            size: 0,
            marked: None,
            upload: None,
        }
    }

    /// Writes (or refreshes) the in-flight marker when due; always before the first chunk, so
    /// that no node's collector can see a chunk of this body without seeing the marker.
    async fn mark_in_flight(&mut self) -> Result<()> {
        match &mut self.marked {
            Some((at, _)) if at.elapsed() < IN_FLIGHT_REFRESH => return Ok(()),
            _ => {}
        }
        let c = &self.conn;
        let ttl = IN_FLIGHT_TTL.as_secs() as i32;
        c.exec(&c.st.mark_in_flight, (self.blob, ttl)).await?;
        let now = Instant::now();
        match &mut self.marked {
            Some((at, _)) => *at = now,
            None => {
                let guard = MarkerGuard {
                    conn: self.conn.clone(),
                    blob: self.blob,
                };
                self.marked = Some((now, guard));
            }
        }
        Ok(())
    }

    /// The staged body once its bytes are durable (chunks or object), holding its marker. The
    /// delivery that follows clears the marker once the body is referenced; a fresh one leaves
    /// it the whole TTL to get there.
    async fn stored(mut self: Box<Self>) -> Result<StagedBody> {
        self.mark_in_flight().await?;
        Ok(StagedBody {
            blob_id: BlobId(self.blob),
            size: self.size,
            payload: StagedPayload::Stored,
            in_flight: match self.marked.take() {
                Some((_, guard)) => InFlight::holding(guard),
                None => InFlight::default(),
            },
        })
    }

    async fn write_chunk(&mut self, data: Vec<u8>) -> Result<()> {
        self.mark_in_flight().await?;
        let c = &self.conn;
        c.exec(&c.st.insert_chunk, (self.blob, self.chunks_written, data))
            .await?;
        self.chunks_written += 1;
        Ok(())
    }
}

#[async_trait]
impl BodyWriter for CassandraBodyWriter {
    async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.size += data.len() as u64;
        if let Some(upload) = &mut self.upload {
            upload.write(data).await?;
            return self.mark_in_flight().await;
        }
        self.buf.extend_from_slice(data);
        let chunk = self.conn.chunk_size;
        if self.buf.len() > chunk {
            if let Some(objects) = self.conn.objects.clone() {
                // Marked before the upload begins, so no collector removes the object.
                self.mark_in_flight().await?;
                let mut upload = objects.begin(BlobId(self.blob)).await?;
                upload.write(&std::mem::take(&mut self.buf)).await?;
                self.upload = Some(upload);
                return Ok(());
            }
        }
        // Keep up to one chunk back: if the body ends within it, the delivery writes it.
        while self.buf.len() > chunk {
            let rest = self.buf.split_off(chunk);
            let full = std::mem::replace(&mut self.buf, rest);
            self.write_chunk(full).await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<StagedBody> {
        let blob_id = BlobId(self.blob);
        if let Some(upload) = self.upload.take() {
            upload.finish().await?;
            return self.stored().await;
        }
        if self.chunks_written == 0 {
            let data = std::mem::take(&mut self.buf);
            return Ok(StagedBody {
                blob_id,
                size: self.size,
                payload: StagedPayload::Inline(data),
                in_flight: InFlight::default(),
            });
        }
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf);
            self.write_chunk(last).await?;
        }
        if chunk_count(self.size, self.conn.chunk_size) != self.chunks_written {
            return Err(StoreError::invalid("chunk count mismatch"));
        }
        self.stored().await
    }

    async fn abort(mut self: Box<Self>) {
        if let Some(upload) = self.upload.take() {
            upload.abort().await;
        }
        if self.chunks_written > 0 {
            let c = &self.conn;
            if let Err(e) = c.exec(&c.st.delete_blob, (self.blob,)).await {
                tracing::warn!(blob = %self.blob, error = %e, "could not drop an aborted body");
            }
        }
        // Dropping `self` drops the marker guard, which clears the marker.
    }
}

/// Opens a complete body, or `None` if it is missing or incomplete.
pub(crate) async fn open(conn: Arc<Connected>, blob: Uuid) -> Result<Option<Box<dyn BodyReader>>> {
    let head = conn
        .first_row::<(Option<i64>, Option<i32>, Option<Vec<u8>>)>(
            &conn.st.select_blob_head,
            (blob,),
        )
        .await?;
    let (count, first) = match head {
        Some((Some(_size), Some(0), _)) => {
            let Some(objects) = &conn.objects else {
                return Err(StoreError::unavailable(format!(
                    "body {blob} is in the object store, which this node is not configured for \
                     ([bodies] location = \"s3\")"
                )));
            };
            return objects.open(BlobId(blob)).await;
        }
        Some((Some(_size), Some(count), Some(first))) => (count, first),
        _ => return Ok(None),
    };
    Ok(Some(Box::new(CassandraBodyReader {
        conn,
        blob,
        first: Some(Bytes::from(first)),
        next: 1,
        count,
    })))
}

struct CassandraBodyReader {
    conn: Arc<Connected>,
    blob: Uuid,
    first: Option<Bytes>,
    next: i32,
    count: i32,
}

#[async_trait]
impl BodyReader for CassandraBodyReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        if self.next >= self.count {
            return Ok(None);
        }
        let c = &self.conn;
        let row = c
            .first_row::<(Option<Vec<u8>>,)>(&c.st.select_chunk, (self.blob, self.next))
            .await?;
        let Some((Some(data),)) = row else {
            // The body was complete when opened: a chunk gone since means it was removed
            // meanwhile (a deletion by another session), not that Cassandra is unreachable.
            return Err(StoreError::not_found(format!(
                "chunk {} of body {}",
                self.next, self.blob
            )));
        };
        self.next += 1;
        Ok(Some(Bytes::from(data)))
    }
}
