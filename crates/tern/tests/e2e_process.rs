//! End to end against the real `tern` binary: crash safety under kill -9, SIGTERM, start-up
//! errors, the CLI, and real third-party clients (curl, Python's smtplib/poplib).

#[macro_use]
mod common;

use common::process::*;
use common::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn kill_9_during_concurrent_deliveries_loses_no_acknowledged_message(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), b);
    let p = spawn(&config);
    setup_user(&p, "alice@example.com", "secret");

    let acked = Arc::new(Mutex::new(Vec::<(String, Vec<u8>)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for t in 0..8 {
        let (acked, stop, addr) = (acked.clone(), stop.clone(), p.smtp);
        workers.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let subject = format!("burst-{t}-{n}");
                let size = if n % 5 == 0 { 300_000 } else { 2_000 };
                let body = message(&subject, &format!("{}\r\n", "z".repeat(size)));
                // Any I/O failure (the server died) ends this worker; only 250s count.
                let result = std::panic::catch_unwind(|| {
                    let mut c = SmtpClient::connect(addr);
                    c.ehlo();
                    c.send_mail("s@remote.test", &["alice@example.com"], &body)
                });
                if let Ok((250, _)) = result {
                    acked.lock().unwrap().push((subject, body));
                }
                n += 1;
            }
        }));
    }
    // Let a good number of deliveries land, then kill the server mid-burst.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 150 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut p = p;
    p.child.kill().unwrap(); // SIGKILL
    p.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 150,
        "only {} deliveries acknowledged before the kill",
        acked.len()
    );
    drop(p);

    let p2 = spawn(&config);
    let mut c = pop3_login(p2.pop3, "alice@example.com", "secret");
    let (count, _) = c.stat();
    assert!(
        count >= acked.len(),
        "{count} stored < {} acknowledged",
        acked.len()
    );
    let mut stored = std::collections::HashMap::new();
    for i in 1..=count {
        let m = c.retr(i);
        let text = String::from_utf8_lossy(&m);
        let subject = text
            .split("Subject: ")
            .nth(1)
            .unwrap()
            .split("\r\n")
            .next()
            .unwrap()
            .to_string();
        stored.insert(subject, m);
    }
    for (subject, body) in &acked {
        let m = stored
            .get(subject)
            .unwrap_or_else(|| panic!("acknowledged {subject} lost"));
        assert!(m.ends_with(body), "{subject} corrupted");
    }
}

fn sigterm_stops_cleanly_and_data_survives(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), b);
    let mut p = spawn(&config);
    setup_user(&p, "bob@example.com", "pw");
    let mut c = SmtpClient::connect(p.smtp);
    c.ehlo();
    assert_eq!(
        c.send_mail(
            "s@remote.test",
            &["bob@example.com"],
            &message("kept", "x\r\n")
        )
        .0,
        250
    );
    let pid = p.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // The idle SMTP session is told, then the process exits 0.
    assert_eq!(c.reply().0, 421);
    let status = p.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(p
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("\"stopped\"")));
    let p2 = spawn(&config);
    assert_eq!(pop3_login(p2.pop3, "bob@example.com", "pw").stat().0, 1);
}

#[test]
fn bad_configuration_fails_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (toml, key) in [
        ("[smtp]\nmax_recipents = 5\n", "max_recipents"),
        ("[pop3]\nlisten = \"nowhere\"\n", "listen"),
        ("[smtp]\nmax_recipients = 0\n", "smtp.max_recipients"),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, toml).unwrap();
        let out = Command::new(TERN)
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{key} not named in: {err}");
    }
    // A busy port is reported, not a crash.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = Command::new(TERN)
        .args([
            "serve",
            "--smtp-listen",
            &taken.local_addr().unwrap().to_string(),
            "--data-dir",
        ])
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen for SMTP"));
}

#[test]
fn peer_strings_cannot_forge_text_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), Backend::Embedded);
    let p = spawn_logging(&config, false);
    setup_user(&p, "carol@example.com", "pw");
    let forged = "evil@example.com\n2026-01-01T00:00:00Z  INFO tern::pop3: pop3 login user=admin";
    let mut c = Pop3Client::connect(p.pop3);
    let plain = b64(format!("\0{forged}\0pw").as_bytes());
    let answer = c.cmd(&format!("AUTH PLAIN {plain}"));
    assert!(answer.starts_with("-ERR [AUTH]"), "{answer}");
    let answer = c.cmd("USER bad\u{1b}[2Jname@example.com");
    assert!(answer.starts_with("-ERR [AUTH]"), "{answer}");
    // A login that is logged (a wrong password), to know the log has caught up.
    c.cmd("USER carol@example.com");
    assert!(c.cmd("PASS wrong").starts_with("-ERR"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !p
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("pop3 login failed"))
    {
        assert!(Instant::now() < deadline, "no login failure logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = p.log.lock().unwrap();
    assert!(
        !log.iter()
            .any(|l| l.starts_with("2026-01-01") || l.contains('\u{1b}')),
        "a forged line or a terminal escape reached the log: {log:#?}"
    );
}

#[test]
fn check_config_lists_every_problem_serve_would_hit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tern.toml");
    std::fs::write(
        &path,
        "[smtp]\nlisten = \"127.0.0.1:2600\"\nmax_recipients = 0\n\
         [pop3]\nlisten = \"127.0.0.1:2600\"\n\
         [tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n\
         [admin]\nmax_connections = 0\n",
    )
    .unwrap();
    for args in [
        &["check-config", "--config"][..],
        &["serve", "--config"][..],
    ] {
        let out = Command::new(TERN).args(args).arg(&path).output().unwrap();
        assert!(!out.status.success(), "{args:?} accepted a broken file");
        let err = String::from_utf8_lossy(&out.stderr);
        for key in [
            "smtp.max_recipients",
            "pop3.listen",
            "tls.cert_file",
            "admin.max_connections",
        ] {
            assert!(err.contains(key), "{args:?}: {key} not named in: {err}");
        }
    }
    std::fs::write(&path, "[smtp]\nmax_recipients = 5\n").unwrap();
    run_ok(
        Command::new(TERN)
            .args(["check-config", "--config"])
            .arg(&path),
    );
}

#[test]
fn cli_manages_domains_and_users() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(&write_config(dir.path(), Backend::Embedded));
    setup_user(&p, "carol@example.com", "pw carol");
    let out = tern_cli(&p.admin_url, &["user", "list"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "carol@example.com\n");
    let out = tern_cli(&p.admin_url, &["domain", "list"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "example.com\n");
    // Errors from the API come back as clear CLI errors.
    let out = tern_cli(
        &p.admin_url,
        &["user", "add", "dave@nowhere.test"],
        Some("pw\n"),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("domain nowhere.test does not exist"));
    let out = tern_cli("http://127.0.0.1:1", &["domain", "list"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `tern serve` running?"));
    // Adding an existing user is refused; `user password` changes the password.
    let out = tern_cli(
        &p.admin_url,
        &["user", "add", "carol@example.com"],
        Some("other\n"),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    // The password with a space works for login.
    pop3_login(p.pop3, "carol@example.com", "pw carol").quit();
    let out = tern_cli(
        &p.admin_url,
        &["user", "password", "carol@example.com"],
        Some("pw carol\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tern_cli(&p.admin_url, &["user", "remove", "carol@example.com"], None);
    assert!(out.status.success());
    let mut c = Pop3Client::connect(p.pop3);
    c.cmd("USER carol@example.com");
    assert!(c.cmd("PASS pw carol").starts_with("-ERR"));
}

#[test]
fn a_cli_whose_output_is_cut_short_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(&write_config(dir.path(), Backend::Embedded));
    setup_user(&p, "carol@example.com", "pw carol");
    // As `tern user list | head -0`: the reader is gone before the command writes (it first
    // asks the server).
    let mut child = Command::new(TERN)
        .args(["user", "list"])
        .env("TERN_ADMIN_URL", &p.admin_url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
}

#[test]
fn cli_manages_aliases_forwards_and_groups() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(&write_config(dir.path(), Backend::Embedded));
    setup_user(&p, "carol@example.com", "pw");
    let run = |args: &[&str]| cli_ok(&p.admin_url, args);
    run(&["alias", "add", "info@example.com", "carol@example.com"]);
    run(&["alias", "add", "sales@example.com", "carol@example.com"]);
    assert_eq!(
        run(&["alias", "list", "carol@example.com"]),
        "info@example.com -> carol@example.com\nsales@example.com -> carol@example.com\n"
    );
    assert!(run(&["alias", "list"]).contains("info@example.com -> carol@example.com"));
    run(&["group", "add", "team@example.com", "carol@example.com"]);
    run(&["group", "add", "team@example.com", "dave@elsewhere.test"]);
    assert_eq!(run(&["group", "list"]), "team@example.com\n");
    assert_eq!(
        run(&["group", "list", "team@example.com"]),
        "team@example.com -> carol@example.com\nteam@example.com -> dave@elsewhere.test\n"
    );
    // A forward that names the user itself keeps a copy in the mailbox.
    run(&[
        "forward",
        "add",
        "carol@example.com",
        "carol@elsewhere.test",
    ]);
    run(&["forward", "add", "carol@example.com", "carol@example.com"]);
    assert_eq!(
        run(&["forward", "list", "carol@example.com"]),
        "carol@example.com -> carol@elsewhere.test\ncarol@example.com -> carol@example.com\n"
    );
    run(&["alias", "remove", "sales@example.com", "carol@example.com"]);
    assert_eq!(
        run(&["alias", "list", "carol@example.com"]),
        "info@example.com -> carol@example.com\n"
    );
    // The API's refusals come back as errors: a user cannot be an alias.
    let out = tern_cli(
        &p.admin_url,
        &["alias", "add", "carol@example.com", "info@example.com"],
        None,
    );
    assert!(!out.status.success());
    // Mail to the alias reaches the user.
    let mut c = SmtpClient::connect(p.smtp);
    c.ehlo();
    let (code, text) = c.send_mail(
        "x@elsewhere.test",
        &["info@example.com"],
        &message("via alias", "hi\r\n"),
    );
    assert_eq!(code, 250, "{text}");
    assert_eq!(pop3_login(p.pop3, "carol@example.com", "pw").stat().0, 1);
}

/// The peak resident size since the last reset (VmHWM).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Octets received on the socket and not read yet.
fn pending_octets(socket: &std::net::TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which outlives the call.
    let r = unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(r, 0, "FIONREAD failed");
    n.max(0) as usize
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn slow_reader_of_a_20_mib_retr_keeps_server_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(&write_config(dir.path(), Backend::Embedded));
    setup_user(&p, "gina@example.com", "pw");
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    while body.len() < 20 * 1024 * 1024 {
        body.extend_from_slice(
            b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n",
        );
    }
    let mut c = SmtpClient::connect(p.smtp);
    c.ehlo();
    assert_eq!(
        c.send_mail("s@remote.test", &["gina@example.com"], &body).0,
        250
    );
    c.quit();
    let mut pop = pop3_login(p.pop3, "gina@example.com", "pw");
    // Reset the server's peak resident size (Linux: clear_refs 5), so that the peak measured
    // after the transfer is this transfer's.
    let pid = p.child.id();
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = rss_kib(pid);
    // Ask for the message; read nothing until the client's socket holds a good part of it
    // (the server is streaming and TCP is pushing back), then read it.
    pop.send_raw(b"RETR 1\r\n");
    let deadline = Instant::now() + Duration::from_secs(60);
    while pending_octets(&pop.w) < 64 * 1024 {
        assert!(
            Instant::now() < deadline,
            "the server never started sending"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(pop.line().starts_with("+OK"));
    let got = pop.read_multiline();
    assert!(got.ends_with(&body), "the message arrives whole");
    let peak = peak_rss_kib(pid);
    assert!(
        peak < before + 8 * 1024,
        "server memory peaked at {peak} KiB (from {before} KiB) while sending 20 MiB to a slow reader"
    );
}

#[test]
fn certificate_is_reloaded_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    tern::tls::write_self_signed("localhost", &first).unwrap();
    tern::tls::write_self_signed("localhost", &second).unwrap();
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(first.join(f), live.join(f)).unwrap();
    }
    let config = write_config(dir.path(), Backend::Embedded);
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml = toml.replace("[pop3]\n", "[pop3]\ntls_listen = \"127.0.0.1:0\"\n");
    toml.push_str(&format!(
        "\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        live.join("cert.pem").display(),
        live.join("key.pem").display()
    ));
    std::fs::write(&config, toml).unwrap();
    let p = spawn(&config);
    let trusted = [first.join("cert.pem"), second.join("cert.pem")];
    let trusted: Vec<&Path> = trusted.iter().map(PathBuf::as_path).collect();
    let presented = |addr: SocketAddr| -> Vec<u8> {
        let mut tls = tls_wrap(std::net::TcpStream::connect(addr).unwrap(), &trusted);
        let mut greeting = [0u8; 3];
        std::io::Read::read_exact(&mut tls, &mut greeting).unwrap();
        assert_eq!(&greeting, b"+OK");
        tls.conn.peer_certificates().unwrap()[0].to_vec()
    };
    let der = |dir: &Path| {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_file(dir.join("cert.pem"))
            .unwrap()
            .to_vec()
    };
    let addr = p.pop3_tls.unwrap();
    assert_eq!(presented(addr), der(&first));
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(second.join(f), live.join(f)).unwrap();
    }
    let pid = p.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while presented(addr) != der(&second) {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A broken file is refused and the current certificate stays.
    std::fs::write(live.join("cert.pem"), "garbage").unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    // The server reports the failed reload; from then on the old certificate must still be
    // the one served.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !p
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("reload failed"))
    {
        assert!(
            Instant::now() < deadline,
            "the failed reload was never reported"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(presented(addr), der(&second));
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn curl_sends_over_smtp_and_fetches_over_pop3(b: Backend) {
    assert!(
        have("curl"),
        "curl is needed for this test (apt-get install curl)"
    );
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(&write_config(dir.path(), b));
    setup_user(&p, "erin@example.com", "pw");
    let mail = dir.path().join("mail.txt");
    std::fs::write(
        &mail,
        "From: x@remote.test\r\nSubject: via curl\r\n\r\nHello from curl\r\n.dot line\r\n",
    )
    .unwrap();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--url",
            &format!("smtp://{}", p.smtp),
            "--mail-from",
            "x@remote.test",
        ])
        .args(["--mail-rcpt", "erin@example.com", "-T"])
        .arg(&mail)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl smtp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = run_ok(Command::new("curl").args([
        "-sS",
        "-u",
        "erin@example.com:pw",
        &format!("pop3://{}/", p.pop3),
    ]));
    assert!(String::from_utf8_lossy(&list.stdout).starts_with("1 "));
    let retr = Command::new("curl")
        .args([
            "-sS",
            "-u",
            "erin@example.com:pw",
            &format!("pop3://{}/1", p.pop3),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&retr.stdout);
    assert!(
        text.contains("Subject: via curl\r\n\r\nHello from curl\r\n.dot line\r\n"),
        "{text}"
    );
}

fn python_smtplib_and_poplib_interoperate(b: Backend) {
    assert!(have("python3"), "python3 is needed for this test");
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(&write_config(dir.path(), b));
    setup_user(&p, "frank@example.com", "pw");
    let script = format!(
        r#"
import smtplib, poplib
s = smtplib.SMTP("{sh}", {sp})
s.sendmail("x@remote.test", ["frank@example.com"], b"Subject: py\r\n\r\nfrom python\r\n")
s.quit()
p = poplib.POP3("{ph}", {pp})
p.user("frank@example.com"); p.pass_("pw")
count, size = p.stat()
resp, lines, octets = p.retr(1)
assert octets == size, (octets, size)
assert lines[-1] == b"from python", lines
p.dele(1); p.quit()
p = poplib.POP3("{ph}", {pp})
p.user("frank@example.com"); p.pass_("pw")
assert p.stat() == (0, 0), p.stat()
p.quit()
print("ok")
"#,
        sh = p.smtp.ip(),
        sp = p.smtp.port(),
        ph = p.pop3.ip(),
        pp = p.pop3.port()
    );
    let out = run_ok(Command::new("python3").arg("-c").arg(script));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

on_both_backends!(
    kill_9_during_concurrent_deliveries_loses_no_acknowledged_message,
    sigterm_stops_cleanly_and_data_survives,
    curl_sends_over_smtp_and_fetches_over_pop3,
    python_smtplib_and_poplib_interoperate,
);

/// The packaged systemd unit: `systemd-analyze verify` finds nothing to say about it (run on a
/// copy naming the binary under test), the packaged configuration passes `check-config`, and
/// the server reports readiness, then stopping, on the socket systemd gives it (Type=notify).
#[test]
fn the_packaged_unit_verifies_and_the_server_notifies_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let unit = std::fs::read_to_string(root.join("packaging/tern.service")).unwrap();
    assert!(
        unit.contains("Type=notify") && unit.contains("CapabilityBoundingSet=CAP_NET_BIND_SERVICE")
    );
    let copy = dir.path().join("tern.service");
    std::fs::write(&copy, unit.replace("/usr/bin/tern", TERN)).unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stderr).to_string()
        + &String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze: {said}"
    );
    run_ok(
        Command::new(TERN)
            .args(["check-config", "--config"])
            .arg(root.join("packaging/tern.toml")),
    );

    let socket_path = dir.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let config = write_config(dir.path(), Backend::Embedded);
    let mut child = Command::new(TERN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("READY=1 within 30 s");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "READY=1");
    assert!(Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success());
    let n = socket.recv(&mut buf).expect("STOPPING=1 on SIGTERM");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "STOPPING=1");
    assert!(child.wait().unwrap().success());
}
