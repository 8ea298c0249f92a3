//! Byte-stuffing round trip: any CRLF-clean body stuffed by the POP3 encoder and decoded by the
//! SMTP DATA decoder comes back identical, whatever the chunking; and the decoder never accepts
//! an end of data other than CRLF.CRLF on arbitrary input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tern_proto::dot::{DataDecoder, RetrEncoder};

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, raw)) = data.split_first() else { return };
    let chunk = 1 + (knobs as usize % 97);

    // 1. Arbitrary input: the decoder ends only right after "\r\n.\r\n" (or ".\r\n" at start).
    let mut d = DataDecoder::new(u64::MAX);
    let mut out = Vec::new();
    let mut consumed = 0;
    for piece in raw.chunks(chunk) {
        let r = d.decode(piece, &mut out);
        consumed += r.consumed;
        if r.ended {
            let seen = &raw[..consumed];
            assert!(seen == b".\r\n" || seen.ends_with(b"\r\n.\r\n"));
            break;
        }
        assert_eq!(r.consumed, piece.len());
    }

    // 2. A CRLF-clean body (bare CR and LF removed) survives stuffing then unstuffing.
    let mut body: Vec<u8> = Vec::new();
    for line in raw.split(|&b| b == b'\n') {
        body.extend(line.iter().copied().filter(|&b| b != b'\r'));
        body.extend_from_slice(b"\r\n");
    }
    let mut enc = RetrEncoder::retr();
    let mut wire = Vec::new();
    for piece in body.chunks(chunk) {
        enc.encode(piece, &mut wire);
    }
    enc.finish(&mut wire);
    let mut dec = DataDecoder::new(u64::MAX);
    let mut back = Vec::new();
    let mut ended = false;
    for piece in wire.chunks(chunk) {
        let r = dec.decode(piece, &mut back);
        if r.ended {
            ended = true;
            break;
        }
    }
    assert!(ended);
    assert_eq!(dec.violation(), None);
    assert_eq!(back, body);
});
