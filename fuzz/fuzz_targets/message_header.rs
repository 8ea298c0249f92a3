//! Feeds arbitrary message data, in arbitrary chunks, through what reads and rewrites a header
//! as it streams past: `HeaderFixes` (submission and inbound) and `HeaderCapture`.
//! Invariants: no panic; the output does not depend on how the data was cut; everything after
//! the header passes through untouched; the header capture never holds more than its cap.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tern_proto::smtp::header::{HeaderCapture, MAX_HEADER};
use tern_proto::smtp::submission::HeaderFixes;

fn fixed(make: &dyn Fn() -> HeaderFixes, data: &[u8], chunk: usize) -> Vec<u8> {
    let mut h = make();
    let mut out = Vec::new();
    for piece in data.chunks(chunk) {
        h.push(piece, &mut out);
    }
    h.finish(&mut out);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&knob, input)) = data.split_first() else { return };
    let chunk = 1 + (knob as usize % 97);
    let makers: [&dyn Fn() -> HeaderFixes; 2] = [
        &|| HeaderFixes::submission("Tue, 1 Dec 2026 22:00:00 +0000".into(), "<id@tern>".into()),
        &|| HeaderFixes::inbound("mx.tern.test".into()),
    ];
    for make in makers {
        let whole = fixed(make, input, input.len().max(1));
        assert_eq!(fixed(make, input, chunk), whole, "output depends on the chunking");
        if let Some(end) = input.windows(4).position(|w| w == b"\r\n\r\n") {
            let body = &input[end + 4..];
            if end + 4 <= MAX_HEADER && !input.starts_with(b"\r\n") {
                assert!(whole.ends_with(body), "the body was changed");
            }
        }
    }
    let mut capture = HeaderCapture::default();
    for piece in input.chunks(chunk) {
        capture.push(piece);
    }
    assert!(capture.bytes().len() <= MAX_HEADER);
    for address in capture.delivered_to() {
        assert_eq!(address, address.to_ascii_lowercase());
    }
});
