//! Bodies on the embedded store. Small bodies go into redb with the message metadata, in the
//! same transaction (one fsync covers both); larger ones go to one file each under
//! `blobs/xx/<blob id>`, fsync'd (file and directory) before the metadata that names them is
//! committed. A file whose metadata never got committed (a crash mid-delivery) is an orphan and
//! is removed by [`sweep_orphans`] at start-up; it was never acknowledged.

use crate::{BlobId, BodyReader, BodyWriter, InFlight, Result, StagedBody, StagedPayload};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Write to the file in pieces of this size (fewer blocking-pool hops than one per read).
const FILE_WRITE_CHUNK: usize = 256 * 1024;
/// Read files in pieces of this size.
const FILE_READ_CHUNK: usize = 256 * 1024;

pub(crate) fn blob_path(blobs_dir: &Path, id: BlobId) -> PathBuf {
    let name = id.0.simple().to_string();
    blobs_dir.join(&name[..2]).join(name)
}

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
    pub(crate) blobs_dir: PathBuf,
    pub(crate) inline_max: usize,
    pub(crate) buf: Vec<u8>,
    pub(crate) file: Option<File>,
    pub(crate) size: u64,
}

impl EmbeddedBodyWriter {
    async fn flush_to_file(&mut self) -> Result<()> {
        let data = std::mem::take(&mut self.buf);
        let mut file = self.file.take();
        let path = blob_path(&self.blobs_dir, self.id);
        let file = tokio::task::spawn_blocking(move || -> Result<File> {
            let mut f = match file.take() {
                Some(f) => f,
                None => {
                    let dir = path.parent().unwrap_or(Path::new("."));
                    if !dir.exists() {
                        std::fs::create_dir_all(dir)?;
                        sync_dir(dir.parent().unwrap_or(Path::new(".")))?;
                    }
                    File::create(&path)?
                }
            };
            f.write_all(&data)?;
            Ok(f)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        self.file = Some(file);
        Ok(())
    }
}

#[async_trait]
impl BodyWriter for EmbeddedBodyWriter {
    async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.size += data.len() as u64;
        self.buf.extend_from_slice(data);
        let spill = self.file.is_some() || self.buf.len() > self.inline_max;
        if spill && self.buf.len() >= FILE_WRITE_CHUNK {
            self.flush_to_file().await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<StagedBody> {
        if self.file.is_none() && self.buf.len() <= self.inline_max {
            let data = std::mem::take(&mut self.buf);
            return Ok(StagedBody {
                blob_id: self.id,
                size: self.size,
                payload: StagedPayload::Inline(data),
                in_flight: InFlight::default(),
            });
        }
        self.flush_to_file().await?;
        if let Some(f) = self.file.take() {
            let dir = blob_path(&self.blobs_dir, self.id);
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                f.sync_all()?;
                sync_dir(dir.parent().unwrap_or(Path::new(".")))
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        }
        Ok(StagedBody {
            blob_id: self.id,
            size: self.size,
            payload: StagedPayload::Stored,
            in_flight: InFlight::holding(self.pending),
        })
    }

    async fn abort(mut self: Box<Self>) {
        if self.file.take().is_some() {
            let path = blob_path(&self.blobs_dir, self.id);
            let _ = tokio::fs::remove_file(path).await;
        }
    }
}

pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(crate) struct InlineReader(pub(crate) Option<Bytes>);

#[async_trait]
impl BodyReader for InlineReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        Ok(self.0.take())
    }
}

pub(crate) struct FileReader(pub(crate) Option<File>);

#[async_trait]
impl BodyReader for FileReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        let Some(mut f) = self.0.take() else {
            return Ok(None);
        };
        let (f, chunk) =
            tokio::task::spawn_blocking(move || -> std::io::Result<(File, Vec<u8>)> {
                let mut buf = vec![0u8; FILE_READ_CHUNK];
                let mut filled = 0;
                while filled < buf.len() {
                    match f.read(&mut buf[filled..])? {
                        0 => break,
                        n => filled += n,
                    }
                }
                buf.truncate(filled);
                Ok((f, buf))
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        if chunk.is_empty() {
            return Ok(None);
        }
        self.0 = Some(f);
        Ok(Some(Bytes::from(chunk)))
    }
}

/// The ids of every body file.
pub(crate) fn list_body_files(blobs_dir: &Path) -> std::io::Result<Vec<uuid::Uuid>> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(blobs_dir) else {
        return Ok(out);
    };
    for dir in dirs.flatten() {
        let Ok(files) = std::fs::read_dir(dir.path()) else {
            continue;
        };
        for file in files.flatten() {
            if let Some(id) = file
                .file_name()
                .to_str()
                .and_then(|n| uuid::Uuid::parse_str(n).ok())
            {
                out.push(id);
            }
        }
    }
    Ok(out)
}

/// Removes blob files that no committed message references. Runs at start-up, when no delivery
/// is in flight (redb's lock keeps other processes out), so every unreferenced file is an orphan.
pub(crate) fn sweep_orphans(blobs_dir: &Path, is_referenced: impl Fn(BlobId) -> bool) -> usize {
    let mut removed = 0;
    let Ok(dirs) = std::fs::read_dir(blobs_dir) else {
        return 0;
    };
    for dir in dirs.flatten() {
        let Ok(files) = std::fs::read_dir(dir.path()) else {
            continue;
        };
        for file in files.flatten() {
            let name = file.file_name();
            let Some(id) = name.to_str().and_then(|n| uuid::Uuid::parse_str(n).ok()) else {
                continue;
            };
            if !is_referenced(BlobId(id)) && std::fs::remove_file(file.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}
