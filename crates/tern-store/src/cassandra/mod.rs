//! The Cassandra (or ScyllaDB) backend, for many stateless Tern nodes sharing one cluster.
//!
//! Every statement on the SMTP-delivery and POP3 paths is a plain read or write at the
//! configured consistency (LOCAL_QUORUM by default), routed token- and DC-aware to the local
//! datacenter: no lightweight transaction. The only LWT is the creation of a user's INBOX, an
//! admin operation, so that two admins creating the same user at once agree on one mailbox id.
//!
//! Write order (see docs/cassandra.md): a delivery writes the body, then the message metadata,
//! then the POP3 view entries; a deletion removes the metadata, then the view entry, then the
//! body once no message references it. A crash at any point leaves at worst an unreferenced
//! body or a view entry without a message, never a listed message without its body.

mod body;
mod collection;
mod directory;
mod mail;
mod mappings;
mod queue;
mod quotas;
mod repair;
mod repositories;
pub mod schema;
mod tasks;
mod uids;

use crate::blob_store::BlobStore;
use crate::{
    paged, BlobId, BodyCollection, BodyReader, BodyWriter, Directory, IdGenerator, MailStore,
    MailboxId, MailboxInfo, MessageCopy, MessageId, MessageMeta, Repair, Result, ScanPage,
    ScanStream, StagedBody, StoreError, TaskRecord, TaskStore, UidEntry, UidListing, UidStore,
    UserRecord, ViewEntry, INBOX, SCAN_PAGE,
};
use async_trait::async_trait;
use futures_util::future::try_join_all;
pub use queue::QUEUE_SHARDS;
pub use schema::Replication;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::response::PagingState;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
pub use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::CqlTimeuuid;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;
use uuid::Uuid;

/// How to reach and use the cluster.
#[derive(Debug, Clone)]
pub struct CassandraOptions {
    /// `host:port` of one or more nodes; the driver discovers the rest.
    pub contact_points: Vec<String>,
    /// Requests go to this datacenter only (no failover to remote ones: a remote DC's latency
    /// never sits on a user's request). `None` uses every node, for single-DC test clusters.
    pub local_datacenter: Option<String>,
    /// Keyspace of Tern's tables (lower-case letters, digits, `_`).
    pub keyspace: String,
    /// The keyspace's replication, used when Tern creates it.
    pub replication: Replication,
    /// Credentials (both or neither).
    pub username: Option<String>,
    /// Credentials (both or neither).
    pub password: Option<String>,
    /// Consistency of reads (LOCAL_QUORUM by default).
    pub read_consistency: Consistency,
    /// Consistency of writes (LOCAL_QUORUM by default).
    pub write_consistency: Consistency,
    /// For the one LWT (INBOX creation).
    pub serial_consistency: SerialConsistency,
    /// Per request; past it the operation fails as unavailable.
    pub request_timeout: Duration,
    /// Per connection attempt.
    pub connect_timeout: Duration,
    /// Create or migrate the schema at start-up (otherwise it must exist already).
    pub create_schema: bool,
    /// Largest body chunk per cell.
    pub chunk_size: usize,
    /// CQL over TLS: PEM file of the certificate authorities to trust. The driver checks each
    /// node's IP address against its certificate.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Client certificate chain and key (PEM) when the cluster requires client authentication.
    pub tls_client_cert_file: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    pub tls_client_key_file: Option<std::path::PathBuf>,
}

impl Default for CassandraOptions {
    fn default() -> Self {
        Self {
            contact_points: vec!["127.0.0.1:9042".into()],
            local_datacenter: None,
            keyspace: "tern".into(),
            replication: Replication::Simple { factor: 1 },
            username: None,
            password: None,
            read_consistency: Consistency::LocalQuorum,
            write_consistency: Consistency::LocalQuorum,
            serial_consistency: SerialConsistency::LocalSerial,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            create_schema: true,
            chunk_size: 256 * 1024,
            tls_ca_file: None,
            tls_client_cert_file: None,
            tls_client_key_file: None,
        }
    }
}

/// Checks that the TLS files named in the options can be read and used, without connecting:
/// a bad file is a configuration error to report at start-up, not a reason to retry.
pub fn check_tls_files(o: &CassandraOptions) -> Result<()> {
    tls_config(o).map(|_| ())
}

/// The rustls client configuration for CQL over TLS (ring provider, TLS 1.2+).
fn tls_config(o: &CassandraOptions) -> Result<Option<Arc<rustls::ClientConfig>>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let Some(ca) = &o.tls_ca_file else {
        return Ok(None);
    };
    fn file_error(
        what: &str,
        path: &std::path::Path,
        e: impl std::error::Error + Send + Sync + 'static,
    ) -> StoreError {
        StoreError::invalid_from(format!("{what} {}", path.display()), e)
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| file_error("reading", ca, e))? {
        let cert = cert.map_err(|e| file_error("parsing", ca, e))?;
        roots.add(cert).map_err(|e| file_error("trusting", ca, e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::invalid(e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&o.tls_client_cert_file, &o.tls_client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| file_error("reading", cert, e))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| file_error("parsing", cert, e))?;
            let key_der =
                PrivateKeyDer::from_pem_file(key).map_err(|e| file_error("reading", key, e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| file_error("using", key, e))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(Arc::new(config)))
}

/// The Cassandra store; cheap to clone. It connects in the background: until it is connected
/// (and whenever the cluster cannot answer), operations fail with [`StoreError::Unavailable`],
/// which the servers turn into temporary errors for their clients.
#[derive(Clone)]
pub struct CassandraStore {
    inner: Arc<Inner>,
}

struct Inner {
    options: CassandraOptions,
    objects: Option<Arc<dyn BlobStore>>,
    connected: OnceCell<Arc<Connected>>,
    last_error: Mutex<String>,
    ids: IdGenerator,
    queue: Mutex<queue::QueueState>,
    /// Wakes the queue runner when this node queued or rescheduled an entry.
    queue_changed: Arc<tokio::sync::Notify>,
}

pub(crate) struct Connected {
    pub(crate) session: Session,
    pub(crate) st: Statements,
    pub(crate) qst: queue::QueueStatements,
    pub(crate) chunk_size: usize,
    /// Where bodies larger than one chunk go, when not to chunk rows (see body.rs).
    pub(crate) objects: Option<Arc<dyn BlobStore>>,
}

pub(crate) fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::unavailable_from("Cassandra", e)
}

fn corrupt(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::corrupt_from("Cassandra row", e)
}

impl CassandraStore {
    /// Returns at once and connects in the background, retrying with backoff.
    pub fn start(options: CassandraOptions) -> Result<Self> {
        Self::start_with_blob_store(options, None)
    }

    /// As [`CassandraStore::start`], bodies larger than one chunk in `objects` rather than in
    /// chunk rows.
    pub fn start_with_blob_store(
        options: CassandraOptions,
        objects: Option<Arc<dyn BlobStore>>,
    ) -> Result<Self> {
        if !schema::valid_keyspace(&options.keyspace) {
            return Err(StoreError::invalid(format!(
                "keyspace name {:?}: use lower-case letters, digits and _",
                options.keyspace
            )));
        }
        // Configuration errors fail start-up now; only an unreachable cluster is retried.
        tls_config(&options)?;
        let connecting = format!(
            "connecting to Cassandra at {}",
            options.contact_points.join(", ")
        );
        let store = Self {
            inner: Arc::new(Inner {
                options,
                objects,
                connected: OnceCell::new(),
                last_error: Mutex::new(connecting),
                ids: IdGenerator::new(),
                queue: Mutex::new(queue::QueueState::default()),
                queue_changed: Arc::new(tokio::sync::Notify::new()),
            }),
        };
        let background = store.clone();
        tokio::spawn(async move { background.connect_with_backoff().await });
        Ok(store)
    }

    /// Connects now (for tests and tools); fails after `timeout`.
    pub async fn connect(options: CassandraOptions, timeout: Duration) -> Result<Self> {
        Self::connect_with_blob_store(options, None, timeout).await
    }

    /// As [`CassandraStore::connect`], with large bodies in `objects`.
    pub async fn connect_with_blob_store(
        options: CassandraOptions,
        objects: Option<Arc<dyn BlobStore>>,
        timeout: Duration,
    ) -> Result<Self> {
        let store = Self::start_with_blob_store(options, objects)?;
        let deadline = tokio::time::Instant::now() + timeout;
        while store.inner.connected.get().is_none() {
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::unavailable(store.last_error()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(store)
    }

    /// Whether the background connection has been made.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.get().is_some()
    }

    /// Why the store is not connected, or the last connection error (for the health check).
    pub fn last_error(&self) -> String {
        self.inner
            .last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    async fn connect_with_backoff(&self) {
        let mut delay = Duration::from_millis(500);
        loop {
            match connect_once(&self.inner.options).await {
                Ok(mut c) => {
                    c.objects = self.inner.objects.clone();
                    let _ = self.inner.connected.set(Arc::new(c));
                    tracing::info!(keyspace = %self.inner.options.keyspace, "connected to Cassandra");
                    return;
                }
                Err(e) if !e.is_temporary() => {
                    // Retrying cannot fix this (a newer schema, a bad file): say so and stop.
                    tracing::error!(error = %e, "cannot use Cassandra; not retrying");
                    if let Ok(mut last) = self.inner.last_error.lock() {
                        *last = format!("not connected to Cassandra: {e}");
                    }
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot reach Cassandra");
                    if let Ok(mut last) = self.inner.last_error.lock() {
                        *last = format!("not connected to Cassandra: {e}");
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    fn conn(&self) -> Result<&Arc<Connected>> {
        self.inner
            .connected
            .get()
            .ok_or_else(|| StoreError::unavailable(self.last_error()))
    }
}

/// Drops the keyspace named in `options` with everything in it (tests and tools; never run by
/// a serving node).
pub async fn drop_keyspace(options: &CassandraOptions) -> Result<()> {
    if !schema::valid_keyspace(&options.keyspace) {
        return Err(StoreError::invalid(format!(
            "keyspace name {:?}",
            options.keyspace
        )));
    }
    let session = session_builder(options)?
        .build()
        .await
        .map_err(unavailable)?;
    session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", options.keyspace), &[])
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// A driver session builder for these options: contact points, DC-local token-aware routing,
/// consistency, timeouts, credentials and TLS.
fn session_builder(o: &CassandraOptions) -> Result<SessionBuilder> {
    let mut policy = DefaultPolicy::builder()
        .token_aware(true)
        .permit_dc_failover(false);
    if let Some(dc) = &o.local_datacenter {
        policy = policy.prefer_datacenter(dc.clone());
    }
    let profile = ExecutionProfile::builder()
        .consistency(o.read_consistency)
        .request_timeout(Some(o.request_timeout))
        .load_balancing_policy(policy.build())
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&o.contact_points)
        .connection_timeout(o.connect_timeout)
        .default_execution_profile_handle(profile.into_handle());
    if let (Some(u), Some(p)) = (&o.username, &o.password) {
        builder = builder.user(u, p);
    }
    if let Some(tls) = tls_config(o)? {
        builder = builder.tls_context(Some(tls));
    }
    Ok(builder)
}

async fn connect_once(o: &CassandraOptions) -> Result<Connected> {
    let session = session_builder(o)?.build().await.map_err(unavailable)?;
    if o.create_schema {
        for statement in schema::statements(&o.keyspace, &o.replication) {
            session
                .query_unpaged(statement, &[])
                .await
                .map_err(unavailable)?;
        }
        add_missing_columns(&session, &o.keyspace).await?;
    }
    check_schema_version(&session, o).await?;
    let st = Statements::prepare(&session, o).await?;
    let qst = queue::QueueStatements::prepare(&session, o).await?;
    Ok(Connected {
        session,
        st,
        qst,
        chunk_size: o.chunk_size,
        objects: None,
    })
}

/// Adds the columns later versions gave to existing tables (a keyspace created by an older Tern
/// has the tables without them). Reads the schema first, as `ALTER TABLE ... ADD` has no `IF NOT
/// EXISTS` on every supported server; when several nodes add the same column at once, the
/// losers' "already exists" errors are expected and ignored.
async fn add_missing_columns(session: &Session, ks: &str) -> Result<()> {
    for (table, column, cql_type) in schema::ADDED_COLUMNS {
        let rows = session
            .query_unpaged(
                "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ? AND column_name = ?",
                (ks, *table, *column),
            )
            .await
            .map_err(unavailable)?
            .into_rows_result()
            .map_err(corrupt)?;
        if rows.rows_num() > 0 {
            continue;
        }
        let alter = format!("ALTER TABLE {ks}.{table} ADD {column} {cql_type}");
        if let Err(e) = session.query_unpaged(alter, &[]).await {
            let text = e.to_string();
            if !(text.contains("already exist") || text.contains("conflicts with an existing")) {
                return Err(unavailable(e));
            }
        }
    }
    Ok(())
}

async fn check_schema_version(session: &Session, o: &CassandraOptions) -> Result<()> {
    let ks = &o.keyspace;
    let rows = session
        .query_unpaged(
            format!("SELECT version FROM {ks}.schema_version WHERE component = 'tern'"),
            &[],
        )
        .await
        .map_err(unavailable)?
        .into_rows_result()
        .map_err(corrupt)?;
    let found = rows
        .maybe_first_row::<(Option<i32>,)>()
        .map_err(corrupt)?
        .and_then(|r| r.0);
    match found {
        Some(v) if v > schema::SCHEMA_VERSION => Err(StoreError::invalid(format!(
            "keyspace {ks} has schema version {v}; this tern knows up to {}",
            schema::SCHEMA_VERSION
        ))),
        Some(v) if v == schema::SCHEMA_VERSION => Ok(()),
        _ if o.create_schema => {
            session
                .query_unpaged(
                    format!("INSERT INTO {ks}.schema_version (component, version, updated_at) VALUES ('tern', ?, toTimestamp(now()))"),
                    (schema::SCHEMA_VERSION,),
                )
                .await
                .map_err(unavailable)?;
            Ok(())
        }
        None => Err(StoreError::unavailable(format!(
            "keyspace {ks} has no Tern schema; apply `tern cassandra schema` or set create_schema"
        ))),
        Some(v) => Err(StoreError::unavailable(format!(
            "keyspace {ks} has schema version {v}, this tern needs {}; apply `tern cassandra schema` (it only adds tables) or set create_schema",
            schema::SCHEMA_VERSION
        ))),
    }
}

fn timeuuid(id: MessageId) -> CqlTimeuuid {
    CqlTimeuuid::from(id.uuid())
}

fn message_id(t: CqlTimeuuid) -> Result<MessageId> {
    MessageId::from_uuid(Uuid::from(t))
        .ok_or_else(|| StoreError::corrupt("message id is not a version-1 UUID"))
}

/// Every prepared statement, with its consistency and idempotence set once.
pub(crate) struct Statements {
    insert_domain: PreparedStatement,
    delete_domain: PreparedStatement,
    select_domain: PreparedStatement,
    list_domains: PreparedStatement,
    insert_user: PreparedStatement,
    select_user: PreparedStatement,
    delete_user: PreparedStatement,
    list_users: PreparedStatement,
    create_mailbox: PreparedStatement,
    select_mailbox: PreparedStatement,
    list_mailboxes: PreparedStatement,
    pub(crate) insert_chunk: PreparedStatement,
    insert_single_chunk_blob: PreparedStatement,
    complete_blob: PreparedStatement,
    pub(crate) select_blob_head: PreparedStatement,
    pub(crate) select_chunk: PreparedStatement,
    remove_blob_ref: PreparedStatement,
    select_blob_refs: PreparedStatement,
    pub(crate) delete_blob: PreparedStatement,
    pub(crate) insert_object_blob: PreparedStatement,
    insert_message: PreparedStatement,
    insert_message_with_header: PreparedStatement,
    select_message: PreparedStatement,
    delete_message: PreparedStatement,
    insert_view: PreparedStatement,
    select_view: PreparedStatement,
    count_view: PreparedStatement,
    delete_view: PreparedStatement,
    select_message_meta: PreparedStatement,
    select_view_entry: PreparedStatement,
    scan_messages: PreparedStatement,
    scan_view: PreparedStatement,
    select_uid_counter: PreparedStatement,
    init_uid_counter: PreparedStatement,
    advance_uid_counter: PreparedStatement,
    set_message_uid: PreparedStatement,
    insert_by_uid: PreparedStatement,
    select_by_uid: PreparedStatement,
    delete_by_uid: PreparedStatement,
    save_task: PreparedStatement,
    select_task: PreparedStatement,
    list_tasks: PreparedStatement,
    cancel_task: PreparedStatement,
    delete_task: PreparedStatement,
    scan_bodies: PreparedStatement,
    pub(crate) mark_in_flight: PreparedStatement,
    pub(crate) clear_in_flight: PreparedStatement,
    collector_select_in_flight: PreparedStatement,
    collector_select_refs: PreparedStatement,
    insert_mapping: PreparedStatement,
    delete_mapping: PreparedStatement,
    select_mappings: PreparedStatement,
    scan_mappings: PreparedStatement,
    add_usage: PreparedStatement,
    select_usage: PreparedStatement,
    set_limit: PreparedStatement,
    delete_limit: PreparedStatement,
    select_limits: PreparedStatement,
    select_message_owner_size: PreparedStatement,
    insert_repository: PreparedStatement,
    scan_repositories: PreparedStatement,
    count_repository: PreparedStatement,
    insert_repository_mail: PreparedStatement,
    select_repository_mails: PreparedStatement,
    select_repository_mail: PreparedStatement,
    delete_repository_mail: PreparedStatement,
}

impl Statements {
    async fn prepare(session: &Session, o: &CassandraOptions) -> Result<Self> {
        let ks = &o.keyspace;
        let read = |cql: String| async move {
            let mut p = session.prepare(cql).await.map_err(unavailable)?;
            p.set_consistency(o.read_consistency);
            p.set_is_idempotent(true);
            p.set_page_size(5000);
            Ok::<_, StoreError>(p)
        };
        let write = |cql: String| async move {
            let mut p = session.prepare(cql).await.map_err(unavailable)?;
            p.set_consistency(o.write_consistency);
            p.set_is_idempotent(true);
            Ok::<_, StoreError>(p)
        };
        let mut create_mailbox = session
            .prepare(format!("INSERT INTO {ks}.mailboxes (user, name, mailbox_id) VALUES (?, ?, ?) IF NOT EXISTS"))
            .await
            .map_err(unavailable)?;
        create_mailbox.set_consistency(o.write_consistency);
        create_mailbox.set_serial_consistency(Some(o.serial_consistency));
        // The UID counter's compare-and-set: lightweight transactions, used in UID mode only.
        let lwt = |cql: String| async move {
            let mut p = session.prepare(cql).await.map_err(unavailable)?;
            p.set_consistency(o.write_consistency);
            p.set_serial_consistency(Some(o.serial_consistency));
            Ok::<_, StoreError>(p)
        };
        // The collector's reads run at ALL: an in-flight marker or a reference written at a
        // datacenter-local consistency in another datacenter must be seen before a body is
        // removed. A replica down anywhere makes the collector skip the body, never remove it.
        let read_all = |cql: String| async move {
            let mut p = session.prepare(cql).await.map_err(unavailable)?;
            p.set_consistency(Consistency::All);
            p.set_is_idempotent(true);
            Ok::<_, StoreError>(p)
        };
        Ok(Self {
            mark_in_flight: write(format!(
                "INSERT INTO {ks}.bodies_in_flight (blob_id) VALUES (?) USING TTL ?"
            ))
            .await?,
            clear_in_flight: write(format!("DELETE FROM {ks}.bodies_in_flight WHERE blob_id = ?"))
                .await?,
            collector_select_in_flight: read_all(format!(
                "SELECT blob_id FROM {ks}.bodies_in_flight WHERE blob_id = ?"
            ))
            .await?,
            collector_select_refs: read_all(format!(
                "SELECT refs, chunk_count FROM {ks}.blobs WHERE blob_id = ? LIMIT 1"
            ))
            .await?,
            insert_domain: write(format!("INSERT INTO {ks}.domains (domain) VALUES (?)")).await?,
            delete_domain: write(format!("DELETE FROM {ks}.domains WHERE domain = ?")).await?,
            select_domain: read(format!("SELECT domain FROM {ks}.domains WHERE domain = ?")).await?,
            list_domains: read(format!("SELECT domain FROM {ks}.domains")).await?,
            insert_user: write(format!("INSERT INTO {ks}.users (name, password_hash, inbox_id) VALUES (?, ?, ?)")).await?,
            select_user: read(format!("SELECT password_hash, inbox_id FROM {ks}.users WHERE name = ?")).await?,
            delete_user: write(format!("DELETE FROM {ks}.users WHERE name = ?")).await?,
            list_users: read(format!("SELECT name FROM {ks}.users")).await?,
            create_mailbox,
            select_mailbox: read(format!("SELECT mailbox_id FROM {ks}.mailboxes WHERE user = ? AND name = ?")).await?,
            list_mailboxes: read(format!("SELECT name, mailbox_id FROM {ks}.mailboxes WHERE user = ?")).await?,
            insert_chunk: write(format!("INSERT INTO {ks}.blobs (blob_id, chunk, data) VALUES (?, ?, ?)")).await?,
            insert_single_chunk_blob: write(format!(
                "INSERT INTO {ks}.blobs (blob_id, chunk, data, size, chunk_count, refs) VALUES (?, 0, ?, ?, 1, ?)"
            ))
            .await?,
            // A body in the object store: its head row without data, chunk count 0 (body.rs).
            insert_object_blob: write(format!(
                "INSERT INTO {ks}.blobs (blob_id, chunk, size, chunk_count, refs) VALUES (?, 0, ?, 0, ?)"
            ))
            .await?,
            complete_blob: write(format!(
                "UPDATE {ks}.blobs SET size = ?, chunk_count = ?, refs = ? WHERE blob_id = ?"
            ))
            .await?,
            select_blob_head: read(format!(
                "SELECT size, chunk_count, data FROM {ks}.blobs WHERE blob_id = ? AND chunk = 0"
            ))
            .await?,
            select_chunk: read(format!("SELECT data FROM {ks}.blobs WHERE blob_id = ? AND chunk = ?")).await?,
            remove_blob_ref: write(format!("UPDATE {ks}.blobs SET refs = refs - ? WHERE blob_id = ?")).await?,
            select_blob_refs: read(format!("SELECT refs, chunk_count FROM {ks}.blobs WHERE blob_id = ? LIMIT 1")).await?,
            delete_blob: write(format!("DELETE FROM {ks}.blobs WHERE blob_id = ?")).await?,
            insert_message: write(format!(
                "INSERT INTO {ks}.messages (message_id, mailbox_id, blob_id, size) VALUES (?, ?, ?, ?)"
            ))
            .await?,
            insert_message_with_header: write(format!(
                "INSERT INTO {ks}.messages (message_id, mailbox_id, blob_id, size, header) VALUES (?, ?, ?, ?, ?)"
            ))
            .await?,
            select_message: read(format!("SELECT mailbox_id, blob_id, header FROM {ks}.messages WHERE message_id = ?")).await?,
            delete_message: write(format!("DELETE FROM {ks}.messages WHERE message_id = ?")).await?,
            insert_view: write(format!(
                "INSERT INTO {ks}.pop3_view (mailbox_id, message_id, size, uidl) VALUES (?, ?, ?, ?)"
            ))
            .await?,
            select_view: read(format!("SELECT message_id, size, uidl FROM {ks}.pop3_view WHERE mailbox_id = ?")).await?,
            count_view: read(format!("SELECT count(*) FROM {ks}.pop3_view WHERE mailbox_id = ?")).await?,
            delete_view: write(format!("DELETE FROM {ks}.pop3_view WHERE mailbox_id = ? AND message_id = ?")).await?,
            select_message_meta: read(format!("SELECT mailbox_id, size, uid FROM {ks}.messages WHERE message_id = ?")).await?,
            select_view_entry: read(format!(
                "SELECT size, uidl FROM {ks}.pop3_view WHERE mailbox_id = ? AND message_id = ?"
            ))
            .await?,
            scan_messages: read(format!("SELECT message_id, mailbox_id FROM {ks}.messages")).await?,
            scan_view: read(format!("SELECT mailbox_id, message_id FROM {ks}.pop3_view")).await?,
            select_uid_counter: read(format!("SELECT next_uid, validity FROM {ks}.mailbox_uids WHERE mailbox_id = ?")).await?,
            init_uid_counter: lwt(format!(
                "INSERT INTO {ks}.mailbox_uids (mailbox_id, next_uid, validity) VALUES (?, 1, ?) IF NOT EXISTS"
            ))
            .await?,
            advance_uid_counter: lwt(format!(
                "UPDATE {ks}.mailbox_uids SET next_uid = ? WHERE mailbox_id = ? IF next_uid = ?"
            ))
            .await?,
            set_message_uid: write(format!("UPDATE {ks}.messages SET uid = ? WHERE message_id = ?")).await?,
            insert_by_uid: write(format!(
                "INSERT INTO {ks}.messages_by_uid (mailbox_id, uid, message_id, size) VALUES (?, ?, ?, ?)"
            ))
            .await?,
            select_by_uid: read(format!("SELECT uid, message_id, size FROM {ks}.messages_by_uid WHERE mailbox_id = ?")).await?,
            delete_by_uid: write(format!("DELETE FROM {ks}.messages_by_uid WHERE mailbox_id = ? AND uid = ?")).await?,
            save_task: write(format!("UPDATE {ks}.tasks SET record = ? WHERE task_id = ?")).await?,
            select_task: read(format!("SELECT record, cancel_requested FROM {ks}.tasks WHERE task_id = ?")).await?,
            list_tasks: read(format!("SELECT record, cancel_requested FROM {ks}.tasks")).await?,
            cancel_task: write(format!("UPDATE {ks}.tasks SET cancel_requested = true WHERE task_id = ?")).await?,
            delete_task: write(format!("DELETE FROM {ks}.tasks WHERE task_id = ?")).await?,
            scan_bodies: read(format!("SELECT DISTINCT blob_id FROM {ks}.blobs")).await?,
            insert_mapping: write(format!("INSERT INTO {ks}.mappings (source, kind, target) VALUES (?, ?, ?)")).await?,
            delete_mapping: write(format!("DELETE FROM {ks}.mappings WHERE source = ? AND kind = ? AND target = ?")).await?,
            select_mappings: read(format!("SELECT kind, target FROM {ks}.mappings WHERE source = ?")).await?,
            scan_mappings: read(format!("SELECT source, kind, target FROM {ks}.mappings")).await?,
            insert_repository: write(format!("INSERT INTO {ks}.mail_repositories (name) VALUES (?)")).await?,
            scan_repositories: read(format!("SELECT name FROM {ks}.mail_repositories")).await?,
            count_repository: read(format!("SELECT count(*) FROM {ks}.repository_mails WHERE repository = ?")).await?,
            insert_repository_mail: write(format!("INSERT INTO {ks}.repository_mails (repository, mail_key, record) VALUES (?, ?, ?)")).await?,
            select_repository_mails: read(format!("SELECT record FROM {ks}.repository_mails WHERE repository = ?")).await?,
            select_repository_mail: read(format!("SELECT record FROM {ks}.repository_mails WHERE repository = ? AND mail_key = ?")).await?,
            delete_repository_mail: write(format!("DELETE FROM {ks}.repository_mails WHERE repository = ? AND mail_key = ?")).await?,
            // Counter updates are not idempotent: the driver must not retry them on its own.
            add_usage: {
                let mut p = session
                    .prepare(format!("UPDATE {ks}.mailbox_usage SET message_count = message_count + ?, octets = octets + ? WHERE mailbox_id = ?"))
                    .await
                    .map_err(unavailable)?;
                p.set_consistency(o.write_consistency);
                p.set_is_idempotent(false);
                p
            },
            select_usage: read(format!("SELECT message_count, octets FROM {ks}.mailbox_usage WHERE mailbox_id = ?")).await?,
            set_limit: write(format!("INSERT INTO {ks}.quota_limits (scope, resource, quota_limit) VALUES (?, ?, ?)")).await?,
            delete_limit: write(format!("DELETE FROM {ks}.quota_limits WHERE scope = ? AND resource = ?")).await?,
            select_limits: read(format!("SELECT resource, quota_limit FROM {ks}.quota_limits WHERE scope = ?")).await?,
            select_message_owner_size: read(format!("SELECT mailbox_id, blob_id, size FROM {ks}.messages WHERE message_id = ?")).await?,
        })
    }
}

impl Connected {
    pub(crate) async fn exec(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<scylla::response::query_result::QueryResult> {
        self.session
            .execute_unpaged(st, values)
            .await
            .map_err(unavailable)
    }

    /// The first row of a single-partition read, if any.
    pub(crate) async fn first_row<R>(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Option<R>>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let rows = self
            .exec(st, values)
            .await?
            .into_rows_result()
            .map_err(corrupt)?;
        rows.maybe_first_row::<R>().map_err(corrupt)
    }

    /// One page of a scan; the cursor is the driver's paging state.
    async fn page<R>(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
        cursor: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<(Vec<R>, Option<Vec<u8>>)>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let mut st = st.clone();
        st.set_page_size(limit.clamp(1, 5000) as i32);
        let paging = match cursor {
            Some(bytes) => PagingState::new_from_raw_bytes(bytes),
            None => PagingState::start(),
        };
        let (result, next) = self
            .session
            .execute_single_page(&st, values, paging)
            .await
            .map_err(unavailable)?;
        let rows = result.into_rows_result().map_err(corrupt)?;
        let mut out = Vec::new();
        for row in rows.rows::<R>().map_err(corrupt)? {
            out.push(row.map_err(corrupt)?);
        }
        let next = match next.into_paging_control_flow() {
            ControlFlow::Break(()) => None,
            ControlFlow::Continue(p) => p.as_bytes_slice().map(|b| b.to_vec()),
        };
        Ok((out, next))
    }

    /// Every row, page by page.
    async fn all_rows<R>(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow + Clone,
    ) -> Result<Vec<R>>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let mut out = Vec::new();
        let mut paging = PagingState::start();
        loop {
            let (result, next) = self
                .session
                .execute_single_page(st, values.clone(), paging)
                .await
                .map_err(unavailable)?;
            let rows = result.into_rows_result().map_err(corrupt)?;
            for row in rows.rows::<R>().map_err(corrupt)? {
                out.push(row.map_err(corrupt)?);
            }
            match next.into_paging_control_flow() {
                ControlFlow::Break(()) => return Ok(out),
                ControlFlow::Continue(p) => paging = p,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store on a fresh keyspace of the test Cassandra (`TERN_TEST_CASSANDRA`, default
    /// 127.0.0.1:9042). Fails loudly if Cassandra is not there: these tests are `#[ignore]`d in a
    /// plain `cargo test` and run by `scripts/test`, which starts Cassandra.
    pub(crate) async fn test_store() -> CassandraStore {
        test_store_with_objects(None).await
    }

    async fn test_store_with_objects(objects: Option<Arc<dyn BlobStore>>) -> CassandraStore {
        let contact =
            std::env::var("TERN_TEST_CASSANDRA").unwrap_or_else(|_| "127.0.0.1:9042".into());
        let keyspace = format!("t{}", Uuid::new_v4().simple());
        let options = CassandraOptions {
            contact_points: vec![contact],
            keyspace,
            ..Default::default()
        };
        CassandraStore::connect_with_blob_store(options, objects, Duration::from_secs(60))
            .await
            .expect("test Cassandra is reachable")
    }

    /// Drops its test's keyspace when the test ends, so that a run leaves nothing behind.
    struct DropKeyspace(CassandraOptions);

    impl Drop for DropKeyspace {
        fn drop(&mut self) {
            let options = self.0.clone();
            // The contract tests run on a multi-threaded runtime: block this worker on the
            // drop rather than leave it to a task nobody waits for.
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    if let Err(e) = drop_keyspace(&options).await {
                        eprintln!("could not drop test keyspace {}: {e}", options.keyspace);
                    }
                })
            });
        }
    }

    crate::store_contract_tests!(
        #[ignore = "needs Cassandra: run scripts/test"]
        {
            let store = test_store().await;
            let guard = DropKeyspace(store.inner.options.clone());
            (crate::contract::Backend::new(store), guard)
        }
    );

    /// The whole contract again with bodies over one chunk in the test S3 server.
    mod with_s3 {
        use super::*;
        use crate::blob_store::s3::{S3BlobStore, S3Options};

        crate::store_contract_tests!(
            #[ignore = "needs Cassandra and S3: run scripts/test"]
            {
                let s3 = S3BlobStore::new(S3Options::test_server()).expect("S3 options");
                let store = test_store_with_objects(Some(Arc::new(s3))).await;
                let guard = DropKeyspace(store.inner.options.clone());
                (crate::contract::Backend::new(store), guard)
            }
        );
    }

    /// Two nodes on one keyspace split the queue's shards, and one takes over what the other
    /// releases (the expiry of an unrenewed lease is proven end to end in e2e_outbound).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs Cassandra: run scripts/test"]
    async fn nodes_share_the_queue_shards_and_take_over_released_ones() {
        use crate::OutboundQueue;
        let a = test_store().await;
        let _guard = DropKeyspace(a.inner.options.clone());
        let b = CassandraStore::connect(a.inner.options.clone(), Duration::from_secs(60))
            .await
            .unwrap();
        let all: Vec<u32> = (0..QUEUE_SHARDS).collect();
        assert_eq!(
            a.hold_shards("a").await.unwrap(),
            all,
            "alone, a holds everything"
        );
        assert_eq!(
            b.hold_shards("b").await.unwrap(),
            Vec::<u32>::new(),
            "all taken"
        );
        let a_share = a.hold_shards("a").await.unwrap();
        assert_eq!(
            a_share.len(),
            QUEUE_SHARDS as usize / 2,
            "a gives half back"
        );
        let b_share = b.hold_shards("b").await.unwrap();
        assert_eq!(b_share.len(), QUEUE_SHARDS as usize / 2);
        assert!(
            a_share.iter().all(|s| !b_share.contains(s)),
            "{a_share:?} {b_share:?}"
        );
        // Renewals keep each node's shards.
        assert_eq!(a.hold_shards("a").await.unwrap(), a_share);
        a.release_shards("a").await.unwrap();
        assert_eq!(b.hold_shards("b").await.unwrap(), all, "b takes a's shards");
    }

    /// A keyspace made by an older Tern (schema 5: `messages` without `header`) gets the column
    /// when a newer node starts, and mail delivered before reads back unchanged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs Cassandra: run scripts/test"]
    async fn an_older_keyspace_gets_the_added_columns() {
        let fresh = test_store().await;
        let options = fresh.inner.options.clone();
        let _guard = DropKeyspace(options.clone());
        let ks = &options.keyspace;
        let c = fresh.conn().unwrap();
        let (mb, old) = (MailboxId::random(), IdGenerator::new().next_id());
        // Back to schema 5's table, with one message in it (its body inline, 5 octets).
        for cql in [
            format!("ALTER TABLE {ks}.messages DROP header"),
            format!("UPDATE {ks}.schema_version SET version = 5 WHERE component = 'tern'"),
            format!(
                "INSERT INTO {ks}.messages (message_id, mailbox_id, blob_id, size) VALUES ({}, {}, {}, 5)",
                old.uuid(), mb.0, old.uuid()
            ),
            format!(
                "INSERT INTO {ks}.blobs (blob_id, chunk, data, size, chunk_count) VALUES ({}, 0, 0x68656c6c6f, 5, 1)",
                old.uuid()
            ),
        ] {
            c.session.query_unpaged(cql, &[]).await.unwrap();
        }
        drop(fresh);
        let upgraded = CassandraStore::connect(options, Duration::from_secs(60))
            .await
            .expect("an older keyspace is upgraded");
        let mut body = upgraded
            .open_body(mb, old)
            .await
            .unwrap()
            .expect("old message");
        assert_eq!(
            body.next_chunk().await.unwrap().as_deref(),
            Some(&b"hello"[..])
        );
        let w = upgraded.begin_body().await.unwrap();
        let copy = MessageCopy::with_header(mb, b"Delivered-To: a@x.test\r\n".to_vec());
        let ids = upgraded
            .deliver_copies(w.finish().await.unwrap(), &[copy])
            .await
            .expect("the new column is written");
        let view = upgraded.pop3_view(mb).await.unwrap();
        assert_eq!(
            view.iter().find(|e| e.message_id == ids[0]).unwrap().size,
            24
        );
    }

    #[tokio::test]
    async fn unreachable_cluster_gives_unavailable_errors_not_hangs() {
        let options = CassandraOptions {
            contact_points: vec!["127.0.0.1:1".into()],
            connect_timeout: Duration::from_millis(200),
            ..Default::default()
        };
        let store = CassandraStore::start(options).unwrap();
        let err = store.domain_exists("x.test").await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
        assert!(err.is_temporary());
        assert!(store.begin_body().await.is_err());
    }

    #[tokio::test]
    async fn a_bad_ca_file_fails_at_start_instead_of_retrying() {
        let options = CassandraOptions {
            tls_ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let Err(err) = CassandraStore::start(options) else {
            panic!("started with an unreadable CA file");
        };
        assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
        assert!(!err.is_temporary());
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        assert!(
            std::error::Error::source(&err).is_some(),
            "the I/O error is kept"
        );
    }
}
