//! The SMTP listener: drives a sans-IO [`SmtpSession`] and makes accepted messages durable.
//! A message is acknowledged with 250 only after `MailStore::deliver` returned, i.e. once body,
//! metadata and POP3 view entries are durable.

use crate::io::{read_timed, write_timed, Deadline, ReadOutcome};
use crate::server::Services;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tern_proto::smtp::{
    trace_headers, Mailbox, RcptVerdict, SmtpConfig, SmtpRequest, SmtpSession, StoreOutcome, Trace,
};
use tern_store::{BodyWriter, MailboxId};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// The body being received, if any.
struct Incoming {
    writer: Option<Box<dyn BodyWriter>>,
    /// Set when a write failed: the rest of the body is read and dropped, then 451.
    failed: bool,
}

/// Why [`run`] returned.
enum Exit {
    Closed,
    /// The session accepted STARTTLS: the caller runs the handshake and runs it again.
    StartTls,
}

/// Per-connection state the driver keeps beside the session.
struct Connection {
    peer: std::net::SocketAddr,
    incoming: Incoming,
    stopping: bool,
}

pub async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    svc: Arc<Services>,
    mut shutdown: watch::Receiver<bool>,
) {
    let cfg = &svc.config.smtp;
    let mut session: SmtpSession<MailboxId> = SmtpSession::new(SmtpConfig {
        hostname: svc.config.server.hostname.clone(),
        max_line: 2048,
        max_message_size: cfg.max_message_size,
        max_recipients: cfg.max_recipients,
        max_errors: cfg.max_errors,
        starttls_available: svc.tls.is_some(),
    });
    let mut conn = Connection {
        peer,
        incoming: Incoming {
            writer: None,
            failed: false,
        },
        stopping: *shutdown.borrow(),
    };
    let mut stream = stream;
    let exit = run(&mut stream, &mut session, &mut conn, &svc, &mut shutdown).await;
    if let Exit::StartTls = exit {
        let timeout = Duration::from_secs(cfg.command_timeout_secs);
        if let Some(mut tls) = crate::tls::handshake(&svc, stream, timeout).await {
            session.tls_established();
            run(&mut tls, &mut session, &mut conn, &svc, &mut shutdown).await;
            let _ = tls.shutdown().await;
        }
    } else {
        let _ = stream.shutdown().await;
    }
    if let Some(w) = conn.incoming.writer.take() {
        w.abort().await;
    }
}

async fn run<S>(
    stream: &mut S,
    session: &mut SmtpSession<MailboxId>,
    conn: &mut Connection,
    svc: &Services,
    shutdown: &mut watch::Receiver<bool>,
) -> Exit
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let cfg = &svc.config.smtp;
    let command_timeout = Duration::from_secs(cfg.command_timeout_secs);
    let data_timeout = Duration::from_secs(cfg.data_timeout_secs);
    let data_deadline = Duration::from_secs(cfg.data_deadline_secs);
    // The whole command line, and the whole DATA, each have a deadline of their own.
    let (mut command_clock, mut data_clock) = (Deadline::default(), Deadline::default());
    let peer = conn.peer;
    let incoming = &mut conn.incoming;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while let Some(request) = session.poll() {
            match request {
                SmtpRequest::CheckRecipient(mailbox) => {
                    let verdict = check_recipient(svc, &mailbox).await;
                    session.rcpt_verdict(verdict);
                }
                SmtpRequest::BeginMessage {
                    reverse_path,
                    helo,
                    esmtp,
                    recipients,
                } => {
                    let protocol = match (esmtp, session.is_tls()) {
                        (true, true) => "ESMTPS",
                        (true, false) => "ESMTP",
                        (false, _) => "SMTP",
                    };
                    let ok = begin_message(
                        svc,
                        incoming,
                        peer,
                        &reverse_path,
                        &helo,
                        protocol,
                        &recipients,
                    )
                    .await;
                    session.data_ready(ok);
                }
                SmtpRequest::MessageData(data) => {
                    if let Some(w) = incoming.writer.as_mut() {
                        if let Err(e) = w.write(&data).await {
                            tracing::error!(%peer, error = %e, "cannot write message body");
                            incoming.failed = true;
                            if let Some(w) = incoming.writer.take() {
                                w.abort().await;
                            }
                        }
                    }
                }
                SmtpRequest::EndMessage { recipients } => {
                    let outcome = store_message(svc, incoming, recipients, peer).await;
                    session.message_stored(outcome);
                }
                SmtpRequest::AbortMessage => {
                    if let Some(w) = incoming.writer.take() {
                        w.abort().await;
                    }
                    incoming.failed = false;
                }
                SmtpRequest::StartTls => {
                    if write_timed(stream, &session.take_output(), command_timeout)
                        .await
                        .is_err()
                    {
                        return Exit::Closed;
                    }
                    return Exit::StartTls;
                }
            }
        }
        if conn.stopping && !session.in_message() && !session.is_closed() {
            session.shutdown();
        }
        let output = session.take_output();
        let timeout = if session.in_data() {
            command_clock.clear();
            data_clock.next_wait(data_deadline, data_timeout)
        } else {
            data_clock.clear();
            if !output.is_empty() {
                // A command was answered: the next one starts its own clock.
                command_clock.clear();
            }
            command_clock.next_wait(command_timeout, command_timeout)
        };
        if write_timed(stream, &output, command_timeout.max(data_timeout))
            .await
            .is_err()
        {
            return Exit::Closed;
        }
        if session.is_closed() {
            return Exit::Closed;
        }
        let r = if conn.stopping {
            read_timed(stream, &mut buf, timeout).await
        } else {
            tokio::select! {
                r = read_timed(stream, &mut buf, timeout) => r,
                _ = shutdown.changed() => { conn.stopping = true; continue; }
            }
        };
        match r {
            ReadOutcome::Data(n) => session.feed(&buf[..n]),
            ReadOutcome::TimedOut => session.timeout(),
            ReadOutcome::Closed => return Exit::Closed,
        }
    }
}

async fn check_recipient(svc: &Services, mailbox: &Mailbox) -> RcptVerdict<MailboxId> {
    if mailbox.is_bare_postmaster() {
        return postmaster(svc).await;
    }
    match svc.directory.domain_exists(&mailbox.domain).await {
        Ok(true) => {}
        Ok(false) => return RcptVerdict::RelayDenied,
        Err(e) => {
            tracing::error!(error = %e, "recipient domain lookup failed");
            return RcptVerdict::Temporary;
        }
    }
    match svc.directory.get_user(&mailbox.user_name()).await {
        Ok(Some(user)) => RcptVerdict::Accept(user.inbox),
        Ok(None) => RcptVerdict::UnknownUser,
        Err(e) => {
            tracing::error!(error = %e, "recipient lookup failed");
            RcptVerdict::Temporary
        }
    }
}

/// `RCPT TO:<postmaster>` (no domain) goes to the `postmaster@` user of the served domains, the
/// first in alphabetical order that has one.
async fn postmaster(svc: &Services) -> RcptVerdict<MailboxId> {
    let domains = match svc.directory.list_domains().await {
        Ok(mut d) => {
            d.sort();
            d
        }
        Err(e) => {
            tracing::error!(error = %e, "domain list failed");
            return RcptVerdict::Temporary;
        }
    };
    for domain in domains {
        match svc
            .directory
            .get_user(&format!("postmaster@{domain}"))
            .await
        {
            Ok(Some(user)) => return RcptVerdict::Accept(user.inbox),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "postmaster lookup failed");
                return RcptVerdict::Temporary;
            }
        }
    }
    RcptVerdict::UnknownUser
}

/// RFC 5322 date-time of now, in UTC.
fn rfc5322_now() -> String {
    httpdate::fmt_http_date(SystemTime::now()).replace("GMT", "+0000")
}

async fn begin_message(
    svc: &Services,
    incoming: &mut Incoming,
    peer: std::net::SocketAddr,
    reverse_path: &str,
    helo: &str,
    protocol: &str,
    recipients: &[Mailbox],
) -> bool {
    incoming.failed = false;
    let mut writer = match svc.mail.begin_body().await {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(%peer, error = %e, "cannot start a message body");
            return false;
        }
    };
    let single = (recipients.len() == 1).then(|| recipients[0].to_string());
    let id = format!("{:016x}", rand::random::<u64>());
    let headers = trace_headers(&Trace {
        reverse_path,
        helo,
        peer_ip: &peer.ip().to_string(),
        hostname: &svc.config.server.hostname,
        protocol,
        id: &id,
        single_recipient: single.as_deref(),
        date: &rfc5322_now(),
    });
    if let Err(e) = writer.write(headers.as_bytes()).await {
        tracing::error!(%peer, error = %e, "cannot write trace headers");
        writer.abort().await;
        return false;
    }
    incoming.writer = Some(writer);
    true
}

async fn store_message(
    svc: &Services,
    incoming: &mut Incoming,
    mut recipients: Vec<MailboxId>,
    peer: std::net::SocketAddr,
) -> StoreOutcome {
    let writer = incoming.writer.take();
    let Some(writer) = writer.filter(|_| !incoming.failed) else {
        return StoreOutcome::Failed;
    };
    // The same mailbox named twice (aliases, case variants) gets one copy.
    recipients.sort();
    recipients.dedup();
    let staged = match writer.finish().await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%peer, error = %e, "cannot make the message body durable");
            return StoreOutcome::Failed;
        }
    };
    let (blob, size) = (staged.blob_id, staged.size);
    match svc.mail.deliver(staged, &recipients).await {
        Ok(ids) => {
            for (mailbox, id) in recipients.iter().zip(&ids) {
                // The message is durable and in the POP3 view already; in UID mode it also
                // needs its UID. If that fails, the next UID-mode login numbers it, so the
                // message is still acknowledged (a 451 would only make the client send it twice).
                if let Err(e) = svc.listing.delivered(*mailbox, &[*id]).await {
                    tracing::warn!(%peer, message = %id, error = %e, "UID assignment deferred to the next login");
                }
            }
            tracing::info!(%peer, blob = %blob, size, recipients = ids.len(), "message stored");
            StoreOutcome::Stored {
                id: blob.to_string(),
            }
        }
        Err(e) => {
            tracing::error!(%peer, error = %e, "delivery failed");
            StoreOutcome::Failed
        }
    }
}
