//! What every protocol session offers the one driver that runs them all (`tern::driver`), in
//! the manner of quinn-proto: the session never reads a clock or a socket. The driver feeds it
//! bytes, asks it for requests and output, asks it when to wake it ([`Session::poll_timeout`])
//! and tells it when that time has come ([`Session::handle_timeout`]).

use std::time::{Duration, Instant};

/// A protocol session (POP3, SMTP, and the listeners to come) as its driver sees it.
pub trait Session {
    /// Work the session needs from the driver (look a user up, store a body...).
    type Request;

    /// Bytes the peer sent.
    fn feed(&mut self, data: &[u8]);

    /// The next request, once the buffered input has been processed as far as it can be;
    /// `None` when the session needs more input or waits for an answer to a request.
    fn poll(&mut self) -> Option<Self::Request>;

    /// Bytes to send to the peer, in order.
    fn take_output(&mut self) -> Vec<u8>;

    /// True once the connection should be closed (after the remaining output is written).
    fn is_closed(&self) -> bool;

    /// When the driver must call [`Session::handle_timeout`] if no input arrives first. Called
    /// each time the driver is about to wait for input; `now` starts the clock of a deadline
    /// that is not running yet (the next command, a DATA).
    fn poll_timeout(&mut self, now: Instant) -> Option<Instant>;

    /// The time returned by [`Session::poll_timeout`] has come (or passed).
    fn handle_timeout(&mut self, now: Instant);

    /// The server is stopping: the session says goodbye now, or as soon as what is in progress
    /// (a message being received) is done.
    fn shutdown(&mut self);

    /// An administrator ended this session: it goes as in a stop, saying why where the
    /// protocol lets it.
    fn disconnect(&mut self) {
        self.shutdown()
    }

    /// The TLS handshake the session asked for completed; the same session goes on over TLS.
    fn tls_established(&mut self);
}

/// A deadline started lazily: [`Deadline::restart`] marks the end of one unit of input (a command,
/// a data block, a DATA), and the next [`Deadline::arm`] starts the clock for the next one. A
/// per-read timeout alone would let a peer that trickles one byte at a time hold a connection
/// forever; a deadline does not move until the unit is complete.
#[derive(Debug, Default, Clone, Copy)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// The deadline, starting the clock at `now` with `limit` if it is not running.
    pub fn arm(&mut self, now: Instant, limit: Duration) -> Instant {
        *self.0.get_or_insert(now + limit)
    }

    /// The unit of input is complete: the next one gets a fresh deadline.
    pub fn restart(&mut self) {
        self.0 = None;
    }

    /// Whether the running deadline has passed at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.0.is_some_and(|at| now >= at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_starts_lazily_and_does_not_move_until_restarted() {
        let t0 = Instant::now();
        let mut d = Deadline::default();
        assert!(!d.expired(t0 + Duration::from_secs(999)), "not running yet");
        let at = d.arm(t0, Duration::from_secs(10));
        assert_eq!(at, t0 + Duration::from_secs(10));
        assert_eq!(
            d.arm(t0 + Duration::from_secs(5), Duration::from_secs(10)),
            at
        );
        assert!(!d.expired(t0 + Duration::from_secs(9)));
        assert!(d.expired(t0 + Duration::from_secs(10)));
        d.restart();
        assert_eq!(
            d.arm(t0 + Duration::from_secs(20), Duration::from_secs(10)),
            t0 + Duration::from_secs(30)
        );
    }
}
