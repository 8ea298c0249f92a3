use super::address::{parse_path, Mailbox};
use super::dsn::{self, DsnMail, DsnRcpt};
use crate::dot::{DataDecoder, DataViolation};
use crate::line::{Line, LineBuffer};
use crate::sasl::{self, SaslError};
use crate::session::{Deadline, Session};
use std::time::{Duration, Instant};

/// Settings of one SMTP session.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Name in the greeting and replies.
    pub hostname: String,
    /// Longest accepted command line, without CRLF (RFC 5321 allows 512 with extensions more).
    pub max_line: usize,
    /// Largest message accepted, in octets, as advertised by SIZE.
    pub max_message_size: u64,
    /// Recipients per message; more get 452 4.5.3.
    pub max_recipients: usize,
    /// Protocol errors tolerated before the connection is closed.
    pub max_errors: u32,
    /// Whether STARTTLS can be offered (a certificate is configured).
    pub starttls_available: bool,
    /// Time allowed for a whole command line, from when the session starts waiting for it
    /// (RFC 5321 section 4.5.3.2 suggests 5 minutes).
    pub command_timeout: Duration,
    /// Idle time allowed between data blocks inside DATA.
    pub data_timeout: Duration,
    /// Time allowed for a whole DATA, from 354 to the final dot.
    pub data_deadline: Duration,
    /// SMTP AUTH (RFC 4954, PLAIN and LOGIN) is offered: the submission listeners.
    pub auth_offered: bool,
    /// MAIL needs a successful AUTH first (530 5.7.0 otherwise): the submission listeners.
    pub auth_required: bool,
    /// AUTH may be used on this connection as it is now; otherwise it waits for STARTTLS
    /// (538 5.7.11, and EHLO does not advertise it).
    pub plaintext_auth_allowed: bool,
    /// Speak LMTP (RFC 2033): LHLO instead of EHLO/HELO, and after the data one reply per
    /// accepted recipient ([`SmtpSession::message_stored_each`]).
    pub lmtp: bool,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            max_line: crate::line::MAX_COMMAND_LINE,
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 100,
            max_errors: 20,
            starttls_available: false,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            data_deadline: Duration::from_secs(3600),
            auth_offered: false,
            auth_required: false,
            plaintext_auth_allowed: false,
            lmtp: false,
        }
    }
}

/// The driver's decision on a recipient; `R` is whatever it needs later to deliver (a mailbox id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptVerdict<R> {
    /// The recipient exists; `R` is what the driver will need to deliver to it.
    Accept(R),
    /// The domain is ours but no such user.
    UnknownUser,
    /// Not a domain Tern serves (no relaying).
    RelayDenied,
    /// The address's rewriting (aliases, forwards, groups) loops or goes too deep.
    RewriteLoop,
    /// The mailbox is over its quota (452 4.2.2: the client may try again later).
    MailboxFull,
    /// The directory could not be consulted.
    Temporary,
}

/// The driver's decision on an authenticated user's sender address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderVerdict {
    /// The user owns it (an alias of the user).
    Owned,
    /// It is someone else's (553 5.7.1).
    NotOwned,
    /// Ownership could not be checked (451 4.3.0; the client may try again).
    Temporary,
}

/// Outcome of making a message durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Durable for every recipient; the id is quoted in the reply.
    Stored {
        /// The queue id quoted in the 250 reply.
        id: String,
    },
    /// Not stored: 451, the client will retry.
    Failed,
    /// Refused: the message would take a recipient over its quota (552 5.2.2).
    QuotaExceeded,
    /// Refused: the message was delivered to this recipient before (its `Delivered-To`), so a
    /// forward sent it round in a loop (554 5.4.6).
    Loop,
    /// Refused by the domain owner's DMARC policy (550 5.7.1); the domain is quoted.
    DmarcReject {
        /// The From domain whose policy is `reject`.
        domain: String,
    },
}

/// Work the driver must do before the session goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpRequest<R> {
    /// Look the recipient up; answer with [`SmtpSession::rcpt_verdict`].
    CheckRecipient(Mailbox),
    /// An authenticated user gives another sender address than its own: may it send as that
    /// one (an alias it owns)? Answer with [`SmtpSession::sender_verdict`].
    CheckSender {
        /// The authenticated user.
        user: String,
        /// The `MAIL FROM` address.
        sender: String,
    },
    /// DATA was accepted: prepare to receive a body (open a writer, write trace headers), then
    /// call [`SmtpSession::data_ready`].
    BeginMessage {
        /// The sender (`MAIL FROM`), empty for the null path.
        reverse_path: String,
        /// The EHLO/HELO argument.
        helo: String,
        /// Whether the client said EHLO (ESMTP) rather than HELO.
        esmtp: bool,
        /// The accepted recipients.
        recipients: Vec<Mailbox>,
        /// What [`RcptVerdict::Accept`] gave for each of them, in the same order.
        targets: Vec<R>,
        /// The DSN parameters of MAIL (RFC 3461).
        dsn: DsnMail,
        /// The DSN parameters of each recipient, in the same order.
        recipient_dsn: Vec<DsnRcpt>,
        /// The user the client authenticated as, if it did (ESMTPA in Received, RFC 3848).
        authenticated: Option<String>,
    },
    /// The next part of the body, already unstuffed.
    MessageData(Vec<u8>),
    /// The body is complete: make it durable for these recipients, then call
    /// [`SmtpSession::message_stored`].
    EndMessage {
        /// What [`RcptVerdict::Accept`] gave for each accepted recipient.
        recipients: Vec<R>,
    },
    /// The body was refused (the reply is already queued): discard what was written.
    AbortMessage,
    /// STARTTLS was accepted: write the pending output, run the TLS handshake, then call
    /// [`SmtpSession::tls_established`] (or drop the connection if it fails).
    StartTls,
    /// AUTH: check these credentials, then call [`SmtpSession::auth_finished`].
    Authenticate {
        /// The user name as the client gave it.
        username: String,
        /// The password as the client gave it.
        password: String,
    },
}

/// Why an AUTH did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// Wrong user name or password (535 5.7.8).
    BadCredentials,
    /// The check could not be made (454 4.7.0).
    Temporary,
    /// Refused without checking, for this reason (too many failures: 454 4.7.0).
    Delayed(String),
}

#[derive(Debug)]
enum State {
    /// Before EHLO/HELO.
    Connected,
    Ready,
    /// Waiting for the verdict on a recipient.
    CheckingRecipient(Mailbox, DsnRcpt),
    /// Waiting for the verdict on an authenticated user's sender address.
    CheckingSender(String, DsnMail),
    /// Waiting for the driver to prepare for the body.
    Preparing,
    Data(DataDecoder),
    Storing,
    StartingTls,
    /// AUTH PLAIN without an initial response: waiting for it.
    SaslPlain,
    /// AUTH LOGIN: waiting for the user name, then the password.
    SaslLoginUser,
    SaslLoginPass {
        username: String,
    },
    /// Waiting for the driver's verdict on the credentials.
    Authenticating {
        username: String,
    },
    Closed,
}

struct Envelope<R> {
    reverse_path: String,
    dsn: DsnMail,
    recipients: Vec<(Mailbox, R, DsnRcpt)>,
}

/// An SMTP server session as a state machine: [`SmtpSession::feed`] it bytes, call
/// [`SmtpSession::poll`] until `None`, and write out [`SmtpSession::take_output`] after each call.
pub struct SmtpSession<R> {
    config: SmtpConfig,
    input: LineBuffer,
    output: Vec<u8>,
    state: State,
    helo: Option<(String, bool)>,
    envelope: Option<Envelope<R>>,
    errors: u32,
    /// Replies sent, by the first digit of their code (see `take_reply_counts`).
    reply_counts: [u64; 6],
    tls: bool,
    /// The server is stopping: say goodbye once the message in progress is done.
    stopping: bool,
    /// The user this session authenticated as (normalised: trimmed, lower-cased).
    authenticated: Option<String>,
    /// Deadlines for the command being waited for, the next data block, and the whole DATA.
    command_deadline: Deadline,
    block_deadline: Deadline,
    data_deadline: Deadline,
}

impl<R: Clone> SmtpSession<R> {
    /// A session waiting for EHLO/HELO, its greeting queued.
    pub fn new(config: SmtpConfig) -> Self {
        let mut s = Self {
            input: LineBuffer::new(config.max_line),
            output: Vec::with_capacity(256),
            state: State::Connected,
            helo: None,
            envelope: None,
            errors: 0,
            reply_counts: [0; 6],
            tls: false,
            stopping: false,
            authenticated: None,
            command_deadline: Deadline::default(),
            block_deadline: Deadline::default(),
            data_deadline: Deadline::default(),
            config,
        };
        let greeting = format!("220 {} ESMTP Tern\r\n", s.config.hostname);
        s.output.extend_from_slice(greeting.as_bytes());
        s
    }

    /// Bytes the client sent.
    pub fn feed(&mut self, data: &[u8]) {
        if self.in_data() {
            // A data block arrived: the idle clock between blocks starts again.
            self.block_deadline.restart();
        }
        self.input.feed(data);
    }

    /// Bytes to send to the client.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Whether the session runs over TLS (after STARTTLS).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The TLS handshake after STARTTLS completed. As RFC 3207 section 4.2 requires, the
    /// session forgets everything it learnt before (the client must EHLO again), and bytes sent
    /// in plaintext after STARTTLS are discarded unread (CVE-2011-0411).
    pub fn tls_established(&mut self) {
        self.input.clear();
        self.helo = None;
        self.envelope = None;
        self.authenticated = None;
        self.tls = true;
        // Inside TLS, passwords may travel.
        self.config.plaintext_auth_allowed = true;
        self.config.starttls_available = false;
        self.state = State::Connected;
    }

    /// True once the connection should be closed (after writing any remaining output).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// True while a message body is being received or stored: a shutdown should let it finish.
    pub fn in_message(&self) -> bool {
        matches!(
            self.state,
            State::Preparing | State::Data(_) | State::Storing
        )
    }

    /// True while reading the body (the data-block timeout applies, not the command one).
    pub fn in_data(&self) -> bool {
        matches!(self.state, State::Data(_))
    }

    fn reply(&mut self, line: &str) {
        self.output.extend_from_slice(line.as_bytes());
        self.output.extend_from_slice(b"\r\n");
        // A reply is counted once, at its last line (`250 ...`, not `250-...`).
        let bytes = line.as_bytes();
        if bytes.get(3) != Some(&b'-') {
            if let Some(d @ b'0'..=b'5') = bytes.first() {
                self.reply_counts[usize::from(d - b'0')] += 1;
            }
        }
    }

    /// Replies sent since the last call, by the first digit of their code (index 2 counts the
    /// 2xx replies...), for the server's metrics.
    pub fn take_reply_counts(&mut self) -> [u64; 6] {
        std::mem::take(&mut self.reply_counts)
    }

    fn error(&mut self, line: &str) {
        self.errors += 1;
        self.reply(line);
        if self.errors >= self.config.max_errors {
            self.reply(&format!(
                "421 4.7.0 {} Too many errors, closing connection",
                self.config.hostname
            ));
            self.state = State::Closed;
        }
    }

    /// The RFC 5321 section 4.5.3.2 timeout for the current state ran out.
    pub fn timeout(&mut self) {
        self.reply(&format!(
            "421 4.4.2 {} Error: timeout exceeded",
            self.config.hostname
        ));
        self.state = State::Closed;
    }

    /// The server is stopping: between messages the session says goodbye at once (421);
    /// a message being received or stored is finished first.
    pub fn shutdown(&mut self) {
        self.stopping = true;
        if !self.in_message() && !self.is_closed() {
            self.reply(&format!(
                "421 4.3.2 {} Service shutting down, try again later",
                self.config.hostname
            ));
            self.state = State::Closed;
        }
    }

    /// A message ended (stored, refused or given up): if the server is stopping, now is the
    /// time to say goodbye.
    fn message_done(&mut self) {
        self.data_deadline.restart();
        self.block_deadline.restart();
        if self.stopping {
            self.shutdown();
        }
    }

    /// Answer to [`SmtpRequest::CheckRecipient`].
    pub fn rcpt_verdict(&mut self, verdict: RcptVerdict<R>) {
        let State::CheckingRecipient(mailbox, rcpt_dsn) =
            std::mem::replace(&mut self.state, State::Ready)
        else {
            return;
        };
        match verdict {
            RcptVerdict::Accept(r) => {
                if let Some(env) = &mut self.envelope {
                    env.recipients.push((mailbox, r, rcpt_dsn));
                }
                self.reply("250 2.1.5 Ok");
            }
            // Refused recipients count as errors, as in Postfix (smtpd_hard_error_limit): a
            // client guessing addresses is closed after `max_errors` of them.
            RcptVerdict::UnknownUser => self.error(&format!(
                "550 5.1.1 <{mailbox}>: Recipient address rejected: no such user here"
            )),
            RcptVerdict::RelayDenied => self.error(&format!(
                "550 5.7.1 <{mailbox}>: Relay access denied: not a domain served here"
            )),
            RcptVerdict::RewriteLoop => self.error(&format!(
                "550 5.4.6 <{mailbox}>: Recipient address rewriting loops"
            )),
            RcptVerdict::MailboxFull => self.reply(&format!("452 4.2.2 <{mailbox}>: Mailbox full")),
            RcptVerdict::Temporary => {
                self.reply("451 4.3.0 Recipient lookup failed temporarily, try again later")
            }
        }
    }

    /// Answer to [`SmtpRequest::BeginMessage`]: whether a body can be received now.
    pub fn data_ready(&mut self, ok: bool) {
        if ok {
            self.reply("354 End data with <CR><LF>.<CR><LF>");
            self.state = State::Data(DataDecoder::new(self.config.max_message_size));
        } else {
            self.reply("451 4.3.0 Mail store temporarily unavailable, try again later");
            self.state = State::Ready;
            self.message_done();
        }
    }

    /// Answer to [`SmtpRequest::EndMessage`]: whether the message is durable for every recipient.
    pub fn message_stored(&mut self, outcome: StoreOutcome) {
        // LMTP answers for each recipient; the same outcome for all of them here.
        let count = match (&self.envelope, self.config.lmtp) {
            (Some(env), true) => env.recipients.len().max(1),
            _ => 1,
        };
        self.message_stored_each(vec![outcome; count]);
    }

    /// Answer to [`SmtpRequest::EndMessage`] in LMTP, one outcome per accepted recipient in
    /// the order they were accepted (RFC 2033 section 4.2). In SMTP only the first counts.
    pub fn message_stored_each(&mut self, outcomes: Vec<StoreOutcome>) {
        if !matches!(self.state, State::Storing) {
            return;
        }
        self.state = State::Ready;
        let recipients: Vec<String> = self
            .envelope
            .take()
            .map(|e| e.recipients.iter().map(|(m, _, _)| m.to_string()).collect())
            .unwrap_or_default();
        let wanted = if self.config.lmtp {
            recipients.len().max(1)
        } else {
            1
        };
        for i in 0..wanted {
            let outcome = outcomes.get(i).cloned().unwrap_or(StoreOutcome::Failed);
            let who = match (self.config.lmtp, recipients.get(i)) {
                (true, Some(r)) => format!("<{r}> "),
                _ => String::new(),
            };
            match outcome {
                StoreOutcome::Stored { id } => {
                    self.reply(&format!("250 2.0.0 {who}Ok: queued as {id}"))
                }
                StoreOutcome::Failed => self.reply(&format!(
                    "451 4.3.0 {who}Temporary storage failure, message not accepted; try again later"
                )),
                StoreOutcome::QuotaExceeded => self.reply(&format!(
                    "552 5.2.2 {who}Mailbox full: the message would exceed a recipient's quota"
                )),
                StoreOutcome::Loop => self.reply(&format!(
                    "554 5.4.6 {who}Mail loop detected: the message was delivered here before"
                )),
                StoreOutcome::DmarcReject { domain } => self.reply(&format!(
                    "550 5.7.1 {who}Message refused: it fails the DMARC policy of {domain}"
                )),
            }
        }
        self.message_done();
    }

    /// Processes buffered input until a request for the driver comes up or input runs out.
    pub fn poll(&mut self) -> Option<SmtpRequest<R>> {
        loop {
            match &mut self.state {
                State::Closed
                | State::CheckingRecipient(..)
                | State::CheckingSender(..)
                | State::Preparing
                | State::Storing
                | State::StartingTls
                | State::Authenticating { .. } => return None,
                State::Data(decoder) => {
                    if decoder.is_ended() {
                        let violation = decoder.violation();
                        return Some(self.end_of_data(violation));
                    }
                    let rest = self.input.take_rest();
                    if rest.is_empty() {
                        return None;
                    }
                    let mut body = Vec::with_capacity(rest.len());
                    let r = decoder.decode(&rest, &mut body);
                    if !r.ended {
                        return (!body.is_empty()).then_some(SmtpRequest::MessageData(body));
                    }
                    self.input.unread(&rest[r.consumed..]);
                    let violation = decoder.violation();
                    if !body.is_empty() {
                        // Hand over the tail first; the end is reported on the next poll.
                        // The decoder is already in its ended state, so nothing is decoded twice.
                        return Some(SmtpRequest::MessageData(body));
                    }
                    return Some(self.end_of_data(violation));
                }
                State::Connected
                | State::Ready
                | State::SaslPlain
                | State::SaslLoginUser
                | State::SaslLoginPass { .. } => {}
            }
            let line = self.input.next_line()?;
            // A whole command arrived: the next one gets its full time, counted from when the
            // session starts waiting for it.
            self.command_deadline.restart();
            let line = match line {
                Line::Complete(l) => l,
                Line::TooLong => {
                    self.error("500 5.5.2 Line too long");
                    continue;
                }
            };
            let req = if self.in_sasl() {
                self.sasl_response(&line)
            } else {
                self.command(&line)
            };
            if let Some(req) = req {
                return Some(req);
            }
        }
    }

    /// The user this session authenticated as, if it did.
    pub fn authenticated_user(&self) -> Option<&str> {
        self.authenticated.as_deref()
    }

    fn in_sasl(&self) -> bool {
        matches!(
            self.state,
            State::SaslPlain | State::SaslLoginUser | State::SaslLoginPass { .. }
        )
    }

    /// `AUTH mechanism [initial-response]` (RFC 4954 section 4).
    fn auth(&mut self, arg: &str) -> Option<SmtpRequest<R>> {
        if !self.config.auth_offered {
            self.error("503 5.5.1 AUTH not offered here; use the submission port");
            return None;
        }
        if matches!(self.state, State::Connected) {
            self.error("503 5.5.1 Send EHLO first");
            return None;
        }
        if self.authenticated.is_some() {
            self.error("503 5.5.1 Already authenticated");
            return None;
        }
        if self.envelope.is_some() {
            self.error("503 5.5.1 AUTH is not allowed during a mail transaction");
            return None;
        }
        if !self.config.plaintext_auth_allowed {
            self.error("538 5.7.11 Encryption required for requested authentication mechanism; use STARTTLS");
            return None;
        }
        let mut words = arg.split_ascii_whitespace();
        let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
        let initial = words.next();
        match (mechanism.as_str(), initial) {
            ("PLAIN", None) => {
                self.reply("334 ");
                self.state = State::SaslPlain;
                None
            }
            ("PLAIN", Some(ir)) => {
                let creds =
                    sasl::decode_response(ir.as_bytes()).and_then(|m| sasl::parse_plain(&m));
                self.sasl_outcome(creds)
            }
            ("LOGIN", None) => {
                self.reply("334 VXNlcm5hbWU6");
                self.state = State::SaslLoginUser;
                None
            }
            ("LOGIN", Some(ir)) => {
                match sasl::login_username(ir.as_bytes()) {
                    Ok(username) => {
                        self.reply("334 UGFzc3dvcmQ6");
                        self.state = State::SaslLoginPass { username };
                    }
                    Err(e) => self.sasl_error(e),
                }
                None
            }
            ("", _) => {
                self.error("501 5.5.4 Syntax: AUTH mechanism [initial-response]");
                None
            }
            _ => {
                self.error("504 5.5.4 Unrecognized authentication type; use PLAIN or LOGIN");
                None
            }
        }
    }

    /// A line answering a 334 challenge.
    fn sasl_response(&mut self, line: &[u8]) -> Option<SmtpRequest<R>> {
        match std::mem::replace(&mut self.state, State::Ready) {
            State::SaslPlain => {
                let creds = sasl::decode_response(line).and_then(|m| sasl::parse_plain(&m));
                self.sasl_outcome(creds)
            }
            State::SaslLoginUser => {
                match sasl::login_username(line) {
                    Ok(username) => {
                        self.reply("334 UGFzc3dvcmQ6");
                        self.state = State::SaslLoginPass { username };
                    }
                    Err(e) => self.sasl_error(e),
                }
                None
            }
            State::SaslLoginPass { username } => {
                let creds = sasl::decode_response(line)
                    .and_then(|p| sasl::utf8(&p))
                    .map(|password| sasl::Credentials { username, password });
                self.sasl_outcome(creds)
            }
            other => {
                self.state = other;
                None
            }
        }
    }

    fn sasl_outcome(
        &mut self,
        creds: Result<sasl::Credentials, SaslError>,
    ) -> Option<SmtpRequest<R>> {
        match creds {
            Ok(c) => {
                self.state = State::Authenticating {
                    username: c.username.trim().to_lowercase(),
                };
                Some(SmtpRequest::Authenticate {
                    username: c.username,
                    password: c.password,
                })
            }
            Err(e) => {
                self.state = State::Ready;
                self.sasl_error(e);
                None
            }
        }
    }

    fn sasl_error(&mut self, e: SaslError) {
        match e {
            SaslError::Cancelled => self.error("501 5.7.0 Authentication cancelled"),
            SaslError::Malformed(why) => self.error(&format!(
                "501 5.5.2 Malformed authentication response: {why}"
            )),
            SaslError::AuthzidMismatch => {
                self.error("535 5.7.8 Authenticating as another user is not supported")
            }
            SaslError::ControlInIdentity => {
                self.error("535 5.7.8 User names may not contain control characters")
            }
        }
    }

    /// Answer to [`SmtpRequest::Authenticate`].
    pub fn auth_finished(&mut self, outcome: Result<(), AuthFailure>) {
        let State::Authenticating { username } = std::mem::replace(&mut self.state, State::Ready)
        else {
            return;
        };
        match outcome {
            Ok(()) => {
                self.authenticated = Some(username);
                self.reply("235 2.7.0 Authentication successful");
            }
            // Failures count as errors: a guessing client is closed after max_errors.
            Err(AuthFailure::BadCredentials) => {
                self.error("535 5.7.8 Authentication credentials invalid")
            }
            Err(AuthFailure::Temporary) => {
                self.reply("454 4.7.0 Temporary authentication failure, try again later")
            }
            Err(AuthFailure::Delayed(why)) => self.error(&format!(
                "454 4.7.0 Temporary authentication failure: {why}"
            )),
        }
    }

    fn end_of_data(&mut self, violation: Option<DataViolation>) -> SmtpRequest<R> {
        match violation {
            None => {
                self.state = State::Storing;
                let recipients = self
                    .envelope
                    .as_ref()
                    .map(|e| e.recipients.iter().map(|(_, r, _)| r.clone()).collect())
                    .unwrap_or_default();
                SmtpRequest::EndMessage { recipients }
            }
            Some(v) => {
                self.state = State::Ready;
                self.envelope = None;
                match v {
                    DataViolation::BareLineEnd => self.error(
                        "550 5.5.2 Message refused: bare LF or CR in message data; lines must end with CRLF (RFC 5321 section 2.3.8)",
                    ),
                    DataViolation::TooLarge => self.reply(&format!(
                        "552 5.3.4 Message size exceeds fixed maximum message size of {} octets",
                        self.config.max_message_size
                    )),
                }
                self.message_done();
                SmtpRequest::AbortMessage
            }
        }
    }

    fn command(&mut self, line: &[u8]) -> Option<SmtpRequest<R>> {
        let Ok(line) = std::str::from_utf8(line) else {
            self.error("500 5.5.2 Command is not valid UTF-8");
            return None;
        };
        let (verb, arg) = match line.find(' ') {
            Some(i) => (&line[..i], line[i + 1..].trim()),
            None => (line, ""),
        };
        let verb = verb.to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" | "HELO" if self.config.lmtp => self.error("500 5.5.1 This is LMTP: say LHLO"),
            "LHLO" if self.config.lmtp => self.hello(arg, true),
            "EHLO" | "HELO" => self.hello(arg, verb == "EHLO"),
            "MAIL" => return self.mail(arg),
            "RCPT" => return self.rcpt(arg),
            "DATA" => return self.data(arg),
            "RSET" => {
                self.envelope = None;
                self.reply("250 2.0.0 Ok");
            }
            "NOOP" => self.reply("250 2.0.0 Ok"),
            "QUIT" => {
                self.reply(&format!(
                    "221 2.0.0 {} closing connection",
                    self.config.hostname
                ));
                self.state = State::Closed;
            }
            "VRFY" => self
                .reply("252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery"),
            "EXPN" => self.error("502 5.5.1 EXPN not implemented"),
            "HELP" => {
                self.reply("214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY")
            }
            "STARTTLS" => return self.starttls(arg),
            "BDAT" => self.error("502 5.5.1 CHUNKING not supported; use DATA"),
            "AUTH" => return self.auth(arg),
            "" => self.error("500 5.5.2 Empty command"),
            _ => self.error("500 5.5.2 Syntax error, command unrecognized"),
        }
        None
    }

    fn starttls(&mut self, arg: &str) -> Option<SmtpRequest<R>> {
        if !arg.is_empty() {
            self.error("501 5.5.4 STARTTLS takes no arguments");
        } else if self.tls {
            self.error("503 5.5.1 TLS already active");
        } else if !self.config.starttls_available {
            self.error("454 4.7.0 TLS not available: no certificate configured");
        } else if matches!(self.state, State::Connected) {
            self.error("503 5.5.1 Send EHLO first");
        } else {
            self.reply("220 2.0.0 Ready to start TLS");
            self.state = State::StartingTls;
            return Some(SmtpRequest::StartTls);
        }
        None
    }

    fn hello(&mut self, arg: &str, esmtp: bool) {
        let Some(domain) = arg.split_ascii_whitespace().next() else {
            let verb = if esmtp { "EHLO" } else { "HELO" };
            self.error(&format!("501 5.5.4 Syntax: {verb} hostname"));
            return;
        };
        if !valid_helo_name(domain) {
            // Echoed in the reply and written into Received: only a domain or an address
            // literal (RFC 5321 section 4.1.1.1), never control characters.
            self.error("501 5.5.2 Invalid EHLO/HELO argument: a domain name or an address literal such as [192.0.2.1]");
            return;
        }
        self.helo = Some((domain.to_string(), esmtp));
        self.envelope = None;
        self.state = State::Ready;
        let host = &self.config.hostname;
        if esmtp {
            let mut r = format!(
                "250-{host} Hello {domain}\r\n250-PIPELINING\r\n250-SIZE {}\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n",
                self.config.max_message_size
            );
            if self.config.starttls_available && !self.tls {
                r.push_str("250-STARTTLS\r\n");
            }
            // AUTH is advertised only where it may be used now (RFC 4954 section 4: not
            // before TLS when passwords must not cross in clear).
            if self.config.auth_offered && self.config.plaintext_auth_allowed {
                r.push_str("250-AUTH PLAIN LOGIN\r\n");
            }
            r.push_str("250 HELP");
            self.reply(&r);
        } else {
            let r = format!("250 {host}");
            self.reply(&r);
        }
    }

    fn mail(&mut self, arg: &str) -> Option<SmtpRequest<R>> {
        self.mail_inner(arg);
        match &self.state {
            State::CheckingSender(sender, _) => Some(SmtpRequest::CheckSender {
                user: self.authenticated.clone().unwrap_or_default(),
                sender: sender.clone(),
            }),
            _ => None,
        }
    }

    /// Answer to [`SmtpRequest::CheckSender`].
    pub fn sender_verdict(&mut self, verdict: SenderVerdict) {
        let State::CheckingSender(reverse_path, dsn) =
            std::mem::replace(&mut self.state, State::Ready)
        else {
            return;
        };
        if verdict == SenderVerdict::Temporary {
            self.reply("451 4.3.0 Sender check failed temporarily, try again later");
        } else if verdict == SenderVerdict::Owned {
            self.envelope = Some(Envelope {
                reverse_path,
                dsn,
                recipients: Vec::new(),
            });
            self.reply("250 2.1.0 Ok");
        } else {
            let user = self.authenticated.clone().unwrap_or_default();
            self.error(&format!(
                "553 5.7.1 <{reverse_path}>: Sender address rejected: not owned by user {user}"
            ));
        }
    }

    fn mail_inner(&mut self, arg: &str) {
        if matches!(self.state, State::Connected) {
            return self.error("503 5.5.1 Send EHLO/HELO first");
        }
        if self.config.auth_required && self.authenticated.is_none() {
            return self.error("530 5.7.0 Authentication required");
        }
        if self.envelope.is_some() {
            return self.error("503 5.5.1 Nested MAIL command");
        }
        let Some(path) = strip_keyword(arg, "FROM:") else {
            return self.error("501 5.5.4 Syntax: MAIL FROM:<address>");
        };
        let (mailbox, params) = match parse_path(path) {
            Ok(p) => p,
            Err(e) => return self.error(&format!("501 5.1.7 Bad sender address syntax: {}", e.0)),
        };
        let mut mail_dsn = DsnMail::default();
        for (key, value) in params {
            match (key.as_str(), value.as_deref()) {
                ("SIZE", Some(v)) => match v.parse::<u64>() {
                    Ok(n) if n > self.config.max_message_size => {
                        return self.reply(&format!(
                            "552 5.3.4 Message size exceeds fixed maximum message size of {} octets",
                            self.config.max_message_size
                        ));
                    }
                    Ok(_) => {}
                    Err(_) => return self.error("501 5.5.4 SIZE needs a number"),
                },
                ("BODY", Some(v))
                    if v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME") => {}
                ("RET", Some(v)) if mail_dsn.ret_full.is_none() => {
                    mail_dsn.ret_full = match v.to_ascii_uppercase().as_str() {
                        "FULL" => Some(true),
                        "HDRS" => Some(false),
                        _ => return self.error("501 5.5.4 RET must be FULL or HDRS"),
                    }
                }
                ("ENVID", Some(v)) if mail_dsn.envid.is_none() => {
                    match dsn::decode_xtext(v).filter(|e| e.len() <= 100) {
                        Some(e) => mail_dsn.envid = Some(e),
                        None => return self.error("501 5.5.4 Malformed ENVID"),
                    }
                }
                _ => return self.error(&format!("555 5.5.4 Unsupported MAIL parameter {key}")),
            }
        }
        let reverse_path = mailbox.map(|m| m.to_string()).unwrap_or_default();
        if let Some(user) = &self.authenticated {
            // An authenticated user sends as itself or as an address it owns (RFC 6409 section
            // 6.1 lets the server insist); the driver knows the aliases.
            if !reverse_path.eq_ignore_ascii_case(user) {
                self.state = State::CheckingSender(reverse_path, mail_dsn);
                return;
            }
        }
        self.envelope = Some(Envelope {
            reverse_path,
            dsn: mail_dsn,
            recipients: Vec::new(),
        });
        self.reply("250 2.1.0 Ok");
    }

    fn rcpt(&mut self, arg: &str) -> Option<SmtpRequest<R>> {
        let Some(env) = &self.envelope else {
            self.error("503 5.5.1 Send MAIL FROM first");
            return None;
        };
        if env.recipients.len() >= self.config.max_recipients {
            self.reply("452 4.5.3 Too many recipients");
            return None;
        }
        let Some(path) = strip_keyword(arg, "TO:") else {
            self.error("501 5.5.4 Syntax: RCPT TO:<address>");
            return None;
        };
        match parse_path(path) {
            Ok((Some(mailbox), params)) => {
                let mut rcpt_dsn = DsnRcpt::default();
                for (k, v) in &params {
                    match (k.as_str(), v.as_deref()) {
                        ("NOTIFY", Some(v)) if rcpt_dsn.notify.is_none() => {
                            match dsn::parse_notify(v) {
                                Some(n) => rcpt_dsn.notify = Some(n),
                                None => {
                                    self.error("501 5.5.4 NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY");
                                    return None;
                                }
                            }
                        }
                        ("ORCPT", Some(v)) if rcpt_dsn.orcpt.is_none() => {
                            match dsn::parse_orcpt(v) {
                                Some(o) => rcpt_dsn.orcpt = Some(o),
                                None => {
                                    self.error("501 5.5.4 Malformed ORCPT");
                                    return None;
                                }
                            }
                        }
                        _ => {
                            self.error(&format!("555 5.5.4 Unsupported RCPT parameter {k}"));
                            return None;
                        }
                    }
                }
                self.state = State::CheckingRecipient(mailbox.clone(), rcpt_dsn);
                Some(SmtpRequest::CheckRecipient(mailbox))
            }
            Ok((None, _)) => {
                self.error("501 5.1.3 Recipient address required");
                None
            }
            Err(e) => {
                self.error(&format!("501 5.1.3 Bad recipient address syntax: {}", e.0));
                None
            }
        }
    }

    fn data(&mut self, arg: &str) -> Option<SmtpRequest<R>> {
        if !arg.is_empty() {
            self.error("501 5.5.4 DATA takes no arguments");
            return None;
        }
        let Some(env) = &self.envelope else {
            self.error("503 5.5.1 Send MAIL FROM first");
            return None;
        };
        if env.recipients.is_empty() {
            self.error("554 5.5.1 No valid recipients");
            return None;
        }
        let (helo, esmtp) = self.helo.clone().unwrap_or_default();
        let req = SmtpRequest::BeginMessage {
            reverse_path: env.reverse_path.clone(),
            helo,
            esmtp,
            recipients: env.recipients.iter().map(|(m, _, _)| m.clone()).collect(),
            targets: env.recipients.iter().map(|(_, r, _)| r.clone()).collect(),
            dsn: env.dsn.clone(),
            recipient_dsn: env.recipients.iter().map(|(_, _, d)| d.clone()).collect(),
            authenticated: self.authenticated.clone(),
        };
        self.state = State::Preparing;
        Some(req)
    }
}

/// Strips "FROM:"/"TO:" case-insensitively, tolerating spaces before the path.
impl<R: Clone> Session for SmtpSession<R> {
    type Request = SmtpRequest<R>;

    fn feed(&mut self, data: &[u8]) {
        SmtpSession::feed(self, data)
    }

    fn poll(&mut self) -> Option<SmtpRequest<R>> {
        SmtpSession::poll(self)
    }

    fn take_output(&mut self) -> Vec<u8> {
        SmtpSession::take_output(self)
    }

    fn is_closed(&self) -> bool {
        SmtpSession::is_closed(self)
    }

    fn poll_timeout(&mut self, now: Instant) -> Option<Instant> {
        match self.state {
            State::Connected
            | State::Ready
            | State::SaslPlain
            | State::SaslLoginUser
            | State::SaslLoginPass { .. } => {
                Some(self.command_deadline.arm(now, self.config.command_timeout))
            }
            State::Data(_) => Some(
                self.block_deadline
                    .arm(now, self.config.data_timeout)
                    .min(self.data_deadline.arm(now, self.config.data_deadline)),
            ),
            // Waiting for the driver, or done: no input is expected.
            _ => None,
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let expired = match self.state {
            State::Connected
            | State::Ready
            | State::SaslPlain
            | State::SaslLoginUser
            | State::SaslLoginPass { .. } => self.command_deadline.expired(now),
            State::Data(_) => self.block_deadline.expired(now) || self.data_deadline.expired(now),
            _ => false,
        };
        if expired {
            self.timeout();
        }
    }

    fn shutdown(&mut self) {
        SmtpSession::shutdown(self)
    }

    fn tls_established(&mut self) {
        SmtpSession::tls_established(self)
    }
}

/// An EHLO/HELO argument Tern accepts: a domain (letters, digits, hyphens, and the underscores
/// some client host names carry, in dot-separated labels) or an address literal of printable
/// characters in brackets, at most 255 octets.
fn valid_helo_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'[' && b != b']' && b != b'\\');
    }
    name.trim_end_matches('.').split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

fn strip_keyword<'a>(arg: &'a str, keyword: &str) -> Option<&'a str> {
    let head = arg.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| &arg[keyword.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Session as _;

    type Session = SmtpSession<u32>;

    fn session() -> Session {
        let mut s = Session::new(SmtpConfig {
            max_message_size: 100,
            max_recipients: 2,
            ..Default::default()
        });
        assert!(String::from_utf8(s.take_output())
            .unwrap()
            .starts_with("220 "));
        s
    }

    fn run(s: &mut Session, input: &str) -> (String, Option<SmtpRequest<u32>>) {
        s.feed(input.as_bytes());
        let r = s.poll();
        (String::from_utf8(s.take_output()).unwrap(), r)
    }

    /// Drives a session through a pipelined transaction, answering every request, and returns
    /// all replies plus the body that would have been stored.
    fn transaction(s: &mut Session, input: &str) -> (String, Vec<u8>, bool) {
        s.feed(input.as_bytes());
        let mut out = String::new();
        let mut body = Vec::new();
        let mut stored = false;
        loop {
            let r = s.poll();
            out.push_str(&String::from_utf8(s.take_output()).unwrap());
            match r {
                None => return (out, body, stored),
                Some(SmtpRequest::CheckRecipient(m)) => s.rcpt_verdict(match m.domain.as_str() {
                    "x" if m.local == "nobody" => RcptVerdict::UnknownUser,
                    "x" => RcptVerdict::Accept(1),
                    _ => RcptVerdict::RelayDenied,
                }),
                Some(SmtpRequest::BeginMessage { .. }) => s.data_ready(true),
                Some(SmtpRequest::MessageData(d)) => body.extend_from_slice(&d),
                Some(SmtpRequest::EndMessage { recipients }) => {
                    assert!(!recipients.is_empty());
                    stored = true;
                    s.message_stored(StoreOutcome::Stored { id: "id1".into() });
                }
                Some(SmtpRequest::AbortMessage) => body.clear(),
                Some(SmtpRequest::StartTls) => s.tls_established(),
                Some(SmtpRequest::Authenticate { .. }) => s.auth_finished(Ok(())),
                // The test's users own the addresses whose local part starts with theirs.
                Some(SmtpRequest::CheckSender { user, sender }) => {
                    let owner = user.split('@').next().unwrap_or_default();
                    s.sender_verdict(if !owner.is_empty() && sender.starts_with(owner) {
                        SenderVerdict::Owned
                    } else {
                        SenderVerdict::NotOwned
                    })
                }
            }
        }
    }

    #[test]
    fn dsn_parameters_reach_the_driver_and_bad_ones_are_refused() {
        let mut s: SmtpSession<u32> = session();
        s.feed(b"EHLO c\r\nMAIL FROM:<a@y> RET=HDRS ENVID=QQ+2B1\r\n");
        while s.poll().is_some() {}
        let out = String::from_utf8(s.take_output()).unwrap();
        assert!(out.contains("250-DSN\r\n"), "{out}");
        assert!(out.ends_with("250 2.1.0 Ok\r\n"), "{out}");
        s.feed(b"RCPT TO:<b@x> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;B+40x\r\n");
        let Some(SmtpRequest::CheckRecipient(_)) = s.poll() else {
            panic!("no recipient check")
        };
        s.rcpt_verdict(RcptVerdict::Accept(7));
        for bad in [
            "RCPT TO:<c@x> NOTIFY=SOMETIMES\r\n",
            "RCPT TO:<c@x> ORCPT=nonsense\r\n",
            "RCPT TO:<c@x> NOTIFY=NEVER NOTIFY=NEVER\r\n",
        ] {
            s.take_output();
            s.feed(bad.as_bytes());
            assert!(s.poll().is_none(), "{bad}");
            let out = String::from_utf8(s.take_output()).unwrap();
            assert!(
                out.starts_with("501") || out.starts_with("555"),
                "{bad}: {out}"
            );
        }
        s.feed(b"DATA\r\n");
        let Some(SmtpRequest::BeginMessage {
            dsn, recipient_dsn, ..
        }) = s.poll()
        else {
            panic!("no BeginMessage")
        };
        assert_eq!(dsn.ret_full, Some(false));
        assert_eq!(dsn.envid.as_deref(), Some("QQ+1"));
        assert_eq!(recipient_dsn.len(), 1);
        let n = recipient_dsn[0].notify.unwrap();
        assert!(n.success && n.failure && !n.delay);
        assert_eq!(recipient_dsn[0].orcpt.as_deref(), Some("rfc822;B@x"));
        let mut s: SmtpSession<u32> = session();
        s.feed(b"EHLO c\r\nMAIL FROM:<a@y> RET=ALL\r\n");
        while s.poll().is_some() {}
        assert!(String::from_utf8(s.take_output())
            .unwrap()
            .contains("501 5.5.4 RET"));
    }

    #[test]
    fn a_sender_check_that_failed_is_temporary() {
        let mut s: SmtpSession<u32> = SmtpSession::new(SmtpConfig {
            auth_offered: true,
            auth_required: true,
            plaintext_auth_allowed: true,
            ..SmtpConfig::default()
        });
        s.feed(b"EHLO c\r\nAUTH PLAIN AGFAeABwdw==\r\n");
        let Some(SmtpRequest::Authenticate { .. }) = s.poll() else {
            panic!()
        };
        s.auth_finished(Ok(()));
        s.take_output();
        s.feed(b"MAIL FROM:<carol@x>\r\n");
        assert!(matches!(s.poll(), Some(SmtpRequest::CheckSender { .. })));
        s.sender_verdict(SenderVerdict::Temporary);
        let out = String::from_utf8(s.take_output()).unwrap();
        assert!(out.starts_with("451 4.3.0"), "{out}");
        // The session goes on: the user's own address is accepted.
        s.feed(b"MAIL FROM:<a@x>\r\n");
        assert!(s.poll().is_none());
        assert!(String::from_utf8(s.take_output())
            .unwrap()
            .starts_with("250"));
    }

    #[test]
    fn lmtp_says_lhlo_and_answers_each_recipient() {
        let mut s: SmtpSession<u32> = SmtpSession::new(SmtpConfig {
            lmtp: true,
            ..SmtpConfig::default()
        });
        s.take_output();
        s.feed(b"EHLO c\r\n");
        assert!(s.poll().is_none());
        assert!(String::from_utf8(s.take_output())
            .unwrap()
            .starts_with("500 5.5.1"));
        s.feed(b"LHLO c\r\nMAIL FROM:<a@y>\r\nRCPT TO:<b@x>\r\n");
        let Some(SmtpRequest::CheckRecipient(_)) = s.poll() else {
            panic!()
        };
        s.rcpt_verdict(RcptVerdict::Accept(1));
        s.feed(b"RCPT TO:<c@x>\r\n");
        let Some(SmtpRequest::CheckRecipient(_)) = s.poll() else {
            panic!()
        };
        s.rcpt_verdict(RcptVerdict::Accept(2));
        s.feed(b"DATA\r\n");
        let Some(SmtpRequest::BeginMessage { .. }) = s.poll() else {
            panic!()
        };
        s.data_ready(true);
        s.feed(b"hi\r\n.\r\n");
        let mut end = None;
        while let Some(r) = s.poll() {
            if let SmtpRequest::EndMessage { recipients } = r {
                end = Some(recipients);
            }
        }
        assert_eq!(end, Some(vec![1, 2]));
        s.take_output();
        s.message_stored_each(vec![
            StoreOutcome::Stored { id: "q1".into() },
            StoreOutcome::QuotaExceeded,
        ]);
        let out = String::from_utf8(s.take_output()).unwrap();
        assert_eq!(
            out,
            "250 2.0.0 <b@x> Ok: queued as q1\r\n552 5.2.2 <c@x> Mailbox full: the message would exceed a recipient's quota\r\n"
        );
    }

    #[test]
    fn pipelined_transaction() {
        let mut s = session();
        let (out, body, stored) = transaction(
            &mut s,
            "EHLO c\r\nMAIL FROM:<a@y>\r\nRCPT TO:<b@x>\r\nRCPT TO:<nobody@x>\r\nRCPT TO:<c@z>\r\nDATA\r\nhi\r\n..dot\r\n.\r\nQUIT\r\n",
        );
        assert!(stored);
        assert_eq!(body, b"hi\r\n.dot\r\n");
        let codes: Vec<&str> = out.lines().map(|l| &l[..4]).collect();
        assert_eq!(
            codes,
            [
                "250-", "250-", "250-", "250-", "250-", "250-", "250 ", "250 ", "250 ", "550 ",
                "550 ", "354 ", "250 ", "221 "
            ]
        );
        assert!(out.contains("550 5.1.1") && out.contains("550 5.7.1"));
        assert!(s.is_closed());
    }

    #[test]
    fn order_is_enforced() {
        let mut s = session();
        let (out, _) = run(&mut s, "MAIL FROM:<a@y>\r\n");
        assert!(out.starts_with("503 5.5.1"));
        let (out, _, _) = transaction(
            &mut s,
            "HELO c\r\nRCPT TO:<b@x>\r\nDATA\r\nMAIL FROM:<a@y>\r\nDATA\r\nMAIL FROM:<a@y>\r\n",
        );
        let codes: Vec<&str> = out.lines().map(|l| &l[..3]).collect();
        assert_eq!(codes, ["250", "503", "503", "250", "554", "503"]);
    }

    #[test]
    fn size_is_enforced_at_mail_and_in_data() {
        let mut s = session();
        let (out, _, _) = transaction(&mut s, "EHLO c\r\nMAIL FROM:<a@y> SIZE=1000\r\n");
        assert!(out.contains("552 5.3.4"));
        let big = "x".repeat(200);
        let (out, body, stored) = transaction(
            &mut s,
            &format!("MAIL FROM:<a@y>\r\nRCPT TO:<b@x>\r\nDATA\r\n{big}\r\n.\r\nNOOP\r\n"),
        );
        assert!(!stored && body.is_empty());
        assert!(
            out.contains("552 5.3.4") && out.ends_with("250 2.0.0 Ok\r\n"),
            "{out}"
        );
    }

    #[test]
    fn smuggling_is_refused_and_smuggled_commands_never_run() {
        let mut s = session();
        let (out, _, stored) = transaction(
            &mut s,
            "EHLO c\r\nMAIL FROM:<a@y>\r\nRCPT TO:<b@x>\r\nDATA\r\nhi\n.\nMAIL FROM:<evil@y>\r\nRCPT TO:<b@x>\r\nDATA\r\nevil\r\n.\r\nNOOP\r\n",
        );
        assert!(!stored);
        assert!(out.contains("550 5.5.2"));
        // The only replies after 354 are the refusal and NOOP's: nothing in the body ran.
        let after = out.split("354 ").nth(1).unwrap();
        assert_eq!(after.lines().count(), 3, "{out}");
        assert!(out.ends_with("250 2.0.0 Ok\r\n"));
    }

    #[test]
    fn recipient_limit() {
        let mut s = session();
        let (out, _, _) = transaction(
            &mut s,
            "EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@x>\r\nRCPT TO:<b@x>\r\nRCPT TO:<c@x>\r\n",
        );
        assert!(out.ends_with("452 4.5.3 Too many recipients\r\n"));
    }

    #[test]
    fn errors_are_bounded() {
        let mut s = session();
        let (out, _) = run(&mut s, &"BOGUS\r\n".repeat(30));
        assert_eq!(out.matches("500 ").count(), 20);
        assert!(out.ends_with("Too many errors, closing connection\r\n"));
        assert!(s.is_closed());
    }

    #[test]
    fn command_and_data_deadlines() {
        let cfg = SmtpConfig::default();
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        let mut s = session();
        assert_eq!(s.poll_timeout(t0), Some(t0 + cfg.command_timeout));
        s.feed(b"EHL");
        assert_eq!(s.poll(), None);
        assert_eq!(
            s.poll_timeout(t0 + sec),
            Some(t0 + cfg.command_timeout),
            "trickling does not move the deadline"
        );
        s.feed(b"O c\r\nMAIL FROM:<a@y>\r\nRCPT TO:<b@x>\r\n");
        let Some(SmtpRequest::CheckRecipient(_)) = s.poll() else {
            panic!()
        };
        s.rcpt_verdict(RcptVerdict::Accept(1));
        s.feed(b"DATA\r\n");
        let Some(SmtpRequest::BeginMessage { .. }) = s.poll() else {
            panic!()
        };
        s.data_ready(true);
        let t1 = t0 + 2 * sec;
        // In DATA: the block timeout, under the whole-DATA deadline.
        assert_eq!(s.poll_timeout(t1), Some(t1 + cfg.data_timeout));
        let mut t = t1;
        while t < t1 + cfg.data_deadline {
            t += cfg.data_timeout / 2;
            s.feed(b"x");
            while s.poll().is_some() {}
            let wake = s.poll_timeout(t).unwrap();
            assert!(wake <= t1 + cfg.data_deadline, "the DATA deadline holds");
            s.handle_timeout(wake);
            if s.is_closed() {
                break;
            }
        }
        assert!(s.is_closed(), "a trickled DATA ends at its deadline");
        assert!(String::from_utf8(s.take_output())
            .unwrap()
            .ends_with("421 4.4.2 localhost Error: timeout exceeded\r\n"));
    }

    #[test]
    fn shutdown_waits_for_the_message_in_progress() {
        let mut s = session();
        let (_, _, _) = transaction(&mut s, "EHLO c\r\nMAIL FROM:<a@y>\r\nRCPT TO:<b@x>\r\n");
        s.feed(b"DATA\r\n");
        let Some(SmtpRequest::BeginMessage { .. }) = s.poll() else {
            panic!()
        };
        s.data_ready(true);
        s.take_output();
        s.shutdown();
        assert!(!s.is_closed(), "a message being received is finished first");
        assert!(s.take_output().is_empty());
        s.feed(b"hi\r\n.\r\n");
        while let Some(r) = s.poll() {
            if let SmtpRequest::EndMessage { .. } = r {
                s.message_stored(StoreOutcome::Stored { id: "x".into() });
            }
        }
        let out = String::from_utf8(s.take_output()).unwrap();
        assert!(
            out.starts_with("250 2.0.0 Ok: queued as x\r\n421 4.3.2"),
            "{out}"
        );
        assert!(s.is_closed());
        let mut idle = session();
        idle.shutdown();
        assert!(idle.is_closed());
    }

    fn submission(plaintext: bool) -> Session {
        let mut s = Session::new(SmtpConfig {
            auth_offered: true,
            auth_required: true,
            plaintext_auth_allowed: plaintext,
            starttls_available: true,
            ..Default::default()
        });
        s.take_output();
        s
    }

    #[test]
    fn auth_is_not_offered_on_the_inbound_port() {
        let mut s = session();
        let (out, req) = run(&mut s, "EHLO c\r\nAUTH PLAIN AGFAeABwdw==\r\n");
        assert!(!out.contains("AUTH PLAIN LOGIN"), "{out}");
        assert!(out.contains("503 5.5.1 AUTH not offered"), "{out}");
        assert_eq!(req, None);
    }

    #[test]
    fn auth_waits_for_tls_then_mail_needs_it() {
        let mut s = submission(false);
        let (out, _) = run(&mut s, "EHLO c\r\n");
        assert!(!out.contains("AUTH"), "not advertised before TLS: {out}");
        let (out, req) = run(&mut s, "AUTH PLAIN AGFAeABwdw==\r\nMAIL FROM:<a@x>\r\n");
        assert_eq!(req, None);
        assert!(out.starts_with("538 5.7.11"), "{out}");
        assert!(out.contains("530 5.7.0 Authentication required"), "{out}");
        s.tls_established();
        let (out, _) = run(&mut s, "EHLO c\r\n");
        assert!(out.contains("250-AUTH PLAIN LOGIN\r\n"), "{out}");
    }

    #[test]
    fn auth_plain_then_mail_from_the_user_only() {
        let mut s = submission(true);
        let ir = sasl::encode(b"\0Alice@X\0pw");
        let (_, req) = run(&mut s, &format!("EHLO c\r\nAUTH PLAIN {ir}\r\n"));
        assert_eq!(
            req,
            Some(SmtpRequest::Authenticate {
                username: "Alice@X".into(),
                password: "pw".into()
            })
        );
        s.auth_finished(Ok(()));
        assert_eq!(s.take_output(), b"235 2.7.0 Authentication successful\r\n");
        assert_eq!(s.authenticated_user(), Some("alice@x"));
        // Another address: the driver decides whether the user owns it.
        let (_, req) = run(
            &mut s,
            "MAIL FROM:<bob@x>\r\nMAIL FROM:<ALICE@x>\r\nAUTH PLAIN x\r\n",
        );
        assert_eq!(
            req,
            Some(SmtpRequest::CheckSender {
                user: "alice@x".into(),
                sender: "bob@x".into()
            })
        );
        assert!(s.poll().is_none(), "nothing more until the verdict");
        s.sender_verdict(SenderVerdict::NotOwned);
        assert!(s.poll().is_none());
        let out = String::from_utf8(s.take_output()).unwrap();
        assert!(out.starts_with("553 5.7.1 <bob@x>"), "{out}");
        assert!(out.contains("250 2.1.0 Ok"), "{out}");
        assert!(out.contains("503 5.5.1"), "no second AUTH: {out}");
        let (_, req) = run(&mut s, "RCPT TO:<b@x>\r\n");
        let Some(SmtpRequest::CheckRecipient(_)) = req else {
            panic!("{req:?}")
        };
        s.rcpt_verdict(RcptVerdict::Accept(1));
        let (_, req) = run(&mut s, "DATA\r\n");
        let Some(SmtpRequest::BeginMessage { authenticated, .. }) = req else {
            panic!()
        };
        assert_eq!(authenticated.as_deref(), Some("alice@x"));
    }

    #[test]
    fn auth_login_cancel_and_failures() {
        let mut s = submission(true);
        let (out, _) = run(&mut s, "EHLO c\r\nAUTH LOGIN\r\n");
        assert!(out.ends_with("334 VXNlcm5hbWU6\r\n"), "{out}");
        let (out, _) = run(&mut s, &format!("{}\r\n", sasl::encode(b"a@x")));
        assert_eq!(out, "334 UGFzc3dvcmQ6\r\n");
        let (out, req) = run(&mut s, "*\r\n");
        assert_eq!(req, None);
        assert!(
            out.starts_with("501 5.7.0 Authentication cancelled"),
            "{out}"
        );
        let (out, req) = run(&mut s, "AUTH CRAM-MD5\r\nAUTH PLAIN !!!\r\n");
        assert_eq!(req, None);
        assert!(
            out.starts_with("504 5.5.4") && out.contains("501 5.5.2"),
            "{out}"
        );
        // Three errors so far; seventeen failed logins make twenty: the session closes.
        let mut out = String::new();
        for _ in 0..17 {
            let (_, req) = run(
                &mut s,
                &format!("AUTH PLAIN {}\r\n", sasl::encode(b"\0a@x\0bad")),
            );
            assert!(req.is_some());
            s.auth_finished(Err(AuthFailure::BadCredentials));
            out.push_str(&String::from_utf8(s.take_output()).unwrap());
        }
        assert_eq!(out.matches("535 5.7.8").count(), 17, "{out}");
        assert!(
            out.ends_with("Too many errors, closing connection\r\n"),
            "{out}"
        );
        assert!(s.is_closed());
    }

    #[test]
    fn refused_recipients_count_as_errors() {
        let mut s = session();
        let mut script = String::from("EHLO c\r\nMAIL FROM:<a@y>\r\n");
        for i in 0..30 {
            script.push_str(&format!(
                "RCPT TO:<nobody@x>\r\nRCPT TO:<u{i}@elsewhere>\r\n"
            ));
        }
        let (out, _, _) = transaction(&mut s, &script);
        assert_eq!(out.matches("550 ").count(), 20, "{out}");
        assert!(
            out.ends_with("Too many errors, closing connection\r\n"),
            "{out}"
        );
        assert!(s.is_closed());
    }

    #[test]
    fn helo_arguments_are_checked() {
        for good in [
            "c",
            "mail.example.com",
            "WIN_PC.local",
            "[192.0.2.1]",
            "[IPv6:2001:db8::1]",
            "host.",
        ] {
            let mut s = session();
            let (out, _) = run(&mut s, &format!("EHLO {good}\r\n"));
            assert!(out.starts_with("250-"), "{good}: {out}");
        }
        for bad in [
            "a\u{0}b",
            "a\u{1b}[2Jb",
            "[]",
            "-",
            "a..b",
            "caf\u{e9}",
            "a<b>",
            "[a]b",
        ] {
            let mut s = session();
            let (out, _) = run(&mut s, &format!("EHLO {bad}\r\nHELO {bad}\r\n"));
            assert_eq!(
                out.matches("501 5.5.2 Invalid EHLO/HELO").count(),
                2,
                "{bad:?}: {out}"
            );
            assert!(!out.contains(bad), "never echoed: {bad:?}");
            let (out, _) = run(&mut s, "MAIL FROM:<a@y>\r\n");
            assert!(out.starts_with("503"), "still no HELO: {out}");
        }
    }

    #[test]
    fn starttls_resets_the_session_and_drops_pipelined_plaintext() {
        let mut s: Session = SmtpSession::new(SmtpConfig {
            starttls_available: true,
            ..Default::default()
        });
        s.take_output();
        let (out, _) = run(&mut s, "EHLO c\r\n");
        assert!(out.contains("250-STARTTLS\r\n"));
        let (out, req) = run(&mut s, "STARTTLS\r\nMAIL FROM:<injected@x>\r\n");
        assert_eq!(req, Some(SmtpRequest::StartTls));
        assert_eq!(out, "220 2.0.0 Ready to start TLS\r\n");
        assert_eq!(s.poll(), None);
        s.tls_established();
        assert_eq!(s.poll(), None, "the injected MAIL was discarded");
        assert!(s.take_output().is_empty());
        let (out, _) = run(&mut s, "MAIL FROM:<a@y>\r\n");
        assert!(out.starts_with("503"), "EHLO is needed again: {out}");
        let (out, _) = run(&mut s, "EHLO c\r\nSTARTTLS\r\n");
        assert!(!out.contains("STARTTLS\r\n250") && out.contains("503 5.5.1 TLS already active"));
    }

    #[test]
    fn storage_failure_is_451() {
        let mut s = session();
        s.feed(b"EHLO c\r\nMAIL FROM:<a@y>\r\nRCPT TO:<b@x>\r\nDATA\r\n");
        loop {
            match s.poll() {
                Some(SmtpRequest::CheckRecipient(_)) => s.rcpt_verdict(RcptVerdict::Accept(7)),
                Some(SmtpRequest::BeginMessage { .. }) => s.data_ready(true),
                None => break,
                Some(r) => panic!("{r:?}"),
            }
        }
        s.feed(b"x\r\n.\r\n");
        assert_eq!(s.poll(), Some(SmtpRequest::MessageData(b"x\r\n".to_vec())));
        assert_eq!(
            s.poll(),
            Some(SmtpRequest::EndMessage {
                recipients: vec![7]
            })
        );
        s.message_stored(StoreOutcome::Failed);
        assert!(String::from_utf8(s.take_output()).unwrap().ends_with(
            "451 4.3.0 Temporary storage failure, message not accepted; try again later\r\n"
        ));
    }
}
