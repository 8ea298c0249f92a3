//! The embedded backend: one redb database for metadata and small bodies, files for large
//! bodies, all under one data directory. Writes are group-committed (see [`committer`]).

mod blobs;
mod committer;

use crate::{
    BlobId, BodyReader, BodyWriter, Directory, IdGenerator, MailStore, MailboxId, MailboxInfo,
    MessageId, MessageMeta, Result, ScanPage, StagedBody, StagedPayload, StoreError, TaskRecord,
    TaskStore, UidEntry, UidListing, UserRecord, ViewEntry, INBOX,
};
use async_trait::async_trait;
use blobs::{blob_path, EmbeddedBodyWriter, FileReader, InlineReader, PendingBodies};
use bytes::Bytes;
use committer::Committer;
use redb::{Database, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;

const DOMAINS: TableDefinition<&str, ()> = TableDefinition::new("domains");
/// user name -> password hash (PHC string)
const USERS: TableDefinition<&str, &str> = TableDefinition::new("users");
/// (user name, mailbox name) -> mailbox id
const MAILBOXES: TableDefinition<(&str, &str), u128> = TableDefinition::new("mailboxes");
/// message sort key -> (mailbox id, blob id, size)
const MESSAGES: TableDefinition<u128, (u128, u128, u64)> = TableDefinition::new("messages");
/// (mailbox id, message sort key) -> (size, imported UIDL or "")
const POP3_VIEW: TableDefinition<(u128, u128), (u64, &str)> = TableDefinition::new("pop3_view");
/// blob id -> number of messages referencing it
const BLOB_REFS: TableDefinition<u128, u64> = TableDefinition::new("blob_refs");
/// blob id -> body, for bodies small enough to live in the database
const BLOB_INLINE: TableDefinition<u128, &[u8]> = TableDefinition::new("blob_inline");
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

const SCHEMA_VERSION: u64 = 1;

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
    blobs_dir: PathBuf,
    committer: Committer,
    ids: IdGenerator,
    options: EmbeddedOptions,
    /// Bodies the collector must leave alone (see [`crate::InFlight`]).
    pending: PendingBodies,
}

fn db_err(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::database(e)
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`. Fails if another process holds it.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let blobs_dir = dir.join("blobs");
        std::fs::create_dir_all(&blobs_dir)?;
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
        let refs_db = db.clone();
        let removed = blobs::sweep_orphans(&blobs_dir, |id| {
            let Ok(txn) = refs_db.begin_read() else {
                return true;
            };
            let Ok(t) = txn.open_table(BLOB_REFS) else {
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
        let committer = Committer::start(db.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                blobs_dir,
                committer,
                ids: IdGenerator::new(),
                options,
                pending: PendingBodies::default(),
            }),
        })
    }

    fn read(&self) -> Result<redb::ReadTransaction> {
        self.inner.db.begin_read().map_err(db_err)
    }
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
        txn.open_table(BLOB_REFS).map_err(db_err)?;
        txn.open_table(BLOB_INLINE).map_err(db_err)?;
        txn.open_table(MESSAGE_UIDS).map_err(db_err)?;
        txn.open_table(MESSAGES_BY_UID).map_err(db_err)?;
        txn.open_table(MAILBOX_UIDS).map_err(db_err)?;
        txn.open_table(TASKS).map_err(db_err)?;
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

#[async_trait]
impl Directory for EmbeddedStore {
    async fn add_domain(&self, domain: &str) -> Result<()> {
        let domain = domain.to_string();
        self.inner
            .committer
            .write(move |txn| {
                txn.open_table(DOMAINS)
                    .map_err(db_err)?
                    .insert(domain.as_str(), ())
                    .map_err(db_err)?;
                Ok(())
            })
            .await
    }

    async fn remove_domain(&self, domain: &str) -> Result<bool> {
        let domain = domain.to_string();
        self.inner
            .committer
            .write(move |txn| {
                let mut t = txn.open_table(DOMAINS).map_err(db_err)?;
                let existed = t.remove(domain.as_str()).map_err(db_err)?.is_some();
                Ok(existed)
            })
            .await
    }

    async fn domain_exists(&self, domain: &str) -> Result<bool> {
        let txn = self.read()?;
        let t = txn.open_table(DOMAINS).map_err(db_err)?;
        Ok(t.get(domain).map_err(db_err)?.is_some())
    }

    async fn list_domains(&self) -> Result<Vec<String>> {
        let txn = self.read()?;
        let t = txn.open_table(DOMAINS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db_err)? {
            out.push(row.map_err(db_err)?.0.value().to_string());
        }
        Ok(out)
    }

    async fn put_user(&self, name: &str, password_hash: &str) -> Result<UserRecord> {
        let (name, hash) = (name.to_string(), password_hash.to_string());
        let new_inbox = MailboxId::random();
        self.inner
            .committer
            .write(move |txn| {
                txn.open_table(USERS)
                    .map_err(db_err)?
                    .insert(name.as_str(), hash.as_str())
                    .map_err(db_err)?;
                let mut mailboxes = txn.open_table(MAILBOXES).map_err(db_err)?;
                let existing = mailboxes
                    .get((name.as_str(), INBOX))
                    .map_err(db_err)?
                    .map(|v| v.value());
                let inbox = match existing {
                    Some(id) => MailboxId(Uuid::from_u128(id)),
                    None => {
                        mailboxes
                            .insert((name.as_str(), INBOX), new_inbox.0.as_u128())
                            .map_err(db_err)?;
                        new_inbox
                    }
                };
                Ok(UserRecord {
                    name: name.clone(),
                    password_hash: hash.clone(),
                    inbox,
                })
            })
            .await
    }

    async fn get_user(&self, name: &str) -> Result<Option<UserRecord>> {
        let txn = self.read()?;
        let users = txn.open_table(USERS).map_err(db_err)?;
        let Some(hash) = users.get(name).map_err(db_err)? else {
            return Ok(None);
        };
        let mailboxes = txn.open_table(MAILBOXES).map_err(db_err)?;
        let inbox = mailboxes
            .get((name, INBOX))
            .map_err(db_err)?
            .ok_or_else(|| StoreError::corrupt(format!("user {name} has no INBOX")))?
            .value();
        Ok(Some(UserRecord {
            name: name.to_string(),
            password_hash: hash.value().to_string(),
            inbox: MailboxId(Uuid::from_u128(inbox)),
        }))
    }

    async fn delete_user(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.inner
            .committer
            .write(move |txn| {
                let existed = txn
                    .open_table(USERS)
                    .map_err(db_err)?
                    .remove(name.as_str())
                    .map_err(db_err)?
                    .is_some();
                Ok(existed)
            })
            .await
    }

    async fn list_users(&self) -> Result<Vec<String>> {
        let txn = self.read()?;
        let t = txn.open_table(USERS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db_err)? {
            out.push(row.map_err(db_err)?.0.value().to_string());
        }
        Ok(out)
    }

    async fn list_mailboxes(&self, user: &str) -> Result<Vec<MailboxInfo>> {
        let txn = self.read()?;
        let t = txn.open_table(MAILBOXES).map_err(db_err)?;
        let mut out = Vec::new();
        // Mailbox names sort after "" and before any name starting with U+10FFFF.
        for row in t.range((user, "")..=(user, "\u{10FFFF}")).map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            out.push(MailboxInfo {
                name: k.value().1.to_string(),
                id: MailboxId(Uuid::from_u128(v.value())),
            });
        }
        Ok(out)
    }
}

#[async_trait]
impl MailStore for EmbeddedStore {
    async fn begin_body(&self) -> Result<Box<dyn BodyWriter>> {
        let id = BlobId(self.inner.ids.next_id().uuid());
        Ok(Box::new(EmbeddedBodyWriter {
            pending: self.inner.pending.hold(id),
            id,
            blobs_dir: self.inner.blobs_dir.clone(),
            inline_max: self.inner.options.inline_max,
            buf: Vec::new(),
            file: None,
            size: 0,
        }))
    }

    async fn deliver(&self, body: StagedBody, mailboxes: &[MailboxId]) -> Result<Vec<MessageId>> {
        if mailboxes.is_empty() {
            return Err(StoreError::invalid("delivery without recipients"));
        }
        let entries: Vec<(u128, MessageId)> = mailboxes
            .iter()
            .map(|m| (m.0.as_u128(), self.inner.ids.next_id()))
            .collect();
        let StagedBody {
            blob_id,
            size,
            payload,
            in_flight,
        } = body;
        let inline = match payload {
            StagedPayload::Inline(data) => Some(data),
            StagedPayload::Stored => None,
        };
        let ids: Vec<MessageId> = entries.iter().map(|(_, id)| *id).collect();
        self.inner
            .committer
            .write(move |txn| {
                let blob = blob_id.0.as_u128();
                txn.open_table(BLOB_REFS)
                    .map_err(db_err)?
                    .insert(blob, entries.len() as u64)
                    .map_err(db_err)?;
                if let Some(data) = &inline {
                    txn.open_table(BLOB_INLINE)
                        .map_err(db_err)?
                        .insert(blob, data.as_slice())
                        .map_err(db_err)?;
                }
                let mut messages = txn.open_table(MESSAGES).map_err(db_err)?;
                let mut view = txn.open_table(POP3_VIEW).map_err(db_err)?;
                for (mailbox, id) in &entries {
                    messages
                        .insert(id.sort_key(), (*mailbox, blob, size))
                        .map_err(db_err)?;
                    view.insert((*mailbox, id.sort_key()), (size, ""))
                        .map_err(db_err)?;
                }
                Ok(())
            })
            .await?;
        // Referenced now: the collector may judge it by its references alone.
        drop(in_flight);
        Ok(ids)
    }

    async fn pop3_view(&self, mailbox: MailboxId) -> Result<Vec<ViewEntry>> {
        let txn = self.read()?;
        let view = txn.open_table(POP3_VIEW).map_err(db_err)?;
        let m = mailbox.0.as_u128();
        let mut out = Vec::new();
        for row in view.range((m, 0u128)..=(m, u128::MAX)).map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let (size, uidl) = v.value();
            out.push(ViewEntry {
                message_id: MessageId::from_sort_key(k.value().1),
                size,
                uidl: (!uidl.is_empty()).then(|| uidl.to_string()),
            });
        }
        Ok(out)
    }

    async fn open_body(
        &self,
        mailbox: MailboxId,
        message: MessageId,
    ) -> Result<Option<Box<dyn BodyReader>>> {
        let blob = {
            let txn = self.read()?;
            let messages = txn.open_table(MESSAGES).map_err(db_err)?;
            let Some(meta) = messages.get(message.sort_key()).map_err(db_err)? else {
                return Ok(None);
            };
            let (owner, blob, _size) = meta.value();
            if owner != mailbox.0.as_u128() {
                return Ok(None);
            }
            let inline = txn.open_table(BLOB_INLINE).map_err(db_err)?;
            if let Some(data) = inline.get(blob).map_err(db_err)? {
                let bytes = Bytes::copy_from_slice(data.value());
                return Ok(Some(Box::new(InlineReader(Some(bytes)))));
            }
            blob
        };
        let path = blob_path(&self.inner.blobs_dir, BlobId(Uuid::from_u128(blob)));
        match std::fs::File::open(&path) {
            Ok(f) => Ok(Some(Box::new(FileReader(Some(f))))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_messages(&self, mailbox: MailboxId, messages: &[MessageId]) -> Result<()> {
        let m = mailbox.0.as_u128();
        let keys: Vec<u128> = messages.iter().map(|id| id.sort_key()).collect();
        let unreferenced_files = self
            .inner
            .committer
            .write(move |txn| {
                let mut files = Vec::new();
                let mut msgs = txn.open_table(MESSAGES).map_err(db_err)?;
                let mut view = txn.open_table(POP3_VIEW).map_err(db_err)?;
                let mut refs = txn.open_table(BLOB_REFS).map_err(db_err)?;
                let mut inline = txn.open_table(BLOB_INLINE).map_err(db_err)?;
                let mut uids = txn.open_table(MESSAGE_UIDS).map_err(db_err)?;
                let mut by_uid = txn.open_table(MESSAGES_BY_UID).map_err(db_err)?;
                for &key in &keys {
                    view.remove((m, key)).map_err(db_err)?;
                    let owned = match msgs.get(key).map_err(db_err)? {
                        Some(meta) if meta.value().0 == m => Some(meta.value().1),
                        _ => None,
                    };
                    let Some(blob) = owned else { continue };
                    msgs.remove(key).map_err(db_err)?;
                    let uid = uids.remove(key).map_err(db_err)?.map(|u| u.value());
                    if let Some(uid) = uid {
                        by_uid.remove((m, uid)).map_err(db_err)?;
                    }
                    let count = refs
                        .get(blob)
                        .map_err(db_err)?
                        .map(|v| v.value())
                        .unwrap_or(0);
                    if count > 1 {
                        refs.insert(blob, count - 1).map_err(db_err)?;
                    } else {
                        refs.remove(blob).map_err(db_err)?;
                        if inline.remove(blob).map_err(db_err)?.is_none() {
                            files.push(BlobId(Uuid::from_u128(blob)));
                        }
                    }
                }
                Ok(files)
            })
            .await?;
        for blob in unreferenced_files {
            let path = blob_path(&self.inner.blobs_dir, blob);
            if let Err(e) = tokio::fs::remove_file(&path).await {
                if e.kind() != std::io::ErrorKind::NotFound {
                    // Left for the start-up sweep; the message itself is already gone.
                    tracing::warn!(path = %path.display(), error = %e, "could not remove body file");
                }
            }
        }
        Ok(())
    }

    async fn message_meta(&self, message: MessageId) -> Result<Option<MessageMeta>> {
        let txn = self.read()?;
        let msgs = txn.open_table(MESSAGES).map_err(db_err)?;
        let Some(meta) = msgs.get(message.sort_key()).map_err(db_err)? else {
            return Ok(None);
        };
        let (mailbox, _blob, size) = meta.value();
        let uids = txn.open_table(MESSAGE_UIDS).map_err(db_err)?;
        let uid = uids
            .get(message.sort_key())
            .map_err(db_err)?
            .map(|u| u.value());
        Ok(Some(MessageMeta {
            mailbox: MailboxId(Uuid::from_u128(mailbox)),
            size,
            uid,
        }))
    }

    async fn view_entry(
        &self,
        mailbox: MailboxId,
        message: MessageId,
    ) -> Result<Option<ViewEntry>> {
        let txn = self.read()?;
        let view = txn.open_table(POP3_VIEW).map_err(db_err)?;
        let row = view
            .get((mailbox.0.as_u128(), message.sort_key()))
            .map_err(db_err)?;
        Ok(row.map(|v| {
            let (size, uidl) = v.value();
            ViewEntry {
                message_id: message,
                size,
                uidl: (!uidl.is_empty()).then(|| uidl.to_string()),
            }
        }))
    }

    async fn put_view_entry(&self, mailbox: MailboxId, entry: ViewEntry) -> Result<()> {
        self.inner
            .committer
            .write(move |txn| {
                let mut view = txn.open_table(POP3_VIEW).map_err(db_err)?;
                let uidl = entry.uidl.as_deref().unwrap_or("");
                view.insert(
                    (mailbox.0.as_u128(), entry.message_id.sort_key()),
                    (entry.size, uidl),
                )
                .map_err(db_err)?;
                Ok(())
            })
            .await
    }

    async fn remove_view_entry(&self, mailbox: MailboxId, message: MessageId) -> Result<()> {
        let (m, key) = (mailbox.0.as_u128(), message.sort_key());
        self.inner
            .committer
            .write(move |txn| {
                txn.open_table(POP3_VIEW)
                    .map_err(db_err)?
                    .remove((m, key))
                    .map_err(db_err)?;
                let mut by_uid = txn.open_table(MESSAGES_BY_UID).map_err(db_err)?;
                let uid = txn
                    .open_table(MESSAGE_UIDS)
                    .map_err(db_err)?
                    .get(key)
                    .map_err(db_err)?
                    .map(|u| u.value());
                if let Some(uid) = uid {
                    by_uid.remove((m, uid)).map_err(db_err)?;
                }
                Ok(())
            })
            .await
    }

    async fn scan_messages(
        &self,
        cursor: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<ScanPage<(MessageId, MailboxId)>> {
        let after = match cursor.as_deref().map(<[u8; 16]>::try_from) {
            None => None,
            Some(Ok(b)) => Some(u128::from_be_bytes(b)),
            Some(Err(_)) => return Err(StoreError::invalid("bad scan cursor")),
        };
        let txn = self.read()?;
        let msgs = txn.open_table(MESSAGES).map_err(db_err)?;
        let range = match after {
            Some(k) if k == u128::MAX => {
                return Ok(ScanPage {
                    items: vec![],
                    next: None,
                })
            }
            Some(k) => msgs.range(k + 1..).map_err(db_err)?,
            None => msgs.range(0u128..).map_err(db_err)?,
        };
        let mut items = Vec::new();
        let mut last = None;
        for row in range.take(limit) {
            let (k, v) = row.map_err(db_err)?;
            items.push((
                MessageId::from_sort_key(k.value()),
                MailboxId(Uuid::from_u128(v.value().0)),
            ));
            last = Some(k.value());
        }
        let next = if items.len() == limit {
            last.map(|k| k.to_be_bytes().to_vec())
        } else {
            None
        };
        Ok(ScanPage { items, next })
    }

    async fn scan_view(
        &self,
        cursor: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<ScanPage<(MailboxId, MessageId)>> {
        let after = match cursor.as_deref() {
            None => None,
            Some(b) if b.len() == 32 => {
                let (a, c) = b.split_at(16);
                let a = u128::from_be_bytes(
                    a.try_into()
                        .map_err(|_| StoreError::invalid("bad scan cursor"))?,
                );
                let c = u128::from_be_bytes(
                    c.try_into()
                        .map_err(|_| StoreError::invalid("bad scan cursor"))?,
                );
                Some((a, c))
            }
            Some(_) => return Err(StoreError::invalid("bad scan cursor")),
        };
        let txn = self.read()?;
        let view = txn.open_table(POP3_VIEW).map_err(db_err)?;
        let mut items = Vec::new();
        let mut last = None;
        let iter = match after {
            Some(k) => view.range(k..).map_err(db_err)?,
            None => view.range((0u128, 0u128)..).map_err(db_err)?,
        };
        for row in iter {
            let (k, _) = row.map_err(db_err)?;
            let key = k.value();
            if Some(key) == after {
                continue;
            }
            items.push((
                MailboxId(Uuid::from_u128(key.0)),
                MessageId::from_sort_key(key.1),
            ));
            last = Some(key);
            if items.len() == limit {
                break;
            }
        }
        let next = if items.len() == limit {
            last.map(|(a, c)| [a.to_be_bytes(), c.to_be_bytes()].concat())
        } else {
            None
        };
        Ok(ScanPage { items, next })
    }

    async fn assign_uids(&self, mailbox: MailboxId, messages: &[MessageId]) -> Result<Vec<u64>> {
        let m = mailbox.0.as_u128();
        let keys: Vec<u128> = messages.iter().map(|id| id.sort_key()).collect();
        let validity_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1);
        self.inner
            .committer
            .write(move |txn| {
                let mut counters = txn.open_table(MAILBOX_UIDS).map_err(db_err)?;
                let (mut next, validity) = counters
                    .get(m)
                    .map_err(db_err)?
                    .map(|v| v.value())
                    .unwrap_or((1, validity_now));
                let mut uids_t = txn.open_table(MESSAGE_UIDS).map_err(db_err)?;
                let mut by_uid = txn.open_table(MESSAGES_BY_UID).map_err(db_err)?;
                let msgs = txn.open_table(MESSAGES).map_err(db_err)?;
                let mut out = Vec::with_capacity(keys.len());
                for &key in &keys {
                    let Some(size) = msgs.get(key).map_err(db_err)?.map(|v| v.value().2) else {
                        out.push(0);
                        continue;
                    };
                    if let Some(uid) = uids_t.get(key).map_err(db_err)?.map(|u| u.value()) {
                        // Keeps its UID; its index entry may have been dropped by a view repair.
                        by_uid.insert((m, uid), (key, size)).map_err(db_err)?;
                        out.push(uid);
                        continue;
                    }
                    let uid = next;
                    next += 1;
                    uids_t.insert(key, uid).map_err(db_err)?;
                    by_uid.insert((m, uid), (key, size)).map_err(db_err)?;
                    out.push(uid);
                }
                counters.insert(m, (next, validity)).map_err(db_err)?;
                Ok(out)
            })
            .await
    }

    async fn uid_listing(&self, mailbox: MailboxId) -> Result<UidListing> {
        let m = mailbox.0.as_u128();
        let txn = self.read()?;
        let counters = txn.open_table(MAILBOX_UIDS).map_err(db_err)?;
        let validity = counters
            .get(m)
            .map_err(db_err)?
            .map(|v| v.value().1)
            .unwrap_or(0);
        let by_uid = txn.open_table(MESSAGES_BY_UID).map_err(db_err)?;
        let mut entries = Vec::new();
        for row in by_uid.range((m, 0u64)..=(m, u64::MAX)).map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            let (key, size) = v.value();
            entries.push(UidEntry {
                uid: k.value().1,
                message_id: MessageId::from_sort_key(key),
                size,
            });
        }
        Ok(UidListing { validity, entries })
    }

    async fn scan_bodies(&self, cursor: Option<Vec<u8>>, limit: usize) -> Result<ScanPage<BlobId>> {
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

#[async_trait]
impl TaskStore for EmbeddedStore {
    async fn save_task(&self, task: &TaskRecord) -> Result<()> {
        let task = task.clone();
        self.inner
            .committer
            .write(move |txn| {
                let mut t = txn.open_table(TASKS).map_err(db_err)?;
                let key = task.id.as_u128();
                let cancelled_before = match t.get(key).map_err(db_err)? {
                    Some(v) => serde_json::from_str::<TaskRecord>(v.value())
                        .map(|r| r.cancel_requested)
                        .unwrap_or(false),
                    None => false,
                };
                let mut record = task.clone();
                record.cancel_requested |= cancelled_before;
                let json = serde_json::to_string(&record)
                    .map_err(|e| StoreError::corrupt(e.to_string()))?;
                t.insert(key, json.as_str()).map_err(db_err)?;
                Ok(())
            })
            .await
    }

    async fn get_task(&self, id: Uuid) -> Result<Option<TaskRecord>> {
        let txn = self.read()?;
        let t = txn.open_table(TASKS).map_err(db_err)?;
        let Some(v) = t.get(id.as_u128()).map_err(db_err)? else {
            return Ok(None);
        };
        serde_json::from_str(v.value())
            .map(Some)
            .map_err(|e| StoreError::corrupt(e.to_string()))
    }

    async fn list_tasks(&self) -> Result<Vec<TaskRecord>> {
        let txn = self.read()?;
        let t = txn.open_table(TASKS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db_err)? {
            let (_, v) = row.map_err(db_err)?;
            out.push(
                serde_json::from_str(v.value()).map_err(|e| StoreError::corrupt(e.to_string()))?,
            );
        }
        Ok(out)
    }

    async fn request_cancel(&self, id: Uuid) -> Result<bool> {
        self.inner
            .committer
            .write(move |txn| {
                let mut t = txn.open_table(TASKS).map_err(db_err)?;
                let current = match t.get(id.as_u128()).map_err(db_err)? {
                    Some(v) => Some(
                        serde_json::from_str::<TaskRecord>(v.value())
                            .map_err(|e| StoreError::corrupt(e.to_string()))?,
                    ),
                    None => None,
                };
                let Some(mut record) = current else {
                    return Ok(false);
                };
                record.cancel_requested = true;
                let json = serde_json::to_string(&record)
                    .map_err(|e| StoreError::corrupt(e.to_string()))?;
                t.insert(id.as_u128(), json.as_str()).map_err(db_err)?;
                Ok(true)
            })
            .await
    }

    async fn delete_task(&self, id: Uuid) -> Result<bool> {
        self.inner
            .committer
            .write(move |txn| {
                let mut t = txn.open_table(TASKS).map_err(db_err)?;
                let existed = t.remove(id.as_u128()).map_err(db_err)?.is_some();
                Ok(existed)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let kept = blob_path(&s.inner.blobs_dir, staged.blob_id);
            s.deliver(staged, &[mb]).await.unwrap();
            // A body written but never delivered, as after a crash before the commit.
            let mut w = s.begin_body().await.unwrap();
            w.write(&vec![b'b'; 5000]).await.unwrap();
            let staged = w.finish().await.unwrap();
            (kept, blob_path(&s.inner.blobs_dir, staged.blob_id))
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
