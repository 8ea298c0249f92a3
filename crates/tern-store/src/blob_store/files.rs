//! Bodies as files on local disk, one per body under `<dir>/xx/<blob id>`, each fsync'd (file
//! and directory) before [`BlobUpload::finish`] returns. The embedded store's default.

use super::{BlobStore, BlobUpload};
use crate::{BlobId, BodyReader, Result, ScanStream};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Write to the file in pieces of this size (fewer blocking-pool hops than one per write).
const FILE_WRITE_CHUNK: usize = 256 * 1024;
/// Read files in pieces of this size.
const FILE_READ_CHUNK: usize = 256 * 1024;

/// Bodies in files under one directory.
#[derive(Debug, Clone)]
pub struct FileBlobStore {
    dir: PathBuf,
}

impl FileBlobStore {
    /// Keeps bodies under `dir`, which is created if missing.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// The file of body `id`.
    pub fn path(&self, id: BlobId) -> PathBuf {
        let name = id.0.simple().to_string();
        self.dir.join(&name[..2]).join(name)
    }

    /// Removes, at once and without blocking on anything else, the files for which
    /// `is_referenced` says no. For start-up, when the caller knows no body is being written
    /// (the embedded store holds its database's lock): every unreferenced file is then an
    /// orphan of a delivery that was never acknowledged.
    pub fn sweep_unreferenced(&self, is_referenced: impl Fn(BlobId) -> bool) -> usize {
        let mut removed = 0;
        for id in list_files(&self.dir) {
            if !is_referenced(id) && std::fs::remove_file(self.path(id)).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// The ids of every body file under `dir` (files of other names are not ours and ignored).
fn list_files(dir: &Path) -> Vec<BlobId> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(dir) else {
        return out;
    };
    for sub in dirs.flatten() {
        let Ok(files) = std::fs::read_dir(sub.path()) else {
            continue;
        };
        for file in files.flatten() {
            if let Some(id) = file
                .file_name()
                .to_str()
                .and_then(|n| uuid::Uuid::parse_str(n).ok())
            {
                out.push(BlobId(id));
            }
        }
    }
    out
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    Ok(tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??)
}

#[async_trait]
impl BlobStore for FileBlobStore {
    async fn begin(&self, id: BlobId) -> Result<Box<dyn BlobUpload>> {
        Ok(Box::new(FileUpload {
            path: self.path(id),
            buf: Vec::new(),
            file: None,
        }))
    }

    async fn open(&self, id: BlobId) -> Result<Option<Box<dyn BodyReader>>> {
        let path = self.path(id);
        match blocking(move || File::open(path)).await {
            Ok(f) => Ok(Some(Box::new(FileReader(Some(f))))),
            Err(crate::StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn remove(&self, id: BlobId) -> Result<()> {
        match tokio::fs::remove_file(self.path(id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn contains(&self, id: BlobId) -> Result<bool> {
        Ok(tokio::fs::try_exists(self.path(id)).await?)
    }

    fn list(&self) -> ScanStream<'_, BlobId> {
        let dir = self.dir.clone();
        futures_util::stream::once(async move { blocking(move || Ok(list_files(&dir))).await })
            .flat_map(|ids| match ids {
                Ok(ids) => futures_util::stream::iter(ids.into_iter().map(Ok)).left_stream(),
                Err(e) => futures_util::stream::once(async move { Err(e) }).right_stream(),
            })
            .boxed()
    }

    fn describe(&self) -> String {
        format!("files in {}", self.dir.display())
    }
}

struct FileUpload {
    path: PathBuf,
    buf: Vec<u8>,
    file: Option<File>,
}

impl FileUpload {
    async fn flush(&mut self) -> Result<()> {
        let data = std::mem::take(&mut self.buf);
        let file = self.file.take();
        let path = self.path.clone();
        let file = blocking(move || {
            let mut f = match file {
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
        .await?;
        self.file = Some(file);
        Ok(())
    }
}

#[async_trait]
impl BlobUpload for FileUpload {
    async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= FILE_WRITE_CHUNK {
            self.flush().await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<()> {
        self.flush().await?;
        if let Some(f) = self.file.take() {
            let path = self.path.clone();
            blocking(move || {
                f.sync_all()?;
                sync_dir(path.parent().unwrap_or(Path::new(".")))
            })
            .await?;
        }
        Ok(())
    }

    async fn abort(mut self: Box<Self>) {
        if self.file.take().is_some() {
            let _ = tokio::fs::remove_file(&self.path).await;
        }
    }
}

struct FileReader(Option<File>);

#[async_trait]
impl BodyReader for FileReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        let Some(mut f) = self.0.take() else {
            return Ok(None);
        };
        let (f, chunk) = blocking(move || {
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
        .await?;
        if chunk.is_empty() {
            return Ok(None);
        }
        self.0 = Some(f);
        Ok(Some(Bytes::from(chunk)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::blob_store_contract_tests!({
        let dir = tempfile::tempdir().unwrap();
        (FileBlobStore::new(dir.path()).unwrap(), dir)
    });
}
