//! POP3 (RFC 1939) with CAPA (RFC 2449), SASL AUTH (RFC 5034) and response codes (RFC 3206).

mod command;
mod session;

pub use command::{parse_command, Command};
pub use session::{
    LoginFailure, MaildropEntry, Pop3Config, Pop3Request, Pop3Session, RetrieveOutcome,
    UpdateOutcome,
};

/// The status line that precedes a RETR or TOP body. For RETR it states the exact octet count
/// (the stored size, before byte-stuffing), which is also what LIST reports.
pub fn retrieve_ok_line(size: u64, top: bool) -> String {
    if top {
        "+OK top of message follows\r\n".to_string()
    } else {
        format!("+OK {size} octets\r\n")
    }
}
