use crate::{
    BlobId, MailRepositories, MailboxId, MessageId, OutboundQueue, Quotas, RecipientRewrites,
    Result,
};
use async_trait::async_trait;
use bytes::Bytes;

/// Name of the mailbox POP3 serves.
pub const INBOX: &str = "INBOX";

/// A user as the directory keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The full address, lower-cased: `user@domain`.
    pub name: String,
    /// A PHC string (argon2id); never the password itself.
    pub password_hash: String,
    /// The id of the user's INBOX.
    pub inbox: MailboxId,
}

/// A user's mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxInfo {
    /// Its name (`INBOX`).
    pub name: String,
    /// Its id.
    pub id: MailboxId,
}

/// One line of the POP3 view of a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewEntry {
    /// The message.
    pub message_id: MessageId,
    /// Octets of the stored message (CRLF line ends), which is what RETR sends before stuffing.
    pub size: u64,
    /// A UIDL imported from another server, kept so that clients do not download everything
    /// again after a migration; `None` means the message id is the UIDL.
    pub uidl: Option<String>,
}

/// A body whose bytes are written and durable (or, for [`StagedPayload::Inline`], held to be
/// written in the same transaction as the metadata), ready to be delivered.
#[derive(Debug)]
pub struct StagedBody {
    /// The body's id (time-based: its age is known without a read).
    pub blob_id: BlobId,
    /// Octets of the body.
    pub size: u64,
    /// Where the bytes are.
    pub payload: StagedPayload,
    /// Keeps the body out of the collector's reach until the delivery has committed.
    pub in_flight: InFlight,
}

/// Marks a body as in flight for as long as it lives: from the writer's creation until the
/// delivery that references it has committed, or the body is given up. The unreferenced-body
/// collector never removes a body in flight, whatever its age, so that a slow DATA or a
/// delivery racing a collection cannot lose an acknowledged message. Backends whose marker
/// lives in the database (Cassandra) clear it themselves and leave this empty.
#[derive(Default)]
pub struct InFlight(Option<Box<dyn std::any::Any + Send + Sync>>);

impl InFlight {
    /// Holds `guard` (whose `Drop` ends the protection) until this is dropped.
    pub fn holding(guard: impl std::any::Any + Send + Sync) -> Self {
        Self(Some(Box::new(guard)))
    }
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "InFlight(held)"
        } else {
            "InFlight(none)"
        })
    }
}

/// Where a staged body's bytes are.
#[derive(Debug)]
pub enum StagedPayload {
    /// Already durable in the blob store.
    Stored,
    /// Small enough to be committed together with the metadata (backend's choice).
    Inline(Vec<u8>),
}

/// Receives a body as it arrives, so large messages never sit in memory whole.
#[async_trait]
pub trait BodyWriter: Send {
    /// Appends data to the body.
    async fn write(&mut self, data: &[u8]) -> Result<()>;
    /// Makes the bytes durable (or ready for an atomic commit) and returns the staged body.
    async fn finish(self: Box<Self>) -> Result<StagedBody>;
    /// Drops whatever was written.
    async fn abort(self: Box<Self>);
}

/// One mailbox's copy of a delivered message: the body is shared by every copy, and each copy
/// may have header lines of its own in front of it (Delivered-To, Authentication-Results),
/// kept with the message's metadata. A message's size and what RETR sends include them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageCopy {
    /// The mailbox the copy goes to.
    pub mailbox: MailboxId,
    /// Complete header fields, each ending in CRLF; empty for none.
    pub header: Vec<u8>,
    /// The UIDL another server gave the message (an import), kept in the POP3 view in the
    /// same write, so that clients see no new message after a migration; `None` for the id.
    pub uidl: Option<String>,
}

impl MessageCopy {
    /// A copy with no header of its own.
    pub fn plain(mailbox: MailboxId) -> Self {
        Self::with_header(mailbox, Vec::new())
    }

    /// A delivered copy with its own header lines.
    pub fn with_header(mailbox: MailboxId, header: Vec<u8>) -> Self {
        Self {
            mailbox,
            header,
            uidl: None,
        }
    }
}

/// Sends a copy's own header before its stored body.
pub(crate) struct WithHeader {
    pub(crate) header: Option<Bytes>,
    pub(crate) body: Box<dyn BodyReader>,
}

impl WithHeader {
    /// `body` behind `header` (the body alone when the header is empty).
    pub(crate) fn wrap(header: Option<Vec<u8>>, body: Box<dyn BodyReader>) -> Box<dyn BodyReader> {
        match header.filter(|h| !h.is_empty()) {
            Some(h) => Box::new(WithHeader {
                header: Some(Bytes::from(h)),
                body,
            }),
            None => body,
        }
    }
}

#[async_trait]
impl BodyReader for WithHeader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        match self.header.take() {
            Some(h) => Ok(Some(h)),
            None => self.body.next_chunk().await,
        }
    }
}

/// Streams a stored body.
#[async_trait]
pub trait BodyReader: Send {
    /// The next chunk, or `None` at the end.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>>;
}

/// Domains, users and their mailboxes.
#[async_trait]
pub trait Directory: Send + Sync {
    /// Adds a domain (lower-case); adding an existing one is not an error.
    async fn add_domain(&self, domain: &str) -> Result<()>;
    /// Returns whether the domain existed.
    async fn remove_domain(&self, domain: &str) -> Result<bool>;
    /// Whether the domain is served.
    async fn domain_exists(&self, domain: &str) -> Result<bool>;
    /// Every served domain, in no particular order.
    async fn list_domains(&self) -> Result<Vec<String>>;

    /// Creates the user with an INBOX, or changes the password of an existing one (its
    /// mailboxes stay). A user created again after deletion finds its old INBOX.
    async fn put_user(&self, name: &str, password_hash: &str) -> Result<UserRecord>;
    /// The user (lower-cased full address), if it exists.
    async fn get_user(&self, name: &str) -> Result<Option<UserRecord>>;
    /// Removes the user's credentials; its mailboxes and mail stay (as Apache James does).
    /// Returns whether the user existed.
    async fn delete_user(&self, name: &str) -> Result<bool>;
    /// Every user name, in no particular order.
    async fn list_users(&self) -> Result<Vec<String>>;
    /// The mailboxes of a user (deleted users keep theirs).
    async fn list_mailboxes(&self, user: &str) -> Result<Vec<MailboxInfo>>;
}

/// The hot path: what an SMTP delivery and a POP3 session do.
#[async_trait]
pub trait MailStore: Send + Sync {
    /// Starts receiving a body.
    async fn begin_body(&self) -> Result<Box<dyn BodyWriter>>;

    /// Makes one body a message in each mailbox (the body is stored once) and returns the new
    /// message ids, in the order of `copies`. When this returns `Ok`, the body, the message
    /// metadata and the POP3 view entries are durable; on `Err`, no message is visible.
    async fn deliver_copies(
        &self,
        body: StagedBody,
        copies: &[MessageCopy],
    ) -> Result<Vec<MessageId>>;

    /// [`deliver_copies`](Self::deliver_copies) with no header of its own in any copy.
    async fn deliver(&self, body: StagedBody, mailboxes: &[MailboxId]) -> Result<Vec<MessageId>> {
        let copies: Vec<MessageCopy> = mailboxes.iter().map(|m| MessageCopy::plain(*m)).collect();
        self.deliver_copies(body, &copies).await
    }

    /// The POP3 view of a mailbox, in delivery order.
    async fn pop3_view(&self, mailbox: MailboxId) -> Result<Vec<ViewEntry>>;

    /// The body of a message of that mailbox, or `None` if the message or its body is gone.
    async fn open_body(
        &self,
        mailbox: MailboxId,
        message: MessageId,
    ) -> Result<Option<Box<dyn BodyReader>>>;

    /// Removes messages (metadata, view entry, and the body once nothing references it).
    /// Unknown ids are ignored, so a deletion can be retried.
    async fn delete_messages(&self, mailbox: MailboxId, messages: &[MessageId]) -> Result<()>;

    /// The backend's name, for metrics and logs (`embedded`, `cassandra`).
    fn backend_name(&self) -> &'static str;

    /// Number of messages in the mailbox.
    async fn message_count(&self, mailbox: MailboxId) -> Result<u64> {
        Ok(self.pop3_view(mailbox).await?.len() as u64)
    }
}

/// Items per page of a backend's full scan (small in the crate's own tests, so that the contract
/// suite crosses page boundaries).
pub(crate) const SCAN_PAGE: usize = if cfg!(test) { 3 } else { 500 };

/// A stream of the items of a full scan; the backend pages underneath.
pub type ScanStream<'a, T> = futures_util::stream::BoxStream<'a, Result<T>>;

/// Consistency repair: fresh reads of single records, targeted writes, and full scans (the
/// `fixPop3Inconsistencies` task, POP3 read repair, imports).
#[async_trait]
pub trait Repair: Send + Sync {
    /// A message's metadata, read fresh (consistency checks re-read before they fix).
    async fn message_meta(&self, message: MessageId) -> Result<Option<MessageMeta>>;

    /// One entry of the POP3 view, read fresh.
    async fn view_entry(&self, mailbox: MailboxId, message: MessageId)
        -> Result<Option<ViewEntry>>;

    /// Writes a POP3 view entry as given (repairs, imports, tests).
    async fn put_view_entry(&self, mailbox: MailboxId, entry: ViewEntry) -> Result<()>;

    /// Removes a POP3 view entry and the message's UID-index entry, leaving the message itself
    /// alone (read repair of an entry whose message or body is gone, stale-entry fixes).
    async fn remove_view_entry(&self, mailbox: MailboxId, message: MessageId) -> Result<()>;

    /// Every message: `(message id, mailbox)`.
    fn all_messages(&self) -> ScanStream<'_, (MessageId, MailboxId)>;

    /// Every POP3 view entry: `(mailbox, message id)`.
    fn all_view_entries(&self) -> ScanStream<'_, (MailboxId, MessageId)>;
}

/// Classic UID mode (`pop3.listing = "uid"`).
#[async_trait]
pub trait UidStore: Send + Sync {
    /// Gives each message the next UIDs of its mailbox (strictly increasing, never reused) and
    /// indexes it by UID. On Cassandra the counter is advanced by compare-and-set (a
    /// lightweight transaction); on the embedded store in a transaction. A message that already
    /// has a UID keeps it; one that does not exist gets none (0 is returned in its place).
    async fn assign_uids(&self, mailbox: MailboxId, messages: &[MessageId]) -> Result<Vec<u64>>;

    /// The mailbox's UID validity and its messages in UID order.
    async fn uid_listing(&self, mailbox: MailboxId) -> Result<UidListing>;
}

/// Collection of bodies no message references.
#[async_trait]
pub trait BodyCollection: Send + Sync {
    /// Every stored body that is not held inline with its metadata (the candidates for
    /// collection: bodies of deliveries that never completed, or whose deletion stopped before
    /// removing them, and bodies in flight).
    fn all_bodies(&self) -> ScanStream<'_, BlobId>;

    /// Removes the body if no message references it (read fresh) and it is not in flight (see
    /// [`InFlight`]); returns whether it did. A body being received, or received and not yet
    /// delivered, is never removed, however old: a delivery writes its body before the messages
    /// that reference it.
    async fn remove_body_if_unreferenced(&self, blob: BlobId) -> Result<bool>;
}

/// A whole backend: every concern, one object. Callers take the narrow trait they need (a
/// `&dyn Repair`, an `Arc<dyn MailStore>`...), upcast from this.
pub trait Store:
    Directory
    + MailStore
    + Repair
    + UidStore
    + BodyCollection
    + TaskStore
    + OutboundQueue
    + RecipientRewrites
    + Quotas
    + MailRepositories
{
}

impl<S> Store for S where
    S: Directory
        + MailStore
        + Repair
        + UidStore
        + BodyCollection
        + TaskStore
        + OutboundQueue
        + RecipientRewrites
        + Quotas
        + MailRepositories
{
}

/// Turns a backend's paged scan into a stream: `page(store, cursor)` returns one page and the
/// cursor of the next (`None` at the end).
pub(crate) fn paged<'a, S, T, F, Fut>(store: S, page: F) -> ScanStream<'a, T>
where
    S: Clone + Send + 'a,
    T: Send + 'a,
    F: Fn(S, Option<Vec<u8>>) -> Fut + Send + 'a,
    Fut: std::future::Future<Output = Result<ScanPage<T>>> + Send + 'a,
{
    use futures_util::stream::{self, StreamExt};
    // State: the cursor of the next page, `None` once the scan is over.
    let pages = stream::unfold(Some(None), move |cursor: Option<Option<Vec<u8>>>| {
        let next = cursor.map(|c| page(store.clone(), c));
        async move {
            match next?.await {
                Ok(p) => Some((Ok(p.items), p.next.map(Some))),
                Err(e) => Some((Err(e), None)),
            }
        }
    });
    pages
        .flat_map(|page| match page {
            Ok(items) => stream::iter(items.into_iter().map(Ok)).left_stream(),
            Err(e) => stream::once(async move { Err(e) }).right_stream(),
        })
        .boxed()
}

/// Metadata of a stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageMeta {
    /// The mailbox the message is in.
    pub mailbox: MailboxId,
    /// Octets of the stored message.
    pub size: u64,
    /// Its UID, once one was assigned (UID mode).
    pub uid: Option<u64>,
}

/// One page of a backend's full scan.
#[derive(Debug, Clone)]
pub(crate) struct ScanPage<T> {
    pub items: Vec<T>,
    /// `None` when the scan is complete.
    pub next: Option<Vec<u8>>,
}

/// A mailbox listed by UID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidListing {
    /// Changes only if UIDs had to be renumbered (never, today); part of the UIDL.
    pub validity: u64,
    /// The messages, by increasing UID.
    pub entries: Vec<UidEntry>,
}

/// One message of a UID listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidEntry {
    /// Its UID, unique in the mailbox.
    pub uid: u64,
    /// Its message id.
    pub message_id: MessageId,
    /// Octets of the stored message.
    pub size: u64,
}

/// A task of the task manager, as stored so that any node can answer for it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskRecord {
    /// The task id (James's taskId).
    pub id: uuid::Uuid,
    /// The task type (James's `type`, such as `BlobGCTask`).
    pub kind: String,
    /// waiting, inProgress, completed, failed, canceled (James's spelling).
    pub status: String,
    /// When it was submitted (milliseconds since the epoch).
    pub submitted_ms: i64,
    /// When it started.
    pub started_ms: Option<i64>,
    /// When it ended (completed, failed or canceled).
    pub ended_ms: Option<i64>,
    /// Host name of the node that runs it.
    pub node: String,
    /// Last sign of life of the running node.
    pub heartbeat_ms: i64,
    /// Whether someone asked, on any node, for it to stop.
    pub cancel_requested: bool,
    /// The task's additional information, as JSON.
    pub details: String,
}

/// Where tasks live.
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Writes the task; never clears a cancellation request made meanwhile.
    async fn save_task(&self, task: &TaskRecord) -> Result<()>;
    /// The task, if it is known.
    async fn get_task(&self, id: uuid::Uuid) -> Result<Option<TaskRecord>>;
    /// Every known task, in no particular order.
    async fn list_tasks(&self) -> Result<Vec<TaskRecord>>;
    /// Marks the task for cancellation; returns whether it exists.
    async fn request_cancel(&self, id: uuid::Uuid) -> Result<bool>;
    /// Forgets the task (cleanup of old tasks); returns whether it existed.
    async fn delete_task(&self, id: uuid::Uuid) -> Result<bool>;
}
