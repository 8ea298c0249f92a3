//! The outbound queue: mail accepted for remote recipients, kept durable until every recipient
//! is delivered, bounced or expired.
//!
//! The queue is cut into shards. A node works on the shards it holds (a lease on Cassandra, all
//! of them on the embedded store), so two nodes never pick the same entry in normal operation;
//! a node that dies loses its leases and another takes its shards over. Delivery is at least
//! once: a node that delivered a message and died before removing its entry lets the next
//! holder of the shard deliver it again.

use crate::{BlobId, BodyReader, Result, ScanStream, StagedBody};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The DSN `NOTIFY` of one recipient (RFC 3461 section 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Notify {
    /// Report a successful delivery.
    pub success: bool,
    /// Report a failure (also the default when the client said nothing).
    pub failure: bool,
    /// Report a delay.
    pub delay: bool,
}

impl Notify {
    /// What a recipient gets when the client gave no `NOTIFY`: failures are reported.
    pub const DEFAULT: Notify = Notify {
        success: false,
        failure: true,
        delay: false,
    };
}

/// One recipient of a queued message, still to be delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedRecipient {
    /// The forward path, `local@domain`.
    pub address: String,
    /// The DSN `ORCPT` as the client gave it (`rfc822;addr`), if any.
    #[serde(default)]
    pub orcpt: Option<String>,
    /// What to report about this recipient.
    #[serde(default = "default_notify")]
    pub notify: Notify,
    /// The last temporary failure, for the queue listing and the final bounce.
    #[serde(default)]
    pub last_error: Option<String>,
}

fn default_notify() -> Notify {
    Notify::DEFAULT
}

impl QueuedRecipient {
    /// A recipient with the default DSN settings.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            orcpt: None,
            notify: Notify::DEFAULT,
            last_error: None,
        }
    }
}

/// A message for the queue, before it has an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewQueuedMail {
    /// The envelope sender; empty for the null reverse path (bounces).
    pub sender: String,
    /// The recipients.
    pub recipients: Vec<QueuedRecipient>,
    /// The DSN `ENVID` (RFC 3461 section 4.4).
    pub envid: Option<String>,
    /// The DSN `RET=FULL`: a bounce carries the whole message, not only its header.
    pub return_full: bool,
    /// Header fields (each with its CRLF) to send in front of the body: the `Delivered-To` of
    /// a forward, the `DKIM-Signature` made while the message arrived.
    pub header_prefix: Option<String>,
}

/// A queued message as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMail {
    /// Time-based id, made by the accepting node.
    pub id: Uuid,
    /// The shard the entry lives in.
    pub shard: u32,
    /// The envelope sender; empty for the null reverse path.
    pub sender: String,
    /// Recipients still to deliver.
    pub recipients: Vec<QueuedRecipient>,
    /// The body, in the same body store as mailbox messages.
    pub blob: BlobId,
    /// Octets of the body.
    pub size: u64,
    /// When the message was accepted (milliseconds since the epoch).
    pub queued_ms: i64,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (milliseconds since the epoch).
    pub next_attempt_ms: i64,
    /// The DSN `ENVID`.
    #[serde(default)]
    pub envid: Option<String>,
    /// The DSN `RET=FULL`.
    #[serde(default)]
    pub return_full: bool,
    /// Header fields (each with its CRLF) sent in front of the body. (Entries queued before
    /// forwards added Delivered-To held a DKIM signature alone, under its own name.)
    #[serde(default, alias = "dkim_signature")]
    pub header_prefix: Option<String>,
}

impl QueuedMail {
    /// A new entry for `body`, due now (what every backend's `enqueue` stores).
    pub fn new(id: Uuid, shard: u32, body: &StagedBody, mail: NewQueuedMail) -> Self {
        let now = now_ms();
        Self {
            id,
            shard,
            sender: mail.sender,
            recipients: mail.recipients,
            blob: body.blob_id,
            size: body.size,
            queued_ms: now,
            attempts: 0,
            next_attempt_ms: now,
            envid: mail.envid,
            return_full: mail.return_full,
            header_prefix: mail.header_prefix,
        }
    }
}

/// The outbound queue.
#[async_trait]
pub trait OutboundQueue: Send + Sync {
    /// Queues a message, due now. When this returns `Ok`, the body and the entry are durable.
    /// The entry goes into one of the shards this node holds, if it holds any, so that the
    /// node that accepted a message is the one that sends it.
    async fn enqueue(&self, body: StagedBody, mail: NewQueuedMail) -> Result<QueuedMail>;

    /// Takes and renews this node's share of the shards and returns the shards it holds now.
    /// Called every few seconds by the queue runner; a node holds a shard for a lease period
    /// after the last renewal that answered (see [`OutboundQueue::lease_secs`]).
    async fn hold_shards(&self, node: &str) -> Result<Vec<u32>>;

    /// Gives this node's shards up (at shutdown), so that others take them at once.
    async fn release_shards(&self, node: &str) -> Result<()>;

    /// Notified when this node queued or rescheduled an entry, so that the runner looks at
    /// once instead of at its next poll.
    fn queue_signal(&self) -> std::sync::Arc<tokio::sync::Notify>;

    /// How long a held shard stays held without a renewal; a runner stops working on its
    /// shards before that (an embedded store's single process holds them forever).
    fn lease_secs(&self) -> u64;

    /// Entries of the shard whose next attempt is due at `now_ms`, at most `limit`, oldest
    /// due first.
    async fn due_mail(&self, shard: u32, now_ms: i64, limit: usize) -> Result<Vec<QueuedMail>>;

    /// Replaces `previous` by `next` (the same id and shard, fewer recipients, another due
    /// time): after a partial delivery or a temporary failure, or to flush.
    async fn reschedule(&self, previous: &QueuedMail, next: &QueuedMail) -> Result<()>;

    /// Removes the entry and, once nothing else references it, its body. Removing an entry
    /// that is gone is not an error.
    async fn remove_queued(&self, mail: &QueuedMail) -> Result<()>;

    /// Every entry of the queue (of this datacenter, on Cassandra).
    fn all_queued(&self) -> ScanStream<'_, QueuedMail>;

    /// The body of a queued message.
    async fn open_queued_body(&self, mail: &QueuedMail) -> Result<Option<Box<dyn BodyReader>>>;
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
