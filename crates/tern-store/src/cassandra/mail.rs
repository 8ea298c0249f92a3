//! The hot path on the cassandra store: bodies in, deliveries, the POP3 view, bodies out, deletions.

use super::*;
use crate::model::WithHeader;

#[async_trait]
impl MailStore for CassandraStore {
    fn backend_name(&self) -> &'static str {
        "cassandra"
    }

    async fn begin_body(&self) -> Result<Box<dyn BodyWriter>> {
        let c = self.conn()?.clone();
        Ok(Box::new(body::CassandraBodyWriter::new(
            c,
            self.inner.ids.next_id().uuid(),
        )))
    }

    async fn deliver_copies(
        &self,
        body: StagedBody,
        copies: &[MessageCopy],
    ) -> Result<Vec<MessageId>> {
        if copies.is_empty() {
            return Err(StoreError::invalid("delivery without recipients"));
        }
        let c = self.conn()?;
        let ids: Vec<MessageId> = copies.iter().map(|_| self.inner.ids.next_id()).collect();
        let refs: Vec<CqlTimeuuid> = ids.iter().map(|id| timeuuid(*id)).collect();
        let blob = body.blob_id.0;
        let size = |copy: &MessageCopy| (body.size + copy.header.len() as u64) as i64;
        let sizes: Vec<i64> = copies.iter().map(size).collect();
        // 1. The body with its references, and the message rows, at once: a message row is
        // reached only through its view entry (RETR, deletion) or by the repair task, which
        // checks that the body is readable before it adds a view entry. So a row whose body
        // failed to commit is an unacknowledged leftover no client can see.
        // (A copy without a header of its own leaves the column unwritten: no tombstone.)
        let messages = try_join_all(copies.iter().zip(&ids).zip(&sizes).map(
            |((copy, id), size)| {
                let (t, mb) = (timeuuid(*id), copy.mailbox.0);
                async move {
                    if copy.header.is_empty() {
                        c.exec(&c.st.insert_message, (t, mb, blob, *size)).await
                    } else {
                        let st = &c.st.insert_message_with_header;
                        c.exec(st, (t, mb, blob, *size, copy.header.as_slice()))
                            .await
                    }
                }
            },
        ));
        futures_util::future::try_join(
            body::commit(c, blob, body.size, body.payload, refs),
            messages,
        )
        .await?;
        // Referenced now: the in-flight marker (of a body written ahead in chunks) may go.
        drop(body.in_flight);
        // 2. The POP3 view entries, strictly after both: what a client can list is complete.
        // The quota usage, a projection (a failed update is logged and repaired by the
        // recompute task), is counted in the same round trip.
        let view = try_join_all(
            copies
                .iter()
                .zip(&ids)
                .zip(&sizes)
                .map(|((copy, id), size)| {
                    let uidl = copy.uidl.as_deref().unwrap_or("");
                    c.exec(
                        &c.st.insert_view,
                        (copy.mailbox.0, timeuuid(*id), *size, uidl),
                    )
                }),
        );
        let usage = futures_util::future::join_all(
            copies
                .iter()
                .zip(&sizes)
                .map(|(copy, size)| self.add_usage(c, copy.mailbox.0, 1, *size)),
        );
        futures_util::future::join(view, usage).await.0?;
        Ok(ids)
    }

    async fn pop3_view(&self, mailbox: MailboxId) -> Result<Vec<ViewEntry>> {
        let c = self.conn()?;
        let rows = c
            .all_rows::<(CqlTimeuuid, i64, Option<String>)>(&c.st.select_view, (mailbox.0,))
            .await?;
        rows.into_iter()
            .map(|(id, size, uidl)| {
                Ok(ViewEntry {
                    message_id: message_id(id)?,
                    size: size.max(0) as u64,
                    uidl: uidl.filter(|u| !u.is_empty()),
                })
            })
            .collect()
    }

    async fn open_body(
        &self,
        mailbox: MailboxId,
        message: MessageId,
    ) -> Result<Option<Box<dyn BodyReader>>> {
        let c = self.conn()?;
        let Some((owner, blob, header)) = c
            .first_row::<(Uuid, Uuid, Option<Vec<u8>>)>(&c.st.select_message, (timeuuid(message),))
            .await?
        else {
            return Ok(None);
        };
        if owner != mailbox.0 {
            return Ok(None);
        }
        Ok(body::open(c.clone(), blob)
            .await?
            .map(|body| WithHeader::wrap(header, body)))
    }

    async fn delete_messages(&self, mailbox: MailboxId, messages: &[MessageId]) -> Result<()> {
        let c = self.conn()?;
        try_join_all(messages.iter().map(|id| self.delete_one(c, mailbox, *id))).await?;
        Ok(())
    }

    async fn message_count(&self, mailbox: MailboxId) -> Result<u64> {
        let c = self.conn()?;
        let n = c
            .first_row::<(i64,)>(&c.st.count_view, (mailbox.0,))
            .await?
            .map(|r| r.0)
            .unwrap_or(0);
        Ok(n.max(0) as u64)
    }
}

impl CassandraStore {
    pub(crate) async fn delete_one(
        &self,
        c: &Connected,
        mailbox: MailboxId,
        id: MessageId,
    ) -> Result<()> {
        let t = timeuuid(id);
        let row = c
            .first_row::<(Uuid, Uuid, Option<i64>)>(&c.st.select_message_owner_size, (t,))
            .await?;
        let size = row.as_ref().and_then(|r| r.2).unwrap_or(0);
        let meta = row.map(|(owner, blob, _)| (owner, blob));
        if let Some((owner, _)) = meta {
            if owner == mailbox.0 {
                self.remove_uid_entry(c, mailbox, t).await?;
            }
        }
        let blob = match meta {
            Some((owner, blob)) if owner == mailbox.0 => {
                c.exec(&c.st.delete_message, (t,)).await?;
                self.add_usage(c, mailbox.0, -1, -size).await;
                Some(blob)
            }
            // Another mailbox's message is not ours to delete.
            Some(_) => return Ok(()),
            None => None,
        };
        c.exec(&c.st.delete_view, (mailbox.0, t)).await?;
        if let Some(blob) = blob {
            c.exec(&c.st.remove_blob_ref, (vec![t], blob)).await?;
            body::release(c, blob).await?;
        }
        Ok(())
    }
}
