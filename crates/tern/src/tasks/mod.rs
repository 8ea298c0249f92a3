//! The task manager, compatible with Apache James webadmin's `/tasks` routes. Task state lives
//! in the store, so any node answers for any task. The node running a task refreshes a
//! heartbeat; a task whose heartbeat stopped (its node died) is reported as failed rather than
//! "inProgress" forever. Cancellation is a flag in the store, so it can be asked of any node.

pub mod body_gc;
pub mod cleanup;
pub mod expire;
pub mod fix_pop3;
pub mod queue_delete;
pub mod quota_recompute;
pub mod repository_tasks;

use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tern_store::{StoreError, TaskRecord, TaskStore};
use uuid::Uuid;

const HEARTBEAT: Duration = Duration::from_secs(2);
/// A running task not heard of for this long is considered dead.
const STALE_AFTER_MS: i64 = 15_000;

pub use tern_store::now_ms;

/// A UTC date with milliseconds, `2017-12-27T15:15:24.805` followed by `zone` (James writes
/// `+0000` in tasks, `Z` in mail queues); `None` out of range.
pub fn utc_millis(ms: i64, zone: &str) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}{zone}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    ))
}

/// A date as James's task routes write it (`yyyy-MM-dd'T'HH:mm:ss.SSSZ`, here in UTC):
/// `2017-12-27T15:15:24.805+0000`.
pub(crate) fn iso8601(ms: i64) -> Value {
    utc_millis(ms, "+0000").map_or(Value::Null, Value::String)
}

/// What a running task can see and report.
pub struct TaskContext {
    cancelled: AtomicBool,
    details: Mutex<Value>,
}

impl TaskContext {
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Replaces the task's additional information (shown while it runs and after).
    pub fn report(&self, details: Value) {
        if let Ok(mut d) = self.details.lock() {
            *d = details;
        }
    }

    fn details(&self) -> Value {
        self.details
            .lock()
            .map(|d| d.clone())
            .unwrap_or(Value::Null)
    }
}

pub enum TaskOutcome {
    Completed,
    Cancelled,
    Failed(String),
}

pub type TaskFuture = std::pin::Pin<Box<dyn std::future::Future<Output = TaskOutcome> + Send>>;

pub struct TaskManager {
    store: Arc<dyn TaskStore>,
    node: String,
}

impl TaskManager {
    pub fn new(store: Arc<dyn TaskStore>, node: String) -> Arc<Self> {
        Arc::new(Self { store, node })
    }

    /// Records the task and starts it on this node; returns its id.
    pub async fn submit(
        self: &Arc<Self>,
        kind: &str,
        initial: Value,
        start: impl FnOnce(Arc<TaskContext>) -> TaskFuture,
    ) -> Result<Uuid, StoreError> {
        let now = now_ms();
        let mut record = TaskRecord {
            id: Uuid::new_v4(),
            kind: kind.to_string(),
            status: "waiting".into(),
            submitted_ms: now,
            started_ms: None,
            ended_ms: None,
            node: self.node.clone(),
            heartbeat_ms: now,
            cancel_requested: false,
            details: initial.to_string(),
        };
        self.store.save_task(&record).await?;
        let id = record.id;
        let ctx = Arc::new(TaskContext {
            cancelled: AtomicBool::new(false),
            details: Mutex::new(initial),
        });
        let work = start(ctx.clone());
        let manager = self.clone();
        tokio::spawn(async move {
            record.status = "inProgress".into();
            record.started_ms = Some(now_ms());
            manager.save(&mut record, &ctx).await;
            let mut work = work;
            let outcome = loop {
                tokio::select! {
                    outcome = &mut work => break outcome,
                    _ = tokio::time::sleep(HEARTBEAT) => {
                        manager.save(&mut record, &ctx).await;
                        if let Ok(Some(stored)) = manager.store.get_task(record.id).await {
                            if stored.cancel_requested {
                                ctx.cancelled.store(true, Ordering::Relaxed);
                            }
                        }
                    }
                }
            };
            record.status = match &outcome {
                TaskOutcome::Completed => "completed".into(),
                TaskOutcome::Cancelled => CANCELED.into(),
                TaskOutcome::Failed(why) => {
                    tracing::error!(task = %record.id, error = %why, "task failed");
                    "failed".into()
                }
            };
            record.ended_ms = Some(now_ms());
            manager.save(&mut record, &ctx).await;
            tracing::info!(task = %record.id, kind = %record.kind, status = %record.status, "task finished");
        });
        Ok(id)
    }

    async fn save(&self, record: &mut TaskRecord, ctx: &TaskContext) {
        record.heartbeat_ms = now_ms();
        record.details = ctx.details().to_string();
        if let Err(e) = self.store.save_task(record).await {
            tracing::warn!(task = %record.id, error = %e, "could not save task state");
        }
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Value>, StoreError> {
        Ok(self.store.get_task(id).await?.map(|t| to_json(&t)))
    }

    /// The tasks, newest first (as James lists them), with the given status and type if any.
    pub async fn list(
        &self,
        status: Option<&str>,
        kind: Option<&str>,
    ) -> Result<Vec<Value>, StoreError> {
        let mut tasks = self.store.list_tasks().await?;
        tasks.sort_by_key(|t| std::cmp::Reverse(t.submitted_ms));
        Ok(tasks
            .iter()
            .filter(|t| kind.is_none_or(|k| t.kind == k))
            .map(to_json)
            .filter(|t| status.is_none_or(|s| t["status"].as_str() == Some(s)))
            .collect())
    }

    /// When a task of `kind` was last submitted, by any node.
    pub async fn last_submitted(&self, kind: &str) -> Result<Option<i64>, StoreError> {
        let tasks = self.store.list_tasks().await?;
        Ok(tasks
            .iter()
            .filter(|t| t.kind == kind)
            .map(|t| t.submitted_ms)
            .max())
    }

    /// Forgets finished tasks submitted before `before_ms`; returns (examined, removed).
    pub async fn remove_older_than(&self, before_ms: i64) -> Result<(u64, u64), StoreError> {
        let tasks = self.store.list_tasks().await?;
        let mut removed = 0;
        for t in &tasks {
            let status = to_json(t)["status"].as_str().map(str::to_string);
            if t.submitted_ms < before_ms
                && status.as_deref().is_some_and(is_final)
                && self.store.delete_task(t.id).await?
            {
                removed += 1;
            }
        }
        Ok((tasks.len() as u64, removed))
    }

    /// Asks for cancellation; returns whether the task exists.
    pub async fn cancel(&self, id: Uuid) -> Result<bool, StoreError> {
        self.store.request_cancel(id).await
    }
}

/// James's spelling of the cancelled status.
pub const CANCELED: &str = "canceled";
/// The statuses James's `/tasks?status=` accepts.
pub const STATUSES: [&str; 6] = [
    "waiting",
    "inProgress",
    "canceledRequested",
    "completed",
    CANCELED,
    "failed",
];

/// The James webadmin representation of a task (`ExecutionDetailsDto`): dates that do not apply
/// are left out, as James leaves them out. A task whose node stopped refreshing its heartbeat is
/// shown as failed.
fn to_json(t: &TaskRecord) -> Value {
    // Records written before the spelling was fixed say "cancelled".
    let mut status = match t.status.as_str() {
        "cancelled" => CANCELED,
        other => other,
    };
    let mut failed_ms = (status == "failed").then_some(t.ended_ms).flatten();
    let running = status == "inProgress" || status == "waiting";
    if running && now_ms() - t.heartbeat_ms > STALE_AFTER_MS {
        status = "failed";
        failed_ms = Some(t.heartbeat_ms);
    } else if running && t.cancel_requested {
        status = "canceledRequested";
    }
    let details: Value = serde_json::from_str(&t.details).unwrap_or(Value::Null);
    let mut out = json!({
        "taskId": t.id.to_string(),
        "type": t.kind,
        "status": status,
        "submittedFrom": t.node,
        "executedOn": t.node,
        "additionalInformation": details,
        "submitDate": iso8601(t.submitted_ms),
    });
    let mut date = |key: &str, ms: Option<i64>| {
        if let Some(ms) = ms {
            out[key] = iso8601(ms);
        }
    };
    date("startedDate", t.started_ms);
    date(
        "completedDate",
        t.ended_ms.filter(|_| status == "completed"),
    );
    date("canceledDate", t.ended_ms.filter(|_| status == CANCELED));
    date("failedDate", failed_ms);
    if t.cancel_requested {
        out["cancelledFrom"] = json!(t.node);
    }
    out
}

pub fn is_final(status: &str) -> bool {
    matches!(status, "completed" | "failed" | CANCELED)
}
