#![warn(missing_docs)]
//! Sans-IO protocol logic for Tern.
//!
//! Nothing here performs I/O or knows about tokio: a session is fed the bytes a peer sent and
//! answers with bytes to send plus requests for the driver (authenticate, fetch a body, deliver).
//! The driver performs those and reports back. This keeps every protocol rule testable byte by
//! byte and fuzzable, the way quinn-proto and rustls separate protocol from I/O.

pub mod dot;
pub mod line;
pub mod pop3;
pub mod sasl;
pub mod session;
pub mod smtp;

pub use session::{Deadline, Session};
