//! `DELETE /tasks?olderThan=...`: forgets finished tasks submitted before a date, as James's
//! tasks cleanup does. Tasks still waiting or running are kept whatever their age.

use super::{iso8601, now_ms, TaskContext, TaskManager, TaskOutcome};
use serde_json::{json, Value};
use std::sync::Arc;

pub const TYPE: &str = "tasks-cleanup";

fn report(before_ms: i64, processed: u64, removed: u64) -> Value {
    json!({
        "type": TYPE,
        "removedTaskCount": removed,
        "processedTaskCount": processed,
        "olderThan": iso8601(before_ms),
        "timestamp": iso8601(now_ms()),
    })
}

pub fn initial(before_ms: i64) -> Value {
    report(before_ms, 0, 0)
}

pub async fn run(manager: Arc<TaskManager>, before_ms: i64, ctx: Arc<TaskContext>) -> TaskOutcome {
    match manager.remove_older_than(before_ms).await {
        Ok((processed, removed)) => {
            ctx.report(report(before_ms, processed, removed));
            TaskOutcome::Completed
        }
        Err(e) => TaskOutcome::Failed(format!("cleaning up tasks: {e}")),
    }
}
