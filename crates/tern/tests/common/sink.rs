//! A destination SMTP server for the outbound tests: blocking sockets, one thread per
//! connection, optional STARTTLS with its own self-signed certificate. It records what it
//! accepted and answers recipients by their local part: `reject*` gets 550, `defer*` gets 451
//! on its first attempt and 250 afterwards, anyone else 250. Written independently of
//! tern-proto, so Tern's client is never checked against its own code.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A message the sink accepted.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub sender: String,
    pub recipients: Vec<String>,
    pub data: Vec<u8>,
    pub tls: bool,
    pub helo: String,
    /// The user the client authenticated as, if it did.
    pub auth: Option<String>,
}

#[derive(Default)]
pub struct SinkState {
    pub accepted: Vec<Accepted>,
    /// RCPT attempts per address.
    pub attempts: HashMap<String, u32>,
    pub connections: u32,
}

pub struct Sink {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<SinkState>>,
    /// The PEM certificate it presents, when it offers STARTTLS (valid for sink.test,
    /// localhost and 127.0.0.1).
    pub cert_pem: Option<String>,
}

/// A free loopback port (for a destination that is down until a test starts it).
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl Sink {
    /// A sink on a fresh port; with `starttls`, it offers STARTTLS.
    pub fn start(starttls: bool) -> Sink {
        Self::start_on(free_port(), starttls)
    }

    pub fn start_on(addr: SocketAddr, starttls: bool) -> Sink {
        Self::start_with(addr, starttls, None)
    }

    /// A sink that also offers AUTH PLAIN (after STARTTLS when it has TLS) with these
    /// credentials, as a smart host does.
    pub fn start_with(addr: SocketAddr, starttls: bool, auth: Option<(&str, &str)>) -> Sink {
        let auth = auth.map(|(u, p)| (u.to_string(), p.to_string()));
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(SinkState::default()));
        let made = starttls.then(server_tls);
        let cert_pem = made.as_ref().map(|(_, pem)| pem.clone());
        let tls = made.map(|(config, _)| config);
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (state, tls, auth) = (shared.clone(), tls.clone(), auth.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
                    state.lock().unwrap().connections += 1;
                    serve(stream, state, tls, auth);
                });
            }
        });
        Sink {
            addr,
            state,
            cert_pem,
        }
    }

    pub fn accepted(&self) -> Vec<Accepted> {
        self.state.lock().unwrap().accepted.clone()
    }

    /// Waits until `check` holds for the accepted messages, or panics after `secs`.
    pub fn wait_for(&self, secs: u64, what: &str, check: impl Fn(&[Accepted]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if check(&self.accepted()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; accepted: {:?}",
                self.accepted()
                    .iter()
                    .map(|a| (&a.sender, &a.recipients))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn server_tls() -> (Arc<rustls::ServerConfig>, String) {
    let names = vec!["sink.test".into(), "localhost".into(), "127.0.0.1".into()];
    let cert = rcgen::generate_simple_self_signed(names).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    (Arc::new(config), cert.cert.pem())
}

trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

fn serve(
    stream: TcpStream,
    state: Arc<Mutex<SinkState>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    auth: Option<(String, String)>,
) {
    let mut authenticated: Option<String> = None;
    let mut io: BufReader<Box<dyn Io>> = BufReader::new(Box::new(stream.try_clone().unwrap()));
    let mut secured = false;
    let mut helo = String::new();
    let mut sender: Option<String> = None;
    let mut recipients: Vec<String> = Vec::new();
    let say = |io: &mut BufReader<Box<dyn Io>>, s: &str| {
        let w = io.get_mut();
        let _ = w.write_all(s.as_bytes());
        let _ = w.flush();
    };
    say(&mut io, "220 sink.test ESMTP\r\n");
    loop {
        let mut line = String::new();
        match io.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = line.trim_end().to_string();
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            helo = line[4..].trim().to_string();
            let mut r = String::from("250-sink.test\r\n250-PIPELINING\r\n250-SIZE 100000000\r\n");
            if tls.is_some() && !secured {
                r.push_str("250-STARTTLS\r\n");
            }
            if auth.is_some() && (secured || tls.is_none()) {
                r.push_str("250-AUTH PLAIN\r\n");
            }
            r.push_str("250 8BITMIME\r\n");
            say(&mut io, &r);
        } else if upper.starts_with("STARTTLS") && tls.is_some() && !secured {
            say(&mut io, "220 2.0.0 go ahead\r\n");
            let conn = rustls::ServerConnection::new(tls.clone().unwrap()).unwrap();
            let tcp = stream.try_clone().unwrap();
            io = BufReader::new(Box::new(rustls::StreamOwned::new(conn, tcp)));
            secured = true;
        } else if upper.starts_with("AUTH PLAIN ") && auth.is_some() {
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(line[11..].trim())
                .unwrap_or_default();
            let parts: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
            let (user, pass) = auth.clone().unwrap();
            if parts.len() == 3 && parts[1] == user.as_bytes() && parts[2] == pass.as_bytes() {
                authenticated = Some(user);
                say(&mut io, "235 2.7.0 ok\r\n");
            } else {
                say(&mut io, "535 5.7.8 bad credentials\r\n");
            }
        } else if upper.starts_with("MAIL FROM:") && auth.is_some() && authenticated.is_none() {
            say(&mut io, "530 5.7.0 authentication required\r\n");
        } else if upper.starts_with("MAIL FROM:") {
            let path = line[10..]
                .split('>')
                .next()
                .unwrap_or("")
                .trim_start_matches('<');
            sender = Some(path.to_string());
            recipients.clear();
            say(&mut io, "250 2.1.0 ok\r\n");
        } else if upper.starts_with("RCPT TO:") {
            let addr = line[8..]
                .split('>')
                .next()
                .unwrap_or("")
                .trim_start_matches('<')
                .to_string();
            let n = {
                let mut s = state.lock().unwrap();
                let n = s.attempts.entry(addr.clone()).or_insert(0);
                *n += 1;
                *n
            };
            if addr.starts_with("reject") {
                say(&mut io, "550 5.1.1 no such user here\r\n");
            } else if addr.starts_with("defer") && n == 1 {
                say(&mut io, "451 4.7.1 try again later\r\n");
            } else {
                recipients.push(addr);
                say(&mut io, "250 2.1.5 ok\r\n");
            }
        } else if upper == "DATA" {
            if sender.is_none() || recipients.is_empty() {
                say(&mut io, "554 5.5.1 no valid recipients\r\n");
                continue;
            }
            say(&mut io, "354 go on\r\n");
            let mut data = Vec::new();
            loop {
                let mut l = Vec::new();
                match io.read_until(b'\n', &mut l) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if l == b".\r\n" {
                    break;
                }
                if l.starts_with(b"..") {
                    l.remove(0);
                }
                data.extend_from_slice(&l);
            }
            state.lock().unwrap().accepted.push(Accepted {
                sender: sender.take().unwrap_or_default(),
                recipients: std::mem::take(&mut recipients),
                data,
                tls: secured,
                helo: helo.clone(),
                auth: authenticated.clone(),
            });
            say(&mut io, "250 2.0.0 Ok: queued\r\n");
        } else if upper == "RSET" {
            sender = None;
            recipients.clear();
            say(&mut io, "250 2.0.0 ok\r\n");
        } else if upper == "QUIT" {
            say(&mut io, "221 2.0.0 bye\r\n");
            return;
        } else if upper == "NOOP" {
            say(&mut io, "250 2.0.0 ok\r\n");
        } else {
            say(&mut io, "502 5.5.2 not implemented\r\n");
        }
    }
}

/// A server whose mail for `remote.test` goes to a sink, and the sink.
pub fn server_with_remote_sink(b: super::Backend) -> (Sink, super::TestServer) {
    let sink = Sink::start(false);
    let s = super::TestServer::start_with(b, |c| {
        c.outbound
            .transport
            .insert("remote.test".into(), sink.addr.to_string());
    });
    (sink, s)
}
