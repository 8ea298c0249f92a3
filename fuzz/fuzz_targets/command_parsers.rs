//! The POP3 command and SMTP path parsers on arbitrary lines: no panic, and what they accept is
//! well formed (an address has a domain, except the bare `<postmaster>` of RFC 5321).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tern_proto::pop3::parse_command(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok((Some(m), params)) = tern_proto::smtp::parse_path(text) {
            assert!(!m.local.is_empty() && m.local.len() <= 64);
            assert!((!m.domain.is_empty() || m.is_bare_postmaster()) && m.domain.len() <= 255);
            assert!(!m.to_string().chars().any(|c| c.is_control()));
            assert!(params.iter().all(|(k, _)| !k.is_empty()));
        }
    }
    let _ = tern_proto::sasl::parse_plain(data);
    let _ = tern_proto::sasl::decode_response(data);
});
