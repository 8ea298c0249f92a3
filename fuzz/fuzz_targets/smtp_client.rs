//! The sending side of SMTP against an arbitrary server: replies cut anywhere, any codes, any
//! extension lists. No panic; every transaction it starts ends with one reply per recipient
//! (or the connection fails), and it never asks for the body unless a recipient was accepted.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use tern_proto::smtp::client::{ClientAction, ClientConfig, Envelope, SmtpClient, TlsPolicy};

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, data)) = data.split_first() else {
        return;
    };
    let mut c = SmtpClient::new(ClientConfig {
        helo_name: "fuzz.test".into(),
        tls: if knobs & 1 == 0 { TlsPolicy::Opportunistic } else { TlsPolicy::Required },
        implicit_tls: knobs & 2 != 0,
        auth: (knobs & 4 != 0).then(|| ("u".into(), "p".into())),
        command_timeout: Duration::from_secs(1),
        final_timeout: Duration::from_secs(1),
    });
    let recipients = 1 + (knobs >> 4) as usize % 4;
    let mut in_transaction = false;
    let mut accepted_started = 0u32;
    for chunk in data.chunks(1 + (knobs as usize >> 3) % 16) {
        c.feed(chunk);
        while let Some(action) = c.poll() {
            match action {
                ClientAction::Ready if !in_transaction => {
                    in_transaction = true;
                    accepted_started += 1;
                    c.send_mail(Envelope {
                        sender: "a@fuzz.test".into(),
                        recipients: (0..recipients).map(|i| format!("r{i}@x.test")).collect(),
                        size: 10,
                    });
                }
                ClientAction::StartTls => c.tls_established(),
                ClientAction::SendBody => {
                    assert!(in_transaction);
                    c.body_sent();
                }
                ClientAction::TransactionDone(replies) => {
                    assert!(in_transaction);
                    assert_eq!(replies.len(), recipients);
                    in_transaction = false;
                    if accepted_started < 3 {
                        c.send_mail(Envelope {
                            sender: String::new(),
                            recipients: (0..recipients).map(|i| format!("r{i}@x.test")).collect(),
                            size: 10,
                        });
                        in_transaction = true;
                        accepted_started += 1;
                    }
                }
                ClientAction::Failed(r) => {
                    assert!((400..600).contains(&r.code));
                    return;
                }
                ClientAction::Closed => return,
                _ => {}
            }
        }
    }
    c.closed();
    while c.poll().is_some() {}
});
