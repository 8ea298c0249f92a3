//! Quotas, as James's: limits on message count and octets per user, per domain and global, and
//! each mailbox's usage. Backends keep usage up to date in `deliver` and `delete_messages`
//! (the embedded store in the same transaction; Cassandra with counters, no lightweight
//! transaction); a recompute task corrects drift.

use crate::{MailboxId, Result};
use async_trait::async_trait;

/// Where a limit applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QuotaScope {
    /// Every user.
    Global,
    /// The users of a domain.
    Domain(String),
    /// One user.
    User(String),
}

impl QuotaScope {
    /// The key the stores keep limits under.
    pub fn key(&self) -> String {
        match self {
            QuotaScope::Global => "global".into(),
            QuotaScope::Domain(d) => format!("domain:{d}"),
            QuotaScope::User(u) => format!("user:{u}"),
        }
    }
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaResource {
    /// Messages.
    Count,
    /// Octets.
    Size,
}

impl QuotaResource {
    /// The name stores keep.
    pub fn name(self) -> &'static str {
        match self {
            QuotaResource::Count => "count",
            QuotaResource::Size => "size",
        }
    }
}

/// The limits set at one scope: `None` when not set there; `Some(-1)` is unlimited (James).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaLimits {
    /// Messages.
    pub count: Option<i64>,
    /// Octets.
    pub size: Option<i64>,
}

/// What a mailbox holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaUsage {
    /// Messages.
    pub count: i64,
    /// Octets.
    pub size: i64,
}

/// Limits and usage.
#[async_trait]
pub trait Quotas: Send + Sync {
    /// Sets (`Some`) or removes (`None`) a limit.
    async fn set_quota_limit(
        &self,
        scope: &QuotaScope,
        resource: QuotaResource,
        limit: Option<i64>,
    ) -> Result<()>;
    /// The limits set at a scope.
    async fn quota_limits(&self, scope: &QuotaScope) -> Result<QuotaLimits>;
    /// A mailbox's usage, as maintained by deliveries and deletions.
    async fn quota_usage(&self, mailbox: MailboxId) -> Result<QuotaUsage>;
    /// Replaces a mailbox's usage (the recompute task; concurrent deliveries may make it
    /// drift again, as in James, and a second run corrects that).
    async fn set_quota_usage(&self, mailbox: MailboxId, usage: QuotaUsage) -> Result<()>;
}
