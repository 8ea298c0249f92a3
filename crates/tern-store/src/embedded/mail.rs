//! The hot path on the embedded store: bodies in, deliveries, the POP3 view, bodies out, deletions.

use super::*;
use crate::model::WithHeader;

#[async_trait]
impl MailStore for EmbeddedStore {
    fn backend_name(&self) -> &'static str {
        "embedded"
    }

    async fn begin_body(&self) -> Result<Box<dyn BodyWriter>> {
        let id = BlobId(self.inner.ids.next_id().uuid());
        Ok(Box::new(EmbeddedBodyWriter {
            pending: self.inner.pending.hold(id),
            id,
            blobs: self.inner.blobs.clone(),
            inline_max: self.inner.options.inline_max,
            buf: Vec::new(),
            upload: None,
            size: 0,
        }))
    }

    async fn deliver_copies(
        &self,
        body: StagedBody,
        copies: &[MessageCopy],
    ) -> Result<Vec<MessageId>> {
        if copies.is_empty() {
            return Err(StoreError::invalid("delivery without recipients"));
        }
        let (blob, body_size, inline, in_flight) = staged_parts(body);
        let copies: Vec<DeliveredCopy> = copies
            .iter()
            .map(|c| DeliveredCopy {
                mailbox: c.mailbox.0.as_u128(),
                id: self.inner.ids.next_id(),
                header: c.header.clone(),
                uidl: c.uidl.clone().unwrap_or_default(),
            })
            .collect();
        let ids: Vec<MessageId> = copies.iter().map(|c| c.id).collect();
        self.inner
            .committer
            .deliver(Delivery {
                blob,
                body_size,
                inline,
                copies,
            })
            .await?;
        // Referenced now: the collector may judge it by its references alone.
        drop(in_flight);
        Ok(ids)
    }

    async fn pop3_view(&self, mailbox: MailboxId) -> Result<Vec<ViewEntry>> {
        // A large mailbox's view may have to come from disk: read it on the blocking pool, so
        // that the async workers keep serving everyone else meanwhile.
        self.read_blocking(move |txn| {
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
        })
        .await
    }

    async fn open_body(
        &self,
        mailbox: MailboxId,
        message: MessageId,
    ) -> Result<Option<Box<dyn BodyReader>>> {
        let (blob, header) = {
            let txn = self.read()?;
            let messages = txn.open_table(MESSAGES).map_err(db_err)?;
            let Some(meta) = messages.get(message.sort_key()).map_err(db_err)? else {
                return Ok(None);
            };
            let (owner, blob, _size, header) = meta.value();
            if owner != mailbox.0.as_u128() {
                return Ok(None);
            }
            (blob, (!header.is_empty()).then(|| header.to_vec()))
        };
        Ok(self
            .open_blob(BlobId(Uuid::from_u128(blob)))
            .await?
            .map(|body| WithHeader::wrap(header, body)))
    }

    async fn delete_messages(&self, mailbox: MailboxId, messages: &[MessageId]) -> Result<()> {
        let m = mailbox.0.as_u128();
        let keys: Vec<u128> = messages.iter().map(|id| id.sort_key()).collect();
        let unreferenced_files = self
            .inner
            .committer
            .write(move |txn| {
                let mut files = Vec::new();
                let mut freed = (0i64, 0i64);
                let mut msgs = txn.open_table(MESSAGES).map_err(db_err)?;
                let mut view = txn.open_table(POP3_VIEW).map_err(db_err)?;
                let mut uids = txn.open_table(MESSAGE_UIDS).map_err(db_err)?;
                let mut by_uid = txn.open_table(MESSAGES_BY_UID).map_err(db_err)?;
                for &key in &keys {
                    view.remove((m, key)).map_err(db_err)?;
                    let owned = match msgs.get(key).map_err(db_err)? {
                        Some(meta) if meta.value().0 == m => Some((meta.value().1, meta.value().2)),
                        _ => None,
                    };
                    let Some((blob, size)) = owned else { continue };
                    freed.0 += 1;
                    freed.1 += size as i64;
                    msgs.remove(key).map_err(db_err)?;
                    let uid = uids.remove(key).map_err(db_err)?.map(|u| u.value());
                    if let Some(uid) = uid {
                        by_uid.remove((m, uid)).map_err(db_err)?;
                    }
                    files.extend(drop_blob_ref(txn, blob)?);
                }
                drop((msgs, view, uids, by_uid));
                quotas::add_usage(txn, m, -freed.0, -freed.1)?;
                Ok(files)
            })
            .await?;
        self.remove_body_files(unreferenced_files).await;
        Ok(())
    }
}

/// One message for one or more mailboxes, as the committer applies it.
pub(crate) struct Delivery {
    blob: u128,
    body_size: u64,
    /// The body, when it lives in the database.
    inline: Option<Vec<u8>>,
    copies: Vec<DeliveredCopy>,
}

struct DeliveredCopy {
    mailbox: u128,
    id: MessageId,
    /// The copy's own header lines (trace fields), put before the shared body.
    header: Vec<u8>,
    /// An imported UIDL, or "".
    uidl: String,
}

/// Writes deliveries in a transaction: each table is opened once for all of them, and each
/// mailbox's quota usage is read and written once however many copies it received.
pub(crate) fn apply_deliveries<'a>(
    txn: &redb::WriteTransaction,
    deliveries: impl Iterator<Item = &'a Delivery>,
) -> Result<()> {
    let mut bodies = txn.open_table(BODIES).map_err(db_err)?;
    let mut messages = txn.open_table(MESSAGES).map_err(db_err)?;
    let mut view = txn.open_table(POP3_VIEW).map_err(db_err)?;
    // (mailbox, messages, octets); a batch names few mailboxes, a scan beats hashing.
    let mut usage: Vec<(u128, i64, i64)> = Vec::new();
    for d in deliveries {
        if d.copies.is_empty() {
            return Err(StoreError::invalid("delivery without recipients"));
        }
        bodies
            .insert(d.blob, (d.copies.len() as u64, d.inline.as_deref()))
            .map_err(db_err)?;
        for c in &d.copies {
            let size = d.body_size + c.header.len() as u64;
            messages
                .insert(
                    c.id.sort_key(),
                    (c.mailbox, d.blob, size, c.header.as_slice()),
                )
                .map_err(db_err)?;
            view.insert((c.mailbox, c.id.sort_key()), (size, c.uidl.as_str()))
                .map_err(db_err)?;
            match usage.iter_mut().find(|(m, _, _)| *m == c.mailbox) {
                Some(u) => {
                    u.1 += 1;
                    u.2 += size as i64;
                }
                None => usage.push((c.mailbox, 1, size as i64)),
            }
        }
    }
    let mut quota_usage = txn.open_table(QUOTA_USAGE).map_err(db_err)?;
    for (mailbox, count, size) in usage {
        quotas::add_usage_in(&mut quota_usage, mailbox, count, size)?;
    }
    Ok(())
}

impl EmbeddedStore {
    /// A stored body, inline in the database or in the blob store; `None` if it is gone.
    pub(crate) async fn open_blob(&self, blob: BlobId) -> Result<Option<Box<dyn BodyReader>>> {
        {
            let txn = self.read()?;
            let bodies = txn.open_table(BODIES).map_err(db_err)?;
            if let Some(row) = bodies.get(blob.0.as_u128()).map_err(db_err)? {
                if let (_, Some(data)) = row.value() {
                    let bytes = Bytes::copy_from_slice(data);
                    return Ok(Some(Box::new(InlineReader(Some(bytes)))));
                }
            }
        }
        self.inner.blobs.open(blob).await
    }

    /// Removes the bodies whose last reference a committed transaction dropped.
    pub(crate) async fn remove_body_files(&self, blobs: Vec<BlobId>) {
        for blob in blobs {
            if let Err(e) = self.inner.blobs.remove(blob).await {
                // Left for the collector; the message itself is already gone.
                tracing::warn!(%blob, error = %e, "could not remove a body");
            }
        }
    }
}

/// Records a new body's references (and its bytes, when they live in the database) inside the
/// transaction that creates what references it.
pub(crate) fn commit_body(
    txn: &redb::WriteTransaction,
    blob: u128,
    refs: u64,
    inline: Option<&[u8]>,
) -> Result<()> {
    txn.open_table(BODIES)
        .map_err(db_err)?
        .insert(blob, (refs, inline))
        .map_err(db_err)?;
    Ok(())
}

/// Drops one reference to a body inside a write transaction; returns the body if it was a
/// file that nothing references any more (to be removed once the transaction committed).
pub(crate) fn drop_blob_ref(txn: &redb::WriteTransaction, blob: u128) -> Result<Option<BlobId>> {
    let mut bodies = txn.open_table(BODIES).map_err(db_err)?;
    let (count, inline) = match bodies.get(blob).map_err(db_err)? {
        Some(row) => {
            let (count, inline) = row.value();
            (count, inline.map(<[u8]>::to_vec))
        }
        None => (0, None),
    };
    if count > 1 {
        bodies
            .insert(blob, (count - 1, inline.as_deref()))
            .map_err(db_err)?;
        return Ok(None);
    }
    bodies.remove(blob).map_err(db_err)?;
    // A body that was in the database went with its row; a file is the caller's to remove.
    Ok(inline.is_none().then(|| BlobId(Uuid::from_u128(blob))))
}
