//! The connections this node serves now ("channels" in James's server routes): who is logged
//! in, from where, how much was read and written, and a way to end them. A kicked session ends
//! the way a stopping server ends it: POP3 says goodbye at once and applies no deletion; SMTP
//! after the message in progress.
//!
//! Per node: each Tern node knows its own connections only (the routes say so).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Every open connection of this node.
#[derive(Default)]
pub struct Channels {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Channel>>>,
}

/// One open connection.
pub struct Channel {
    id: u64,
    /// James's protocol name: `POP3`, `SMTP`, `LMTP`.
    pub protocol: &'static str,
    /// The listener: `pop3server`, `pop3sserver`, `smtpserver`, `submissionserver`...
    pub endpoint: &'static str,
    pub remote: SocketAddr,
    pub connected_ms: i64,
    encrypted: AtomicBool,
    user: Mutex<Option<String>>,
    requests: AtomicU64,
    read_bytes: AtomicU64,
    written_bytes: AtomicU64,
    kick: watch::Sender<bool>,
}

/// Keeps a channel listed while it lives.
pub struct OpenChannel {
    channels: Arc<Channels>,
    pub channel: Arc<Channel>,
}

impl Drop for OpenChannel {
    fn drop(&mut self) {
        if let Ok(mut open) = self.channels.open.lock() {
            open.remove(&self.channel.id);
        }
    }
}

impl Channels {
    /// Lists a new connection until the returned guard is dropped.
    pub fn open(
        self: &Arc<Self>,
        protocol: &'static str,
        endpoint: &'static str,
        remote: SocketAddr,
        encrypted: bool,
    ) -> OpenChannel {
        let (kick, _) = watch::channel(false);
        let channel = Arc::new(Channel {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            protocol,
            endpoint,
            remote,
            connected_ms: tern_store::now_ms(),
            encrypted: AtomicBool::new(encrypted),
            user: Mutex::new(None),
            requests: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
            kick,
        });
        if let Ok(mut open) = self.open.lock() {
            open.insert(channel.id, channel.clone());
        }
        OpenChannel {
            channels: self.clone(),
            channel,
        }
    }

    /// The open channels, oldest first.
    pub fn list(&self) -> Vec<Arc<Channel>> {
        let mut all: Vec<Arc<Channel>> = self
            .open
            .lock()
            .map(|open| open.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by_key(|c| c.id);
        all
    }

    /// Ends the channels of the users named (all channels when `users` is `None`); returns how
    /// many were told to end.
    pub fn kick(&self, users: Option<&[String]>) -> usize {
        let mut n = 0;
        for c in self.list() {
            let chosen = match users {
                None => true,
                Some(users) => c
                    .user()
                    .is_some_and(|u| users.iter().any(|x| x.eq_ignore_ascii_case(&u))),
            };
            if chosen {
                c.kick.send_replace(true);
                n += 1;
            }
        }
        n
    }
}

impl Channel {
    pub fn user(&self) -> Option<String> {
        self.user.lock().ok().and_then(|u| u.clone())
    }

    pub fn logged_in(&self, user: &str) {
        if let Ok(mut u) = self.user.lock() {
            *u = Some(user.to_string());
        }
    }

    pub fn encrypted(&self) -> bool {
        self.encrypted.load(Ordering::Relaxed)
    }

    pub fn tls_started(&self) {
        self.encrypted.store(true, Ordering::Relaxed);
    }

    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn read(&self, n: usize) {
        self.read_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn wrote(&self, n: usize) {
        self.written_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn bytes(&self) -> (u64, u64) {
        (
            self.read_bytes.load(Ordering::Relaxed),
            self.written_bytes.load(Ordering::Relaxed),
        )
    }

    /// Changes to true when an administrator ends the channel.
    pub fn kicked(&self) -> watch::Receiver<bool> {
        self.kick.subscribe()
    }
}
