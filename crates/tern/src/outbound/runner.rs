//! The queue runner: a lease task keeps this node's share of the queue shards, and a poll loop
//! starts an attempt for each due entry of those shards, within the node's concurrency limit.
//! The loop wakes when this node queues something, and polls every second otherwise (entries
//! queued by other nodes into shards this node holds, retries coming due).

use super::Outbound;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};

/// How often leases are renewed (well inside their lifetime).
const LEASE_ROUND: Duration = Duration::from_secs(5);
/// How often the held shards are read for due entries when nothing wakes the runner.
const POLL: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Held {
    shards: Vec<u32>,
    /// When the lease round that gave `shards` answered.
    confirmed: Option<Instant>,
}

impl Outbound {
    /// Runs until `shutdown`; attempts in progress then finish (bounded by their own timeouts)
    /// and the shards are released for the other nodes.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let held = Arc::new(Mutex::new(Held::default()));
        let lease_task = tokio::spawn(lease_rounds(self.clone(), held.clone(), shutdown.clone()));
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let signal = self.queue.queue_signal();
        // A holder stops working on its shards before another node may take them.
        let lease = Duration::from_secs(self.queue.lease_secs());
        let margin = lease.saturating_sub(LEASE_ROUND).max(LEASE_ROUND);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let shards = {
                let h = held.lock().unwrap_or_else(|p| p.into_inner());
                match h.confirmed {
                    Some(t) if t.elapsed() < margin => h.shards.clone(),
                    _ => Vec::new(),
                }
            };
            let now = tern_store::now_ms();
            let read_at = Instant::now();
            'shards: for shard in shards {
                let free = slots.available_permits();
                if free == 0 {
                    break;
                }
                let due = match self.queue.due_mail(shard, now, free.max(16)).await {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(shard, error = %e, "cannot read the queue");
                        continue;
                    }
                };
                for mail in due {
                    let fresh = self
                        .attempts
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .start(mail.id, read_at);
                    if !fresh {
                        continue;
                    }
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        self.attempts
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .running
                            .remove(&mail.id);
                        break 'shards;
                    };
                    let me = self.clone();
                    tokio::spawn(async move {
                        let id = mail.id;
                        me.attempt(mail).await;
                        me.done(id);
                        drop(permit);
                    });
                }
            }
            self.attempts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .forget_before(read_at);
            self.close_idle().await;
            tokio::select! {
                _ = signal.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => {}
            }
        }
        // Let attempts in progress end before the shards go to another node.
        let all = self.settings.concurrency as u32;
        let _ = tokio::time::timeout(Duration::from_secs(30), slots.acquire_many(all)).await;
        lease_task.abort();
        if let Err(e) = self.queue.release_shards(&self.node).await {
            tracing::warn!(error = %e, "could not release the queue shards; they expire on their own");
        }
    }

    fn done(&self, id: uuid::Uuid) {
        self.attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .finish(id);
    }
}

async fn lease_rounds(
    outbound: Arc<Outbound>,
    held: Arc<Mutex<Held>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut logged: Option<Vec<u32>> = None;
    loop {
        match outbound.queue.hold_shards(&outbound.node).await {
            Ok(shards) => {
                if logged.as_ref() != Some(&shards) {
                    tracing::info!(node = %outbound.node, shards = ?shards, "outbound queue shards held");
                    logged = Some(shards.clone());
                }
                let mut h = held.lock().unwrap_or_else(|p| p.into_inner());
                h.shards = shards;
                h.confirmed = Some(Instant::now());
            }
            Err(e) => tracing::warn!(error = %e, "queue lease round failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(LEASE_ROUND) => {}
            _ = shutdown.changed() => return,
        }
    }
}
