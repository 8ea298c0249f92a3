//! Group commit: every write goes through one thread that gathers the writes waiting at that
//! moment into a single redb transaction and a single fsync. Concurrent SMTP deliveries thus
//! share fsyncs instead of paying one each, and each caller still learns of its own durability.
//!
//! Deliveries, the hot write, are not closures but data ([`Delivery`]): the committer applies
//! all those of a batch in one pass ([`super::mail::apply_deliveries`]), each table opened once
//! and each mailbox's quota counters updated once, instead of once per delivery.

use super::mail::{apply_deliveries, Delivery};
use crate::{Result, StoreError};
use redb::{Database, Durability, WriteTransaction};
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Most writes folded into one transaction; bounds the latency of the first one.
const MAX_BATCH: usize = 512;

/// A write that can be applied to a transaction, possibly more than once: if any write of a
/// batch fails, the batch is rolled back and each write is retried in a transaction of its own,
/// so one bad write never sinks the others.
trait Job: Send {
    fn apply(&mut self, txn: &WriteTransaction) -> Result<()>;
    fn complete(self: Box<Self>, commit: Result<()>);
}

struct ClosureJob<T, F> {
    f: F,
    value: Option<T>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T: Send, F: FnMut(&WriteTransaction) -> Result<T> + Send> Job for ClosureJob<T, F> {
    fn apply(&mut self, txn: &WriteTransaction) -> Result<()> {
        self.value = Some((self.f)(txn)?);
        Ok(())
    }

    fn complete(self: Box<Self>, commit: Result<()>) {
        let result = match (commit, self.value) {
            (Ok(()), Some(v)) => Ok(v),
            (Err(e), _) => Err(e),
            (Ok(()), None) => Err(StoreError::unavailable("write was not applied")),
        };
        let _ = self.reply.send(result);
    }
}

/// What the committer thread receives.
enum Work {
    Write(Box<dyn Job>),
    Delivery(Delivery, oneshot::Sender<Result<()>>),
}

pub(crate) struct Committer {
    jobs: Option<mpsc::Sender<Work>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Committer {
    /// Waits for the writes already queued, so the database is closed when the store is dropped
    /// and the same directory can be opened again at once.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Committer {
    pub(crate) fn start(db: Arc<Database>) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Work>();
        let thread = std::thread::Builder::new()
            .name("tern-committer".into())
            .spawn(move || run(db, rx))?;
        Ok(Self {
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    /// Runs `f` in a write transaction and returns its value once the transaction is durable.
    /// `f` must only touch the store through the transaction: it may run twice.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&WriteTransaction) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        self.send(Work::Write(Box::new(ClosureJob {
            f,
            value: None,
            reply,
        })))?;
        rx.await
            .map_err(|_| StoreError::unavailable("committer stopped"))?
    }

    /// Stores a delivery; returns once it is durable.
    pub(crate) async fn deliver(&self, delivery: Delivery) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Work::Delivery(delivery, reply))?;
        rx.await
            .map_err(|_| StoreError::unavailable("committer stopped"))?
    }

    fn send(&self, work: Work) -> Result<()> {
        self.jobs
            .as_ref()
            .ok_or_else(|| StoreError::unavailable("committer stopped"))?
            .send(work)
            .map_err(|_| StoreError::unavailable("committer stopped"))
    }
}

fn run(db: Arc<Database>, rx: mpsc::Receiver<Work>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(&db, batch);
    }
}

fn begin(db: &Database) -> Result<WriteTransaction> {
    let mut txn = db.begin_write().map_err(StoreError::database)?;
    txn.set_durability(Durability::Immediate);
    Ok(txn)
}

fn commit_batch(db: &Database, batch: Vec<Work>) {
    let mut writes = Vec::new();
    let mut deliveries = Vec::new();
    for work in batch {
        match work {
            Work::Write(job) => writes.push(job),
            Work::Delivery(delivery, reply) => deliveries.push((delivery, reply)),
        }
    }
    let txn = match begin(db) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a write transaction");
            let why = e.to_string();
            for job in writes {
                job.complete(Err(StoreError::unavailable(why.clone())));
            }
            for (_, reply) in deliveries {
                let _ = reply.send(Err(StoreError::unavailable(why.clone())));
            }
            return;
        }
    };
    let failed = writes.iter_mut().any(|job| job.apply(&txn).is_err())
        || apply_deliveries(&txn, deliveries.iter().map(|(d, _)| d)).is_err();
    if !failed {
        // Every job of the batch gets the outcome; the error itself can only go to one.
        let commit = txn.commit().map_err(|e| e.to_string());
        if let Err(e) = &commit {
            tracing::error!(error = %e, "group commit failed");
        }
        let outcome = || match &commit {
            Ok(()) => Ok(()),
            Err(e) => Err(StoreError::unavailable(format!("database commit: {e}"))),
        };
        for job in writes {
            job.complete(outcome());
        }
        for (_, reply) in deliveries {
            let _ = reply.send(outcome());
        }
        return;
    }
    drop(txn.abort());
    for mut job in writes {
        let r = alone(db, |txn| job.apply(txn));
        job.complete(r);
    }
    for (delivery, reply) in deliveries {
        let _ = reply.send(alone(db, |txn| {
            apply_deliveries(txn, std::iter::once(&delivery))
        }));
    }
}

/// Applies one write in a transaction of its own (after its batch failed).
fn alone(db: &Database, apply: impl FnOnce(&WriteTransaction) -> Result<()>) -> Result<()> {
    let txn = begin(db)?;
    match apply(&txn) {
        Ok(()) => txn.commit().map_err(StoreError::database),
        Err(e) => {
            drop(txn.abort());
            Err(e)
        }
    }
}
