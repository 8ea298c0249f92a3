/// What the trace headers of a received message record.
pub struct Trace<'a> {
    /// The EHLO/HELO argument as the client gave it.
    pub helo: &'a str,
    /// The client's address.
    pub peer_ip: &'a str,
    /// This server's name.
    pub hostname: &'a str,
    /// "ESMTP" or "SMTP", after EHLO or HELO.
    pub protocol: &'a str,
    /// The queue id, for the Received header.
    pub id: &'a str,
    /// Named in a "for" clause when the message has exactly one recipient.
    pub single_recipient: Option<&'a str>,
    /// RFC 5322 date-time.
    pub date: &'a str,
}

/// The Received header (RFC 5321 section 4.4), CRLF-terminated. Client-supplied text is
/// sanitised so that it can never break out of its header.
pub fn trace_headers(t: &Trace<'_>) -> String {
    let helo = sanitize(t.helo);
    let mut s = format!(
        "Received: from {helo} ([{}])\r\n\tby {} (Tern) with {} id {}",
        t.peer_ip, t.hostname, t.protocol, t.id
    );
    if let Some(r) = t.single_recipient {
        s.push_str(&format!("\r\n\tfor <{}>", sanitize(r)));
    }
    s.push_str(&format!(";\r\n\t{}\r\n", t.date));
    s
}

/// The Return-Path of a copy delivered here (RFC 5321 section 4.4: added at final delivery
/// only, so a relayed copy never carries one) and the Delivered-To of its user, CRLF-terminated.
pub fn delivery_headers(reverse_path: &str, user: &str) -> String {
    format!(
        "Return-Path: <{}>\r\nDelivered-To: {}\r\n",
        sanitize(reverse_path),
        sanitize(user)
    )
}

fn sanitize(s: &str) -> String {
    s.chars()
        .take(255)
        .map(|c| {
            if c.is_control() || c == '(' || c == ')' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_well_formed_and_sanitised() {
        let h = trace_headers(&Trace {
            helo: "evil\r\nBcc: x",
            peer_ip: "127.0.0.1",
            hostname: "mx.example",
            protocol: "ESMTP",
            id: "123",
            single_recipient: Some("c@d"),
            date: "Sun, 29 Nov 2026 07:00:00 +0000",
        });
        assert!(h.starts_with("Received: from evil??Bcc: x ([127.0.0.1])\r\n\tby mx.example"));
        assert!(h.ends_with("for <c@d>;\r\n\tSun, 29 Nov 2026 07:00:00 +0000\r\n"));
        assert_eq!(h.matches("\r\n").count(), 4);
        assert_eq!(
            delivery_headers("x@y\r\nBcc: z", "u@d"),
            "Return-Path: <x@y??Bcc: z>\r\nDelivered-To: u@d\r\n"
        );
        for line in h.split("\r\n") {
            assert!(!line.contains('\r') && !line.contains('\n'));
        }
    }
}
