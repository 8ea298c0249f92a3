//! `fixPop3Inconsistencies`: finds and repairs drift between the messages and the POP3 view,
//! as Apache James's task of the same name does. The view is written without transactions, so
//! a crash can leave a view entry whose message is gone (stale) or a message without its view
//! entry (missing). Deliveries and deletions run concurrently with the task, so every finding is
//! re-read before it is fixed.

use super::{now_ms, TaskContext, TaskOutcome};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tern_store::{MailStore, MailboxId, MessageId, Repair, ViewEntry};

pub const TYPE: &str = "Pop3MetaDataFixInconsistenciesTask";
/// Entries listed per report list at most (the counts stay exact).
const MAX_LISTED: usize = 10_000;

#[derive(Default)]
struct Report {
    messages_per_second: u32,
    processed_messages: u64,
    processed_view: u64,
    /// Counts, as James reports them.
    stale: u64,
    missing: u64,
    fixed: Vec<(MailboxId, MessageId)>,
    errors: Vec<(MailboxId, MessageId)>,
}

fn push(list: &mut Vec<(MailboxId, MessageId)>, item: (MailboxId, MessageId)) {
    if list.len() < MAX_LISTED {
        list.push(item);
    }
}

impl Report {
    fn json(&self) -> Value {
        let entries = |l: &[(MailboxId, MessageId)]| -> Value {
            l.iter()
                .map(|(mb, id)| json!({ "mailboxId": mb.to_string(), "messageId": id.to_string() }))
                .collect()
        };
        let timestamp = super::iso8601(now_ms());
        json!({
            "type": TYPE,
            "runningOptions": { "messagesPerSecond": self.messages_per_second },
            "processedImapUidEntries": self.processed_messages,
            "processedPop3MetaDataStoreEntries": self.processed_view,
            "stalePOP3Entries": self.stale,
            "missingPOP3Entries": self.missing,
            "fixedInconsistencies": entries(&self.fixed),
            "errors": entries(&self.errors),
            "timestamp": timestamp,
        })
    }
}

/// Paces work to at most `per_second` entries per second.
struct Rate {
    start: Instant,
    per_second: u32,
    done: u64,
}

impl Rate {
    async fn wait(&mut self) {
        let due = self.start
            + Duration::from_secs_f64(self.done as f64 / f64::from(self.per_second.max(1)));
        tokio::time::sleep_until(due.into()).await;
        self.done += 1;
    }
}

pub fn initial(messages_per_second: u32) -> Value {
    Report {
        messages_per_second,
        ..Default::default()
    }
    .json()
}

/// The two sweeps: every message must have its view entry; every view entry its message.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Messages,
    View,
}

pub async fn run(
    repair: Arc<dyn Repair>,
    mail: Arc<dyn MailStore>,
    messages_per_second: u32,
    ctx: Arc<TaskContext>,
) -> TaskOutcome {
    let mut report = Report {
        messages_per_second,
        ..Default::default()
    };
    let mut rate = Rate {
        start: Instant::now(),
        per_second: messages_per_second,
        done: 0,
    };
    for pass in [Pass::Messages, Pass::View] {
        // Both scans yield (mailbox, message id).
        let mut entries = match pass {
            Pass::Messages => repair
                .all_messages()
                .map(|r| r.map(|(id, mb)| (mb, id)))
                .boxed(),
            Pass::View => repair.all_view_entries(),
        };
        while let Some(entry) = entries.next().await {
            let (mb, id) = match entry {
                Ok(e) => e,
                Err(e) => return TaskOutcome::Failed(format!("scanning: {e}")),
            };
            if ctx.is_cancelled() {
                ctx.report(report.json());
                return TaskOutcome::Cancelled;
            }
            rate.wait().await;
            let checked = match pass {
                Pass::Messages => {
                    report.processed_messages += 1;
                    check_message(&*repair, &*mail, mb, id).await
                }
                Pass::View => {
                    report.processed_view += 1;
                    check_view_entry(&*repair, mb, id).await
                }
            };
            match checked {
                Ok(Fix::Nothing) => {}
                Ok(Fix::Fixed) => {
                    if pass == Pass::Messages {
                        report.missing += 1;
                    } else {
                        report.stale += 1;
                    }
                    push(&mut report.fixed, (mb, id));
                }
                Err(e) => {
                    tracing::warn!(mailbox = %mb, message = %id, error = %e, "fix task: check failed");
                    push(&mut report.errors, (mb, id));
                }
            }
            ctx.report(report.json());
        }
    }
    ctx.report(report.json());
    if report.errors.is_empty() {
        TaskOutcome::Completed
    } else {
        TaskOutcome::Failed(format!(
            "{} entries could not be checked",
            report.errors.len()
        ))
    }
}

enum Fix {
    Nothing,
    Fixed,
}

/// A message without a view entry: re-read both, check that its body can be read, then add
/// the entry. (A message row whose body is not readable belongs to a delivery that failed, or
/// to one still in progress that writes its view entry itself: neither was acknowledged, and
/// listing it would show a message that cannot be retrieved.)
async fn check_message(
    mail: &dyn Repair,
    bodies: &dyn MailStore,
    mb: MailboxId,
    id: MessageId,
) -> Result<Fix, tern_store::StoreError> {
    if mail.view_entry(mb, id).await?.is_some() {
        return Ok(Fix::Nothing);
    }
    let Some(meta) = mail.message_meta(id).await? else {
        return Ok(Fix::Nothing);
    };
    if meta.mailbox != mb || bodies.open_body(mb, id).await?.is_none() {
        return Ok(Fix::Nothing);
    }
    if mail.view_entry(mb, id).await?.is_some() {
        return Ok(Fix::Nothing);
    }
    mail.put_view_entry(
        mb,
        ViewEntry {
            message_id: id,
            size: meta.size,
            uidl: None,
        },
    )
    .await?;
    Ok(Fix::Fixed)
}

/// A view entry without its message: re-read both, then remove the entry.
async fn check_view_entry(
    mail: &dyn Repair,
    mb: MailboxId,
    id: MessageId,
) -> Result<Fix, tern_store::StoreError> {
    let owned = |m: Option<tern_store::MessageMeta>| m.is_some_and(|m| m.mailbox == mb);
    if owned(mail.message_meta(id).await?) {
        return Ok(Fix::Nothing);
    }
    if mail.view_entry(mb, id).await?.is_none() || owned(mail.message_meta(id).await?) {
        return Ok(Fix::Nothing);
    }
    mail.remove_view_entry(mb, id).await?;
    Ok(Fix::Fixed)
}
