//! Mail repository tasks, as James names them: `clear-mail-repository` (delete every mail),
//! `reprocessing-all` and `reprocessing-one` (deliver kept mail again, once an operator fixed
//! what stopped it). Moves between repositories are quick and happen in the request.

use super::{TaskContext, TaskOutcome};
use crate::smtp::SmtpContext;
use serde_json::{json, Value};
use std::sync::Arc;
use tern_store::{MailRepositories, MailStore, NewRepositoryMail, RepositoryMail};

pub const CLEAR: &str = "clear-mail-repository";
pub const REPROCESS_ALL: &str = "reprocessing-all";
pub const REPROCESS_ONE: &str = "reprocessing-one";

pub fn clear_info(repository: &str, initial: u64, remaining: u64) -> Value {
    json!({
        "type": CLEAR,
        "mailRepositoryPath": repository,
        "initialCount": initial,
        "remainingCount": remaining,
        "timestamp": super::iso8601(super::now_ms()),
    })
}

pub async fn clear(
    repositories: Arc<dyn MailRepositories>,
    repository: String,
    ctx: Arc<TaskContext>,
) -> TaskOutcome {
    let mails = match repositories.repository_mails(&repository).await {
        Ok(m) => m,
        Err(e) => return TaskOutcome::Failed(format!("reading {repository}: {e}")),
    };
    let initial = mails.len() as u64;
    let mut removed = 0;
    for mail in mails {
        if ctx.is_cancelled() {
            ctx.report(clear_info(&repository, initial, initial - removed));
            return TaskOutcome::Cancelled;
        }
        if let Err(e) = repositories
            .remove_repository_mail(&repository, &mail.key)
            .await
        {
            return TaskOutcome::Failed(format!("deleting {}: {e}", mail.key));
        }
        removed += 1;
    }
    ctx.report(clear_info(&repository, initial, initial - removed));
    TaskOutcome::Completed
}

/// What a reprocessing was asked to do (James's query parameters).
#[derive(Debug, Clone)]
pub struct Reprocess {
    pub repository: String,
    /// James's target queue: reported, but Tern has one pipeline and delivers directly.
    pub queue: String,
    /// James's target processor: reported; Tern's pipeline always starts at the beginning.
    pub processor: Option<String>,
    /// Remove the mail from the repository once delivered (the default).
    pub consume: bool,
    /// At most this many mails.
    pub limit: Option<u64>,
    /// James skips mails retried this often; Tern keeps no retry count, so every mail is
    /// taken (the parameter is checked and reported only).
    pub max_retries: Option<u64>,
}

pub fn reprocess_info(r: &Reprocess, key: Option<&str>, initial: u64, remaining: u64) -> Value {
    let mut v = json!({
        "type": if key.is_some() { REPROCESS_ONE } else { REPROCESS_ALL },
        "mailRepositoryPath": r.repository,
        "targetQueue": r.queue,
        "targetProcessor": r.processor,
        "timestamp": super::iso8601(super::now_ms()),
    });
    match key {
        Some(k) => v["mailKey"] = json!(k),
        None => {
            v["initialCount"] = json!(initial);
            v["remainingCount"] = json!(remaining);
        }
    }
    v
}

pub async fn reprocess(
    smtp: Arc<SmtpContext>,
    r: Reprocess,
    key: Option<String>,
    ctx: Arc<TaskContext>,
) -> TaskOutcome {
    let repositories = smtp.repositories.clone();
    let mails = match &key {
        Some(k) => repositories
            .repository_mail(&r.repository, k)
            .await
            .map(|m| m.into_iter().collect()),
        None => repositories.repository_mails(&r.repository).await,
    };
    let mut mails: Vec<RepositoryMail> = match mails {
        Ok(m) => m,
        Err(e) => return TaskOutcome::Failed(format!("reading {}: {e}", r.repository)),
    };
    mails.truncate(r.limit.unwrap_or(u64::MAX) as usize);
    let initial = mails.len() as u64;
    let mut done = 0u64;
    for mail in mails {
        if ctx.is_cancelled() {
            ctx.report(reprocess_info(&r, key.as_deref(), initial, initial - done));
            return TaskOutcome::Cancelled;
        }
        if let Err(e) = reprocess_one(&smtp, &r, &mail).await {
            return TaskOutcome::Failed(format!("reprocessing {}: {e}", mail.key));
        }
        done += 1;
        ctx.report(reprocess_info(&r, key.as_deref(), initial, initial - done));
    }
    TaskOutcome::Completed
}

/// Delivers one kept mail again. What still fails stays in the repository, for the recipients
/// that failed alone (so a later reprocessing sends nobody a second copy).
async fn reprocess_one(
    smtp: &SmtpContext,
    r: &Reprocess,
    mail: &RepositoryMail,
) -> tern_store::Result<()> {
    let repositories = &*smtp.repositories;
    let Some(body) = repositories.open_repository_body(mail).await? else {
        tracing::warn!(key = mail.key, "kept mail without content; left in place");
        return Ok(());
    };
    let failed = crate::smtp::redeliver(smtp, &mail.sender, &mail.recipients, body).await;
    let delivered = failed.len() < mail.recipients.len();
    for (address, why) in &failed {
        tracing::warn!(key = mail.key, recipient = %crate::logging::Escaped(address), why, "reprocessed mail still undeliverable");
    }
    if !delivered || !r.consume {
        return Ok(());
    }
    if !failed.is_empty() {
        let entry = NewRepositoryMail {
            repository: mail.repository.clone(),
            sender: mail.sender.clone(),
            recipients: failed.iter().map(|(a, _)| a.clone()).collect(),
            state: mail.state.clone(),
            error: Some(
                failed
                    .iter()
                    .map(|(a, why)| format!("{a}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            remote_host: mail.remote_host.clone(),
            remote_addr: mail.remote_addr.clone(),
        };
        copy(&*smtp.mail, repositories, mail, entry).await?;
    }
    repositories
        .remove_repository_mail(&mail.repository, &mail.key)
        .await?;
    tracing::info!(
        key = mail.key,
        repository = mail.repository,
        "kept mail reprocessed"
    );
    Ok(())
}

/// Stores a copy of a kept mail's content under `entry`.
async fn copy(
    mail_store: &dyn MailStore,
    repositories: &dyn MailRepositories,
    mail: &RepositoryMail,
    entry: NewRepositoryMail,
) -> tern_store::Result<RepositoryMail> {
    let body = repositories
        .open_repository_body(mail)
        .await?
        .ok_or_else(|| tern_store::StoreError::invalid("the kept mail's content is gone"))?;
    crate::repository::keep(mail_store, repositories, b"", body, 0, entry).await
}

/// Moves a mail to another repository (James's move routes): a copy there, then removal here.
pub async fn move_mail(
    mail_store: &dyn MailStore,
    repositories: &dyn MailRepositories,
    mail: &RepositoryMail,
    target: &str,
) -> tern_store::Result<()> {
    if mail.repository == target {
        return Ok(());
    }
    let entry = NewRepositoryMail {
        repository: target.to_string(),
        sender: mail.sender.clone(),
        recipients: mail.recipients.clone(),
        state: mail.state.clone(),
        error: mail.error.clone(),
        remote_host: mail.remote_host.clone(),
        remote_addr: mail.remote_addr.clone(),
    };
    copy(mail_store, repositories, mail, entry).await?;
    repositories
        .remove_repository_mail(&mail.repository, &mail.key)
        .await?;
    Ok(())
}
