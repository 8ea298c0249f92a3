//! Prometheus metrics, served at `GET /metrics` on the admin listener (as James serves its own)
//! in the OpenMetrics text format, with `prometheus-client`.
//!
//! Counters and histograms live in one process-wide set, reached from wherever the event
//! happens (the way the `metrics` crate's global recorder works): threading a handle through
//! every context would touch every signature for no gain. What is a state rather than an event
//! (the queue's depth and age, tasks by status) is read when scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    /// `smtp`, `submission`, `submissions`, `lmtp`, `pop3` or `pop3s`.
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    pub protocol: &'static str,
    /// `success`, `failure` (bad credentials), `throttled` or `error` (could not be checked).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplyLabels {
    /// `2xx`, `3xx`, `4xx` or `5xx`.
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    /// `stored` (local copies), `queued` (for other domains), or why it was refused:
    /// `quota`, `loop`, `dmarc`, `failed` (a storage failure: the client retries).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub operation: &'static str,
    /// `embedded` or `cassandra`.
    pub backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RemoteLabels {
    /// Per recipient: `delivered`, `deferred` (retried later) or `bounced`.
    pub outcome: &'static str,
}

const MESSAGE_OUTCOMES: [&str; 6] = ["stored", "queued", "quota", "loop", "dmarc", "failed"];
const STORE_OPERATIONS: [&str; 6] = [
    "deliver",
    "enqueue",
    "get_user",
    "pop3_listing",
    "open_body",
    "delete_messages",
];
const BACKENDS: [&str; 2] = ["embedded", "cassandra"];

/// Handles on the metrics of fixed label sets (see [`Metrics::handles`]).
struct Handles {
    replies: [Counter; 4],
    messages: [Counter; 6],
    store: [[(Histogram, Counter); 2]; 6],
}

/// Every event metric of the process.
pub struct Metrics {
    handles: OnceLock<Handles>,
    registry: Registry,
    pub connections: Family<ProtocolLabels, Counter>,
    pub sessions: Family<ProtocolLabels, Gauge>,
    pub logins: Family<LoginLabels, Counter>,
    pub smtp_replies: Family<ReplyLabels, Counter>,
    pub messages: Family<MessageLabels, Counter>,
    pub message_bytes: Counter,
    pub store_seconds: Family<StoreLabels, Histogram>,
    pub store_errors: Family<StoreLabels, Counter>,
    pub remote_deliveries: Family<RemoteLabels, Counter>,
}

fn store_histogram() -> Histogram {
    // 100 µs to ~3.3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Metrics {
    fn new() -> Self {
        let m = Self {
            handles: OnceLock::new(),
            registry: Registry::with_prefix("tern"),
            connections: Family::default(),
            sessions: Family::default(),
            logins: Family::default(),
            smtp_replies: Family::default(),
            messages: Family::default(),
            message_bytes: Counter::default(),
            store_seconds: Family::new_with_constructor(store_histogram),
            store_errors: Family::default(),
            remote_deliveries: Family::default(),
        };
        let mut registry = Registry::with_prefix("tern");
        let r = &mut registry;
        r.register(
            "connections",
            "Connections accepted, by protocol",
            m.connections.clone(),
        );
        r.register(
            "sessions",
            "Sessions open now, by protocol",
            m.sessions.clone(),
        );
        r.register(
            "logins",
            "POP3 and SMTP AUTH logins, by outcome",
            m.logins.clone(),
        );
        r.register(
            "smtp_replies",
            "SMTP and LMTP replies sent, by code class",
            m.smtp_replies.clone(),
        );
        r.register(
            "messages",
            "Messages received over SMTP and LMTP, by what became of them",
            m.messages.clone(),
        );
        r.register(
            "message_bytes",
            "Octets of the messages stored or queued",
            m.message_bytes.clone(),
        );
        r.register(
            "store_operation_seconds",
            "Latency of the store operations of the mail path, by operation and backend",
            m.store_seconds.clone(),
        );
        r.register(
            "store_errors",
            "Store operations that failed (Cassandra unavailable, timeouts...)",
            m.store_errors.clone(),
        );
        r.register(
            "remote_deliveries",
            "Recipients of outbound attempts, by outcome",
            m.remote_deliveries.clone(),
        );
        Self { registry, ..m }
    }

    pub fn login(&self, protocol: &'static str, outcome: &'static str) {
        self.logins
            .get_or_create(&LoginLabels { protocol, outcome })
            .inc();
    }

    pub fn message(&self, outcome: &'static str) {
        match MESSAGE_OUTCOMES.iter().position(|o| *o == outcome) {
            Some(i) => self.handles().messages[i].inc(),
            None => self
                .messages
                .get_or_create(&MessageLabels { outcome })
                .inc(),
        };
    }

    /// Counts SMTP replies by class, from counts indexed by the code's first digit.
    pub fn smtp_replies(&self, by_first_digit: &[u64; 6]) {
        let counters = &self.handles().replies;
        for (counter, n) in counters.iter().zip(&by_first_digit[2..]) {
            if *n > 0 {
                counter.inc_by(*n);
            }
        }
    }

    /// Runs a store operation of `backend`, recording its latency and whether it failed.
    pub async fn store<T, E>(
        &self,
        operation: &'static str,
        backend: &'static str,
        op: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let start = Instant::now();
        let result = op.await;
        let elapsed = start.elapsed().as_secs_f64();
        let known = STORE_OPERATIONS
            .iter()
            .position(|o| *o == operation)
            .zip(BACKENDS.iter().position(|b| *b == backend));
        match known {
            Some((o, b)) => {
                let (seconds, errors) = &self.handles().store[o][b];
                seconds.observe(elapsed);
                if result.is_err() {
                    errors.inc();
                }
            }
            None => {
                let labels = StoreLabels { operation, backend };
                self.store_seconds.get_or_create(&labels).observe(elapsed);
                if result.is_err() {
                    self.store_errors.get_or_create(&labels).inc();
                }
            }
        }
        result
    }

    /// The metrics of the fixed label sets, looked up once: the hot paths then touch atomics
    /// only, no label hashing or family lock.
    fn handles(&self) -> &Handles {
        self.handles.get_or_init(|| Handles {
            replies: ["2xx", "3xx", "4xx", "5xx"].map(|class| {
                self.smtp_replies
                    .get_or_create(&ReplyLabels { class })
                    .clone()
            }),
            messages: MESSAGE_OUTCOMES.map(|outcome| {
                self.messages
                    .get_or_create(&MessageLabels { outcome })
                    .clone()
            }),
            store: STORE_OPERATIONS.map(|operation| {
                BACKENDS.map(|backend| {
                    let labels = StoreLabels { operation, backend };
                    (
                        self.store_seconds.get_or_create(&labels).clone(),
                        self.store_errors.get_or_create(&labels).clone(),
                    )
                })
            }),
        })
    }

    /// The event metrics in the text format, without the final `# EOF`.
    pub fn encode_events(&self, out: &mut String) -> std::fmt::Result {
        prometheus_client::encoding::text::encode_registry(out, &self.registry)
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Counts an open session for as long as it lives.
pub struct OpenSession(&'static str);

impl OpenSession {
    pub fn start(protocol: &'static str) -> Self {
        let m = metrics();
        let labels = ProtocolLabels { protocol };
        m.connections.get_or_create(&labels).inc();
        m.sessions.get_or_create(&labels).inc();
        Self(protocol)
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        metrics()
            .sessions
            .get_or_create(&ProtocolLabels { protocol: self.0 })
            .dec();
    }
}

/// What is read at scrape time: the outbound queue and the tasks.
pub struct StateGauges {
    pub queue_depth: u64,
    /// Age of the oldest queued message, in seconds (0 when the queue is empty).
    pub queue_oldest_seconds: f64,
    /// Tasks by status.
    pub tasks: Vec<(String, u64)>,
}

impl StateGauges {
    pub fn encode(&self, out: &mut String) -> std::fmt::Result {
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct StatusLabels {
            status: String,
        }
        let mut registry = Registry::with_prefix("tern");
        let depth: Gauge = Gauge::default();
        depth.set(self.queue_depth as i64);
        registry.register(
            "queue_messages",
            "Messages in the outbound queue (this datacenter's on Cassandra)",
            depth,
        );
        let oldest: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
        oldest.set(self.queue_oldest_seconds);
        registry.register(
            "queue_oldest_message_seconds",
            "Age of the oldest message in the outbound queue",
            oldest,
        );
        let tasks: Family<StatusLabels, Gauge> = Family::default();
        for (status, n) in &self.tasks {
            tasks
                .get_or_create(&StatusLabels {
                    status: status.clone(),
                })
                .set(*n as i64);
        }
        registry.register("tasks", "Tasks known to the store, by status", tasks);
        prometheus_client::encoding::text::encode_registry(out, &registry)
    }
}

/// The whole exposition: event metrics, then state gauges, then `# EOF`.
pub fn exposition(state: &StateGauges) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    metrics().encode_events(&mut out)?;
    state.encode(&mut out)?;
    prometheus_client::encoding::text::encode_eof(&mut out)?;
    Ok(out)
}
