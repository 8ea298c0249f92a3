//! The SMTP listener's protocol: serves the requests of a sans-IO [`SmtpSession`] (recipient
//! lookups, body streaming, delivery) for the generic [`driver`](crate::driver). A message is
//! acknowledged with 250 only once it is durable: for local recipients after
//! `MailStore::deliver` returned (body, metadata and POP3 view entries), for remote ones (mail
//! submitted by an authenticated user or a relay network) after `OutboundQueue::enqueue`.

pub mod inbound_auth;

use crate::auth::Authenticator;
use crate::config::SmtpSection;
use crate::driver::{BoxStream, Next, Protocol};
use crate::listing::Pop3Listing;
use crate::logging::Escaped;
use crate::metrics::metrics;
use crate::names;
use crate::outbound::dkim::{DkimKeys, SigningStream};
use crate::quota;
use crate::throttle::LoginThrottle;
use inbound_auth::{Identity, InboundAuth};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tern_proto::smtp::dsn::{DsnMail, DsnRcpt};
use tern_proto::smtp::header::HeaderCapture;
use tern_proto::smtp::submission::HeaderFixes;
use tern_proto::smtp::{
    delivery_headers, trace_headers, AuthFailure, Mailbox, RcptVerdict, SenderVerdict, SmtpConfig,
    SmtpRequest, SmtpSession, StoreOutcome, Trace,
};
use tern_store::{
    BodyWriter, Directory, MailStore, MailboxId, MessageCopy, NewQueuedMail, OutboundQueue,
    QueuedRecipient, RecipientRewrites, StagedBody,
};
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
    /// Where mail for other domains goes.
    pub queue: Arc<dyn OutboundQueue>,
    /// DKIM keys of the sender domains whose outgoing mail is signed.
    pub dkim: &'static DkimKeys,
    /// Aliases, forwards, groups and domain aliases, applied at RCPT.
    pub rewrites: Arc<dyn RecipientRewrites>,
    /// Quota limits and usage, checked at RCPT and at the end of DATA.
    pub quotas: Arc<dyn tern_store::Quotas>,
    /// Sender rewriting for forwarded mail, when `outbound.srs_secret` is set.
    pub srs: Option<crate::srs::Srs>,
    /// SPF, DKIM, ARC and DMARC checks of port-25 mail, when `inbound_auth.enabled` is set.
    pub inbound_auth: Option<Arc<InboundAuth>>,
    /// Where copies that cannot be delivered are kept.
    pub repositories: Arc<dyn tern_store::MailRepositories>,
}

/// The sender checks of a message being received.
struct Checking {
    identity: Identity,
    spf: tokio::task::JoinHandle<mail_auth::SpfOutput>,
    /// The message so far, while it fits `inbound_auth.max_verified_size`.
    held: Option<Vec<u8>>,
    limit: u64,
}

/// Where an accepted recipient's copy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// A local user's mailbox.
    Local {
        inbox: MailboxId,
        /// The user's address, for its copy's Delivered-To.
        user: String,
    },
    /// Another domain: through the outbound queue.
    Remote(String),
    /// A rewriting target that cannot get its copy (no such user, mailbox full): its copy is
    /// kept in a mail repository once the others are stored.
    Kept(KeptCopy),
}

/// Why a rewriting target's copy goes to a repository instead of a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptCopy {
    pub target: String,
    pub repository: &'static str,
    /// James's mail state for the repository entry.
    pub state: &'static str,
    pub error: String,
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
    /// LMTP (RFC 2033), for final delivery behind another MTA: one reply per recipient.
    Lmtp,
}

impl SmtpContext {
    fn session_config(&self, role: SmtpRole, peer: SocketAddr) -> SmtpConfig {
        let s = &self.settings;
        let submission = matches!(role, SmtpRole::Submission | SmtpRole::Submissions);
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
            lmtp: role == SmtpRole::Lmtp,
        }
    }
}

/// The body being received, if any.
struct Incoming {
    /// The copy for local mailboxes.
    writer: Option<Box<dyn BodyWriter>>,
    /// The copy for the outbound queue (a separate body: its life follows the queue entry).
    queued: Option<Box<dyn BodyWriter>>,
    /// The copy for a mail repository, when a target is already known to need one (a group
    /// member without a user): written as the message arrives, so it never depends on
    /// another copy still being there.
    kept: Option<Box<dyn BodyWriter>>,
    /// The envelope sender, for the queue.
    reverse_path: String,
    /// DSN parameters (RFC 3461) of the transaction and of each remote recipient.
    dsn: DsnMail,
    remote_dsn: Vec<(String, DsnRcpt)>,
    /// Signs the queued copy as it arrives, when the sender's domain has a DKIM key.
    signing: Option<SigningStream>,
    /// The quota of each local recipient that has one (checked again once the size is known).
    quota_limits: HashMap<MailboxId, quota::Effective>,
    /// The sender is neither authenticated nor a relay network: its remote recipients come from
    /// forwards and groups, and the queued copy leaves with an SRS sender.
    forwarded: bool,
    /// Set when a write failed: the rest of the body is read and dropped, then 451.
    failed: bool,
    /// For submitted mail: adds Date and Message-ID, removes Bcc (RFC 6409 section 8).
    /// On port 25 with sender checks: removes Authentication-Results claiming to be ours.
    headers: Option<HeaderFixes>,
    /// The client's HELO name, for repository entries.
    helo: String,
    /// The address of each accepted RCPT, in order (its copies' targets come at the end).
    rcpt_addresses: Vec<String>,
    /// The message's header as it went by, for the loop check.
    header: HeaderCapture,
    /// Sender checks under way (port 25, `inbound_auth.enabled`).
    checking: Option<Checking>,
    /// Their Authentication-Results header, for each local copy.
    auth_results: Option<String>,
}

impl Incoming {
    fn new() -> Self {
        Self {
            writer: None,
            queued: None,
            kept: None,
            reverse_path: String::new(),
            dsn: DsnMail::default(),
            remote_dsn: Vec::new(),
            signing: None,
            forwarded: false,
            quota_limits: HashMap::new(),
            failed: false,
            headers: None,
            helo: String::new(),
            rcpt_addresses: Vec::new(),
            header: HeaderCapture::default(),
            checking: None,
            auth_results: None,
        }
    }

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
        if let Some(s) = self.signing.as_mut() {
            s.write(data);
        }
        self.header.push(data);
        if let Some(c) = self.checking.as_mut() {
            let fits = c
                .held
                .as_ref()
                .is_some_and(|h| (h.len() + data.len()) as u64 <= c.limit);
            match c.held.as_mut() {
                Some(h) if fits => h.extend_from_slice(data),
                // Too large to hold: checked on its header alone.
                _ => c.held = None,
            }
        }
        for slot in [&mut self.writer, &mut self.queued, &mut self.kept] {
            if let Some(w) = slot.as_mut() {
                if let Err(e) = w.write(data).await {
                    tracing::error!(%peer, error = %e, "cannot write message body");
                    self.failed = true;
                }
            }
        }
        if self.failed {
            self.abort().await;
        }
    }

    async fn abort(&mut self) {
        self.signing = None;
        if let Some(c) = self.checking.take() {
            c.spf.abort();
        }
        for w in [self.writer.take(), self.queued.take(), self.kept.take()]
            .into_iter()
            .flatten()
        {
            w.abort().await;
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
    /// The client may send to other domains without AUTH (`smtp.relay_networks`).
    relay_network: bool,
    role: SmtpRole,
    /// This connection in the admin's list.
    channel: Arc<crate::channels::Channel>,
}

pub async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    ctx: Arc<SmtpContext>,
    shutdown: watch::Receiver<bool>,
    role: SmtpRole,
    channel: Arc<crate::channels::Channel>,
) {
    let mut session: SmtpSession<Vec<Recipient>> = SmtpSession::new(ctx.session_config(role, peer));
    let ip = peer.ip().to_canonical();
    let relay_network = ctx.settings.relay_networks.iter().any(|n| n.contains(&ip));
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
        incoming: Incoming::new(),
        relay_network: relay_network && role != SmtpRole::Lmtp,
        role,
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

impl Protocol for SmtpConnection {
    type Session = SmtpSession<Vec<Recipient>>;
    const READ_BUFFER: usize = 16 * 1024;

    fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.ctx.settings.command_timeout_secs)
    }

    async fn finish(&mut self, session: &mut SmtpSession<Vec<Recipient>>) {
        self.incoming.abort().await;
        crate::metrics::metrics().smtp_replies(&session.take_reply_counts());
    }

    async fn serve(
        &mut self,
        request: SmtpRequest<Vec<Recipient>>,
        session: &mut SmtpSession<Vec<Recipient>>,
        _stream: &mut BoxStream,
    ) -> Next {
        let (ctx, peer, incoming) = (&*self.ctx, self.peer, &mut self.incoming);
        metrics().smtp_replies(&session.take_reply_counts());
        match request {
            SmtpRequest::CheckRecipient(mailbox) => {
                // Authenticated users and relay networks may send anywhere.
                let may_relay = self.relay_network || session.authenticated_user().is_some();
                let verdict =
                    check_recipient(ctx, &mailbox, may_relay, &mut incoming.quota_limits).await;
                session.rcpt_verdict(verdict);
            }
            SmtpRequest::BeginMessage {
                reverse_path,
                helo,
                esmtp,
                recipients,
                targets,
                dsn,
                recipient_dsn,
                authenticated,
            } => {
                incoming.dsn = dsn;
                incoming.rcpt_addresses = recipients.iter().map(|r| r.to_string()).collect();
                incoming.helo = helo.clone();
                incoming.header = HeaderCapture::default();
                incoming.auth_results = None;
                incoming.checking = match &ctx.inbound_auth {
                    Some(checker)
                        if self.role == SmtpRole::Inbound
                            && authenticated.is_none()
                            && !self.relay_network =>
                    {
                        let identity = Identity {
                            ip: peer.ip().to_canonical(),
                            helo: helo.clone(),
                            sender: reverse_path.clone(),
                        };
                        Some(Checking {
                            spf: checker.start_spf(identity.clone()),
                            identity,
                            held: Some(Vec::new()),
                            limit: checker.max_verified_size(),
                        })
                    }
                    _ => None,
                };
                incoming.forwarded = authenticated.is_none() && !self.relay_network;
                incoming.remote_dsn = targets
                    .iter()
                    .zip(recipient_dsn)
                    .flat_map(|(t, d)| {
                        t.iter().filter_map(move |r| match r {
                            Recipient::Remote(a) => Some((a.clone(), d.clone())),
                            Recipient::Local { .. } | Recipient::Kept(_) => None,
                        })
                    })
                    .collect();
                let targets: Vec<Recipient> = targets.into_iter().flatten().collect();
                // RFC 3848's names for the Received "with" clause.
                let protocol = match (esmtp, session.is_tls(), authenticated.is_some()) {
                    _ if self.role == SmtpRole::Lmtp => "LMTP",
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
                    &Envelope {
                        reverse_path: &reverse_path,
                        helo: &helo,
                        protocol,
                        recipients: &recipients,
                        targets: &targets,
                    },
                )
                .await;
                // Submitted mail gets its header completed (and its Bcc removed) on the way;
                // checked mail loses the results a sender forged in our name.
                incoming.headers = if !ok {
                    None
                } else if authenticated.is_some() {
                    let id = format!("<{}@{}>", uuid::Uuid::new_v4().simple(), ctx.hostname);
                    Some(HeaderFixes::submission(rfc5322_now(), id))
                } else if incoming.checking.is_some() {
                    Some(HeaderFixes::inbound(ctx.hostname.clone()))
                } else {
                    None
                };
                session.data_ready(ok);
            }
            SmtpRequest::MessageData(data) => incoming.write(&data, peer).await,
            SmtpRequest::EndMessage { recipients } => {
                incoming.end(peer).await;
                let lmtp = self.role == SmtpRole::Lmtp;
                let outcomes = match check_sender(ctx, incoming, peer).await {
                    Some(refusal) => {
                        incoming.abort().await;
                        vec![refusal; recipients.len().max(1)]
                    }
                    None => store_message(ctx, incoming, recipients, peer, lmtp).await,
                };
                count_refusals(&outcomes);
                incoming.quota_limits.clear();
                if lmtp {
                    session.message_stored_each(outcomes);
                } else {
                    session.message_stored(one_outcome(outcomes));
                }
            }
            SmtpRequest::AbortMessage => {
                incoming.abort().await;
                incoming.quota_limits.clear();
                incoming.failed = false;
                incoming.headers = None;
            }
            SmtpRequest::CheckSender { user, sender } => {
                let verdict = sender_owned(ctx, &user, &sender).await;
                if verdict == SenderVerdict::NotOwned {
                    tracing::info!(%peer, user = %Escaped(&user), sender = %Escaped(&sender), "sender address not owned");
                }
                session.sender_verdict(verdict);
            }
            SmtpRequest::StartTls => return Next::StartTls,
            SmtpRequest::Authenticate { username, password } => {
                let outcome = authenticate(ctx, peer, &username, &password).await;
                if outcome.is_ok() {
                    let user = names::normalize_user(&username);
                    self.channel.logged_in(&user);
                    tracing::info!(%peer, user = %Escaped(&user), "smtp auth");
                } else {
                    tracing::info!(%peer, user = %Escaped(&names::normalize_user(&username)), outcome = ?outcome, "smtp auth failed");
                }
                session.auth_finished(outcome);
            }
        }
        Next::Continue
    }
}

/// Whether `user` may send as `sender`: an alias of the user (James's allowed From
/// addresses: the aliases that rewrite to the user). One read of the sender's mappings.
async fn sender_owned(ctx: &SmtpContext, user: &str, sender: &str) -> SenderVerdict {
    if sender.is_empty() {
        return SenderVerdict::NotOwned;
    }
    match ctx.rewrites.mappings(&sender.to_ascii_lowercase()).await {
        Ok(mappings) => {
            let owned = mappings.iter().any(|m| {
                m.kind == tern_store::MappingKind::Alias && m.target.eq_ignore_ascii_case(user)
            });
            if owned {
                SenderVerdict::Owned
            } else {
                SenderVerdict::NotOwned
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "sender ownership lookup failed");
            SenderVerdict::Temporary
        }
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
        metrics().login("smtp", "throttled");
        return Err(AuthFailure::Delayed(why));
    }
    match ctx.auth.login(username, password).await {
        Ok(_) => {
            ctx.throttle.succeeded(peer.ip(), &name);
            metrics().login("smtp", "success");
            Ok(())
        }
        Err(crate::auth::AuthError::BadCredentials) => {
            metrics().login("smtp", "failure");
            let delay = ctx.throttle.failed(peer.ip(), &name);
            tokio::time::sleep(delay).await;
            Err(AuthFailure::BadCredentials)
        }
        Err(e) => {
            metrics().login("smtp", "error");
            tracing::error!(error = %e, "smtp auth could not be checked");
            Err(AuthFailure::Temporary)
        }
    }
}

async fn check_recipient(
    svc: &SmtpContext,
    mailbox: &Mailbox,
    may_relay: bool,
    limits: &mut HashMap<MailboxId, quota::Effective>,
) -> RcptVerdict<Vec<Recipient>> {
    if mailbox.is_bare_postmaster() {
        return postmaster(svc).await;
    }
    let address = mailbox.to_string();
    // A bounce to an SRS address of ours goes back to the original sender.
    if let Some(srs) = &svc.srs {
        let srs_local = mailbox.local.len() > 5
            && mailbox.local.is_char_boundary(5)
            && mailbox.local[..5].eq_ignore_ascii_case("SRS0=");
        if srs_local && srs.is_srs_domain(&mailbox.domain) {
            return match srs.reverse(&address) {
                Some(original) => RcptVerdict::Accept(vec![Recipient::Remote(original)]),
                None => {
                    tracing::info!(recipient = %Escaped(&address), "SRS address not genuine or too old");
                    RcptVerdict::UnknownUser
                }
            };
        }
    }
    // What the address rewrites to, and what is known of the address itself in case it
    // rewrites to nothing (the common case), are read at the same time.
    let (expanded, facts) = tokio::join!(
        crate::rewrite::expand(&*svc.rewrites, &address),
        address_facts(svc, mailbox)
    );
    let targets = match expanded {
        Ok(t) => t,
        Err(crate::rewrite::RewriteError::Loop(at)) => {
            tracing::warn!(recipient = %Escaped(&address), at = %Escaped(&at), "recipient rewriting loops");
            return RcptVerdict::RewriteLoop;
        }
        Err(crate::rewrite::RewriteError::Store(e)) => {
            tracing::error!(error = %e, "recipient rewriting lookup failed");
            return RcptVerdict::Temporary;
        }
    };
    if targets.len() != 1 || !targets[0].eq_ignore_ascii_case(&address) {
        return rewritten_recipients(svc, &address, targets, limits).await;
    }
    match judge_address(svc, mailbox, facts, may_relay, limits).await {
        RcptVerdict::Accept(r) => RcptVerdict::Accept(vec![r]),
        RcptVerdict::UnknownUser => RcptVerdict::UnknownUser,
        RcptVerdict::RelayDenied => RcptVerdict::RelayDenied,
        RcptVerdict::RewriteLoop => RcptVerdict::RewriteLoop,
        RcptVerdict::MailboxFull => RcptVerdict::MailboxFull,
        RcptVerdict::Temporary => RcptVerdict::Temporary,
    }
}

/// The targets of a rewritten address: local users get their copy, other domains go through
/// the queue (a forward is the local user's own choice, so no relay permission is needed),
/// and a target without a user or with a full mailbox has its copy kept in a repository.
/// With no target that can take a copy, the address is unknown.
async fn rewritten_recipients(
    svc: &SmtpContext,
    address: &str,
    targets: Vec<String>,
    limits: &mut HashMap<MailboxId, quota::Effective>,
) -> RcptVerdict<Vec<Recipient>> {
    let mut out = Vec::new();
    for target in targets {
        let Ok((Some(m), _)) = tern_proto::smtp::parse_path(&format!("<{target}>")) else {
            tracing::warn!(recipient = %Escaped(address), target = %Escaped(&target), "rewriting target is not an address; skipped");
            continue;
        };
        let (repository, state, why) = match check_address(svc, &m, true, limits).await {
            RcptVerdict::Accept(r) => {
                out.push(r);
                continue;
            }
            RcptVerdict::Temporary => return RcptVerdict::Temporary,
            RcptVerdict::MailboxFull => {
                (crate::repository::ERROR, "error", "whose mailbox is full")
            }
            _ => (
                crate::repository::ADDRESS_ERROR,
                "address-error",
                "which has no user",
            ),
        };
        tracing::warn!(recipient = %Escaped(address), target = %Escaped(&target), why, "rewriting target cannot take its copy; it will be kept in {repository}");
        out.push(Recipient::Kept(KeptCopy {
            error: format!("{address} is rewritten to {target}, {why}"),
            target,
            repository,
            state,
        }));
    }
    if out.iter().all(|r| matches!(r, Recipient::Kept(_))) {
        RcptVerdict::UnknownUser
    } else {
        RcptVerdict::Accept(out)
    }
}

/// What is known of an address before it is judged: whether its domain is served, its user
/// and the quota limits that would apply to it. All are read at once (on Cassandra one round
/// trip, not three in a row); the user and quota reads are wasted only when the domain is not
/// served (relayed mail) or there is no such user.
struct AddressFacts {
    domain_served: tern_store::Result<bool>,
    user: tern_store::Result<Option<tern_store::UserRecord>>,
    quota_limits: tern_store::Result<quota::Scopes>,
}

async fn address_facts(svc: &SmtpContext, mailbox: &Mailbox) -> AddressFacts {
    let name = mailbox.user_name();
    let (domain_served, user, quota_limits) = tokio::join!(
        svc.directory.domain_exists(&mailbox.domain),
        metrics().store(
            "get_user",
            svc.mail.backend_name(),
            svc.directory.get_user(&name)
        ),
        quota::Scopes::read(&*svc.quotas, &name),
    );
    AddressFacts {
        domain_served,
        user,
        quota_limits,
    }
}

/// An address after rewriting: a local user, another domain (if the client may relay), or a
/// refusal.
async fn check_address(
    svc: &SmtpContext,
    mailbox: &Mailbox,
    may_relay: bool,
    limits: &mut HashMap<MailboxId, quota::Effective>,
) -> RcptVerdict<Recipient> {
    let facts = address_facts(svc, mailbox).await;
    judge_address(svc, mailbox, facts, may_relay, limits).await
}

async fn judge_address(
    svc: &SmtpContext,
    mailbox: &Mailbox,
    facts: AddressFacts,
    may_relay: bool,
    limits: &mut HashMap<MailboxId, quota::Effective>,
) -> RcptVerdict<Recipient> {
    match facts.domain_served {
        Ok(true) => {}
        Ok(false) if may_relay => {
            return RcptVerdict::Accept(Recipient::Remote(mailbox.to_string()))
        }
        Ok(false) => return RcptVerdict::RelayDenied,
        Err(e) => {
            tracing::error!(error = %e, "recipient domain lookup failed");
            return RcptVerdict::Temporary;
        }
    }
    let user = match facts.user {
        Ok(Some(user)) => user,
        Ok(None) => return RcptVerdict::UnknownUser,
        Err(e) => {
            tracing::error!(error = %e, "recipient lookup failed");
            return RcptVerdict::Temporary;
        }
    };
    let checked = match facts.quota_limits {
        Ok(scopes) => quota::check_scopes(&*svc.quotas, scopes, user.inbox).await,
        Err(e) => Err(e),
    };
    match checked {
        Ok((effective, usage)) if effective.is_full(usage) => {
            tracing::info!(user = %Escaped(&user.name), "mailbox full");
            RcptVerdict::MailboxFull
        }
        Ok((effective, _)) => {
            if !effective.is_unlimited() {
                limits.insert(user.inbox, effective);
            }
            RcptVerdict::Accept(Recipient::Local {
                inbox: user.inbox,
                user: user.name,
            })
        }
        Err(e) => {
            tracing::error!(error = %e, "quota lookup failed");
            RcptVerdict::Temporary
        }
    }
}

/// `RCPT TO:<postmaster>` (no domain) goes to the `postmaster@` user of the served domains, the
/// first in alphabetical order that has one.
async fn postmaster(svc: &SmtpContext) -> RcptVerdict<Vec<Recipient>> {
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
            Ok(Some(user)) => {
                return RcptVerdict::Accept(vec![Recipient::Local {
                    inbox: user.inbox,
                    user: user.name,
                }])
            }
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

/// What `begin_message` needs to know of the transaction.
struct Envelope<'a> {
    reverse_path: &'a str,
    helo: &'a str,
    protocol: &'a str,
    recipients: &'a [Mailbox],
    targets: &'a [Recipient],
}

async fn begin_message(
    svc: &SmtpContext,
    incoming: &mut Incoming,
    peer: std::net::SocketAddr,
    envelope: &Envelope<'_>,
) -> bool {
    incoming.failed = false;
    incoming.reverse_path = envelope.reverse_path.to_string();
    let single = (envelope.recipients.len() == 1).then(|| envelope.recipients[0].to_string());
    let id = format!("{:016x}", rand::random::<u64>());
    let headers = trace_headers(&Trace {
        helo: envelope.helo,
        peer_ip: &peer.ip().to_string(),
        hostname: &svc.hostname,
        protocol: envelope.protocol,
        id: &id,
        single_recipient: single.as_deref(),
        date: &rfc5322_now(),
    });
    if !open_writers(svc, incoming, envelope.targets, peer).await {
        return false;
    }
    incoming.write_raw(headers.as_bytes(), peer).await;
    !incoming.failed
}

/// Starts a body for the local copies and one for the queued copy, as the targets need (the
/// queued one DKIM-signed as it arrives when the sender's domain has a key).
async fn open_writers(
    svc: &SmtpContext,
    incoming: &mut Incoming,
    targets: &[Recipient],
    peer: SocketAddr,
) -> bool {
    let local = targets.iter().any(|t| matches!(t, Recipient::Local { .. }));
    let remote = targets.iter().any(|t| matches!(t, Recipient::Remote(_)));
    let kept = targets.iter().any(|t| matches!(t, Recipient::Kept(_)));
    for (wanted, which) in [(local, 0), (remote, 1), (kept, 2)] {
        if !wanted {
            continue;
        }
        match svc.mail.begin_body().await {
            Ok(w) => match which {
                0 => incoming.writer = Some(w),
                1 => incoming.queued = Some(w),
                _ => incoming.kept = Some(w),
            },
            Err(e) => {
                tracing::error!(%peer, error = %e, "cannot start a message body");
                incoming.abort().await;
                return false;
            }
        }
    }
    if remote {
        let domain = incoming.reverse_path.rsplit_once('@').map(|(_, d)| d);
        incoming.signing = domain.and_then(|d| svc.dkim.start(d));
    }
    true
}

/// Delivers a kept message again, outside any SMTP session (a mail repository's
/// reprocessing, once an operator fixed what stopped it): each recipient resolved as at RCPT
/// (rewriting, quotas, other domains through the queue), the copies stored as after DATA.
/// Returns the recipients that still cannot get it, with why; the others got their copy.
pub async fn redeliver(
    svc: &SmtpContext,
    sender: &str,
    recipients: &[String],
    mut body: Box<dyn tern_store::BodyReader>,
) -> Vec<(String, String)> {
    // No client: logs name the unspecified address.
    let peer = SocketAddr::from(([0, 0, 0, 0], 0));
    let mut incoming = Incoming::new();
    incoming.reverse_path = sender.to_string();
    incoming.helo = "reprocessing".into();
    // Kept mail came from elsewhere, as a rule: what leaves again does so with an SRS sender.
    incoming.forwarded = true;
    let mut groups = Vec::new();
    let mut refused = Vec::new();
    for address in recipients {
        let Ok((Some(mailbox), _)) = tern_proto::smtp::parse_path(&format!("<{address}>")) else {
            refused.push((address.clone(), "not an address".into()));
            continue;
        };
        let why = match check_recipient(svc, &mailbox, true, &mut incoming.quota_limits).await {
            RcptVerdict::Accept(targets) => {
                groups.push(targets);
                incoming.rcpt_addresses.push(address.clone());
                continue;
            }
            RcptVerdict::MailboxFull => "mailbox full",
            RcptVerdict::RewriteLoop => "recipient rewriting loops",
            RcptVerdict::Temporary => "temporary failure",
            RcptVerdict::UnknownUser | RcptVerdict::RelayDenied => "no such user",
        };
        refused.push((address.clone(), why.into()));
    }
    if groups.is_empty() {
        return refused;
    }
    let accepted = incoming.rcpt_addresses.clone();
    let all_failed = |why: String| {
        let accepted = accepted.iter().map(|a| (a.clone(), why.clone()));
        refused.iter().cloned().chain(accepted).collect::<Vec<_>>()
    };
    let targets: Vec<Recipient> = groups.iter().flatten().cloned().collect();
    if !open_writers(svc, &mut incoming, &targets, peer).await {
        return all_failed("cannot start a message body".into());
    }
    loop {
        match body.next_chunk().await {
            Ok(Some(chunk)) => incoming.write_raw(&chunk, peer).await,
            Ok(None) => break,
            Err(e) => {
                incoming.abort().await;
                return all_failed(format!("reading the kept message: {e}"));
            }
        }
    }
    // The operator asked for it: a Delivered-To of an earlier pass is not a loop now.
    incoming.header = HeaderCapture::default();
    let outcomes = store_message(svc, &mut incoming, groups, peer, true).await;
    for (address, outcome) in accepted.into_iter().zip(outcomes) {
        if !matches!(outcome, StoreOutcome::Stored { .. }) {
            refused.push((address, format!("{outcome:?}")));
        }
    }
    refused
}

/// Counts the refusals among a message's outcomes (what was stored is counted where it is).
fn count_refusals(outcomes: &[StoreOutcome]) {
    for outcome in outcomes {
        let kind = match outcome {
            StoreOutcome::Stored { .. } => continue,
            StoreOutcome::Failed => "failed",
            StoreOutcome::QuotaExceeded => "quota",
            StoreOutcome::Loop => "loop",
            StoreOutcome::DmarcReject { .. } => "dmarc",
        };
        metrics().message(kind);
    }
}

/// Ends the sender checks of the message, if any: keeps their Authentication-Results for the
/// local copies, or returns the refusal of a DMARC `p=reject` failure.
async fn check_sender(
    ctx: &SmtpContext,
    incoming: &mut Incoming,
    peer: SocketAddr,
) -> Option<StoreOutcome> {
    let (checker, checking) = (ctx.inbound_auth.as_ref()?, incoming.checking.take()?);
    let spf = match checking.spf.await {
        Ok(spf) => spf,
        Err(e) => {
            tracing::error!(%peer, error = %e, "SPF check did not finish; no Authentication-Results");
            return None;
        }
    };
    let verdict = checker
        .verdict(
            &checking.identity,
            spf,
            checking.held.as_deref(),
            incoming.header.bytes(),
        )
        .await;
    if let Some(domain) = verdict.reject_for {
        let domain: String = domain
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
            .collect();
        tracing::info!(%peer, domain = %domain, "message refused: DMARC policy reject");
        return Some(StoreOutcome::DmarcReject { domain });
    }
    incoming.auth_results = Some(verdict.header);
    None
}

/// The one reply of SMTP from the outcome of each RCPT: stored if any copy was, else the
/// first refusal (a storage failure before any, so that the client retries).
fn one_outcome(outcomes: Vec<StoreOutcome>) -> StoreOutcome {
    if let Some(stored) = outcomes
        .iter()
        .find(|o| matches!(o, StoreOutcome::Stored { .. }))
    {
        return stored.clone();
    }
    if outcomes.contains(&StoreOutcome::Failed) {
        return StoreOutcome::Failed;
    }
    outcomes.into_iter().next().unwrap_or(StoreOutcome::Failed)
}

/// Makes the message durable for its recipients and says, for each accepted RCPT in order
/// (`groups`: the targets each one resolved to), what became of it.
///
/// Refused before anything is stored: a RCPT whose address (or one of whose users) the message
/// names in a `Delivered-To` field, as a forward sent it round (554 5.4.6); and a local
/// recipient the message would take over its quota, which refuses the whole message (SMTP) or,
/// with `per_recipient` (LMTP), that RCPT alone.
async fn store_message(
    svc: &SmtpContext,
    incoming: &mut Incoming,
    groups: Vec<Vec<Recipient>>,
    peer: std::net::SocketAddr,
    per_recipient: bool,
) -> Vec<StoreOutcome> {
    let n = groups.len().max(1);
    if incoming.failed {
        incoming.abort().await;
        return vec![StoreOutcome::Failed; n];
    }
    let delivered: std::collections::HashSet<String> =
        incoming.header.delivered_to().into_iter().collect();
    let mut outcomes: Vec<Option<StoreOutcome>> = vec![None; groups.len()];
    for (i, group) in groups.iter().enumerate() {
        let address = incoming
            .rcpt_addresses
            .get(i)
            .map(|a| a.to_ascii_lowercase())
            .unwrap_or_default();
        let seen = delivered.contains(&address)
            || group
                .iter()
                .any(|r| matches!(r, Recipient::Local { user, .. } if delivered.contains(user)));
        if seen {
            tracing::warn!(%peer, recipient = %Escaped(&address), "mail loop: the message was delivered to this recipient before");
            outcomes[i] = Some(StoreOutcome::Loop);
        }
    }
    if outcomes.iter().all(Option::is_some) {
        incoming.abort().await;
        return outcomes.into_iter().flatten().collect();
    }
    let (writer, queued) = (incoming.writer.take(), incoming.queued.take());
    let kept_writer = incoming.kept.take();
    let staged_local = match finish_body(writer, peer).await {
        Ok(s) => s,
        Err(()) => {
            for w in [queued, kept_writer].into_iter().flatten() {
                w.abort().await;
            }
            return vec![StoreOutcome::Failed; n];
        }
    };
    let Ok(staged_queued) = finish_body(queued, peer).await else {
        if let Some(w) = kept_writer {
            w.abort().await;
        }
        return vec![StoreOutcome::Failed; n];
    };
    // A kept copy that cannot be made durable falls back to reading a stored copy back.
    let staged_kept = finish_body(kept_writer, peer).await.ok().flatten();
    // With its size known, the message must fit every local recipient's quota (checked
    // before anything is stored: a refusal leaves nothing behind).
    let mut over = std::collections::HashSet::new();
    if let Some(staged) = &staged_local {
        for (inbox, limits) in &incoming.quota_limits {
            match svc.quotas.quota_usage(*inbox).await {
                Ok(usage) if !limits.fits(usage, staged.size) => {
                    tracing::info!(%peer, mailbox = %inbox, size = staged.size, "message refused: over quota");
                    over.insert(*inbox);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(%peer, error = %e, "quota lookup failed");
                    return vec![StoreOutcome::Failed; n];
                }
            }
        }
    }
    for (i, group) in groups.iter().enumerate() {
        let full = group
            .iter()
            .any(|r| matches!(r, Recipient::Local { inbox, .. } if over.contains(inbox)));
        if full && outcomes[i].is_none() {
            if !per_recipient {
                return vec![StoreOutcome::QuotaExceeded; n];
            }
            outcomes[i] = Some(StoreOutcome::QuotaExceeded);
        }
    }
    // What is left to store: each mailbox once (aliases, case variants), each address once.
    let mut local: Vec<MessageCopy> = Vec::new();
    let mut remote: Vec<String> = Vec::new();
    let mut forwarders: Vec<String> = Vec::new();
    let mut kept: Vec<KeptCopy> = Vec::new();
    for (i, group) in groups.into_iter().enumerate() {
        let address = incoming.rcpt_addresses.get(i).cloned().unwrap_or_default();
        if outcomes[i] == Some(StoreOutcome::Loop) && !per_recipient {
            // SMTP has one reply for all: this recipient's copy is kept, the others stored.
            kept.push(KeptCopy {
                error: format!("Mail loop detected: the message was delivered to {address} before (Delivered-To)"),
                target: address.clone(),
                repository: crate::repository::ERROR,
                state: "error",
            });
        }
        if outcomes[i].is_some() {
            continue;
        }
        for r in group {
            match r {
                Recipient::Kept(k) => kept.push(k),
                Recipient::Local { inbox, user } => {
                    if !local.iter().any(|c| c.mailbox == inbox) {
                        local.push(MessageCopy::with_header(
                            inbox,
                            [
                                delivery_headers(&incoming.reverse_path, &user).as_bytes(),
                                incoming.auth_results.as_deref().unwrap_or("").as_bytes(),
                            ]
                            .concat(),
                        ));
                    }
                }
                Recipient::Remote(a) => {
                    // A copy forwarded elsewhere says where it was delivered, so that it is
                    // known again if a forward sends it back here.
                    if !a.eq_ignore_ascii_case(&address)
                        && !forwarders.iter().any(|f| f.eq_ignore_ascii_case(&address))
                    {
                        forwarders.push(address.to_ascii_lowercase());
                    }
                    if !remote.iter().any(|r| r.eq_ignore_ascii_case(&a)) {
                        remote.push(a);
                    }
                }
            }
        }
    }
    let (outcome, source) = store_copies(
        svc,
        incoming,
        staged_local,
        staged_queued,
        Copies {
            local,
            remote,
            forwarders,
        },
        peer,
    )
    .await;
    if !kept.is_empty() && matches!(outcome, StoreOutcome::Stored { .. }) {
        let (sender, helo) = (incoming.reverse_path.clone(), incoming.helo.clone());
        let source = match staged_kept {
            Some(staged) => Some(KeepSource::Staged(staged)),
            None => source,
        };
        if let Some(source) = source {
            keep_copies(svc, (&sender, &helo), source, kept, peer).await;
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| outcome.clone()))
        .collect()
}

/// The copies a message is stored as.
struct Copies {
    /// One per local mailbox, with its own header.
    local: Vec<MessageCopy>,
    /// The remote recipients of the queued copy.
    remote: Vec<String>,
    /// The addresses whose forwards produced remote recipients (their Delivered-To).
    forwarders: Vec<String>,
}

/// Where a repository's copy comes from.
enum KeepSource {
    /// Its own body, written while the message arrived: the first kept copy takes it, the
    /// others are read back from that first one (the repository's own, so always there).
    Staged(StagedBody),
    /// Read back from a stored copy.
    Repository(tern_store::RepositoryMail),
    /// A local copy: its own header (`skip` octets) is left out.
    Local {
        mailbox: MailboxId,
        id: tern_store::MessageId,
        skip: usize,
    },
    Queued(tern_store::QueuedMail),
}

/// Keeps a copy of the stored message in a repository for each of `kept`. A target known to
/// need one at RCPT (no such user, mailbox full) had its own body written during DATA; a loop
/// seen only in the header is read back from a stored copy, and should that copy be gone
/// already (its owner deleted it, or its remote delivery finished, within moments), the kept
/// copy is lost, which is logged: the looping recipient had the message before.
async fn keep_copies(
    svc: &SmtpContext,
    (sender, helo): (&str, &str),
    source: KeepSource,
    kept: Vec<KeptCopy>,
    peer: SocketAddr,
) {
    let (mut staged, mut source) = match source {
        KeepSource::Staged(s) => (Some(s), None),
        other => (None, Some(other)),
    };
    for k in kept {
        let entry = tern_store::NewRepositoryMail {
            repository: k.repository.to_string(),
            sender: sender.to_string(),
            recipients: vec![k.target.clone()],
            state: k.state.to_string(),
            error: Some(k.error.clone()),
            remote_host: helo.to_string(),
            remote_addr: peer.ip().to_canonical().to_string(),
        };
        let result = match (staged.take(), &source) {
            (Some(body), _) => svc.repositories.store_in_repository(body, entry).await,
            (None, Some(from)) => {
                let (body, skip) = match from {
                    KeepSource::Local { mailbox, id, skip } => {
                        (svc.mail.open_body(*mailbox, *id).await, *skip)
                    }
                    KeepSource::Queued(q) => (svc.queue.open_queued_body(q).await, 0),
                    KeepSource::Repository(m) => {
                        (svc.repositories.open_repository_body(m).await, 0)
                    }
                    KeepSource::Staged(_) => (Ok(None), 0),
                };
                match body {
                    Ok(Some(body)) => {
                        let (mail, repositories) = (&*svc.mail, &*svc.repositories);
                        crate::repository::keep(mail, repositories, b"", body, skip, entry).await
                    }
                    Ok(None) => Err(tern_store::StoreError::invalid("the stored copy is gone")),
                    Err(e) => Err(e),
                }
            }
            (None, None) => return,
        };
        match result {
            Ok(m) => {
                tracing::warn!(%peer, repository = m.repository, key = m.key, target = %Escaped(&k.target), error = %Escaped(&k.error), "copy kept in a mail repository");
                // Further copies are read back from the repository's own.
                if source.is_none() {
                    source = Some(KeepSource::Repository(m));
                }
            }
            Err(e) => {
                tracing::error!(%peer, target = %Escaped(&k.target), error = %e, "could not keep a copy in a mail repository")
            }
        }
    }
}

/// Stores the copies that passed every check: the queued one first (if the local delivery
/// then fails, the client sends again and the remote recipients may get two copies, which is
/// better than none), then the local ones. Also says where a copy can be read back from.
async fn store_copies(
    svc: &SmtpContext,
    incoming: &mut Incoming,
    staged_local: Option<StagedBody>,
    staged_queued: Option<StagedBody>,
    copies: Copies,
    peer: SocketAddr,
) -> (StoreOutcome, Option<KeepSource>) {
    let Copies {
        local,
        remote,
        forwarders,
    } = copies;
    let mut reference = None;
    let mut source = None;
    if let Some(staged) = staged_queued.filter(|_| !remote.is_empty()) {
        // Forwarded mail leaves as ours (SRS), so that the next hop's SPF check passes.
        let sender = match (&svc.srs, incoming.forwarded) {
            (Some(srs), true) => srs.forward(&incoming.reverse_path),
            _ => incoming.reverse_path.clone(),
        };
        let mut header_prefix: String = forwarders
            .iter()
            .map(|f| format!("Delivered-To: {f}\r\n"))
            .collect();
        if let Some(signature) = incoming.signing.take().and_then(SigningStream::finish) {
            header_prefix.push_str(&signature);
        }
        let mail = NewQueuedMail {
            sender,
            recipients: remote
                .iter()
                .map(|a| queued_recipient(a, &incoming.remote_dsn))
                .collect(),
            envid: incoming.dsn.envid.clone(),
            // Postfix's default when RET is not given: the whole message.
            return_full: incoming.dsn.ret_full.unwrap_or(true),
            header_prefix: (!header_prefix.is_empty()).then_some(header_prefix),
        };
        match metrics()
            .store(
                "enqueue",
                svc.mail.backend_name(),
                svc.queue.enqueue(staged, mail),
            )
            .await
        {
            Ok(q) => {
                metrics().message("queued");
                metrics().message_bytes.inc_by(q.size);
                tracing::info!(%peer, queue_id = %q.id, size = q.size, recipients = remote.len(), "message queued for remote delivery");
                reference = Some(q.id.to_string());
                source = Some(KeepSource::Queued(q));
            }
            Err(e) => {
                tracing::error!(%peer, error = %e, "cannot queue the message");
                return (StoreOutcome::Failed, None);
            }
        }
    }
    if let Some(staged) = staged_local.filter(|_| !local.is_empty()) {
        let (blob, size) = (staged.blob_id, staged.size);
        match metrics()
            .store(
                "deliver",
                svc.mail.backend_name(),
                svc.mail.deliver_copies(staged, &local),
            )
            .await
        {
            Ok(ids) => {
                metrics().message("stored");
                metrics().message_bytes.inc_by(size);
                for (copy, id) in local.iter().zip(&ids) {
                    // The message is durable and in the POP3 view already; in UID mode it also
                    // needs its UID. If that fails, the next UID-mode login numbers it, so the
                    // message is still acknowledged (a 451 would only make the client send it
                    // twice).
                    if let Err(e) = svc.listing.delivered(copy.mailbox, &[*id]).await {
                        tracing::warn!(%peer, message = %id, error = %e, "UID assignment deferred to the next login");
                    }
                }
                tracing::info!(%peer, blob = %blob, size, recipients = ids.len(), "message stored");
                reference.get_or_insert(blob.to_string());
                // A local copy is the safer one to read back: a queued one may leave soon.
                source = Some(KeepSource::Local {
                    mailbox: local[0].mailbox,
                    id: ids[0],
                    skip: local[0].header.len(),
                });
            }
            Err(e) => {
                tracing::error!(%peer, error = %e, "delivery failed");
                return (StoreOutcome::Failed, None);
            }
        }
    }
    match reference {
        Some(id) => (StoreOutcome::Stored { id }, source),
        None => (StoreOutcome::Failed, None),
    }
}

/// A remote recipient with the DSN parameters the client gave for it.
fn queued_recipient(address: &str, dsn: &[(String, DsnRcpt)]) -> QueuedRecipient {
    let mut r = QueuedRecipient::new(address);
    if let Some((_, d)) = dsn.iter().find(|(a, _)| a.eq_ignore_ascii_case(address)) {
        if let Some(n) = d.notify {
            r.notify = tern_store::Notify {
                success: n.success,
                failure: n.failure,
                delay: n.delay,
            };
        }
        r.orcpt = d.orcpt.clone();
    }
    r
}

/// Makes a body durable; `Ok(None)` when there was none to make.
async fn finish_body(
    writer: Option<Box<dyn BodyWriter>>,
    peer: SocketAddr,
) -> Result<Option<StagedBody>, ()> {
    let Some(writer) = writer else {
        return Ok(None);
    };
    match writer.finish().await {
        Ok(s) => Ok(Some(s)),
        Err(e) => {
            tracing::error!(%peer, error = %e, "cannot make the message body durable");
            Err(())
        }
    }
}
