//! Bodies as objects in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, SeaweedFS, Garage,
//! S3Proxy...), through the `object_store` crate, which signs the requests and retries failed
//! ones with backoff. One object per body, `<prefix>/<blob id>`. A body smaller than
//! `part_size` is one PUT; a larger one a multipart upload of `part_size` parts, sent as they
//! fill, so memory per body stays bounded. S3 answers a PUT (or the completion of a multipart
//! upload) only once the object is durable: that is when [`BlobUpload::finish`] returns.
//!
//! A multipart upload that a crash leaves neither completed nor aborted stays in the bucket,
//! invisible and unlisted, until the bucket's lifecycle rule `AbortIncompleteMultipartUpload`
//! removes it (docs/operating.md says to set one).

use super::{BlobStore, BlobUpload};
use crate::{BlobId, BodyReader, Result, ScanStream, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload,
    RetryConfig,
};
use std::sync::Arc;
use std::time::Duration;

/// S3's smallest part but the last.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// Where the bucket is and how to talk to it.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// `http(s)://host:port` of an S3-compatible server; `None` for AWS itself.
    pub endpoint: Option<String>,
    /// The bucket's region (`us-east-1` for most S3-compatible servers).
    pub region: String,
    /// The bucket, which must exist.
    pub bucket: String,
    /// Keys start with this (`tern/bodies`); empty for the bucket's root.
    pub prefix: String,
    /// Static credentials; `None` takes them from the environment (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) or the instance's role.
    pub credentials: Option<(String, String)>,
    /// `https://bucket.host/key` addressing rather than `https://host/bucket/key`.
    pub virtual_hosted_style: bool,
    /// Size of a multipart upload's parts, at least [`MIN_PART_SIZE`].
    pub part_size: usize,
    /// Retries of one request (connection errors, 5xx, throttling) before giving up.
    pub max_retries: usize,
    /// Time after which a request is no longer retried.
    pub retry_timeout: Duration,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time allowed for one request, body included.
    pub request_timeout: Duration,
}

impl Default for S3Options {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: "us-east-1".into(),
            bucket: String::new(),
            prefix: String::new(),
            credentials: None,
            virtual_hosted_style: false,
            part_size: 8 * 1024 * 1024,
            max_retries: 10,
            retry_timeout: Duration::from_secs(180),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
        }
    }
}

impl S3Options {
    /// The test server `scripts/s3/run.sh` starts (endpoint from `TERN_TEST_S3`, default
    /// `http://127.0.0.1:9390`), keys under a prefix of their own so that tests never meet.
    pub fn test_server() -> Self {
        Self {
            endpoint: Some(
                std::env::var("TERN_TEST_S3").unwrap_or_else(|_| "http://127.0.0.1:9390".into()),
            ),
            bucket: "tern-test".into(),
            prefix: format!("test-{}", uuid::Uuid::new_v4().simple()),
            credentials: Some(("tern".into(), "tern-secret".into())),
            // The smallest S3 allows: the contract's bodies then take several parts.
            part_size: MIN_PART_SIZE,
            max_retries: 2,
            retry_timeout: Duration::from_secs(20),
            ..Self::default()
        }
    }
}

/// Bodies in an S3 bucket.
#[derive(Debug, Clone)]
pub struct S3BlobStore {
    store: Arc<AmazonS3>,
    prefix: Path,
    part_size: usize,
    describe: String,
}

fn s3_error(e: object_store::Error) -> StoreError {
    match e {
        object_store::Error::NotFound { path, .. } => StoreError::not_found(path),
        other => StoreError::unavailable_from("S3", other),
    }
}

impl S3BlobStore {
    /// A client for the bucket; makes no request (see [`S3BlobStore::check`]).
    pub fn new(options: S3Options) -> Result<Self> {
        if options.bucket.is_empty() {
            return Err(StoreError::invalid("S3 bucket name is empty"));
        }
        if options.part_size < MIN_PART_SIZE {
            return Err(StoreError::invalid(format!(
                "S3 part size {} is below S3's minimum of {MIN_PART_SIZE}",
                options.part_size
            )));
        }
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&options.bucket)
            .with_region(&options.region)
            .with_virtual_hosted_style_request(options.virtual_hosted_style)
            // One DELETE per object: Tern removes bodies one at a time, and not every
            // S3-compatible server implements the bulk POST ?delete (S3Proxy answers 501).
            .with_disable_bulk_delete(true)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: options.max_retries,
                retry_timeout: options.retry_timeout,
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(options.connect_timeout)
                    .with_timeout(options.request_timeout),
            );
        if let Some(endpoint) = &options.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some((key, secret)) = &options.credentials {
            builder = builder
                .with_access_key_id(key)
                .with_secret_access_key(secret);
        }
        let store = builder
            .build()
            .map_err(|e| StoreError::invalid_from("S3 configuration", e))?;
        let prefix = Path::parse(&options.prefix)
            .map_err(|e| StoreError::invalid_from("S3 key prefix", e))?;
        let describe = format!(
            "S3 bucket {} at {}, keys under {:?}",
            options.bucket,
            options.endpoint.as_deref().unwrap_or("AWS"),
            options.prefix
        );
        Ok(Self {
            store: Arc::new(store),
            prefix,
            part_size: options.part_size,
            describe,
        })
    }

    /// One listing request: proves the endpoint answers, the credentials are accepted and the
    /// bucket exists.
    pub async fn check(&self) -> Result<()> {
        let mut objects = self.store.list(Some(&self.prefix));
        match objects.next().await {
            Some(Err(e)) => Err(s3_error(e)),
            _ => Ok(()),
        }
    }

    fn key(&self, id: BlobId) -> Path {
        self.prefix.clone().join(id.0.simple().to_string())
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn begin(&self, id: BlobId) -> Result<Box<dyn BlobUpload>> {
        Ok(Box::new(S3Upload {
            store: self.store.clone(),
            key: self.key(id),
            part_size: self.part_size,
            buf: Vec::new(),
            multipart: None,
        }))
    }

    async fn open(&self, id: BlobId) -> Result<Option<Box<dyn BodyReader>>> {
        match self.store.get(&self.key(id)).await {
            Ok(got) => Ok(Some(Box::new(S3Reader(got.into_stream())))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(s3_error(e)),
        }
    }

    async fn remove(&self, id: BlobId) -> Result<()> {
        match self.store.delete(&self.key(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3_error(e)),
        }
    }

    async fn contains(&self, id: BlobId) -> Result<bool> {
        match self.store.head(&self.key(id)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(s3_error(e)),
        }
    }

    fn list(&self) -> ScanStream<'_, BlobId> {
        self.store
            .list(Some(&self.prefix))
            .filter_map(|meta| async move {
                match meta {
                    // Objects not named by a body id are not Tern's: left alone.
                    Ok(meta) => meta
                        .location
                        .filename()
                        .and_then(|name| uuid::Uuid::try_parse(name).ok())
                        .map(|id| Ok(BlobId(id))),
                    Err(e) => Some(Err(s3_error(e))),
                }
            })
            .boxed()
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

struct S3Upload {
    store: Arc<AmazonS3>,
    key: Path,
    part_size: usize,
    buf: Vec<u8>,
    multipart: Option<Box<dyn MultipartUpload>>,
}

impl S3Upload {
    /// Sends the next full part, starting the multipart upload with the first.
    async fn send_part(&mut self, part: Vec<u8>) -> Result<()> {
        let upload = match &mut self.multipart {
            Some(upload) => upload,
            None => {
                let started = self.store.put_multipart(&self.key).await;
                self.multipart.insert(started.map_err(s3_error)?)
            }
        };
        upload
            .put_part(PutPayload::from(part))
            .await
            .map_err(s3_error)
    }
}

#[async_trait]
impl BlobUpload for S3Upload {
    async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(data);
        while self.buf.len() >= self.part_size {
            let rest = self.buf.split_off(self.part_size);
            let part = std::mem::replace(&mut self.buf, rest);
            self.send_part(part).await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<()> {
        let last = std::mem::take(&mut self.buf);
        if self.multipart.is_none() {
            self.store
                .put(&self.key, PutPayload::from(last))
                .await
                .map_err(s3_error)?;
            return Ok(());
        }
        if !last.is_empty() {
            self.send_part(last).await?;
        }
        if let Some(upload) = &mut self.multipart {
            upload.complete().await.map_err(s3_error)?;
        }
        Ok(())
    }

    async fn abort(mut self: Box<Self>) {
        if let Some(mut upload) = self.multipart.take() {
            if let Err(e) = upload.abort().await {
                tracing::warn!(key = %self.key, error = %e, "could not abort a multipart upload");
            }
        }
    }
}

struct S3Reader(BoxStream<'static, object_store::Result<Bytes>>);

#[async_trait]
impl BodyReader for S3Reader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        match self.0.next().await {
            None => Ok(None),
            Some(chunk) => chunk.map(Some).map_err(s3_error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::blob_store_contract_tests!(
        #[ignore = "needs S3: run scripts/test"]
        {
            let store = S3BlobStore::new(S3Options::test_server()).expect("S3 options");
            store.check().await.expect("the test S3 server answers");
            (store, ())
        }
    );

    #[test]
    fn bad_options_are_refused_before_any_request() {
        let no_bucket = S3BlobStore::new(S3Options::default()).unwrap_err();
        assert!(no_bucket.to_string().contains("bucket"), "{no_bucket}");
        let small_parts = S3BlobStore::new(S3Options {
            bucket: "b".into(),
            part_size: 1024 * 1024,
            ..S3Options::default()
        })
        .unwrap_err();
        assert!(
            small_parts.to_string().contains("part size"),
            "{small_parts}"
        );
    }

    /// A proxy in front of the test S3 server that answers the first `failures` connections
    /// with 503 Slow Down (what S3 says when it throttles) and forwards the others; returns its
    /// endpoint and the count of connections it took.
    async fn flaky_proxy(failures: usize) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let upstream = S3Options::test_server()
            .endpoint
            .expect("test endpoint")
            .trim_start_matches("http://")
            .to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if n < failures {
                        let mut head = Vec::new();
                        let mut buf = [0u8; 4096];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match client.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => head.extend_from_slice(&buf[..k]),
                            }
                        }
                        let _ = client
                            .write_all(
                                b"HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\n\
                                  Connection: close\r\n\r\n",
                            )
                            .await;
                        return;
                    }
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        (endpoint, seen)
    }

    #[tokio::test]
    #[ignore = "needs S3: run scripts/test"]
    async fn throttled_requests_are_retried_and_give_up_as_temporary_errors() {
        use crate::blob_store::BlobStore;
        use std::sync::atomic::Ordering;
        let id = BlobId(crate::IdGenerator::new().next_id().uuid());
        let (endpoint, seen) = flaky_proxy(2).await;
        let patient = S3BlobStore::new(S3Options {
            endpoint: Some(endpoint),
            max_retries: 3,
            ..S3Options::test_server()
        })
        .unwrap();
        let mut upload = patient.begin(id).await.unwrap();
        upload.write(b"worth the wait").await.unwrap();
        upload.finish().await.expect("stored on the third attempt");
        assert!(seen.load(Ordering::SeqCst) >= 3);
        let mut body = patient.open(id).await.unwrap().expect("stored");
        assert_eq!(
            &body.next_chunk().await.unwrap().unwrap()[..],
            b"worth the wait"
        );

        let (endpoint, _) = flaky_proxy(usize::MAX).await;
        let hopeless = S3BlobStore::new(S3Options {
            endpoint: Some(endpoint),
            max_retries: 2,
            ..S3Options::test_server()
        })
        .unwrap();
        let mut upload = hopeless.begin(id).await.unwrap();
        upload.write(b"never").await.unwrap();
        let e = upload.finish().await.unwrap_err();
        assert!(e.is_temporary(), "{e}");
    }

    #[tokio::test]
    #[ignore = "needs S3: run scripts/test"]
    async fn wrong_credentials_and_missing_buckets_fail_the_check() {
        let wrong = S3BlobStore::new(S3Options {
            credentials: Some(("tern".into(), "not-the-secret".into())),
            ..S3Options::test_server()
        })
        .unwrap();
        assert!(wrong.check().await.is_err());
        let missing = S3BlobStore::new(S3Options {
            bucket: "no-such-bucket".into(),
            ..S3Options::test_server()
        })
        .unwrap();
        assert!(missing.check().await.is_err());
    }
}
