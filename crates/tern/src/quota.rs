//! Which quota applies to a user (its own limit, else its domain's, else the global one, as
//! James resolves them) and whether a message fits.

use tern_store::{MailboxId, QuotaLimits, QuotaScope, QuotaUsage, Quotas, StoreError};

/// A resolved limit: `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Effective {
    pub count: Option<u64>,
    pub size: Option<u64>,
}

/// The limits of each scope, for a user.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scopes {
    pub global: QuotaLimits,
    pub domain: QuotaLimits,
    pub user: QuotaLimits,
}

impl Scopes {
    pub async fn read(quotas: &dyn Quotas, user: &str) -> Result<Self, StoreError> {
        let domain = user.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        // Read on every RCPT: the three scopes at once, not one after the other.
        let scopes = [
            QuotaScope::Global,
            QuotaScope::Domain(domain.to_string()),
            QuotaScope::User(user.to_string()),
        ];
        let (global, domain, user) = futures_util::try_join!(
            quotas.quota_limits(&scopes[0]),
            quotas.quota_limits(&scopes[1]),
            quotas.quota_limits(&scopes[2]),
        )?;
        Ok(Self {
            global,
            domain,
            user,
        })
    }

    /// The limits in force: the most specific one that is set; -1 (or nothing) is unlimited.
    pub fn computed(&self) -> QuotaLimits {
        let pick = |u: Option<i64>, d: Option<i64>, g: Option<i64>| u.or(d).or(g);
        QuotaLimits {
            count: pick(self.user.count, self.domain.count, self.global.count),
            size: pick(self.user.size, self.domain.size, self.global.size),
        }
    }

    pub fn effective(&self) -> Effective {
        let c = self.computed();
        let limit = |v: Option<i64>| v.filter(|v| *v >= 0).map(|v| v as u64);
        Effective {
            count: limit(c.count),
            size: limit(c.size),
        }
    }
}

impl Effective {
    pub fn is_unlimited(&self) -> bool {
        self.count.is_none() && self.size.is_none()
    }

    /// Whether the mailbox is already full (RCPT refuses more mail).
    pub fn is_full(&self, usage: QuotaUsage) -> bool {
        self.count.is_some_and(|c| usage.count.max(0) as u64 >= c)
            || self.size.is_some_and(|s| usage.size.max(0) as u64 >= s)
    }

    /// Whether one more message of `size` octets fits.
    pub fn fits(&self, usage: QuotaUsage, size: u64) -> bool {
        self.count.is_none_or(|c| (usage.count.max(0) as u64) < c)
            && self
                .size
                .is_none_or(|s| usage.size.max(0) as u64 + size <= s)
    }
}

/// The limits in force for a user (read beforehand, see [`Scopes::read`]) and, when any is
/// set, the usage of its mailbox.
pub async fn check_scopes(
    quotas: &dyn Quotas,
    scopes: Scopes,
    inbox: MailboxId,
) -> Result<(Effective, QuotaUsage), StoreError> {
    let limits = scopes.effective();
    if limits.is_unlimited() {
        return Ok((limits, QuotaUsage::default()));
    }
    Ok((limits, quotas.quota_usage(inbox).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_limit_wins_and_minus_one_is_unlimited() {
        let s = Scopes {
            global: QuotaLimits {
                count: Some(100),
                size: Some(1000),
            },
            domain: QuotaLimits {
                count: None,
                size: Some(-1),
            },
            user: QuotaLimits {
                count: Some(2),
                size: None,
            },
        };
        assert_eq!(
            s.effective(),
            Effective {
                count: Some(2),
                size: None
            }
        );
        let e = s.effective();
        assert!(!e.is_full(QuotaUsage {
            count: 1,
            size: 10_000
        }));
        assert!(e.is_full(QuotaUsage { count: 2, size: 0 }));
        assert!(e.fits(QuotaUsage { count: 1, size: 0 }, 1 << 40));
        assert!(!e.fits(QuotaUsage { count: 2, size: 0 }, 1));
        let sized = Effective {
            count: None,
            size: Some(100),
        };
        assert!(sized.fits(QuotaUsage { count: 9, size: 60 }, 40));
        assert!(!sized.fits(QuotaUsage { count: 9, size: 60 }, 41));
    }
}
