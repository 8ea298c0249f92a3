//! Classic UID mode on the cassandra store.

use super::*;

#[async_trait]
impl UidStore for CassandraStore {
    async fn assign_uids(&self, mailbox: MailboxId, messages: &[MessageId]) -> Result<Vec<u64>> {
        let c = self.conn()?;
        let mut out = vec![0u64; messages.len()];
        let mut missing = Vec::new();
        for (i, id) in messages.iter().enumerate() {
            match self.message_meta(*id).await? {
                Some(MessageMeta {
                    uid: Some(uid),
                    size,
                    ..
                }) => {
                    // Keeps its UID; its index entry may have been dropped by a view repair.
                    c.exec(
                        &c.st.insert_by_uid,
                        (mailbox.0, uid as i64, timeuuid(*id), size as i64),
                    )
                    .await?;
                    out[i] = uid;
                }
                Some(meta) => missing.push((i, *id, meta.size)),
                None => {} // no such message: no UID (stays 0)
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let first = self
            .advance_uid_counter(c, mailbox, missing.len() as i64)
            .await?;
        for (k, (i, id, size)) in missing.into_iter().enumerate() {
            let uid = first + k as u64;
            c.exec(&c.st.set_message_uid, (uid as i64, timeuuid(id)))
                .await?;
            c.exec(
                &c.st.insert_by_uid,
                (mailbox.0, uid as i64, timeuuid(id), size as i64),
            )
            .await?;
            out[i] = uid;
        }
        Ok(out)
    }

    async fn uid_listing(&self, mailbox: MailboxId) -> Result<UidListing> {
        let c = self.conn()?;
        let validity = c
            .first_row::<(Option<i64>, Option<i64>)>(&c.st.select_uid_counter, (mailbox.0,))
            .await?
            .and_then(|r| r.1)
            .unwrap_or(0)
            .max(0) as u64;
        let rows = c
            .all_rows::<(i64, CqlTimeuuid, i64)>(&c.st.select_by_uid, (mailbox.0,))
            .await?;
        let entries = rows
            .into_iter()
            .map(|(uid, id, size)| {
                Ok(UidEntry {
                    uid: uid.max(0) as u64,
                    message_id: message_id(id)?,
                    size: size.max(0) as u64,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(UidListing { validity, entries })
    }
}

impl CassandraStore {
    pub(crate) async fn remove_uid_entry(
        &self,
        c: &Connected,
        mailbox: MailboxId,
        t: CqlTimeuuid,
    ) -> Result<()> {
        let uid = c
            .first_row::<(Option<Uuid>, Option<i64>, Option<i64>)>(&c.st.select_message_meta, (t,))
            .await?;
        if let Some((_, _, Some(uid))) = uid {
            c.exec(&c.st.delete_by_uid, (mailbox.0, uid)).await?;
        }
        Ok(())
    }

    /// Reserves `n` UIDs of a mailbox by compare-and-set on its counter; returns the first.
    pub(crate) async fn advance_uid_counter(
        &self,
        c: &Connected,
        mailbox: MailboxId,
        n: i64,
    ) -> Result<u64> {
        let validity = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(1);
        for attempt in 0..100u32 {
            let current = c
                .first_row::<(Option<i64>, Option<i64>)>(&c.st.select_uid_counter, (mailbox.0,))
                .await?;
            let Some((Some(next), _)) = current else {
                c.exec(&c.st.init_uid_counter, (mailbox.0, validity))
                    .await?;
                continue;
            };
            let result = c
                .exec(&c.st.advance_uid_counter, (next + n, mailbox.0, next))
                .await?;
            let rows = result.into_rows_result().map_err(corrupt)?;
            let applied = rows
                .maybe_first_row::<scylla::value::Row>()
                .map_err(corrupt)?
                .and_then(|r| r.columns.into_iter().next().flatten())
                .and_then(|v| v.as_boolean())
                .unwrap_or(false);
            if applied {
                return Ok(next.max(1) as u64);
            }
            // Contention: another delivery took these UIDs; back off a little and retry.
            let jitter = rand::random::<u64>() % (2 + u64::from(attempt.min(10)) * 4);
            tokio::time::sleep(Duration::from_millis(jitter)).await;
        }
        Err(StoreError::Conflict {
            what: "UID counter contention: gave up after 100 attempts".into(),
        })
    }
}
