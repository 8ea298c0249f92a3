//! The sending side of SMTP (RFC 5321) as a state machine, for remote delivery: greeting,
//! EHLO (HELO if refused), STARTTLS (RFC 3207), AUTH PLAIN (RFC 4954) towards a smart host,
//! then transactions on the same connection, pipelined (RFC 2920) when the server allows it.
//!
//! Feed it the server's bytes with [`SmtpClient::feed`] and act on what
//! [`SmtpClient::poll`] returns; start a transaction with [`SmtpClient::send_mail`] when it
//! says [`ClientAction::Ready`]. The body itself is streamed by the caller (through
//! [`crate::dot::RetrEncoder`], which stuffs dots and ends the data), who then calls
//! [`SmtpClient::body_sent`].

use crate::line::{Line, LineBuffer};
use base64::Engine as _;
use std::collections::VecDeque;
use std::time::Duration;

/// When to use STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// Use it when the server offers it, go on in clear otherwise (RFC 7435).
    Opportunistic,
    /// Refuse to send in clear: a server that does not offer it fails the connection.
    Required,
}

/// Settings of one outgoing connection.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The name this side gives in EHLO.
    pub helo_name: String,
    /// STARTTLS policy.
    pub tls: TlsPolicy,
    /// The connection is TLS from the start (a smart host on port 465).
    pub implicit_tls: bool,
    /// Credentials for AUTH PLAIN (a smart host); only ever sent inside TLS.
    pub auth: Option<(String, String)>,
    /// Time allowed for most replies (RFC 5321 section 4.5.3.2: 5 minutes).
    pub command_timeout: Duration,
    /// Time allowed for the reply to the end of data (RFC 5321: 10 minutes).
    pub final_timeout: Duration,
}

/// A server reply: its code and its text (lines joined with a space).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text of every line, joined.
    pub text: String,
}

impl Reply {
    /// A reply made on this side, for conditions the server did not report.
    pub fn local(code: u16, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 5xx: retrying will not help.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// One message's envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The reverse path (empty for the null sender).
    pub sender: String,
    /// The forward paths.
    pub recipients: Vec<String>,
    /// Octets of the body, declared with SIZE when the server supports it.
    pub size: u64,
}

/// What the caller must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAction {
    /// Write these bytes.
    Send(Vec<u8>),
    /// Write what was asked before, run the TLS handshake, then call
    /// [`SmtpClient::tls_established`].
    StartTls,
    /// Stream the body, dot-stuffed and ended with ".\r\n", then call [`SmtpClient::body_sent`].
    SendBody,
    /// The transaction ended; per recipient, in order, the reply that decides its fate (2xx:
    /// delivered). The connection is ready for another transaction.
    TransactionDone(Vec<Reply>),
    /// The connection is ready: call [`SmtpClient::send_mail`] or [`SmtpClient::quit`].
    Ready,
    /// The connection cannot be used (refused greeting, TLS required and not offered, failed
    /// AUTH, a protocol error); every recipient of a transaction in progress gets this reply.
    Failed(Reply),
    /// QUIT was answered; close the connection.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Auth,
    Mail,
    Rcpt(usize),
    Data,
    /// The end of data of a transaction whose recipients were all refused (the server
    /// answered 354 to a pipelined DATA anyway): its reply does not matter.
    DiscardedData,
    EndOfData,
    Rset,
    Quit,
}

#[derive(Debug, Default)]
struct Extensions {
    starttls: bool,
    pipelining: bool,
    size: bool,
    auth_plain: bool,
}

struct Transaction {
    envelope: Envelope,
    mail_reply: Option<Reply>,
    rcpt_replies: Vec<Option<Reply>>,
}

/// An SMTP client session (see the module documentation).
pub struct SmtpClient {
    config: ClientConfig,
    input: LineBuffer,
    /// Lines of the reply being read.
    reply_lines: Vec<String>,
    expect: VecDeque<Expect>,
    actions: VecDeque<ClientAction>,
    extensions: Extensions,
    tls_active: bool,
    transaction: Option<Transaction>,
    failed: bool,
}

/// Lines of one reply beyond which the server is taken to be broken.
const MAX_REPLY_LINES: usize = 200;

impl SmtpClient {
    /// A session on a fresh connection; it first waits for the greeting.
    pub fn new(config: ClientConfig) -> Self {
        let tls_active = config.implicit_tls;
        Self {
            config,
            input: LineBuffer::new(crate::line::MAX_COMMAND_LINE),
            reply_lines: Vec::new(),
            expect: VecDeque::from([Expect::Greeting]),
            actions: VecDeque::new(),
            extensions: Extensions::default(),
            tls_active,
            transaction: None,
            failed: false,
        }
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls_active
    }

    /// How long to wait for the next reply.
    pub fn reply_timeout(&self) -> Duration {
        match self.expect.front() {
            Some(Expect::EndOfData | Expect::DiscardedData) => self.config.final_timeout,
            _ => self.config.command_timeout,
        }
    }

    /// Whether the session waits for the server.
    pub fn awaits_reply(&self) -> bool {
        !self.expect.is_empty() && !self.failed
    }

    /// Bytes from the server.
    pub fn feed(&mut self, data: &[u8]) {
        if self.failed {
            return;
        }
        self.input.feed(data);
        while !self.failed {
            match self.input.next_line() {
                Some(Line::Complete(line)) => self.line(&line),
                Some(Line::TooLong) => self.fail(Reply::local(
                    421,
                    "4.5.0 over-long reply line from the server",
                )),
                None => break,
            }
        }
    }

    /// The server closed the connection.
    pub fn closed(&mut self) {
        if self.expect.front() == Some(&Expect::Quit) {
            self.expect.clear();
            self.actions.push_back(ClientAction::Closed);
        } else if !self.failed {
            self.fail(Reply::local(421, "4.4.2 connection closed by the server"));
        }
    }

    /// The server did not answer in time.
    pub fn timed_out(&mut self) {
        if !self.failed {
            self.fail(Reply::local(421, "4.4.2 timeout waiting for the server"));
        }
    }

    /// The next thing to do.
    pub fn poll(&mut self) -> Option<ClientAction> {
        self.actions.pop_front()
    }

    /// The TLS handshake succeeded: say EHLO again (RFC 3207 section 4.2).
    pub fn tls_established(&mut self) {
        self.tls_active = true;
        self.input.clear();
        self.extensions = Extensions::default();
        self.ehlo();
    }

    /// Starts a transaction (only after [`ClientAction::Ready`] or a
    /// [`ClientAction::TransactionDone`]).
    pub fn send_mail(&mut self, envelope: Envelope) {
        let mut mail = format!("MAIL FROM:<{}>", envelope.sender);
        if self.extensions.size {
            mail.push_str(&format!(" SIZE={}", envelope.size));
        }
        mail.push_str("\r\n");
        let count = envelope.recipients.len();
        self.transaction = Some(Transaction {
            rcpt_replies: vec![None; count],
            mail_reply: None,
            envelope,
        });
        if self.extensions.pipelining {
            // RFC 2920: MAIL, every RCPT and DATA in one go; the replies come back in order.
            let mut out = mail.into_bytes();
            if let Some(t) = &self.transaction {
                for r in &t.envelope.recipients {
                    out.extend_from_slice(format!("RCPT TO:<{r}>\r\n").as_bytes());
                }
            }
            out.extend_from_slice(b"DATA\r\n");
            self.expect.push_back(Expect::Mail);
            self.expect.extend((0..count).map(Expect::Rcpt));
            self.expect.push_back(Expect::Data);
            self.actions.push_back(ClientAction::Send(out));
        } else {
            self.send(mail.into_bytes(), Expect::Mail);
        }
    }

    /// The body and its terminating dot were written.
    pub fn body_sent(&mut self) {
        self.expect.push_back(Expect::EndOfData);
    }

    /// Ends the session politely.
    pub fn quit(&mut self) {
        self.send(b"QUIT\r\n".to_vec(), Expect::Quit);
    }

    fn send(&mut self, bytes: Vec<u8>, expect: Expect) {
        self.expect.push_back(expect);
        self.actions.push_back(ClientAction::Send(bytes));
    }

    fn fail(&mut self, reply: Reply) {
        // A failure always reads as one: a server answering 2xx or 3xx where nothing but an
        // error can come must never make a recipient look delivered.
        let reply = if reply.code < 400 {
            Reply::local(
                421,
                format!("4.5.0 unexpected reply from the server: {reply}"),
            )
        } else {
            reply
        };
        self.failed = true;
        self.expect.clear();
        self.transaction = None;
        self.actions.push_back(ClientAction::Failed(reply));
    }

    fn ehlo(&mut self) {
        let cmd = format!("EHLO {}\r\n", self.config.helo_name);
        self.send(cmd.into_bytes(), Expect::Ehlo);
    }

    fn line(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let code = text
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|c| (200..600).contains(c));
        let Some(code) = code else {
            return self.fail(Reply::local(421, "4.5.0 malformed reply from the server"));
        };
        let more = text.as_bytes().get(3) == Some(&b'-');
        self.reply_lines
            .push(text.get(4..).unwrap_or("").trim_end().to_string());
        if more {
            if self.reply_lines.len() > MAX_REPLY_LINES {
                self.fail(Reply::local(421, "4.5.0 endless reply from the server"));
            }
            return;
        }
        let lines = std::mem::take(&mut self.reply_lines);
        let Some(expect) = self.expect.pop_front() else {
            return self.fail(Reply::local(421, "4.5.0 unexpected reply from the server"));
        };
        self.reply(expect, code, lines);
    }

    fn reply(&mut self, expect: Expect, code: u16, lines: Vec<String>) {
        let reply = Reply {
            code,
            text: lines.join(" "),
        };
        match expect {
            Expect::Greeting if code == 220 => self.ehlo(),
            Expect::Greeting => self.fail(reply),
            Expect::Ehlo if reply.is_positive() => {
                self.extensions = parse_extensions(&lines);
                self.after_hello();
            }
            // An old server: HELO, without extensions (so without STARTTLS).
            Expect::Ehlo => {
                let cmd = format!("HELO {}\r\n", self.config.helo_name);
                self.send(cmd.into_bytes(), Expect::Helo);
            }
            Expect::Helo if reply.is_positive() => self.after_hello(),
            Expect::Helo => self.fail(reply),
            Expect::StartTls if code == 220 => self.actions.push_back(ClientAction::StartTls),
            Expect::StartTls if self.config.tls == TlsPolicy::Required => self.fail(Reply::local(
                421,
                format!("4.7.0 TLS required but STARTTLS was refused: {reply}"),
            )),
            Expect::StartTls => {
                // Opportunistic: go on in clear, without trying again.
                self.extensions.starttls = false;
                self.after_hello();
            }
            Expect::Auth if code == 235 => self.actions.push_back(ClientAction::Ready),
            Expect::Auth => self.fail(reply),
            Expect::Mail => {
                if let Some(t) = self.transaction.as_mut() {
                    t.mail_reply = Some(reply.clone());
                }
                if !self.extensions.pipelining {
                    if reply.is_positive() {
                        self.next_rcpt(0);
                    } else {
                        self.finish_transaction();
                    }
                }
            }
            Expect::Rcpt(i) => {
                if let Some(slot) = self
                    .transaction
                    .as_mut()
                    .and_then(|t| t.rcpt_replies.get_mut(i))
                {
                    *slot = Some(reply);
                }
                if !self.extensions.pipelining {
                    self.next_rcpt(i + 1);
                }
            }
            Expect::Data if code == 354 => {
                if self.any_recipient_accepted() {
                    self.actions.push_back(ClientAction::SendBody);
                } else {
                    // Nothing to deliver, but the server waits for data: end it at once.
                    self.send(b".\r\n".to_vec(), Expect::DiscardedData);
                }
            }
            Expect::Data => {
                // Refused (all recipients failed, or MAIL did): per-recipient replies stand.
                // Anything but 354 is a refusal, even a 2xx: the body was never sent.
                let reply = if reply.code < 400 {
                    Reply::local(451, format!("4.5.0 unexpected reply to DATA: {reply}"))
                } else {
                    reply
                };
                if let Some(t) = self.transaction.as_mut() {
                    if t.mail_reply.as_ref().is_some_and(|r| r.is_positive()) {
                        for slot in t.rcpt_replies.iter_mut() {
                            if slot.as_ref().is_some_and(|r| r.is_positive()) {
                                *slot = Some(reply.clone());
                            }
                        }
                    }
                }
                self.finish_transaction();
            }
            Expect::DiscardedData => self.finish_transaction(),
            Expect::EndOfData => {
                if let Some(t) = self.transaction.as_mut() {
                    for slot in t.rcpt_replies.iter_mut() {
                        if slot.as_ref().is_some_and(|r| r.is_positive()) {
                            *slot = Some(reply.clone());
                        }
                    }
                }
                self.finish_transaction();
            }
            Expect::Rset if reply.is_positive() => {}
            Expect::Rset => self.fail(reply),
            Expect::Quit => {
                self.expect.clear();
                self.actions.push_back(ClientAction::Closed);
            }
        }
    }

    fn any_recipient_accepted(&self) -> bool {
        self.transaction.as_ref().is_some_and(|t| {
            t.mail_reply.as_ref().is_some_and(|r| r.is_positive())
                && t.rcpt_replies
                    .iter()
                    .any(|r| r.as_ref().is_some_and(|r| r.is_positive()))
        })
    }

    /// Without pipelining: the next RCPT, or DATA once all were sent (if any was accepted).
    fn next_rcpt(&mut self, i: usize) {
        let next = self
            .transaction
            .as_ref()
            .and_then(|t| t.envelope.recipients.get(i).cloned());
        match next {
            Some(r) => self.send(format!("RCPT TO:<{r}>\r\n").into_bytes(), Expect::Rcpt(i)),
            None if self.any_recipient_accepted() => self.send(b"DATA\r\n".to_vec(), Expect::Data),
            None => self.finish_transaction(),
        }
    }

    /// Reports the transaction; after a refusal the server is reset for the next one.
    fn finish_transaction(&mut self) {
        let Some(t) = self.transaction.take() else {
            return;
        };
        let mail = t.mail_reply.clone();
        let outcome: Vec<Reply> = t
            .rcpt_replies
            .into_iter()
            .map(|r| match (&mail, r) {
                (Some(m), _) if !m.is_positive() => m.clone(),
                (_, Some(r)) => r,
                (_, None) => Reply::local(451, "4.4.0 no reply for this recipient"),
            })
            .collect();
        let delivered = outcome.iter().all(Reply::is_positive);
        if !delivered {
            // RSET before the next transaction: a refused MAIL, RCPT or DATA may leave state
            // behind on the server. Its reply comes before anything sent later.
            self.send(b"RSET\r\n".to_vec(), Expect::Rset);
        }
        self.actions
            .push_back(ClientAction::TransactionDone(outcome));
    }

    fn after_hello(&mut self) {
        if !self.tls_active && self.extensions.starttls {
            return self.send(b"STARTTLS\r\n".to_vec(), Expect::StartTls);
        }
        if !self.tls_active && self.config.tls == TlsPolicy::Required {
            return self.fail(Reply::local(
                421,
                "4.7.0 TLS required but the server does not offer STARTTLS",
            ));
        }
        if let Some((user, password)) = self.config.auth.clone() {
            if !self.tls_active {
                return self.fail(Reply::local(
                    421,
                    "4.7.0 credentials are only sent over TLS, and the server offers none",
                ));
            }
            if !self.extensions.auth_plain {
                return self.fail(Reply::local(
                    421,
                    "4.7.0 the server does not offer AUTH PLAIN",
                ));
            }
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
            return self.send(format!("AUTH PLAIN {token}\r\n").into_bytes(), Expect::Auth);
        }
        self.actions.push_back(ClientAction::Ready);
    }
}

fn parse_extensions(lines: &[String]) -> Extensions {
    let mut e = Extensions::default();
    // The first line is the server's greeting name; keywords follow.
    for line in lines.iter().skip(1) {
        let mut words = line.split_ascii_whitespace();
        let Some(keyword) = words.next() else {
            continue;
        };
        match keyword.to_ascii_uppercase().as_str() {
            "STARTTLS" => e.starttls = true,
            "PIPELINING" => e.pipelining = true,
            "SIZE" => e.size = true,
            "AUTH" => e.auth_plain = words.any(|m| m.eq_ignore_ascii_case("PLAIN")),
            _ => {}
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClientConfig {
        ClientConfig {
            helo_name: "mx.tern.test".into(),
            tls: TlsPolicy::Opportunistic,
            implicit_tls: false,
            auth: None,
            command_timeout: Duration::from_secs(300),
            final_timeout: Duration::from_secs(600),
        }
    }

    fn drain(c: &mut SmtpClient) -> Vec<ClientAction> {
        std::iter::from_fn(|| c.poll()).collect()
    }

    fn sent(actions: &[ClientAction]) -> String {
        actions
            .iter()
            .filter_map(|a| match a {
                ClientAction::Send(b) => Some(String::from_utf8_lossy(b).to_string()),
                _ => None,
            })
            .collect()
    }

    fn envelope(recipients: &[&str]) -> Envelope {
        Envelope {
            sender: "a@tern.test".into(),
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            size: 42,
        }
    }

    #[test]
    fn pipelined_transaction_with_a_refused_recipient() {
        let mut c = SmtpClient::new(config());
        c.feed(b"220 sink ESMTP\r\n");
        assert_eq!(sent(&drain(&mut c)), "EHLO mx.tern.test\r\n");
        c.feed(b"250-sink\r\n250-PIPELINING\r\n250 SIZE 1000\r\n");
        assert_eq!(drain(&mut c), vec![ClientAction::Ready]);
        c.send_mail(envelope(&["x@r.test", "y@r.test"]));
        assert_eq!(
            sent(&drain(&mut c)),
            "MAIL FROM:<a@tern.test> SIZE=42\r\nRCPT TO:<x@r.test>\r\nRCPT TO:<y@r.test>\r\nDATA\r\n"
        );
        // Replies may arrive in any cut.
        for b in b"250 ok\r\n550 5.1.1 no such user\r\n250 ok\r\n354 go\r\n" {
            c.feed(&[*b]);
        }
        assert_eq!(drain(&mut c), vec![ClientAction::SendBody]);
        c.body_sent();
        c.feed(b"250 2.0.0 queued as X\r\n");
        let done = drain(&mut c);
        assert_eq!(sent(&done), "RSET\r\n", "reset after a partial refusal");
        let Some(ClientAction::TransactionDone(r)) = done.last() else {
            panic!("{done:?}")
        };
        assert_eq!(r[0].code, 550);
        assert_eq!(r[1], Reply::local(250, "2.0.0 queued as X"));
        c.feed(b"250 reset\r\n");
        assert!(drain(&mut c).is_empty());
        c.quit();
        assert_eq!(sent(&drain(&mut c)), "QUIT\r\n");
        c.feed(b"221 bye\r\n");
        assert_eq!(drain(&mut c), vec![ClientAction::Closed]);
    }

    #[test]
    fn without_pipelining_commands_wait_for_replies_and_data_is_skipped_when_all_refused() {
        let mut c = SmtpClient::new(config());
        c.feed(b"220 old\r\n");
        drain(&mut c);
        c.feed(b"250 old\r\n");
        assert_eq!(drain(&mut c), vec![ClientAction::Ready]);
        c.send_mail(envelope(&["x@r.test"]));
        assert_eq!(sent(&drain(&mut c)), "MAIL FROM:<a@tern.test>\r\n");
        c.feed(b"250 ok\r\n");
        assert_eq!(sent(&drain(&mut c)), "RCPT TO:<x@r.test>\r\n");
        c.feed(b"450 4.2.0 mailbox busy\r\n");
        let done = drain(&mut c);
        assert_eq!(sent(&done), "RSET\r\n");
        assert!(matches!(done.last(), Some(ClientAction::TransactionDone(r)) if r[0].code == 450));
    }

    #[test]
    fn refused_mail_fails_every_recipient_and_final_reply_decides_accepted_ones() {
        let mut c = SmtpClient::new(config());
        c.feed(b"220 s\r\n250-s\r\n250 PIPELINING\r\n");
        drain(&mut c);
        c.send_mail(envelope(&["x@r.test", "y@r.test"]));
        drain(&mut c);
        c.feed(b"552 5.3.4 too big\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no\r\n");
        let done = drain(&mut c);
        assert!(
            matches!(done.last(), Some(ClientAction::TransactionDone(r)) if r.iter().all(|r| r.code == 552)),
            "{done:?}"
        );
        c.feed(b"250 ok\r\n");
        c.send_mail(envelope(&["x@r.test"]));
        drain(&mut c);
        c.feed(b"250 ok\r\n250 ok\r\n354 go\r\n");
        drain(&mut c);
        c.body_sent();
        c.feed(b"451 4.3.0 try later\r\n");
        let done = drain(&mut c);
        assert!(matches!(done.last(), Some(ClientAction::TransactionDone(r)) if r[0].code == 451));
    }

    #[test]
    fn starttls_opportunistic_required_and_auth() {
        let mut c = SmtpClient::new(config());
        c.feed(b"220 s\r\n250-s\r\n250 STARTTLS\r\n");
        assert_eq!(sent(&drain(&mut c)), "EHLO mx.tern.test\r\nSTARTTLS\r\n");
        c.feed(b"220 go ahead\r\n");
        assert_eq!(drain(&mut c), vec![ClientAction::StartTls]);
        c.tls_established();
        assert!(c.is_tls());
        assert_eq!(sent(&drain(&mut c)), "EHLO mx.tern.test\r\n");
        c.feed(b"250 s\r\n");
        assert_eq!(drain(&mut c), vec![ClientAction::Ready]);

        // Opportunistic: a refused STARTTLS means clear text.
        let mut c = SmtpClient::new(config());
        c.feed(b"220 s\r\n250-s\r\n250 STARTTLS\r\n454 4.7.0 no\r\n");
        assert_eq!(drain(&mut c).last(), Some(&ClientAction::Ready));

        // Required: no STARTTLS, no mail.
        let mut c = SmtpClient::new(ClientConfig {
            tls: TlsPolicy::Required,
            ..config()
        });
        c.feed(b"220 s\r\n250 s\r\n");
        assert!(matches!(drain(&mut c).last(), Some(ClientAction::Failed(r)) if r.code == 421));

        // AUTH only inside TLS.
        let auth = ClientConfig {
            auth: Some(("u".into(), "p".into())),
            ..config()
        };
        let mut c = SmtpClient::new(auth.clone());
        c.feed(b"220 s\r\n250 s\r\n");
        assert!(matches!(
            drain(&mut c).last(),
            Some(ClientAction::Failed(_))
        ));
        let mut c = SmtpClient::new(ClientConfig {
            implicit_tls: true,
            ..auth
        });
        c.feed(b"220 s\r\n250-s\r\n250 AUTH LOGIN PLAIN\r\n");
        assert_eq!(
            sent(&drain(&mut c)),
            "EHLO mx.tern.test\r\nAUTH PLAIN AHUAcA==\r\n"
        );
        c.feed(b"235 ok\r\n");
        assert_eq!(drain(&mut c), vec![ClientAction::Ready]);
    }

    /// Found by fuzzing: a 2xx or 3xx where only an error fits must not read as a success.
    #[test]
    fn odd_codes_never_make_a_recipient_look_delivered() {
        let mut c = SmtpClient::new(config());
        c.feed(b"250 not a greeting\r\n");
        match drain(&mut c).last() {
            Some(ClientAction::Failed(r)) => assert!(r.code >= 400, "{r}"),
            other => panic!("{other:?}"),
        }
        let mut c = SmtpClient::new(config());
        c.feed(b"220 s\r\n250-s\r\n250 PIPELINING\r\n");
        drain(&mut c);
        c.send_mail(envelope(&["x@r.test"]));
        drain(&mut c);
        // DATA answered 250 instead of 354: the body was never sent.
        c.feed(b"250 ok\r\n250 ok\r\n250 data? sure\r\n");
        let done = drain(&mut c);
        let Some(ClientAction::TransactionDone(r)) = done.last() else {
            panic!("{done:?}")
        };
        assert!(!r[0].is_positive() && !r[0].is_permanent(), "{r:?}");
    }

    #[test]
    fn bad_servers_fail_the_connection_instead_of_hanging() {
        for input in [
            &b"554 go away\r\n"[..],
            b"hello\r\n",
            b"220 s\r\n550 no\r\n501 no\r\n",
        ] {
            let mut c = SmtpClient::new(config());
            c.feed(input);
            assert!(
                matches!(drain(&mut c).last(), Some(ClientAction::Failed(_))),
                "{input:?}"
            );
        }
        let mut c = SmtpClient::new(config());
        c.feed(b"220 s\r\n");
        drain(&mut c);
        c.closed();
        assert!(matches!(drain(&mut c).last(), Some(ClientAction::Failed(r)) if r.code == 421));
        let mut c = SmtpClient::new(config());
        let long = vec![b'2'; 10_000];
        c.feed(&long);
        c.feed(b"\r\n");
        assert!(matches!(
            drain(&mut c).last(),
            Some(ClientAction::Failed(_))
        ));
    }
}
