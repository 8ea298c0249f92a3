#![warn(missing_docs)]
//! Tern's storage: the traits every backend implements, the message identity model, the embedded
//! backend (redb for metadata, files for large bodies) and the contract suite all backends pass.
//!
//! Two small traits split the data the way a distributed deployment does:
//! - [`Directory`]: domains, users (password hashes) and their mailboxes;
//! - [`MailStore`]: message bodies, message metadata and the per-mailbox POP3 view
//!   (mailbox -> message id, size) that answers STAT/LIST/UIDL without touching bodies.

pub mod blob_store;
pub mod cassandra;
pub mod contract;
pub mod embedded;
mod error;
mod ids;
mod mappings;
mod model;
mod queue;
mod quotas;
mod repositories;

pub use error::StoreError;
pub use ids::{BlobId, IdGenerator, MailboxId, MessageId};
pub use model::{
    BodyCollection, BodyReader, BodyWriter, Directory, InFlight, MailStore, MailboxInfo,
    MessageCopy, MessageMeta, Repair, ScanStream, StagedBody, StagedPayload, Store, TaskRecord,
    TaskStore, UidEntry, UidListing, UidStore, UserRecord, ViewEntry, INBOX,
};

pub use mappings::{Mapping, MappingKind, RecipientRewrites};
pub use queue::{now_ms, NewQueuedMail, Notify, OutboundQueue, QueuedMail, QueuedRecipient};
pub use quotas::{QuotaLimits, QuotaResource, QuotaScope, QuotaUsage, Quotas};
pub use repositories::{MailRepositories, NewRepositoryMail, RepositoryMail};

pub(crate) use model::{paged, ScanPage, SCAN_PAGE};

/// A store operation's result.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
