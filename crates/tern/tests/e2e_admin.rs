//! The admin HTTP API over real HTTP: James webadmin routes and error shapes.

#[macro_use]
mod common;

use common::*;
use serde_json::Value;

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn domain_routes(b: Backend) {
    let s = TestServer::start(b);
    assert_eq!(s.admin("GET", "/domains/example.com", None).status, 204);
    assert_eq!(s.admin("GET", "/domains/other.test", None).status, 404);
    assert_eq!(s.admin("PUT", "/domains/Other.Test", None).status, 204);
    assert_eq!(
        json(&s.admin_ok("GET", "/domains", None)),
        serde_json::json!(["example.com", "other.test"])
    );
    assert_eq!(s.admin("DELETE", "/domains/other.test", None).status, 204);
    assert_eq!(s.admin("GET", "/domains/other.test", None).status, 404);
    let bad = s.admin("PUT", "/domains/bad_domain!", None);
    assert_eq!(bad.status, 400);
    let err = json(&bad.body);
    assert_eq!(err["statusCode"], 400);
    assert_eq!(err["type"], "InvalidArgument");
    assert!(err["message"].as_str().unwrap().contains("bad_domain!"));
}

fn user_routes(b: Backend) {
    let s = TestServer::start(b);
    assert_eq!(
        s.admin(
            "PUT",
            "/users/alice@example.com",
            Some(r#"{"password":"p1"}"#)
        )
        .status,
        204
    );
    assert_eq!(
        s.admin("HEAD", "/users/alice@example.com", None).status,
        200
    );
    assert_eq!(
        json(&s.admin_ok("GET", "/users", None)),
        serde_json::json!([{ "username": "alice@example.com" }])
    );
    let boxes = json(&s.admin_ok("GET", "/users/alice@example.com/mailboxes", None));
    assert_eq!(boxes[0]["mailboxName"], "INBOX");
    assert_eq!(boxes[0]["messageCount"], 0);
    assert_eq!(boxes[0]["mailboxId"].as_str().unwrap().len(), 36);

    for (path, body, needle) in [
        ("/users/alice", r#"{"password":"x"}"#, "user@domain"),
        (
            "/users/bob@unknown.test",
            r#"{"password":"x"}"#,
            "does not exist",
        ),
        ("/users/bob@example.com", r#"{"pass":"x"}"#, "password"),
        ("/users/bob@example.com", "not json", "JSON"),
        ("/users/bob@example.com", r#"{"password":""}"#, "empty"),
    ] {
        let r = s.admin("PUT", path, Some(body));
        assert_eq!(r.status, 400, "{path} {body}: {}", r.body);
        let err = json(&r.body);
        assert_eq!(err["type"], "InvalidArgument");
        assert!(
            err["message"].as_str().unwrap().contains(needle),
            "{}",
            r.body
        );
        // The password never appears in answers.
        assert!(!r.body.contains(r#""x""#));
    }
    assert_eq!(
        s.admin("GET", "/users/nobody@example.com/mailboxes", None)
            .status,
        404
    );
    // Changing the password keeps the mailbox, and takes effect at once even for a password
    // just verified (and so remembered by the login cache).
    s.deliver(&["alice@example.com"], &message("kept", "x\r\n"));
    let mut c = s.pop3();
    c.cmd("USER alice@example.com");
    assert!(c.cmd("PASS p1").starts_with("+OK"));
    c.quit();
    assert_eq!(
        s.admin(
            "PUT",
            "/users/alice@example.com",
            Some(r#"{"password":"p2"}"#)
        )
        .status,
        204
    );
    let mut c = s.pop3();
    c.cmd("USER alice@example.com");
    assert!(c.cmd("PASS p1").starts_with("-ERR"));
    c.cmd("USER alice@example.com");
    assert!(c.cmd("PASS p2").starts_with("+OK maildrop has 1"));
    assert_eq!(
        s.admin("DELETE", "/users/alice@example.com", None).status,
        204
    );
    assert_eq!(
        s.admin("HEAD", "/users/alice@example.com", None).status,
        404
    );
}

fn healthcheck_and_unknown_routes(b: Backend) {
    let s = TestServer::start(b);
    let h = json(&s.admin_ok("GET", "/healthcheck", None));
    assert_eq!(h["status"], "healthy");
    let r = s.admin("GET", "/nope", None);
    assert_eq!(r.status, 404);
    assert_eq!(json(&r.body)["type"], "NotFound");
}

#[test]
fn admin_token_is_required_when_configured() {
    let token = "s3cret-admin-token-0123456789";
    let s = TestServer::start_with(Backend::Embedded, |c| c.admin.token = Some(token.into()));
    let no_token =
        tern::admin::client::request(&s.admin_url, "PUT", "/domains/other.test", None).unwrap();
    assert_eq!(no_token.status, 401);
    assert_eq!(json(&no_token.body)["type"], "Unauthorized");
    let wrong = tern::admin::client::request_with_token(
        &s.admin_url,
        Some("wrong-token-0123456789abc"),
        "GET",
        "/users",
        None,
    )
    .unwrap();
    assert_eq!(wrong.status, 401);
    let right = tern::admin::client::request_with_token(
        &s.admin_url,
        Some(token),
        "PUT",
        "/domains/other.test",
        None,
    )
    .unwrap();
    assert_eq!(right.status, 204);
    // Load balancers probe without credentials.
    let health = tern::admin::client::request(&s.admin_url, "GET", "/healthcheck", None).unwrap();
    assert_eq!(health.status, 200);
    // The CLI passes the token from --admin-token / TERN_ADMIN_TOKEN.
    let cli = |token: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tern"));
        cmd.args(["domain", "list", "--admin-url", &s.admin_url]);
        match token {
            Some(t) => cmd.env("TERN_ADMIN_TOKEN", t),
            None => cmd.env_remove("TERN_ADMIN_TOKEN"),
        };
        cmd.output().unwrap()
    };
    let out = cli(Some(token));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("other.test"));
    let out = cli(None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 401"));
}

on_both_backends!(domain_routes, user_routes, healthcheck_and_unknown_routes,);
