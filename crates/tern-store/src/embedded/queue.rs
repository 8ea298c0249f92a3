//! The outbound queue on the embedded store: one shard (one process owns the store), entries
//! keyed by due time so that the due ones are a range read, bodies in the body store with one
//! reference per entry.

use super::*;
use crate::{NewQueuedMail, OutboundQueue, QueuedMail};

/// The single shard of an embedded queue.
const SHARD: u32 = 0;

fn to_json(mail: &QueuedMail) -> Result<String> {
    serde_json::to_string(mail).map_err(|e| StoreError::corrupt(e.to_string()))
}

fn from_json(json: &str) -> Result<QueuedMail> {
    serde_json::from_str(json).map_err(|e| StoreError::corrupt(format!("queue entry: {e}")))
}

fn key(mail: &QueuedMail) -> (i64, u128) {
    (mail.next_attempt_ms, mail.id.as_u128())
}

#[async_trait]
impl OutboundQueue for EmbeddedStore {
    async fn enqueue(&self, body: StagedBody, mail: NewQueuedMail) -> Result<QueuedMail> {
        if mail.recipients.is_empty() {
            return Err(StoreError::invalid("queued mail without recipients"));
        }
        let queued = QueuedMail::new(self.inner.ids.next_id().uuid(), SHARD, &body, mail);
        let json = to_json(&queued)?;
        let (blob, _, inline, in_flight) = staged_parts(body);
        let k = key(&queued);
        self.inner
            .committer
            .write(move |txn| {
                mail::commit_body(txn, blob, 1, inline.as_deref())?;
                txn.open_table(OUTBOUND_QUEUE)
                    .map_err(db_err)?
                    .insert(k, json.as_str())
                    .map_err(db_err)?;
                Ok(())
            })
            .await?;
        drop(in_flight);
        self.inner.queue_changed.notify_one();
        Ok(queued)
    }

    async fn hold_shards(&self, _node: &str) -> Result<Vec<u32>> {
        Ok(vec![SHARD])
    }

    async fn release_shards(&self, _node: &str) -> Result<()> {
        Ok(())
    }

    fn queue_signal(&self) -> Arc<tokio::sync::Notify> {
        self.inner.queue_changed.clone()
    }

    fn lease_secs(&self) -> u64 {
        u64::MAX / 4
    }

    async fn due_mail(&self, shard: u32, now_ms: i64, limit: usize) -> Result<Vec<QueuedMail>> {
        if shard != SHARD {
            return Ok(Vec::new());
        }
        self.read_blocking(move |txn| {
            let t = txn.open_table(OUTBOUND_QUEUE).map_err(db_err)?;
            let mut out = Vec::new();
            for row in t
                .range((i64::MIN, 0u128)..=(now_ms, u128::MAX))
                .map_err(db_err)?
                .take(limit)
            {
                let (_, v) = row.map_err(db_err)?;
                out.push(from_json(v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn reschedule(&self, previous: &QueuedMail, next: &QueuedMail) -> Result<()> {
        if previous.id != next.id || next.recipients.is_empty() {
            return Err(StoreError::invalid(
                "a rescheduled entry keeps its id and has recipients",
            ));
        }
        let (old, new, json) = (key(previous), key(next), to_json(next)?);
        self.inner
            .committer
            .write(move |txn| {
                let mut t = txn.open_table(OUTBOUND_QUEUE).map_err(db_err)?;
                // An entry removed meanwhile (delivered, or deleted by an admin) stays removed.
                if t.remove(old).map_err(db_err)?.is_some() {
                    t.insert(new, json.as_str()).map_err(db_err)?;
                }
                Ok(())
            })
            .await?;
        self.inner.queue_changed.notify_one();
        Ok(())
    }

    async fn remove_queued(&self, mail: &QueuedMail) -> Result<()> {
        let (k, blob) = (key(mail), mail.blob.0.as_u128());
        let files = self
            .inner
            .committer
            .write(move |txn| {
                let removed = txn
                    .open_table(OUTBOUND_QUEUE)
                    .map_err(db_err)?
                    .remove(k)
                    .map_err(db_err)?
                    .is_some();
                if !removed {
                    return Ok(Vec::new());
                }
                Ok(mail::drop_blob_ref(txn, blob)?.into_iter().collect())
            })
            .await?;
        self.remove_body_files(files).await;
        Ok(())
    }

    fn all_queued(&self) -> ScanStream<'_, QueuedMail> {
        paged(self.clone(), |store, cursor| async move {
            let after: Option<(i64, u128)> = cursor
                .as_deref()
                .and_then(|c| serde_json::from_slice::<(i64, String)>(c).ok())
                .and_then(|(t, id)| id.parse::<u128>().ok().map(|id| (t, id)));
            store
                .read_blocking(move |txn| {
                    let t = txn.open_table(OUTBOUND_QUEUE).map_err(db_err)?;
                    let range = match after {
                        Some(a) => t.range(a..).map_err(db_err)?,
                        None => t.range((i64::MIN, 0u128)..).map_err(db_err)?,
                    };
                    let mut items = Vec::new();
                    let mut last = None;
                    for row in range {
                        let (k, v) = row.map_err(db_err)?;
                        if Some(k.value()) == after {
                            continue;
                        }
                        if items.len() == SCAN_PAGE {
                            break;
                        }
                        last = Some(k.value());
                        items.push(from_json(v.value())?);
                    }
                    let next = (items.len() == SCAN_PAGE)
                        .then(|| last.map(|(t, id)| serde_json::to_vec(&(t, id.to_string())).ok()))
                        .flatten()
                        .flatten();
                    Ok(ScanPage { items, next })
                })
                .await
        })
    }

    async fn open_queued_body(&self, mail: &QueuedMail) -> Result<Option<Box<dyn BodyReader>>> {
        self.open_blob(mail.blob).await
    }
}
