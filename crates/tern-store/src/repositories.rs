//! Mail repositories (James's `MailRepository`): messages that processing could not deliver
//! (a forwarding loop, a rewriting target without a user, a bounce nobody can receive), kept
//! whole with why, until an operator reads, deletes or reprocesses them. Nothing accepted is
//! dropped: what cannot go on goes here.

use crate::{BlobId, BodyReader, Result, StagedBody};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// A message kept in a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryMail {
    /// The repository's path, James-style (`var/mail/error/`).
    pub repository: String,
    /// The mail's key in the repository (a time-based UUID: keys list oldest first).
    pub key: String,
    /// The envelope sender; empty for the null reverse path.
    pub sender: String,
    /// The recipients it could not be delivered to.
    pub recipients: Vec<String>,
    /// The processing state it stopped in (James's mail state: `error`, `address-error`...).
    pub state: String,
    /// Why it stopped.
    pub error: Option<String>,
    /// The name of the client it came from (its HELO).
    pub remote_host: String,
    /// The address of the client it came from.
    pub remote_addr: String,
    /// When it was stored, in ms since the epoch.
    pub last_updated_ms: i64,
    /// Its body (one reference held by this entry).
    pub blob: BlobId,
    /// Octets of the body.
    pub size: u64,
}

/// A message for a repository, before it has a key (the fields of [`RepositoryMail`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRepositoryMail {
    /// The repository's path.
    pub repository: String,
    /// The envelope sender.
    pub sender: String,
    /// The recipients it could not be delivered to.
    pub recipients: Vec<String>,
    /// The processing state it stopped in.
    pub state: String,
    /// Why it stopped.
    pub error: Option<String>,
    /// The client's name.
    pub remote_host: String,
    /// The client's address.
    pub remote_addr: String,
}

impl RepositoryMail {
    /// The entry both backends store for `mail` under `key`.
    pub fn new(key: uuid::Uuid, body: &StagedBody, mail: NewRepositoryMail) -> Self {
        Self {
            repository: mail.repository,
            key: key.to_string(),
            sender: mail.sender,
            recipients: mail.recipients,
            state: mail.state,
            error: mail.error,
            remote_host: mail.remote_host,
            remote_addr: mail.remote_addr,
            last_updated_ms: crate::now_ms(),
            blob: body.blob_id,
            size: body.size,
        }
    }
}

/// Named repositories of kept mail. Small and rarely written: no hot path goes through here.
#[async_trait]
pub trait MailRepositories: Send + Sync {
    /// Keeps a message in a repository (which then exists). When this returns, the body and
    /// the entry are durable.
    async fn store_in_repository(
        &self,
        body: StagedBody,
        mail: NewRepositoryMail,
    ) -> Result<RepositoryMail>;

    /// Makes an empty repository exist; creating an existing one is not an error.
    async fn create_repository(&self, repository: &str) -> Result<()>;

    /// Every repository that was created or given mail, with the number of mails it holds.
    async fn list_repositories(&self) -> Result<Vec<(String, u64)>>;

    /// The mails of a repository, oldest first.
    async fn repository_mails(&self, repository: &str) -> Result<Vec<RepositoryMail>>;

    /// One mail, if the repository holds it.
    async fn repository_mail(&self, repository: &str, key: &str) -> Result<Option<RepositoryMail>>;

    /// The body of a kept mail, or `None` if it is gone.
    async fn open_repository_body(
        &self,
        mail: &RepositoryMail,
    ) -> Result<Option<Box<dyn BodyReader>>>;

    /// Removes a mail and its reference to its body; returns whether it was there.
    async fn remove_repository_mail(&self, repository: &str, key: &str) -> Result<bool>;
}

/// A repository key as the time-based id it is made from; `None` for anything else.
pub(crate) fn parse_key(key: &str) -> Option<crate::MessageId> {
    crate::MessageId::from_uuid(key.parse().ok()?)
}
