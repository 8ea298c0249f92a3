//! Feeds arbitrary bytes, in arbitrary chunks, to a POP3 session and answers its requests;
//! the session must never panic, hang, or produce output out of proportion to its input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tern_proto::pop3::{
    LoginFailure, MaildropEntry, Pop3Config, Pop3Request, Pop3Session, RetrieveOutcome,
    UpdateOutcome,
};

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, input)) = data.split_first() else { return };
    let chunk = 1 + (knobs as usize % 64);
    let config = Pop3Config { plaintext_auth_allowed: knobs & 0x80 == 0, stls_available: knobs & 0x40 != 0, ..Default::default() };
    let mut s = Pop3Session::new(config);
    let mut out = s.take_output().len();
    for (n, piece) in input.chunks(chunk).enumerate() {
        s.feed(piece);
        while let Some(req) = s.poll() {
            match req {
                Pop3Request::Authenticate { .. } => {
                    if n % 3 == 0 {
                        s.login_failed(LoginFailure::BadCredentials)
                    } else {
                        let drop = (0..(n % 5)).map(|i| MaildropEntry { size: 100 + i as u64, uidl: format!("u{i}") }).collect();
                        s.login_succeeded(drop)
                    }
                }
                Pop3Request::Retrieve { .. } => s.retrieve_finished(if n % 2 == 0 { RetrieveOutcome::Sent } else { RetrieveOutcome::Missing }),
                Pop3Request::Update { deleted } => {
                    assert!(deleted.iter().all(|&i| i < 5));
                    s.update_finished(UpdateOutcome::Applied)
                }
                Pop3Request::StartTls => s.tls_established(),
            }
            out += s.take_output().len();
        }
        out += s.take_output().len();
        if s.is_closed() {
            break;
        }
    }
    // Every reply answers a line of input; a LIST of at most 5 entries bounds the largest.
    assert!(out <= 512 + input.len() * 400, "output {out} for input {}", input.len());
});
