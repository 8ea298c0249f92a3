//! The POP3 listener: drives a sans-IO [`Pop3Session`] over a byte stream and does what it asks
//! (log in, stream a body, apply deletions) against the stores.

use crate::io::{read_timed, write_timed, ReadOutcome};
use crate::server::Services;
use std::sync::Arc;
use std::time::Duration;
use tern_proto::dot::RetrEncoder;
use tern_proto::pop3::{
    retrieve_ok_line, LoginFailure, MaildropEntry, Pop3Config, Pop3Request, Pop3Session,
    RetrieveOutcome, UpdateOutcome,
};
use tern_store::{MailboxId, MessageId};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// Octets of a RETR response gathered before a write.
const RETR_WRITE_CHUNK: usize = 64 * 1024;

/// The maildrop a session logged in to, as listed at login.
struct Maildrop {
    mailbox: MailboxId,
    messages: Vec<MessageId>,
}

pub async fn serve_connection<S>(
    mut stream: S,
    peer: std::net::SocketAddr,
    svc: Arc<Services>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let cfg = &svc.config.pop3;
    let mut session = Pop3Session::new(Pop3Config {
        hostname: svc.config.server.hostname.clone(),
        implementation: format!("Tern {}", env!("CARGO_PKG_VERSION")),
        max_line: 2048,
        max_auth_failures: cfg.max_auth_failures,
        max_errors: cfg.max_errors,
        plaintext_auth_allowed: true,
        stls_available: false,
    });
    let idle = Duration::from_secs(cfg.idle_timeout_secs);
    let mut maildrop: Option<Maildrop> = None;
    let mut user = String::new();
    let mut buf = vec![0u8; 4096];
    loop {
        while let Some(request) = session.poll() {
            if write_timed(&mut stream, &session.take_output(), idle)
                .await
                .is_err()
            {
                return;
            }
            match request {
                Pop3Request::Authenticate { username, password } => {
                    user = username.to_lowercase();
                    match login(&svc, &username, &password).await {
                        Ok(m) => {
                            let entries = m.1;
                            tracing::info!(%peer, user = %user, messages = entries.len(), "pop3 login");
                            maildrop = Some(m.0);
                            session.login_succeeded(entries);
                        }
                        Err(f) => {
                            tracing::info!(%peer, user = %user, reason = ?f, "pop3 login failed");
                            session.login_failed(f);
                        }
                    }
                }
                Pop3Request::Retrieve {
                    index,
                    size,
                    top_lines,
                } => {
                    let Some(m) = &maildrop else { return };
                    let outcome =
                        retrieve(&mut stream, &svc, m, index, size, top_lines, idle).await;
                    match outcome {
                        Ok(o) => session.retrieve_finished(o),
                        Err(e) => {
                            // Part of the response is out already: the only honest move left is
                            // to drop the connection, so the client sees no terminator.
                            tracing::warn!(%peer, user = %user, error = %e, "pop3 retrieval aborted");
                            return;
                        }
                    }
                }
                Pop3Request::Update { deleted } => {
                    let Some(m) = &maildrop else { return };
                    let ids: Vec<MessageId> = deleted
                        .iter()
                        .filter_map(|&i| m.messages.get(i).copied())
                        .collect();
                    match svc.mail.delete_messages(m.mailbox, &ids).await {
                        Ok(()) => {
                            tracing::info!(%peer, user = %user, deleted = ids.len(), "pop3 deletions applied");
                            session.update_finished(UpdateOutcome::Applied)
                        }
                        Err(e) => {
                            tracing::error!(%peer, user = %user, error = %e, "pop3 deletions failed");
                            session.update_finished(UpdateOutcome::Failed)
                        }
                    }
                }
            }
        }
        if write_timed(&mut stream, &session.take_output(), idle)
            .await
            .is_err()
        {
            return;
        }
        if session.is_closed() {
            break;
        }
        tokio::select! {
            r = read_timed(&mut stream, &mut buf, idle) => match r {
                ReadOutcome::Data(n) => session.feed(&buf[..n]),
                ReadOutcome::TimedOut => session.idle_timeout(),
                // A dropped connection applies no deletion (RFC 1939 section 6).
                ReadOutcome::Closed => return,
            },
            _ = shutdown.changed() => session.shutdown(),
        }
    }
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
}

async fn login(
    svc: &Services,
    username: &str,
    password: &str,
) -> Result<(Maildrop, Vec<MaildropEntry>), LoginFailure> {
    let mailbox = match svc.auth.login(username, password).await {
        Ok(mb) => mb,
        Err(crate::auth::AuthError::BadCredentials) => return Err(LoginFailure::BadCredentials),
        Err(e) => {
            tracing::error!(error = %e, "pop3 login could not be checked");
            return Err(LoginFailure::Temporary);
        }
    };
    let view = svc.mail.pop3_view(mailbox).await.map_err(|e| {
        tracing::error!(error = %e, "pop3 view could not be read");
        LoginFailure::Temporary
    })?;
    let mut messages = Vec::with_capacity(view.len());
    let mut entries = Vec::with_capacity(view.len());
    for e in view {
        messages.push(e.message_id);
        let uidl = e.uidl.unwrap_or_else(|| e.message_id.to_string());
        entries.push(MaildropEntry { size: e.size, uidl });
    }
    Ok((Maildrop { mailbox, messages }, entries))
}

async fn retrieve<S>(
    stream: &mut S,
    svc: &Services,
    maildrop: &Maildrop,
    index: usize,
    size: u64,
    top_lines: Option<u64>,
    timeout: Duration,
) -> std::io::Result<RetrieveOutcome>
where
    S: AsyncWrite + Unpin,
{
    let Some(&id) = maildrop.messages.get(index) else {
        return Ok(RetrieveOutcome::Missing);
    };
    let mut reader = match svc.mail.open_body(maildrop.mailbox, id).await {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(RetrieveOutcome::Missing),
        Err(e) => {
            tracing::error!(message = %id, error = %e, "cannot open body");
            return Ok(RetrieveOutcome::Temporary);
        }
    };
    let mut encoder = match top_lines {
        Some(n) => RetrEncoder::top(n),
        None => RetrEncoder::retr(),
    };
    let mut out = retrieve_ok_line(size, top_lines.is_some()).into_bytes();
    while !encoder.is_done() {
        let chunk = match reader.next_chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        };
        encoder.encode(&chunk, &mut out);
        // Written in pieces: a client that reads slowly holds back the store reads instead of
        // making the server buffer the message. A small message goes out in one write.
        if out.len() >= RETR_WRITE_CHUNK {
            write_timed(stream, &out, timeout).await?;
            out.clear();
        }
    }
    encoder.finish(&mut out);
    write_timed(stream, &out, timeout).await?;
    Ok(RetrieveOutcome::Sent)
}
