use super::command::{parse_command, Command};
use crate::line::{Line, LineBuffer};
use crate::sasl::{self, SaslError};
use crate::session::{Deadline, Session};
use std::time::{Duration, Instant};

/// Settings of one POP3 session.
#[derive(Debug, Clone)]
pub struct Pop3Config {
    /// Shown in the greeting.
    pub hostname: String,
    /// The CAPA IMPLEMENTATION value.
    pub implementation: String,
    /// Longest accepted command line, in octets, without CRLF.
    pub max_line: usize,
    /// Failed logins before the connection is closed.
    pub max_auth_failures: u32,
    /// Invalid commands before the connection is closed.
    pub max_errors: u32,
    /// Whether USER/PASS and AUTH are accepted on this connection as it is now.
    pub plaintext_auth_allowed: bool,
    /// Whether STLS can be offered (a certificate is configured and TLS is not up yet).
    pub stls_available: bool,
    /// The autologout timer (RFC 1939 section 3: at least 10 minutes). It bounds the wait for a
    /// whole command, from when the session starts waiting for it.
    pub idle_timeout: Duration,
    /// The CAPA EXPIRE value (RFC 2449 section 6.7) before login: `NEVER`, a number of days, and
    /// ` USER` when it may differ per user (then [`Pop3Session::set_expire`] gives theirs).
    pub expire: String,
}

impl Default for Pop3Config {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            implementation: "Tern".into(),
            max_line: crate::line::MAX_COMMAND_LINE,
            max_auth_failures: 3,
            max_errors: 20,
            plaintext_auth_allowed: true,
            stls_available: false,
            idle_timeout: Duration::from_secs(600),
            expire: "NEVER".into(),
        }
    }
}

/// One message of the maildrop as listed at login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaildropEntry {
    /// Octets RETR sends, CRLF line ends, before byte-stuffing.
    pub size: u64,
    /// The UIDL value (1 to 70 printable characters).
    pub uidl: String,
}

/// Work the driver must do before the session can go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pop3Request {
    /// Check the credentials and, if good, load the maildrop snapshot; answer with
    /// [`Pop3Session::login_succeeded`] or [`Pop3Session::login_failed`].
    Authenticate {
        /// The user name as the client gave it.
        username: String,
        /// The password as the client gave it.
        password: String,
    },
    /// Send the message at `index` (0-based in the snapshot): the status line from
    /// [`super::retrieve_ok_line`], then the body through a [`crate::dot::RetrEncoder`]; then
    /// report with [`Pop3Session::retrieve_finished`].
    Retrieve {
        /// 0-based index in the maildrop.
        index: usize,
        /// The size the listing gave, for the `+OK` line.
        size: u64,
        /// `TOP`: the number of body lines after the header; `None` for RETR.
        top_lines: Option<u64>,
    },
    /// The client quit from TRANSACTION: remove these messages (0-based indexes), then report
    /// with [`Pop3Session::update_finished`].
    Update {
        /// 0-based indexes of the messages marked deleted.
        deleted: Vec<usize>,
    },
    /// STLS was accepted: write the pending output, run the TLS handshake, then call
    /// [`Pop3Session::tls_established`] (or drop the connection if the handshake fails).
    StartTls,
}

/// Why a login did not work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginFailure {
    /// Unknown user or wrong password; the client is not told which.
    BadCredentials,
    /// The store could not answer; the client may retry later.
    Temporary,
    /// Login refused for now (for instance too many failures); the text says why.
    Delayed(String),
}

/// How a retrieval ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrieveOutcome {
    /// The status line and the whole response were written.
    Sent,
    /// The message or its body is gone (deleted by another session); nothing was written.
    Missing,
    /// The store failed before anything was written.
    Temporary,
}

/// How applying the deletions at QUIT ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Every marked message is gone.
    Applied,
    /// Some could not be removed (the store failed).
    Failed,
}

#[derive(Debug)]
enum State {
    Authorization { user: Option<String> },
    SaslPlain,
    SaslLoginUser,
    SaslLoginPass { username: String },
    Authenticating,
    Transaction,
    Retrieving,
    Updating,
    StartingTls,
    Closed,
}

struct Message {
    entry: MaildropEntry,
    deleted: bool,
}

/// A POP3 server session as a state machine. Feed it bytes with [`Pop3Session::feed`], call
/// [`Pop3Session::poll`] until it returns `None` (it wants more input) or a request, and write
/// out [`Pop3Session::take_output`] after each call.
pub struct Pop3Session {
    config: Pop3Config,
    input: LineBuffer,
    output: Vec<u8>,
    state: State,
    maildrop: Vec<Message>,
    auth_failures: u32,
    errors: u32,
    /// The autologout deadline for the command being waited for.
    command_deadline: Deadline,
}

impl Pop3Session {
    /// A session in the AUTHORIZATION state, its greeting queued.
    pub fn new(config: Pop3Config) -> Self {
        let mut s = Self {
            input: LineBuffer::new(config.max_line),
            output: Vec::with_capacity(256),
            state: State::Authorization { user: None },
            maildrop: Vec::new(),
            auth_failures: 0,
            errors: 0,
            command_deadline: Deadline::default(),
            config,
        };
        let greeting = format!("+OK {} POP3 server ready\r\n", s.config.hostname);
        s.output.extend_from_slice(greeting.as_bytes());
        s
    }

    /// Bytes the client sent.
    pub fn feed(&mut self, data: &[u8]) {
        self.input.feed(data);
    }

    /// Bytes to send to the client.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Whether output is waiting to be written.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// True once the connection should be closed (after writing any remaining output).
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// True in TRANSACTION state, where a dropped connection must not apply deletions.
    pub fn is_authenticated(&self) -> bool {
        matches!(
            self.state,
            State::Transaction | State::Retrieving | State::Updating
        )
    }

    /// Whether a request is outstanding (the driver owes a `*_finished`/login call).
    pub fn is_waiting(&self) -> bool {
        matches!(
            self.state,
            State::Authenticating | State::Retrieving | State::Updating | State::StartingTls
        )
    }

    /// The TLS handshake after STLS completed. Whatever the client sent after STLS in plaintext
    /// is discarded unread: a command injected before the handshake must never run inside TLS
    /// (the STARTTLS command-injection class, CVE-2011-0411).
    pub fn tls_established(&mut self) {
        self.input.clear();
        self.config.stls_available = false;
        self.config.plaintext_auth_allowed = true;
        self.state = State::Authorization { user: None };
    }

    /// Processes buffered input until a request for the driver comes up or input runs out.
    pub fn poll(&mut self) -> Option<Pop3Request> {
        loop {
            if self.is_waiting() || self.is_closed() {
                return None;
            }
            let line = self.input.next_line()?;
            // A whole command arrived: the next one gets the full autologout time, counted
            // from when the session starts waiting for it.
            self.command_deadline.restart();
            let line = match line {
                Line::Complete(l) => l,
                Line::TooLong => {
                    self.error("line too long");
                    continue;
                }
            };
            if let Some(req) = self.handle_line(&line) {
                return Some(req);
            }
        }
    }

    /// The autologout timer (RFC 1939 section 3) ran out.
    pub fn idle_timeout(&mut self) {
        self.reply_err("autologout: idle for too long, closing");
        self.state = State::Closed;
    }

    /// The server is stopping; pending deletions are not applied.
    pub fn shutdown(&mut self) {
        self.reply_err("[SYS/TEMP] server shutting down, try again shortly");
        self.state = State::Closed;
    }

    /// An administrator ended the session; pending deletions are not applied.
    pub fn disconnect(&mut self) {
        self.reply_err("[SYS/TEMP] session ended by the administrator");
        self.state = State::Closed;
    }

    /// Answer to [`Pop3Request::Authenticate`]: the login worked; `maildrop` is the snapshot the session serves.
    pub fn login_succeeded(&mut self, maildrop: Vec<MaildropEntry>) {
        let total: u64 = maildrop.iter().map(|m| m.size).sum();
        let n = maildrop.len();
        self.maildrop = maildrop
            .into_iter()
            .map(|entry| Message {
                entry,
                deleted: false,
            })
            .collect();
        self.state = State::Transaction;
        self.reply_ok(&format!("maildrop has {n} messages ({total} octets)"));
    }

    /// Answer to [`Pop3Request::Authenticate`]: the login did not work, and why.
    pub fn login_failed(&mut self, failure: LoginFailure) {
        self.state = State::Authorization { user: None };
        match failure {
            LoginFailure::BadCredentials => {
                self.auth_failures += 1;
                if self.auth_failures >= self.config.max_auth_failures {
                    self.reply_err(
                        "[AUTH] invalid user name or password; too many failures, closing",
                    );
                    self.state = State::Closed;
                } else {
                    self.reply_err("[AUTH] invalid user name or password");
                }
            }
            LoginFailure::Temporary => {
                self.reply_err("[SYS/TEMP] mail store temporarily unavailable, try again later")
            }
            LoginFailure::Delayed(why) => {
                // A refused attempt is still an attempt: it counts towards closing, so a
                // client cannot keep probing a locked-out account on one connection.
                self.auth_failures += 1;
                if self.auth_failures >= self.config.max_auth_failures {
                    self.reply_err(&format!("[LOGIN-DELAY] {why}; too many failures, closing"));
                    self.state = State::Closed;
                } else {
                    self.reply_err(&format!("[LOGIN-DELAY] {why}"));
                }
            }
        }
    }

    /// Answer to [`Pop3Request::Retrieve`], once the body has been sent (or could not be).
    pub fn retrieve_finished(&mut self, outcome: RetrieveOutcome) {
        self.state = State::Transaction;
        match outcome {
            RetrieveOutcome::Sent => {}
            RetrieveOutcome::Missing => {
                self.reply_err("[SYS/PERM] message was removed by another session")
            }
            RetrieveOutcome::Temporary => {
                self.reply_err("[SYS/TEMP] message temporarily unavailable, try again later")
            }
        }
    }

    /// Answer to [`Pop3Request::Update`]: whether the deletions were applied.
    pub fn update_finished(&mut self, outcome: UpdateOutcome) {
        let deleted = self.maildrop.iter().filter(|m| m.deleted).count();
        match outcome {
            UpdateOutcome::Applied => self.reply_ok(&format!(
                "{} signing off ({deleted} messages deleted)",
                self.config.hostname
            )),
            UpdateOutcome::Failed => {
                self.reply_err("[SYS/TEMP] some deleted messages were not removed")
            }
        }
        self.state = State::Closed;
    }

    fn reply_ok(&mut self, text: &str) {
        self.output.extend_from_slice(b"+OK ");
        self.output.extend_from_slice(text.as_bytes());
        self.output.extend_from_slice(b"\r\n");
    }

    fn reply_err(&mut self, text: &str) {
        self.output.extend_from_slice(b"-ERR ");
        self.output.extend_from_slice(text.as_bytes());
        self.output.extend_from_slice(b"\r\n");
    }

    fn error(&mut self, text: &str) {
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            self.reply_err(&format!("{text}; too many errors, closing"));
            self.state = State::Closed;
        } else {
            self.reply_err(text);
        }
    }

    fn handle_line(&mut self, line: &[u8]) -> Option<Pop3Request> {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::SaslPlain => {
                self.state = State::Authorization { user: None };
                let creds = sasl::decode_response(line).and_then(|m| sasl::parse_plain(&m));
                return self.sasl_outcome(creds);
            }
            State::SaslLoginUser => {
                self.state = State::Authorization { user: None };
                match sasl::login_username(line) {
                    Ok(username) => {
                        self.output.extend_from_slice(b"+ UGFzc3dvcmQ6\r\n");
                        self.state = State::SaslLoginPass { username };
                    }
                    Err(e) => self.sasl_error(e),
                }
                return None;
            }
            State::SaslLoginPass { username } => {
                self.state = State::Authorization { user: None };
                let creds = sasl::decode_response(line)
                    .and_then(|p| sasl::utf8(&p))
                    .map(|password| sasl::Credentials { username, password });
                return self.sasl_outcome(creds);
            }
            other => self.state = other,
        }
        let cmd = match parse_command(line) {
            Ok(c) => c,
            Err(e) => {
                self.error(&e);
                return None;
            }
        };
        if matches!(self.state, State::Authorization { .. }) {
            self.authorization(cmd)
        } else {
            self.transaction(cmd)
        }
    }

    /// The logged-in user's retention, for CAPA's EXPIRE (call before `login_succeeded`).
    pub fn set_expire(&mut self, value: String) {
        self.config.expire = value;
    }

    fn capa(&mut self) {
        let mut c = String::from("+OK capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n");
        c.push_str(&format!("EXPIRE {}\r\n", self.config.expire));
        if matches!(self.state, State::Authorization { .. }) {
            if self.config.plaintext_auth_allowed {
                c.push_str("USER\r\nSASL PLAIN LOGIN\r\n");
            }
            if self.config.stls_available {
                c.push_str("STLS\r\n");
            }
        }
        c.push_str(&format!(
            "IMPLEMENTATION {}\r\n.\r\n",
            self.config.implementation
        ));
        self.output.extend_from_slice(c.as_bytes());
    }

    fn plaintext_refused(&mut self) -> bool {
        if self.config.plaintext_auth_allowed {
            return false;
        }
        self.reply_err("[AUTH] plaintext authentication disallowed on non-secure connections; use STLS or the TLS port");
        true
    }

    fn authorization(&mut self, cmd: Command) -> Option<Pop3Request> {
        match cmd {
            Command::Capa => self.capa(),
            // RFC 1939 defines NOOP in the TRANSACTION state only.
            Command::Noop => self.error("NOOP is valid only after login"),
            Command::Quit => {
                self.reply_ok(&format!("{} signing off", self.config.hostname));
                self.state = State::Closed;
            }
            Command::User(name) => {
                if let Err(e) = sasl::check_identity(&name) {
                    self.sasl_error(e);
                } else if !self.plaintext_refused() {
                    self.reply_ok("send PASS");
                    self.state = State::Authorization { user: Some(name) };
                }
            }
            Command::Pass(password) => {
                if self.plaintext_refused() {
                    return None;
                }
                let State::Authorization { user } = &mut self.state else {
                    return None;
                };
                match user.take() {
                    Some(username) => {
                        self.state = State::Authenticating;
                        return Some(Pop3Request::Authenticate { username, password });
                    }
                    None => self.error("send USER first"),
                }
            }
            Command::Auth {
                mechanism: None, ..
            } => {
                self.output
                    .extend_from_slice(b"+OK supported mechanisms\r\nPLAIN\r\nLOGIN\r\n.\r\n");
            }
            Command::Auth {
                mechanism: Some(mech),
                initial_response,
            } => {
                if self.plaintext_refused() {
                    return None;
                }
                match (mech.as_str(), initial_response) {
                    ("PLAIN", None) => {
                        self.output.extend_from_slice(b"+ \r\n");
                        self.state = State::SaslPlain;
                    }
                    ("PLAIN", Some(ir)) => {
                        let creds = sasl::decode_response(&ir).and_then(|m| sasl::parse_plain(&m));
                        return self.sasl_outcome(creds);
                    }
                    ("LOGIN", None) => {
                        self.output.extend_from_slice(b"+ VXNlcm5hbWU6\r\n");
                        self.state = State::SaslLoginUser;
                    }
                    ("LOGIN", Some(ir)) => match sasl::login_username(&ir) {
                        Ok(username) => {
                            self.output.extend_from_slice(b"+ UGFzc3dvcmQ6\r\n");
                            self.state = State::SaslLoginPass { username };
                        }
                        Err(e) => self.sasl_error(e),
                    },
                    _ => self.error(&format!(
                        "unsupported SASL mechanism {mech}; use PLAIN or LOGIN"
                    )),
                }
            }
            Command::Apop => self.error("APOP is not supported; use USER/PASS or AUTH PLAIN"),
            Command::Stls => {
                if self.config.stls_available {
                    self.reply_ok("begin TLS negotiation");
                    self.state = State::StartingTls;
                    return Some(Pop3Request::StartTls);
                }
                self.error(
                    "STLS not available (no certificate configured, or TLS is already active)",
                );
            }
            Command::Unknown(k) => self.error(&format!("unknown command {k}")),
            Command::Stat
            | Command::List(_)
            | Command::Retr(_)
            | Command::Dele(_)
            | Command::Rset
            | Command::Top(..)
            | Command::Uidl(_) => self.error("log in first (USER/PASS or AUTH)"),
        }
        None
    }

    fn sasl_error(&mut self, e: SaslError) {
        match e {
            SaslError::Cancelled => self.reply_err("authentication cancelled"),
            SaslError::Malformed(why) => self.error(&format!("malformed SASL response: {why}")),
            SaslError::AuthzidMismatch => {
                self.error("[AUTH] logging in as another user is not supported")
            }
            SaslError::ControlInIdentity => {
                self.error("[AUTH] user names may not contain control characters")
            }
        }
    }

    fn sasl_outcome(&mut self, creds: Result<sasl::Credentials, SaslError>) -> Option<Pop3Request> {
        match creds {
            Ok(c) => {
                self.state = State::Authenticating;
                Some(Pop3Request::Authenticate {
                    username: c.username,
                    password: c.password,
                })
            }
            Err(e) => {
                self.sasl_error(e);
                None
            }
        }
    }

    /// Resolves a message-number argument to a 0-based index of a message not marked deleted.
    fn message_index(&mut self, arg: &str) -> Option<usize> {
        let n: usize = match arg.parse() {
            Ok(n) if arg.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                self.error(&format!("invalid message number {arg:.20}"));
                return None;
            }
        };
        if n == 0 || n > self.maildrop.len() {
            self.error(&format!(
                "no such message {n}; the maildrop has {}",
                self.maildrop.len()
            ));
            return None;
        }
        if self.maildrop[n - 1].deleted {
            self.error(&format!("message {n} already deleted"));
            return None;
        }
        Some(n - 1)
    }

    fn live(&self) -> (usize, u64) {
        self.maildrop
            .iter()
            .filter(|m| !m.deleted)
            .fold((0, 0), |(n, s), m| (n + 1, s + m.entry.size))
    }

    fn transaction(&mut self, cmd: Command) -> Option<Pop3Request> {
        match cmd {
            Command::Capa => self.capa(),
            Command::Noop => self.reply_ok(""),
            Command::Stat => {
                let (n, size) = self.live();
                self.reply_ok(&format!("{n} {size}"));
            }
            Command::List(None) => {
                let (n, size) = self.live();
                let mut out = format!("+OK {n} messages ({size} octets)\r\n");
                for (i, m) in self.maildrop.iter().enumerate().filter(|(_, m)| !m.deleted) {
                    out.push_str(&format!("{} {}\r\n", i + 1, m.entry.size));
                }
                out.push_str(".\r\n");
                self.output.extend_from_slice(out.as_bytes());
            }
            Command::List(Some(arg)) => {
                if let Some(i) = self.message_index(&arg) {
                    let size = self.maildrop[i].entry.size;
                    self.reply_ok(&format!("{} {size}", i + 1));
                }
            }
            Command::Uidl(None) => {
                let mut out = String::from("+OK unique-id listing follows\r\n");
                for (i, m) in self.maildrop.iter().enumerate().filter(|(_, m)| !m.deleted) {
                    out.push_str(&format!("{} {}\r\n", i + 1, m.entry.uidl));
                }
                out.push_str(".\r\n");
                self.output.extend_from_slice(out.as_bytes());
            }
            Command::Uidl(Some(arg)) => {
                if let Some(i) = self.message_index(&arg) {
                    let line = format!("{} {}", i + 1, self.maildrop[i].entry.uidl);
                    self.reply_ok(&line);
                }
            }
            Command::Retr(arg) => {
                let index = self.message_index(&arg)?;
                self.state = State::Retrieving;
                let size = self.maildrop[index].entry.size;
                return Some(Pop3Request::Retrieve {
                    index,
                    size,
                    top_lines: None,
                });
            }
            Command::Top(arg, lines) => {
                let index = self.message_index(&arg)?;
                let Ok(lines) = lines.parse::<u64>() else {
                    self.error(&format!("invalid line count {lines:.20}"));
                    return None;
                };
                self.state = State::Retrieving;
                let size = self.maildrop[index].entry.size;
                return Some(Pop3Request::Retrieve {
                    index,
                    size,
                    top_lines: Some(lines),
                });
            }
            Command::Dele(arg) => {
                if let Some(i) = self.message_index(&arg) {
                    self.maildrop[i].deleted = true;
                    self.reply_ok(&format!("message {} deleted", i + 1));
                }
            }
            Command::Rset => {
                for m in &mut self.maildrop {
                    m.deleted = false;
                }
                let (n, size) = self.live();
                self.reply_ok(&format!("maildrop has {n} messages ({size} octets)"));
            }
            Command::Quit => {
                let deleted: Vec<usize> = (0..self.maildrop.len())
                    .filter(|&i| self.maildrop[i].deleted)
                    .collect();
                if deleted.is_empty() {
                    self.update_finished(UpdateOutcome::Applied);
                    return None;
                }
                self.state = State::Updating;
                return Some(Pop3Request::Update { deleted });
            }
            Command::User(_) | Command::Pass(_) | Command::Auth { .. } | Command::Apop => {
                self.error("already logged in")
            }
            Command::Stls => self.error("STLS is only valid before login"),
            Command::Unknown(k) => self.error(&format!("unknown command {k}")),
        }
        None
    }
}

impl Session for Pop3Session {
    type Request = Pop3Request;

    fn feed(&mut self, data: &[u8]) {
        Pop3Session::feed(self, data)
    }

    fn poll(&mut self) -> Option<Pop3Request> {
        Pop3Session::poll(self)
    }

    fn take_output(&mut self) -> Vec<u8> {
        Pop3Session::take_output(self)
    }

    fn is_closed(&self) -> bool {
        Pop3Session::is_closed(self)
    }

    fn poll_timeout(&mut self, now: Instant) -> Option<Instant> {
        if self.is_closed() || self.is_waiting() {
            return None;
        }
        Some(self.command_deadline.arm(now, self.config.idle_timeout))
    }

    fn handle_timeout(&mut self, now: Instant) {
        if !self.is_closed() && self.command_deadline.expired(now) {
            self.idle_timeout();
        }
    }

    fn shutdown(&mut self) {
        Pop3Session::shutdown(self)
    }

    fn disconnect(&mut self) {
        Pop3Session::disconnect(self)
    }

    fn tls_established(&mut self) {
        Pop3Session::tls_established(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Pop3Session {
        let mut s = Pop3Session::new(Pop3Config::default());
        assert!(String::from_utf8(s.take_output())
            .unwrap()
            .starts_with("+OK"));
        s
    }

    fn run(s: &mut Pop3Session, input: &str) -> (String, Option<Pop3Request>) {
        s.feed(input.as_bytes());
        let req = s.poll();
        (String::from_utf8(s.take_output()).unwrap(), req)
    }

    fn logged_in(sizes: &[u64]) -> Pop3Session {
        let mut s = session();
        let (_, req) = run(&mut s, "USER a@x\r\nPASS secret word\r\n");
        assert_eq!(
            req,
            Some(Pop3Request::Authenticate {
                username: "a@x".into(),
                password: "secret word".into()
            })
        );
        s.login_succeeded(
            sizes
                .iter()
                .enumerate()
                .map(|(i, &size)| MaildropEntry {
                    size,
                    uidl: format!("uid{i}"),
                })
                .collect(),
        );
        s.take_output();
        s
    }

    #[test]
    fn stat_list_uidl() {
        let mut s = logged_in(&[10, 20]);
        let (out, _) = run(&mut s, "STAT\r\nLIST\r\nLIST 2\r\nUIDL\r\nUIDL 1\r\n");
        assert_eq!(
            out,
            "+OK 2 30\r\n+OK 2 messages (30 octets)\r\n1 10\r\n2 20\r\n.\r\n+OK 2 20\r\n\
             +OK unique-id listing follows\r\n1 uid0\r\n2 uid1\r\n.\r\n+OK 1 uid0\r\n"
        );
    }

    #[test]
    fn dele_rset_and_quit_applies() {
        let mut s = logged_in(&[10, 20, 30]);
        let (out, _) = run(
            &mut s,
            "DELE 2\r\nSTAT\r\nLIST 2\r\nDELE 2\r\nRSET\r\nDELE 1\r\nDELE 3\r\n",
        );
        assert!(out.starts_with(
            "+OK message 2 deleted\r\n+OK 2 40\r\n-ERR message 2 already deleted\r\n"
        ));
        assert!(out.contains("+OK maildrop has 3 messages (60 octets)"));
        let (_, req) = run(&mut s, "QUIT\r\n");
        assert_eq!(
            req,
            Some(Pop3Request::Update {
                deleted: vec![0, 2]
            })
        );
        s.update_finished(UpdateOutcome::Applied);
        assert!(String::from_utf8(s.take_output())
            .unwrap()
            .contains("2 messages deleted"));
        assert!(s.is_closed());
    }

    #[test]
    fn bad_arguments_get_errors_and_session_goes_on() {
        let mut s = logged_in(&[10]);
        let (out, req) = run(
            &mut s,
            "RETR 0\r\nRETR 2\r\nRETR x\r\nTOP 1 -1\r\nLIST -1\r\nFOO\r\nNOOP\r\n",
        );
        assert_eq!(req, None);
        assert_eq!(out.matches("-ERR").count(), 6, "{out}");
        assert!(out.ends_with("+OK \r\n"));
    }

    #[test]
    fn retr_and_top_requests() {
        let mut s = logged_in(&[10]);
        let (_, req) = run(&mut s, "RETR 1\r\nNOOP\r\n");
        assert_eq!(
            req,
            Some(Pop3Request::Retrieve {
                index: 0,
                size: 10,
                top_lines: None
            })
        );
        // Pipelined NOOP waits for the retrieval to finish.
        assert_eq!(s.poll(), None);
        assert!(s.take_output().is_empty());
        s.retrieve_finished(RetrieveOutcome::Sent);
        assert_eq!(s.poll(), None);
        assert_eq!(s.take_output(), b"+OK \r\n");
        let (_, req) = run(&mut s, "TOP 1 5\r\n");
        assert_eq!(
            req,
            Some(Pop3Request::Retrieve {
                index: 0,
                size: 10,
                top_lines: Some(5)
            })
        );
        s.retrieve_finished(RetrieveOutcome::Missing);
        assert!(String::from_utf8(s.take_output())
            .unwrap()
            .starts_with("-ERR [SYS/PERM]"));
    }

    #[test]
    fn auth_plain_with_and_without_initial_response() {
        let mut s = session();
        let ir = sasl::encode(b"\0a@x\0pw");
        let (_, req) = run(&mut s, &format!("AUTH PLAIN {ir}\r\n"));
        assert_eq!(
            req,
            Some(Pop3Request::Authenticate {
                username: "a@x".into(),
                password: "pw".into()
            })
        );
        s.login_failed(LoginFailure::BadCredentials);
        assert!(String::from_utf8(s.take_output())
            .unwrap()
            .starts_with("-ERR [AUTH]"));
        let (out, req) = run(&mut s, "AUTH PLAIN\r\n");
        assert_eq!((out.as_str(), req), ("+ \r\n", None));
        let (_, req) = run(&mut s, &format!("{ir}\r\n"));
        assert!(matches!(req, Some(Pop3Request::Authenticate { .. })));
    }

    #[test]
    fn auth_login_and_cancel() {
        let mut s = session();
        let (out, _) = run(&mut s, "AUTH LOGIN\r\n");
        assert_eq!(out, "+ VXNlcm5hbWU6\r\n");
        let (out, _) = run(&mut s, &format!("{}\r\n", sasl::encode(b"a@x")));
        assert_eq!(out, "+ UGFzc3dvcmQ6\r\n");
        let (out, _) = run(&mut s, "*\r\n");
        assert!(out.starts_with("-ERR authentication cancelled"));
        let (out, req) = run(
            &mut s,
            &format!(
                "AUTH LOGIN {}\r\n{}\r\n",
                sasl::encode(b"a@x"),
                sasl::encode(b"pw")
            ),
        );
        assert_eq!(out, "+ UGFzc3dvcmQ6\r\n");
        assert_eq!(
            req,
            Some(Pop3Request::Authenticate {
                username: "a@x".into(),
                password: "pw".into()
            })
        );
    }

    #[test]
    fn autologout_is_a_deadline_for_the_whole_command() {
        let mut s = session();
        let t0 = Instant::now();
        let limit = Pop3Config::default().idle_timeout;
        assert_eq!(s.poll_timeout(t0), Some(t0 + limit));
        // Trickled bytes of one command do not move the deadline.
        s.feed(b"CA");
        assert_eq!(s.poll(), None);
        let later = t0 + limit / 2;
        assert_eq!(s.poll_timeout(later), Some(t0 + limit));
        s.handle_timeout(later);
        assert!(!s.is_closed(), "not yet");
        s.handle_timeout(t0 + limit);
        assert!(s.is_closed());
        assert!(String::from_utf8(s.take_output())
            .unwrap()
            .contains("-ERR autologout"));
        // A complete command restarts the clock for the next one.
        let mut s = session();
        assert_eq!(s.poll_timeout(t0), Some(t0 + limit));
        s.feed(b"CAPA\r\n");
        assert_eq!(s.poll(), None);
        assert_eq!(s.poll_timeout(later), Some(later + limit));
    }

    #[test]
    fn noop_before_login_is_an_error() {
        let mut s = session();
        let (out, _) = run(&mut s, "NOOP\r\n");
        assert!(
            out.starts_with("-ERR NOOP is valid only after login"),
            "{out}"
        );
    }

    #[test]
    fn login_delay_refusals_count_towards_closing() {
        let mut s = session();
        for i in 0..3 {
            let (_, req) = run(&mut s, "USER a@x\r\nPASS pw\r\n");
            assert!(req.is_some());
            s.login_failed(LoginFailure::Delayed("locked".into()));
            assert!(String::from_utf8(s.take_output())
                .unwrap()
                .contains("-ERR [LOGIN-DELAY] locked"));
            assert_eq!(s.is_closed(), i == 2, "after {} refusals", i + 1);
        }
    }

    #[test]
    fn control_characters_in_user_names_are_refused() {
        let forged = "a@x\nINFO forged line";
        for attempt in [
            "USER a\u{1b}[31m@x\r\n".to_string(),
            "USER a\0@x\r\n".to_string(),
            format!(
                "AUTH PLAIN {}\r\n",
                sasl::encode(format!("\0{forged}\0pw").as_bytes())
            ),
            format!("AUTH LOGIN {}\r\n", sasl::encode(forged.as_bytes())),
        ] {
            let mut s = session();
            let (out, req) = run(&mut s, &attempt);
            assert_eq!(req, None, "{attempt:?}");
            assert!(
                out.contains("-ERR [AUTH] user names may not contain control characters"),
                "{attempt:?}: {out}"
            );
        }
        let mut s = session();
        let (_, _) = run(&mut s, "AUTH LOGIN\r\n");
        let (out, _) = run(&mut s, &format!("{}\r\n", sasl::encode(forged.as_bytes())));
        assert!(out.contains("control characters"), "{out}");
    }

    #[test]
    fn repeated_failures_close() {
        let mut s = session();
        for i in 0..3 {
            let (_, req) = run(&mut s, "USER a@x\r\nPASS bad\r\n");
            assert!(req.is_some());
            s.login_failed(LoginFailure::BadCredentials);
            s.take_output();
            assert_eq!(s.is_closed(), i == 2);
        }
    }

    #[test]
    fn transaction_commands_need_login_and_capa_lists() {
        let mut s = session();
        let (out, _) = run(&mut s, "STAT\r\nPASS x\r\nCAPA\r\n");
        assert!(out.starts_with("-ERR log in first"));
        assert!(out.contains("-ERR send USER first"));
        for cap in [
            "TOP",
            "USER",
            "UIDL",
            "RESP-CODES",
            "AUTH-RESP-CODE",
            "PIPELINING",
            "SASL PLAIN LOGIN",
            "IMPLEMENTATION Tern",
        ] {
            assert!(out.contains(&format!("\r\n{cap}\r\n")), "{cap} in {out}");
        }
    }

    #[test]
    fn plaintext_refusal() {
        let mut s = Pop3Session::new(Pop3Config {
            plaintext_auth_allowed: false,
            ..Default::default()
        });
        s.take_output();
        let (out, req) = run(&mut s, "CAPA\r\nUSER a@x\r\nAUTH PLAIN\r\n");
        assert_eq!(req, None);
        assert!(!out.contains("\r\nUSER\r\n") && !out.contains("SASL"));
        assert_eq!(out.matches("-ERR [AUTH]").count(), 2);
    }

    #[test]
    fn stls_discards_pipelined_plaintext_and_unlocks_auth() {
        let mut s = Pop3Session::new(Pop3Config {
            plaintext_auth_allowed: false,
            stls_available: true,
            ..Default::default()
        });
        s.take_output();
        let (out, _) = run(&mut s, "CAPA\r\n");
        assert!(out.contains("\r\nSTLS\r\n"));
        let (out, req) = run(&mut s, "STLS\r\nUSER injected@x\r\nPASS evil\r\n");
        assert_eq!(req, Some(Pop3Request::StartTls));
        assert_eq!(out, "+OK begin TLS negotiation\r\n");
        assert_eq!(s.poll(), None, "nothing runs before the handshake");
        s.tls_established();
        assert_eq!(s.poll(), None, "the injected commands were discarded");
        assert!(s.take_output().is_empty());
        let (out, _) = run(&mut s, "CAPA\r\nSTLS\r\n");
        assert!(!out.contains("\r\nSTLS\r\n") && out.contains("\r\nUSER\r\n"));
        assert!(out.contains("-ERR STLS not available"));
        let (_, req) = run(&mut s, "USER a@x\r\nPASS pw\r\n");
        assert!(matches!(req, Some(Pop3Request::Authenticate { .. })));
    }

    #[test]
    fn quit_without_deletions_needs_no_update() {
        let mut s = logged_in(&[1]);
        let (out, req) = run(&mut s, "QUIT\r\n");
        assert_eq!(req, None);
        assert!(out.starts_with("+OK"));
        assert!(s.is_closed());
    }
}
