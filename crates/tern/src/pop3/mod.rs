//! The POP3 listener: drives a sans-IO [`Pop3Session`] over a byte stream and does what it asks
//! (log in, stream a body, apply deletions) against the stores.

pub mod listing;

use crate::io::{read_timed, write_timed, Deadline, ReadOutcome};
use crate::logging::Escaped;
use crate::server::Services;
use std::sync::Arc;
use std::time::Duration;
use tern_proto::dot::RetrEncoder;
use tern_proto::pop3::{
    retrieve_ok_line, LoginFailure, MaildropEntry, Pop3Config, Pop3Request, Pop3Session,
    RetrieveOutcome, UpdateOutcome,
};
use tern_store::{MailboxId, MessageId};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// Octets of a RETR response gathered before a write.
const RETR_WRITE_CHUNK: usize = 64 * 1024;

/// The maildrop a session logged in to, as listed at login.
struct Maildrop {
    mailbox: MailboxId,
    messages: Vec<MessageId>,
}

/// Per-connection state the driver keeps beside the session.
struct Connection {
    peer: std::net::SocketAddr,
    user: String,
    maildrop: Option<Maildrop>,
}

/// Why [`run`] returned.
enum Exit {
    Closed,
    /// The session accepted STLS: the caller runs the handshake and runs the session again.
    StartTls,
}

/// Serves one POP3 connection; with `implicit_tls` (the port-995 role) TLS is negotiated first.
pub async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    svc: Arc<Services>,
    mut shutdown: watch::Receiver<bool>,
    implicit_tls: bool,
) {
    let cfg = &svc.config.pop3;
    // Passwords may cross in clear only inside TLS, on loopback, or when the operator says so.
    let plaintext_ok = implicit_tls
        || cfg.allow_plaintext_auth
        || (cfg.loopback_is_secure && peer.ip().is_loopback());
    let mut session = Pop3Session::new(Pop3Config {
        hostname: svc.config.server.hostname.clone(),
        implementation: format!("Tern {}", env!("CARGO_PKG_VERSION")),
        max_line: 2048,
        max_auth_failures: cfg.max_auth_failures,
        max_errors: cfg.max_errors,
        plaintext_auth_allowed: plaintext_ok,
        stls_available: svc.tls.is_some() && !implicit_tls,
    });
    let mut conn = Connection {
        peer,
        user: String::new(),
        maildrop: None,
    };
    let idle = Duration::from_secs(cfg.idle_timeout_secs);
    if implicit_tls {
        if let Some(mut tls) = crate::tls::handshake(&svc, stream, idle).await {
            run(&mut tls, &mut session, &mut conn, &svc, &mut shutdown).await;
            let _ = tls.shutdown().await;
        }
        return;
    }
    let mut stream = stream;
    match run(&mut stream, &mut session, &mut conn, &svc, &mut shutdown).await {
        Exit::Closed => {
            let _ = stream.shutdown().await;
        }
        Exit::StartTls => {
            let Some(mut tls) = crate::tls::handshake(&svc, stream, idle).await else {
                return;
            };
            session.tls_established();
            if let Exit::Closed = run(&mut tls, &mut session, &mut conn, &svc, &mut shutdown).await
            {
                let _ = tls.shutdown().await;
            }
        }
    }
}

async fn run<S>(
    stream: &mut S,
    session: &mut Pop3Session,
    conn: &mut Connection,
    svc: &Services,
    shutdown: &mut watch::Receiver<bool>,
) -> Exit
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let idle = Duration::from_secs(svc.config.pop3.idle_timeout_secs);
    let peer = conn.peer;
    let mut buf = vec![0u8; 4096];
    let mut command_clock = Deadline::default();
    loop {
        while let Some(request) = session.poll() {
            // A command is being served (a RETR may take long): the next one starts afresh.
            command_clock.clear();
            if write_timed(stream, &session.take_output(), idle)
                .await
                .is_err()
            {
                return Exit::Closed;
            }
            match request {
                Pop3Request::Authenticate { username, password } => {
                    conn.user = username.to_lowercase();
                    match login(svc, peer, &username, &password).await {
                        Ok(m) => {
                            let entries = m.1;
                            tracing::info!(%peer, user = %Escaped(&conn.user), messages = entries.len(), "pop3 login");
                            conn.maildrop = Some(m.0);
                            session.login_succeeded(entries);
                        }
                        Err(f) => {
                            tracing::info!(%peer, user = %Escaped(&conn.user), reason = ?f, "pop3 login failed");
                            session.login_failed(f);
                        }
                    }
                }
                Pop3Request::Retrieve {
                    index,
                    size,
                    top_lines,
                } => {
                    let Some(m) = &conn.maildrop else {
                        return Exit::Closed;
                    };
                    match retrieve(stream, svc, m, index, size, top_lines, idle).await {
                        Ok(o) => session.retrieve_finished(o),
                        Err(e) => {
                            // Part of the response is out already: the only honest move left is
                            // to drop the connection, so the client sees no terminator.
                            tracing::warn!(%peer, user = %Escaped(&conn.user), error = %e, "pop3 retrieval aborted");
                            return Exit::Closed;
                        }
                    }
                }
                Pop3Request::Update { deleted } => {
                    let Some(m) = &conn.maildrop else {
                        return Exit::Closed;
                    };
                    let ids: Vec<MessageId> = deleted
                        .iter()
                        .filter_map(|&i| m.messages.get(i).copied())
                        .collect();
                    match svc.mail.delete_messages(m.mailbox, &ids).await {
                        Ok(()) => {
                            tracing::info!(%peer, user = %Escaped(&conn.user), deleted = ids.len(), "pop3 deletions applied");
                            session.update_finished(UpdateOutcome::Applied)
                        }
                        Err(e) => {
                            tracing::error!(%peer, user = %Escaped(&conn.user), error = %e, "pop3 deletions failed");
                            session.update_finished(UpdateOutcome::Failed)
                        }
                    }
                }
                Pop3Request::StartTls => return Exit::StartTls,
            }
        }
        let output = session.take_output();
        if !output.is_empty() {
            // A command was answered: the next one gets the whole autologout time.
            command_clock.clear();
        }
        if write_timed(stream, &output, idle).await.is_err() {
            return Exit::Closed;
        }
        if session.is_closed() {
            return Exit::Closed;
        }
        let wait = command_clock.next_wait(idle, idle);
        tokio::select! {
            r = read_timed(stream, &mut buf, wait) => match r {
                ReadOutcome::Data(n) => session.feed(&buf[..n]),
                ReadOutcome::TimedOut => session.idle_timeout(),
                // A dropped connection applies no deletion (RFC 1939 section 6).
                ReadOutcome::Closed => return Exit::Closed,
            },
            _ = shutdown.changed() => session.shutdown(),
        }
    }
}

async fn login(
    svc: &Services,
    peer: std::net::SocketAddr,
    username: &str,
    password: &str,
) -> Result<(Maildrop, Vec<MaildropEntry>), LoginFailure> {
    let name = username.trim().to_lowercase();
    if let Some(why) = svc.throttle.refusal(peer.ip(), &name) {
        return Err(LoginFailure::Delayed(why));
    }
    let mailbox = match svc.auth.login(username, password).await {
        Ok(mb) => {
            svc.throttle.succeeded(peer.ip(), &name);
            mb
        }
        Err(crate::auth::AuthError::BadCredentials) => {
            // A growing pause before the answer slows guessing on one connection; the counts
            // feed the per-address and per-user lockouts.
            let delay = svc.throttle.failed(peer.ip(), &name);
            tokio::time::sleep(delay).await;
            return Err(LoginFailure::BadCredentials);
        }
        Err(e) => {
            tracing::error!(error = %e, "pop3 login could not be checked");
            return Err(LoginFailure::Temporary);
        }
    };
    let listed = svc.listing.snapshot(mailbox).await.map_err(|e| {
        tracing::error!(error = %e, "pop3 maildrop could not be listed");
        LoginFailure::Temporary
    })?;
    let mut messages = Vec::with_capacity(listed.len());
    let mut entries = Vec::with_capacity(listed.len());
    for e in listed {
        messages.push(e.message_id);
        entries.push(MaildropEntry {
            size: e.size,
            uidl: e.uidl,
        });
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
        Ok(None) => {
            // Read repair: the view listed a message whose message or body is gone (a deletion
            // by another session, or a deletion that stopped half-way). Drop the entry so the
            // next session no longer lists it.
            match svc.mail.remove_view_entry(maildrop.mailbox, id).await {
                Ok(()) => {
                    tracing::info!(mailbox = %maildrop.mailbox, message = %id, "read repair: stale POP3 view entry removed")
                }
                Err(e) => tracing::warn!(message = %id, error = %e, "read repair failed"),
            }
            return Ok(RetrieveOutcome::Missing);
        }
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
