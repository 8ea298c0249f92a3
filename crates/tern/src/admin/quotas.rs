//! James's quota routes (`webadmin.adoc`, "Administrating quotas"): global, per domain and per
//! user limits on message count and size (a number, -1 for unlimited, null for not set), the
//! user's occupation, and the task that recomputes usage.

use super::{
    bad_request, domain_arg, not_found, task_created, user_arg, ApiError, ApiResult, AppState,
};
use crate::quota::Scopes;
use crate::tasks::quota_recompute;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;
use tern_store::{QuotaLimits, QuotaResource, QuotaScope};

fn limits_json(l: QuotaLimits) -> Value {
    json!({ "count": l.count, "size": l.size })
}

/// A limit from a body: a non-negative number or -1 (unlimited).
fn limit_value(v: &Value) -> Result<i64, ApiError> {
    match v.as_i64() {
        Some(n) if n >= -1 => Ok(n),
        _ => Err(bad_request(
            "a quota is a positive integer, or -1 for unlimited",
        )),
    }
}

fn resource(name: &str) -> Result<QuotaResource, ApiError> {
    match name {
        "count" => Ok(QuotaResource::Count),
        "size" => Ok(QuotaResource::Size),
        _ => Err(not_found("no such quota resource: count or size")),
    }
}

async fn domain_scope(s: &super::AdminState, domain: &str) -> Result<QuotaScope, ApiError> {
    let d = domain_arg(domain)?;
    if !s.directory.domain_exists(&d).await? {
        return Err(not_found(&format!("domain {d} not found")));
    }
    Ok(QuotaScope::Domain(d))
}

async fn user_scope(s: &super::AdminState, user: &str) -> Result<(QuotaScope, String), ApiError> {
    let (name, _) = user_arg(user)?;
    if s.directory.get_user(&name).await?.is_none() {
        return Err(not_found(&format!("user {name} does not exist")));
    }
    Ok((QuotaScope::User(name.clone()), name))
}

async fn put_both(s: &super::AdminState, scope: &QuotaScope, body: &[u8]) -> ApiResult {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| bad_request("the body must be {\"count\": N, \"size\": N}"))?;
    let mut values = Vec::new();
    for r in [QuotaResource::Count, QuotaResource::Size] {
        let value = match v.get(r.name()) {
            None | Some(Value::Null) => None,
            Some(x) => Some(limit_value(x)?),
        };
        values.push((r, value));
    }
    for (r, value) in values {
        s.quotas.set_quota_limit(scope, r, value).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn get_one(s: &super::AdminState, scope: &QuotaScope, r: QuotaResource) -> ApiResult {
    let l = s.quotas.quota_limits(scope).await?;
    let value = match r {
        QuotaResource::Count => l.count,
        QuotaResource::Size => l.size,
    };
    Ok(match value {
        Some(v) => Json(v).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

async fn put_one(
    s: &super::AdminState,
    scope: &QuotaScope,
    r: QuotaResource,
    body: &[u8],
) -> ApiResult {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| bad_request("the body must be a number, or -1 for unlimited"))?;
    s.quotas
        .set_quota_limit(scope, r, Some(limit_value(&v)?))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_one(s: &super::AdminState, scope: &QuotaScope, r: QuotaResource) -> ApiResult {
    s.quotas.set_quota_limit(scope, r, None).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// Global.

pub(super) async fn get_global(State(s): AppState) -> ApiResult {
    Ok(Json(limits_json(
        s.quotas.quota_limits(&QuotaScope::Global).await?,
    ))
    .into_response())
}

pub(super) async fn put_global(State(s): AppState, body: axum::body::Bytes) -> ApiResult {
    put_both(&s, &QuotaScope::Global, &body).await
}

pub(super) async fn get_global_one(State(s): AppState, Path(r): Path<String>) -> ApiResult {
    get_one(&s, &QuotaScope::Global, resource(&r)?).await
}

pub(super) async fn put_global_one(
    State(s): AppState,
    Path(r): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    put_one(&s, &QuotaScope::Global, resource(&r)?, &body).await
}

pub(super) async fn delete_global_one(State(s): AppState, Path(r): Path<String>) -> ApiResult {
    delete_one(&s, &QuotaScope::Global, resource(&r)?).await
}

// Domains.

pub(super) async fn get_domain(State(s): AppState, Path(d): Path<String>) -> ApiResult {
    let scope = domain_scope(&s, &d).await?;
    let global = s.quotas.quota_limits(&QuotaScope::Global).await?;
    let domain = s.quotas.quota_limits(&scope).await?;
    let computed = QuotaLimits {
        count: domain.count.or(global.count),
        size: domain.size.or(global.size),
    };
    Ok(Json(json!({
        "global": limits_json(global),
        "domain": limits_json(domain),
        "computed": limits_json(computed),
    }))
    .into_response())
}

pub(super) async fn put_domain(
    State(s): AppState,
    Path(d): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let scope = domain_scope(&s, &d).await?;
    put_both(&s, &scope, &body).await
}

pub(super) async fn get_domain_one(
    State(s): AppState,
    Path((d, r)): Path<(String, String)>,
) -> ApiResult {
    let scope = domain_scope(&s, &d).await?;
    get_one(&s, &scope, resource(&r)?).await
}

pub(super) async fn put_domain_one(
    State(s): AppState,
    Path((d, r)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult {
    let scope = domain_scope(&s, &d).await?;
    put_one(&s, &scope, resource(&r)?, &body).await
}

pub(super) async fn delete_domain_one(
    State(s): AppState,
    Path((d, r)): Path<(String, String)>,
) -> ApiResult {
    let scope = domain_scope(&s, &d).await?;
    delete_one(&s, &scope, resource(&r)?).await
}

// Users.

pub(super) async fn get_user(State(s): AppState, Path(u): Path<String>) -> ApiResult {
    let (_, name) = user_scope(&s, &u).await?;
    let scopes = Scopes::read(&*s.quotas, &name).await?;
    let computed = scopes.computed();
    let inbox = s
        .directory
        .get_user(&name)
        .await?
        .ok_or_else(|| not_found(&format!("user {name} does not exist")))?
        .inbox;
    let usage = s.quotas.quota_usage(inbox).await?;
    let ratio = |used: i64, limit: Option<i64>| match limit {
        Some(l) if l > 0 => used as f64 / l as f64,
        _ => 0.0,
    };
    let (rs, rc) = (
        ratio(usage.size, computed.size),
        ratio(usage.count, computed.count),
    );
    Ok(Json(json!({
        "global": limits_json(scopes.global),
        "domain": limits_json(scopes.domain),
        "user": limits_json(scopes.user),
        "computed": limits_json(computed),
        "occupation": {
            "size": usage.size,
            "count": usage.count,
            "ratio": { "size": rs, "count": rc, "max": rs.max(rc) },
        },
    }))
    .into_response())
}

pub(super) async fn put_user(
    State(s): AppState,
    Path(u): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let (scope, _) = user_scope(&s, &u).await?;
    put_both(&s, &scope, &body).await
}

pub(super) async fn get_user_one(
    State(s): AppState,
    Path((u, r)): Path<(String, String)>,
) -> ApiResult {
    let (scope, _) = user_scope(&s, &u).await?;
    get_one(&s, &scope, resource(&r)?).await
}

pub(super) async fn put_user_one(
    State(s): AppState,
    Path((u, r)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult {
    let (scope, _) = user_scope(&s, &u).await?;
    put_one(&s, &scope, resource(&r)?, &body).await
}

pub(super) async fn delete_user_one(
    State(s): AppState,
    Path((u, r)): Path<(String, String)>,
) -> ApiResult {
    let (scope, _) = user_scope(&s, &u).await?;
    delete_one(&s, &scope, resource(&r)?).await
}

/// `POST /quota/users?task=RecomputeCurrentQuotas[&usersPerSecond=N]`
pub(super) async fn users_task(
    State(s): AppState,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    match q.get("task").map(String::as_str) {
        Some("RecomputeCurrentQuotas") => {}
        other => {
            return Err(bad_request(&format!(
                "unsupported task {:.40}: RecomputeCurrentQuotas",
                other.unwrap_or("(none)")
            )))
        }
    }
    let rate = super::users_per_second(&q, 1000)?;
    let (directory, quotas, mail) = (s.directory.clone(), s.quotas.clone(), s.mail.clone());
    let id = s
        .tasks
        .submit(
            quota_recompute::TYPE,
            quota_recompute::initial(rate),
            move |ctx| Box::pin(quota_recompute::run(directory, mail, quotas, rate, ctx)),
        )
        .await?;
    Ok(task_created(id))
}
