//! Splitting a byte stream into command lines, with a hard bound on line length.

/// The longest command line Tern accepts, in octets without the line end: far above RFC 5321's
/// 512 (plus extensions) and RFC 2449's 255, small enough that a line never costs much memory.
pub const MAX_COMMAND_LINE: usize = 2048;

/// One complete input line, without its line terminator.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line (CRLF or a lone LF stripped).
    Complete(Vec<u8>),
    /// The peer sent more than the limit without a line end; the excess was discarded up to and
    /// including the next LF so the session can resynchronise on the following command.
    TooLong,
}

/// Buffers input and hands out lines. Memory is bounded by `max_line` plus one read's worth:
/// an over-long line is dropped as it arrives instead of being accumulated.
#[derive(Debug)]
pub struct LineBuffer {
    buf: Vec<u8>,
    max_line: usize,
    /// True while discarding the rest of an over-long line.
    discarding: bool,
    /// Set when a discard finished and the `TooLong` verdict has not been handed out yet.
    overflow_pending: bool,
}

impl LineBuffer {
    /// A buffer for lines of at most `max_line` octets.
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_line,
            discarding: false,
            overflow_pending: false,
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, mut data: &[u8]) {
        if self.discarding {
            match memchr::memchr(b'\n', data) {
                Some(pos) => {
                    self.discarding = false;
                    self.overflow_pending = true;
                    data = &data[pos + 1..];
                }
                None => return,
            }
        }
        self.buf.extend_from_slice(data);
    }

    /// Returns the next complete line, if any.
    pub fn next_line(&mut self) -> Option<Line> {
        if self.overflow_pending {
            self.overflow_pending = false;
            return Some(Line::TooLong);
        }
        match memchr::memchr(b'\n', &self.buf) {
            Some(pos) if pos <= self.max_line => {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Some(Line::Complete(line))
            }
            Some(pos) => {
                self.buf.drain(..=pos);
                Some(Line::TooLong)
            }
            None if self.buf.len() > self.max_line => {
                self.buf.clear();
                self.discarding = true;
                None
            }
            None => None,
        }
    }

    /// Takes every buffered byte not yet consumed as a line (used when switching to a raw mode,
    /// such as SMTP DATA, in the middle of a pipelined buffer).
    pub fn take_rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Puts bytes back in front of the buffer (the part of a raw-mode read that belongs to the
    /// commands after it).
    pub fn unread(&mut self, data: &[u8]) {
        let mut joined = Vec::with_capacity(data.len() + self.buf.len());
        joined.extend_from_slice(data);
        joined.extend_from_slice(&self.buf);
        self.buf = joined;
    }

    /// Octets buffered and not handed out yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Drops buffered input (after STARTTLS-style upgrades, a plaintext tail must never be
    /// interpreted inside the secured session).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.discarding = false;
        self.overflow_pending = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_crlf_and_lf() {
        let mut b = LineBuffer::new(100);
        b.feed(b"USER a\r\nPASS b\nST");
        assert_eq!(b.next_line(), Some(Line::Complete(b"USER a".to_vec())));
        assert_eq!(b.next_line(), Some(Line::Complete(b"PASS b".to_vec())));
        assert_eq!(b.next_line(), None);
        b.feed(b"AT\r\n");
        assert_eq!(b.next_line(), Some(Line::Complete(b"STAT".to_vec())));
    }

    #[test]
    fn overlong_line_is_discarded_without_growth() {
        let mut b = LineBuffer::new(10);
        b.feed(&[b'x'; 50]);
        assert_eq!(b.next_line(), None);
        assert!(b.buffered() == 0);
        b.feed(&[b'x'; 50]);
        assert_eq!(b.buffered(), 0);
        b.feed(b"yy\r\nNOOP\r\n");
        assert_eq!(b.next_line(), Some(Line::TooLong));
        assert_eq!(b.next_line(), Some(Line::Complete(b"NOOP".to_vec())));
    }

    #[test]
    fn overlong_complete_line_in_one_read() {
        let mut b = LineBuffer::new(4);
        b.feed(b"TOOLONGLINE\r\nOK\r\n");
        assert_eq!(b.next_line(), Some(Line::TooLong));
        assert_eq!(b.next_line(), Some(Line::Complete(b"OK".to_vec())));
    }
}
