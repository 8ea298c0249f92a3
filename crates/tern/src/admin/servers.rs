//! James's server routes (`webadmin.adoc`, "Server administration"): the connections of this
//! node (channels), who is logged in, disconnecting users, and reloading the certificate. Each
//! node answers for its own connections: to act on a user everywhere, call every node (the
//! README says how).

use super::{bad_request, ApiResult, AppState};
use crate::channels::Channel;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};

/// A channel as James describes it.
fn channel_json(c: &Channel) -> Value {
    let user = c.user();
    let (read, written) = c.bytes();
    json!({
        "protocol": c.protocol,
        "endpoint": c.endpoint,
        "remoteAddress": c.remote.ip().to_canonical().to_string(),
        "connectionDate": crate::tasks::utc_millis(c.connected_ms, "Z"),
        "isActive": true,
        "isOpen": true,
        "isWritable": true,
        "isEncrypted": c.encrypted(),
        "username": user,
        "protocolSpecificInformation": {
            "loggedInUser": user,
            "requestCount": c.requests().to_string(),
            "cumulativeWrittenBytes": written.to_string(),
            "cumulativeReadBytes": read.to_string(),
        },
    })
}

pub(super) async fn connected_users(State(s): AppState) -> ApiResult {
    let users: BTreeSet<String> = s.channels.list().iter().filter_map(|c| c.user()).collect();
    Ok(Json(users).into_response())
}

/// The value `sortBy` names: a top-level field, or `protocolSpecificInformation.x`; an unknown
/// path is an empty value, as James does.
fn sort_key<'a>(v: &'a Value, path: &str) -> &'a Value {
    const EMPTY: &Value = &Value::Null;
    path.split('.')
        .try_fold(v, |v, k| v.get(k))
        .unwrap_or(EMPTY)
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Sorts and pages a channel listing with James's parameters.
fn listing(mut channels: Vec<Value>, q: &HashMap<String, String>) -> ApiResult {
    let number = |key: &str| -> Result<Option<usize>, super::ApiError> {
        q.get(key)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| bad_request(&format!("{key} must be a non-negative integer")))
            })
            .transpose()
    };
    let (limit, offset) = (number("limit")?, number("offset")?.unwrap_or(0));
    if let Some(path) = q.get("sortBy") {
        let descending = match q.get("sortDirection").map(|d| d.to_ascii_lowercase()) {
            None => false,
            Some(d) if d == "asc" => false,
            Some(d) if d == "desc" => true,
            Some(_) => return Err(bad_request("sortDirection must be asc or desc")),
        };
        let numerical = match q.get("sortType").map(|t| t.to_ascii_lowercase()) {
            None => false,
            Some(t) if t == "alphabetical" => false,
            Some(t) if t == "numerical" => true,
            Some(_) => return Err(bad_request("sortType must be alphabetical or numerical")),
        };
        channels.sort_by(|a, b| {
            let (a, b) = (as_text(sort_key(a, path)), as_text(sort_key(b, path)));
            let order = if numerical {
                let n = |s: &str| s.parse::<i64>().unwrap_or(0);
                n(&a).cmp(&n(&b))
            } else {
                a.cmp(&b)
            };
            if descending {
                order.reverse()
            } else {
                order
            }
        });
    }
    Ok(Json(super::page(channels, offset, limit)).into_response())
}

pub(super) async fn all_channels(
    State(s): AppState,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    listing(
        s.channels.list().iter().map(|c| channel_json(c)).collect(),
        &q,
    )
}

pub(super) async fn user_channels(
    State(s): AppState,
    Path(user): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let channels = s
        .channels
        .list()
        .iter()
        .filter(|c| c.user().is_some_and(|u| u.eq_ignore_ascii_case(&user)))
        .map(|c| channel_json(c))
        .collect();
    listing(channels, &q)
}

/// `DELETE /servers/channels`: every channel, or those of the users in a JSON array body.
pub(super) async fn disconnect(State(s): AppState, body: axum::body::Bytes) -> ApiResult {
    let users: Option<Vec<String>> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(
            serde_json::from_slice(&body)
                .map_err(|_| bad_request("the body must be a JSON array of user names"))?,
        )
    };
    let n = s.channels.kick(users.as_deref());
    tracing::info!(channels = n, users = ?users, "channels disconnected by an administrator");
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn disconnect_user(State(s): AppState, Path(user): Path<String>) -> ApiResult {
    let n = s.channels.kick(Some(std::slice::from_ref(&user)));
    tracing::info!(channels = n, user = %crate::logging::Escaped(&user), "user disconnected by an administrator");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /servers?reload-certificate[&port=N]`: reads the certificate files again (as SIGHUP
/// does); 400 without a certificate, without the parameter, or for a port no TLS listener has.
pub(super) async fn reload_certificate(
    State(s): AppState,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    if !q.contains_key("reload-certificate") {
        return Err(bad_request("the only action is ?reload-certificate"));
    }
    let Some(certs) = &s.certs else {
        return Err(bad_request("no certificate is configured (tls.cert_file)"));
    };
    if let Some(port) = q.get("port") {
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad_request("port must be a valid port number"))?;
        if !s.tls_ports.contains(&port) {
            return Err(bad_request(&format!(
                "no listener of this node with a certificate is on port {port}"
            )));
        }
    }
    certs
        .reload()
        .map_err(|e| bad_request(&format!("the certificate could not be reloaded: {e:#}")))?;
    tracing::info!("TLS certificate reloaded through the admin API");
    Ok(StatusCode::NO_CONTENT.into_response())
}
