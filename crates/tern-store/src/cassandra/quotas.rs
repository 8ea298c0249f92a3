//! Quota limits (`quota_limits ((scope), resource)`) and usage (`mailbox_usage`, counters) on
//! Cassandra. A delivery adds to the counters after its writes, a deletion subtracts for the
//! messages it removed: plain counter updates, no lightweight transaction. A counter update
//! whose answer is lost may be applied twice, so usage can drift; the recompute task corrects
//! it.

use super::*;
use crate::{QuotaLimits, QuotaResource, QuotaScope, QuotaUsage, Quotas};
use scylla::value::Counter;

impl CassandraStore {
    pub(crate) async fn add_usage(&self, c: &Connected, mailbox: Uuid, count: i64, size: i64) {
        if count == 0 && size == 0 {
            return;
        }
        // Usage is a projection: a failed update is logged and left to the recompute task
        // rather than failing a delivery that is already durable.
        let (count, size) = (Counter(count), Counter(size));
        if let Err(e) = c.exec(&c.st.add_usage, (count, size, mailbox)).await {
            tracing::warn!(mailbox = %mailbox, error = %e, "quota usage not updated");
        }
    }
}

#[async_trait]
impl Quotas for CassandraStore {
    async fn set_quota_limit(
        &self,
        scope: &QuotaScope,
        resource: QuotaResource,
        limit: Option<i64>,
    ) -> Result<()> {
        let c = self.conn()?;
        match limit {
            Some(v) => {
                c.exec(&c.st.set_limit, (scope.key(), resource.name(), v))
                    .await?
            }
            None => {
                c.exec(&c.st.delete_limit, (scope.key(), resource.name()))
                    .await?
            }
        };
        Ok(())
    }

    async fn quota_limits(&self, scope: &QuotaScope) -> Result<QuotaLimits> {
        let c = self.conn()?;
        let rows = c
            .all_rows::<(String, Option<i64>)>(&c.st.select_limits, (scope.key(),))
            .await?;
        let mut out = QuotaLimits::default();
        for (resource, limit) in rows {
            match resource.as_str() {
                "count" => out.count = limit,
                "size" => out.size = limit,
                _ => {}
            }
        }
        Ok(out)
    }

    async fn quota_usage(&self, mailbox: MailboxId) -> Result<QuotaUsage> {
        let c = self.conn()?;
        let row = c
            .first_row::<(
                Option<scylla::value::Counter>,
                Option<scylla::value::Counter>,
            )>(&c.st.select_usage, (mailbox.0,))
            .await?;
        let (count, size) = row.unwrap_or((None, None));
        Ok(QuotaUsage {
            count: count.map(|c| c.0).unwrap_or(0).max(0),
            size: size.map(|c| c.0).unwrap_or(0).max(0),
        })
    }

    async fn set_quota_usage(&self, mailbox: MailboxId, usage: QuotaUsage) -> Result<()> {
        // Counters cannot be set, only moved: by the difference with what they hold now.
        let current = self.quota_usage(mailbox).await?;
        let c = self.conn()?;
        c.exec(
            &c.st.add_usage,
            (
                Counter(usage.count - current.count),
                Counter(usage.size - current.size),
                mailbox.0,
            ),
        )
        .await?;
        Ok(())
    }
}
