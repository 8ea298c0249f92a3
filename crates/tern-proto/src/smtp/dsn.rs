//! Delivery status notifications (RFC 3464): the bounce a sender gets when a message could not
//! be delivered, as a `multipart/report` with a human part, a `message/delivery-status` part and
//! the original message (or only its header, RFC 3461 `RET=HDRS`).

use super::client::Reply;

/// What happened to one recipient (RFC 3464 section 2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnAction {
    /// Given up: a permanent refusal, or the queue lifetime ran out.
    Failed,
    /// Still being tried.
    Delayed,
    /// Delivered (NOTIFY=SUCCESS).
    Delivered,
    /// Handed to a server that does not speak DSN (NOTIFY=SUCCESS): no further report will
    /// come (RFC 3461 section 5.2.2).
    Relayed,
}

impl DsnAction {
    fn as_str(self) -> &'static str {
        match self {
            DsnAction::Failed => "failed",
            DsnAction::Delayed => "delayed",
            DsnAction::Delivered => "delivered",
            DsnAction::Relayed => "relayed",
        }
    }
}

/// One recipient of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsnRecipient {
    /// The address the message was for.
    pub address: String,
    /// The DSN `ORCPT` the submitter gave (`rfc822;addr`), if any.
    pub original_recipient: Option<String>,
    /// What happened.
    pub action: DsnAction,
    /// The status code (`5.1.1`).
    pub status: String,
    /// The server's reply, if a server gave one.
    pub diagnostic: Option<Reply>,
    /// The server that gave it.
    pub remote_mta: Option<String>,
}

/// A whole report.
#[derive(Debug, Clone)]
pub struct DsnReport<'a> {
    /// This server's name.
    pub reporting_mta: &'a str,
    /// Who gets the report: the original envelope sender.
    pub to: &'a str,
    /// The DSN `ENVID` of the original message.
    pub envid: Option<&'a str>,
    /// When the original message arrived (RFC 5322 date).
    pub arrival_date: &'a str,
    /// Now (RFC 5322 date).
    pub date: &'a str,
    /// The report's own Message-ID, with its angle brackets.
    pub message_id: &'a str,
    /// A MIME boundary that does not occur in the original.
    pub boundary: &'a str,
    /// The recipients reported on.
    pub recipients: &'a [DsnRecipient],
    /// The original message, or its header only.
    pub original: &'a [u8],
    /// Whether `original` is the whole message (`RET=FULL`).
    pub original_is_full: bool,
}

/// The status code a reply carries (RFC 3463 enhanced code at the start of its text), or one
/// derived from its class.
pub fn status_of(reply: &Reply) -> String {
    let first = reply.text.split_ascii_whitespace().next().unwrap_or("");
    let parts: Vec<&str> = first.split('.').collect();
    let class = (reply.code / 100).to_string();
    let enhanced = parts.len() == 3
        && parts[0] == class
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
    if enhanced {
        first.to_string()
    } else {
        format!("{class}.0.0")
    }
}

/// The header of a message: everything up to and including the blank line that ends it (the
/// whole message if there is none).
pub fn header_of(message: &[u8]) -> &[u8] {
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(pos) => &message[..pos + 4],
        None => message,
    }
}

/// Keeps a value on one line: a peer's text never opens a new header field.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The report as a complete message (CRLF line ends), ready to be queued from `<>`.
pub fn build(r: &DsnReport<'_>) -> Vec<u8> {
    let failed = r.recipients.iter().any(|x| x.action == DsnAction::Failed);
    let subject = if failed {
        "Undelivered Mail Returned to Sender"
    } else {
        "Delivery Status Notification"
    };
    let b = r.boundary;
    let mut m = String::new();
    m.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n\
         To: <{to}>\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: {id}\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{b}\"\r\n\
         \r\n\
         This is a MIME-encapsulated message.\r\n\
         \r\n\
         --{b}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         This is the mail system at host {host}.\r\n\r\n",
        host = r.reporting_mta,
        to = one_line(r.to),
        date = r.date,
        id = r.message_id,
    ));
    if failed {
        m.push_str(
            "Your message could not be delivered to one or more recipients. It is attached\r\n\
             below. The reason is given for each recipient.\r\n\r\n",
        );
    } else {
        m.push_str("Here is the status of your message for these recipients.\r\n\r\n");
    }
    for x in r.recipients {
        let why = match &x.diagnostic {
            Some(reply) => one_line(&reply.to_string()),
            None => format!("status {}", x.status),
        };
        m.push_str(&format!(
            "<{}>: {} ({})\r\n",
            one_line(&x.address),
            x.action.as_str(),
            why
        ));
    }
    m.push_str(&format!(
        "\r\n--{b}\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; {}\r\n",
        r.reporting_mta
    ));
    if let Some(envid) = r.envid {
        m.push_str(&format!("Original-Envelope-Id: {}\r\n", one_line(envid)));
    }
    m.push_str(&format!("Arrival-Date: {}\r\n", r.arrival_date));
    for x in r.recipients {
        m.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\n",
            one_line(&x.address)
        ));
        if let Some(orcpt) = &x.original_recipient {
            m.push_str(&format!("Original-Recipient: {}\r\n", one_line(orcpt)));
        }
        m.push_str(&format!(
            "Action: {}\r\nStatus: {}\r\n",
            x.action.as_str(),
            one_line(&x.status)
        ));
        if let Some(mta) = &x.remote_mta {
            m.push_str(&format!("Remote-MTA: dns; {}\r\n", one_line(mta)));
        }
        if let Some(reply) = &x.diagnostic {
            m.push_str(&format!(
                "Diagnostic-Code: smtp; {}\r\n",
                one_line(&reply.to_string())
            ));
        }
        m.push_str(&format!("Last-Attempt-Date: {}\r\n", r.date));
    }
    let kind = if r.original_is_full {
        "message/rfc822"
    } else {
        "text/rfc822-headers"
    };
    m.push_str(&format!("\r\n--{b}\r\nContent-Type: {kind}\r\n\r\n"));
    let mut out = m.into_bytes();
    out.extend_from_slice(r.original);
    if !r.original.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_comes_from_the_enhanced_code_or_the_class() {
        assert_eq!(status_of(&Reply::local(550, "5.1.1 no such user")), "5.1.1");
        assert_eq!(status_of(&Reply::local(550, "no such user")), "5.0.0");
        assert_eq!(status_of(&Reply::local(451, "4.7.1 greylisted")), "4.7.1");
        // A code of the wrong class is not trusted.
        assert_eq!(status_of(&Reply::local(550, "4.1.1 odd")), "5.0.0");
        assert_eq!(status_of(&Reply::local(550, "5.1 short")), "5.0.0");
    }

    #[test]
    fn report_has_the_three_parts_and_no_injected_headers() {
        let original = b"Subject: hi\r\nFrom: a@x.test\r\n\r\nbody\r\n";
        let recipients = [DsnRecipient {
            address: "b@y.test".into(),
            original_recipient: Some("rfc822;b@y.test".into()),
            action: DsnAction::Failed,
            status: "5.1.1".into(),
            diagnostic: Some(Reply::local(550, "5.1.1 unknown\r\nX-Evil: 1")),
            remote_mta: Some("mx.y.test".into()),
        }];
        let msg = build(&DsnReport {
            reporting_mta: "mx.tern.test",
            to: "a@x.test",
            envid: Some("E1"),
            arrival_date: "Tue, 1 Dec 2026 10:00:00 +0000",
            date: "Tue, 1 Dec 2026 10:05:00 +0000",
            message_id: "<dsn1@mx.tern.test>",
            boundary: "b-1",
            recipients: &recipients,
            original: header_of(original),
            original_is_full: false,
        });
        let text = String::from_utf8(msg).unwrap();
        assert!(text.contains("report-type=delivery-status"));
        assert!(text.contains("Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.tern.test\r\nOriginal-Envelope-Id: E1\r\n"));
        assert!(text.contains("Final-Recipient: rfc822; b@y.test\r\nOriginal-Recipient: rfc822;b@y.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"));
        assert!(text.contains("Content-Type: text/rfc822-headers\r\n\r\nSubject: hi\r\n"));
        assert!(!text.contains("body\r\n"), "headers only");
        assert!(!text.contains("\nX-Evil"), "{text}");
        assert!(text.ends_with("--b-1--\r\n"));
    }
}

/// The DSN parameters of `MAIL FROM` (RFC 3461 sections 4.3 and 4.4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DsnMail {
    /// `RET=FULL` (true) or `RET=HDRS` (false); `None` when not given.
    pub ret_full: Option<bool>,
    /// `ENVID`, decoded from xtext.
    pub envid: Option<String>,
}

/// The DSN parameters of one `RCPT TO` (RFC 3461 sections 4.1 and 4.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DsnRcpt {
    /// `NOTIFY`; `None` when not given (failures are then reported).
    pub notify: Option<NotifySet>,
    /// `ORCPT` as `type;address`, the address decoded from xtext.
    pub orcpt: Option<String>,
}

/// `NOTIFY=NEVER` is all false.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifySet {
    /// SUCCESS.
    pub success: bool,
    /// FAILURE.
    pub failure: bool,
    /// DELAY.
    pub delay: bool,
}

/// Decodes xtext (RFC 3461 section 4): printable ASCII, `+XX` for anything else.
pub fn decode_xtext(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                let hex = s.get(i + 1..i + 3)?;
                if !hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
                {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'!'..=b'~' if bytes[i] != b'=' => {
                out.push(bytes[i]);
                i += 1;
            }
            _ => return None,
        }
    }
    let text = String::from_utf8(out).ok()?;
    // Decoded values end up in report fields: no line breaks or other controls.
    (!text.contains(|c: char| c.is_control())).then_some(text)
}

/// `NOTIFY=` value: `NEVER`, or a comma list of SUCCESS, FAILURE, DELAY.
pub fn parse_notify(v: &str) -> Option<NotifySet> {
    if v.eq_ignore_ascii_case("NEVER") {
        return Some(NotifySet::default());
    }
    let mut n = NotifySet::default();
    for word in v.split(',') {
        match word.to_ascii_uppercase().as_str() {
            "SUCCESS" => n.success = true,
            "FAILURE" => n.failure = true,
            "DELAY" => n.delay = true,
            _ => return None,
        }
    }
    Some(n)
}

/// `ORCPT=` value: `addr-type;xtext`.
pub fn parse_orcpt(v: &str) -> Option<String> {
    let (kind, addr) = v.split_once(';')?;
    if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return None;
    }
    let addr = decode_xtext(addr)?;
    (!addr.is_empty() && addr.len() <= 500).then(|| format!("{kind};{addr}"))
}

#[cfg(test)]
mod params_tests {
    use super::*;

    #[test]
    fn xtext_notify_and_orcpt() {
        assert_eq!(decode_xtext("abc+2Bdef").as_deref(), Some("abc+def"));
        assert_eq!(decode_xtext("a+0Db"), None, "no control characters");
        assert_eq!(decode_xtext("a+zz"), None);
        assert_eq!(decode_xtext("a=b"), None);
        assert_eq!(parse_notify("NEVER"), Some(NotifySet::default()));
        assert_eq!(
            parse_notify("success,Delay"),
            Some(NotifySet {
                success: true,
                failure: false,
                delay: true
            })
        );
        assert_eq!(parse_notify("SUCCESS,SOMETIMES"), None);
        assert_eq!(
            parse_orcpt("rfc822;bob+40example.com").as_deref(),
            Some("rfc822;bob@example.com")
        );
        assert_eq!(parse_orcpt("bob@example.com"), None);
    }
}
