//! A real Dovecot (Debian's dovecot-pop3d) for the import tests: POP3 on a loopback port,
//! Maildir under a temporary directory, users from a passwd-file. Needs root (Dovecot drops to
//! the `mail` user for mailbox access), as CI and this machine run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Dovecot {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Dovecot {
    /// Starts Dovecot for `users` (address, password).
    pub fn start(users: &[(&str, &str)]) -> Dovecot {
        Self::start_with_master(users, None)
    }

    /// The same, with a master user (name, password) who may open any account as
    /// `account*master`.
    pub fn start_with_master(users: &[(&str, &str)], master: Option<(&str, &str)>) -> Dovecot {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        for d in ["run", "state", "mail"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let passwd: String = users
            .iter()
            .map(|(u, p)| format!("{u}:{{PLAIN}}{p}::::::\n"))
            .collect();
        std::fs::write(root.join("passwd"), passwd).unwrap();
        let master_passdb = match master {
            Some((name, password)) => {
                std::fs::write(
                    root.join("master-passwd"),
                    format!("{name}:{{PLAIN}}{password}\n"),
                )
                .unwrap();
                format!(
                    "auth_master_user_separator = *\npassdb {{\n  driver = passwd-file\n  master = yes\n  args = {}/master-passwd\n}}\n",
                    root.display()
                )
            }
            None => String::new(),
        };
        let addr = super::sink::free_port();
        let r = root.display();
        let config = root.join("dovecot.conf");
        std::fs::write(
            &config,
            format!(
                "protocols = pop3\nlisten = 127.0.0.1\nbase_dir = {r}/run\nstate_dir = {r}/state\n\
                 log_path = {r}/dovecot.log\nssl = no\ndisable_plaintext_auth = no\n\
                 auth_mechanisms = plain login\nauth_verbose = yes\nfirst_valid_uid = 1\n\
                 mail_location = maildir:{r}/mail/%d/%n\n{master_passdb}\
                 passdb {{\n  driver = passwd-file\n  args = username_format=%u {r}/passwd\n}}\n\
                 userdb {{\n  driver = static\n  args = uid=mail gid=mail home={r}/mail/%d/%n\n}}\n\
                 service pop3-login {{\n  inet_listener pop3 {{\n    address = 127.0.0.1\n    port = {}\n  }}\n}}\n",
                addr.port()
            ),
        )
        .unwrap();
        let d = Dovecot { addr, dir, config };
        let started = Command::new("dovecot")
            .arg("-c")
            .arg(&d.config)
            .status()
            .expect("dovecot is installed (dovecot-pop3d)");
        assert!(started.success(), "dovecot did not start: {}", d.log());
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "dovecot does not listen: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// The Maildir of `user@domain`.
    pub fn maildir(&self, user: &str) -> PathBuf {
        let (local, domain) = user.split_once('@').unwrap();
        self.dir.path().join("mail").join(domain).join(local)
    }

    /// Puts messages (LF line ends, as Maildir keeps them) into a user's Maildir `new/`, as a
    /// local delivery agent would, owned by the `mail` user.
    pub fn add_messages(&self, user: &str, messages: &[&str]) {
        let maildir = self.maildir(user);
        for d in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(maildir.join(d)).unwrap();
        }
        for (i, m) in messages.iter().enumerate() {
            let name = format!("17000000{i:02}.M{i}P1.tern-test");
            std::fs::write(maildir.join("new").join(name), m).unwrap();
        }
        chown_mail(self.dir.path().join("mail").as_path());
    }
}

fn chown_mail(path: &Path) {
    let ok = Command::new("chown")
        .args(["-R", "mail:mail"])
        .arg(path)
        .status()
        .unwrap();
    assert!(ok.success());
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("doveadm")
            .arg("-c")
            .arg(&self.config)
            .arg("stop")
            .status();
    }
}
