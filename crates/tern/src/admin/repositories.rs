//! James's mail-repository routes (`webadmin.adoc`, "Administrating mail repositories"): list,
//! details, the mails (keys, with James's filters and paging), one mail as JSON or as the raw
//! message, deletion, moves, and reprocessing (tasks).

use super::{bad_request, not_found, parse_duration, task_created, ApiError, ApiResult, AppState};
use crate::repository::BUILT_IN;
use crate::tasks::repository_tasks::{self, Reprocess};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use tern_store::RepositoryMail;

/// James's `path`: the repository's name, URL-encoded.
fn encoded(repository: &str) -> String {
    super::client::encode_segment(repository)
}

fn repository_name(name: &str) -> Result<String, ApiError> {
    let ok = !name.is_empty() && name.len() <= 255 && !name.contains(char::is_control);
    ok.then(|| name.to_string())
        .ok_or_else(|| bad_request("invalid mail repository path"))
}

/// Every repository with its size: Tern's own, and those created or filled since.
async fn repositories(s: &AppState) -> Result<Vec<(String, u64)>, ApiError> {
    let State(s) = s;
    let mut all = s.repositories.list_repositories().await?;
    for name in BUILT_IN {
        if !all.iter().any(|(n, _)| n == name) {
            all.push((name.to_string(), 0));
        }
    }
    all.sort();
    Ok(all)
}

/// The repository's size, or 404 when there is no such repository.
async fn existing(s: &AppState, name: &str) -> Result<u64, ApiError> {
    let name = repository_name(name)?;
    repositories(s)
        .await?
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, size)| size)
        .ok_or_else(|| not_found(&format!("{name:.60} can not be found")))
}

pub(super) async fn list(s: AppState) -> ApiResult {
    let all: Vec<Value> = repositories(&s)
        .await?
        .into_iter()
        .map(|(name, _)| json!({ "repository": name, "path": encoded(&name) }))
        .collect();
    Ok(Json(all).into_response())
}

pub(super) async fn create(s: AppState, Path(name): Path<String>) -> ApiResult {
    let name = repository_name(&name)?;
    s.0.repositories.create_repository(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn details(s: AppState, Path(name): Path<String>) -> ApiResult {
    let size = existing(&s, &name).await?;
    Ok(Json(json!({ "repository": name, "path": encoded(&name), "size": size })).into_response())
}

/// The filters of a mail listing (James's query parameters).
struct Filter {
    updated_before: Option<i64>,
    updated_after: Option<i64>,
    sender: Option<String>,
    recipient: Option<String>,
    remote_address: Option<String>,
    remote_host: Option<String>,
}

/// `x@d` matches itself; `*@d` matches any address of domain d.
fn address_matches(pattern: &str, address: &str) -> bool {
    match pattern.strip_prefix("*@") {
        Some(domain) => address
            .rsplit_once('@')
            .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain)),
        None => pattern.eq_ignore_ascii_case(address),
    }
}

impl Filter {
    fn parse(q: &HashMap<String, String>) -> Result<Self, ApiError> {
        let age = |key: &str| -> Result<Option<i64>, ApiError> {
            q.get(key)
                .map(|v| {
                    parse_duration(v)
                        .map(|d| tern_store::now_ms() - d.as_millis() as i64)
                        .ok_or_else(|| bad_request(&format!("invalid {key}: {v:.40}")))
                })
                .transpose()
        };
        Ok(Self {
            updated_before: age("updatedBefore")?,
            updated_after: age("updatedAfter")?,
            sender: q.get("sender").cloned(),
            recipient: q.get("recipient").cloned(),
            remote_address: q.get("remoteAddress").cloned(),
            remote_host: q.get("remoteHost").cloned(),
        })
    }

    fn matches(&self, m: &RepositoryMail) -> bool {
        self.updated_before.is_none_or(|t| m.last_updated_ms < t)
            && self.updated_after.is_none_or(|t| m.last_updated_ms > t)
            && self
                .sender
                .as_deref()
                .is_none_or(|p| address_matches(p, &m.sender))
            && self
                .recipient
                .as_deref()
                .is_none_or(|p| m.recipients.iter().any(|r| address_matches(p, r)))
            && self
                .remote_address
                .as_deref()
                .is_none_or(|a| a == m.remote_addr)
            && self
                .remote_host
                .as_deref()
                .is_none_or(|h| h.eq_ignore_ascii_case(&m.remote_host))
    }
}

fn number(q: &HashMap<String, String>, key: &str, min: u64) -> Result<Option<u64>, ApiError> {
    q.get(key)
        .map(|v| {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n >= min)
                .ok_or_else(|| bad_request(&format!("{key} must be an integer of at least {min}")))
        })
        .transpose()
}

pub(super) async fn mail_keys(
    s: AppState,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let limit = number(&q, "limit", 1)?;
    let offset = number(&q, "offset", 0)?.unwrap_or(0);
    let filter = Filter::parse(&q)?;
    existing(&s, &name).await?;
    let keys =
        s.0.repositories
            .repository_mails(&name)
            .await?
            .into_iter()
            .filter(|m| filter.matches(m))
            .map(|m| m.key);
    let keys = super::page(keys, offset as usize, limit.map(|l| l as usize));
    Ok(Json(keys).into_response())
}

async fn one(s: &AppState, name: &str, key: &str) -> Result<RepositoryMail, ApiError> {
    existing(s, name).await?;
    s.0.repositories
        .repository_mail(name, key)
        .await?
        .ok_or_else(|| not_found(&format!("mail {key:.60} can not be found")))
}

async fn raw(s: &AppState, mail: &RepositoryMail) -> Result<Vec<u8>, ApiError> {
    let mut body =
        s.0.repositories
            .open_repository_body(mail)
            .await?
            .ok_or_else(|| not_found("the mail's content is gone"))?;
    let mut out = Vec::with_capacity(mail.size as usize);
    while let Some(chunk) = body.next_chunk().await? {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The mail as James shows it, with the `additionalFields` asked for.
fn details_json(mail: &RepositoryMail, fields: &[&str], message: Option<&[u8]>) -> Value {
    let mut v = json!({
        "name": mail.key,
        "sender": if mail.sender.is_empty() { Value::Null } else { json!(mail.sender) },
        "recipients": mail.recipients,
        "state": mail.state,
        "error": mail.error,
        "remoteHost": mail.remote_host,
        "remoteAddr": mail.remote_addr,
        "lastUpdated": crate::tasks::utc_millis(mail.last_updated_ms, "+0000"),
    });
    let parsed = message.and_then(|m| mail_parser::MessageParser::default().parse(m));
    for field in fields {
        let value = match *field {
            "attributes" => json!({}),
            "perRecipientsHeaders" => json!({}),
            "messageSize" => json!(mail.size),
            "headers" => {
                let mut headers: Map<String, Value> = Map::new();
                for h in parsed.iter().flat_map(|p| p.headers()) {
                    let value = parsed
                        .as_ref()
                        .and_then(|p| {
                            p.raw_message()
                                .get(h.offset_start() as usize..h.offset_end() as usize)
                        })
                        .map(|raw| String::from_utf8_lossy(raw).trim().to_string())
                        .unwrap_or_default();
                    let entry = headers
                        .entry(h.name().to_string())
                        .or_insert_with(|| json!([]));
                    if let Value::Array(values) = entry {
                        values.push(json!(value));
                    }
                }
                Value::Object(headers)
            }
            "textBody" => json!(parsed
                .as_ref()
                .and_then(|p| p.body_text(0))
                .map(|t| t.to_string())),
            "htmlBody" => json!(parsed
                .as_ref()
                .and_then(|p| p.body_html(0))
                .map(|t| t.to_string())),
            _ => continue,
        };
        v[*field] = value;
    }
    v
}

const ADDITIONAL_FIELDS: [&str; 6] = [
    "attributes",
    "headers",
    "textBody",
    "htmlBody",
    "messageSize",
    "perRecipientsHeaders",
];

pub(super) async fn mail(
    s: AppState,
    Path((name, key)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult {
    let mail = one(&s, &name, &key).await?;
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if accept.contains("message/rfc822") {
        let message = raw(&s, &mail).await?;
        return Ok(([(header::CONTENT_TYPE, "message/rfc822")], message).into_response());
    }
    let fields: Vec<&str> = q
        .get("additionalFields")
        .map(|f| {
            f.split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if let Some(bad) = fields.iter().find(|f| !ADDITIONAL_FIELDS.contains(f)) {
        return Err(bad_request(&format!(
            "unsupported additional field {bad:.40}; supported: {}",
            ADDITIONAL_FIELDS.join(", ")
        )));
    }
    let needs_message = fields
        .iter()
        .any(|f| matches!(*f, "headers" | "textBody" | "htmlBody"));
    let message = match needs_message {
        true => Some(raw(&s, &mail).await?),
        false => None,
    };
    Ok(Json(details_json(&mail, &fields, message.as_deref())).into_response())
}

pub(super) async fn delete_mail(
    s: AppState,
    Path((name, key)): Path<(String, String)>,
) -> ApiResult {
    existing(&s, &name).await?;
    s.0.repositories.remove_repository_mail(&name, &key).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn clear(s: AppState, Path(name): Path<String>) -> ApiResult {
    existing(&s, &name).await?;
    let repositories = s.0.repositories.clone();
    let task_name = name.clone();
    let id =
        s.0.tasks
            .submit(
                repository_tasks::CLEAR,
                repository_tasks::clear_info(&name, 0, 0),
                move |ctx| Box::pin(repository_tasks::clear(repositories, task_name, ctx)),
            )
            .await?;
    Ok(task_created(id))
}

/// The target of a move (`{"mailRepository": "..."}`), which must exist.
async fn move_target(s: &AppState, body: &[u8]) -> Result<String, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| bad_request("the body must be {\"mailRepository\": \"<path>\"}"))?;
    let target = v
        .get("mailRepository")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request("the body must be {\"mailRepository\": \"<path>\"}"))?;
    let target = repository_name(target.trim_start_matches('/'))?;
    match existing(s, &target).await {
        Ok(_) => Ok(target),
        Err(_) => Err(bad_request(&format!(
            "target repository {target:.60} does not exist"
        ))),
    }
}

/// What a reprocessing was asked to do.
fn reprocess_request(name: &str, q: &HashMap<String, String>) -> Result<Reprocess, ApiError> {
    match q.get("action").map(String::as_str) {
        Some("reprocess") => {}
        Some(other) => {
            return Err(bad_request(&format!(
                "unsupported action {other:.40}; only reprocess"
            )))
        }
        None => {
            return Err(bad_request(
                "'action' query parameter is compulsory; only reprocess",
            ))
        }
    }
    let consume = match q.get("consume").map(String::as_str) {
        None | Some("true") => true,
        Some("false") => false,
        Some(_) => return Err(bad_request("consume must be true or false")),
    };
    Ok(Reprocess {
        repository: name.to_string(),
        queue: q.get("queue").cloned().unwrap_or_else(|| "spool".into()),
        processor: q.get("processor").cloned(),
        consume,
        limit: number(q, "limit", 1)?,
        max_retries: number(q, "maxRetries", 0)?,
    })
}

/// `PATCH .../mails?action=reprocess` (a task), or a move of every mail with a JSON body.
pub(super) async fn patch_all(
    s: AppState,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> ApiResult {
    patch(s, name, None, q, body).await
}

/// `PATCH .../mails/{key}?action=reprocess` (a task), or a move with a JSON body.
pub(super) async fn patch_one(
    s: AppState,
    Path((name, key)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> ApiResult {
    patch(s, name, Some(key), q, body).await
}

/// A move or a reprocessing of one mail (`key`) or of every mail of a repository.
async fn patch(
    s: AppState,
    name: String,
    key: Option<String>,
    q: HashMap<String, String>,
    body: axum::body::Bytes,
) -> ApiResult {
    existing(&s, &name).await?;
    let repositories = &s.0.repositories;
    if !q.contains_key("action") && !body.is_empty() {
        let target = move_target(&s, &body).await?;
        let mails = match &key {
            Some(k) => repositories
                .repository_mail(&name, k)
                .await?
                .into_iter()
                .collect(),
            None => repositories.repository_mails(&name).await?,
        };
        for mail in mails {
            repository_tasks::move_mail(&*s.0.mail, &**repositories, &mail, &target).await?;
        }
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let request = reprocess_request(&name, &q)?;
    let smtp = s.0.smtp.clone();
    let initial = repository_tasks::reprocess_info(&request, key.as_deref(), 0, 0);
    let kind = match key {
        Some(_) => repository_tasks::REPROCESS_ONE,
        None => repository_tasks::REPROCESS_ALL,
    };
    let id =
        s.0.tasks
            .submit(kind, initial, move |ctx| {
                Box::pin(repository_tasks::reprocess(smtp, request, key, ctx))
            })
            .await?;
    Ok(task_created(id))
}
