//! Fresh reads, targeted writes and full scans for consistency repair, on the embedded store.

use super::*;

#[async_trait]
impl Repair for EmbeddedStore {
    async fn message_meta(&self, message: MessageId) -> Result<Option<MessageMeta>> {
        let txn = self.read()?;
        let msgs = txn.open_table(MESSAGES).map_err(db_err)?;
        let Some(meta) = msgs.get(message.sort_key()).map_err(db_err)? else {
            return Ok(None);
        };
        let (mailbox, _blob, size, _header) = meta.value();
        let uids = txn.open_table(MESSAGE_UIDS).map_err(db_err)?;
        let uid = uids
            .get(message.sort_key())
            .map_err(db_err)?
            .map(|u| u.value());
        Ok(Some(MessageMeta {
            mailbox: MailboxId(Uuid::from_u128(mailbox)),
            size,
            uid,
        }))
    }

    async fn view_entry(
        &self,
        mailbox: MailboxId,
        message: MessageId,
    ) -> Result<Option<ViewEntry>> {
        let txn = self.read()?;
        let view = txn.open_table(POP3_VIEW).map_err(db_err)?;
        let row = view
            .get((mailbox.0.as_u128(), message.sort_key()))
            .map_err(db_err)?;
        Ok(row.map(|v| {
            let (size, uidl) = v.value();
            ViewEntry {
                message_id: message,
                size,
                uidl: (!uidl.is_empty()).then(|| uidl.to_string()),
            }
        }))
    }

    async fn put_view_entry(&self, mailbox: MailboxId, entry: ViewEntry) -> Result<()> {
        self.inner
            .committer
            .write(move |txn| {
                let mut view = txn.open_table(POP3_VIEW).map_err(db_err)?;
                let uidl = entry.uidl.as_deref().unwrap_or("");
                view.insert(
                    (mailbox.0.as_u128(), entry.message_id.sort_key()),
                    (entry.size, uidl),
                )
                .map_err(db_err)?;
                Ok(())
            })
            .await
    }

    async fn remove_view_entry(&self, mailbox: MailboxId, message: MessageId) -> Result<()> {
        let (m, key) = (mailbox.0.as_u128(), message.sort_key());
        self.inner
            .committer
            .write(move |txn| {
                txn.open_table(POP3_VIEW)
                    .map_err(db_err)?
                    .remove((m, key))
                    .map_err(db_err)?;
                let mut by_uid = txn.open_table(MESSAGES_BY_UID).map_err(db_err)?;
                let uid = txn
                    .open_table(MESSAGE_UIDS)
                    .map_err(db_err)?
                    .get(key)
                    .map_err(db_err)?
                    .map(|u| u.value());
                if let Some(uid) = uid {
                    by_uid.remove((m, uid)).map_err(db_err)?;
                }
                Ok(())
            })
            .await
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

impl EmbeddedStore {
    pub(crate) async fn scan_messages_page(
        &self,
        cursor: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<ScanPage<(MessageId, MailboxId)>> {
        let after = match cursor.as_deref().map(<[u8; 16]>::try_from) {
            None => None,
            Some(Ok(b)) => Some(u128::from_be_bytes(b)),
            Some(Err(_)) => return Err(StoreError::invalid("bad scan cursor")),
        };
        let txn = self.read()?;
        let msgs = txn.open_table(MESSAGES).map_err(db_err)?;
        let range = match after {
            Some(k) if k == u128::MAX => {
                return Ok(ScanPage {
                    items: vec![],
                    next: None,
                })
            }
            Some(k) => msgs.range(k + 1..).map_err(db_err)?,
            None => msgs.range(0u128..).map_err(db_err)?,
        };
        let mut items = Vec::new();
        let mut last = None;
        for row in range.take(limit) {
            let (k, v) = row.map_err(db_err)?;
            items.push((
                MessageId::from_sort_key(k.value()),
                MailboxId(Uuid::from_u128(v.value().0)),
            ));
            last = Some(k.value());
        }
        let next = if items.len() == limit {
            last.map(|k| k.to_be_bytes().to_vec())
        } else {
            None
        };
        Ok(ScanPage { items, next })
    }

    pub(crate) async fn scan_view_page(
        &self,
        cursor: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<ScanPage<(MailboxId, MessageId)>> {
        let after = match cursor.as_deref() {
            None => None,
            Some(b) if b.len() == 32 => {
                let (a, c) = b.split_at(16);
                let a = u128::from_be_bytes(
                    a.try_into()
                        .map_err(|_| StoreError::invalid("bad scan cursor"))?,
                );
                let c = u128::from_be_bytes(
                    c.try_into()
                        .map_err(|_| StoreError::invalid("bad scan cursor"))?,
                );
                Some((a, c))
            }
            Some(_) => return Err(StoreError::invalid("bad scan cursor")),
        };
        let txn = self.read()?;
        let view = txn.open_table(POP3_VIEW).map_err(db_err)?;
        let mut items = Vec::new();
        let mut last = None;
        let iter = match after {
            Some(k) => view.range(k..).map_err(db_err)?,
            None => view.range((0u128, 0u128)..).map_err(db_err)?,
        };
        for row in iter {
            let (k, _) = row.map_err(db_err)?;
            let key = k.value();
            if Some(key) == after {
                continue;
            }
            items.push((
                MailboxId(Uuid::from_u128(key.0)),
                MessageId::from_sort_key(key.1),
            ));
            last = Some(key);
            if items.len() == limit {
                break;
            }
        }
        let next = if items.len() == limit {
            last.map(|(a, c)| [a.to_be_bytes(), c.to_be_bytes()].concat())
        } else {
            None
        };
        Ok(ScanPage { items, next })
    }
}
