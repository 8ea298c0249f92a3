//! Wiring: opens the store, binds the listeners, runs the accept loops and the admin API, and
//! stops gracefully.

use crate::admin::{self, AdminState};
use crate::auth::Authenticator;
use crate::config::Pop3ListingMode;
use crate::config::{BodiesLocation, Config, StoreBackend};
use crate::listing::{MessageIdListing, Pop3Listing, UidListing};
use crate::pop3::Pop3Context;
use crate::smtp::{SmtpContext, SmtpRole};
use crate::tasks::TaskManager;
use crate::throttle::LoginThrottle;
use crate::tls::CertStore;
use anyhow::Context;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tern_store::blob_store::s3::S3BlobStore;
use tern_store::blob_store::BlobStore;
use tern_store::cassandra::CassandraStore;
use tern_store::embedded::{EmbeddedOptions, EmbeddedStore};
use tern_store::{Directory, MailStore, Store};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

/// What a listener serves, with the narrow context of its protocol.
#[derive(Clone)]
enum Listener {
    Smtp(Arc<SmtpContext>, SmtpRole),
    Pop3(Arc<Pop3Context>),
    /// POP3 with TLS from the first byte (the port-995 role).
    Pop3Tls(Arc<Pop3Context>),
}

impl Listener {
    fn name(&self) -> &'static str {
        match self {
            Listener::Smtp(_, SmtpRole::Inbound) => "SMTP",
            Listener::Smtp(_, SmtpRole::Submission) => "submission",
            Listener::Smtp(_, SmtpRole::Submissions) => "submission over TLS",
            Listener::Smtp(_, SmtpRole::Lmtp) => "LMTP",
            Listener::Pop3(_) => "POP3",
            Listener::Pop3Tls(_) => "POP3 over TLS",
        }
    }

    /// James's names for the channel list: protocol, endpoint, and whether TLS starts at once.
    fn channel_names(&self) -> (&'static str, &'static str, bool) {
        match self {
            Listener::Smtp(_, SmtpRole::Inbound) => ("SMTP", "smtpserver", false),
            Listener::Smtp(_, SmtpRole::Submission) => ("SMTP", "submissionserver", false),
            Listener::Smtp(_, SmtpRole::Submissions) => ("SMTP", "submissionsserver", true),
            Listener::Smtp(_, SmtpRole::Lmtp) => ("LMTP", "lmtpserver", false),
            Listener::Pop3(_) => ("POP3", "pop3server", false),
            Listener::Pop3Tls(_) => ("POP3", "pop3sserver", true),
        }
    }

    /// The `protocol` label of the metrics.
    fn label(&self) -> &'static str {
        match self {
            Listener::Smtp(_, SmtpRole::Inbound) => "smtp",
            Listener::Smtp(_, SmtpRole::Submission) => "submission",
            Listener::Smtp(_, SmtpRole::Submissions) => "submissions",
            Listener::Smtp(_, SmtpRole::Lmtp) => "lmtp",
            Listener::Pop3(_) => "pop3",
            Listener::Pop3Tls(_) => "pop3s",
        }
    }
}

/// A running server.
pub struct Server {
    pub smtp_addr: SocketAddr,
    pub pop3_addr: SocketAddr,
    /// The implicit-TLS POP3 listener, when configured.
    pub pop3_tls_addr: Option<SocketAddr>,
    /// The submission listeners (STARTTLS, and implicit TLS), when configured.
    pub submission_addr: Option<SocketAddr>,
    pub submissions_addr: Option<SocketAddr>,
    /// The LMTP listener, when configured.
    pub lmtp_addr: Option<SocketAddr>,
    /// The store, for tools and tests that work on it directly.
    pub store: Arc<dyn Store>,
    pub admin_addr: SocketAddr,
    /// The autoconfig HTTP listener, when configured.
    pub autoconfig_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    /// Every connection task holds a clone; when all are gone, the receiver sees `None`.
    connections_done: mpsc::Receiver<()>,
    connection_token: mpsc::Sender<()>,
    admin_task: tokio::task::JoinHandle<()>,
    /// Remote delivery (the queue runner).
    pub outbound: Arc<crate::outbound::Outbound>,
    outbound_task: tokio::task::JoinHandle<()>,
    grace: Duration,
}

/// The store of the configured backend; callers take the narrow traits they need from it.
pub fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let blobs = open_blob_store(config)?;
    match config.store.backend {
        StoreBackend::Embedded => {
            let store = EmbeddedStore::open_with_blob_store(
                &config.server.data_dir,
                EmbeddedOptions {
                    inline_max: config.store.inline_max_bytes,
                    cache_bytes: config.store.cache_mib * 1024 * 1024,
                },
                blobs,
            )
            .with_context(|| {
                format!(
                    "opening the embedded store in {}",
                    config.server.data_dir.display()
                )
            })?;
            Ok(Arc::new(store))
        }
        StoreBackend::Cassandra => {
            // Connects in the background: the listeners start at once and answer with
            // temporary errors until the cluster is reachable.
            let store = CassandraStore::start_with_blob_store(config.cassandra.options(), blobs)?;
            Ok(Arc::new(store))
        }
    }
}

/// The object store for large bodies, when `bodies.location` names one. Like Cassandra, a
/// bucket that does not answer yet does not stop the start: one request, in the background,
/// says in the log whether it answers (bodies that need it meanwhile get temporary errors).
fn open_blob_store(config: &Config) -> anyhow::Result<Option<Arc<dyn BlobStore>>> {
    match config.bodies.location {
        BodiesLocation::Store => Ok(None),
        BodiesLocation::S3 => {
            let s3 = S3BlobStore::new(config.bodies.s3.options())
                .context("config section [bodies.s3]")?;
            let probe = s3.clone();
            tokio::spawn(async move {
                match probe.check().await {
                    Ok(()) => tracing::info!(bodies = %probe.describe(), "object store answers"),
                    Err(e) => tracing::error!(
                        bodies = %probe.describe(),
                        error = %e,
                        "object store does not answer: large bodies cannot be stored or read"
                    ),
                }
            });
            Ok(Some(Arc::new(s3)))
        }
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

/// Every check `serve` makes before it opens a socket or a store: the configuration's values,
/// and the files it names (certificates, keys, CA bundles). Returns every problem found, so
/// that `tern check-config` can list them all.
pub fn preflight(config: &Config) -> Vec<String> {
    let mut problems: Vec<String> = config.problems().iter().map(|e| e.to_string()).collect();
    if let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) {
        if let Err(e) = CertStore::load(cert, key) {
            problems.push(format!("config key tls.cert_file / tls.key_file: {e:#}"));
        }
    }
    if let Some(ca) = &config.outbound.relayhost_ca_file {
        if let Err(e) = crate::tls::verifying_connector(ca) {
            problems.push(format!("config key outbound.relayhost_ca_file: {e:#}"));
        }
    }
    if let Err(e) = crate::outbound::dkim::DkimKeys::check(&config.outbound.dkim) {
        problems.push(format!("config key outbound.dkim.private_key_file: {e:#}"));
    }
    if config.store.backend == StoreBackend::Cassandra {
        if let Err(e) = tern_store::cassandra::check_tls_files(&config.cassandra.options()) {
            problems.push(format!("config key cassandra.tls_ca_file: {e}"));
        }
    }
    if config.store.backend == StoreBackend::Embedded {
        let dir = &config.server.data_dir;
        if dir.exists() && !dir.is_dir() {
            problems.push(format!(
                "config key server.data_dir: {} exists and is not a directory",
                dir.display()
            ));
        }
    }
    problems
}

impl Server {
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        let problems = preflight(&config);
        if !problems.is_empty() {
            anyhow::bail!("{}", problems.join("\n"));
        }
        raise_file_limit(config.server.max_connections);
        let store = open_store(&config)?;
        let mail: Arc<dyn MailStore> = store.clone();
        let directory: Arc<dyn Directory> = store.clone();
        let directory_for_autoconfig = directory.clone();
        let listing: Arc<dyn Pop3Listing> = match config.pop3.listing {
            Pop3ListingMode::MessageId => Arc::new(MessageIdListing(mail.clone())),
            Pop3ListingMode::Uid => Arc::new(UidListing {
                mail: mail.clone(),
                uids: store.clone(),
            }),
        };
        let task_manager = TaskManager::new(store.clone(), config.server.hostname.clone());
        let auth = Arc::new(Authenticator::new(directory.clone(), &config.auth)?);
        let smtp = bind(config.smtp.listen, "SMTP").await?;
        let pop3 = bind(config.pop3.listen, "POP3").await?;
        let admin_listener = bind(config.admin.listen, "the admin API").await?;
        let autoconfig_listener = match config.autoconfig.listen {
            Some(addr) => Some(bind(addr, "autoconfig").await?),
            None => None,
        };
        let certs = match (&config.tls.cert_file, &config.tls.key_file) {
            (Some(cert), Some(key)) => Some(CertStore::load(cert, key)?),
            _ => None,
        };
        let tls = certs
            .clone()
            .map(|c| crate::tls::acceptor(c, &config.tls))
            .transpose()?;
        let pop3_tls = match config.pop3.tls_listen {
            Some(addr) => Some(bind(addr, "POP3 over TLS").await?),
            None => None,
        };
        let pop3_tls_addr = pop3_tls.as_ref().map(|l| l.local_addr()).transpose()?;
        let submission = match config.smtp.submission_listen {
            Some(addr) => Some(bind(addr, "submission").await?),
            None => None,
        };
        let submissions = match config.smtp.submissions_listen {
            Some(addr) => Some(bind(addr, "submission over TLS").await?),
            None => None,
        };
        let lmtp = match config.lmtp.listen {
            Some(addr) => Some(bind(addr, "LMTP").await?),
            None => None,
        };
        let lmtp_addr = lmtp.as_ref().map(|l| l.local_addr()).transpose()?;
        let submission_addr = submission.as_ref().map(|l| l.local_addr()).transpose()?;
        let submissions_addr = submissions.as_ref().map(|l| l.local_addr()).transpose()?;
        let (smtp_addr, pop3_addr, admin_addr) = (
            smtp.local_addr()?,
            pop3.local_addr()?,
            admin_listener.local_addr()?,
        );
        if !config.admin.listen.ip().is_loopback() && config.admin.token.is_none() {
            tracing::warn!(addr = %admin_addr, "the admin API listens beyond loopback without admin.token: anyone who reaches it can manage users");
        }
        let grace = Duration::from_secs(config.server.shutdown_grace_secs);
        let limits = Arc::new(ConnectionLimits {
            total: Arc::new(Semaphore::new(config.server.max_connections)),
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip: config.server.max_connections_per_ip,
        });
        let throttle = Arc::new(LoginThrottle::new(&config.auth));
        let proxies =
            crate::proxy::TrustedProxies::new(config.server.proxy_trusted_networks.clone());
        let smtp_context = Arc::new(SmtpContext {
            settings: config.smtp.clone(),
            hostname: config.server.hostname.clone(),
            directory: directory.clone(),
            mail: mail.clone(),
            listing: listing.clone(),
            tls: tls.clone(),
            auth: auth.clone(),
            throttle: throttle.clone(),
            queue: store.clone(),
            dkim: crate::outbound::dkim::DkimKeys::load(&config.outbound.dkim)?,
            rewrites: store.clone(),
            quotas: store.clone(),
            srs: config.outbound.srs_secret.as_deref().map(|secret| {
                let domain = config
                    .outbound
                    .srs_domain
                    .clone()
                    .unwrap_or_else(|| config.server.hostname.clone());
                crate::srs::Srs::new(secret, &domain)
            }),
            repositories: store.clone(),
            inbound_auth: crate::smtp::inbound_auth::InboundAuth::new(
                &config.inbound_auth,
                &config.outbound,
                &config.server.hostname,
            )?,
        });
        let pop3_context = Arc::new(Pop3Context {
            settings: config.pop3.clone(),
            hostname: config.server.hostname.clone(),
            mail: mail.clone(),
            repair: store.clone(),
            auth: auth.clone(),
            throttle,
            listing,
            tls,
        });
        let channels = Arc::new(crate::channels::Channels::default());
        let accepting = Arc::new(Accepting {
            limits,
            proxies,
            channels: channels.clone(),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let outbound = crate::outbound::Outbound::new(
            store.clone(),
            mail.clone(),
            directory.clone(),
            pop3_context.listing.clone(),
            store.clone(),
            config.outbound.clone(),
            config.server.hostname.clone(),
        )?;
        let outbound_task = tokio::spawn(outbound.clone().run(shutdown_rx.clone()));
        let certs_for_admin = certs.clone();
        if config.pop3.expires_anything() {
            tokio::spawn(crate::tasks::expire::daily(
                task_manager.clone(),
                directory.clone(),
                mail.clone(),
                config.pop3.clone(),
                shutdown_rx.clone(),
            ));
        }
        if let Some(certs) = certs {
            tokio::spawn(reload_on_sighup(certs, shutdown_rx.clone()));
        }
        let (connection_token, connections_done) = mpsc::channel(1);

        let mut listeners = vec![
            (
                smtp,
                Listener::Smtp(smtp_context.clone(), SmtpRole::Inbound),
            ),
            (pop3, Listener::Pop3(pop3_context.clone())),
        ];
        if let Some(l) = pop3_tls {
            listeners.push((l, Listener::Pop3Tls(pop3_context)));
        }
        if let Some(l) = submission {
            listeners.push((
                l,
                Listener::Smtp(smtp_context.clone(), SmtpRole::Submission),
            ));
        }
        if let Some(l) = lmtp {
            listeners.push((l, Listener::Smtp(smtp_context.clone(), SmtpRole::Lmtp)));
        }
        if let Some(l) = submissions {
            listeners.push((
                l,
                Listener::Smtp(smtp_context.clone(), SmtpRole::Submissions),
            ));
        }
        // The listeners the certificate serves (the `port` of `POST /servers?reload-certificate`).
        let tls_ports: Vec<u16> = match certs_for_admin {
            Some(_) => listeners
                .iter()
                .filter_map(|(l, _)| l.local_addr().ok())
                .map(|a| a.port())
                .collect(),
            None => Vec::new(),
        };
        for (listener, serves) in listeners {
            tokio::spawn(accept_loop(
                listener,
                serves,
                accepting.clone(),
                shutdown_rx.clone(),
                connection_token.clone(),
            ));
        }
        let admin_config = &config.admin;
        let router = admin::router(Arc::new(AdminState {
            directory,
            mail,
            repair: store.clone(),
            collection: store.clone(),
            auth,
            tasks: task_manager,
            token: admin_config.token.clone(),
            store_component: match config.store.backend {
                StoreBackend::Embedded => "Embedded backend",
                StoreBackend::Cassandra => "Cassandra backend",
            },
            max_password_bytes: admin_config.max_password_bytes,
            outbound: outbound.clone(),
            rewrites: store.clone(),
            quotas: store.clone(),
            repositories: store.clone(),
            smtp: smtp_context.clone(),
            channels,
            certs: certs_for_admin,
            tls_ports,
        }));
        let limits = admin::listener::AdminLimits {
            header_timeout: Duration::from_secs(admin_config.header_timeout_secs),
            request_timeout: Duration::from_secs(admin_config.request_timeout_secs),
            max_connections: admin_config.max_connections,
        };
        let admin_task = tokio::spawn(admin::listener::serve(
            admin_listener,
            router,
            limits,
            shutdown_rx.clone(),
        ));
        let autoconfig_addr = autoconfig_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;
        if let Some(listener) = autoconfig_listener {
            let bound = crate::autoconfig::Listeners {
                pop3: pop3_addr.port(),
                pop3s: pop3_tls_addr.map(|a| a.port()),
                submission: submission_addr.map(|a| a.port()),
                submissions: submissions_addr.map(|a| a.port()),
            };
            let autoconfig = Arc::new(crate::autoconfig::Autoconfig::new(
                &config,
                &bound,
                directory_for_autoconfig,
            ));
            tracing::info!(addr = ?autoconfig_addr, "autoconfig listening");
            // A public listener: short deadlines and few connections at once.
            let limits = admin::listener::AdminLimits {
                header_timeout: Duration::from_secs(10),
                request_timeout: Duration::from_secs(10),
                max_connections: 64,
            };
            tokio::spawn(admin::listener::serve(
                listener,
                autoconfig.router(),
                limits,
                shutdown_rx.clone(),
            ));
        }
        tracing::info!(addr = %smtp_addr, "SMTP listening");
        tracing::info!(addr = %pop3_addr, "POP3 listening");
        if let Some(addr) = pop3_tls_addr {
            tracing::info!(%addr, "POP3 over TLS listening");
        }
        if let Some(addr) = submission_addr {
            tracing::info!(%addr, "submission listening");
        }
        if let Some(addr) = submissions_addr {
            tracing::info!(%addr, "submission over TLS listening");
        }
        if let Some(addr) = lmtp_addr {
            tracing::info!(%addr, "LMTP listening");
        }
        tracing::info!(addr = %admin_addr, "admin API listening");
        Ok(Server {
            smtp_addr,
            pop3_addr,
            pop3_tls_addr,
            submission_addr,
            submissions_addr,
            lmtp_addr,
            store,
            admin_addr,
            autoconfig_addr,
            shutdown,
            connections_done,
            connection_token,
            admin_task,
            outbound,
            outbound_task,
            grace,
        })
    }

    /// Runs until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        tracing::info!("shutting down: no new connections, finishing transactions in flight");
        self.shutdown().await;
    }

    /// Stops accepting, tells idle sessions to go (SMTP 421, POP3 -ERR; pending POP3 deletions
    /// are not applied), lets messages being received finish, and waits up to the grace period.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        drop(self.connection_token);
        if tokio::time::timeout(self.grace, self.connections_done.recv())
            .await
            .is_err()
        {
            tracing::warn!("grace period over with connections still open");
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.admin_task).await;
        // Deliveries in progress finish (bounded by the runner) and the queue shards are
        // released for the other nodes.
        let _ = tokio::time::timeout(Duration::from_secs(35), self.outbound_task).await;
        tracing::info!("stopped");
    }
}

/// Every connection is a file descriptor: raise the soft limit towards the hard one so that
/// `max_connections` can be reached (store files and listeners need some more).
fn raise_file_limit(max_connections: usize) {
    let wanted = max_connections as u64 + 1024;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(got) if got < wanted => tracing::warn!(
            limit = got,
            wanted,
            "the open-file limit is below server.max_connections; raise the hard limit (ulimit -Hn)"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

/// Caps on connections: in total, and per client address (loopback is not capped per address:
/// local proxies, monitoring and benchmarks connect from there).
struct ConnectionLimits {
    total: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
}

/// Holds a connection's place in the limits until dropped.
struct ConnectionSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    limits: Arc<ConnectionLimits>,
    ip: Option<IpAddr>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        if let Ok(mut map) = self.limits.per_ip.lock() {
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

impl ConnectionLimits {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let permit = self.total.clone().try_acquire_owned().ok()?;
        if ip.is_loopback() {
            return Some(ConnectionSlot {
                _permit: permit,
                limits: self.clone(),
                ip: None,
            });
        }
        let mut map = self.per_ip.lock().ok()?;
        let n = map.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            _permit: permit,
            limits: self.clone(),
            ip: Some(ip),
        })
    }
}

/// What every accept loop shares.
struct Accepting {
    limits: Arc<ConnectionLimits>,
    /// Load balancers whose PROXY headers name the real client.
    proxies: crate::proxy::TrustedProxies,
    /// The open connections, for the admin's `/servers` routes.
    channels: Arc<crate::channels::Channels>,
}

async fn accept_loop(
    listener: TcpListener,
    serves: Listener,
    shared: Arc<Accepting>,
    mut shutdown: watch::Receiver<bool>,
    token: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, listener = serves.name(), "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (serves, shared, rx, token) = (
            serves.clone(),
            shared.clone(),
            shutdown.clone(),
            token.clone(),
        );
        tokio::spawn(async move {
            let mut stream = stream;
            // Behind a trusted load balancer, the client is the one its PROXY header names.
            let peer = if shared.proxies.trusts(peer) {
                match crate::proxy::read_header(&mut stream, peer).await {
                    Ok(client) => client,
                    Err(e) => {
                        tracing::warn!(%peer, listener = serves.name(), error = %e, "connection from a trusted proxy dropped");
                        return;
                    }
                }
            } else {
                peer
            };
            let Some(slot) = shared.limits.admit(peer.ip()) else {
                tracing::info!(%peer, listener = serves.name(), "connection refused: too many connections");
                refuse_busy(stream, &serves).await;
                return;
            };
            let _open = crate::metrics::OpenSession::start(serves.label());
            let (protocol, endpoint, encrypted) = serves.channel_names();
            let listed = shared.channels.open(protocol, endpoint, peer, encrypted);
            let channel = listed.channel.clone();
            match serves {
                Listener::Smtp(ctx, role) => {
                    crate::smtp::serve_connection(stream, peer, ctx, rx, role, channel).await
                }
                Listener::Pop3(ctx) => {
                    crate::pop3::serve_connection(stream, peer, ctx, rx, false, channel).await
                }
                Listener::Pop3Tls(ctx) => {
                    crate::pop3::serve_connection(stream, peer, ctx, rx, true, channel).await
                }
            }
            drop(listed);
            drop(slot);
            drop(token);
        });
    }
}

/// Reloads the certificate on each SIGHUP, until the server stops.
async fn reload_on_sighup(certs: Arc<CertStore>, mut shutdown: watch::Receiver<bool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        loop {
            tokio::select! {
                got = hup.recv() => if got.is_none() { return },
                _ = shutdown.changed() => return,
            }
            match certs.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate reload failed; keeping the previous one")
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (certs, shutdown);
}

async fn refuse_busy(mut stream: TcpStream, serves: &Listener) {
    let msg: &[u8] = match serves {
        // No TLS handshake for a refused implicit-TLS connection: just close it.
        Listener::Smtp(_, SmtpRole::Submissions) => return,
        Listener::Smtp(..) => b"421 4.3.2 Too many connections, try again later\r\n",
        Listener::Pop3(_) => b"-ERR [SYS/TEMP] too many connections, try again later\r\n",
        // No TLS handshake for a refused implicit-TLS connection: just close it.
        Listener::Pop3Tls(_) => return,
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(msg)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_cap_counts_and_releases_but_spares_loopback() {
        let limits = Arc::new(ConnectionLimits {
            total: Arc::new(Semaphore::new(100)),
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip: 2,
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = limits.admit(a).unwrap();
        let _second = limits.admit(a).unwrap();
        assert!(
            limits.admit(a).is_none(),
            "third connection from one address is refused"
        );
        assert!(limits.admit(b).is_some(), "other addresses are unaffected");
        drop(first);
        assert!(
            limits.admit(a).is_some(),
            "a closed connection frees its place"
        );
        let local: Vec<_> = (0..10)
            .map(|_| limits.admit("127.0.0.1".parse().unwrap()).unwrap())
            .collect();
        assert_eq!(local.len(), 10);
    }
}
