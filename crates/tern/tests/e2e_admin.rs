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
            "/users/alice@example.com?force",
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
    let component = if b.is_cassandra() {
        "Cassandra backend"
    } else {
        "Embedded backend"
    };
    let escaped = component.replace(' ', "%20");
    let check = serde_json::json!({
        "componentName": component,
        "escapedComponentName": escaped,
        "status": "healthy",
        "cause": null,
    });
    assert_eq!(
        json(&s.admin_ok("GET", "/healthcheck", None)),
        serde_json::json!({ "status": "healthy", "checks": [check.clone()] })
    );
    assert_eq!(
        json(&s.admin_ok("GET", "/healthcheck?strict", None)),
        serde_json::json!({ "status": "healthy", "checks": [check.clone()] })
    );
    assert_eq!(
        json(&s.admin_ok("GET", &format!("/healthcheck?check={escaped}"), None)),
        serde_json::json!({ "status": "healthy", "checks": [check.clone()] })
    );
    let r = s.admin("GET", "/healthcheck?check=Nothing%20here", None);
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(json(&r.body)["type"], "notFound");
    assert_eq!(
        json(&s.admin_ok("GET", "/healthcheck/checks", None)),
        serde_json::json!([{ "componentName": component, "escapedComponentName": escaped }])
    );
    assert_eq!(
        json(&s.admin_ok(
            "GET",
            &format!("/healthcheck/checks/{escaped}?strict"),
            None
        )),
        check
    );
    assert_eq!(
        s.admin("GET", "/healthcheck/checks/Nothing", None).status,
        404
    );
    let r = s.admin("GET", "/nope", None);
    assert_eq!(r.status, 404);
    let err = json(&r.body);
    assert_eq!(err["type"], "notFound");
    assert_eq!(err["statusCode"], 404);
}

/// James's user routes: 409 on an existing user, `?force` to change a password, 400 for
/// malformed names everywhere, and the users of a domain.
fn james_user_shapes(b: Backend) {
    let s = TestServer::start(b);
    let put = |path: &str, body: &str| s.admin("PUT", path, Some(body));
    assert_eq!(
        put("/users/carol@example.com", r#"{"password":"one"}"#).status,
        204
    );
    let again = put("/users/carol@example.com", r#"{"password":"two"}"#);
    assert_eq!(again.status, 409, "{}", again.body);
    let err = json(&again.body);
    assert_eq!(err["statusCode"], 409);
    assert_eq!(err["type"], "WrongState");
    let mut c = s.pop3();
    c.cmd("USER carol@example.com");
    assert!(
        c.cmd("PASS one").starts_with("+OK"),
        "409 left the password alone"
    );
    c.quit();
    assert_eq!(
        put("/users/carol@example.com?force", r#"{"password":"two"}"#).status,
        204
    );
    assert_eq!(
        put("/users/dave@example.com?force", r#"{"password":"d"}"#).status,
        204,
        "force also creates"
    );
    let mut c = s.pop3();
    c.cmd("USER carol@example.com");
    assert!(c.cmd("PASS two").starts_with("+OK"));
    c.quit();
    // A password past admin.max_password_bytes (1024 by default), and a body past the cap.
    let long = format!(r#"{{"password":"{}"}}"#, "p".repeat(1025));
    let r = put("/users/erin@example.com", &long);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(json(&r.body)["message"]
        .as_str()
        .unwrap()
        .contains("too long"));
    let huge = format!(r#"{{"password":"{}"}}"#, "p".repeat(1_500_000));
    assert_eq!(put("/users/erin@example.com", &huge).status, 413);
    assert_eq!(s.admin("HEAD", "/users/erin@example.com", None).status, 404);
    // Malformed names: 400 on every user route, control characters included.
    for bad in ["no-at-sign", "a%0Ab@example.com", "a%1B@example.com"] {
        assert_eq!(
            s.admin("HEAD", &format!("/users/{bad}"), None).status,
            400,
            "{bad}"
        );
        assert_eq!(
            s.admin("DELETE", &format!("/users/{bad}"), None).status,
            400,
            "{bad}"
        );
        assert_eq!(
            s.admin("GET", &format!("/users/{bad}/mailboxes"), None)
                .status,
            400,
            "{bad}"
        );
        let r = put(&format!("/users/{bad}"), r#"{"password":"x"}"#);
        assert_eq!(r.status, 400, "{bad}");
        assert!(
            !r.body.contains('\u{1b}') && !r.body.contains("a\nb"),
            "{}",
            r.body
        );
    }
    // The users of one domain.
    assert_eq!(s.admin("PUT", "/domains/other.test", None).status, 204);
    assert_eq!(
        put("/users/zed@other.test", r#"{"password":"z"}"#).status,
        204
    );
    assert_eq!(
        json(&s.admin_ok("GET", "/domains/example.com/users", None)),
        serde_json::json!(["carol@example.com", "dave@example.com"])
    );
    assert_eq!(
        json(&s.admin_ok("GET", "/domains/other.test/users", None)),
        serde_json::json!(["zed@other.test"])
    );
    let r = s.admin("GET", "/domains/unknown.test/users", None);
    assert_eq!(
        (r.status, json(&r.body)["type"].clone()),
        (404, "notFound".into())
    );
    assert_eq!(
        s.admin("GET", "/domains/bad_domain!/users", None).status,
        400
    );
}

/// Task routes as James shapes them: 201 with a Location header, James's date format, dates
/// that do not apply left out, newest first, filters, strict numbers, and the cleanup of old
/// tasks.
fn james_task_shapes(b: Backend) {
    let s = TestServer::start(b);
    let submit = || {
        let r = s.admin("POST", "/mailboxes?task=fixPop3Inconsistencies", None);
        assert_eq!(r.status, 201, "{}", r.body);
        let id = json(&r.body)["taskId"].as_str().unwrap().to_string();
        assert_eq!(r.header("Location"), Some(format!("/tasks/{id}").as_str()));
        json(&s.admin_ok("GET", &format!("/tasks/{id}/await?timeout=60s"), None));
        id
    };
    let (first, second) = (submit(), submit());
    let t = json(&s.admin_ok("GET", &format!("/tasks/{first}"), None));
    let mut keys: Vec<&str> = t.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "additionalInformation",
            "completedDate",
            "executedOn",
            "startedDate",
            "status",
            "submitDate",
            "submittedFrom",
            "taskId",
            "type"
        ],
        "{t}"
    );
    for field in ["submitDate", "startedDate", "completedDate"] {
        assert_james_date(t[field].as_str().unwrap());
    }
    let listed = json(&s.admin_ok("GET", "/tasks", None));
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()], "newest first");
    let one = json(&s.admin_ok("GET", "/tasks?status=completed&limit=1&offset=1", None));
    assert_eq!(one[0]["taskId"], first.as_str());
    assert_eq!(
        json(&s.admin_ok("GET", "/tasks?type=BlobGCTask", None)),
        serde_json::json!([])
    );
    assert_eq!(
        json(&s.admin_ok("GET", "/tasks?status=canceled", None)),
        serde_json::json!([])
    );
    for bad in ["status=cancelled", "status=bogus", "limit=-1", "offset=x"] {
        assert_eq!(
            s.admin("GET", &format!("/tasks?{bad}"), None).status,
            400,
            "{bad}"
        );
    }
    // Durations are checked: no overflow, no zero, at most 365 days (James's maximum).
    for bad in [
        "18446744073709551615",
        "99999999999999999999d",
        "0s",
        "366d",
        "2y",
        "-1",
        "5 parsecs",
        "",
    ] {
        let r = s.admin("GET", &format!("/tasks/{first}/await?timeout={bad}"), None);
        assert_eq!(r.status, 400, "timeout={bad}: {}", r.body);
    }
    assert_eq!(
        s.admin("GET", &format!("/tasks/{first}/await?timeout=1y"), None)
            .status,
        200
    );
    for bad in ["18446744073709551615", "307445734561825861", "-5", "x"] {
        let r = s.admin(
            "DELETE",
            &format!("/blobs?scope=unreferenced&graceMinutes={bad}"),
            None,
        );
        assert_eq!(r.status, 400, "graceMinutes={bad}: {}", r.body);
    }
    // Cleanup: nothing is older than a day; everything finished is older than a millisecond.
    let cleanup = |older: &str| {
        let r = s.admin("DELETE", &format!("/tasks?olderThan={older}"), None);
        assert_eq!(r.status, 201, "{}", r.body);
        let id = json(&r.body)["taskId"].as_str().unwrap().to_string();
        json(&s.admin_ok("GET", &format!("/tasks/{id}/await?timeout=60s"), None))
    };
    let done = cleanup("1day");
    assert_eq!(done["type"], "tasks-cleanup");
    assert_eq!(
        done["additionalInformation"]["removedTaskCount"], 0,
        "{done}"
    );
    let done = cleanup("1ms");
    assert_eq!(done["status"], "completed");
    assert!(
        done["additionalInformation"]["removedTaskCount"]
            .as_u64()
            .unwrap()
            >= 2,
        "{done}"
    );
    assert_eq!(s.admin("GET", &format!("/tasks/{first}"), None).status, 404);
    assert_eq!(s.admin("DELETE", "/tasks", None).status, 400);
    assert_eq!(s.admin("DELETE", "/tasks?olderThan=soon", None).status, 400);
}

#[test]
fn admin_token_is_required_when_configured() {
    let token = "s3cret-admin-token-0123456789";
    let s = TestServer::start_with(Backend::Embedded, |c| c.admin.token = Some(token.into()));
    let no_token =
        tern::admin::client::request(&s.admin_url, "PUT", "/domains/other.test", None).unwrap();
    assert_eq!(no_token.status, 401);
    assert_eq!(json(&no_token.body)["type"], "InvalidArgument");
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
    for path in [
        "/healthcheck",
        "/healthcheck/checks",
        "/healthcheck/checks/Embedded%20backend",
    ] {
        let health = tern::admin::client::request(&s.admin_url, "GET", path, None).unwrap();
        assert_eq!(health.status, 200, "{path}");
    }
    // A token of another length is refused the same way as one of the right length.
    for wrong in [
        "x",
        "s3cret-admin-token-012345678",
        "s3cret-admin-token-0123456789-and-more",
    ] {
        let r = tern::admin::client::request_with_token(
            &s.admin_url,
            Some(wrong),
            "GET",
            "/users",
            None,
        )
        .unwrap();
        assert_eq!(r.status, 401, "{wrong}");
    }
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

/// Opens a connection and sends half of a request's headers.
fn half_request(addr: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(b"GET /domains HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    c
}

/// Waits (up to `limit`) for the server to close the connection; true if it did.
fn closed_by_server(c: &mut std::net::TcpStream, limit: std::time::Duration) -> bool {
    use std::io::Read;
    c.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Polls `GET /domains` until it answers `status` (30 s at most).
fn until_status(s: &TestServer, status: u16) -> tern::admin::client::Response {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = tern::admin::client::request(&s.admin_url, "GET", "/domains", None).unwrap();
        if r.status == status {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never {status}: {} {}",
            r.status,
            r.body
        );
    }
}

#[test]
fn admin_listener_caps_connections() {
    let s = TestServer::start_with(Backend::Embedded, |c| {
        c.admin.header_timeout_secs = 3600;
        c.admin.max_connections = 2;
    });
    let addr = s.admin_url.trim_start_matches("http://").to_string();
    // Two half-sent requests take both places (once accepted); a third is answered 503.
    let a = half_request(&addr);
    let b = half_request(&addr);
    let refused = until_status(&s, 503);
    assert_eq!(json(&refused.body)["statusCode"], 503);
    drop((a, b));
    until_status(&s, 200);
}

#[test]
fn admin_listener_drops_half_sent_requests() {
    let s = TestServer::start_with(Backend::Embedded, |c| c.admin.header_timeout_secs = 1);
    let addr = s.admin_url.trim_start_matches("http://").to_string();
    let mut a = half_request(&addr);
    assert!(
        closed_by_server(&mut a, std::time::Duration::from_secs(30)),
        "a half-sent request is still open after 30 s"
    );
}

#[test]
fn admin_request_timeout_bounds_a_slow_body() {
    use std::io::Write;
    let s = TestServer::start_with(Backend::Embedded, |c| c.admin.request_timeout_secs = 1);
    let addr = s.admin_url.trim_start_matches("http://").to_string();
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    // Complete headers, then a body that never comes.
    c.write_all(b"PUT /users/slow@example.com HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut c, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

on_both_backends!(
    domain_routes,
    user_routes,
    healthcheck_and_unknown_routes,
    james_user_shapes,
    james_task_shapes,
);
