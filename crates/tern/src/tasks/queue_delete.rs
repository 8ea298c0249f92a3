//! Deletes mails from the outgoing queue: all of them (James's `clear-mail-queue`) or those
//! matching a sender, a recipient or a name (`delete-mails-from-mail-queue`). A mail with
//! several recipients loses only the matching one when deleting by recipient.

use super::{TaskContext, TaskOutcome};
use crate::outbound::Outbound;
use serde_json::{json, Value};
use std::sync::Arc;

pub const CLEAR: &str = "clear-mail-queue";
pub const DELETE: &str = "delete-mails-from-mail-queue";

/// Which mails go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    All,
    Sender(String),
    Recipient(String),
    Name(String),
}

impl Selector {
    pub fn task_type(&self) -> &'static str {
        match self {
            Selector::All => CLEAR,
            _ => DELETE,
        }
    }

    fn json(&self, initial: u64, remaining: u64) -> Value {
        let mut v = json!({
            "type": self.task_type(),
            "mailQueueName": "outgoing",
            "queue": "outgoing",
            "initialCount": initial,
            "remainingCount": remaining,
            "timestamp": super::iso8601(super::now_ms()),
        });
        match self {
            Selector::All => {}
            Selector::Sender(s) => v["sender"] = json!(s),
            Selector::Recipient(r) => v["recipient"] = json!(r),
            Selector::Name(n) => v["name"] = json!(n),
        }
        v
    }
}

pub fn initial(selector: &Selector) -> Value {
    selector.json(0, 0)
}

pub async fn run(
    outbound: Arc<Outbound>,
    selector: Selector,
    ctx: Arc<TaskContext>,
) -> TaskOutcome {
    let mails = match outbound.all_queued().await {
        Ok(m) => m,
        Err(e) => return TaskOutcome::Failed(format!("reading the queue: {e}")),
    };
    let initial = mails.len() as u64;
    let mut removed = 0u64;
    for mail in mails {
        if ctx.is_cancelled() {
            ctx.report(selector.json(initial, initial - removed));
            return TaskOutcome::Cancelled;
        }
        let result = match &selector {
            Selector::All => Some(outbound.queue.remove_queued(&mail).await),
            Selector::Name(n) if *n == mail.id.to_string() => {
                Some(outbound.queue.remove_queued(&mail).await)
            }
            Selector::Sender(s) if s.eq_ignore_ascii_case(&mail.sender) => {
                Some(outbound.queue.remove_queued(&mail).await)
            }
            Selector::Recipient(r) => {
                let keep: Vec<_> = mail
                    .recipients
                    .iter()
                    .filter(|x| !x.address.eq_ignore_ascii_case(r))
                    .cloned()
                    .collect();
                if keep.len() == mail.recipients.len() {
                    None
                } else if keep.is_empty() {
                    Some(outbound.queue.remove_queued(&mail).await)
                } else {
                    let mut next = mail.clone();
                    next.recipients = keep;
                    // Still queued for its other recipients: not counted as removed.
                    if let Err(e) = outbound.queue.reschedule(&mail, &next).await {
                        return TaskOutcome::Failed(format!("updating {}: {e}", mail.id));
                    }
                    None
                }
            }
            _ => None,
        };
        match result {
            Some(Ok(())) => {
                removed += 1;
                tracing::info!(queue_id = %mail.id, "deleted from the outgoing queue");
            }
            Some(Err(e)) => return TaskOutcome::Failed(format!("deleting {}: {e}", mail.id)),
            None => {}
        }
    }
    ctx.report(selector.json(initial, initial - removed));
    TaskOutcome::Completed
}
