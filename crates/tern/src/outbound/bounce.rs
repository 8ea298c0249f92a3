//! Bounces: a delivery status notification (RFC 3464) to the envelope sender, from `<>`, for
//! the recipients that failed for good or whose time in the queue ran out. Never in reply to a
//! bounce (a null sender), so two servers can never bounce at each other forever. A report to a
//! local user lands in their mailbox directly; any other goes through the queue.

use super::Outbound;
use tern_proto::smtp::client::Reply;
use tern_proto::smtp::dsn::{self, DsnAction, DsnRecipient, DsnReport};
use tern_store::{NewQueuedMail, QueuedMail, QueuedRecipient};

/// A recipient to report on: given up, or relayed with NOTIFY=SUCCESS.
#[derive(Debug, Clone)]
pub struct Reported {
    pub recipient: QueuedRecipient,
    pub reply: Reply,
    pub remote: Option<String>,
    /// Given up because the queue lifetime ran out, not because a server refused.
    pub expired: bool,
    /// `Failed`, or `Relayed` for a success the sender asked to hear about.
    pub action: DsnAction,
}

/// Octets of the original message a report carries at most, with `RET=FULL`.
const MAX_RETURNED: usize = 10 * 1024 * 1024;

fn rfc5322(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    httpdate::fmt_http_date(t).replace("GMT", "+0000")
}

impl Outbound {
    /// Sends the report for `failed`; `Ok` once it is durable (or deliberately not sent).
    pub async fn bounce(&self, mail: &QueuedMail, failed: &[Reported]) -> tern_store::Result<()> {
        let failed: Vec<&Reported> = failed
            .iter()
            .filter(|f| match f.action {
                DsnAction::Failed => f.recipient.notify.failure,
                _ => f.recipient.notify.success,
            })
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        if mail.sender.is_empty() {
            // Never a bounce of a bounce: the undeliverable report is kept for the operator.
            return self.keep_undeliverable_bounce(mail, &failed).await;
        }
        let original = self.original(mail).await?;
        let recipients: Vec<DsnRecipient> = failed
            .iter()
            .map(|f| DsnRecipient {
                address: f.recipient.address.clone(),
                original_recipient: f.recipient.orcpt.clone(),
                action: f.action,
                status: if f.expired {
                    "4.4.7".into()
                } else {
                    dsn::status_of(&f.reply)
                },
                diagnostic: Some(f.reply.clone()),
                remote_mta: f.remote.clone(),
            })
            .collect();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let report = dsn::build(&DsnReport {
            reporting_mta: &self.hostname,
            to: &mail.sender,
            envid: mail.envid.as_deref(),
            arrival_date: &rfc5322(mail.queued_ms),
            date: &rfc5322(tern_store::now_ms()),
            message_id: &format!("<{id}.dsn@{}>", self.hostname),
            boundary: &format!("tern-dsn-{id}"),
            recipients: &recipients,
            original: &original,
            original_is_full: mail.return_full && original.len() < MAX_RETURNED,
        });
        let mut writer = self.mail.begin_body().await?;
        writer.write(&report).await?;
        let staged = writer.finish().await?;
        // A local sender gets it in their mailbox; anyone else through the queue, from <>.
        let sender = crate::names::normalize_user(&mail.sender);
        if let Some(user) = self.directory.get_user(&sender).await? {
            let copy = tern_store::MessageCopy::with_header(
                user.inbox,
                tern_proto::smtp::delivery_headers("", &user.name).into_bytes(),
            );
            let ids = self.mail.deliver_copies(staged, &[copy]).await?;
            if let Err(e) = self.listing.delivered(user.inbox, &ids).await {
                tracing::warn!(error = %e, "UID assignment of a bounce deferred to the next login");
            }
            tracing::info!(queue_id = %mail.id, to = %sender, "bounce delivered locally");
            return Ok(());
        }
        let domain = sender.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        if self.directory.domain_exists(domain).await? {
            tracing::warn!(queue_id = %mail.id, to = %sender, "bounce for a local address without a user dropped");
            return Ok(());
        }
        let queued = self
            .queue
            .enqueue(
                staged,
                NewQueuedMail {
                    sender: String::new(),
                    recipients: vec![QueuedRecipient::new(mail.sender.clone())],
                    envid: None,
                    return_full: false,
                    header_prefix: None,
                },
            )
            .await?;
        tracing::info!(queue_id = %mail.id, bounce = %queued.id, to = %mail.sender, "bounce queued");
        Ok(())
    }

    /// The original message for the report: whole (`RET=FULL`, up to a bound) or its header.
    async fn keep_undeliverable_bounce(
        &self,
        mail: &QueuedMail,
        failed: &[&Reported],
    ) -> tern_store::Result<()> {
        let Some(body) = self.queue.open_queued_body(mail).await? else {
            tracing::error!(queue_id = %mail.id, "an undeliverable bounce lost its body; not kept");
            return Ok(());
        };
        let error = failed
            .iter()
            .map(|f| format!("{}: {}", f.recipient.address, f.reply))
            .collect::<Vec<_>>()
            .join("; ");
        let entry = tern_store::NewRepositoryMail {
            repository: crate::repository::ERROR.into(),
            sender: String::new(),
            recipients: failed.iter().map(|f| f.recipient.address.clone()).collect(),
            state: "error".into(),
            error: Some(format!("undeliverable bounce: {error}")),
            remote_host: self.hostname.clone(),
            remote_addr: "127.0.0.1".into(),
        };
        let prefix = mail.header_prefix.as_deref().unwrap_or("").as_bytes();
        let kept =
            crate::repository::keep(&*self.mail, &*self.repositories, prefix, body, 0, entry)
                .await?;
        tracing::warn!(queue_id = %mail.id, repository = kept.repository, key = kept.key, "a bounce could not be delivered; kept in a mail repository");
        Ok(())
    }

    async fn original(&self, mail: &QueuedMail) -> tern_store::Result<Vec<u8>> {
        let Some(mut body) = self.queue.open_queued_body(mail).await? else {
            // Reported without it rather than never.
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        while let Some(chunk) = body.next_chunk().await? {
            out.extend_from_slice(&chunk);
            if !mail.return_full && dsn::header_of(&out).len() < out.len() {
                break;
            }
            if out.len() > MAX_RETURNED {
                break;
            }
        }
        if !mail.return_full || out.len() > MAX_RETURNED {
            let header = dsn::header_of(&out).len();
            out.truncate(header);
        }
        Ok(out)
    }
}
