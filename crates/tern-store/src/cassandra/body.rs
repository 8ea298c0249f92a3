//! Bodies in Cassandra: one partition per body in table `blobs`, cut into chunks of at most
//! `chunk_size` octets (one row each), so no cell grows past ~256 KiB. A body of one chunk is
//! written by the delivery itself, in the same statement as its size and references; a larger
//! one has its chunks written as it arrives and is completed (size, chunk count, references) by
//! the delivery. A body without `chunk_count` is incomplete and is never read.

use super::{unavailable, Connected};
use crate::{BlobId, BodyReader, BodyWriter, Result, StagedBody, StagedPayload, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;
use uuid::Uuid;

pub(crate) fn chunk_count(size: u64, chunk_size: usize) -> i32 {
    size.div_ceil(chunk_size as u64).max(1) as i32
}

pub(crate) struct CassandraBodyWriter {
    conn: Arc<Connected>,
    blob: Uuid,
    buf: Vec<u8>,
    chunks_written: i32,
    size: u64,
}

impl CassandraBodyWriter {
    pub(crate) fn new(conn: Arc<Connected>, blob: Uuid) -> Self {
        Self {
            conn,
            blob,
            buf: Vec::new(),
            chunks_written: 0,
            size: 0,
        }
    }

    async fn write_chunk(&mut self, data: Vec<u8>) -> Result<()> {
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
        self.buf.extend_from_slice(data);
        let chunk = self.conn.chunk_size;
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
        if self.chunks_written == 0 {
            let data = std::mem::take(&mut self.buf);
            return Ok(StagedBody {
                blob_id,
                size: self.size,
                payload: StagedPayload::Inline(data),
            });
        }
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf);
            self.write_chunk(last).await?;
        }
        if chunk_count(self.size, self.conn.chunk_size) != self.chunks_written {
            return Err(StoreError::Invalid("chunk count mismatch".into()));
        }
        Ok(StagedBody {
            blob_id,
            size: self.size,
            payload: StagedPayload::Stored,
        })
    }

    async fn abort(self: Box<Self>) {
        if self.chunks_written > 0 {
            let c = &self.conn;
            if let Err(e) = c.exec(&c.st.delete_blob, (self.blob,)).await {
                tracing::warn!(blob = %self.blob, error = %e, "could not drop an aborted body");
            }
        }
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
    let Some((Some(_size), Some(count), Some(first))) = head else {
        return Ok(None);
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
            return Err(unavailable(format!(
                "chunk {} of body {} is missing",
                self.next, self.blob
            )));
        };
        self.next += 1;
        Ok(Some(Bytes::from(data)))
    }
}
