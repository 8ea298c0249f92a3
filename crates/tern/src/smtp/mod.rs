//! The SMTP listener's protocol: serves the requests of a sans-IO [`SmtpSession`] (recipient
//! lookups, body streaming, delivery) for the generic [`driver`](crate::driver). A message is
//! acknowledged with 250 only after `MailStore::deliver` returned, i.e. once body, metadata and
//! POP3 view entries are durable.

use crate::auth::Authenticator;
use crate::config::SmtpSection;
use crate::driver::{BoxStream, Next, Protocol};
use crate::listing::Pop3Listing;
use crate::logging::Escaped;
use crate::names;
use crate::throttle::LoginThrottle;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tern_proto::smtp::submission::SubmissionHeaders;
use tern_proto::smtp::{
    trace_headers, AuthFailure, Mailbox, RcptVerdict, SmtpConfig, SmtpRequest, SmtpSession,
    StoreOutcome, Trace,
};
use tern_store::{BodyWriter, Directory, MailStore, MailboxId};
use tokio::sync::watch;

/// What an SMTP connection uses, and nothing more.
pub struct SmtpContext {
    pub settings: SmtpSection,
    /// Name in the greeting and in Received headers.
    pub hostname: String,
    pub directory: Arc<dyn Directory>,
    pub mail: Arc<dyn MailStore>,
    /// Numbers delivered messages in UID mode.
    pub listing: Arc<dyn Pop3Listing>,
    /// Present when a certificate is configured (STARTTLS).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Password checks for AUTH on the submission listeners.
    pub auth: Arc<Authenticator>,
    /// Failed-login throttling, shared with POP3.
    pub throttle: Arc<LoginThrottle>,
}

/// Which SMTP listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpRole {
    /// Port 25: mail for local users, no AUTH.
    Inbound,
    /// Message submission (port 587): STARTTLS, AUTH required before MAIL.
    Submission,
    /// Message submission over implicit TLS (port 465).
    Submissions,
}

impl SmtpContext {
    fn session_config(&self, role: SmtpRole, peer: SocketAddr) -> SmtpConfig {
        let s = &self.settings;
        let submission = role != SmtpRole::Inbound;
        // Passwords may cross in clear only inside TLS, on loopback, or when the operator says so.
        let plaintext_auth_allowed = role == SmtpRole::Submissions
            || s.allow_plaintext_auth
            || (s.loopback_is_secure && peer.ip().to_canonical().is_loopback());
        SmtpConfig {
            hostname: self.hostname.clone(),
            max_line: tern_proto::line::MAX_COMMAND_LINE,
            max_message_size: s.max_message_size,
            max_recipients: s.max_recipients,
            max_errors: s.max_errors,
            starttls_available: self.tls.is_some() && role != SmtpRole::Submissions,
            command_timeout: Duration::from_secs(s.command_timeout_secs),
            data_timeout: Duration::from_secs(s.data_timeout_secs),
            data_deadline: Duration::from_secs(s.data_deadline_secs),
            auth_offered: submission,
            auth_required: submission,
            plaintext_auth_allowed,
        }
    }
}

/// The body being received, if any.
struct Incoming {
    writer: Option<Box<dyn BodyWriter>>,
    /// Set when a write failed: the rest of the body is read and dropped, then 451.
    failed: bool,
    /// For submitted mail: adds Date and Message-ID, removes Bcc (RFC 6409 section 8).
    headers: Option<SubmissionHeaders>,
}

impl Incoming {
    /// Writes the next part of the body (through the submission fixes, if any).
    async fn write(&mut self, data: &[u8], peer: SocketAddr) {
        let fixed;
        let data = match self.headers.as_mut() {
            Some(h) => {
                let mut out = Vec::with_capacity(data.len() + 128);
                h.push(data, &mut out);
                fixed = out;
                &fixed[..]
            }
            None => data,
        };
        self.write_raw(data, peer).await;
    }

    async fn write_raw(&mut self, data: &[u8], peer: SocketAddr) {
        if data.is_empty() {
            return;
        }
        if let Some(w) = self.writer.as_mut() {
            if let Err(e) = w.write(data).await {
                tracing::error!(%peer, error = %e, "cannot write message body");
                self.failed = true;
                if let Some(w) = self.writer.take() {
                    w.abort().await;
                }
            }
        }
    }

    /// The end of the data: writes what the submission fixes still hold.
    async fn end(&mut self, peer: SocketAddr) {
        if let Some(mut h) = self.headers.take() {
            let mut out = Vec::new();
            h.finish(&mut out);
            self.write_raw(&out, peer).await;
        }
    }
}

/// One SMTP connection's protocol state beside its session.
struct SmtpConnection {
    ctx: Arc<SmtpContext>,
    peer: SocketAddr,
    incoming: Incoming,
}

pub async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    ctx: Arc<SmtpContext>,
    shutdown: watch::Receiver<bool>,
    role: SmtpRole,
) {
    let mut session: SmtpSession<MailboxId> = SmtpSession::new(ctx.session_config(role, peer));
    let tls = ctx.tls.clone();
    let stream: BoxStream = if role == SmtpRole::Submissions {
        let Some(acceptor) = tls.as_ref() else {
            return;
        };
        let timeout = Duration::from_secs(ctx.settings.command_timeout_secs);
        match crate::tls::handshake(acceptor, stream, peer, timeout).await {
            Some(s) => {
                session.tls_established();
                Box::new(s)
            }
            None => return,
        }
    } else {
        Box::new(stream)
    };
    let mut connection = SmtpConnection {
        ctx,
        peer,
        incoming: Incoming {
            writer: None,
            failed: false,
            headers: None,
        },
    };
    crate::driver::run(
        &mut connection,
        &mut session,
        stream,
        tls.as_ref(),
        shutdown,
        peer,
    )
    .await;
}

impl Protocol for SmtpConnection {
    type Session = SmtpSession<MailboxId>;
    const READ_BUFFER: usize = 16 * 1024;

    fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.ctx.settings.command_timeout_secs)
    }

    async fn finish(&mut self) {
        if let Some(w) = self.incoming.writer.take() {
            w.abort().await;
        }
    }

    async fn serve(
        &mut self,
        request: SmtpRequest<MailboxId>,
        session: &mut SmtpSession<MailboxId>,
        _stream: &mut BoxStream,
    ) -> Next {
        let (ctx, peer, incoming) = (&*self.ctx, self.peer, &mut self.incoming);
        match request {
            SmtpRequest::CheckRecipient(mailbox) => {
                let verdict = check_recipient(ctx, &mailbox).await;
                session.rcpt_verdict(verdict);
            }
            SmtpRequest::BeginMessage {
                reverse_path,
                helo,
                esmtp,
                recipients,
                authenticated,
            } => {
                // RFC 3848's names for the Received "with" clause.
                let protocol = match (esmtp, session.is_tls(), authenticated.is_some()) {
                    (true, true, true) => "ESMTPSA",
                    (true, false, true) => "ESMTPA",
                    (true, true, false) => "ESMTPS",
                    (true, false, false) => "ESMTP",
                    (false, _, _) => "SMTP",
                };
                let ok = begin_message(
                    ctx,
                    incoming,
                    peer,
                    &reverse_path,
                    &helo,
                    protocol,
                    &recipients,
                )
                .await;
                // Submitted mail gets its header completed (and its Bcc removed) on the way.
                incoming.headers = (ok && authenticated.is_some()).then(|| {
                    let id = format!("<{}@{}>", uuid::Uuid::new_v4().simple(), ctx.hostname);
                    SubmissionHeaders::new(rfc5322_now(), id)
                });
                session.data_ready(ok);
            }
            SmtpRequest::MessageData(data) => incoming.write(&data, peer).await,
            SmtpRequest::EndMessage { recipients } => {
                incoming.end(peer).await;
                let outcome = store_message(ctx, incoming, recipients, peer).await;
                session.message_stored(outcome);
            }
            SmtpRequest::AbortMessage => {
                if let Some(w) = incoming.writer.take() {
                    w.abort().await;
                }
                incoming.failed = false;
                incoming.headers = None;
            }
            SmtpRequest::StartTls => return Next::StartTls,
            SmtpRequest::Authenticate { username, password } => {
                let outcome = authenticate(ctx, peer, &username, &password).await;
                if outcome.is_ok() {
                    tracing::info!(%peer, user = %Escaped(&names::normalize_user(&username)), "smtp auth");
                } else {
                    tracing::info!(%peer, user = %Escaped(&names::normalize_user(&username)), outcome = ?outcome, "smtp auth failed");
                }
                session.auth_finished(outcome);
            }
        }
        Next::Continue
    }
}

/// Checks AUTH credentials with the same password check, login cache and throttling as POP3.
async fn authenticate(
    ctx: &SmtpContext,
    peer: SocketAddr,
    username: &str,
    password: &str,
) -> Result<(), AuthFailure> {
    let name = names::normalize_user(username);
    if let Some(why) = ctx.throttle.refusal(peer.ip(), &name) {
        return Err(AuthFailure::Delayed(why));
    }
    match ctx.auth.login(username, password).await {
        Ok(_) => {
            ctx.throttle.succeeded(peer.ip(), &name);
            Ok(())
        }
        Err(crate::auth::AuthError::BadCredentials) => {
            let delay = ctx.throttle.failed(peer.ip(), &name);
            tokio::time::sleep(delay).await;
            Err(AuthFailure::BadCredentials)
        }
        Err(e) => {
            tracing::error!(error = %e, "smtp auth could not be checked");
            Err(AuthFailure::Temporary)
        }
    }
}

async fn check_recipient(svc: &SmtpContext, mailbox: &Mailbox) -> RcptVerdict<MailboxId> {
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
async fn postmaster(svc: &SmtpContext) -> RcptVerdict<MailboxId> {
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
    svc: &SmtpContext,
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
        hostname: &svc.hostname,
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
    svc: &SmtpContext,
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
