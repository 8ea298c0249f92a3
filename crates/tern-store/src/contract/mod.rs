//! The contract every storage backend passes, in the manner of Apache James's `*Contract` tests
//! and object_store's shared integration suite. A backend instantiates it with
//! [`store_contract_tests!`](crate::store_contract_tests) and a factory expression (it may
//! `.await`) that yields `(Backend, guard)`, the guard living as long as the test. The cases
//! are grouped by the trait they test, one module each.
#![allow(missing_docs)] // each case is named for what it checks

pub mod blob_store;
mod collection;
mod directory;
mod mail;
mod mappings;
mod queue;
mod quotas;
mod repair;
mod repositories;
mod tasks;
mod uids;

pub use collection::*;
pub use directory::*;
pub use mail::*;
pub use mappings::*;
pub use queue::*;
pub use quotas::*;
pub use repair::*;
pub use repositories::*;
pub use tasks::*;
pub use uids::*;

use crate::{
    BodyCollection, Directory, MailStore, MailboxId, MessageId, OutboundQueue, Quotas,
    RecipientRewrites, Repair, Store, TaskRecord, TaskStore, UidStore, ViewEntry,
};
use futures_util::StreamExt;
use std::sync::Arc;

/// A backend under test, seen through each of its traits (the cases use the one they test).
#[derive(Clone)]
pub struct Backend {
    /// Domains, users, mailboxes.
    pub directory: Arc<dyn Directory>,
    /// The delivery and POP3 hot path.
    pub mail: Arc<dyn MailStore>,
    /// Repair reads, writes and scans.
    pub repair: Arc<dyn Repair>,
    /// UID mode.
    pub uids: Arc<dyn UidStore>,
    /// Body collection.
    pub collection: Arc<dyn BodyCollection>,
    /// Task records.
    pub tasks: Arc<dyn TaskStore>,
    /// The outbound queue.
    pub queue: Arc<dyn OutboundQueue>,
    /// Recipient rewriting.
    pub rewrites: Arc<dyn RecipientRewrites>,
    /// Quota limits and usage.
    pub quotas: Arc<dyn Quotas>,
    /// Mail repositories.
    pub repositories: Arc<dyn crate::MailRepositories>,
}

impl Backend {
    /// One store, every view of it.
    pub fn new<S: Store + 'static>(store: S) -> Self {
        let store: Arc<dyn Store> = Arc::new(store);
        Self {
            directory: store.clone(),
            mail: store.clone(),
            repair: store.clone(),
            uids: store.clone(),
            collection: store.clone(),
            tasks: store.clone(),
            queue: store.clone(),
            rewrites: store.clone(),
            quotas: store.clone(),
            repositories: store,
        }
    }
}

/// Generates one `#[tokio::test]` per contract case.
#[macro_export]
macro_rules! store_contract_tests {
    (#[ignore = $reason:literal] $factory:expr) => {
        $crate::store_contract_tests!(@cases [#[ignore = $reason]] $factory);
    };
    ($factory:expr) => {
        $crate::store_contract_tests!(@cases [] $factory);
    };
    (@cases $attrs:tt $factory:expr) => {
        $crate::store_contract_tests!(@each $attrs $factory;
            domains_add_list_remove,
            users_put_get_update_delete,
            recreated_user_finds_its_inbox,
            deliver_and_read_back,
            empty_and_large_bodies_round_trip,
            one_body_many_mailboxes,
            copies_carry_their_own_header,
            view_lists_in_delivery_order,
            delete_is_scoped_and_idempotent,
            aborted_body_leaves_nothing,
            concurrent_deliveries_all_land,
            view_keeps_imported_uidl_room,
            metadata_and_view_entries_read_back,
            scans_cover_everything_across_pages,
            uids_increase_and_list_in_order,
            concurrent_uid_assignment_never_repeats,
            tasks_save_and_cancellation_survives_updates,
            unreferenced_bodies_are_collected_and_referenced_ones_kept,
            bodies_in_flight_are_never_collected,
            queued_mail_is_durable_due_and_readable,
            rescheduled_mail_waits_and_removal_frees_the_body,
            concurrent_enqueues_all_land,
            mappings_add_list_remove,
            quota_limits_and_usage,
            repositories_keep_mail_until_removed,
        );
    };
    (@each $attrs:tt $factory:expr; $($name:ident),* $(,)?) => {
        $( $crate::store_contract_tests!(@one $attrs $factory; $name); )*
    };
    (@one [$($attr:tt)*] $factory:expr; $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $($attr)*
        async fn $name() {
            let (backend, _guard) = $factory;
            $crate::contract::$name(&backend).await;
        }
    };
}

pub async fn deliver(b: &Backend, body: &[u8], mailboxes: &[MailboxId]) -> Vec<MessageId> {
    let mut w = b.mail.begin_body().await.expect("begin body");
    // Several writes, as a network peer would produce them.
    for chunk in body.chunks(7919) {
        w.write(chunk).await.expect("write body");
    }
    let staged = w.finish().await.expect("finish body");
    assert_eq!(staged.size, body.len() as u64);
    b.mail.deliver(staged, mailboxes).await.expect("deliver")
}

pub async fn read(b: &Backend, mailbox: MailboxId, id: MessageId) -> Option<Vec<u8>> {
    let mut r = b.mail.open_body(mailbox, id).await.expect("open body")?;
    let mut out = Vec::new();
    while let Some(chunk) = r.next_chunk().await.expect("read chunk") {
        out.extend_from_slice(&chunk);
    }
    Some(out)
}

fn ids(view: &[ViewEntry]) -> Vec<MessageId> {
    view.iter().map(|e| e.message_id).collect()
}

/// Every stored body the collector could consider.
async fn all_bodies(b: &Backend) -> Vec<crate::BlobId> {
    let mut out: Vec<crate::BlobId> = b
        .collection
        .all_bodies()
        .map(|r| r.unwrap())
        .collect()
        .await;
    out.sort_by_key(|id| id.0);
    out
}
