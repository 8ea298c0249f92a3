//! Quota limits and usage on the embedded store; usage changes in the transactions of
//! `deliver` and `delete_messages` (mail.rs), so it never drifts here.

use super::*;
use crate::{QuotaLimits, QuotaResource, QuotaScope, QuotaUsage, Quotas};

/// Adds to a mailbox's usage inside a write transaction.
pub(crate) fn add_usage(
    txn: &redb::WriteTransaction,
    mailbox: u128,
    count: i64,
    size: i64,
) -> Result<()> {
    add_usage_in(
        &mut txn.open_table(QUOTA_USAGE).map_err(db_err)?,
        mailbox,
        count,
        size,
    )
}

/// Adds to a mailbox's usage in the quota usage table of a write transaction.
pub(crate) fn add_usage_in(
    t: &mut redb::Table<'_, u128, (i64, i64)>,
    mailbox: u128,
    count: i64,
    size: i64,
) -> Result<()> {
    let (c, s) = t
        .get(mailbox)
        .map_err(db_err)?
        .map(|v| v.value())
        .unwrap_or((0, 0));
    t.insert(mailbox, ((c + count).max(0), (s + size).max(0)))
        .map_err(db_err)?;
    Ok(())
}

#[async_trait]
impl Quotas for EmbeddedStore {
    async fn set_quota_limit(
        &self,
        scope: &QuotaScope,
        resource: QuotaResource,
        limit: Option<i64>,
    ) -> Result<()> {
        let key = scope.key();
        self.write_admin(move |txn| {
            let mut t = txn.open_table(QUOTA_LIMITS).map_err(db_err)?;
            match limit {
                Some(v) => t.insert((key.as_str(), resource.name()), v).map(|_| ()),
                None => t.remove((key.as_str(), resource.name())).map(|_| ()),
            }
            .map_err(db_err)
        })
        .await
    }

    async fn quota_limits(&self, scope: &QuotaScope) -> Result<QuotaLimits> {
        let key = scope.key();
        let read_under = match self.inner.lookups.quota_limits(&key) {
            Ok(known) => return Ok(known),
            Err(generation) => generation,
        };
        let txn = self.read()?;
        let t = txn.open_table(QUOTA_LIMITS).map_err(db_err)?;
        let get = |r: QuotaResource| -> Result<Option<i64>> {
            Ok(t.get((key.as_str(), r.name()))
                .map_err(db_err)?
                .map(|v| v.value()))
        };
        let limits = QuotaLimits {
            count: get(QuotaResource::Count)?,
            size: get(QuotaResource::Size)?,
        };
        self.inner
            .lookups
            .put_quota_limits(read_under, &key, limits);
        Ok(limits)
    }

    async fn quota_usage(&self, mailbox: MailboxId) -> Result<QuotaUsage> {
        let txn = self.read()?;
        let t = txn.open_table(QUOTA_USAGE).map_err(db_err)?;
        let (count, size) = t
            .get(mailbox.0.as_u128())
            .map_err(db_err)?
            .map(|v| v.value())
            .unwrap_or((0, 0));
        Ok(QuotaUsage { count, size })
    }

    async fn set_quota_usage(&self, mailbox: MailboxId, usage: QuotaUsage) -> Result<()> {
        let m = mailbox.0.as_u128();
        self.inner
            .committer
            .write(move |txn| {
                txn.open_table(QUOTA_USAGE)
                    .map_err(db_err)?
                    .insert(m, (usage.count, usage.size))
                    .map_err(db_err)?;
                Ok(())
            })
            .await
    }
}
