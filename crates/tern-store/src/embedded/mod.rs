//! The embedded backend: one redb database for metadata and small bodies, files for large
//! bodies, all under one data directory. Writes are group-committed (see [`committer`]).

mod blobs;
mod collection;
mod committer;
mod directory;
mod lookup_cache;
mod mail;
mod mappings;
mod queue;
mod quotas;
mod repair;
mod repositories;
mod tasks;
mod uids;

use crate::blob_store::{files::FileBlobStore, BlobStore, Layered};
use crate::{
    paged, BlobId, BodyCollection, BodyReader, BodyWriter, Directory, IdGenerator, MailStore,
    MailboxId, MailboxInfo, MessageCopy, MessageId, MessageMeta, Repair, Result, ScanPage,
    ScanStream, StagedBody, StagedPayload, StoreError, TaskRecord, TaskStore, UidEntry, UidListing,
    UidStore, UserRecord, ViewEntry, INBOX, SCAN_PAGE,
};
use async_trait::async_trait;
use blobs::{EmbeddedBodyWriter, InlineReader, PendingBodies};
use bytes::Bytes;
use committer::Committer;
use redb::{Database, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::Arc;
use uuid::Uuid;

const DOMAINS: TableDefinition<&str, ()> = TableDefinition::new("domains");
/// user name -> password hash (PHC string)
const USERS: TableDefinition<&str, &str> = TableDefinition::new("users");
/// (user name, mailbox name) -> mailbox id
const MAILBOXES: TableDefinition<(&str, &str), u128> = TableDefinition::new("mailboxes");
/// message sort key -> (mailbox id, blob id, size, the copy's own header lines or "")
const MESSAGES: TableDefinition<u128, (u128, u128, u64, &[u8])> =
    TableDefinition::new("message_records");
/// (mailbox id, message sort key) -> (size, imported UIDL or "")
const POP3_VIEW: TableDefinition<(u128, u128), (u64, &str)> = TableDefinition::new("pop3_view");
/// blob id -> (number of messages and kept mails referencing it, the body itself when it is
/// small enough to live in the database)
const BODIES: TableDefinition<u128, (u64, Option<&[u8]>)> = TableDefinition::new("bodies");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// UID mode: message sort key -> UID
const MESSAGE_UIDS: TableDefinition<u128, u64> = TableDefinition::new("message_uids");
/// UID mode: (mailbox id, UID) -> (message sort key, size)
const MESSAGES_BY_UID: TableDefinition<(u128, u64), (u128, u64)> =
    TableDefinition::new("messages_by_uid");
/// UID mode: mailbox id -> (next UID, UID validity)
const MAILBOX_UIDS: TableDefinition<u128, (u64, u64)> = TableDefinition::new("mailbox_uids");
/// task id -> task record (JSON)
const TASKS: TableDefinition<u128, &str> = TableDefinition::new("tasks");
/// outbound queue: (due time in ms, entry id) -> entry (JSON)
const OUTBOUND_QUEUE: TableDefinition<(i64, u128), &str> = TableDefinition::new("outbound_queue");
/// recipient rewriting: (source, kind, target) -> ()
const MAPPINGS: TableDefinition<(&str, &str, &str), ()> = TableDefinition::new("mappings");
/// mail repositories that exist -> ()
const REPOSITORIES: TableDefinition<&str, ()> = TableDefinition::new("mail_repositories");
/// (repository, mail key's sort key) -> kept mail (JSON)
const REPOSITORY_MAILS: TableDefinition<(&str, u128), &str> =
    TableDefinition::new("repository_mails");
/// quota limits: (scope key, "count" | "size") -> limit (-1: unlimited)
const QUOTA_LIMITS: TableDefinition<(&str, &str), i64> = TableDefinition::new("quota_limits");
/// quota usage: mailbox id -> (messages, octets)
const QUOTA_USAGE: TableDefinition<u128, (i64, i64)> = TableDefinition::new("quota_usage");

/// 2: a message's header in its record, a body's references beside its bytes (one B-tree
/// insert each instead of two; see [`schema_v1`]).
const SCHEMA_VERSION: u64 = 2;

/// The tables of schema version 1, read once to move their rows into version 2's.
mod schema_v1 {
    use redb::TableDefinition;

    pub(super) const MESSAGES: TableDefinition<u128, (u128, u128, u64)> =
        TableDefinition::new("messages");
    pub(super) const MESSAGE_HEADERS: TableDefinition<u128, &[u8]> =
        TableDefinition::new("message_headers");
    pub(super) const BLOB_REFS: TableDefinition<u128, u64> = TableDefinition::new("blob_refs");
    pub(super) const BLOB_INLINE: TableDefinition<u128, &[u8]> =
        TableDefinition::new("blob_inline");
}

/// Tuning of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Bodies up to this many octets are stored inside the database, in the delivery's own
    /// transaction; larger ones get a file.
    pub inline_max: usize,
    /// Memory redb may use to cache pages (its own default is 1 GiB).
    pub cache_bytes: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            inline_max: 128 * 1024,
            cache_bytes: 256 * 1024 * 1024,
        }
    }
}

/// The embedded store; cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    /// Where bodies larger than `inline_max` go.
    blobs: Arc<dyn BlobStore>,
    committer: Committer,
    ids: IdGenerator,
    options: EmbeddedOptions,
    /// Bodies the collector must leave alone (see [`crate::InFlight`]).
    pending: PendingBodies,
    /// Wakes the queue runner when an entry is added or rescheduled.
    queue_changed: Arc<tokio::sync::Notify>,
    /// The RCPT-time lookups' answers, until the next administrative write.
    lookups: lookup_cache::LookupCache,
}

fn db_err(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::database(e)
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`, large bodies in files under `dir/blobs`. Fails if
    /// another process holds it.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<Self> {
        Self::open_with_blob_store(dir, options, None)
    }

    /// Opens (or creates) the store in `dir`, large bodies in `blobs` (files under
    /// `dir/blobs` when `None`; those files stay readable when `blobs` is given). Fails if
    /// another process holds it.
    pub fn open_with_blob_store(
        dir: &Path,
        options: EmbeddedOptions,
        blobs: Option<Arc<dyn BlobStore>>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create(dir.join("tern.redb"))
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::unavailable(format!(
                    "{} is in use by another process (is another tern running on this data dir?)",
                    dir.display()
                )),
                other => db_err(other),
            })?;
        let db = Arc::new(db);
        init_schema(&db)?;
        let files = FileBlobStore::new(dir.join("blobs"))?;
        sweep_orphan_files(&files, &db);
        let blobs: Arc<dyn BlobStore> = match blobs {
            // Files written before the switch stay readable.
            Some(new) => Arc::new(Layered {
                new,
                old: Arc::new(files),
            }),
            None => Arc::new(files),
        };
        let committer = Committer::start(db.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                blobs,
                committer,
                ids: IdGenerator::new(),
                options,
                pending: PendingBodies::default(),
                queue_changed: Arc::new(tokio::sync::Notify::new()),
                lookups: Default::default(),
            }),
        })
    }

    /// An administrative write to domains, users, mailboxes, mappings or quota limits; the
    /// remembered lookups are forgotten once it committed (even if it failed: nothing to
    /// lose but a few reads).
    async fn write_admin<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&redb::WriteTransaction) -> Result<T> + Send + 'static,
    {
        let result = self.inner.committer.write(f).await;
        self.inner.lookups.forget();
        result
    }

    fn read(&self) -> Result<redb::ReadTransaction> {
        self.inner.db.begin_read().map_err(db_err)
    }

    /// Runs a read that may touch the disk at length on the blocking pool.
    async fn read_blocking<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&redb::ReadTransaction) -> Result<T> + Send + 'static,
    {
        let db = self.inner.db.clone();
        tokio::task::spawn_blocking(move || read(&db.begin_read().map_err(db_err)?))
            .await
            .map_err(|e| StoreError::unavailable(format!("read task: {e}")))?
    }
}

/// Removes the body files no committed message references: at start-up nothing is being
/// written (redb's lock keeps other processes out), so each is the orphan of a delivery that
/// was never acknowledged. (Bodies in a bucket are left to the collector: listing a bucket at
/// every start would be slow.)
fn sweep_orphan_files(files: &FileBlobStore, db: &Database) {
    let removed = files.sweep_unreferenced(|id| {
        let Ok(txn) = db.begin_read() else {
            return true;
        };
        let Ok(t) = txn.open_table(BODIES) else {
            return true;
        };
        // On any doubt, keep the file.
        !matches!(t.get(id.0.as_u128()), Ok(None))
    });
    if removed > 0 {
        tracing::info!(
            removed,
            "removed orphan body files of unacknowledged deliveries"
        );
    }
}

/// What committing a staged body takes: its key, its bytes when they go inline with the
/// metadata, and the in-flight marker to drop once the commit is done.
fn staged_parts(body: StagedBody) -> (u128, u64, Option<Vec<u8>>, crate::InFlight) {
    let inline = match body.payload {
        StagedPayload::Inline(data) => Some(data),
        StagedPayload::Stored => None,
    };
    (body.blob_id.0.as_u128(), body.size, inline, body.in_flight)
}

/// Schema 1 to 2, in the opening transaction: each message record takes its header, each body
/// its reference count; the four old tables go. One transaction, so an interrupted migration
/// leaves version 1 intact and runs again at the next start.
fn migrate_from_v1(txn: &redb::WriteTransaction) -> Result<()> {
    let (mut messages, mut bodies) = (0u64, 0u64);
    {
        let old_messages = txn.open_table(schema_v1::MESSAGES).map_err(db_err)?;
        let old_headers = txn.open_table(schema_v1::MESSAGE_HEADERS).map_err(db_err)?;
        let mut records = txn.open_table(MESSAGES).map_err(db_err)?;
        for row in old_messages.iter().map_err(db_err)? {
            let (key, value) = row.map_err(db_err)?;
            let (key, (mailbox, blob, size)) = (key.value(), value.value());
            let header = old_headers.get(key).map_err(db_err)?;
            let header = header.as_ref().map_or(&[][..], |h| h.value());
            records
                .insert(key, (mailbox, blob, size, header))
                .map_err(db_err)?;
            messages += 1;
        }
        let old_refs = txn.open_table(schema_v1::BLOB_REFS).map_err(db_err)?;
        let old_inline = txn.open_table(schema_v1::BLOB_INLINE).map_err(db_err)?;
        let mut new_bodies = txn.open_table(BODIES).map_err(db_err)?;
        // An inline body without references was already garbage: it is not carried over.
        for row in old_refs.iter().map_err(db_err)? {
            let (blob, refs) = row.map_err(db_err)?;
            let blob = blob.value();
            let inline = old_inline.get(blob).map_err(db_err)?;
            new_bodies
                .insert(blob, (refs.value(), inline.as_ref().map(|b| b.value())))
                .map_err(db_err)?;
            bodies += 1;
        }
    }
    txn.delete_table(schema_v1::MESSAGES).map_err(db_err)?;
    txn.delete_table(schema_v1::MESSAGE_HEADERS)
        .map_err(db_err)?;
    txn.delete_table(schema_v1::BLOB_REFS).map_err(db_err)?;
    txn.delete_table(schema_v1::BLOB_INLINE).map_err(db_err)?;
    tracing::info!(
        messages,
        bodies,
        "embedded store migrated to schema version {SCHEMA_VERSION}"
    );
    Ok(())
}

fn init_schema(db: &Database) -> Result<()> {
    let txn = db.begin_write().map_err(db_err)?;
    {
        // Opening creates each table, so readers never meet a missing one.
        txn.open_table(DOMAINS).map_err(db_err)?;
        txn.open_table(USERS).map_err(db_err)?;
        txn.open_table(MAILBOXES).map_err(db_err)?;
        txn.open_table(MESSAGES).map_err(db_err)?;
        txn.open_table(POP3_VIEW).map_err(db_err)?;
        txn.open_table(BODIES).map_err(db_err)?;
        txn.open_table(MESSAGE_UIDS).map_err(db_err)?;
        txn.open_table(MESSAGES_BY_UID).map_err(db_err)?;
        txn.open_table(MAILBOX_UIDS).map_err(db_err)?;
        txn.open_table(TASKS).map_err(db_err)?;
        txn.open_table(OUTBOUND_QUEUE).map_err(db_err)?;
        txn.open_table(MAPPINGS).map_err(db_err)?;
        txn.open_table(QUOTA_LIMITS).map_err(db_err)?;
        txn.open_table(QUOTA_USAGE).map_err(db_err)?;
        txn.open_table(REPOSITORIES).map_err(db_err)?;
        txn.open_table(REPOSITORY_MAILS).map_err(db_err)?;
        let mut meta = txn.open_table(META).map_err(db_err)?;
        let found = meta
            .get("schema_version")
            .map_err(db_err)?
            .map(|v| v.value());
        match found {
            None => {
                meta.insert("schema_version", SCHEMA_VERSION)
                    .map_err(db_err)?;
            }
            Some(1) => {
                migrate_from_v1(&txn)?;
                meta.insert("schema_version", SCHEMA_VERSION)
                    .map_err(db_err)?;
            }
            Some(v) if v == SCHEMA_VERSION => {}
            Some(v) => {
                return Err(StoreError::unavailable(format!(
                    "data directory has schema version {v}, this tern understands {SCHEMA_VERSION}"
                )))
            }
        }
    }
    txn.commit().map_err(db_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use redb::TableHandle;

    fn open(dir: &Path) -> EmbeddedStore {
        EmbeddedStore::open(
            dir,
            EmbeddedOptions {
                inline_max: 1024,
                ..Default::default()
            },
        )
        .unwrap()
    }

    crate::store_contract_tests!({
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        (crate::contract::Backend::new(store), dir)
    });

    /// The whole contract again with bodies over `inline_max` in the test S3 server.
    mod with_s3 {
        use super::*;
        use crate::blob_store::s3::{S3BlobStore, S3Options};

        crate::store_contract_tests!(
            #[ignore = "needs S3: run scripts/test"]
            {
                let dir = tempfile::tempdir().unwrap();
                let s3 = S3BlobStore::new(S3Options::test_server()).expect("S3 options");
                let options = EmbeddedOptions {
                    inline_max: 1024,
                    ..Default::default()
                };
                let store =
                    EmbeddedStore::open_with_blob_store(dir.path(), options, Some(Arc::new(s3)))
                        .unwrap();
                (crate::contract::Backend::new(store), dir)
            }
        );
    }

    #[tokio::test]
    async fn a_large_body_reaches_its_file_as_it_arrives_and_an_abort_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let mut w = s.begin_body().await.unwrap();
        w.write(&vec![b'q'; 2 * 1024 * 1024]).await.unwrap();
        let listed: Vec<BlobId> = s.all_bodies().map(|b| b.unwrap()).collect().await;
        assert_eq!(listed.len(), 1, "written as it arrives, not held in memory");
        let file = FileBlobStore::new(dir.path().join("blobs"))
            .unwrap()
            .path(listed[0]);
        assert!(file.metadata().unwrap().len() >= 1024 * 1024);
        w.abort().await;
        assert!(!file.exists());
    }

    async fn read_all(s: &EmbeddedStore, mailbox: MailboxId, id: MessageId) -> Option<Vec<u8>> {
        let mut body = s.open_body(mailbox, id).await.unwrap()?;
        let mut out = Vec::new();
        while let Some(chunk) = body.next_chunk().await.unwrap() {
            out.extend_from_slice(&chunk);
        }
        Some(out)
    }

    #[tokio::test]
    async fn a_schema_1_store_is_migrated_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let mailbox = MailboxId::random();
        let ids = IdGenerator::new();
        let (with_header, shared, file_body) = (ids.next_id(), ids.next_id(), ids.next_id());
        let (inline_blob, garbage_blob) = (7u128, 8u128);
        {
            // What a version-1 Tern left: two copies sharing an inline body (one with its own
            // header), a message whose body is a file, and an inline body nothing references.
            let db = Database::create(dir.path().join("tern.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                meta.insert("schema_version", 1).unwrap();
                let mut messages = txn.open_table(schema_v1::MESSAGES).unwrap();
                let mut headers = txn.open_table(schema_v1::MESSAGE_HEADERS).unwrap();
                let mut refs = txn.open_table(schema_v1::BLOB_REFS).unwrap();
                let mut inline = txn.open_table(schema_v1::BLOB_INLINE).unwrap();
                let mut view = txn.open_table(POP3_VIEW).unwrap();
                let m = mailbox.0.as_u128();
                for (id, size) in [(with_header, 19), (shared, 8)] {
                    messages
                        .insert(id.sort_key(), (m, inline_blob, size))
                        .unwrap();
                    view.insert((m, id.sort_key()), (size, "")).unwrap();
                }
                headers
                    .insert(with_header.sort_key(), &b"X-Copy: a\r\n"[..])
                    .unwrap();
                refs.insert(inline_blob, 2).unwrap();
                inline.insert(inline_blob, &b"the body"[..]).unwrap();
                inline.insert(garbage_blob, &b"nobody's"[..]).unwrap();
                messages
                    .insert(file_body.sort_key(), (m, 9u128, 5000))
                    .unwrap();
                view.insert((m, file_body.sort_key()), (5000, "")).unwrap();
                refs.insert(9u128, 1).unwrap();
            }
            txn.commit().unwrap();
        }
        let s = open(dir.path());
        assert_eq!(s.pop3_view(mailbox).await.unwrap().len(), 3);
        assert_eq!(
            read_all(&s, mailbox, with_header).await.unwrap(),
            b"X-Copy: a\r\nthe body"
        );
        assert_eq!(read_all(&s, mailbox, shared).await.unwrap(), b"the body");
        {
            let txn = s.read().unwrap();
            assert_eq!(
                txn.open_table(META)
                    .unwrap()
                    .get("schema_version")
                    .unwrap()
                    .unwrap()
                    .value(),
                SCHEMA_VERSION
            );
            let tables: Vec<String> = txn
                .list_tables()
                .unwrap()
                .map(|t| t.name().to_string())
                .collect();
            for old in ["messages", "message_headers", "blob_refs", "blob_inline"] {
                assert!(!tables.contains(&old.to_string()), "{old} left: {tables:?}");
            }
            let bodies = txn.open_table(BODIES).unwrap();
            assert!(bodies.get(garbage_blob).unwrap().is_none());
            assert_eq!(bodies.get(9u128).unwrap().unwrap().value(), (1, None));
        }
        // References were carried over: the body stays until its last message goes.
        s.delete_messages(mailbox, &[with_header]).await.unwrap();
        assert_eq!(read_all(&s, mailbox, shared).await.unwrap(), b"the body");
        s.delete_messages(mailbox, &[shared, file_body])
            .await
            .unwrap();
        let txn = s.read().unwrap();
        assert!(txn
            .open_table(BODIES)
            .unwrap()
            .get(inline_blob)
            .unwrap()
            .is_none());
        assert_eq!(s.pop3_view(mailbox).await.unwrap().len(), 0);
    }

    #[tokio::test]
    async fn second_open_of_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _a = open(dir.path());
        let err = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("in use"), "{err}");
    }

    #[tokio::test]
    async fn orphan_files_are_swept_at_open_and_referenced_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (kept, orphan) = {
            let s = open(dir.path());
            let mb = MailboxId::random();
            let mut w = s.begin_body().await.unwrap();
            w.write(&vec![b'a'; 5000]).await.unwrap();
            let staged = w.finish().await.unwrap();
            let files = FileBlobStore::new(dir.path().join("blobs")).unwrap();
            let kept = files.path(staged.blob_id);
            s.deliver(staged, &[mb]).await.unwrap();
            // A body written but never delivered, as after a crash before the commit.
            let mut w = s.begin_body().await.unwrap();
            w.write(&vec![b'b'; 5000]).await.unwrap();
            let staged = w.finish().await.unwrap();
            (kept, files.path(staged.blob_id))
        };
        assert!(orphan.exists());
        // Let the committer thread release the database.
        let mut reopened = None;
        for _ in 0..50 {
            match EmbeddedStore::open(
                dir.path(),
                EmbeddedOptions {
                    inline_max: 1024,
                    ..Default::default()
                },
            ) {
                Ok(s) => {
                    reopened = Some(s);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        assert!(reopened.is_some());
        assert!(kept.exists());
        assert!(!orphan.exists());
    }
}
