//! Migration from a real Dovecot end to end: mailboxes copied with `tern import pop3` (over
//! Dovecot's POP3) and `tern import maildir` (its Maildir and dovecot-uidlist); afterwards a
//! POP3 client's UIDL list from Tern equals the one it had from Dovecot, message for message,
//! with the same sizes and contents; a second run copies nothing.

#[macro_use]
mod common;

use common::dovecot::Dovecot;
use common::process::tern_cli;
use common::*;

const ALICE: [&str; 3] = [
    "From: a@old.test\nSubject: first\n\nhello\n.leading dot\n",
    "From: b@old.test\nSubject: second\n\nline\n",
    "From: c@old.test\nSubject: third\n\n\n",
];
const BOB: [&str; 2] = [
    "From: x@old.test\nSubject: one\n\nbody one\n",
    "From: y@old.test\nSubject: two\n\nbody two\n",
];

/// UIDL list, LIST sizes and RETR contents as a POP3 client sees them.
fn seen(mut c: Pop3Client) -> Vec<(String, u64, Vec<u8>)> {
    let uidls = c.uidl();
    let sizes = c.list();
    let mut out = Vec::new();
    for ((n, uidl), (_, size)) in uidls.into_iter().zip(sizes) {
        out.push((uidl, size, c.retr(n)));
    }
    c.quit();
    out
}

fn dovecot_session(d: &Dovecot, user: &str) -> Pop3Client {
    dovecot_session_as(d, user, "old-secret")
}

fn dovecot_session_as(d: &Dovecot, user: &str, password: &str) -> Pop3Client {
    let mut c = Pop3Client::connect(d.addr);
    assert!(c.cmd(&format!("USER {user}")).starts_with("+OK"));
    let r = c.cmd(&format!("PASS {password}"));
    assert!(r.starts_with("+OK"), "{r}: {}", d.log());
    c
}

fn run_cli(s: &TestServer, args: &[&str]) -> String {
    let out = tern_cli(&s.admin_url, args, None);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn mailboxes_move_from_dovecot_keeping_uidls(b: Backend) {
    let d = Dovecot::start_with_master(
        &[
            ("alice@example.com", "old-secret"),
            ("bob@example.com", "old-secret"),
            ("carol@example.com", "carols-own"),
        ],
        Some(("migrator", "master-secret")),
    );
    d.add_messages("alice@example.com", &ALICE);
    d.add_messages("bob@example.com", &BOB);
    d.add_messages("carol@example.com", &BOB[..1]);
    // Clients have used the old server: Dovecot numbered the messages (dovecot-uidlist).
    let alice_before = seen(dovecot_session(&d, "alice@example.com"));
    let bob_before = seen(dovecot_session(&d, "bob@example.com"));
    assert_eq!(alice_before.len(), 3);

    let s = TestServer::start(b);
    s.user("alice");
    s.user("bob");
    let dir = tempfile::tempdir().unwrap();
    let pop3_accounts = dir.path().join("pop3.txt");
    std::fs::write(
        &pop3_accounts,
        "# user password [target]\nalice@example.com old-secret\n",
    )
    .unwrap();
    let server = d.addr.to_string();
    let args = [
        "import",
        "pop3",
        "--server",
        &server,
        pop3_accounts.to_str().unwrap(),
    ];
    let summary = run_cli(&s, &args);
    assert!(
        summary.contains("3 messages copied") && summary.contains("0 already there"),
        "{summary}"
    );
    assert_eq!(
        seen(s.login("alice")),
        alice_before,
        "Tern shows alice what Dovecot showed"
    );

    // Idempotent: nothing is copied twice.
    let summary = run_cli(&s, &args);
    assert!(
        summary.contains("0 messages copied") && summary.contains("3 already there"),
        "{summary}"
    );
    assert_eq!(s.login("alice").stat().0, 3);

    // From the Maildir itself, UIDLs computed as Dovecot's POP3 computes them.
    let maildir_accounts = dir.path().join("maildir.txt");
    std::fs::write(
        &maildir_accounts,
        format!(
            "{} bob@example.com\n",
            d.maildir("bob@example.com").display()
        ),
    )
    .unwrap();
    let summary = run_cli(
        &s,
        &["import", "maildir", maildir_accounts.to_str().unwrap()],
    );
    assert!(summary.contains("2 messages copied"), "{summary}");
    assert_eq!(
        seen(s.login("bob")),
        bob_before,
        "Tern shows bob what Dovecot showed"
    );

    // A master user opens an account whose password the operator does not know.
    s.user("carol");
    let carol_before = seen(dovecot_session_as(&d, "carol@example.com", "carols-own"));
    let master_accounts = dir.path().join("master.txt");
    std::fs::write(&master_accounts, "carol@example.com\n").unwrap();
    let out = std::process::Command::new(common::process::TERN)
        .args([
            "import",
            "pop3",
            "--server",
            &server,
            "--master-user",
            "migrator",
        ])
        .arg(&master_accounts)
        .env("TERN_ADMIN_URL", &s.admin_url)
        .env("TERN_IMPORT_MASTER_PASSWORD", "master-secret")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 messages copied"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(seen(s.login("carol")), carol_before);

    // A wrong password is reported per account, and the command fails.
    std::fs::write(&pop3_accounts, "bob@example.com wrong\n").unwrap();
    let out = tern_cli(&s.admin_url, &args, None);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "failed: bob@example.com -> bob@example.com: login of bob@example.com refused"
        ),
        "{text}"
    );
}

on_both_backends!(mailboxes_move_from_dovecot_keeping_uidls);
