//! Inbound SMTP (RFC 5321) with SIZE (RFC 1870), 8BITMIME (RFC 6152), PIPELINING (RFC 2920) and
//! enhanced status codes (RFC 2034/3463).

mod address;
mod session;
mod trace;

pub use address::{parse_path, Mailbox, PathError};
pub use session::{RcptVerdict, SmtpConfig, SmtpRequest, SmtpSession, StoreOutcome};
pub use trace::{trace_headers, Trace};
