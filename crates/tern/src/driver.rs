//! The one driver that runs every protocol session (POP3, SMTP, and the listeners to come) over
//! TCP or TLS, as quinn's one driver runs every quinn-proto connection. The session holds the
//! protocol rules and the timers; the driver moves bytes, sleeps until the session's next
//! deadline, hands each request to the protocol's [`Protocol::serve`], upgrades the stream to
//! TLS when asked, and relays the server's stop signal. Each protocol brings only a narrow
//! context of what it uses; nothing here knows about the server as a whole.

use crate::channels::Channel;
use crate::io::write_timed;
use std::future::Future;
use std::time::{Duration, Instant};
use tern_proto::Session;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
    // One timer for the whole connection, moved only when the session's deadline comes
    // earlier than it is set for. A deadline moves later with every command; setting a new
    // timer for each read took the runtime's timer lock twice per command (about 5 % of the
    // CPU of a delivery in docs/perf/). A timer that fires before the session's deadline is
    // simply set again.
    let far = || Instant::now() + NO_DEADLINE;
    let mut armed_for = far();
    let timer = tokio::time::sleep_until(armed_for.into());
    tokio::pin!(timer);
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
        let now = Instant::now();
        if let Some(wake) = session.poll_timeout(now).filter(|w| *w < armed_for) {
            armed_for = wake;
            timer.as_mut().reset(wake.into());
        }
        tokio::select! {
            r = stream.read(&mut buf) => match r {
                Ok(n) if n > 0 => {
                    channel.read(n);
                    session.feed(&buf[..n]);
                }
                // End of stream or a transport error: either way the peer is gone.
                _ => break,
            },
            () = &mut timer => {
                let now = Instant::now();
                armed_for = far();
                timer.as_mut().reset(armed_for.into());
                if session.poll_timeout(now).is_some_and(|wake| now >= wake) {
                    session.handle_timeout(now);
                }
            }
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
