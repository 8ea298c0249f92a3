use serde::Serialize;
use std::time::Duration;

/// What one benchmark run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub kind: String,
    pub concurrency: usize,
    pub operations: u64,
    pub errors: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    /// Messages moved (delivered or retrieved) per second.
    pub messages_per_sec: f64,
    pub mb_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// CPU time of this load generator per operation, in microseconds.
    pub client_cpu_us_per_op: f64,
    pub first_error: Option<String>,
}

pub struct Collected {
    pub latencies_us: Vec<u64>,
    pub errors: u64,
    pub messages: u64,
    pub bytes: u64,
    pub first_error: Option<String>,
}

impl Collected {
    pub fn new() -> Self {
        Self {
            latencies_us: Vec::new(),
            errors: 0,
            messages: 0,
            bytes: 0,
            first_error: None,
        }
    }

    pub fn merge(&mut self, other: Collected) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        self.messages += other.messages;
        self.bytes += other.bytes;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

/// CPU time (user + system) of this process so far, from /proc (Linux); zero elsewhere.
pub fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name, which is in parentheses and may contain spaces.
    let Some(rest) = stat.rsplit(')').next() else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, i.e. 12 and 13 after the ')'.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // USER_HZ is 100 on every Linux platform Tern targets.
    Duration::from_millis(ticks * 10)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

impl Report {
    pub fn build(
        kind: &str,
        concurrency: usize,
        mut c: Collected,
        elapsed: Duration,
        cpu: Duration,
    ) -> Self {
        c.latencies_us.sort_unstable();
        let ops = c.latencies_us.len() as u64;
        let secs = elapsed.as_secs_f64().max(1e-9);
        Report {
            kind: kind.to_string(),
            concurrency,
            operations: ops,
            errors: c.errors,
            seconds: secs,
            ops_per_sec: ops as f64 / secs,
            messages_per_sec: c.messages as f64 / secs,
            mb_per_sec: c.bytes as f64 / secs / 1e6,
            p50_ms: percentile(&c.latencies_us, 50.0),
            p99_ms: percentile(&c.latencies_us, 99.0),
            max_ms: c.latencies_us.last().copied().unwrap_or(0) as f64 / 1000.0,
            client_cpu_us_per_op: if ops > 0 {
                cpu.as_secs_f64() * 1e6 / ops as f64
            } else {
                0.0
            },
            first_error: c.first_error,
        }
    }

    pub fn print(&self) {
        println!(
            "{}: {} ops in {:.2}s at concurrency {}: {:.0} ops/s, {:.0} messages/s, {:.1} MB/s; \
             latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} errors; load generator CPU {:.0} µs/op",
            self.kind,
            self.operations,
            self.seconds,
            self.concurrency,
            self.ops_per_sec,
            self.messages_per_sec,
            self.mb_per_sec,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.errors,
            self.client_cpu_us_per_op
        );
        if let Some(e) = &self.first_error {
            println!("first error: {e}");
        }
        println!("{}", serde_json::to_string(self).unwrap_or_default());
    }
}
