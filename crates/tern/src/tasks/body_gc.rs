//! Collects bodies that no message references: left by a delivery that stopped after writing
//! its body, or by a deletion that stopped before removing it. Bodies younger than the grace
//! period are left alone, since a delivery in progress writes its body before the messages that
//! reference it (body ids are time-based, so their age is known without another read).

use super::{now_ms, TaskContext, TaskOutcome};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tern_store::BodyCollection;

pub const TYPE: &str = "BlobGCTask";
/// Bodies examined between two progress reports.
const REPORT_EVERY: u64 = 200;

#[derive(Default)]
struct Report {
    grace_minutes: u64,
    scanned: u64,
    collected: u64,
    too_recent: u64,
    errors: u64,
}

impl Report {
    fn json(&self) -> Value {
        json!({
            "type": TYPE,
            "runningOptions": { "graceMinutes": self.grace_minutes },
            "blobCount": self.scanned,
            "gcedBlobCount": self.collected,
            "skippedRecentBlobCount": self.too_recent,
            "errorCount": self.errors,
            "timestamp": super::iso8601(now_ms()),
        })
    }
}

pub fn initial(grace_minutes: u64) -> Value {
    Report {
        grace_minutes,
        ..Default::default()
    }
    .json()
}

pub async fn run(
    collection: Arc<dyn BodyCollection>,
    grace_minutes: u64,
    ctx: Arc<TaskContext>,
) -> TaskOutcome {
    let mut report = Report {
        grace_minutes,
        ..Default::default()
    };
    let grace = Duration::from_secs(grace_minutes * 60);
    let mut bodies = collection.all_bodies();
    while let Some(blob) = bodies.next().await {
        let blob = match blob {
            Ok(b) => b,
            Err(e) => return TaskOutcome::Failed(format!("scanning bodies: {e}")),
        };
        if ctx.is_cancelled() {
            ctx.report(report.json());
            return TaskOutcome::Cancelled;
        }
        report.scanned += 1;
        let old_enough = blob
            .created()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age >= grace);
        if !old_enough {
            report.too_recent += 1;
            continue;
        }
        match collection.remove_body_if_unreferenced(blob).await {
            Ok(true) => report.collected += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(blob = %blob, error = %e, "body collection failed");
                report.errors += 1;
            }
        }
        if report.scanned.is_multiple_of(REPORT_EVERY) {
            ctx.report(report.json());
        }
    }
    ctx.report(report.json());
    if report.errors == 0 {
        TaskOutcome::Completed
    } else {
        TaskOutcome::Failed(format!("{} bodies could not be collected", report.errors))
    }
}
