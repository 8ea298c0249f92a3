//! Reading a message's header as it streams past, sans-IO: the submission fixes and the
//! loop check (Delivered-To) read fields from it without holding the body.

/// Header bytes buffered at most while looking for the end of the header. Past this, what was
/// seen is all that is read (nothing is lost: the data itself always passes through).
pub const MAX_HEADER: usize = 256 * 1024;

/// Keeps the header block of a message (up to [`MAX_HEADER`]) as its data goes by.
#[derive(Debug, Default)]
pub struct HeaderCapture {
    buf: Vec<u8>,
    /// The end of the header was found (or the cap reached): later data is not looked at.
    complete: bool,
}

impl HeaderCapture {
    /// The next part of the message data (unstuffed, CRLF line ends).
    pub fn push(&mut self, data: &[u8]) {
        if self.complete {
            return;
        }
        let from = self.buf.len().saturating_sub(3);
        let room = MAX_HEADER.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&data[..data.len().min(room)]);
        if let Some(end) = header_end(&self.buf, from) {
            self.buf.truncate(end);
            self.complete = true;
        } else if self.buf.len() >= MAX_HEADER {
            self.complete = true;
        }
    }

    /// The header block seen (all of it once complete, else what the cap let in).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The values of every field called `name` (case-insensitive), unfolded and trimmed.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = String> + 'a {
        fields(&self.buf)
            .filter(move |f| field_name(f).eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| {
                let value = f.splitn(2, |&b| b == b':').nth(1).unwrap_or_default();
                let unfolded: Vec<u8> = value
                    .iter()
                    .copied()
                    .filter(|&b| b != b'\r' && b != b'\n')
                    .collect();
                String::from_utf8_lossy(unfolded.trim_ascii()).into_owned()
            })
    }

    /// The addresses of the message's `Delivered-To` fields, lower-cased (angle brackets, if a
    /// sender put some, removed).
    pub fn delivered_to(&self) -> Vec<String> {
        self.values("delivered-to")
            .map(|v| {
                v.trim_matches(|c| c == '<' || c == '>')
                    .to_ascii_lowercase()
            })
            .filter(|v| !v.is_empty())
            .collect()
    }
}

/// Where the body starts: the offset of the empty line (CRLF CRLF) that ends the header, past
/// the header's own last CRLF. A message starting with an empty line has an empty header.
/// Searches from offset `from` on.
pub(crate) fn header_end(buf: &[u8], from: usize) -> Option<usize> {
    if buf.starts_with(b"\r\n") {
        return Some(0);
    }
    buf[from..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| from + i + 2)
}

/// The header fields, each with its continuation lines and its CRLF.
pub(crate) fn fields(header: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = header;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = 0;
        loop {
            match rest[end..].windows(2).position(|w| w == b"\r\n") {
                Some(i) => {
                    end += i + 2;
                    // A line starting with a space or a tab continues the field.
                    if !matches!(rest.get(end), Some(b' ' | b'\t')) {
                        break;
                    }
                }
                None => {
                    end = rest.len();
                    break;
                }
            }
        }
        let (field, tail) = rest.split_at(end);
        rest = tail;
        Some(field)
    })
}

pub(crate) fn field_name(field: &[u8]) -> &[u8] {
    let name = field.split(|&b| b == b':').next().unwrap_or(field);
    name.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_to_is_read_in_any_chunking_and_only_from_the_header() {
        let message = b"Return-Path: <a@x>\r\nDelivered-To: Info@Example.TEST\r\nSubject: s\r\nDelivered-To:\r\n <bob@x.test>\r\n\r\nDelivered-To: body@x.test\r\n";
        for chunk in [1, 2, 3, 7, 1000] {
            let mut h = HeaderCapture::default();
            for part in message.chunks(chunk) {
                h.push(part);
            }
            assert_eq!(
                h.delivered_to(),
                vec!["info@example.test", "bob@x.test"],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn a_huge_header_is_capped() {
        let mut h = HeaderCapture::default();
        h.push(b"Delivered-To: a@x.test\r\n");
        let filler = format!("X-Filler: {}\r\n", "y".repeat(1000));
        for _ in 0..1000 {
            h.push(filler.as_bytes());
        }
        h.push(b"Delivered-To: late@x.test\r\n\r\n");
        assert!(h.buf.len() <= MAX_HEADER);
        assert_eq!(
            h.delivered_to().first().map(String::as_str),
            Some("a@x.test")
        );
    }
}
