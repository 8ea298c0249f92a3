//! The admin HTTP API, route-compatible with Apache James webadmin (domains, users, user
//! mailboxes, healthcheck), so existing James scripts work. Errors are James-style JSON:
//! `{"statusCode":..,"type":..,"message":..,"details":..}`.

pub mod client;

use crate::auth::Authenticator;
use crate::names;
use crate::tasks::{body_gc, fix_pop3, is_final, TaskManager};
use axum::body::Bytes;
use axum::extract::Query;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use tern_store::{Directory, MailStore};

pub struct AdminState {
    pub directory: Arc<dyn Directory>,
    pub mail: Arc<dyn MailStore>,
    pub auth: Arc<Authenticator>,
    pub tasks: Arc<TaskManager>,
    /// Bearer token required on every route but /healthcheck, if set.
    pub token: Option<String>,
}

type AppState = State<Arc<AdminState>>;

/// Rejects requests without the configured bearer token (health checks stay open for load
/// balancers). The comparison does not stop at the first differing byte.
async fn require_token(
    State(s): AppState,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = &s.token else {
        return next.run(request).await;
    };
    if request.uri().path() == "/healthcheck" {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let same = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        next.run(request).await
    } else {
        error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "a valid admin token is required (Authorization: Bearer ...)",
        )
    }
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/domains", get(list_domains))
        .route(
            "/domains/{domain}",
            get(get_domain).put(put_domain).delete(delete_domain),
        )
        .route("/users", get(list_users))
        .route(
            "/users/{user}",
            axum::routing::put(put_user)
                .delete(delete_user)
                .head(head_user),
        )
        .route("/users/{user}/mailboxes", get(user_mailboxes))
        .route("/healthcheck", get(healthcheck))
        .route("/mailboxes", axum::routing::post(mailbox_task))
        .route("/blobs", axum::routing::delete(blobs_task))
        .route("/tasks", get(list_tasks))
        .route("/tasks/{id}", get(get_task).delete(cancel_task))
        .route("/tasks/{id}/await", get(await_task))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "NotFound", "no such route") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .with_state(state)
}

struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.status, self.kind, &self.message)
    }
}

fn server_error(message: String) -> ApiError {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        kind: "ServerError",
        message,
    }
}

impl From<tern_store::StoreError> for ApiError {
    fn from(e: tern_store::StoreError) -> Self {
        tracing::error!(error = %e, "admin request failed in the store");
        server_error(format!("store error: {e}"))
    }
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body =
        json!({ "statusCode": status.as_u16(), "type": kind, "message": message, "details": null });
    (status, Json(body)).into_response()
}

fn bad_request(message: &str) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        kind: "InvalidArgument",
        message: message.to_string(),
    }
}

fn not_found(message: &str) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "NotFound",
        message: message.to_string(),
    }
}

type ApiResult = Result<Response, ApiError>;

fn domain_arg(domain: &str) -> Result<String, ApiError> {
    let d = domain.to_lowercase();
    if names::valid_domain(&d) {
        Ok(d)
    } else {
        Err(bad_request(&format!("invalid domain name: {domain}")))
    }
}

async fn list_domains(State(s): AppState) -> ApiResult {
    let mut domains = s.directory.list_domains().await?;
    domains.sort();
    Ok(Json(domains).into_response())
}

async fn get_domain(State(s): AppState, Path(domain): Path<String>) -> ApiResult {
    let d = domain_arg(&domain)?;
    if s.directory.domain_exists(&d).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_found(&format!("domain {d} not found")))
    }
}

async fn put_domain(State(s): AppState, Path(domain): Path<String>) -> ApiResult {
    let d = domain_arg(&domain)?;
    s.directory.add_domain(&d).await?;
    tracing::info!(domain = %d, "domain added");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_domain(State(s): AppState, Path(domain): Path<String>) -> ApiResult {
    let d = domain_arg(&domain)?;
    if s.directory.remove_domain(&d).await? {
        tracing::info!(domain = %d, "domain removed");
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_users(State(s): AppState) -> ApiResult {
    let mut users = s.directory.list_users().await?;
    users.sort();
    let body: Vec<_> = users
        .into_iter()
        .map(|u| json!({ "username": u }))
        .collect();
    Ok(Json(body).into_response())
}

#[derive(Deserialize)]
struct PutUser {
    password: String,
}

async fn put_user(State(s): AppState, Path(user): Path<String>, body: Bytes) -> ApiResult {
    let Some((_, domain)) = names::parse_user(&user) else {
        return Err(bad_request(&format!(
            "invalid user name {user}: users are named by their full address, user@domain"
        )));
    };
    let req: PutUser = serde_json::from_slice(&body).map_err(|e| {
        bad_request(&format!(
            "expected a JSON body {{\"password\": \"...\"}}: {e}"
        ))
    })?;
    if req.password.is_empty() {
        return Err(bad_request("password must not be empty"));
    }
    if !s.directory.domain_exists(&domain).await? {
        return Err(bad_request(&format!(
            "domain {domain} does not exist; add it first (PUT /domains/{domain})"
        )));
    }
    let auth = s.auth.clone();
    let hash = auth
        .hash_password_async(req.password)
        .await
        .map_err(|e| server_error(e.to_string()))?;
    let name = user.to_lowercase();
    s.directory.put_user(&name, &hash).await?;
    tracing::info!(user = %name, "user created or password changed");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_user(State(s): AppState, Path(user): Path<String>) -> ApiResult {
    let name = user.to_lowercase();
    if s.directory.delete_user(&name).await? {
        tracing::info!(user = %name, "user deleted");
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn head_user(State(s): AppState, Path(user): Path<String>) -> ApiResult {
    match s.directory.get_user(&user.to_lowercase()).await? {
        Some(_) => Ok(StatusCode::OK.into_response()),
        None => Ok(StatusCode::NOT_FOUND.into_response()),
    }
}

async fn user_mailboxes(State(s): AppState, Path(user): Path<String>) -> ApiResult {
    let name = user.to_lowercase();
    if s.directory.get_user(&name).await?.is_none() {
        return Err(not_found(&format!("user {name} not found")));
    }
    let mut out = Vec::new();
    for mb in s.directory.list_mailboxes(&name).await? {
        let count = s.mail.message_count(mb.id).await?;
        out.push(json!({ "mailboxName": mb.name, "mailboxId": mb.id.to_string(), "messageCount": count }));
    }
    Ok(Json(out).into_response())
}

async fn healthcheck(State(s): AppState) -> ApiResult {
    let (status, cause) = match s.directory.domain_exists("healthcheck.invalid").await {
        Ok(_) => ("healthy", None),
        Err(e) => ("unhealthy", Some(e.to_string())),
    };
    let code = if cause.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": status,
        "checks": [{ "componentName": "Store", "escapedComponentName": "Store", "status": status, "cause": cause }],
    });
    Ok((code, Json(body)).into_response())
}

/// `POST /mailboxes?task=fixPop3Inconsistencies[&messagesPerSecond=N]`
async fn mailbox_task(State(s): AppState, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    match q.get("task").map(String::as_str) {
        Some("fixPop3Inconsistencies") => {}
        Some(other) => return Err(bad_request(&format!("Invalid value supplied for query parameter 'task': {other}; supported: fixPop3Inconsistencies"))),
        None => return Err(bad_request("'task' query parameter is compulsory; supported: fixPop3Inconsistencies")),
    }
    let rate = match q.get("messagesPerSecond") {
        None => 100,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(bad_request(&format!(
                    "messagesPerSecond must be a strictly positive integer, got {v}"
                )))
            }
        },
    };
    let mail = s.mail.clone();
    let id = s
        .tasks
        .submit(fix_pop3::TYPE, fix_pop3::initial(rate), move |ctx| {
            Box::pin(fix_pop3::run(mail, rate, ctx))
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "taskId": id.to_string() })),
    )
        .into_response())
}

/// `DELETE /blobs?scope=unreferenced[&graceMinutes=60]`: collect bodies no message references.
async fn blobs_task(State(s): AppState, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    match q.get("scope").map(String::as_str) {
        Some("unreferenced") => {}
        Some(other) => {
            return Err(bad_request(&format!(
            "Invalid value supplied for query parameter 'scope': {other}; supported: unreferenced"
        )))
        }
        None => {
            return Err(bad_request(
                "'scope' query parameter is compulsory; supported: unreferenced",
            ))
        }
    }
    let grace = match q.get("graceMinutes") {
        None => 60,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| bad_request(&format!("graceMinutes must be a whole number, got {v}")))?,
    };
    let mail = s.mail.clone();
    let id = s
        .tasks
        .submit(body_gc::TYPE, body_gc::initial(grace), move |ctx| {
            Box::pin(body_gc::run(mail, grace, ctx))
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "taskId": id.to_string() })),
    )
        .into_response())
}

fn task_id(id: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(id).map_err(|_| bad_request(&format!("Invalid task id: {id}")))
}

async fn list_tasks(State(s): AppState, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    let status = q.get("status").map(String::as_str);
    if let Some(st) = status {
        if !["waiting", "inProgress", "completed", "failed", "cancelled"].contains(&st) {
            return Err(bad_request(&format!(
                "Invalid status query parameter: {st}"
            )));
        }
    }
    Ok(Json(s.tasks.list(status).await?).into_response())
}

async fn get_task(State(s): AppState, Path(id): Path<String>) -> ApiResult {
    let id = task_id(&id)?;
    match s.tasks.get(id).await? {
        Some(t) => Ok(Json(t).into_response()),
        None => Err(not_found(&format!("{id} can not be found"))),
    }
}

async fn cancel_task(State(s): AppState, Path(id): Path<String>) -> ApiResult {
    let id = task_id(&id)?;
    if s.tasks.cancel(id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_found(&format!("{id} can not be found")))
    }
}

/// Parses James-style durations: "30", "30s", "500ms", "5m", "1h", "2d".
fn parse_timeout(v: &str) -> Option<std::time::Duration> {
    let v = v.trim();
    let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let n: u64 = v[..digits].parse().ok()?;
    let secs = match v[digits..].trim() {
        "" | "s" | "second" | "seconds" => n,
        "ms" => return Some(std::time::Duration::from_millis(n)),
        "m" | "minute" | "minutes" => n * 60,
        "h" | "hour" | "hours" => n * 3600,
        "d" | "day" | "days" => n * 86400,
        _ => return None,
    };
    Some(std::time::Duration::from_secs(secs))
}

async fn await_task(
    State(s): AppState,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let id = task_id(&id)?;
    let timeout = match q.get("timeout") {
        None => std::time::Duration::from_secs(365 * 86400),
        Some(v) => parse_timeout(v).ok_or_else(|| bad_request(&format!("Invalid timeout: {v}")))?,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let Some(t) = s.tasks.get(id).await? else {
            return Err(not_found(&format!("{id} can not be found")));
        };
        if t["status"].as_str().is_some_and(is_final) {
            return Ok(Json(t).into_response());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError {
                status: StatusCode::REQUEST_TIMEOUT,
                kind: "InvalidArgument",
                message: "The timeout has been reached".into(),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
