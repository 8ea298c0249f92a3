//! The admin HTTP API, route-compatible with Apache James webadmin (domains, users, user
//! mailboxes, healthcheck), so existing James scripts work. Errors are James-style JSON:
//! `{"statusCode":..,"type":..,"message":..,"details":..}`.

pub mod client;
pub mod listener;
mod queues;
mod quotas;
mod repositories;
mod rewrites;
mod servers;

use crate::auth::Authenticator;
use crate::names;
use crate::tasks::{body_gc, cleanup, fix_pop3, is_final, now_ms, TaskManager, STATUSES};
use axum::body::Bytes;
use axum::extract::Query;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tern_store::{BodyCollection, Directory, MailStore, Repair};

pub struct AdminState {
    pub directory: Arc<dyn Directory>,
    pub mail: Arc<dyn MailStore>,
    /// For the fixPop3Inconsistencies task.
    pub repair: Arc<dyn Repair>,
    /// For the unreferenced-body collection task.
    pub collection: Arc<dyn BodyCollection>,
    pub auth: Arc<Authenticator>,
    pub tasks: Arc<TaskManager>,
    /// Bearer token required on every route but the health checks, if set.
    pub token: Option<String>,
    /// The health check's component name, James-style ("Cassandra backend", ...).
    pub store_component: &'static str,
    /// Longest password accepted, in octets.
    pub max_password_bytes: usize,
    /// The outgoing queue (`/mailQueues`).
    pub outbound: Arc<crate::outbound::Outbound>,
    /// Recipient rewriting (`/address/...`, `/mappings`, domain aliases).
    pub rewrites: Arc<dyn tern_store::RecipientRewrites>,
    /// Quota limits and usage (`/quota`).
    pub quotas: Arc<dyn tern_store::Quotas>,
    /// Mail repositories (`/mailRepositories`).
    pub repositories: Arc<dyn tern_store::MailRepositories>,
    /// Delivery as SMTP does it, for reprocessing kept mail.
    pub smtp: Arc<crate::smtp::SmtpContext>,
    /// This node's open connections (`/servers/channels`).
    pub channels: Arc<crate::channels::Channels>,
    /// The certificate, when TLS is configured (`POST /servers?reload-certificate`).
    pub certs: Option<Arc<crate::tls::CertStore>>,
    /// The ports of the listeners that certificate serves.
    pub tls_ports: Vec<u16>,
}

/// Largest request body: the only bodies are small JSON objects.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

type AppState = State<Arc<AdminState>>;

/// Rejects requests without the configured bearer token (health checks stay open for load
/// balancers).
async fn require_token(
    State(s): AppState,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = &s.token else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if path == "/healthcheck" || path.starts_with("/healthcheck/") {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if same_secret(given.as_bytes(), token.as_bytes()) {
        next.run(request).await
    } else {
        error(
            StatusCode::UNAUTHORIZED,
            INVALID_ARGUMENT,
            "a valid admin token is required (Authorization: Bearer ...)",
        )
    }
}

/// Compares a presented secret with the expected one in time that depends on neither's
/// content nor on where they differ: both are hashed first (keyed BLAKE2b, so equal-length
/// digests), then the digests are compared without an early exit. A length mismatch costs the
/// same as any other mismatch.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    use blake2::digest::consts::U32;
    use blake2::digest::Mac;
    let digest = |v: &[u8]| {
        let mut mac = <blake2::Blake2bMac<U32> as Mac>::new_from_slice(b"tern admin token").ok()?;
        mac.update(v);
        Some(mac.finalize().into_bytes())
    };
    let (Some(a), Some(b)) = (digest(given), digest(expected)) else {
        return false;
    };
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/domains", get(list_domains))
        .route(
            "/domains/{domain}",
            get(get_domain).put(put_domain).delete(delete_domain),
        )
        .route("/domains/{domain}/users", get(domain_users))
        .route("/users", get(list_users))
        .route(
            "/users/{user}",
            axum::routing::put(put_user)
                .delete(delete_user)
                .head(head_user),
        )
        .route("/users/{user}/mailboxes", get(user_mailboxes))
        .route("/healthcheck", get(healthcheck))
        .route("/metrics", get(metrics_route))
        .route("/messages", axum::routing::delete(expire_task))
        .route("/imports", axum::routing::post(import_task))
        .route("/servers", axum::routing::post(servers::reload_certificate))
        .route("/servers/connectedUsers", get(servers::connected_users))
        .route(
            "/servers/channels",
            get(servers::all_channels).delete(servers::disconnect),
        )
        .route(
            "/servers/channels/{user}",
            get(servers::user_channels).delete(servers::disconnect_user),
        )
        .route("/healthcheck/checks", get(list_checks))
        .route("/healthcheck/checks/{name}", get(one_check))
        .route("/mailboxes", axum::routing::post(mailbox_task))
        .route("/blobs", axum::routing::delete(blobs_task))
        .route("/tasks", get(list_tasks).delete(cleanup_tasks))
        .route("/tasks/{id}", get(get_task).delete(cancel_task))
        .route("/tasks/{id}/await", get(await_task))
        .route(
            "/address/groups",
            get(rewrites::list_groups).delete(rewrites::delete_groups),
        )
        .route("/address/groups/{group}", get(rewrites::group_members))
        .route(
            "/address/groups/{group}/{member}",
            axum::routing::put(rewrites::add_group_member).delete(rewrites::remove_group_member),
        )
        .route("/address/forwards", get(rewrites::list_forwards))
        .route("/address/forwards/{user}", get(rewrites::forward_targets))
        .route(
            "/address/forwards/{user}/targets/{target}",
            axum::routing::put(rewrites::add_forward).delete(rewrites::remove_forward),
        )
        .route("/address/aliases", get(rewrites::list_aliased_users))
        .route(
            "/users/{user}/allowedFromHeaders",
            get(rewrites::allowed_from),
        )
        .route("/address/aliases/{user}", get(rewrites::alias_sources))
        .route(
            "/address/aliases/{user}/sources/{alias}",
            axum::routing::put(rewrites::add_alias).delete(rewrites::remove_alias),
        )
        .route("/domains/{domain}/aliases", get(rewrites::domain_aliases))
        .route(
            "/domains/{domain}/aliases/{source}",
            axum::routing::put(rewrites::add_domain_alias).delete(rewrites::remove_domain_alias),
        )
        .route("/domainMappings", get(rewrites::list_domain_mappings))
        .route(
            "/domainMappings/{from}",
            get(rewrites::domain_mapping)
                .put(rewrites::add_domain_mapping)
                .delete(rewrites::remove_domain_mapping),
        )
        .route("/mappings", get(rewrites::all_mappings))
        .route("/mappings/user/{user}", get(rewrites::user_mappings))
        .route(
            "/mappings/address/{source}/targets/{target}",
            axum::routing::post(rewrites::add_address_mapping)
                .delete(rewrites::remove_address_mapping),
        )
        .route(
            "/mappings/sources/{target}",
            get(rewrites::mapping_sources).delete(rewrites::delete_mapping_sources),
        )
        .route("/quota", get(quotas::get_global).put(quotas::put_global))
        .route(
            "/quota/{resource}",
            get(quotas::get_global_one)
                .put(quotas::put_global_one)
                .delete(quotas::delete_global_one),
        )
        .route(
            "/quota/domains/{domain}",
            get(quotas::get_domain).put(quotas::put_domain),
        )
        .route(
            "/quota/domains/{domain}/{resource}",
            get(quotas::get_domain_one)
                .put(quotas::put_domain_one)
                .delete(quotas::delete_domain_one),
        )
        .route("/quota/users", axum::routing::post(quotas::users_task))
        .route(
            "/quota/users/{user}",
            get(quotas::get_user).put(quotas::put_user),
        )
        .route(
            "/quota/users/{user}/{resource}",
            get(quotas::get_user_one)
                .put(quotas::put_user_one)
                .delete(quotas::delete_user_one),
        )
        .route("/mailQueues", get(queues::list_queues))
        .route("/mailRepositories", get(repositories::list))
        .route(
            "/mailRepositories/{path}",
            get(repositories::details).put(repositories::create),
        )
        .route(
            "/mailRepositories/{path}/mails",
            get(repositories::mail_keys)
                .delete(repositories::clear)
                .patch(repositories::patch_all),
        )
        .route(
            "/mailRepositories/{path}/mails/{key}",
            get(repositories::mail)
                .delete(repositories::delete_mail)
                .patch(repositories::patch_one),
        )
        .route(
            "/mailQueues/{name}",
            get(queues::queue_details).patch(queues::flush),
        )
        .route(
            "/mailQueues/{name}/mails",
            get(queues::list_mails).delete(queues::delete_mails),
        )
        .fallback(|| async { error(StatusCode::NOT_FOUND, NOT_FOUND, "no such route") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// James's error types (`ErrorResponder.ErrorType`).
const INVALID_ARGUMENT: &str = "InvalidArgument";
const NOT_FOUND: &str = "notFound";
const WRONG_STATE: &str = "WrongState";
const SERVER_ERROR: &str = "ServerError";

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
        kind: SERVER_ERROR,
        message,
    }
}

impl From<tern_store::StoreError> for ApiError {
    fn from(e: tern_store::StoreError) -> Self {
        use tern_store::StoreError as E;
        tracing::error!(error = %e, "admin request failed in the store");
        let (status, kind) = match &e {
            E::NotFound { .. } => (StatusCode::NOT_FOUND, NOT_FOUND),
            E::Invalid { .. } => (StatusCode::BAD_REQUEST, INVALID_ARGUMENT),
            E::Conflict { .. } => (StatusCode::CONFLICT, WRONG_STATE),
            // Unavailable: the cluster may answer later; corrupt data is the server's problem.
            E::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, SERVER_ERROR),
            E::Corrupt { .. } => (StatusCode::INTERNAL_SERVER_ERROR, SERVER_ERROR),
        };
        ApiError {
            status,
            kind,
            message: format!("store error: {e}"),
        }
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
        kind: INVALID_ARGUMENT,
        message: message.to_string(),
    }
}

fn not_found(message: &str) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        kind: NOT_FOUND,
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

/// A user named in a route: a plain address (lower-cased), without control characters.
fn user_arg(user: &str) -> Result<(String, String), ApiError> {
    names::parse_user(user)
        .map(|(local, domain)| (format!("{local}@{domain}"), domain))
        .ok_or_else(|| {
            bad_request(&format!(
                "invalid user name {}: users are named by their full address, user@domain",
                crate::logging::Escaped(user)
            ))
        })
}

/// `GET /domains/{domain}/users`: the users of a served domain.
async fn domain_users(State(s): AppState, Path(domain): Path<String>) -> ApiResult {
    let d = domain_arg(&domain)?;
    if !s.directory.domain_exists(&d).await? {
        return Err(not_found(&format!("domain {d} not found")));
    }
    let suffix = format!("@{d}");
    let mut users: Vec<String> = s
        .directory
        .list_users()
        .await?
        .into_iter()
        .filter(|u| u.ends_with(&suffix))
        .collect();
    users.sort();
    Ok(Json(users).into_response())
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

/// `PUT /users/{user}` creates a user (409 if it exists); with `?force` it also changes the
/// password of an existing one, as James does.
async fn put_user(
    State(s): AppState,
    Path(user): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult {
    let (name, domain) = user_arg(&user)?;
    let req: PutUser = serde_json::from_slice(&body).map_err(|e| {
        bad_request(&format!(
            "expected a JSON body {{\"password\": \"...\"}}: {e}"
        ))
    })?;
    if req.password.is_empty() {
        return Err(bad_request("password must not be empty"));
    }
    if req.password.len() > s.max_password_bytes {
        return Err(bad_request(&format!(
            "password too long: at most {} octets",
            s.max_password_bytes
        )));
    }
    if !s.directory.domain_exists(&domain).await? {
        return Err(bad_request(&format!(
            "domain {domain} does not exist; add it first (PUT /domains/{domain})"
        )));
    }
    let force = q.contains_key("force");
    if !force && s.directory.get_user(&name).await?.is_some() {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            kind: WRONG_STATE,
            message: format!(
                "user {name} already exists; PUT /users/{name}?force changes its password"
            ),
        });
    }
    let auth = s.auth.clone();
    let hash = auth
        .hash_password_async(req.password)
        .await
        .map_err(|e| server_error(e.to_string()))?;
    s.directory.put_user(&name, &hash).await?;
    tracing::info!(user = %name, "user created or password changed");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_user(State(s): AppState, Path(user): Path<String>) -> ApiResult {
    let (name, _) = user_arg(&user)?;
    if s.directory.delete_user(&name).await? {
        tracing::info!(user = %name, "user deleted");
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn head_user(State(s): AppState, Path(user): Path<String>) -> ApiResult {
    let Ok((name, _)) = user_arg(&user) else {
        return Ok(StatusCode::BAD_REQUEST.into_response());
    };
    match s.directory.get_user(&name).await? {
        Some(_) => Ok(StatusCode::OK.into_response()),
        None => Ok(StatusCode::NOT_FOUND.into_response()),
    }
}

async fn user_mailboxes(State(s): AppState, Path(user): Path<String>) -> ApiResult {
    let (name, _) = user_arg(&user)?;
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

/// One health check's result, James-style.
async fn check_store(s: &AdminState) -> Value {
    let (status, cause) = match s.directory.domain_exists("healthcheck.invalid").await {
        Ok(_) => ("healthy", None),
        Err(e) => ("unhealthy", Some(e.to_string())),
    };
    json!({
        "componentName": s.store_component,
        "escapedComponentName": escape_component(s.store_component),
        "status": status,
        "cause": cause,
    })
}

/// A component name as it appears in a URL path (James escapes spaces as `%20`).
fn escape_component(name: &str) -> String {
    client::encode_segment(name)
}

/// 200 while every check is healthy (or degraded, unless `strict`), 503 otherwise.
fn health_status(statuses: &[&str], strict: bool) -> StatusCode {
    let bad = |st: &&str| *st == "unhealthy" || (strict && *st == "degraded");
    if statuses.iter().any(bad) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

/// `GET /healthcheck[?check=NAME...][&strict]`.
async fn healthcheck(State(s): AppState, Query(q): Query<Vec<(String, String)>>) -> ApiResult {
    let strict = q.iter().any(|(k, _)| k == "strict");
    let wanted: Vec<&str> = q
        .iter()
        .filter(|(k, _)| k == "check")
        .map(|(_, v)| v.as_str())
        .collect();
    if let Some(unknown) = wanted.iter().find(|w| **w != s.store_component) {
        return Err(not_found(&format!(
            "Component with name {unknown} cannot be found"
        )));
    }
    let checks = vec![check_store(&s).await];
    let statuses: Vec<&str> = checks
        .iter()
        .map(|c| c["status"].as_str().unwrap_or("unhealthy"))
        .collect();
    let code = health_status(&statuses, strict);
    let overall = if statuses.contains(&"unhealthy") {
        "unhealthy"
    } else if statuses.contains(&"degraded") {
        "degraded"
    } else {
        "healthy"
    };
    let body = json!({ "status": overall, "checks": checks });
    Ok((code, Json(body)).into_response())
}

/// `GET /healthcheck/checks`: the checks there are.
async fn list_checks(State(s): AppState) -> ApiResult {
    Ok(Json(json!([{
        "componentName": s.store_component,
        "escapedComponentName": escape_component(s.store_component),
    }]))
    .into_response())
}

/// `GET /healthcheck/checks/{name}[?strict]`.
async fn one_check(
    State(s): AppState,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    if name != s.store_component {
        return Err(not_found(&format!(
            "Component with name {name} cannot be found"
        )));
    }
    let check = check_store(&s).await;
    let status = check["status"].as_str().unwrap_or("unhealthy");
    let code = health_status(&[status], q.contains_key("strict"));
    Ok((code, Json(check)).into_response())
}

/// `DELETE /messages?olderThan=30d[&user=U][&usersPerSecond=N][&mailbox=INBOX]`: James's
/// `ExpireMailboxTask` (a bare number is days, as James reads it).
async fn expire_task(State(s): AppState, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    if q.contains_key("byExpiresHeader") {
        return Err(bad_request(
            "byExpiresHeader is not supported; use olderThan",
        ));
    }
    if let Some(m) = q
        .get("mailbox")
        .filter(|m| !m.eq_ignore_ascii_case("INBOX"))
    {
        return Err(bad_request(&format!(
            "mailbox {m:.40}: only INBOX exists (POP3)"
        )));
    }
    let given = q
        .get("olderThan")
        .ok_or_else(|| bad_request("'olderThan' is compulsory, such as olderThan=30d"))?;
    let spelled = if given.bytes().all(|b| b.is_ascii_digit()) {
        format!("{given}d")
    } else {
        given.clone()
    };
    let age = parse_duration(&spelled).ok_or_else(|| {
        bad_request(&format!(
            "invalid olderThan {given:.40}: a strictly positive duration such as 30d, 2w, 1y"
        ))
    })?;
    let rate = users_per_second(&q, 1)?;
    let user = match q.get("user") {
        Some(u) => {
            let name = names::normalize_user(u);
            if s.directory.get_user(&name).await?.is_none() {
                return Err(not_found(&format!("user {name:.60} does not exist")));
            }
            Some(name)
        }
        None => None,
    };
    let (directory, mail) = (s.directory.clone(), s.mail.clone());
    let id = s
        .tasks
        .submit(
            crate::tasks::expire::TYPE,
            crate::tasks::expire::initial(),
            move |ctx| {
                Box::pin(crate::tasks::expire::run(
                    directory,
                    mail,
                    crate::tasks::expire::Age::OlderThan(age),
                    user,
                    rate,
                    ctx,
                ))
            },
        )
        .await?;
    Ok(task_created(id))
}

/// `POST /imports` with an [`ImportRequest`](crate::import::ImportRequest): copies mailboxes
/// from another POP3 server or from Maildir folders, keeping their UIDLs (task `import`).
async fn import_task(State(s): AppState, body: axum::body::Bytes) -> ApiResult {
    let request: crate::import::ImportRequest = serde_json::from_slice(&body)
        .map_err(|e| bad_request(&format!("invalid import request: {e}")))?;
    let smtp = s.smtp.clone();
    let initial = crate::import::initial(&request);
    let id = s
        .tasks
        .submit(crate::import::TYPE, initial, move |ctx| {
            Box::pin(crate::import::run(smtp, request, ctx))
        })
        .await?;
    Ok(task_created(id))
}

/// `GET /metrics`: Prometheus's text exposition (OpenMetrics). The queue and the tasks are read
/// now, each bounded in time so that a slow store cannot hold a scraper: a part not read in
/// time is left out of this scrape (and logged).
async fn metrics_route(State(s): AppState) -> ApiResult {
    const READ_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);
    let mut state = crate::metrics::StateGauges {
        queue_depth: 0,
        queue_oldest_seconds: 0.0,
        tasks: Vec::new(),
    };
    match tokio::time::timeout(READ_LIMIT, s.outbound.all_queued()).await {
        Ok(Ok(queued)) => {
            state.queue_depth = queued.len() as u64;
            let oldest = queued.iter().map(|m| m.queued_ms).min();
            state.queue_oldest_seconds = oldest
                .map(|t| (tern_store::now_ms() - t).max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: the queue could not be read"),
        Err(_) => tracing::warn!("metrics: the queue was not read in time"),
    }
    match tokio::time::timeout(READ_LIMIT, s.tasks.list(None, None)).await {
        Ok(Ok(tasks)) => {
            let mut by_status: std::collections::BTreeMap<String, u64> = Default::default();
            for t in tasks {
                let status = t["status"].as_str().unwrap_or("unknown").to_string();
                *by_status.entry(status).or_default() += 1;
            }
            state.tasks = by_status.into_iter().collect();
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: the tasks could not be read"),
        Err(_) => tracing::warn!("metrics: the tasks were not read in time"),
    }
    let body = crate::metrics::exposition(&state).map_err(|_| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        kind: SERVER_ERROR,
        message: "metrics could not be encoded".into(),
    })?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

/// 201 with the task id and, as James sends it, a `Location` header naming the task.
fn task_created(id: uuid::Uuid) -> Response {
    (
        StatusCode::CREATED,
        [(axum::http::header::LOCATION, format!("/tasks/{id}"))],
        Json(json!({ "taskId": id.to_string() })),
    )
        .into_response()
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
    let (repair, mail) = (s.repair.clone(), s.mail.clone());
    let id = s
        .tasks
        .submit(fix_pop3::TYPE, fix_pop3::initial(rate), move |ctx| {
            Box::pin(fix_pop3::run(repair, mail, rate, ctx))
        })
        .await?;
    Ok(task_created(id))
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
            .ok()
            .filter(|m| m.checked_mul(60).is_some())
            .ok_or_else(|| {
                bad_request(&format!(
                    "graceMinutes must be a whole number of minutes, got {v:.40}"
                ))
            })?,
    };
    let collection = s.collection.clone();
    let id = s
        .tasks
        .submit(body_gc::TYPE, body_gc::initial(grace), move |ctx| {
            Box::pin(body_gc::run(collection, grace, ctx))
        })
        .await?;
    Ok(task_created(id))
}

fn task_id(id: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(id).map_err(|_| bad_request(&format!("Invalid task id: {id}")))
}

async fn list_tasks(State(s): AppState, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    let status = q.get("status").map(String::as_str);
    if let Some(st) = status {
        if !STATUSES.contains(&st) {
            return Err(bad_request(&format!(
                "Invalid status query parameter: {st:.40}; one of {}",
                STATUSES.join(", ")
            )));
        }
    }
    let number = |key: &str| -> Result<Option<usize>, ApiError> {
        q.get(key)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| bad_request(&format!("{key} must be a whole number, got {v:.40}")))
            })
            .transpose()
    };
    let (offset, limit) = (number("offset")?.unwrap_or(0), number("limit")?);
    let tasks = s
        .tasks
        .list(status, q.get("type").map(String::as_str))
        .await?;
    Ok(Json(page(tasks, offset, limit)).into_response())
}

/// The items of a listing from `offset`, at most `limit` of them.
fn page<T>(items: impl IntoIterator<Item = T>, offset: usize, limit: Option<usize>) -> Vec<T> {
    items
        .into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .collect()
}

/// A task's `usersPerSecond` (James's throttle), `default` when absent.
fn users_per_second(q: &HashMap<String, String>, default: u32) -> Result<u32, ApiError> {
    match q.get("usersPerSecond") {
        None => Ok(default),
        Some(v) => v.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
            bad_request(&format!(
                "usersPerSecond must be a strictly positive integer, got {v:.40}"
            ))
        }),
    }
}

/// `DELETE /tasks?olderThan=30day`: a task that forgets finished tasks submitted before then.
async fn cleanup_tasks(State(s): AppState, Query(q): Query<HashMap<String, String>>) -> ApiResult {
    let Some(v) = q.get("olderThan") else {
        return Err(bad_request(
            "'olderThan' query parameter is compulsory, for example 30day",
        ));
    };
    let age = parse_duration(v).ok_or_else(|| {
        bad_request(&format!(
            "Invalid olderThan: {v:.40} (for example 30day, 12h)"
        ))
    })?;
    let before_ms = now_ms().saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
    let manager = s.tasks.clone();
    let id = s
        .tasks
        .submit(cleanup::TYPE, cleanup::initial(before_ms), move |ctx| {
            Box::pin(cleanup::run(manager, before_ms, ctx))
        })
        .await?;
    Ok(task_created(id))
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

/// The longest wait James accepts (and its default).
const MAX_AWAIT: std::time::Duration = std::time::Duration::from_secs(365 * 86400);

/// Parses James-style durations: a strictly positive number and a unit ("30", "30s", "500ms",
/// "5m", "1h", "2d", "1w", "1y", long forms such as "30day"), with checked arithmetic:
/// `None` for anything malformed or beyond a year.
fn parse_duration(v: &str) -> Option<std::time::Duration> {
    let v = v.trim();
    let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    if digits == 0 || digits > 12 {
        return None;
    }
    let n: u64 = v[..digits].parse().ok().filter(|n| *n > 0)?;
    let unit_ms: u64 = match v[digits..].trim().to_ascii_lowercase().as_str() {
        "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 1,
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        "w" | "week" | "weeks" => 7 * 86_400_000,
        "month" | "months" => 30 * 86_400_000,
        "y" | "year" | "years" => 365 * 86_400_000,
        _ => return None,
    };
    let d = std::time::Duration::from_millis(n.checked_mul(unit_ms)?);
    (d <= MAX_AWAIT).then_some(d)
}

async fn await_task(
    State(s): AppState,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let id = task_id(&id)?;
    let timeout = match q.get("timeout") {
        None => MAX_AWAIT,
        Some(v) => parse_duration(v).ok_or_else(|| {
            bad_request(&format!(
                "Invalid timeout: {v:.40} (a strictly positive duration of at most 365 days, such as 30s)"
            ))
        })?,
    };
    let deadline = tokio::time::Instant::now()
        .checked_add(timeout)
        .ok_or_else(|| bad_request("Invalid timeout: too far in the future"))?;
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
                kind: INVALID_ARGUMENT,
                message: "The timeout has been reached".into(),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
