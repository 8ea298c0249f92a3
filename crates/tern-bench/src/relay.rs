//! The relay workload: messages submitted to a relay (Tern, Postfix...) for a domain the relay
//! routes to a sink this generator runs, and the time until the sink has them all. The sink
//! accepts everything (PIPELINING, any number of messages per connection) and counts.

use super::deliver::{run_deliver, DeliverArgs};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct RelayArgs {
    /// The relay's SMTP listener.
    pub server: SocketAddr,
    /// Where the sink listens (the relay must route `domain` there).
    pub sink: SocketAddr,
    /// The recipient domain.
    pub domain: String,
    pub messages: u64,
    pub size: usize,
    pub concurrency: usize,
    pub reuse: bool,
    pub pipeline: bool,
    /// How long to wait for the sink to receive everything.
    pub timeout: Duration,
}

/// What the relay run measured.
#[derive(Debug, serde::Serialize)]
pub struct RelayReport {
    pub kind: &'static str,
    pub messages: u64,
    /// Accepted by the relay (250), per second of submission.
    pub accepted_per_sec: f64,
    /// Received by the sink, per second from the first submission to the last arrival.
    pub relayed_per_sec: f64,
    pub relayed: u64,
    pub seconds_to_last_arrival: f64,
    pub submit_errors: u64,
    pub sink_connections: u64,
}

impl RelayReport {
    pub fn print(&self) {
        println!(
            "relay: {} messages, accepted at {:.0}/s, all {} at the sink after {:.2}s = {:.0} relayed/s over {} sink connections; {} submission errors",
            self.messages,
            self.accepted_per_sec,
            self.relayed,
            self.seconds_to_last_arrival,
            self.relayed_per_sec,
            self.sink_connections,
            self.submit_errors
        );
        println!("{}", serde_json::to_string(self).unwrap_or_default());
    }
}

#[derive(Default)]
struct SinkCounters {
    messages: AtomicU64,
    connections: AtomicU64,
    last: Mutex<Option<Instant>>,
}

/// Serves SMTP on `listener`, accepting every message, until the process ends.
async fn sink(listener: TcpListener, counters: Arc<SinkCounters>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let counters = counters.clone();
        counters.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            let mut line = Vec::new();
            if w.write_all(b"220 sink ESMTP\r\n").await.is_err() {
                return;
            }
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let upper = line.to_ascii_uppercase();
                let reply: &[u8] = if upper.starts_with(b"EHLO") {
                    b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 100000000\r\n"
                } else if upper.starts_with(b"DATA") {
                    if w.write_all(b"354 go\r\n").await.is_err() {
                        return;
                    }
                    loop {
                        line.clear();
                        match r.read_until(b'\n', &mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if line == b".\r\n" {
                            break;
                        }
                    }
                    counters.messages.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut last) = counters.last.lock() {
                        *last = Some(Instant::now());
                    }
                    b"250 2.0.0 ok\r\n"
                } else if upper.starts_with(b"QUIT") {
                    let _ = w.write_all(b"221 bye\r\n").await;
                    return;
                } else {
                    b"250 2.0.0 ok\r\n"
                };
                if w.write_all(reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

pub async fn run_relay(args: RelayArgs) -> anyhow::Result<RelayReport> {
    let listener = TcpListener::bind(args.sink)
        .await
        .map_err(|e| anyhow::anyhow!("sink on {}: {e}", args.sink))?;
    let counters = Arc::new(SinkCounters::default());
    let sink_task = tokio::spawn(sink(listener, counters.clone()));
    let started = Instant::now();
    let submitted = run_deliver(DeliverArgs {
        server: args.server,
        lmtp: false,
        messages: args.messages,
        size: args.size,
        users: args.messages as usize,
        prefix: "r".into(),
        domain: args.domain.clone(),
        concurrency: args.concurrency,
        reuse: args.reuse,
        pipeline: args.pipeline,
        timeout: Duration::from_secs(60),
    })
    .await;
    let accepted = submitted.operations;
    let deadline = Instant::now() + args.timeout;
    while counters.messages.load(Ordering::Relaxed) < accepted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sink_task.abort();
    let relayed = counters.messages.load(Ordering::Relaxed);
    let last = counters
        .last
        .lock()
        .ok()
        .and_then(|l| *l)
        .unwrap_or_else(Instant::now);
    let to_last = last
        .saturating_duration_since(started)
        .as_secs_f64()
        .max(1e-9);
    Ok(RelayReport {
        kind: "relay",
        messages: args.messages,
        accepted_per_sec: submitted.messages_per_sec,
        relayed_per_sec: relayed as f64 / to_last,
        relayed,
        seconds_to_last_arrival: to_last,
        submit_errors: submitted.errors,
        sink_connections: counters.connections.load(Ordering::Relaxed),
    })
}
