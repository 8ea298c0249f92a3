//! Wiring: opens the store, binds the listeners, runs the accept loops and the admin API, and
//! stops gracefully.

use crate::admin::{self, AdminState};
use crate::auth::Authenticator;
use crate::config::{Config, StoreBackend};
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tern_store::cassandra::CassandraStore;
use tern_store::embedded::{EmbeddedOptions, EmbeddedStore};
use tern_store::{Directory, MailStore};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

/// What every connection handler needs.
pub struct Services {
    pub config: Config,
    pub directory: Arc<dyn Directory>,
    pub mail: Arc<dyn MailStore>,
    pub auth: Arc<Authenticator>,
}

/// A running server.
pub struct Server {
    pub smtp_addr: SocketAddr,
    pub pop3_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    /// Every connection task holds a clone; when all are gone, the receiver sees `None`.
    connections_done: mpsc::Receiver<()>,
    connection_token: mpsc::Sender<()>,
    admin_task: tokio::task::JoinHandle<()>,
    grace: Duration,
}

#[derive(Clone, Copy, Debug)]
enum Protocol {
    Smtp,
    Pop3,
}

pub fn open_stores(config: &Config) -> anyhow::Result<(Arc<dyn Directory>, Arc<dyn MailStore>)> {
    match config.store.backend {
        StoreBackend::Embedded => {
            let store = EmbeddedStore::open(
                &config.server.data_dir,
                EmbeddedOptions {
                    inline_max: config.store.inline_max_bytes,
                    cache_bytes: config.store.cache_mib * 1024 * 1024,
                },
            )
            .with_context(|| {
                format!(
                    "opening the embedded store in {}",
                    config.server.data_dir.display()
                )
            })?;
            Ok((Arc::new(store.clone()), Arc::new(store)))
        }
        StoreBackend::Cassandra => {
            // Connects in the background: the listeners start at once and answer with
            // temporary errors until the cluster is reachable.
            let store = CassandraStore::start(config.cassandra.options())?;
            Ok((Arc::new(store.clone()), Arc::new(store)))
        }
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

impl Server {
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        raise_file_limit(config.server.max_connections);
        let (directory, mail) = open_stores(&config)?;
        let auth = Arc::new(Authenticator::new(directory.clone(), &config.auth)?);
        let smtp = bind(config.smtp.listen, "SMTP").await?;
        let pop3 = bind(config.pop3.listen, "POP3").await?;
        let admin_listener = bind(config.admin.listen, "the admin API").await?;
        let (smtp_addr, pop3_addr, admin_addr) = (
            smtp.local_addr()?,
            pop3.local_addr()?,
            admin_listener.local_addr()?,
        );
        if !config.admin.listen.ip().is_loopback() {
            tracing::warn!(addr = %admin_addr, "the admin API has no authentication and listens beyond loopback");
        }
        let grace = Duration::from_secs(config.server.shutdown_grace_secs);
        let limiter = Arc::new(Semaphore::new(config.server.max_connections));
        let services = Arc::new(Services {
            config,
            directory: directory.clone(),
            mail: mail.clone(),
            auth: auth.clone(),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (connection_token, connections_done) = mpsc::channel(1);

        for (listener, protocol) in [(smtp, Protocol::Smtp), (pop3, Protocol::Pop3)] {
            tokio::spawn(accept_loop(
                listener,
                protocol,
                services.clone(),
                shutdown_rx.clone(),
                connection_token.clone(),
                limiter.clone(),
            ));
        }
        let router = admin::router(Arc::new(AdminState {
            directory,
            mail,
            auth,
        }));
        let mut admin_shutdown = shutdown_rx.clone();
        let admin_task = tokio::spawn(async move {
            let stop = async move {
                let _ = admin_shutdown.changed().await;
            };
            if let Err(e) = axum::serve(admin_listener, router)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(error = %e, "admin API stopped");
            }
        });
        tracing::info!(addr = %smtp_addr, "SMTP listening");
        tracing::info!(addr = %pop3_addr, "POP3 listening");
        tracing::info!(addr = %admin_addr, "admin API listening");
        Ok(Server {
            smtp_addr,
            pop3_addr,
            admin_addr,
            shutdown,
            connections_done,
            connection_token,
            admin_task,
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

async fn accept_loop(
    listener: TcpListener,
    protocol: Protocol,
    services: Arc<Services>,
    mut shutdown: watch::Receiver<bool>,
    token: mpsc::Sender<()>,
    limiter: Arc<Semaphore>,
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
                tracing::warn!(error = %e, ?protocol, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = limiter.clone().try_acquire_owned() else {
            tokio::spawn(refuse_busy(stream, protocol));
            continue;
        };
        let (svc, rx, token) = (services.clone(), shutdown.clone(), token.clone());
        tokio::spawn(async move {
            match protocol {
                Protocol::Smtp => crate::smtp::serve_connection(stream, peer, svc, rx).await,
                Protocol::Pop3 => crate::pop3::serve_connection(stream, peer, svc, rx).await,
            }
            drop(permit);
            drop(token);
        });
    }
}

async fn refuse_busy(mut stream: TcpStream, protocol: Protocol) {
    let msg: &[u8] = match protocol {
        Protocol::Smtp => b"421 4.3.2 Too many connections, try again later\r\n",
        Protocol::Pop3 => b"-ERR [SYS/TEMP] too many connections, try again later\r\n",
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(msg)).await;
}
