//! Timed reads and writes shared by the protocol drivers.

use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub enum ReadOutcome {
    Data(usize),
    TimedOut,
    /// End of stream or a transport error: either way the peer is gone.
    Closed,
}

pub async fn read_timed<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut [u8],
    timeout: Duration,
) -> ReadOutcome {
    match tokio::time::timeout(timeout, stream.read(buf)).await {
        Err(_) => ReadOutcome::TimedOut,
        Ok(Ok(0)) | Ok(Err(_)) => ReadOutcome::Closed,
        Ok(Ok(n)) => ReadOutcome::Data(n),
    }
}

/// Writes everything or fails; a peer that stops reading for `timeout` is given up on.
pub async fn write_timed<S: AsyncWrite + Unpin>(
    stream: &mut S,
    data: &[u8],
    timeout: Duration,
) -> std::io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    match tokio::time::timeout(timeout, stream.write_all(data)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "peer stopped reading",
        )),
    }
}

/// A deadline for a whole unit of input (a command line, a DATA). A per-read timeout alone lets
/// a peer that trickles a byte now and then hold a connection forever; this one does not move
/// until the unit is complete.
#[derive(Default)]
pub struct Deadline(Option<tokio::time::Instant>);

impl Deadline {
    /// Starts the clock (at `limit` from now) unless it runs already; returns how long the next
    /// read may wait, at most `per_read`.
    pub fn next_wait(&mut self, limit: Duration, per_read: Duration) -> Duration {
        let now = tokio::time::Instant::now();
        let until = *self.0.get_or_insert(now + limit);
        until.saturating_duration_since(now).min(per_read)
    }

    /// The unit is complete: the next one gets a fresh deadline.
    pub fn clear(&mut self) {
        self.0 = None;
    }
}
