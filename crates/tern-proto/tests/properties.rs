//! Property tests of the byte-level codecs: whatever the content and however the bytes are
//! split into reads, stuffing then unstuffing is the identity, and DATA never ends early.

use proptest::prelude::*;
use tern_proto::dot::{DataDecoder, DataViolation, RetrEncoder};
use tern_proto::line::{Line, LineBuffer};

/// A CRLF-clean body: lines of any bytes but CR and LF, many starting with dots.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        proptest::collection::vec(
            any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
            0..40
        ),
        Just(b".".to_vec()),
        Just(b"..".to_vec()),
        proptest::collection::vec(Just(b'.'), 1..4).prop_map(|mut v| {
            v.extend_from_slice(b"x");
            v
        }),
    ];
    proptest::collection::vec(line, 0..30).prop_map(|lines| {
        let mut out = Vec::new();
        for l in lines {
            out.extend_from_slice(&l);
            out.extend_from_slice(b"\r\n");
        }
        out
    })
}

fn decode_in_chunks(wire: &[u8], chunk: usize) -> (Vec<u8>, Option<DataViolation>, usize, bool) {
    let mut d = DataDecoder::new(u64::MAX);
    let mut out = Vec::new();
    let mut used = 0;
    for piece in wire.chunks(chunk) {
        let r = d.decode(piece, &mut out);
        used += r.consumed;
        if r.ended {
            return (out, d.violation(), used, true);
        }
    }
    (out, d.violation(), used, false)
}

proptest! {
    #[test]
    fn stuffing_then_unstuffing_is_identity(body in body(), enc_chunk in 1usize..64, dec_chunk in 1usize..64) {
        let mut enc = RetrEncoder::retr();
        let mut wire = Vec::new();
        for piece in body.chunks(enc_chunk) {
            enc.encode(piece, &mut wire);
        }
        enc.finish(&mut wire);
        // Nothing in the stuffed body looks like the terminator before its end.
        let end = wire.windows(5).position(|w| w == b"\r\n.\r\n").map(|p| p + 5);
        prop_assert!(end == Some(wire.len()) || (body.is_empty() && wire == b".\r\n"));
        let (back, violation, used, ended) = decode_in_chunks(&wire, dec_chunk);
        prop_assert!(ended);
        prop_assert_eq!(violation, None);
        prop_assert_eq!(used, wire.len());
        prop_assert_eq!(back, body);
    }

    #[test]
    fn data_ends_only_at_crlf_dot_crlf(noise in proptest::collection::vec(any::<u8>(), 0..200), chunk in 1usize..32) {
        let mut wire = noise.clone();
        wire.extend_from_slice(b"\r\n.\r\nNEXT");
        let (_, _, used, ended) = decode_in_chunks(&wire, chunk);
        prop_assert!(ended);
        let consumed = &wire[..used];
        prop_assert!(consumed == b".\r\n" || consumed.ends_with(b"\r\n.\r\n"));
        // It ends at the first true terminator, never at a bare-LF or bare-CR look-alike.
        let first = wire.windows(5).position(|w| w == b"\r\n.\r\n").unwrap() + 5;
        let at_start = wire.starts_with(b".\r\n");
        prop_assert!(used == first || (at_start && used == 3));
    }

    #[test]
    fn line_splitting_does_not_depend_on_read_sizes(lines in proptest::collection::vec("[ -~]{0,30}", 0..20), chunk in 1usize..16) {
        let mut wire = Vec::new();
        for l in &lines {
            wire.extend_from_slice(l.as_bytes());
            wire.extend_from_slice(b"\r\n");
        }
        let mut b = LineBuffer::new(64);
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            b.feed(piece);
            while let Some(Line::Complete(l)) = b.next_line() {
                got.push(String::from_utf8(l).unwrap());
            }
        }
        prop_assert_eq!(got, lines);
    }
}
