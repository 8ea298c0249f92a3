//! James's mail-queue routes (`webadmin.adoc`, "Administrating mail queues") over the outbound
//! queue, which is named `outgoing` there: list, details, list mails, delete (a task), flush.

use super::{bad_request, not_found, task_created, ApiError, ApiResult, AppState};
use crate::tasks::queue_delete::{self, Selector};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;

pub(super) const OUTGOING: &str = "outgoing";

fn queue_name(name: &str) -> Result<(), ApiError> {
    if name == OUTGOING {
        Ok(())
    } else if name.is_empty() || name.len() > 255 || name.contains(char::is_control) {
        Err(bad_request("invalid mail queue name"))
    } else {
        Err(not_found(&format!("{name:.40} can not be found")))
    }
}

pub(super) async fn list_queues() -> ApiResult {
    Ok(Json(vec![OUTGOING]).into_response())
}

pub(super) async fn queue_details(State(s): AppState, Path(name): Path<String>) -> ApiResult {
    queue_name(&name)?;
    let size = s.outbound.all_queued().await?.len();
    Ok(Json(json!({ "name": OUTGOING, "size": size })).into_response())
}

/// James's `nextDelivery`: `2026-12-01T10:00:00.000Z`.
fn iso(ms: i64) -> String {
    crate::tasks::utc_millis(ms, "Z").unwrap_or_default()
}

pub(super) async fn list_mails(
    State(s): AppState,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    queue_name(&name)?;
    let limit = match q.get("limit") {
        None => usize::MAX,
        Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
            bad_request(&format!(
                "limit must be a strictly positive integer, got {v:.40}"
            ))
        })?,
    };
    let mut mails = s.outbound.all_queued().await?;
    mails.sort_by_key(|m| (m.next_attempt_ms, m.id));
    let out: Vec<Value> = mails
        .iter()
        .take(limit)
        .map(|m| {
            json!({
                "name": m.id.to_string(),
                "sender": if m.sender.is_empty() { Value::Null } else { json!(m.sender) },
                "recipients": m.recipients.iter().map(|r| r.address.clone()).collect::<Vec<_>>(),
                "nextDelivery": iso(m.next_attempt_ms),
                "attempts": m.attempts,
                "lastError": m.recipients.iter().find_map(|r| r.last_error.clone()),
            })
        })
        .collect();
    Ok(Json(out).into_response())
}

pub(super) async fn delete_mails(
    State(s): AppState,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    queue_name(&name)?;
    let given: Vec<(&String, &String)> = q.iter().collect();
    let selector = match given.as_slice() {
        [] => Selector::All,
        [(k, v)] if k.as_str() == "sender" => Selector::Sender(address(v)?),
        [(k, v)] if k.as_str() == "recipient" => Selector::Recipient(address(v)?),
        [(k, v)] if k.as_str() == "name" => Selector::Name(v.to_string()),
        [(k, _)] => {
            return Err(bad_request(&format!(
                "unsupported query parameter {k:.40}; use sender, recipient or name"
            )))
        }
        _ => {
            return Err(bad_request(
                "give exactly one of sender, recipient and name",
            ))
        }
    };
    let outbound = s.outbound.clone();
    let task_selector = selector.clone();
    let id = s
        .tasks
        .submit(
            selector.task_type(),
            queue_delete::initial(&selector),
            move |ctx| Box::pin(queue_delete::run(outbound, task_selector, ctx)),
        )
        .await?;
    Ok(task_created(id))
}

fn address(v: &str) -> Result<String, ApiError> {
    let ok = v.len() <= 320 && !v.contains(char::is_control) && v.contains('@');
    ok.then(|| v.to_string())
        .ok_or_else(|| bad_request(&format!("invalid mail address {v:.40}")))
}

pub(super) async fn flush(
    State(s): AppState,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> ApiResult {
    queue_name(&name)?;
    let delayed_param = q.get("delayed").map(String::as_str) == Some("true");
    let body: Value = serde_json::from_slice(&body)
        .map_err(|_| bad_request("the body must be {\"delayed\": false}"))?;
    if !delayed_param || body.get("delayed") != Some(&Value::Bool(false)) {
        return Err(bad_request(
            "only ?delayed=true with {\"delayed\": false} is supported (a flush)",
        ));
    }
    let n = s.outbound.flush().await?;
    tracing::info!(mails = n, "outgoing queue flushed");
    Ok(StatusCode::NO_CONTENT.into_response())
}
