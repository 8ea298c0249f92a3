//! Task-record cases.

use super::*;

pub async fn tasks_save_and_cancellation_survives_updates(b: &Backend) {
    let id = uuid::Uuid::new_v4();
    let mut t = TaskRecord {
        id,
        kind: "test".into(),
        status: "inProgress".into(),
        submitted_ms: 1,
        started_ms: Some(2),
        ended_ms: None,
        node: "n1".into(),
        heartbeat_ms: 3,
        cancel_requested: false,
        details: "{}".into(),
    };
    b.tasks.save_task(&t).await.unwrap();
    assert_eq!(b.tasks.get_task(id).await.unwrap(), Some(t.clone()));
    assert!(b.tasks.request_cancel(id).await.unwrap());
    assert!(!b.tasks.request_cancel(uuid::Uuid::new_v4()).await.unwrap());
    // The running node saves progress without knowing of the cancellation: it must survive.
    t.heartbeat_ms = 4;
    b.tasks.save_task(&t).await.unwrap();
    let got = b.tasks.get_task(id).await.unwrap().unwrap();
    assert!(got.cancel_requested);
    assert_eq!(got.heartbeat_ms, 4);
    assert_eq!(b.tasks.list_tasks().await.unwrap().len(), 1);
    assert!(b.tasks.delete_task(id).await.unwrap());
    assert!(b.tasks.get_task(id).await.unwrap().is_none());
    assert!(b.tasks.list_tasks().await.unwrap().is_empty());
    assert!(!b.tasks.delete_task(id).await.unwrap(), "already gone");
}
