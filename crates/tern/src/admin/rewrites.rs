//! James's recipient-rewriting routes (`webadmin.adoc`, "Administrating Recipient rewriting",
//! and the domain aliases of "Administrating domains"): groups, forwards, aliases, domain
//! aliases, domain mappings, and the untyped mappings. An addition that would make rewriting
//! loop is undone and answered 409, as James does.

use super::{bad_request, domain_arg, not_found, user_arg, ApiError, ApiResult, AppState};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tern_store::{Mapping, MappingKind};

fn conflict(message: &str) -> ApiError {
    ApiError {
        status: StatusCode::CONFLICT,
        kind: super::WRONG_STATE,
        message: message.to_string(),
    }
}

fn address(a: &str) -> Result<String, ApiError> {
    user_arg(a).map(|(name, _)| name)
}

fn domain_of(a: &str) -> &str {
    a.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

async fn served(s: &super::AdminState, domain: &str) -> Result<bool, ApiError> {
    Ok(s.directory.domain_exists(domain).await?)
}

/// 400 unless the address's domain is served (James: "not managed by the DomainList").
async fn require_served(s: &super::AdminState, address: &str) -> Result<(), ApiError> {
    if served(s, domain_of(address)).await? {
        Ok(())
    } else {
        Err(bad_request(&format!(
            "domain of {address} is not managed by the domain list"
        )))
    }
}

/// 409 when the address belongs to a user: it cannot be a group or an alias.
async fn refuse_user(s: &super::AdminState, address: &str, why: &str) -> Result<(), ApiError> {
    if s.directory.get_user(address).await?.is_some() {
        Err(conflict(&format!("{address} {why}")))
    } else {
        Ok(())
    }
}

/// Adds the mapping, then undoes it with 409 if rewriting `source` now loops.
async fn add_checked(s: &super::AdminState, source: &str, mapping: Mapping) -> ApiResult {
    s.rewrites.add_mapping(source, &mapping).await?;
    match crate::rewrite::expand(&*s.rewrites, source).await {
        Err(crate::rewrite::RewriteError::Loop(_)) => {
            s.rewrites.remove_mapping(source, &mapping).await?;
            Err(conflict(
                "the addition of this mapping would lead to a loop and thus cannot be performed",
            ))
        }
        Err(crate::rewrite::RewriteError::Store(e)) => Err(e.into()),
        Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

async fn remove(s: &super::AdminState, source: &str, mapping: Mapping) -> ApiResult {
    s.rewrites.remove_mapping(source, &mapping).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Sources with at least one mapping of `kind`, sorted.
async fn sources_of(s: &super::AdminState, kind: MappingKind) -> Result<Vec<String>, ApiError> {
    let all = s.rewrites.all_mappings().await?;
    let set: BTreeSet<String> = all
        .into_iter()
        .filter(|(_, m)| m.kind == kind)
        .map(|(src, _)| src)
        .collect();
    Ok(set.into_iter().collect())
}

/// Targets of `source` of `kind`, sorted.
async fn targets_of(
    s: &super::AdminState,
    source: &str,
    kind: MappingKind,
) -> Result<Vec<String>, ApiError> {
    let mut t: Vec<String> = s
        .rewrites
        .mappings(source)
        .await?
        .into_iter()
        .filter(|m| m.kind == kind)
        .map(|m| m.target)
        .collect();
    t.sort();
    Ok(t)
}

/// Sources whose mapping of `kind` points at `target`, sorted.
async fn pointing_at(
    s: &super::AdminState,
    target: &str,
    kind: MappingKind,
) -> Result<Vec<String>, ApiError> {
    let mut v: Vec<String> = s
        .rewrites
        .all_mappings()
        .await?
        .into_iter()
        .filter(|(_, m)| m.kind == kind && m.target == target)
        .map(|(src, _)| src)
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

// Groups.

pub(super) async fn list_groups(State(s): AppState) -> ApiResult {
    Ok(Json(sources_of(&s, MappingKind::Group).await?).into_response())
}

pub(super) async fn delete_groups(State(s): AppState) -> ApiResult {
    for (src, m) in s.rewrites.all_mappings().await? {
        if m.kind == MappingKind::Group {
            s.rewrites.remove_mapping(&src, &m).await?;
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn group_members(State(s): AppState, Path(group): Path<String>) -> ApiResult {
    let group = address(&group)?;
    let members = targets_of(&s, &group, MappingKind::Group).await?;
    if members.is_empty() {
        return Err(not_found(&format!("group {group} does not exist")));
    }
    Ok(Json(members).into_response())
}

pub(super) async fn add_group_member(
    State(s): AppState,
    Path((group, member)): Path<(String, String)>,
) -> ApiResult {
    let (group, member) = (address(&group)?, address(&member)?);
    require_served(&s, &group).await?;
    refuse_user(
        &s,
        &group,
        "is already used by a user and cannot be a group",
    )
    .await?;
    add_checked(&s, &group, Mapping::new(MappingKind::Group, member)).await
}

pub(super) async fn remove_group_member(
    State(s): AppState,
    Path((group, member)): Path<(String, String)>,
) -> ApiResult {
    let (group, member) = (address(&group)?, address(&member)?);
    remove(&s, &group, Mapping::new(MappingKind::Group, member)).await
}

// Forwards.

pub(super) async fn list_forwards(State(s): AppState) -> ApiResult {
    Ok(Json(sources_of(&s, MappingKind::Forward).await?).into_response())
}

pub(super) async fn forward_targets(State(s): AppState, Path(user): Path<String>) -> ApiResult {
    let user = address(&user)?;
    let targets = targets_of(&s, &user, MappingKind::Forward).await?;
    if targets.is_empty() {
        return Err(not_found(&format!("{user} has no forward")));
    }
    let out: Vec<Value> = targets
        .into_iter()
        .map(|t| json!({ "mailAddress": t }))
        .collect();
    Ok(Json(out).into_response())
}

pub(super) async fn add_forward(
    State(s): AppState,
    Path((user, target)): Path<(String, String)>,
) -> ApiResult {
    let (user, target) = (address(&user)?, address(&target)?);
    require_served(&s, &user).await?;
    if s.directory.get_user(&user).await?.is_none() {
        return Err(not_found(&format!("{user} is not an existing user")));
    }
    add_checked(&s, &user, Mapping::new(MappingKind::Forward, target)).await
}

pub(super) async fn remove_forward(
    State(s): AppState,
    Path((user, target)): Path<(String, String)>,
) -> ApiResult {
    let (user, target) = (address(&user)?, address(&target)?);
    remove(&s, &user, Mapping::new(MappingKind::Forward, target)).await
}

// Aliases.

pub(super) async fn list_aliased_users(State(s): AppState) -> ApiResult {
    let users: BTreeSet<String> = s
        .rewrites
        .all_mappings()
        .await?
        .into_iter()
        .filter(|(_, m)| m.kind == MappingKind::Alias)
        .map(|(_, m)| m.target)
        .collect();
    Ok(Json(users.into_iter().collect::<Vec<_>>()).into_response())
}

pub(super) async fn alias_sources(State(s): AppState, Path(user): Path<String>) -> ApiResult {
    let user = address(&user)?;
    let out: Vec<Value> = pointing_at(&s, &user, MappingKind::Alias)
        .await?
        .into_iter()
        .map(|src| json!({ "source": src }))
        .collect();
    Ok(Json(out).into_response())
}

pub(super) async fn add_alias(
    State(s): AppState,
    Path((user, alias)): Path<(String, String)>,
) -> ApiResult {
    let (user, alias) = (address(&user)?, address(&alias)?);
    if user == alias {
        return Err(bad_request("source and destination can't be the same"));
    }
    require_served(&s, &user).await?;
    require_served(&s, &alias).await?;
    refuse_user(
        &s,
        &alias,
        "exists as a user already and cannot be an alias",
    )
    .await?;
    add_checked(&s, &alias, Mapping::new(MappingKind::Alias, user)).await
}

pub(super) async fn remove_alias(
    State(s): AppState,
    Path((user, alias)): Path<(String, String)>,
) -> ApiResult {
    let (user, alias) = (address(&user)?, address(&alias)?);
    remove(&s, &alias, Mapping::new(MappingKind::Alias, user)).await
}

/// `GET /users/{user}/allowedFromHeaders`: the addresses a user may send as (itself, then
/// its aliases), as submission accepts them in MAIL FROM.
pub(super) async fn allowed_from(State(s): AppState, Path(user): Path<String>) -> ApiResult {
    let user = address(&user)?;
    if s.directory.get_user(&user).await?.is_none() {
        return Err(not_found(&format!("user {user} does not exist")));
    }
    let mut out = vec![user.clone()];
    out.extend(pointing_at(&s, &user, MappingKind::Alias).await?);
    Ok(Json(out).into_response())
}

// Domain aliases and domain mappings.

pub(super) async fn domain_aliases(State(s): AppState, Path(domain): Path<String>) -> ApiResult {
    let d = domain_arg(&domain)?;
    if !served(&s, &d).await? {
        return Err(not_found(&format!("{d} is not part of handled domains")));
    }
    let out: Vec<Value> = pointing_at(&s, &d, MappingKind::DomainAlias)
        .await?
        .into_iter()
        .map(|src| json!({ "source": src }))
        .collect();
    Ok(Json(out).into_response())
}

pub(super) async fn add_domain_alias(
    State(s): AppState,
    Path((domain, source)): Path<(String, String)>,
) -> ApiResult {
    let (d, src) = (domain_arg(&domain)?, domain_arg(&source)?);
    if d == src {
        return Err(bad_request(
            "source domain and destination domain are the same",
        ));
    }
    if !served(&s, &d).await? {
        return Err(not_found(&format!("{d} is not part of handled domains")));
    }
    s.rewrites
        .add_mapping(&src, &Mapping::new(MappingKind::DomainAlias, d))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn remove_domain_alias(
    State(s): AppState,
    Path((domain, source)): Path<(String, String)>,
) -> ApiResult {
    let (d, src) = (domain_arg(&domain)?, domain_arg(&source)?);
    if d == src {
        return Err(bad_request(
            "source domain and destination domain are the same",
        ));
    }
    remove(&s, &src, Mapping::new(MappingKind::DomainAlias, d)).await
}

pub(super) async fn list_domain_mappings(State(s): AppState) -> ApiResult {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (src, m) in s.rewrites.all_mappings().await? {
        if m.kind == MappingKind::Domain {
            out.entry(src).or_default().push(m.target);
        }
    }
    for v in out.values_mut() {
        v.sort();
    }
    Ok(Json(out).into_response())
}

pub(super) async fn domain_mapping(State(s): AppState, Path(from): Path<String>) -> ApiResult {
    let from = domain_arg(&from)?;
    let targets = targets_of(&s, &from, MappingKind::Domain).await?;
    if targets.is_empty() {
        return Err(not_found(&format!("{from} has no domain mapping")));
    }
    Ok(Json(targets).into_response())
}

fn body_domain(body: &axum::body::Bytes) -> Result<String, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| bad_request("the body must be a domain"))?;
    domain_arg(text.trim())
}

pub(super) async fn add_domain_mapping(
    State(s): AppState,
    Path(from): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let (from, to) = (domain_arg(&from)?, body_domain(&body)?);
    s.rewrites
        .add_mapping(&from, &Mapping::new(MappingKind::Domain, to))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn remove_domain_mapping(
    State(s): AppState,
    Path(from): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let (from, to) = (domain_arg(&from)?, body_domain(&body)?);
    remove(&s, &from, Mapping::new(MappingKind::Domain, to)).await
}

// Untyped mappings.

fn mapping_json(m: &Mapping) -> Value {
    json!({ "type": m.kind.name(), "mapping": m.target })
}

pub(super) async fn all_mappings(State(s): AppState) -> ApiResult {
    let mut out: BTreeMap<String, Vec<Mapping>> = BTreeMap::new();
    for (src, m) in s.rewrites.all_mappings().await? {
        out.entry(src).or_default().push(m);
    }
    let out: BTreeMap<String, Vec<Value>> = out
        .into_iter()
        .map(|(src, mut ms)| {
            ms.sort();
            (src, ms.iter().map(mapping_json).collect())
        })
        .collect();
    Ok(Json(out).into_response())
}

pub(super) async fn user_mappings(State(s): AppState, Path(user): Path<String>) -> ApiResult {
    let user = address(&user)?;
    let mut ms = s.rewrites.mappings(&user).await?;
    ms.sort();
    Ok(Json(ms.iter().map(mapping_json).collect::<Vec<_>>()).into_response())
}

pub(super) async fn add_address_mapping(
    State(s): AppState,
    Path((source, target)): Path<(String, String)>,
) -> ApiResult {
    let (source, target) = (address(&source)?, address(&target)?);
    add_checked(&s, &source, Mapping::new(MappingKind::Address, target)).await
}

pub(super) async fn remove_address_mapping(
    State(s): AppState,
    Path((source, target)): Path<(String, String)>,
) -> ApiResult {
    let (source, target) = (address(&source)?, address(&target)?);
    remove(&s, &source, Mapping::new(MappingKind::Address, target)).await
}

fn source_kind(q: &HashMap<String, String>) -> Result<MappingKind, ApiError> {
    let given = q
        .get("type")
        .ok_or_else(|| bad_request("the type query parameter is compulsory"))?;
    MappingKind::parse(given)
        .filter(|k| {
            matches!(
                k,
                MappingKind::Group
                    | MappingKind::Forward
                    | MappingKind::Address
                    | MappingKind::Alias
            )
        })
        .ok_or_else(|| {
            bad_request(&format!(
                "invalid type {given:.40}: one of group, forward, address, alias"
            ))
        })
}

pub(super) async fn mapping_sources(
    State(s): AppState,
    Path(target): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let (target, kind) = (address(&target)?, source_kind(&q)?);
    Ok(Json(pointing_at(&s, &target, kind).await?).into_response())
}

pub(super) async fn delete_mapping_sources(
    State(s): AppState,
    Path(target): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let (target, kind) = (address(&target)?, source_kind(&q)?);
    for src in pointing_at(&s, &target, kind).await? {
        s.rewrites
            .remove_mapping(&src, &Mapping::new(kind, target.clone()))
            .await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
