//! One attempt at one queued message: its recipients grouped by route, each group sent over a
//! (pooled) connection to the first server of the route that answers, then the entry updated:
//! removed when nothing is left, bounced for permanent failures and expiry, rescheduled for
//! temporary ones.

use super::bounce::Reported;
use super::connection::Connection;
use super::route::Route;
use super::Outbound;
use std::collections::BTreeMap;
use tern_proto::smtp::client::{Envelope, Reply};
use tern_proto::smtp::dsn::DsnAction;
use tern_store::{now_ms, QueuedMail, QueuedRecipient};

/// Received headers beyond which a message is taken to loop (James's RelayLimit).
pub const MAX_RECEIVED: usize = 30;

/// How one recipient fared.
#[derive(Debug, Clone)]
struct Outcome {
    reply: Reply,
    /// The server that gave the reply, if one did.
    remote: Option<String>,
}

impl Outbound {
    /// Makes one attempt and records its result in the queue. Errors are logged: the entry
    /// stays as it was and is tried again at its next poll.
    pub async fn attempt(&self, mail: QueuedMail) {
        let id = mail.id;
        if let Err(e) = self.attempt_inner(mail).await {
            tracing::warn!(queue_id = %id, error = %e, "queue entry left for a later attempt");
        }
    }

    async fn attempt_inner(&self, mail: QueuedMail) -> tern_store::Result<()> {
        let outcomes = match self.loop_check(&mail).await? {
            Some(reply) => mail
                .recipients
                .iter()
                .map(|_| Outcome {
                    reply: reply.clone(),
                    remote: None,
                })
                .collect(),
            None => self.send_all(&mail).await,
        };
        let now = now_ms();
        let expired = now.saturating_sub(mail.queued_ms)
            >= (self.settings.max_queue_lifetime_secs as i64).saturating_mul(1000);
        let mut reports = Vec::new();
        let mut remaining: Vec<QueuedRecipient> = Vec::new();
        for (rcpt, outcome) in mail.recipients.iter().zip(outcomes) {
            let kind = if outcome.reply.is_positive() {
                "delivered"
            } else if outcome.reply.is_permanent() || expired {
                "bounced"
            } else {
                "deferred"
            };
            crate::metrics::metrics()
                .remote_deliveries
                .get_or_create(&crate::metrics::RemoteLabels { outcome: kind })
                .inc();
            if outcome.reply.is_positive() {
                tracing::info!(queue_id = %mail.id, to = %rcpt.address, relay = outcome.remote.as_deref().unwrap_or(""), reply = %outcome.reply, "delivered");
                if rcpt.notify.success {
                    // The next server gets no DSN parameters from us: this is the last report.
                    reports.push(Reported {
                        recipient: rcpt.clone(),
                        expired: false,
                        reply: outcome.reply,
                        remote: outcome.remote,
                        action: DsnAction::Relayed,
                    });
                }
            } else if outcome.reply.is_permanent() || expired {
                tracing::info!(queue_id = %mail.id, to = %rcpt.address, reply = %outcome.reply, expired, "bounced");
                reports.push(Reported {
                    recipient: rcpt.clone(),
                    expired: expired && !outcome.reply.is_permanent(),
                    reply: outcome.reply,
                    remote: outcome.remote,
                    action: DsnAction::Failed,
                });
            } else {
                tracing::info!(queue_id = %mail.id, to = %rcpt.address, reply = %outcome.reply, attempt = mail.attempts + 1, "deferred");
                let mut r = rcpt.clone();
                r.last_error = Some(outcome.reply.to_string());
                remaining.push(r);
            }
        }
        // The report is durable before the entry changes: a crash in between reports again,
        // never loses the report.
        if !reports.is_empty() {
            self.bounce(&mail, &reports).await?;
        }
        if remaining.is_empty() {
            return self.queue.remove_queued(&mail).await;
        }
        let delays = &self.settings.retry_delays_secs;
        let delay = delays
            .get(mail.attempts as usize)
            .or(delays.last())
            .copied()
            .unwrap_or(300);
        let mut next = mail.clone();
        next.recipients = remaining;
        next.attempts = mail.attempts.saturating_add(1);
        next.next_attempt_ms = now.saturating_add((delay as i64).saturating_mul(1000));
        self.queue.reschedule(&mail, &next).await
    }

    /// A permanent failure for every recipient when the message has looped (too many
    /// Received headers), `None` otherwise.
    async fn loop_check(&self, mail: &QueuedMail) -> tern_store::Result<Option<Reply>> {
        let Some(mut body) = self.queue.open_queued_body(mail).await? else {
            return Ok(Some(Reply::local(
                554,
                "5.3.0 the queued message body is missing",
            )));
        };
        let mut header = Vec::new();
        while let Some(chunk) = body.next_chunk().await? {
            header.extend_from_slice(&chunk);
            if tern_proto::smtp::dsn::header_of(&header).len() < header.len()
                || header.len() > 1024 * 1024
            {
                break;
            }
        }
        let header = tern_proto::smtp::dsn::header_of(&header);
        let received = header
            .split(|&b| b == b'\n')
            .filter(|line| line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"received:"))
            .count();
        Ok((received > MAX_RECEIVED).then(|| {
            Reply::local(
                554,
                format!("5.4.6 routing loop detected: {received} Received headers"),
            )
        }))
    }

    /// Sends to every recipient, a group per route, the groups in parallel.
    async fn send_all(&self, mail: &QueuedMail) -> Vec<Outcome> {
        let mut groups: BTreeMap<Route, Vec<usize>> = BTreeMap::new();
        for (i, r) in mail.recipients.iter().enumerate() {
            let domain = r.address.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            groups.entry(self.router.route(domain)).or_default().push(i);
        }
        let results =
            futures_util::future::join_all(groups.into_iter().map(|(route, idx)| async move {
                (self.send_group(mail, &route, &idx).await, idx)
            }))
            .await;
        let mut out = vec![
            Outcome {
                reply: Reply::local(451, "4.3.0 not attempted"),
                remote: None,
            };
            mail.recipients.len()
        ];
        for (outcomes, idx) in results {
            for (o, i) in outcomes.into_iter().zip(idx) {
                out[i] = o;
            }
        }
        out
    }

    /// One group: the route's servers in order until one takes the transaction.
    async fn send_group(&self, mail: &QueuedMail, route: &Route, idx: &[usize]) -> Vec<Outcome> {
        let all = |reply: Reply, remote: Option<String>| {
            idx.iter()
                .map(|_| Outcome {
                    reply: reply.clone(),
                    remote: remote.clone(),
                })
                .collect::<Vec<_>>()
        };
        let key = route.key();
        let slots = self.destination_slots(&key);
        let Ok(_slot) = slots.acquire_owned().await else {
            return all(Reply::local(451, "4.3.0 shutting down"), None);
        };
        let envelope = Envelope {
            sender: mail.sender.clone(),
            recipients: idx
                .iter()
                .map(|i| mail.recipients[*i].address.clone())
                .collect(),
            size: mail.size + mail.header_prefix.as_ref().map_or(0, |s| s.len() as u64),
        };
        // A pooled connection first; the server may have closed it meanwhile, in which case
        // the message goes over a fresh one.
        if let Some(mut conn) = self.pooled(&key) {
            if let Some(result) = self.transact(&mut conn, mail, &envelope).await {
                let remote = Some(conn.target.name.clone());
                if let Ok(replies) = result {
                    self.put_back(&key, conn);
                    return replies
                        .into_iter()
                        .map(|reply| Outcome {
                            reply,
                            remote: remote.clone(),
                        })
                        .collect();
                }
            }
        }
        let targets = match self.router.targets(route).await {
            Ok(t) => t,
            Err(reply) => return all(reply, None),
        };
        let relayhost = matches!(
            route,
            Route::Host {
                relayhost: true,
                ..
            }
        );
        let connect_timeout = std::time::Duration::from_secs(self.settings.connect_timeout_secs);
        let mut last = Reply::local(451, "4.4.0 no server to try");
        let mut last_remote = None;
        for target in targets.into_iter().take(10) {
            let name = target.name.clone();
            let mut conn = match Connection::open(
                target,
                self.client_config(relayhost),
                match (&self.relay_tls, relayhost) {
                    (Some(verifying), true) => verifying,
                    _ => &self.tls,
                },
                connect_timeout,
            )
            .await
            {
                Ok(c) => c,
                Err(reply) => {
                    tracing::info!(queue_id = %mail.id, server = %name, reply = %reply, "server unusable, trying the next");
                    last = reply;
                    last_remote = Some(name);
                    continue;
                }
            };
            match self.transact(&mut conn, mail, &envelope).await {
                Some(Ok(replies)) => {
                    self.put_back(&key, conn);
                    return replies
                        .into_iter()
                        .map(|reply| Outcome {
                            reply,
                            remote: Some(name.clone()),
                        })
                        .collect();
                }
                Some(Err(reply)) => {
                    // The connection broke during the transaction: retried later (the
                    // server may or may not have the message; at least once, never lost).
                    return all(reply, Some(name));
                }
                None => {
                    return all(
                        Reply::local(554, "5.3.0 the queued message body is missing"),
                        None,
                    )
                }
            }
        }
        // Every server failed before a transaction: a refusal is final only if it was.
        all(last, last_remote)
    }

    /// One transaction; `None` if the body is gone.
    async fn transact(
        &self,
        conn: &mut Connection,
        mail: &QueuedMail,
        envelope: &Envelope,
    ) -> Option<Result<Vec<Reply>, Reply>> {
        let body = match self.queue.open_queued_body(mail).await {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(e) => return Some(Err(Reply::local(451, format!("4.3.0 store: {e}")))),
        };
        let prefix = mail.header_prefix.as_deref();
        Some(conn.send(envelope.clone(), prefix, body, &self.tls).await)
    }
}
