//! The one driver that runs every protocol session (POP3, SMTP, and the listeners to come) over
//! TCP or TLS, as quinn's one driver runs every quinn-proto connection. The session holds the
//! protocol rules and the timers; the driver moves bytes, sleeps until the session's next
//! deadline, hands each request to the protocol's [`Protocol::serve`], upgrades the stream to
//! TLS when asked, and relays the server's stop signal. Each protocol brings only a narrow
//! context of what it uses; nothing here knows about the server as a whole.

use crate::channels::Channel;
use crate::io::{read_timed, write_timed, ReadOutcome};
use std::future::Future;
use std::time::{Duration, Instant};
use tern_proto::Session;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// A byte stream a session runs over: plain TCP, or TLS over it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The connection's stream. Boxed so that the same session goes on after a STARTTLS/STLS
/// upgrade replaces TCP by TLS.
pub type BoxStream = Box<dyn Stream>;

/// What the driver does once a request has been served.
pub enum Next {
    Continue,
    /// The session accepted STARTTLS/STLS: write its answer, run the TLS handshake, go on.
    StartTls,
    /// Drop the connection at once (a RETR cut short: the client must not see a terminator).
    Close,
}

/// A protocol as the driver runs it: the session type and how its requests are served.
pub trait Protocol: Send {
    type Session: Session + Send;

    /// Octets read from the peer at a time: small for a command protocol (an idle connection
    /// costs little), larger where bodies arrive (SMTP DATA).
    const READ_BUFFER: usize;

    /// Serves one request. The protocol may write to the stream itself (a streamed RETR), after
    /// taking the session's pending output so that replies stay in order.
    fn serve(
        &mut self,
        request: <Self::Session as Session>::Request,
        session: &mut Self::Session,
        stream: &mut BoxStream,
    ) -> impl Future<Output = Next> + Send;

    /// How long a peer may take to accept what is written to it.
    fn write_timeout(&self) -> Duration;

    /// Releases what a session left behind (a body being received) and counts what it did;
    /// runs once at the end.
    fn finish(&mut self, _session: &mut Self::Session) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Longest sleep when the session sets no deadline (it always does while reading).
const NO_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// Runs `session` over `stream` until either side closes it, keeping `channel` (this
/// connection in the admin's list) up to date. An administrator's kick ends the session as a
/// server stop does.
pub async fn run<P: Protocol>(
    protocol: &mut P,
    session: &mut P::Session,
    mut stream: BoxStream,
    tls: Option<&tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
    channel: &Channel,
) {
    let peer = channel.remote;
    let mut kicked = channel.kicked();
    let mut buf = vec![0u8; P::READ_BUFFER];
    let mut stopping = false;
    let write_timeout = protocol.write_timeout();
    'connection: loop {
        if !stopping && *shutdown.borrow() {
            stopping = true;
            session.shutdown();
        } else if !stopping && *kicked.borrow() {
            stopping = true;
            session.disconnect();
        }
        while let Some(request) = session.poll() {
            channel.request();
            match protocol.serve(request, session, &mut stream).await {
                Next::Continue => {}
                Next::Close => break 'connection,
                Next::StartTls => {
                    let answer = session.take_output();
                    if write_timed(&mut stream, &answer, write_timeout)
                        .await
                        .is_err()
                    {
                        break 'connection;
                    }
                    let Some(acceptor) = tls else {
                        break 'connection;
                    };
                    match crate::tls::handshake(acceptor, stream, peer, write_timeout).await {
                        Some(upgraded) => stream = Box::new(upgraded),
                        None => return,
                    }
                    channel.tls_started();
                    session.tls_established();
                }
            }
        }
        let output = session.take_output();
        channel.wrote(output.len());
        if write_timed(&mut stream, &output, write_timeout)
            .await
            .is_err()
        {
            break;
        }
        if session.is_closed() {
            break;
        }
        let wake = session.poll_timeout(Instant::now());
        let wait = wake.map_or(NO_DEADLINE, |w| w.saturating_duration_since(Instant::now()));
        tokio::select! {
            r = read_timed(&mut stream, &mut buf, wait) => match r {
                ReadOutcome::Data(n) => {
                    channel.read(n);
                    session.feed(&buf[..n]);
                }
                ReadOutcome::TimedOut => session.handle_timeout(Instant::now()),
                ReadOutcome::Closed => break,
            },
            _ = shutdown.changed(), if !stopping => {
                stopping = true;
                session.shutdown();
            }
            _ = kicked.changed(), if !stopping => {
                tracing::info!(%peer, "session ended by an administrator");
                stopping = true;
                session.disconnect();
            }
        }
    }
    protocol.finish(session).await;
    let _ = stream.shutdown().await;
}
