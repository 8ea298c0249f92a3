//! Prometheus metrics end to end: real POP3 and SMTP conversations, then `GET /metrics` scraped
//! with curl and parsed line by line (every sample well formed, `# EOF` last), and the counters
//! checked against what the conversations did.

#[macro_use]
mod common;

use common::*;
use std::collections::HashMap;

/// Sample name with its labels (as written) -> value.
fn scrape(s: &TestServer) -> HashMap<String, f64> {
    let out = std::process::Command::new("curl")
        .args(["-sf", "-D", "-"])
        .arg(format!("{}/metrics", s.admin_url))
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "scrape failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "the exposition ends with # EOF");
    let mut samples = HashMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let metric = name.split('{').next().unwrap();
        assert!(
            metric.starts_with("tern_")
                && metric
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        if let Some(labels) = name.strip_prefix(metric) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
        assert!(
            samples.insert(name.to_string(), value).is_none(),
            "{name} twice"
        );
    }
    samples
}

/// The metrics are the process's: tests that count exact differences take turns.
static COUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn counting() -> std::sync::MutexGuard<'static, ()> {
    COUNTING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn get(samples: &HashMap<String, f64>, name: &str) -> f64 {
    samples.get(name).copied().unwrap_or(0.0)
}

fn counters_follow_the_conversations(b: Backend) {
    let _turn = counting();
    let s = TestServer::start(b);
    s.user("alice");
    let before = scrape(&s);
    // SMTP: two messages stored, one unknown recipient refused (5xx).
    s.deliver(&["alice@example.com"], &message("one", "x\r\n"));
    s.deliver(&["alice@example.com"], &message("two", "y\r\n"));
    let mut c = s.smtp();
    c.ehlo();
    assert_eq!(c.cmd("MAIL FROM:<a@remote.test>").0, 250);
    assert_eq!(c.cmd("RCPT TO:<nobody@example.com>").0, 550);
    c.quit();
    // POP3: one good login with a retrieval, one bad password.
    let mut p = s.login("alice");
    p.retr(1);
    p.quit();
    let mut bad = s.pop3();
    bad.cmd("USER alice@example.com");
    assert!(bad.cmd("PASS wrong").starts_with("-ERR"));
    bad.quit();
    let after = scrape(&s);
    let delta = |name: &str| get(&after, name) - get(&before, name);
    assert_eq!(delta("tern_connections_total{protocol=\"smtp\"}"), 3.0);
    assert_eq!(delta("tern_connections_total{protocol=\"pop3\"}"), 2.0);
    assert_eq!(
        delta("tern_logins_total{protocol=\"pop3\",outcome=\"success\"}"),
        1.0
    );
    assert_eq!(
        delta("tern_logins_total{protocol=\"pop3\",outcome=\"failure\"}"),
        1.0
    );
    assert_eq!(delta("tern_messages_total{outcome=\"stored\"}"), 2.0);
    assert!(delta("tern_message_bytes_total") > 0.0);
    assert_eq!(delta("tern_smtp_replies_total{class=\"5xx\"}"), 1.0);
    // Per message: MAIL, RCPT, end of data: 250s; plus EHLO and QUIT (2xx) for each session.
    assert!(delta("tern_smtp_replies_total{class=\"2xx\"}") >= 8.0);
    assert_eq!(
        delta("tern_smtp_replies_total{class=\"3xx\"}"),
        2.0,
        "two 354s"
    );
    let backend = if b.is_cassandra() {
        "cassandra"
    } else {
        "embedded"
    };
    let deliver = format!(
        "tern_store_operation_seconds_count{{operation=\"deliver\",backend=\"{backend}\"}}"
    );
    assert_eq!(delta(&deliver), 2.0);
    let open = format!(
        "tern_store_operation_seconds_count{{operation=\"open_body\",backend=\"{backend}\"}}"
    );
    assert_eq!(delta(&open), 1.0);
    let bucket = format!("tern_store_operation_seconds_bucket{{le=\"+Inf\",operation=\"deliver\",backend=\"{backend}\"}}");
    assert_eq!(delta(&bucket), 2.0, "{after:?}");
    // No session is open once the clients are gone (polled: the server ends them after QUIT).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while get(&scrape(&s), "tern_sessions{protocol=\"pop3\"}") != 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a POP3 session stays counted"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // State read at scrape time: the queue is empty, and a finished task is counted.
    assert_eq!(get(&after, "tern_queue_messages"), 0.0);
    let r = s.admin("DELETE", "/tasks?olderThan=1day", None);
    assert_eq!(r.status, 201, "{}", r.body);
    let id: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    s.admin_ok(
        "GET",
        &format!(
            "/tasks/{}/await?timeout=30s",
            id["taskId"].as_str().unwrap()
        ),
        None,
    );
    assert!(get(&scrape(&s), "tern_tasks{status=\"completed\"}") >= 1.0);
}

/// Every metric the Grafana dashboard in docs/ plots exists in a scrape.
#[test]
fn the_dashboard_plots_metrics_that_exist() {
    let s = TestServer::start(Backend::Embedded);
    s.user("alice");
    s.deliver(&["alice@example.com"], &message("one", "x\r\n"));
    let mut p = s.login("alice");
    p.retr(1);
    p.quit();
    let scraped: std::collections::HashSet<String> = scrape(&s)
        .keys()
        .map(|k| k.split('{').next().unwrap().to_string())
        .collect();
    let dashboard = include_str!("../../../docs/grafana-dashboard.json");
    let mut plotted: Vec<&str> = dashboard
        .match_indices("tern_")
        .map(|(i, _)| {
            let rest = &dashboard[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|name| *name != "tern_" && !name.starts_with("tern_overview"))
        .collect();
    plotted.sort();
    plotted.dedup();
    assert!(plotted.len() >= 10, "{plotted:?}");
    for name in plotted {
        // Counters that saw no event yet (errors, remote deliveries) have no sample: their
        // `# TYPE` line is enough.
        let declared = dashboard_declared(&s, name);
        assert!(
            scraped.contains(name) || declared,
            "the dashboard plots {name}, which Tern does not export"
        );
    }
}

/// Whether the exposition declares a metric family for `name` (`# TYPE` line), samples or not.
fn dashboard_declared(s: &TestServer, name: &str) -> bool {
    let out = std::process::Command::new("curl")
        .arg("-sf")
        .arg(format!("{}/metrics", s.admin_url))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let family = name
        .trim_end_matches("_total")
        .trim_end_matches("_bucket")
        .trim_end_matches("_count")
        .trim_end_matches("_sum");
    text.lines()
        .any(|l| l.starts_with(&format!("# TYPE {family} ")))
}

/// A returning user's maildrop is listed while the password is checked (message-id listing):
/// a wrong password then costs one listing read that is thrown away, a right one uses the read
/// it overlapped (one read, not two), and the listing is current. UID listings, which may
/// write, are never read before the login succeeded.
fn returning_users_are_listed_while_their_password_is_checked(b: Backend) {
    let _turn = counting();
    let s = TestServer::start(b);
    s.user("alice");
    let backend = if b.is_cassandra() {
        "cassandra"
    } else {
        "embedded"
    };
    let listings = || {
        get(
            &scrape(&s),
            &format!(
                "tern_store_operation_seconds_count{{operation=\"pop3_listing\",backend=\"{backend}\"}}"
            ),
        )
    };
    let mut first = s.login("alice");
    assert_eq!(first.stat().0, 0);
    first.quit();
    s.deliver(&["alice@example.com"], &message("new", "x\r\n"));
    let before = listings();
    let mut bad = s.pop3();
    bad.cmd("USER alice@example.com");
    let refused = bad.cmd("PASS wrong");
    assert!(
        refused.starts_with("-ERR") && !refused.contains('1'),
        "{refused}"
    );
    let after_bad = listings();
    let prefetched = if b.is_uid() { 0.0 } else { 1.0 };
    assert_eq!(
        after_bad - before,
        prefetched,
        "listing reads for a refused login"
    );
    let mut again = s.login("alice");
    assert_eq!(again.stat().0, 1, "the listing is current");
    again.quit();
    assert_eq!(
        listings() - after_bad,
        1.0,
        "one listing read for a successful login"
    );
}

on_both_backends!(counters_follow_the_conversations);

mod listing_overlap {
    use super::*;
    on_every_backend_and_listing!(returning_users_are_listed_while_their_password_is_checked);
}
