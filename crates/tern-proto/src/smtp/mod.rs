//! SMTP (RFC 5321) with SIZE (RFC 1870), 8BITMIME (RFC 6152), PIPELINING (RFC 2920), enhanced
//! status codes (RFC 2034/3463) and, on submission listeners, AUTH PLAIN/LOGIN (RFC 4954).

mod address;
pub mod client;
pub mod dsn;
pub mod header;
mod session;
pub mod submission;
mod trace;

pub use address::{parse_path, Mailbox, PathError};
pub use session::{
    AuthFailure, RcptVerdict, SenderVerdict, SmtpConfig, SmtpRequest, SmtpSession, StoreOutcome,
};
pub use trace::{delivery_headers, trace_headers, Trace};
