//! Deletes old messages from INBOXes (James's `ExpireMailboxTask`, `DELETE /messages`): older
//! than a given age, or by the retention policy (`pop3.expire_days`, per domain) in the daily
//! run. A message's age is its id's time (its delivery): no message is read to judge it.

use super::{TaskContext, TaskOutcome};
use crate::config::Pop3Section;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tern_store::{Directory, MailStore};

pub const TYPE: &str = "ExpireMailboxTask";

/// Which messages go.
#[derive(Debug, Clone)]
pub enum Age {
    /// Older than this, for everyone.
    OlderThan(Duration),
    /// As the retention policy says for each user's domain (users without one are skipped).
    Policy(Box<Pop3Section>),
}

#[derive(Default, Clone, Copy)]
struct Counts {
    expired: u64,
    failed: u64,
    processed: u64,
    deleted: u64,
}

fn report(c: Counts) -> Value {
    json!({
        "type": TYPE,
        "mailboxesExpired": c.expired,
        "mailboxesFailed": c.failed,
        "mailboxesProcessed": c.processed,
        "messagesDeleted": c.deleted,
        "timestamp": super::iso8601(super::now_ms()),
    })
}

pub fn initial() -> Value {
    report(Counts::default())
}

pub async fn run(
    directory: Arc<dyn Directory>,
    mail: Arc<dyn MailStore>,
    age: Age,
    user: Option<String>,
    users_per_second: u32,
    ctx: Arc<TaskContext>,
) -> TaskOutcome {
    let users = match user {
        Some(u) => vec![u],
        None => match directory.list_users().await {
            Ok(u) => u,
            Err(e) => return TaskOutcome::Failed(format!("listing users: {e}")),
        },
    };
    let pause = Duration::from_secs_f64(1.0 / f64::from(users_per_second.max(1)));
    let now = SystemTime::now();
    let mut c = Counts::default();
    for name in users {
        if ctx.is_cancelled() {
            ctx.report(report(c));
            return TaskOutcome::Cancelled;
        }
        let keep_for = match &age {
            Age::OlderThan(d) => Some(*d),
            Age::Policy(p) => p
                .expire_days_of(&name)
                .map(|days| Duration::from_secs(u64::from(days) * 86_400)),
        };
        let Some(cutoff) = keep_for.and_then(|d| now.checked_sub(d)) else {
            continue;
        };
        let result = async {
            let Some(u) = directory.get_user(&name).await? else {
                return Ok(0);
            };
            let old: Vec<_> = mail
                .pop3_view(u.inbox)
                .await?
                .into_iter()
                .map(|e| e.message_id)
                .filter(|id| id.created().is_some_and(|t| t < cutoff))
                .collect();
            if !old.is_empty() {
                mail.delete_messages(u.inbox, &old).await?;
            }
            Ok::<_, tern_store::StoreError>(old.len() as u64)
        }
        .await;
        c.processed += 1;
        match result {
            Ok(0) => {}
            Ok(n) => {
                c.expired += 1;
                c.deleted += n;
                tracing::info!(user = %crate::logging::Escaped(&name), deleted = n, "old messages expired");
            }
            Err(e) => {
                c.failed += 1;
                tracing::warn!(user = %crate::logging::Escaped(&name), error = %e, "expiring old messages failed");
            }
        }
        ctx.report(report(c));
        tokio::time::sleep(pause).await;
    }
    ctx.report(report(c));
    TaskOutcome::Completed
}

/// Runs the retention policy once a day for the whole cluster: each node looks every hour
/// (after a random start, so that nodes started together do not race) and submits the task
/// when no node did in the last 23 hours. A race between two nodes deletes nothing twice:
/// deletions of messages already gone are no-ops.
pub async fn daily(
    tasks: Arc<super::TaskManager>,
    directory: Arc<dyn Directory>,
    mail: Arc<dyn MailStore>,
    policy: Pop3Section,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    const DAY_MS: i64 = 23 * 3_600_000;
    let mut wait = Duration::from_secs(rand::random::<u64>() % 600);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        wait = Duration::from_secs(3600);
        match tasks.last_submitted(TYPE).await {
            Ok(Some(t)) if super::now_ms() - t < DAY_MS => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "retention: the task list could not be read; trying again in an hour");
                continue;
            }
        }
        let (directory, mail) = (directory.clone(), mail.clone());
        let age = Age::Policy(Box::new(policy.clone()));
        let submitted = tasks
            .submit(TYPE, initial(), move |ctx| {
                Box::pin(run(directory, mail, age, None, 100, ctx))
            })
            .await;
        match submitted {
            Ok(id) => tracing::info!(task = %id, "retention: daily expiry of old messages started"),
            Err(e) => tracing::warn!(error = %e, "retention: the daily run could not start"),
        }
    }
}
