//! `tern bench`: a native load generator for any SMTP/LMTP and POP3 server, not only Tern. A
//! crate of its own so that the server's library carries none of it; the `tern` binary keeps
//! the subcommand.
//! It runs its clients on a tokio runtime with one connection per concurrent worker and reports
//! throughput, latency percentiles, errors and its own CPU time per operation (so one can tell
//! whether the generator, not the server, is the bottleneck).

mod delay_proxy;
mod deliver;
mod pop3;
mod relay;
mod stats;

pub use delay_proxy::run_delay_proxy;
pub use deliver::{run_deliver, DeliverArgs};
pub use pop3::{run_pop3, Pop3Args, Pop3Mode};
pub use relay::{run_relay, RelayArgs, RelayReport};
pub use stats::Report;

/// User name of bench user `i`.
pub fn user_name(prefix: &str, i: usize, domain: &str) -> String {
    format!("{prefix}{i}@{domain}")
}

/// Opens `connections` connections to a server, reads each greeting and holds them for `hold`,
/// so that the server's memory per idle connection can be measured from outside. Returns how
/// many connections were held.
pub async fn hold_idle(
    server: std::net::SocketAddr,
    connections: usize,
    hold: std::time::Duration,
) -> anyhow::Result<usize> {
    use tokio::io::AsyncReadExt;
    let _ = rlimit::increase_nofile_limit(connections as u64 + 256);
    let mut held = Vec::with_capacity(connections);
    let mut buf = [0u8; 512];
    for i in 0..connections {
        let mut s = tokio::net::TcpStream::connect(server)
            .await
            .map_err(|e| anyhow::anyhow!("connection {i}: {e}"))?;
        let n = s.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "connection {i} closed before its greeting");
        held.push(s);
    }
    println!(
        "holding {} idle connections for {:.0}s",
        held.len(),
        hold.as_secs_f64()
    );
    tokio::time::sleep(hold).await;
    Ok(held.len())
}
