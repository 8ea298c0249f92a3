//! Remote delivery: the queue runner, routing, the SMTP client connections, retries and
//! bounces. Mail for other domains is queued by the SMTP listeners (submission, relay
//! networks); the runner of each node works on the queue shards it holds.
//!
//! - [`route`]: where a domain's mail goes (transport, relay host, MX);
//! - [`connection`]: one connection to a remote server, around the sans-IO SMTP client;
//! - [`delivery`]: one attempt at one queued message, and what follows it;
//! - [`bounce`]: delivery status notifications to the sender;
//! - [`dkim`]: DKIM signing of mail from the configured domains;
//! - [`runner`]: leases, polling the due entries, concurrency.

pub mod bounce;
pub mod connection;
pub mod delivery;
pub mod dkim;
pub mod route;
pub mod runner;

use crate::config::{OutboundSection, OutboundTls};
use crate::listing::Pop3Listing;
use connection::Connection;
use futures_util::StreamExt;
use route::Router;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tern_proto::smtp::client::{ClientConfig, TlsPolicy};
use tern_store::{Directory, MailStore, OutboundQueue, QueuedMail};
use tokio::sync::Semaphore;
use uuid::Uuid;

/// Idle connections are kept this long for the next message to the same destination.
const POOL_IDLE: Duration = Duration::from_secs(10);

/// Remote delivery, shared by the runner, the SMTP listeners and the admin API.
pub struct Outbound {
    pub queue: Arc<dyn OutboundQueue>,
    pub mail: Arc<dyn MailStore>,
    pub directory: Arc<dyn Directory>,
    pub listing: Arc<dyn Pop3Listing>,
    /// Where a bounce that cannot be delivered is kept.
    pub repositories: Arc<dyn tern_store::MailRepositories>,
    pub settings: OutboundSection,
    pub hostname: String,
    /// This process's name in the lease tables (host name and a random suffix: a restarted
    /// node is a new holder, and waits for its predecessor's leases to expire).
    pub node: String,
    router: Router,
    tls: tokio_rustls::TlsConnector,
    /// Verifies the relay host's certificate, when `outbound.relayhost_ca_file` is set.
    relay_tls: Option<tokio_rustls::TlsConnector>,
    /// Idle connections by destination.
    pool: Mutex<HashMap<String, Vec<(Connection, Instant)>>>,
    /// Connections at once per destination.
    per_destination: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Entries being delivered by this node, and those it finished lately.
    attempts: Mutex<Attempts>,
}

/// What keeps this node from starting an entry twice. A poll's read may have begun before an
/// attempt removed or rescheduled the entry, so an entry whose attempt finished after the read
/// began is skipped too (its fresh state is read at the next poll).
#[derive(Default)]
struct Attempts {
    running: HashSet<Uuid>,
    finished: HashMap<Uuid, Instant>,
}

impl Attempts {
    /// Marks the entry as running unless it runs, or finished after `read_at`.
    fn start(&mut self, id: Uuid, read_at: Instant) -> bool {
        if self.finished.get(&id).is_some_and(|t| *t >= read_at) {
            return false;
        }
        self.running.insert(id)
    }

    fn finish(&mut self, id: Uuid) {
        self.running.remove(&id);
        self.finished.insert(id, Instant::now());
    }

    /// Forgets attempts that finished before `read_at`: no read from then on can be older.
    fn forget_before(&mut self, read_at: Instant) {
        self.finished.retain(|_, t| *t >= read_at);
    }
}

impl Outbound {
    pub fn new(
        queue: Arc<dyn OutboundQueue>,
        mail: Arc<dyn MailStore>,
        directory: Arc<dyn Directory>,
        listing: Arc<dyn Pop3Listing>,
        repositories: Arc<dyn tern_store::MailRepositories>,
        settings: OutboundSection,
        hostname: String,
    ) -> anyhow::Result<Arc<Self>> {
        let node = format!("{hostname}-{:08x}", rand::random::<u32>());
        Ok(Arc::new(Self {
            router: Router::new(&settings)?,
            tls: crate::tls::outbound_connector()?,
            relay_tls: settings
                .relayhost_ca_file
                .as_deref()
                .map(crate::tls::verifying_connector)
                .transpose()?,
            queue,
            mail,
            directory,
            listing,
            repositories,
            settings,
            hostname,
            node,
            pool: Mutex::new(HashMap::new()),
            per_destination: Mutex::new(HashMap::new()),
            attempts: Mutex::new(Attempts::default()),
        }))
    }

    fn client_config(&self, relayhost: bool) -> ClientConfig {
        let s = &self.settings;
        let auth = match (relayhost, &s.relayhost_username, &s.relayhost_password) {
            (true, Some(u), Some(p)) => Some((u.clone(), p.clone())),
            _ => None,
        };
        ClientConfig {
            helo_name: self.hostname.clone(),
            tls: match s.tls {
                // A verified relay host is never spoken to in clear.
                _ if relayhost && s.relayhost_ca_file.is_some() => TlsPolicy::Required,
                OutboundTls::Opportunistic => TlsPolicy::Opportunistic,
                OutboundTls::Required => TlsPolicy::Required,
            },
            implicit_tls: relayhost && s.relayhost_implicit_tls,
            auth,
            command_timeout: Duration::from_secs(s.command_timeout_secs),
            final_timeout: Duration::from_secs(s.command_timeout_secs * 2),
        }
    }

    fn destination_slots(&self, key: &str) -> Arc<Semaphore> {
        let mut map = self
            .per_destination
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Semaphore::new(
                    self.settings.max_connections_per_destination,
                ))
            })
            .clone()
    }

    fn pooled(&self, key: &str) -> Option<Connection> {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        let idle = pool.get_mut(key)?;
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < POOL_IDLE {
                return Some(conn);
            }
        }
        None
    }

    fn put_back(&self, key: &str, conn: Connection) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        pool.entry(key.to_string())
            .or_default()
            .push((conn, Instant::now()));
    }

    /// Closes idle connections past their time (called by the runner).
    async fn close_idle(&self) {
        let stale: Vec<Connection> = {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            let mut out = Vec::new();
            for idle in pool.values_mut() {
                let (old, fresh): (Vec<_>, Vec<_>) = idle
                    .drain(..)
                    .partition(|(_, since)| since.elapsed() >= POOL_IDLE);
                *idle = fresh;
                out.extend(old.into_iter().map(|(c, _)| c));
            }
            pool.retain(|_, idle| !idle.is_empty());
            out
        };
        for conn in stale {
            conn.quit(&self.tls).await;
        }
    }

    /// Every queued message is due now (James's flush; `tern queue flush`). Returns how many.
    pub async fn flush(&self) -> tern_store::Result<u64> {
        let now = tern_store::now_ms();
        let mut n = 0;
        for mail in self.all_queued().await? {
            if mail.next_attempt_ms > now {
                let mut next = mail.clone();
                next.next_attempt_ms = now;
                self.queue.reschedule(&mail, &next).await?;
                n += 1;
            }
        }
        self.queue.queue_signal().notify_one();
        Ok(n)
    }

    /// The whole queue.
    pub async fn all_queued(&self) -> tern_store::Result<Vec<QueuedMail>> {
        let mut out = Vec::new();
        let mut scan = self.queue.all_queued();
        while let Some(m) = scan.next().await {
            out.push(m?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_not_started_twice_nor_from_a_read_older_than_its_end() {
        let mut a = Attempts::default();
        let id = Uuid::new_v4();
        let early_read = Instant::now();
        assert!(a.start(id, early_read));
        assert!(!a.start(id, early_read), "running");
        a.finish(id);
        // A read that began before the attempt ended may show the entry as it was.
        assert!(!a.start(id, early_read));
        let late_read = Instant::now();
        a.forget_before(late_read);
        assert!(a.start(id, late_read), "a fresh read decides again");
    }
}
