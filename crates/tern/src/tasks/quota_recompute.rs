//! Recomputes each user's quota usage from its mailbox (James's `recompute-current-quotas`):
//! usage is a projection kept by deliveries and deletions, and this corrects any drift.

use super::{TaskContext, TaskOutcome};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tern_store::{Directory, MailStore, QuotaUsage, Quotas};

pub const TYPE: &str = "recompute-current-quotas";

fn report(rate: u32, processed: u64, failed: &[String]) -> Value {
    json!({
        "type": TYPE,
        "recomputeSingleQuotaComponentResults": [{
            "quotaComponent": "MAILBOX",
            "processedIdentifierCount": processed,
            "failedIdentifiers": failed,
        }],
        "runningOptions": { "usersPerSecond": rate },
        "timestamp": super::iso8601(super::now_ms()),
    })
}

pub fn initial(rate: u32) -> Value {
    report(rate, 0, &[])
}

pub async fn run(
    directory: Arc<dyn Directory>,
    mail: Arc<dyn MailStore>,
    quotas: Arc<dyn Quotas>,
    rate: u32,
    ctx: Arc<TaskContext>,
) -> TaskOutcome {
    let users = match directory.list_users().await {
        Ok(u) => u,
        Err(e) => return TaskOutcome::Failed(format!("listing users: {e}")),
    };
    let pause = Duration::from_secs_f64(1.0 / f64::from(rate));
    let (mut processed, mut failed) = (0u64, Vec::new());
    for name in users {
        if ctx.is_cancelled() {
            ctx.report(report(rate, processed, &failed));
            return TaskOutcome::Cancelled;
        }
        let result = async {
            let Some(user) = directory.get_user(&name).await? else {
                return Ok(());
            };
            let view = mail.pop3_view(user.inbox).await?;
            let usage = QuotaUsage {
                count: view.len() as i64,
                size: view.iter().map(|e| e.size as i64).sum(),
            };
            quotas.set_quota_usage(user.inbox, usage).await
        }
        .await;
        match result {
            Ok(()) => processed += 1,
            Err(e) => {
                tracing::warn!(user = %name, error = %e, "quota not recomputed");
                failed.push(name);
            }
        }
        ctx.report(report(rate, processed, &failed));
        tokio::time::sleep(pause).await;
    }
    ctx.report(report(rate, processed, &failed));
    if failed.is_empty() {
        TaskOutcome::Completed
    } else {
        TaskOutcome::Failed(format!("{} users not recomputed", failed.len()))
    }
}
