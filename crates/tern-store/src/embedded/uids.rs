//! Classic UID mode on the embedded store.

use super::*;

#[async_trait]
impl UidStore for EmbeddedStore {
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
}
