//! Mail client autoconfiguration end to end: Thunderbird's `config-v1.1.xml` fetched with curl
//! from the autoconfig listener, at both of its paths, parsed, and its offers checked against
//! the server's TLS listeners; a POP3 client then logs in where the XML says.

#[macro_use]
mod common;

use common::*;

fn fetch(url: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .arg(url)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

/// The text of each `<tag>` in order.
fn values(xml: &str, tag: &str) -> Vec<String> {
    xml.split(&format!("<{tag}>"))
        .skip(1)
        .map(|rest| rest.split(&format!("</{tag}>")).next().unwrap().to_string())
        .collect()
}

fn clients_are_told_where_and_how_to_connect(b: Backend) {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = tern::tls::write_self_signed("localhost", certs.path()).unwrap();
    let s = TestServer::start_with(b, |c| {
        c.tls.cert_file = Some(cert);
        c.tls.key_file = Some(key);
        c.pop3.tls_listen = Some("127.0.0.1:0".parse().unwrap());
        c.smtp.submission_listen = Some("127.0.0.1:0".parse().unwrap());
        c.autoconfig.listen = Some("127.0.0.1:0".parse().unwrap());
        c.autoconfig.hostname = Some("localhost".into());
    });
    s.user("alice");
    let server = s.server.as_ref().unwrap();
    let base = format!("http://{}", server.autoconfig_addr.unwrap());
    for path in [
        "/mail/config-v1.1.xml",
        "/.well-known/autoconfig/mail/config-v1.1.xml",
    ] {
        let (code, xml) = fetch(&format!("{base}{path}?emailaddress=alice%40example.com"));
        assert_eq!(code, 200, "{xml}");
        assert!(xml.starts_with(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">"
        ));
        assert_eq!(values(&xml, "domain"), ["example.com"]);
        assert_eq!(values(&xml, "hostname"), ["localhost"; 3]);
        let pop3s = server.pop3_tls_addr.unwrap().port().to_string();
        let pop3 = server.pop3_addr.port().to_string();
        let submission = server.submission_addr.unwrap().port().to_string();
        assert_eq!(values(&xml, "port"), [pop3s, pop3, submission]);
        assert_eq!(values(&xml, "socketType"), ["SSL", "STARTTLS", "STARTTLS"]);
        assert_eq!(values(&xml, "username"), ["%EMAILADDRESS%"; 3]);
        assert!(
            xml.contains("<incomingServer type=\"pop3\">")
                && xml.contains("<outgoingServer type=\"smtp\">")
        );
    }
    let (code, _) = fetch(&format!(
        "{base}/mail/config-v1.1.xml?emailaddress=bob%40elsewhere.test"
    ));
    assert_eq!(code, 404, "a domain not served");
    let (code, _) = fetch(&format!(
        "{base}/mail/config-v1.1.xml?emailaddress=nonsense"
    ));
    assert_eq!(code, 400);
    // Where the XML points, the account works: POP3 over TLS, logging in with the address.
    let mut tls = tls_wrap(
        tcp(server.pop3_tls_addr.unwrap()),
        &[&certs.path().join("cert.pem")],
    );
    let mut lines = Lines(std::io::BufReader::new(&mut tls));
    assert!(lines.line().starts_with("+OK"));
    assert!(lines.cmd("USER alice@example.com").starts_with("+OK"));
    assert!(lines.cmd("PASS pw-alice").starts_with("+OK"));
}

on_both_backends!(clients_are_told_where_and_how_to_connect);
