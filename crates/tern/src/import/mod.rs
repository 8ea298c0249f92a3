//! Migration onto Tern that keeps UIDLs: mailboxes copied from another POP3 server (each
//! account's credentials given) or from Maildir folders with Dovecot's `dovecot-uidlist`, each
//! message stored with the UIDL the old server gave it. POP3 clients that leave mail on the
//! server then see no new message after the switch.
//!
//! Runs as a task on the server (`POST /imports`, `tern import`): idempotent and resumable, as
//! a message whose UIDL the target mailbox already lists is skipped, so a second run copies
//! nothing twice and an interrupted one goes on where it stopped.

pub mod maildir;
pub mod pop3;

use crate::smtp::SmtpContext;
use crate::tasks::{TaskContext, TaskOutcome};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use tern_store::{BodyWriter, MessageCopy};

pub const TYPE: &str = "import";

/// What to import, as `POST /imports` takes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase", deny_unknown_fields)]
pub enum ImportRequest {
    /// Another POP3 server, `host:port`; `tls` for TLS from the first byte, its certificate
    /// checked against `ca_file`.
    Pop3 {
        server: String,
        #[serde(default)]
        tls: bool,
        #[serde(default)]
        ca_file: Option<PathBuf>,
        /// A master user of the source (Dovecot's): each account is then opened as
        /// `user<separator>master` with the master's password, and needs none of its own.
        #[serde(default)]
        master: Option<MasterUser>,
        accounts: Vec<Pop3Account>,
    },
    /// Maildir folders on this machine.
    Maildir { accounts: Vec<MaildirAccount> },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterUser {
    pub user: String,
    pub password: String,
    /// Between the account and the master user's name (Dovecot's
    /// `auth_master_user_separator`, commonly `*`).
    #[serde(default = "default_separator")]
    pub separator: String,
}

fn default_separator() -> String {
    "*".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pop3Account {
    pub user: String,
    /// The account's own password; none when a master user opens it.
    #[serde(default)]
    pub password: Option<String>,
    /// The Tern user it goes to; the same address when absent.
    #[serde(default)]
    pub target: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaildirAccount {
    pub path: PathBuf,
    pub target: String,
}

impl ImportRequest {
    fn source(&self) -> &'static str {
        match self {
            ImportRequest::Pop3 { .. } => "pop3",
            ImportRequest::Maildir { .. } => "maildir",
        }
    }

    fn accounts(&self) -> usize {
        match self {
            ImportRequest::Pop3 { accounts, .. } => accounts.len(),
            ImportRequest::Maildir { accounts } => accounts.len(),
        }
    }
}

/// The task's progress (never a password).
#[derive(Default)]
struct Progress {
    accounts_done: u64,
    imported: u64,
    skipped: u64,
    bytes: u64,
    failed: Vec<Value>,
}

fn report(r: &ImportRequest, p: &Progress) -> Value {
    json!({
        "type": TYPE,
        "source": r.source(),
        "accounts": r.accounts(),
        "accountsDone": p.accounts_done,
        "messagesImported": p.imported,
        "messagesSkipped": p.skipped,
        "bytesImported": p.bytes,
        "failedAccounts": p.failed,
        "timestamp": crate::tasks::iso8601(crate::tasks::now_ms()),
    })
}

pub fn initial(r: &ImportRequest) -> Value {
    report(r, &Progress::default())
}

/// One message of a source mailbox.
pub struct SourceMessage {
    pub uidl: String,
    /// Where the source finds it again (a POP3 message number, a file).
    pub handle: SourceHandle,
}

pub enum SourceHandle {
    Pop3(usize),
    File(PathBuf),
}

/// A mailbox being copied: its messages, and a way to read each into a body.
#[async_trait::async_trait]
pub trait SourceMailbox: Send {
    async fn messages(&mut self) -> anyhow::Result<Vec<SourceMessage>>;
    /// Writes the message (CRLF line ends) into `body`; returns its size.
    async fn copy_into(
        &mut self,
        handle: &SourceHandle,
        body: &mut dyn BodyWriter,
    ) -> anyhow::Result<u64>;
    async fn close(&mut self) {}
}

pub async fn run(
    smtp: Arc<SmtpContext>,
    request: ImportRequest,
    ctx: Arc<TaskContext>,
) -> TaskOutcome {
    let mut p = Progress::default();
    let jobs: Vec<(String, String)> = match &request {
        ImportRequest::Pop3 { accounts, .. } => accounts
            .iter()
            .map(|a| {
                (
                    a.user.clone(),
                    a.target.clone().unwrap_or_else(|| a.user.clone()),
                )
            })
            .collect(),
        ImportRequest::Maildir { accounts } => accounts
            .iter()
            .map(|a| (a.path.display().to_string(), a.target.clone()))
            .collect(),
    };
    for (i, (account, target)) in jobs.iter().enumerate() {
        if ctx.is_cancelled() {
            ctx.report(report(&request, &p));
            return TaskOutcome::Cancelled;
        }
        let source: anyhow::Result<Box<dyn SourceMailbox>> = match &request {
            ImportRequest::Pop3 {
                server,
                tls,
                ca_file,
                master,
                accounts,
            } => {
                let a = &accounts[i];
                let login = match (master, &a.password) {
                    (Some(m), _) => Ok((
                        format!("{}{}{}", a.user, m.separator, m.user),
                        m.password.clone(),
                    )),
                    (None, Some(p)) => Ok((a.user.clone(), p.clone())),
                    (None, None) => Err(anyhow::anyhow!(
                        "no password for {} and no master user",
                        a.user
                    )),
                };
                match login {
                    Ok((user, password)) => {
                        pop3::Pop3Mailbox::open(server, *tls, ca_file.as_deref(), &user, &password)
                            .await
                            .map(|m| Box::new(m) as Box<dyn SourceMailbox>)
                    }
                    Err(e) => Err(e),
                }
            }
            ImportRequest::Maildir { accounts } => maildir::MaildirMailbox::open(&accounts[i].path)
                .map(|m| Box::new(m) as Box<dyn SourceMailbox>),
        };
        let result = match source {
            Ok(mut source) => {
                let r = import_account(&smtp, &mut *source, target, &mut p, &request, &ctx).await;
                source.close().await;
                r
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(account = %crate::logging::Escaped(account), error = %format!("{e:#}"), "import of an account failed");
            p.failed
                .push(json!({ "account": account, "target": target, "error": format!("{e:#}") }));
        }
        p.accounts_done += 1;
        ctx.report(report(&request, &p));
    }
    ctx.report(report(&request, &p));
    TaskOutcome::Completed
}

async fn import_account(
    smtp: &SmtpContext,
    source: &mut dyn SourceMailbox,
    target: &str,
    p: &mut Progress,
    request: &ImportRequest,
    ctx: &TaskContext,
) -> anyhow::Result<()> {
    let name = crate::names::normalize_user(target);
    let user = smtp
        .directory
        .get_user(&name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no Tern user {name}: create it first"))?;
    // What the mailbox lists already: imported UIDLs, and message ids for delivered mail.
    let present: HashSet<String> = smtp
        .mail
        .pop3_view(user.inbox)
        .await?
        .into_iter()
        .map(|e| e.uidl.unwrap_or_else(|| e.message_id.to_string()))
        .collect();
    for message in source.messages().await? {
        if present.contains(&message.uidl) {
            p.skipped += 1;
            continue;
        }
        let mut body = smtp.mail.begin_body().await?;
        let size = match source.copy_into(&message.handle, &mut *body).await {
            Ok(size) => size,
            Err(e) => {
                body.abort().await;
                return Err(e.context(format!("copying the message with UIDL {}", message.uidl)));
            }
        };
        let staged = body.finish().await?;
        let copy = MessageCopy {
            uidl: Some(message.uidl.clone()),
            ..MessageCopy::plain(user.inbox)
        };
        let ids = smtp.mail.deliver_copies(staged, &[copy]).await?;
        if let Err(e) = smtp.listing.delivered(user.inbox, &ids).await {
            tracing::warn!(error = %e, "UID assignment of an imported message deferred to the next login");
        }
        p.imported += 1;
        p.bytes += size;
        if p.imported.is_multiple_of(50) {
            ctx.report(report(request, p));
        }
    }
    Ok(())
}
