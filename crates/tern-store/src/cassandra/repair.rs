//! Fresh reads, targeted writes and full scans for consistency repair, on the cassandra store.

use super::*;

#[async_trait]
impl Repair for CassandraStore {
    async fn message_meta(&self, message: MessageId) -> Result<Option<MessageMeta>> {
        let c = self.conn()?;
        let row = c
            .first_row::<(Option<Uuid>, Option<i64>, Option<i64>)>(
                &c.st.select_message_meta,
                (timeuuid(message),),
            )
            .await?;
        // A row without a mailbox is the remnant of a UID written after a deletion: no message.
        Ok(match row {
            Some((Some(mailbox), size, uid)) => Some(MessageMeta {
                mailbox: MailboxId(mailbox),
                size: size.unwrap_or(0).max(0) as u64,
                uid: uid.map(|u| u as u64),
            }),
            _ => None,
        })
    }

    async fn view_entry(
        &self,
        mailbox: MailboxId,
        message: MessageId,
    ) -> Result<Option<ViewEntry>> {
        let c = self.conn()?;
        let row = c
            .first_row::<(Option<i64>, Option<String>)>(
                &c.st.select_view_entry,
                (mailbox.0, timeuuid(message)),
            )
            .await?;
        Ok(row.map(|(size, uidl)| ViewEntry {
            message_id: message,
            size: size.unwrap_or(0).max(0) as u64,
            uidl: uidl.filter(|u| !u.is_empty()),
        }))
    }

    async fn put_view_entry(&self, mailbox: MailboxId, entry: ViewEntry) -> Result<()> {
        let c = self.conn()?;
        let uidl = entry.uidl.unwrap_or_default();
        c.exec(
            &c.st.insert_view,
            (
                mailbox.0,
                timeuuid(entry.message_id),
                entry.size as i64,
                uidl,
            ),
        )
        .await?;
        Ok(())
    }

    async fn remove_view_entry(&self, mailbox: MailboxId, message: MessageId) -> Result<()> {
        let c = self.conn()?;
        let t = timeuuid(message);
        c.exec(&c.st.delete_view, (mailbox.0, t)).await?;
        self.remove_uid_entry(c, mailbox, t).await
    }

    fn all_messages(&self) -> ScanStream<'_, (MessageId, MailboxId)> {
        paged(self.clone(), |store, cursor| async move {
            store.scan_messages_page(cursor, SCAN_PAGE).await
        })
    }

    fn all_view_entries(&self) -> ScanStream<'_, (MailboxId, MessageId)> {
        paged(self.clone(), |store, cursor| async move {
            store.scan_view_page(cursor, SCAN_PAGE).await
        })
    }
}

impl CassandraStore {
    pub(crate) async fn scan_messages_page(
        &self,
        cursor: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<ScanPage<(MessageId, MailboxId)>> {
        let c = self.conn()?;
        let (rows, next) = c
            .page::<(CqlTimeuuid, Option<Uuid>)>(&c.st.scan_messages, (), cursor, limit)
            .await?;
        let mut items = Vec::with_capacity(rows.len());
        for (id, mailbox) in rows {
            if let Some(mailbox) = mailbox {
                items.push((message_id(id)?, MailboxId(mailbox)));
            }
        }
        Ok(ScanPage { items, next })
    }

    pub(crate) async fn scan_view_page(
        &self,
        cursor: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<ScanPage<(MailboxId, MessageId)>> {
        let c = self.conn()?;
        let (rows, next) = c
            .page::<(Uuid, CqlTimeuuid)>(&c.st.scan_view, (), cursor, limit)
            .await?;
        let items = rows
            .into_iter()
            .map(|(mb, id)| Ok((MailboxId(mb), message_id(id)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(ScanPage { items, next })
    }
}
