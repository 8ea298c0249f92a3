//! The outbound queue on Cassandra: DC-local, sharded, time-sliced, with no lightweight
//! transaction per message (docs/cassandra.md, "The outbound queue").
//!
//! - `outbound_queue ((dc, shard, slice), queue_id)`: an entry lives in the partition of its
//!   shard and of the minute its next attempt is due (`slice`), so that the due entries are a
//!   few small partition reads and old partitions are never read again.
//! - `outbound_slices ((dc, shard), slice)`: which slices may hold entries. Written before the
//!   entry; a slice row is removed once its partition is empty and the slice is older than the
//!   clock-skew margin, so an entry written by a node whose clock lags is still found.
//! - `outbound_leases ((dc), shard)`: who works on a shard. Taken, renewed and released by
//!   compare-and-set (LWT), per shard and in the background, never per message; a lease not
//!   renewed expires by TTL and another node of the datacenter takes the shard.
//! - `outbound_nodes ((dc), node)`: live nodes (TTL), so that each takes its share of shards.

use super::*;
use crate::{NewQueuedMail, OutboundQueue, QueuedMail};
use futures_util::stream::{self, StreamExt};
use scylla::statement::batch::{Batch, BatchType};
use scylla::value::{CqlValue, Row};
use std::collections::{HashMap, HashSet};

/// Shards of a datacenter's queue. Fixed: an entry's shard is part of its key.
pub const QUEUE_SHARDS: u32 = 16;
/// Width of a time slice.
const SLICE_MS: i64 = 60_000;
/// Clocks of the nodes of a datacenter may differ by up to this much: slices this recent are
/// read again even when they were found empty, and their index rows are kept.
const CLOCK_SKEW_MS: i64 = 10 * 60_000;
/// A lease not renewed for this long expires, and another node takes the shard.
pub(crate) const LEASE_SECS: u64 = 20;

fn slice_of(ms: i64) -> i64 {
    ms.div_euclid(SLICE_MS)
}

/// The queue's own statements.
pub(crate) struct QueueStatements {
    insert_entry: PreparedStatement,
    delete_entry: PreparedStatement,
    select_slice: PreparedStatement,
    insert_slice: PreparedStatement,
    delete_slice: PreparedStatement,
    select_slices: PreparedStatement,
    acquire_lease: PreparedStatement,
    renew_lease: PreparedStatement,
    release_lease: PreparedStatement,
    list_leases: PreparedStatement,
    node_alive: PreparedStatement,
    node_gone: PreparedStatement,
    list_nodes: PreparedStatement,
}

impl QueueStatements {
    pub(crate) async fn prepare(session: &Session, o: &CassandraOptions) -> Result<Self> {
        let ks = &o.keyspace;
        let prepare = |cql: String, idempotent: bool, lwt: bool| async move {
            let mut p = session.prepare(cql).await.map_err(unavailable)?;
            p.set_consistency(o.write_consistency);
            p.set_is_idempotent(idempotent);
            if lwt {
                // Leases are per datacenter: Paxos among the local replicas only.
                p.set_serial_consistency(Some(SerialConsistency::LocalSerial));
            }
            Ok::<_, StoreError>(p)
        };
        let read = |cql: String| async move {
            let mut p = session.prepare(cql).await.map_err(unavailable)?;
            p.set_consistency(o.read_consistency);
            p.set_is_idempotent(true);
            Ok::<_, StoreError>(p)
        };
        Ok(Self {
            insert_entry: prepare(format!("INSERT INTO {ks}.outbound_queue (dc, shard, slice, queue_id, record) VALUES (?, ?, ?, ?, ?)"), true, false).await?,
            delete_entry: prepare(format!("DELETE FROM {ks}.outbound_queue WHERE dc = ? AND shard = ? AND slice = ? AND queue_id = ?"), true, false).await?,
            select_slice: read(format!("SELECT record FROM {ks}.outbound_queue WHERE dc = ? AND shard = ? AND slice = ?")).await?,
            insert_slice: prepare(format!("INSERT INTO {ks}.outbound_slices (dc, shard, slice) VALUES (?, ?, ?)"), true, false).await?,
            delete_slice: prepare(format!("DELETE FROM {ks}.outbound_slices WHERE dc = ? AND shard = ? AND slice = ?"), true, false).await?,
            select_slices: read(format!("SELECT slice FROM {ks}.outbound_slices WHERE dc = ? AND shard = ? AND slice >= ? AND slice <= ?")).await?,
            acquire_lease: prepare(format!("INSERT INTO {ks}.outbound_leases (dc, shard, owner) VALUES (?, ?, ?) IF NOT EXISTS USING TTL ?"), false, true).await?,
            renew_lease: prepare(format!("UPDATE {ks}.outbound_leases USING TTL ? SET owner = ? WHERE dc = ? AND shard = ? IF owner = ?"), false, true).await?,
            release_lease: prepare(format!("DELETE FROM {ks}.outbound_leases WHERE dc = ? AND shard = ? IF owner = ?"), false, true).await?,
            list_leases: read(format!("SELECT shard, owner FROM {ks}.outbound_leases WHERE dc = ?")).await?,
            node_alive: prepare(format!("INSERT INTO {ks}.outbound_nodes (dc, node) VALUES (?, ?) USING TTL ?"), true, false).await?,
            node_gone: prepare(format!("DELETE FROM {ks}.outbound_nodes WHERE dc = ? AND node = ?"), true, false).await?,
            list_nodes: read(format!("SELECT node FROM {ks}.outbound_nodes WHERE dc = ?")).await?,
        })
    }
}

/// What this node knows of its queue shards.
#[derive(Default)]
pub(crate) struct QueueState {
    /// Shards held after the last lease round.
    held: Vec<u32>,
    /// Per shard: no entry lives in a slice below this one (read again after a takeover).
    low_water: HashMap<u32, i64>,
}

fn to_json(mail: &QueuedMail) -> Result<String> {
    serde_json::to_string(mail).map_err(|e| StoreError::corrupt(e.to_string()))
}

fn from_json(json: &str) -> Result<QueuedMail> {
    serde_json::from_str(json).map_err(|e| StoreError::corrupt(format!("queue entry: {e}")))
}

/// Whether a lightweight transaction was applied (its first column, `[applied]`).
fn applied(result: scylla::response::query_result::QueryResult) -> Result<bool> {
    let rows = result.into_rows_result().map_err(corrupt)?;
    let row = rows.maybe_first_row::<Row>().map_err(corrupt)?;
    Ok(matches!(
        row.and_then(|r| r.columns.into_iter().next().flatten()),
        Some(CqlValue::Boolean(true))
    ))
}

impl CassandraStore {
    fn datacenter(&self) -> String {
        self.inner
            .options
            .local_datacenter
            .clone()
            .unwrap_or_else(|| "default".into())
    }

    fn queue_state(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // The state is a cache of hints: a poisoned lock still holds usable data.
        self.inner
            .queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn slice_entries(&self, dc: &str, shard: u32, slice: i64) -> Result<Vec<QueuedMail>> {
        let c = self.conn()?;
        let rows = c
            .all_rows::<(Option<String>,)>(&c.qst.select_slice, (dc, shard as i32, slice))
            .await?;
        rows.into_iter()
            .filter_map(|(json,)| json)
            .map(|json| from_json(&json))
            .collect()
    }

    async fn slices(&self, dc: &str, shard: u32, from: i64, to: i64) -> Result<Vec<i64>> {
        let c = self.conn()?;
        let rows = c
            .all_rows::<(i64,)>(&c.qst.select_slices, (dc, shard as i32, from, to))
            .await?;
        Ok(rows.into_iter().map(|(s,)| s).collect())
    }

    async fn shard_entries(&self, dc: String, shard: u32) -> Result<Vec<QueuedMail>> {
        let mut out = Vec::new();
        for slice in self.slices(&dc, shard, i64::MIN, i64::MAX).await? {
            out.extend(self.slice_entries(&dc, shard, slice).await?);
        }
        Ok(out)
    }
}

#[async_trait]
impl OutboundQueue for CassandraStore {
    async fn enqueue(&self, body: StagedBody, mail: NewQueuedMail) -> Result<QueuedMail> {
        if mail.recipients.is_empty() {
            return Err(StoreError::invalid("queued mail without recipients"));
        }
        let c = self.conn()?;
        let id = self.inner.ids.next_id();
        // A shard this node holds, so that this node sends what it accepted; any shard (its
        // holder polls it) when it holds none yet.
        let shard = {
            let state = self.queue_state();
            if state.held.is_empty() {
                rand::random::<u32>() % QUEUE_SHARDS
            } else {
                state.held[rand::random::<u32>() as usize % state.held.len()]
            }
        };
        let queued = QueuedMail::new(id.uuid(), shard, &body, mail);
        let json = to_json(&queued)?;
        // 1. The body with its reference, 2. the slice index, 3. the entry: a reader that
        // finds the entry finds its body, and the owner that reads the index finds the entry.
        let refs = vec![timeuuid(id)];
        body::commit(c, body.blob_id.0, body.size, body.payload, refs).await?;
        drop(body.in_flight);
        let dc = self.datacenter();
        let slice = slice_of(queued.next_attempt_ms);
        c.exec(&c.qst.insert_slice, (&dc, shard as i32, slice))
            .await?;
        c.exec(
            &c.qst.insert_entry,
            (&dc, shard as i32, slice, timeuuid(id), json),
        )
        .await?;
        self.inner.queue_changed.notify_one();
        Ok(queued)
    }

    async fn hold_shards(&self, node: &str) -> Result<Vec<u32>> {
        let c = self.conn()?;
        let dc = self.datacenter();
        let ttl = LEASE_SECS as i32;
        c.exec(&c.qst.node_alive, (&dc, node, ttl)).await?;
        let nodes = c
            .all_rows::<(String,)>(&c.qst.list_nodes, (&dc,))
            .await?
            .len()
            .max(1) as u32;
        let fair_share = QUEUE_SHARDS.div_ceil(nodes) as usize;
        let leases: HashMap<u32, String> = c
            .all_rows::<(i32, Option<String>)>(&c.qst.list_leases, (&dc,))
            .await?
            .into_iter()
            .filter_map(|(shard, owner)| Some((shard as u32, owner?)))
            .collect();
        let mut held = Vec::new();
        let mut mine: Vec<u32> = leases
            .iter()
            .filter(|(_, owner)| owner.as_str() == node)
            .map(|(s, _)| *s)
            .collect();
        mine.sort_unstable();
        for shard in mine {
            if held.len() >= fair_share {
                // More than a fair share (a node joined): give the rest back.
                c.exec(&c.qst.release_lease, (&dc, shard as i32, node))
                    .await?;
                continue;
            }
            let result = c
                .exec(&c.qst.renew_lease, (ttl, node, &dc, shard as i32, node))
                .await?;
            if applied(result)? {
                held.push(shard);
            }
        }
        // Free shards, from a random starting point so that nodes starting together do not
        // all race for the same ones.
        let start = rand::random::<u32>() % QUEUE_SHARDS;
        for k in 0..QUEUE_SHARDS {
            if held.len() >= fair_share {
                break;
            }
            let shard = (start + k) % QUEUE_SHARDS;
            if leases.contains_key(&shard) {
                continue;
            }
            let result = c
                .exec(&c.qst.acquire_lease, (&dc, shard as i32, node, ttl))
                .await?;
            if applied(result)? {
                held.push(shard);
            }
        }
        held.sort_unstable();
        let mut state = self.queue_state();
        let before: HashSet<u32> = state.held.iter().copied().collect();
        for shard in &held {
            if !before.contains(shard) {
                // Taken over: its slices are read from the start once.
                state.low_water.remove(shard);
            }
        }
        state.held = held.clone();
        Ok(held)
    }

    async fn release_shards(&self, node: &str) -> Result<()> {
        let c = self.conn()?;
        let dc = self.datacenter();
        let held = std::mem::take(&mut self.queue_state().held);
        // Gone from the node list first, so that the others count one node fewer and take
        // the released shards at their next round.
        c.exec(&c.qst.node_gone, (&dc, node)).await?;
        for shard in held {
            c.exec(&c.qst.release_lease, (&dc, shard as i32, node))
                .await?;
        }
        Ok(())
    }

    fn queue_signal(&self) -> Arc<tokio::sync::Notify> {
        self.inner.queue_changed.clone()
    }

    fn lease_secs(&self) -> u64 {
        LEASE_SECS
    }

    async fn due_mail(&self, shard: u32, now_ms: i64, limit: usize) -> Result<Vec<QueuedMail>> {
        let c = self.conn()?;
        let dc = self.datacenter();
        let current = slice_of(now_ms);
        // Judged by the real clock too: a caller asking what is due later (a test, a
        // look-ahead) must not move the low-water mark past slices that are still filling.
        let settled = slice_of(now_ms.min(crate::queue::now_ms()) - CLOCK_SKEW_MS);
        let low = self
            .queue_state()
            .low_water
            .get(&shard)
            .copied()
            .unwrap_or(i64::MIN);
        let mut out = Vec::new();
        let mut lowest_busy: Option<i64> = None;
        for slice in self.slices(&dc, shard, low, current).await? {
            let entries = self.slice_entries(&dc, shard, slice).await?;
            if entries.is_empty() {
                if slice < settled {
                    c.exec(&c.qst.delete_slice, (&dc, shard as i32, slice))
                        .await?;
                }
                continue;
            }
            lowest_busy.get_or_insert(slice);
            out.extend(entries.into_iter().filter(|m| m.next_attempt_ms <= now_ms));
            if out.len() >= limit {
                break;
            }
        }
        let low = lowest_busy.unwrap_or(current).min(settled);
        self.queue_state().low_water.insert(shard, low);
        out.sort_by_key(|m| (m.next_attempt_ms, m.id));
        out.truncate(limit);
        Ok(out)
    }

    async fn reschedule(&self, previous: &QueuedMail, next: &QueuedMail) -> Result<()> {
        if previous.id != next.id || previous.shard != next.shard || next.recipients.is_empty() {
            return Err(StoreError::invalid(
                "a rescheduled entry keeps its id and shard and has recipients",
            ));
        }
        let c = self.conn()?;
        let dc = self.datacenter();
        let shard = next.shard as i32;
        let id = CqlTimeuuid::from(next.id);
        let (old_slice, new_slice) = (
            slice_of(previous.next_attempt_ms),
            slice_of(next.next_attempt_ms),
        );
        let json = to_json(next)?;
        c.exec(&c.qst.insert_slice, (&dc, shard, new_slice)).await?;
        if old_slice == new_slice {
            c.exec(&c.qst.insert_entry, (&dc, shard, new_slice, id, json))
                .await?;
        } else {
            // Moved in one logged batch: both writes happen or neither, without Paxos.
            let mut batch = Batch::new(BatchType::Logged);
            batch.append_statement(c.qst.insert_entry.clone());
            batch.append_statement(c.qst.delete_entry.clone());
            batch.set_consistency(self.inner.options.write_consistency);
            c.session
                .batch(
                    &batch,
                    (
                        (&dc, shard, new_slice, id, json),
                        (&dc, shard, old_slice, id),
                    ),
                )
                .await
                .map_err(unavailable)?;
        }
        self.inner.queue_changed.notify_one();
        Ok(())
    }

    async fn remove_queued(&self, mail: &QueuedMail) -> Result<()> {
        let c = self.conn()?;
        let dc = self.datacenter();
        let id = CqlTimeuuid::from(mail.id);
        let blob = mail.blob.0;
        // The entry and its reference to the body go together (a logged batch), so that a
        // crash leaves neither an entry without its body nor a body held by no entry.
        let mut batch = Batch::new(BatchType::Logged);
        batch.append_statement(c.qst.delete_entry.clone());
        batch.append_statement(c.st.remove_blob_ref.clone());
        batch.set_consistency(self.inner.options.write_consistency);
        c.session
            .batch(
                &batch,
                (
                    (&dc, mail.shard as i32, slice_of(mail.next_attempt_ms), id),
                    (vec![id], blob),
                ),
            )
            .await
            .map_err(unavailable)?;
        body::release(c, blob).await?;
        Ok(())
    }

    fn all_queued(&self) -> ScanStream<'_, QueuedMail> {
        let dc = self.datacenter();
        stream::iter(0..QUEUE_SHARDS)
            .then(move |shard| self.shard_entries(dc.clone(), shard))
            .flat_map(|entries| match entries {
                Ok(e) => stream::iter(e.into_iter().map(Ok)).left_stream(),
                Err(e) => stream::once(async move { Err(e) }).right_stream(),
            })
            .boxed()
    }

    async fn open_queued_body(&self, mail: &QueuedMail) -> Result<Option<Box<dyn BodyReader>>> {
        let c = self.conn()?;
        body::open(c.clone(), mail.blob.0).await
    }
}
