//! Sender authentication of port-25 mail end to end: SPF, DKIM and DMARC answered from a DNS
//! server the test runs on loopback, an Authentication-Results header on the copy a POP3 client
//! reads, and a DMARC `p=reject` failure refused at the end of DATA.

#[macro_use]
mod common;

use common::*;

/// The zone: good.test passes everything (SPF for 127.0.0.1, a DKIM key, p=reject);
/// forged.test publishes p=reject with SPF for another address; lax.test fails SPF under p=none.
fn zone(dkim_txt: &str) -> std::net::SocketAddr {
    common::dns::Zone::default()
        .txt("good.test", "v=spf1 ip4:127.0.0.1 -all")
        .txt("_dmarc.good.test", "v=DMARC1; p=reject")
        .txt("sel1._domainkey.good.test", dkim_txt)
        .txt("forged.test", "v=spf1 ip4:192.0.2.1 -all")
        .txt("_dmarc.forged.test", "v=DMARC1; p=reject")
        .txt("lax.test", "v=spf1 ip4:192.0.2.1 -all")
        .txt("_dmarc.lax.test", "v=DMARC1; p=none")
        .serve()
}

fn send(s: &TestServer, from: &str, to: &str, message: &[u8]) -> (u16, String) {
    let mut c = s.smtp();
    c.ehlo();
    c.send_mail(from, &[to], message)
}

/// The Authentication-Results field of a retrieved copy, unfolded.
fn auth_results(copy: &[u8]) -> String {
    let text = String::from_utf8_lossy(copy);
    let start = text
        .find("Authentication-Results: ")
        .unwrap_or_else(|| panic!("no Authentication-Results in {text}"));
    let field: String = text[start..]
        .split("\r\n")
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.starts_with('\t') || l.starts_with(' '))
        .map(|(_, l)| l.trim())
        .collect::<Vec<_>>()
        .join(" ");
    field
}

fn sender_checks_on_port_25(b: Backend) {
    use tern::outbound::dkim::{keygen, DkimKeys, KeyAlgorithm};
    let keys = tempfile::tempdir().unwrap();
    let (key_file, record) = keygen("good.test", "sel1", KeyAlgorithm::Rsa, keys.path()).unwrap();
    let txt = record.split_once('"').unwrap().1.trim_end_matches('"');
    let dns = zone(txt);
    let s = TestServer::start_with(b, |c| {
        c.inbound_auth.enabled = true;
        c.outbound.dns_servers = vec![dns.to_string()];
    });
    s.user("alice");

    // Signed by good.test, from an address SPF allows: everything passes.
    let signed_by = DkimKeys::load(&[tern::config::DkimKey {
        domain: "good.test".into(),
        selector: "sel1".into(),
        private_key_file: key_file,
    }])
    .unwrap();
    let body = b"From: Sender <sender@good.test>\r\nTo: alice@example.com\r\nSubject: genuine\r\n\r\nhello\r\n";
    let mut signing = signed_by.start("good.test").unwrap();
    signing.write(body);
    let signed = [signing.finish().unwrap().as_bytes(), body].concat();
    let (code, text) = send(&s, "sender@good.test", "alice@example.com", &signed);
    assert_eq!(code, 250, "{text}");
    let mut alice = s.login("alice");
    let copy = alice.retr(1);
    let results = auth_results(&copy);
    assert!(
        results.starts_with("Authentication-Results: tern.test;"),
        "{results}"
    );
    for expected in [
        "dkim=pass",
        "header.d=good.test",
        "spf=pass",
        "smtp.mailfrom=sender@good.test",
        "dmarc=pass",
        "header.from=good.test",
        "policy.dmarc=reject",
        "arc=none",
    ] {
        assert!(results.contains(expected), "{expected} missing: {results}");
    }
    // Return-Path and Delivered-To come first, then the results, then the message.
    let text = String::from_utf8_lossy(&copy).into_owned();
    let order: Vec<usize> = [
        "Return-Path:",
        "Delivered-To:",
        "Authentication-Results:",
        "Received:",
        "DKIM-Signature:",
    ]
    .iter()
    .map(|h| {
        text.find(h)
            .unwrap_or_else(|| panic!("{h} missing in {text}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    alice.quit();

    // The signature does not survive a change to the body.
    let tampered = String::from_utf8(signed.clone())
        .unwrap()
        .replace("hello", "h3llo");
    let (code, text) = send(
        &s,
        "sender@good.test",
        "alice@example.com",
        tampered.as_bytes(),
    );
    assert_eq!(code, 250, "SPF still aligns, so DMARC passes: {text}");
    let copy = s.login("alice").retr(2);
    let results = auth_results(&copy);
    // (mail-auth reports a body that no longer matches its hash as "neutral", RFC 6376 6.1.3.)
    assert!(
        results.contains("dkim=neutral (body hash did not verify)")
            && results.contains("dmarc=pass"),
        "{results}"
    );

    // A From domain with p=reject, sent from an address its SPF does not allow, unsigned:
    // refused at the end of DATA, nothing stored.
    let forged =
        b"From: ceo@forged.test\r\nTo: alice@example.com\r\nSubject: wire money\r\n\r\nnow\r\n";
    let (code, text) = send(&s, "ceo@forged.test", "alice@example.com", forged);
    assert_eq!(code, 550, "{text}");
    assert!(
        text.contains("5.7.1") && text.contains("DMARC policy of forged.test"),
        "{text}"
    );
    assert_eq!(
        s.login("alice").stat().0,
        2,
        "the refused message was not stored"
    );

    // p=none: delivered, with the failures recorded; results forged in this server's name are
    // removed (RFC 8601 section 5), another server's are kept.
    let lax = b"Authentication-Results: tern.test; dmarc=pass header.from=lax.test\r\nAuthentication-Results: relay.example; spf=pass\r\nFrom: someone@lax.test\r\nSubject: meh\r\n\r\nx\r\n";
    let (code, text) = send(&s, "someone@lax.test", "alice@example.com", lax);
    assert_eq!(code, 250, "{text}");
    let copy = s.login("alice").retr(3);
    let text = String::from_utf8_lossy(&copy);
    assert_eq!(
        text.matches("Authentication-Results: tern.test").count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("Authentication-Results: relay.example; spf=pass"),
        "{text}"
    );
    let results = auth_results(&copy);
    for expected in ["spf=fail", "dmarc=fail", "policy.dmarc=none", "dkim=none"] {
        assert!(results.contains(expected), "{expected} missing: {results}");
    }
}

/// With `reject_dmarc_failures = false` the forged message is delivered and marked; a message
/// larger than `max_verified_size` is judged on its header (SPF and DMARC, DKIM not checked);
/// clients in `smtp.relay_networks` are not checked at all.
fn dmarc_failures_kept_when_asked_and_trusted_clients_not_checked(b: Backend) {
    let dns = zone("v=DKIM1; p=");
    let s = TestServer::start_with(b, |c| {
        c.inbound_auth.enabled = true;
        c.inbound_auth.reject_dmarc_failures = false;
        c.inbound_auth.max_verified_size = 4096;
        c.outbound.dns_servers = vec![dns.to_string()];
    });
    s.user("alice");
    let forged = b"From: ceo@forged.test\r\nSubject: wire money\r\n\r\nnow\r\n";
    let (code, text) = send(&s, "ceo@forged.test", "alice@example.com", forged);
    assert_eq!(code, 250, "{text}");
    let results = auth_results(&s.login("alice").retr(1));
    assert!(
        results.contains("dmarc=fail") && results.contains("policy.dmarc=reject"),
        "{results}"
    );
    assert!(
        results.contains("dkim=none;") || results.ends_with("dkim=none"),
        "{results}"
    );
    let large = format!(
        "From: ceo@forged.test\r\nSubject: big\r\n\r\n{}",
        "z".repeat(8000)
    );
    let (code, text) = send(&s, "ceo@forged.test", "alice@example.com", large.as_bytes());
    assert_eq!(code, 250, "{text}");
    let results = auth_results(&s.login("alice").retr(2));
    for expected in ["dkim=none (not checked", "spf=fail", "dmarc=fail"] {
        assert!(results.contains(expected), "{expected} missing: {results}");
    }

    let trusted = TestServer::start_with(b, |c| {
        c.inbound_auth.enabled = true;
        c.outbound.dns_servers = vec![dns.to_string()];
        c.smtp.relay_networks = vec!["127.0.0.0/8".parse().unwrap()];
    });
    trusted.user("alice");
    let (code, text) = send(&trusted, "ceo@forged.test", "alice@example.com", forged);
    assert_eq!(code, 250, "{text}");
    let copy = String::from_utf8(trusted.login("alice").retr(1)).unwrap();
    assert!(!copy.contains("Authentication-Results"), "{copy}");
}

on_both_backends!(
    sender_checks_on_port_25,
    dmarc_failures_kept_when_asked_and_trusted_clients_not_checked,
);
