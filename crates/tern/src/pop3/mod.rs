//! The POP3 listener's protocol: serves the requests of a sans-IO [`Pop3Session`] (log in,
//! stream a body, apply deletions) for the generic [`driver`](crate::driver).

use crate::auth::Authenticator;
use crate::channels::Channel;
use crate::config::Pop3Section;
use crate::driver::{BoxStream, Next, Protocol};
use crate::io::write_timed;
use crate::listing::Pop3Listing;
use crate::logging::Escaped;
use crate::metrics::metrics;
use crate::throttle::LoginThrottle;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tern_proto::dot::RetrEncoder;
use tern_proto::pop3::{
    retrieve_ok_line, LoginFailure, MaildropEntry, Pop3Config, Pop3Request, Pop3Session,
    RetrieveOutcome, UpdateOutcome,
};
use tern_store::{MailStore, MailboxId, MessageId, Repair};
use tokio::io::AsyncWrite;
use tokio::sync::watch;

/// Octets of a RETR response gathered before a write.
const RETR_WRITE_CHUNK: usize = 64 * 1024;

/// What a POP3 connection uses, and nothing more.
pub struct Pop3Context {
    pub settings: Pop3Section,
    /// Name in the greeting.
    pub hostname: String,
    pub mail: Arc<dyn MailStore>,
    /// Read repair of view entries whose message is gone.
    pub repair: Arc<dyn Repair>,
    pub auth: Arc<Authenticator>,
    /// Shared with SMTP submission: one count of failures per address and user.
    pub throttle: Arc<LoginThrottle>,
    /// How a maildrop is numbered (`pop3.listing`).
    pub listing: Arc<dyn Pop3Listing>,
    /// Present when a certificate is configured (STLS, the implicit-TLS listener).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// The maildrop a session logged in to, as listed at login.
struct Maildrop {
    mailbox: MailboxId,
    messages: Vec<MessageId>,
}

/// One POP3 connection's protocol state beside its session.
struct Pop3Connection {
    ctx: Arc<Pop3Context>,
    peer: SocketAddr,
    user: String,
    maildrop: Option<Maildrop>,
    /// This connection in the admin's list.
    channel: Arc<Channel>,
}

/// CAPA's EXPIRE before login (RFC 2449 section 6.7): the default retention, with ` USER`
/// when some domains have their own.
fn expire_before_login(cfg: &crate::config::Pop3Section) -> String {
    let default = cfg.expire_days.map_or("NEVER".into(), |d| d.to_string());
    if cfg.expire_days_per_domain.is_empty() {
        default
    } else {
        format!("{default} USER")
    }
}

/// Serves one POP3 connection; with `implicit_tls` (the port-995 role) TLS is negotiated first.
pub async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    ctx: Arc<Pop3Context>,
    shutdown: watch::Receiver<bool>,
    implicit_tls: bool,
    channel: Arc<Channel>,
) {
    let cfg = &ctx.settings;
    // Passwords may cross in clear only inside TLS, on loopback, or when the operator says so.
    let plaintext_ok = implicit_tls
        || cfg.allow_plaintext_auth
        || (cfg.loopback_is_secure && peer.ip().is_loopback());
    let mut session = Pop3Session::new(Pop3Config {
        hostname: ctx.hostname.clone(),
        implementation: format!("Tern {}", env!("CARGO_PKG_VERSION")),
        max_line: tern_proto::line::MAX_COMMAND_LINE,
        max_auth_failures: cfg.max_auth_failures,
        max_errors: cfg.max_errors,
        plaintext_auth_allowed: plaintext_ok,
        stls_available: ctx.tls.is_some() && !implicit_tls,
        idle_timeout: Duration::from_secs(cfg.idle_timeout_secs),
        expire: expire_before_login(cfg),
    });
    let idle = Duration::from_secs(cfg.idle_timeout_secs);
    let tls = ctx.tls.clone();
    let stream: BoxStream = if implicit_tls {
        let Some(acceptor) = tls.as_ref() else {
            return;
        };
        match crate::tls::handshake(acceptor, stream, peer, idle).await {
            Some(s) => Box::new(s),
            None => return,
        }
    } else {
        Box::new(stream)
    };
    let mut connection = Pop3Connection {
        ctx,
        peer,
        user: String::new(),
        maildrop: None,
        channel: channel.clone(),
    };
    crate::driver::run(
        &mut connection,
        &mut session,
        stream,
        tls.as_ref(),
        shutdown,
        &channel,
    )
    .await;
}

impl Protocol for Pop3Connection {
    type Session = Pop3Session;
    const READ_BUFFER: usize = 4 * 1024;

    fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.ctx.settings.idle_timeout_secs)
    }

    async fn serve(
        &mut self,
        request: Pop3Request,
        session: &mut Pop3Session,
        stream: &mut BoxStream,
    ) -> Next {
        let peer = self.peer;
        let ctx = &*self.ctx;
        match request {
            Pop3Request::Authenticate { username, password } => {
                self.user = crate::names::normalize_user(&username);
                match login(ctx, peer, &username, &password).await {
                    Ok((maildrop, entries)) => {
                        tracing::info!(%peer, user = %Escaped(&self.user), messages = entries.len(), "pop3 login");
                        self.channel.logged_in(&self.user);
                        let days = ctx.settings.expire_days_of(&self.user);
                        session.set_expire(days.map_or("NEVER".into(), |d| d.to_string()));
                        self.maildrop = Some(maildrop);
                        session.login_succeeded(entries);
                    }
                    Err(f) => {
                        tracing::info!(%peer, user = %Escaped(&self.user), reason = ?f, "pop3 login failed");
                        session.login_failed(f);
                    }
                }
            }
            Pop3Request::Retrieve {
                index,
                size,
                top_lines,
            } => {
                let Some(m) = &self.maildrop else {
                    return Next::Close;
                };
                // What the session said before this answer goes first, in the same write.
                let head = session.take_output();
                let timeout = self.write_timeout();
                let mut counted = crate::io::CountingWriter::new(stream);
                let result =
                    retrieve(&mut counted, ctx, m, head, index, size, top_lines, timeout).await;
                self.channel.wrote(counted.written());
                match result {
                    Ok(o) => session.retrieve_finished(o),
                    Err(e) => {
                        // Part of the response is out already: the only honest move left is
                        // to drop the connection, so the client sees no terminator.
                        tracing::warn!(%peer, user = %Escaped(&self.user), error = %e, "pop3 retrieval aborted");
                        return Next::Close;
                    }
                }
            }
            Pop3Request::Update { deleted } => {
                let Some(m) = &self.maildrop else {
                    return Next::Close;
                };
                let ids: Vec<MessageId> = deleted
                    .iter()
                    .filter_map(|&i| m.messages.get(i).copied())
                    .collect();
                let deleting = ctx.mail.delete_messages(m.mailbox, &ids);
                match metrics()
                    .store("delete_messages", ctx.mail.backend_name(), deleting)
                    .await
                {
                    Ok(()) => {
                        tracing::info!(%peer, user = %Escaped(&self.user), deleted = ids.len(), "pop3 deletions applied");
                        session.update_finished(UpdateOutcome::Applied)
                    }
                    Err(e) => {
                        tracing::error!(%peer, user = %Escaped(&self.user), error = %e, "pop3 deletions failed");
                        session.update_finished(UpdateOutcome::Failed)
                    }
                }
            }
            Pop3Request::StartTls => return Next::StartTls,
        }
        Next::Continue
    }
}

async fn login(
    svc: &Pop3Context,
    peer: std::net::SocketAddr,
    username: &str,
    password: &str,
) -> Result<(Maildrop, Vec<MaildropEntry>), LoginFailure> {
    let name = crate::names::normalize_user(username);
    if let Some(why) = svc.throttle.refusal(peer.ip(), &name) {
        metrics().login("pop3", "throttled");
        return Err(LoginFailure::Delayed(why));
    }
    let list = |mailbox| {
        metrics().store(
            "pop3_listing",
            svc.mail.backend_name(),
            svc.listing.snapshot(mailbox),
        )
    };
    // A returning user's INBOX is known from their last login: its listing is read while the
    // password is checked (one store round trip instead of two in a row on Cassandra). It is
    // used only if the login succeeds for that same INBOX; otherwise it is dropped unseen.
    let hint = svc
        .auth
        .inbox_hint(username)
        .filter(|_| svc.listing.snapshot_only_reads());
    let (checked, prefetched) = match hint {
        Some(inbox) => {
            let (checked, listed) = tokio::join!(svc.auth.login(username, password), list(inbox));
            (checked, Some((inbox, listed)))
        }
        None => (svc.auth.login(username, password).await, None),
    };
    let mailbox = match checked {
        Ok(mb) => {
            svc.throttle.succeeded(peer.ip(), &name);
            metrics().login("pop3", "success");
            mb
        }
        Err(crate::auth::AuthError::BadCredentials) => {
            metrics().login("pop3", "failure");
            // A growing pause before the answer slows guessing on one connection; the counts
            // feed the per-address and per-user lockouts.
            let delay = svc.throttle.failed(peer.ip(), &name);
            tokio::time::sleep(delay).await;
            return Err(LoginFailure::BadCredentials);
        }
        Err(e) => {
            metrics().login("pop3", "error");
            tracing::error!(error = %e, "pop3 login could not be checked");
            return Err(LoginFailure::Temporary);
        }
    };
    let listed = match prefetched {
        Some((inbox, listed)) if inbox == mailbox => listed,
        _ => list(mailbox).await,
    }
    .map_err(|e| {
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

/// Streams message `index`, after `head` (the session's pending output).
#[allow(clippy::too_many_arguments)]
async fn retrieve<S>(
    stream: &mut S,
    svc: &Pop3Context,
    maildrop: &Maildrop,
    head: Vec<u8>,
    index: usize,
    size: u64,
    top_lines: Option<u64>,
    timeout: Duration,
) -> std::io::Result<RetrieveOutcome>
where
    S: AsyncWrite + Unpin,
{
    // Anything the session answered before (pipelined commands) leaves before this answer,
    // even when this one turns out to be an error line.
    write_timed(stream, &head, timeout).await?;
    let Some(&id) = maildrop.messages.get(index) else {
        return Ok(RetrieveOutcome::Missing);
    };
    let opening = svc.mail.open_body(maildrop.mailbox, id);
    let mut reader = match metrics()
        .store("open_body", svc.mail.backend_name(), opening)
        .await
    {
        Ok(Some(r)) => r,
        Ok(None) => {
            // Read repair: the view listed a message whose message or body is gone (a deletion
            // by another session, or a deletion that stopped half-way). Drop the entry so the
            // next session no longer lists it.
            match svc.repair.remove_view_entry(maildrop.mailbox, id).await {
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
