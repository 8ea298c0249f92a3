//! Why a store operation failed, by what the caller can do about it.

/// Any underlying error, kept as the source of a [`StoreError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store operation failed. The variant says what a caller can do about it: retry later
/// ([`StoreError::Unavailable`]: SMTP 451, POP3 `-ERR [SYS/TEMP]`), give up on that object
/// ([`StoreError::NotFound`], [`StoreError::Corrupt`]), or fix the request or the configuration
/// ([`StoreError::Invalid`], never retried). The underlying error, when there is one, is the
/// [`std::error::Error::source`]; its text is also in the message so that a log line that prints
/// only the top-level error still says what happened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// What was asked for is not there (a body or a chunk removed meanwhile).
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The store cannot answer now (cluster unreachable, timeout, disk error); a later retry
    /// may succeed.
    #[error("store unavailable: {what}")]
    Unavailable {
        /// What failed.
        what: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// Concurrent writers kept winning (a compare-and-set retried to its limit).
    #[error("conflict: {what}")]
    Conflict {
        /// What could not be changed.
        what: String,
    },
    /// The request or the configuration is wrong; retrying will not help.
    #[error("invalid: {what}")]
    Invalid {
        /// What is wrong.
        what: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// Stored data is not what Tern writes (an unreadable record, a missing INBOX).
    #[error("corrupt data: {what}")]
    Corrupt {
        /// What is damaged.
        what: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
}

impl StoreError {
    /// [`StoreError::Unavailable`] without an underlying error.
    pub fn unavailable(what: impl Into<String>) -> Self {
        StoreError::Unavailable {
            what: what.into(),
            source: None,
        }
    }

    /// [`StoreError::Unavailable`] caused by `source`.
    pub fn unavailable_from(
        what: impl std::fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Unavailable {
            what: format!("{what}: {source}"),
            source: Some(Box::new(source)),
        }
    }

    /// [`StoreError::Invalid`] without an underlying error.
    pub fn invalid(what: impl Into<String>) -> Self {
        StoreError::Invalid {
            what: what.into(),
            source: None,
        }
    }

    /// [`StoreError::Invalid`] caused by `source`.
    pub fn invalid_from(
        what: impl std::fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Invalid {
            what: format!("{what}: {source}"),
            source: Some(Box::new(source)),
        }
    }

    /// [`StoreError::Corrupt`] without an underlying error.
    pub fn corrupt(what: impl Into<String>) -> Self {
        StoreError::Corrupt {
            what: what.into(),
            source: None,
        }
    }

    /// [`StoreError::Corrupt`] caused by `source`.
    pub fn corrupt_from(
        what: impl std::fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Corrupt {
            what: format!("{what}: {source}"),
            source: Some(Box::new(source)),
        }
    }

    /// [`StoreError::NotFound`].
    pub fn not_found(what: impl Into<String>) -> Self {
        StoreError::NotFound { what: what.into() }
    }

    /// A database (redb) failure: the embedded store cannot answer.
    pub fn database(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::unavailable_from("database", e)
    }

    /// Whether retrying later may succeed.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::Conflict { .. }
        )
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::NotFound {
                what: e.to_string(),
            },
            _ => Self::unavailable_from("I/O", e),
        }
    }
}
