/// Why a store operation failed. Every variant is a server-side problem: callers answer
/// clients with a temporary error (SMTP 451, POP3 -ERR [SYS/TEMP]) and log the cause.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("database error: {0}")]
    Database(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl StoreError {
    pub fn database(e: impl std::fmt::Display) -> Self {
        StoreError::Database(e.to_string())
    }
}
