//! What a server changes in the header of a message it accepts. On submission (RFC 6409
//! section 8): adds a `Date` and a `Message-ID` when the client left them out, and removes
//! `Bcc` (the blind copies must not reveal each other). On port 25 with sender authentication:
//! removes `Authentication-Results` fields that claim to be this server's (RFC 8601 section 5),
//! so that only the one it adds speaks in its name. Sans-IO: fed the message data as it
//! arrives, in any chunks, it hands back what to store.

use super::header::{field_name, fields, header_end, MAX_HEADER};

/// Fixes the header of one message.
#[derive(Debug)]
pub struct HeaderFixes {
    /// `Some` while the header is still being collected.
    pending: Option<Vec<u8>>,
    fixes: Fixes,
}

#[derive(Debug)]
enum Fixes {
    Submission { date: String, message_id: String },
    Inbound { authserv_id: String },
}

impl HeaderFixes {
    /// For a submitted message: `date` (RFC 5322 date-time) and `message_id` (with its angle
    /// brackets) are used when the message has none.
    pub fn submission(date: String, message_id: String) -> Self {
        Self {
            pending: Some(Vec::new()),
            fixes: Fixes::Submission { date, message_id },
        }
    }

    /// For a message whose sender this server authenticates as `authserv_id`.
    pub fn inbound(authserv_id: String) -> Self {
        Self {
            pending: Some(Vec::new()),
            fixes: Fixes::Inbound { authserv_id },
        }
    }

    /// The next part of the message data (unstuffed, CRLF line ends); appends to `out` what to
    /// store now.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let Some(buf) = self.pending.as_mut() else {
            out.extend_from_slice(data);
            return;
        };
        // Only the new bytes (and the three before them) can complete the end of the header:
        // each octet is looked at a bounded number of times, however small the chunks.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(data);
        if let Some(end) = header_end(buf, from) {
            let buf = self.pending.take().unwrap_or_default();
            self.fix(&buf[..end], out);
            out.extend_from_slice(&buf[end..]);
        } else if buf.len() > MAX_HEADER {
            out.extend_from_slice(&self.pending.take().unwrap_or_default());
        }
    }

    /// The end of the data: appends what is still held back.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(buf) = self.pending.take() {
            // A message that is all header (no empty line): the header runs to the end.
            self.fix(&buf, out);
        }
    }

    /// Writes the header fields but those to remove, plus those to add. `header` is the header
    /// block with its final CRLF but without the empty line.
    fn fix(&self, header: &[u8], out: &mut Vec<u8>) {
        let (mut has_date, mut has_id) = (false, false);
        for field in fields(header) {
            let name = field_name(field);
            let remove = match &self.fixes {
                Fixes::Submission { .. } => name.eq_ignore_ascii_case(b"bcc"),
                Fixes::Inbound { authserv_id } => {
                    name.eq_ignore_ascii_case(b"authentication-results")
                        && claims(field, authserv_id)
                }
            };
            if remove {
                continue;
            }
            has_date |= name.eq_ignore_ascii_case(b"date");
            has_id |= name.eq_ignore_ascii_case(b"message-id");
            out.extend_from_slice(field);
        }
        if !header.is_empty() && !header.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        if let Fixes::Submission { date, message_id } = &self.fixes {
            if !has_date {
                out.extend_from_slice(format!("Date: {date}\r\n").as_bytes());
            }
            if !has_id {
                out.extend_from_slice(format!("Message-ID: {message_id}\r\n").as_bytes());
            }
        }
    }
}

/// Whether an Authentication-Results field names `authserv_id` as its author (the first
/// token of its value, before any version number, comment or `;`; RFC 8601 section 2.2).
fn claims(field: &[u8], authserv_id: &str) -> bool {
    let value = field.splitn(2, |&b| b == b':').nth(1).unwrap_or_default();
    let value = String::from_utf8_lossy(value);
    let id = value
        .trim_start()
        .split(|c: char| c == ';' || c == '(' || c.is_whitespace())
        .next()
        .unwrap_or("");
    id.eq_ignore_ascii_case(authserv_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_removes_only_results_claiming_to_be_ours() {
        let message = b"Authentication-Results: mx.tern.test;\r\n\tdmarc=pass header.from=bank.test\r\nAuthentication-Results: other.example; spf=fail\r\nauthentication-results:MX.TERN.TEST 1; dkim=pass\r\nSubject: s\r\n\r\nAuthentication-Results: mx.tern.test; body text\r\n";
        for chunk in [1, 5, 1000] {
            let mut h = HeaderFixes::inbound("mx.tern.test".into());
            let mut out = Vec::new();
            for part in message.chunks(chunk) {
                h.push(part, &mut out);
            }
            h.finish(&mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "Authentication-Results: other.example; spf=fail\r\nSubject: s\r\n\r\nAuthentication-Results: mx.tern.test; body text\r\n",
                "chunk {chunk}"
            );
        }
    }

    fn fixed(message: &[u8], chunk: usize) -> String {
        let mut h =
            HeaderFixes::submission("Tue, 1 Dec 2026 22:00:00 +0000".into(), "<id@tern>".into());
        let mut out = Vec::new();
        for part in message.chunks(chunk.max(1)) {
            h.push(part, &mut out);
        }
        h.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn adds_date_and_message_id_and_drops_bcc_however_the_data_is_cut() {
        let message = b"From: a@x\r\nBcc: hidden@y,\r\n\tother@z\r\nTo: b@x\r\nSubject: hi\r\n\r\nBcc: in the body stays\r\n";
        let want = "From: a@x\r\nTo: b@x\r\nSubject: hi\r\nDate: Tue, 1 Dec 2026 22:00:00 +0000\r\nMessage-ID: <id@tern>\r\n\r\nBcc: in the body stays\r\n";
        for chunk in 1..=message.len() {
            assert_eq!(fixed(message, chunk), want, "chunks of {chunk}");
        }
    }

    #[test]
    fn keeps_what_the_client_gave() {
        let message = b"date: Mon, 30 Nov 2026 10:00:00 +0100\r\nMESSAGE-ID: <mine@client>\r\nSubject: x\r\n\r\nbody\r\n";
        assert_eq!(
            fixed(message, 7),
            String::from_utf8(message.to_vec()).unwrap()
        );
    }

    #[test]
    fn header_only_and_empty_header() {
        assert_eq!(
            fixed(b"Subject: only\r\n", 3),
            "Subject: only\r\nDate: Tue, 1 Dec 2026 22:00:00 +0000\r\nMessage-ID: <id@tern>\r\n"
        );
        assert_eq!(
            fixed(b"\r\nbody\r\n", 2),
            "Date: Tue, 1 Dec 2026 22:00:00 +0000\r\nMessage-ID: <id@tern>\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn a_huge_header_passes_unchanged() {
        let mut message = Vec::new();
        // Past the limit by more than a chunk before the header ends.
        while message.len() <= MAX_HEADER + 8192 {
            message.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        message.extend_from_slice(b"Bcc: kept@y\r\n\r\nbody\r\n");
        let out = fixed(&message, 4096);
        assert!(
            out.as_bytes() == &message[..],
            "changed ({} octets in, {} out)",
            message.len(),
            out.len()
        );
    }
}
