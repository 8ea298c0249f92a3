//! James's server routes end to end: the channels of live POP3 and SMTP sessions (JSON compared
//! with webadmin.adoc's example field by field), connected users, a kicked POP3 session seen
//! from the client (closed, its deletions not applied), and a certificate reloaded through the
//! API and served to the next TLS client.

#[macro_use]
mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn get_json(s: &TestServer, path: &str) -> Value {
    serde_json::from_str(&s.admin_ok("GET", path, None)).unwrap()
}

/// Polls until `check` holds for the JSON at `path` (a session shows once its login is done).
fn wait_json(s: &TestServer, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = get_json(s, path);
        if check(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{path}: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A James counter (a number written as a string).
fn count(info: &Value, key: &str) -> u64 {
    info[key].as_str().unwrap().parse().unwrap()
}

fn channels_list_and_kick_sessions(b: Backend) {
    let s = TestServer::start(b);
    s.user("alice");
    s.user("bob");
    s.deliver(&["alice@example.com"], &message("keep me", "x\r\n"));
    // alice reads and marks her message deleted, and stays connected.
    let mut alice = s.login("alice");
    assert_eq!(alice.stat().0, 1);
    assert!(alice.cmd("DELE 1").starts_with("+OK"));
    // bob is logged in too; an SMTP client is connected, not logged in.
    let mut bob = s.login("bob");
    let mut smtp = s.smtp();
    smtp.ehlo();
    let users = wait_json(&s, "/servers/connectedUsers", |v| {
        v.as_array().unwrap().len() == 2
    });
    assert_eq!(users, json!(["alice@example.com", "bob@example.com"]));
    let all = wait_json(&s, "/servers/channels", |v| {
        v.as_array().unwrap().len() == 3
    });
    let mine = get_json(&s, "/servers/channels/alice@example.com");
    let mine = mine.as_array().unwrap();
    assert_eq!(mine.len(), 1);
    let c = &mine[0];
    let mut fields: Vec<&String> = c.as_object().unwrap().keys().collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "connectionDate",
            "endpoint",
            "isActive",
            "isEncrypted",
            "isOpen",
            "isWritable",
            "protocol",
            "protocolSpecificInformation",
            "remoteAddress",
            "username"
        ]
    );
    assert_eq!(c["protocol"], "POP3");
    assert_eq!(c["endpoint"], "pop3server");
    assert_eq!(c["remoteAddress"], "127.0.0.1");
    assert_eq!(c["username"], "alice@example.com");
    assert_eq!(
        (c["isActive"].clone(), c["isEncrypted"].clone()),
        (json!(true), json!(false))
    );
    assert!(c["connectionDate"].as_str().unwrap().ends_with('Z'), "{c}");
    let info = &c["protocolSpecificInformation"];
    assert_eq!(info["loggedInUser"], "alice@example.com");
    assert!(count(info, "requestCount") >= 1, "{info}");
    assert!(count(info, "cumulativeReadBytes") > 20, "{info}");
    assert!(count(info, "cumulativeWrittenBytes") > 20, "{info}");
    let smtp_channel = all
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["protocol"] == "SMTP")
        .unwrap();
    assert_eq!(smtp_channel["endpoint"], "smtpserver");
    assert_eq!(smtp_channel["username"], Value::Null);
    // Sorting and paging as James's parameters say.
    let sorted = get_json(
        &s,
        "/servers/channels?sortBy=username&sortDirection=desc&limit=1",
    );
    assert_eq!(sorted[0]["username"], "bob@example.com");
    let by_bytes = get_json(&s, "/servers/channels?sortBy=protocolSpecificInformation.cumulativeReadBytes&sortType=numerical&offset=2");
    assert_eq!(by_bytes.as_array().unwrap().len(), 1);
    assert_eq!(
        s.admin(
            "GET",
            "/servers/channels?sortDirection=sideways&sortBy=username",
            None
        )
        .status,
        400
    );

    // Kicking alice: her session ends at once, the DELE is not applied; bob is untouched.
    assert_eq!(
        s.admin("DELETE", "/servers/channels/alice@example.com", None)
            .status,
        204
    );
    let rest = alice.read_to_close();
    assert!(
        rest.starts_with("-ERR [SYS/TEMP] session ended by the administrator"),
        "{rest:?}"
    );
    assert_eq!(
        s.login("alice").stat().0,
        1,
        "the kicked session's deletion was not applied"
    );
    assert_eq!(bob.stat().0, 0, "bob's session goes on");
    // A group of users, then everyone (the SMTP session says 421 and closes).
    let r = s.admin("DELETE", "/servers/channels", Some("[\"bob@example.com\"]"));
    assert_eq!(r.status, 204);
    bob.read_to_close();
    assert_eq!(
        s.admin("DELETE", "/servers/channels", Some("{\"not\":\"a list\"}"))
            .status,
        400
    );
    assert_eq!(s.admin("DELETE", "/servers/channels", None).status, 204);
    let (code, _) = smtp.reply();
    assert_eq!(code, 421);
    wait_json(&s, "/servers/channels", |v| {
        v.as_array().unwrap().is_empty()
    });
    // Without a certificate there is nothing to reload.
    assert_eq!(
        s.admin("POST", "/servers?reload-certificate", None).status,
        400
    );
}

/// The certificate files are replaced; `POST /servers?reload-certificate` serves the new one.
fn certificate_reloaded_through_the_api(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (first, second, live) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("live"),
    );
    tern::tls::write_self_signed("localhost", &first).unwrap();
    tern::tls::write_self_signed("localhost", &second).unwrap();
    std::fs::create_dir_all(&live).unwrap();
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(first.join(f), live.join(f)).unwrap();
    }
    let s = TestServer::start_with(b, |c| {
        c.tls.cert_file = Some(live.join("cert.pem"));
        c.tls.key_file = Some(live.join("key.pem"));
        c.pop3.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let addr = s.pop3_tls_addr.unwrap();
    let trusted = [first.join("cert.pem"), second.join("cert.pem")];
    let presented = || {
        let trusted: Vec<&std::path::Path> = trusted.iter().map(|p| p.as_path()).collect();
        let mut tls = tls_wrap(tcp(addr), &trusted);
        let mut greeting = [0u8; 3];
        std::io::Read::read_exact(&mut tls, &mut greeting).unwrap();
        tls.conn.peer_certificates().unwrap()[0].to_vec()
    };
    let der = |d: &std::path::Path| {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_file(d.join("cert.pem"))
            .unwrap()
            .to_vec()
    };
    assert_eq!(presented(), der(&first));
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(second.join(f), live.join(f)).unwrap();
    }
    assert_eq!(
        s.admin("POST", "/servers?reload-certificate&port=1", None)
            .status,
        400,
        "no TLS listener there"
    );
    assert_eq!(
        s.admin("POST", "/servers?reload-certificate&port=http", None)
            .status,
        400
    );
    let r = s.admin(
        "POST",
        &format!("/servers?reload-certificate&port={}", addr.port()),
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        presented(),
        der(&second),
        "the next client gets the new certificate"
    );
    std::fs::write(live.join("cert.pem"), "garbage").unwrap();
    assert_eq!(
        s.admin("POST", "/servers?reload-certificate", None).status,
        400
    );
    assert_eq!(
        presented(),
        der(&second),
        "a broken file leaves the current certificate"
    );
}

on_both_backends!(
    channels_list_and_kick_sessions,
    certificate_reloaded_through_the_api,
);
