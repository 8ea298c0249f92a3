//! The two ways of listing a maildrop for POP3, behind one trait (`pop3.listing`):
//! - message-id (default): the POP3 view as it is, UIDL = the message id; no coordination;
//! - uid: the classic mode, messages numbered by a per-mailbox UID counter advanced by
//!   compare-and-set, UIDL = "<uid validity>.<uid>".
//!
//! The POP3 view is maintained in both modes, so switching from uid to message-id works at once.
//! Switching from message-id to uid gives UIDs, at their first uid-mode login, to messages
//! delivered meanwhile (their UIDL changes once, so clients fetch them again).

use async_trait::async_trait;
use std::collections::HashSet;
use std::sync::Arc;
use tern_store::{MailStore, MailboxId, MessageId, StoreError, UidStore};

/// One message as a POP3 session lists it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub message_id: MessageId,
    pub size: u64,
    pub uidl: String,
}

#[async_trait]
pub trait Pop3Listing: Send + Sync {
    /// The snapshot a session works on, in listing order.
    async fn snapshot(&self, mailbox: MailboxId) -> Result<Vec<Listed>, StoreError>;
    /// Whether [`Pop3Listing::snapshot`] only reads, so that it may run before the login it
    /// belongs to has been checked (its result then shown only to that login).
    fn snapshot_only_reads(&self) -> bool {
        false
    }
    /// Called once a delivery is durable, before it is acknowledged.
    async fn delivered(&self, mailbox: MailboxId, messages: &[MessageId])
        -> Result<(), StoreError>;
}

pub struct MessageIdListing(pub Arc<dyn MailStore>);

#[async_trait]
impl Pop3Listing for MessageIdListing {
    async fn snapshot(&self, mailbox: MailboxId) -> Result<Vec<Listed>, StoreError> {
        let view = self.0.pop3_view(mailbox).await?;
        Ok(view
            .into_iter()
            .map(|e| Listed {
                message_id: e.message_id,
                size: e.size,
                uidl: e.uidl.unwrap_or_else(|| e.message_id.to_string()),
            })
            .collect())
    }

    async fn delivered(&self, _: MailboxId, _: &[MessageId]) -> Result<(), StoreError> {
        Ok(())
    }

    fn snapshot_only_reads(&self) -> bool {
        true
    }
}

pub struct UidListing {
    /// The POP3 view, for sizes and for messages not numbered yet.
    pub mail: Arc<dyn MailStore>,
    /// The UID counter and index.
    pub uids: Arc<dyn UidStore>,
}

#[async_trait]
impl Pop3Listing for UidListing {
    async fn snapshot(&self, mailbox: MailboxId) -> Result<Vec<Listed>, StoreError> {
        let view = self.mail.pop3_view(mailbox).await?;
        let mut listing = self.uids.uid_listing(mailbox).await?;
        let numbered: HashSet<MessageId> = listing.entries.iter().map(|e| e.message_id).collect();
        // Messages in the view without a UID (delivered in message-id mode, or a delivery that
        // stopped between its view entry and its UID) get one now, in delivery order.
        let unnumbered: Vec<MessageId> = view
            .iter()
            .map(|e| e.message_id)
            .filter(|id| !numbered.contains(id))
            .collect();
        if !unnumbered.is_empty() {
            self.uids.assign_uids(mailbox, &unnumbered).await?;
            listing = self.uids.uid_listing(mailbox).await?;
        }
        // The view says what exists: a UID entry without a view entry is a deletion in flight.
        let live: HashSet<MessageId> = view.iter().map(|e| e.message_id).collect();
        let validity = listing.validity;
        Ok(listing
            .entries
            .into_iter()
            .filter(|e| live.contains(&e.message_id))
            .map(|e| Listed {
                message_id: e.message_id,
                size: e.size,
                uidl: format!("{validity}.{}", e.uid),
            })
            .collect())
    }

    async fn delivered(
        &self,
        mailbox: MailboxId,
        messages: &[MessageId],
    ) -> Result<(), StoreError> {
        self.uids.assign_uids(mailbox, messages).await.map(|_| ())
    }
}
