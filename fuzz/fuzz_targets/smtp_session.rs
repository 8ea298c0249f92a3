//! Feeds arbitrary bytes, in arbitrary chunks, to an SMTP session and answers its requests.
//! Invariants: no panic or hang; body data is only handed out between BeginMessage and the end
//! of that message; a message ends only after the client sent CRLF.CRLF.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tern_proto::smtp::{
    AuthFailure, RcptVerdict, SenderVerdict, SmtpConfig, SmtpRequest, SmtpSession, StoreOutcome,
};

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, input)) = data.split_first() else { return };
    let chunk = 1 + (knobs as usize % 64);
    let config = SmtpConfig {
        max_message_size: 4096,
        max_recipients: 3,
        starttls_available: knobs & 0x40 != 0,
        auth_offered: knobs & 0x20 != 0,
        auth_required: knobs & 0x10 != 0,
        plaintext_auth_allowed: knobs & 0x08 != 0,
        lmtp: knobs & 0x80 != 0,
        ..Default::default()
    };
    let mut s: SmtpSession<u8> = SmtpSession::new(config);
    s.take_output();
    let mut in_message = false;
    let mut body = 0usize;
    let mut fed = Vec::new();
    for (n, piece) in input.chunks(chunk).enumerate() {
        s.feed(piece);
        fed.extend_from_slice(piece);
        while let Some(req) = s.poll() {
            match req {
                SmtpRequest::CheckRecipient(m) => {
                    assert!((!m.domain.is_empty() || m.is_bare_postmaster()) && !m.local.is_empty());
                    s.rcpt_verdict(match n % 4 {
                        0 => RcptVerdict::UnknownUser,
                        1 => RcptVerdict::RelayDenied,
                        2 => RcptVerdict::RewriteLoop,
                        _ => RcptVerdict::Accept(n as u8),
                    })
                }
                SmtpRequest::BeginMessage { recipients, .. } => {
                    assert!(!recipients.is_empty() && recipients.len() <= 3);
                    assert!(!in_message);
                    in_message = true;
                    body = 0;
                    s.data_ready(knobs & 1 == 0);
                    if knobs & 1 != 0 {
                        in_message = false;
                    }
                }
                SmtpRequest::MessageData(d) => {
                    assert!(in_message);
                    body += d.len();
                    assert!(body <= 4096);
                }
                SmtpRequest::EndMessage { recipients } => {
                    assert!(in_message && !recipients.is_empty());
                    assert!(fed.windows(5).any(|w| w == b"\r\n.\r\n"), "message ended without CRLF.CRLF");
                    in_message = false;
                    s.message_stored(StoreOutcome::Stored { id: "x".into() });
                }
                SmtpRequest::AbortMessage => in_message = false,
                SmtpRequest::StartTls => s.tls_established(),
                SmtpRequest::CheckSender { user, sender } => {
                    assert!(!user.is_empty() && !sender.eq_ignore_ascii_case(&user));
                    s.sender_verdict(match n % 3 {
                        0 => SenderVerdict::Owned,
                        1 => SenderVerdict::NotOwned,
                        _ => SenderVerdict::Temporary,
                    })
                }
                SmtpRequest::Authenticate { username, .. } => {
                    assert!(!username.chars().any(char::is_control));
                    s.auth_finished(match n % 3 {
                        0 => Err(AuthFailure::BadCredentials),
                        1 => Err(AuthFailure::Delayed("wait".into())),
                        _ => Ok(()),
                    })
                }
            }
            s.take_output();
        }
        s.take_output();
        if s.is_closed() {
            break;
        }
    }
});
