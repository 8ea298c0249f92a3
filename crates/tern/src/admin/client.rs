//! A minimal HTTP/1.0 client for the admin API, used by the `tern domain`/`tern user`
//! subcommands and the tests. Written by hand because it only ever talks plain HTTP to Tern's
//! own loopback API: a general client (reqwest, hyper's client) would add a large dependency
//! tree for one request per command.

use anyhow::{bail, Context};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct Response {
    pub status: u16,
    /// Header lines as sent, `(name, value)`.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request to `base` (`http://host:port`) and returns the status and body.
pub fn request(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<Response> {
    request_with_token(base, None, method, path, body)
}

/// The same, with the admin API's bearer token.
pub fn request_with_token(
    base: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<Response> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    send(base, &auth, method, path, body)
}

fn send(
    base: &str,
    auth: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<Response> {
    let Some(authority) = base.strip_prefix("http://") else {
        bail!("admin URL must start with http:// (got {base})");
    };
    let authority = authority.trim_end_matches('/');
    let mut stream = TcpStream::connect(authority).with_context(|| {
        format!("cannot reach the admin API at {base}; is `tern serve` running?")
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {authority}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // A server refusing a request early (413 for a body past its cap) answers and closes
    // while the body is still being sent: the write then fails, but the answer is there.
    let written = stream.write_all(req.as_bytes());
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    match (written, read) {
        (_, Ok(_)) if !raw.is_empty() => {}
        (Err(e), _) => return Err(e.into()),
        (Ok(()), Err(e)) => return Err(e.into()),
        (Ok(()), Ok(_)) => {}
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP response from the admin API")?;
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: body.to_string(),
    })
}

/// Percent-encodes a path segment (user names contain '@', '+', ...).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Creates a domain and numbered users (`{prefix}{i}@{domain}`, all with one password) through
/// Tern's admin API, for `tern bench setup`.
pub fn create_numbered_users(
    admin_url: &str,
    domain: &str,
    prefix: &str,
    users: usize,
    password: &str,
) -> anyhow::Result<()> {
    let r = request(
        admin_url,
        "PUT",
        &format!("/domains/{}", encode_segment(domain)),
        None,
    )?;
    anyhow::ensure!(
        r.status == 204,
        "creating domain {domain}: HTTP {} {}",
        r.status,
        r.body
    );
    let body = serde_json::json!({ "password": password }).to_string();
    for i in 0..users {
        let user = format!("{prefix}{i}@{domain}");
        let r = request(
            admin_url,
            "PUT",
            // `force`: a second setup run sets the same password instead of failing on 409.
            &format!("/users/{}?force", encode_segment(&user)),
            Some(&body),
        )?;
        anyhow::ensure!(
            r.status == 204,
            "creating {user}: HTTP {} {}",
            r.status,
            r.body
        );
    }
    Ok(())
}
