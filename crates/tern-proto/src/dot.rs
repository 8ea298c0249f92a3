//! The "." conventions of multi-line data: stuffing on the way out (POP3 RETR/TOP) and
//! unstuffing with strict end-of-data detection on the way in (SMTP DATA).

/// Streams a stored message as a POP3 multi-line response body (RFC 1939 section 3): every line
/// beginning with "." gets one more, and the response ends with ".\r\n". With `top_lines`, only
/// the header, the blank line after it and that many body lines are sent (the TOP command).
///
/// It works chunk by chunk, so a message never has to be held in memory whole.
#[derive(Debug)]
pub struct RetrEncoder {
    at_line_start: bool,
    top: Option<TopState>,
    done: bool,
}

#[derive(Debug)]
struct TopState {
    in_header: bool,
    /// Octets seen on the current line, not counting CR and LF.
    line_len: usize,
    remaining: u64,
}

impl RetrEncoder {
    /// Encoder for a whole message (RETR).
    pub fn retr() -> Self {
        Self {
            at_line_start: true,
            top: None,
            done: false,
        }
    }

    /// Encoder for the header plus `lines` body lines (TOP).
    pub fn top(lines: u64) -> Self {
        Self {
            at_line_start: true,
            top: Some(TopState {
                in_header: true,
                line_len: 0,
                remaining: lines,
            }),
            done: false,
        }
    }

    /// True once TOP has sent everything it needs; the caller may stop reading the body.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Appends the stuffed form of `input` to `out`.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let input = match &mut self.top {
            None => input,
            Some(top) => {
                let (cut, finished) = top.cut(input);
                if finished {
                    self.done = true;
                }
                &input[..cut]
            }
        };
        out.reserve(input.len() + 16);
        let mut rest = input;
        while !rest.is_empty() {
            if self.at_line_start && rest[0] == b'.' {
                out.push(b'.');
            }
            match memchr::memchr(b'\n', rest) {
                Some(pos) => {
                    out.extend_from_slice(&rest[..=pos]);
                    self.at_line_start = true;
                    rest = &rest[pos + 1..];
                }
                None => {
                    out.extend_from_slice(rest);
                    self.at_line_start = false;
                    rest = &[];
                }
            }
        }
    }

    /// Appends the end of the multi-line response. A body that does not end with a line end gets
    /// one first, so the terminator is always recognised.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.done = true;
    }
}

impl TopState {
    /// How much of `input` TOP sends, and whether that completes it.
    fn cut(&mut self, input: &[u8]) -> (usize, bool) {
        if !self.in_header && self.remaining == 0 {
            return (0, true);
        }
        for (i, &b) in input.iter().enumerate() {
            match b {
                b'\n' => {
                    if self.in_header {
                        if self.line_len == 0 {
                            self.in_header = false;
                            if self.remaining == 0 {
                                return (i + 1, true);
                            }
                        }
                    } else {
                        self.remaining -= 1;
                        if self.remaining == 0 {
                            return (i + 1, true);
                        }
                    }
                    self.line_len = 0;
                }
                b'\r' => {}
                _ => self.line_len += 1,
            }
        }
        (input.len(), false)
    }
}

/// What went wrong inside a DATA body; the body is still read to its real end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataViolation {
    /// A LF not preceded by CR, or a CR not followed by LF (RFC 5321 section 2.3.8). Such line
    /// ends are the raw material of SMTP smuggling (CVE-2023-51764), so Tern refuses the message.
    BareLineEnd,
    /// More octets than the advertised SIZE limit.
    TooLarge,
}

/// Decodes an SMTP DATA body (RFC 5321 section 4.5.2): removes the leading "." of stuffed lines
/// and stops exactly at CRLF "." CRLF. A lone LF or CR never ends a line for this purpose, so
/// "\n.\n", "\r.\r" or "\n.\r\n" inside the body cannot end it early and smuggle a second
/// message; they are recorded as a violation and the whole message is refused at the end.
#[derive(Debug)]
pub struct DataDecoder {
    state: DecodeState,
    size: u64,
    max_size: u64,
    violation: Option<DataViolation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    /// Just after CRLF (the DATA command's own CRLF counts).
    LineStart,
    /// A "." at line start has been consumed.
    Dot,
    /// "." then CR at line start.
    DotCr,
    Mid,
    /// A CR inside a line, held until we see whether LF follows.
    Cr,
    Ended,
}

/// Result of feeding bytes to a [`DataDecoder`].
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes consumed; after the end of data, the rest belongs to the next commands.
    pub consumed: usize,
    /// Whether CRLF.CRLF was reached.
    pub ended: bool,
}

impl DataDecoder {
    /// A decoder that refuses bodies larger than `max_size` octets.
    pub fn new(max_size: u64) -> Self {
        Self {
            state: DecodeState::LineStart,
            size: 0,
            max_size,
            violation: None,
        }
    }

    /// Decoded octets so far (including any beyond the limit, which are not emitted).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// True once CRLF.CRLF has been consumed.
    pub fn is_ended(&self) -> bool {
        self.state == DecodeState::Ended
    }

    /// Why the data was refused, once it ended: a bare line end, or too large.
    pub fn violation(&self) -> Option<DataViolation> {
        self.violation
    }

    fn flag(&mut self, v: DataViolation) {
        // The first problem is the one reported; a bare line end is the more serious one.
        if self.violation.is_none() || v == DataViolation::BareLineEnd {
            self.violation = Some(v);
        }
    }

    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.size += bytes.len() as u64;
        if self.size > self.max_size {
            self.flag(DataViolation::TooLarge);
        }
        if self.violation.is_none() {
            out.extend_from_slice(bytes);
        }
    }

    /// Decodes `input` into `out` (nothing is emitted once a violation is seen).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Decoded {
        let mut i = 0;
        while i < input.len() {
            if self.state == DecodeState::Mid {
                // Fast path: copy up to the next CR or LF in one go.
                let run = memchr::memchr2(b'\r', b'\n', &input[i..]);
                let end = run.map_or(input.len(), |p| i + p);
                if end > i {
                    self.emit(&input[i..end], out);
                    i = end;
                    continue;
                }
            }
            let b = input[i];
            i += 1;
            match self.state {
                DecodeState::Ended => {
                    i -= 1;
                    break;
                }
                DecodeState::LineStart => {
                    if b == b'.' {
                        self.state = DecodeState::Dot;
                    } else {
                        self.mid_byte(b, out);
                    }
                }
                DecodeState::Dot => {
                    if b == b'\r' {
                        self.state = DecodeState::DotCr;
                    } else {
                        self.mid_byte(b, out);
                    }
                }
                DecodeState::DotCr => {
                    if b == b'\n' {
                        self.state = DecodeState::Ended;
                        return Decoded {
                            consumed: i,
                            ended: true,
                        };
                    }
                    // ".\r" followed by something else: the CR is bare.
                    self.flag(DataViolation::BareLineEnd);
                    self.emit(b"\r", out);
                    self.state = DecodeState::Mid;
                    self.mid_byte(b, out);
                }
                DecodeState::Mid => self.mid_byte(b, out),
                DecodeState::Cr => {
                    if b == b'\n' {
                        self.emit(b"\r\n", out);
                        self.state = DecodeState::LineStart;
                    } else {
                        self.flag(DataViolation::BareLineEnd);
                        self.emit(b"\r", out);
                        self.state = DecodeState::Mid;
                        self.mid_byte(b, out);
                    }
                }
            }
        }
        Decoded {
            consumed: i,
            ended: self.state == DecodeState::Ended,
        }
    }

    fn mid_byte(&mut self, b: u8, out: &mut Vec<u8>) {
        match b {
            b'\r' => self.state = DecodeState::Cr,
            b'\n' => {
                self.flag(DataViolation::BareLineEnd);
                self.emit(b"\n", out);
                self.state = DecodeState::Mid;
            }
            _ => {
                self.emit(&[b], out);
                self.state = DecodeState::Mid;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuff(chunks: &[&[u8]]) -> Vec<u8> {
        let mut e = RetrEncoder::retr();
        let mut out = Vec::new();
        for c in chunks {
            e.encode(c, &mut out);
        }
        e.finish(&mut out);
        out
    }

    #[test]
    fn stuffs_leading_dots_across_chunks() {
        assert_eq!(
            stuff(&[b".a\r\nb\r\n..c\r\n"]),
            b"..a\r\nb\r\n...c\r\n.\r\n"
        );
        assert_eq!(stuff(&[b"a\r\n", b".", b"b\r\n"]), b"a\r\n..b\r\n.\r\n");
        assert_eq!(stuff(&[b"a.b\r\n"]), b"a.b\r\n.\r\n");
    }

    #[test]
    fn terminator_after_unterminated_body() {
        assert_eq!(stuff(&[b"abc"]), b"abc\r\n.\r\n");
        assert_eq!(stuff(&[]), b".\r\n");
    }

    fn top(msg: &[u8], n: u64, chunk: usize) -> Vec<u8> {
        let mut e = RetrEncoder::top(n);
        let mut out = Vec::new();
        for c in msg.chunks(chunk) {
            e.encode(c, &mut out);
        }
        e.finish(&mut out);
        out
    }

    #[test]
    fn top_sends_header_and_n_lines() {
        let msg = b"A: 1\r\nB: 2\r\n\r\nl1\r\n.l2\r\nl3\r\n";
        for chunk in [1, 3, 100] {
            assert_eq!(top(msg, 0, chunk), b"A: 1\r\nB: 2\r\n\r\n.\r\n");
            assert_eq!(
                top(msg, 2, chunk),
                b"A: 1\r\nB: 2\r\n\r\nl1\r\n..l2\r\n.\r\n"
            );
            assert_eq!(
                top(msg, 10, chunk),
                b"A: 1\r\nB: 2\r\n\r\nl1\r\n..l2\r\nl3\r\n.\r\n"
            );
        }
    }

    fn decode_all(input: &[u8], chunk: usize, max: u64) -> (Vec<u8>, Option<DataViolation>, usize) {
        let mut d = DataDecoder::new(max);
        let mut out = Vec::new();
        let mut consumed = 0;
        for c in input.chunks(chunk) {
            let r = d.decode(c, &mut out);
            consumed += r.consumed;
            if r.ended {
                return (out, d.violation(), consumed);
            }
        }
        panic!("no end of data in {input:?}");
    }

    #[test]
    fn unstuffs_and_ends_at_crlf_dot_crlf() {
        for chunk in [1, 2, 5, 1000] {
            let (out, v, used) = decode_all(b"a\r\n..b\r\n.c\r\n.\r\nQUIT\r\n", chunk, 1000);
            assert_eq!(out, b"a\r\n.b\r\nc\r\n");
            assert_eq!(v, None);
            assert_eq!(used, 15);
        }
    }

    #[test]
    fn empty_body() {
        let (out, v, _) = decode_all(b".\r\n", 1, 10);
        assert!(out.is_empty());
        assert_eq!(v, None);
    }

    #[test]
    fn bare_lf_and_cr_never_end_data() {
        // Every smuggling variant: the body only ends at the final CRLF.CRLF.
        for evil in [
            &b"\n.\n"[..],
            b"\n.\r\n",
            b"\r.\r",
            b"\r\n.\n",
            b"\r\n.\r",
            b"\r.\r\n",
        ] {
            let mut input = b"Subject: x\r\n\r\nhi".to_vec();
            input.extend_from_slice(evil);
            input.extend_from_slice(b"MAIL FROM:<evil@x>\r\n.\r\n");
            let (_, v, used) = decode_all(&input, 1, 1000);
            assert_eq!(v, Some(DataViolation::BareLineEnd), "{evil:?}");
            assert_eq!(used, input.len(), "{evil:?}");
        }
    }

    #[test]
    fn size_limit_is_flagged_and_stops_output() {
        let (out, v, _) = decode_all(b"0123456789\r\n.\r\n", 3, 5);
        assert_eq!(v, Some(DataViolation::TooLarge));
        assert!(out.len() <= 5);
    }
}
