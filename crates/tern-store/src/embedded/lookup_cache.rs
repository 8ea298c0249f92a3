//! Remembered answers to the lookups every RCPT makes — does the domain exist, who is the user,
//! what rewrites the address, which quota applies — until the next administrative write.
//!
//! Why: each of those reads is a redb read transaction and a table opened (a B-tree walk of
//! the table directory and a type check), about 6 % of the server's CPU per delivery in the
//! profile of docs/perf/. Their tables change only through this store's administrative methods
//! (one process owns the database), so those methods can simply forget everything: the cache
//! is exact, not "eventually" right.
//!
//! A write forgets after its commit and before it returns, so a request that starts after an
//! administrative call returned never sees the old answer. An answer read before a write but
//! stored after it is tagged with the older generation and never served.

use crate::{Mapping, QuotaLimits, UserRecord};
use std::collections::HashMap;
use std::sync::Mutex;

/// Entries per kind kept at most; past it the kind starts again empty (a flood of RCPTs to
/// random addresses must not grow memory without bound).
const MAX_ENTRIES: usize = 50_000;

#[derive(Default)]
pub(crate) struct LookupCache {
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    /// Bumped by every administrative write.
    generation: u64,
    domains: HashMap<String, bool>,
    users: HashMap<String, Option<UserRecord>>,
    mappings: HashMap<String, Vec<Mapping>>,
    quota_limits: HashMap<String, QuotaLimits>,
}

/// Which generation a lookup was read under; stored with its answer.
#[derive(Clone, Copy)]
pub(crate) struct Generation(u64);

macro_rules! kind {
    ($get:ident, $put:ident, $field:ident, $value:ty) => {
        pub(crate) fn $get(&self, key: &str) -> Result<$value, Generation> {
            let entries = self.lock();
            match entries.$field.get(key) {
                Some(v) => Ok(v.clone()),
                None => Err(Generation(entries.generation)),
            }
        }

        pub(crate) fn $put(&self, read_under: Generation, key: &str, value: $value) {
            let mut entries = self.lock();
            if entries.generation != read_under.0 {
                return;
            }
            if entries.$field.len() >= MAX_ENTRIES {
                entries.$field.clear();
            }
            entries.$field.insert(key.to_string(), value);
        }
    };
}

impl LookupCache {
    kind!(domain, put_domain, domains, bool);
    kind!(user, put_user, users, Option<UserRecord>);
    kind!(mappings, put_mappings, mappings, Vec<Mapping>);
    kind!(quota_limits, put_quota_limits, quota_limits, QuotaLimits);

    /// After any write to domains, users, mailboxes, mappings or quota limits.
    pub(crate) fn forget(&self) {
        let mut entries = self.lock();
        let generation = entries.generation + 1;
        *entries = Entries {
            generation,
            ..Entries::default()
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // The maps hold no invariant a panic elsewhere could break.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_read_before_a_write_is_not_kept_after_it() {
        let cache = LookupCache::default();
        let read_under = cache.domain("example.com").unwrap_err();
        cache.forget(); // a write committed while the read was under way
        cache.put_domain(read_under, "example.com", false);
        assert!(cache.domain("example.com").is_err());
        let now = cache.domain("example.com").unwrap_err();
        cache.put_domain(now, "example.com", true);
        assert!(matches!(cache.domain("example.com"), Ok(true)));
        cache.forget();
        assert!(cache.domain("example.com").is_err());
    }

    #[test]
    fn a_full_kind_starts_again() {
        let cache = LookupCache::default();
        for i in 0..=MAX_ENTRIES {
            let g = cache.domain("x").unwrap_err();
            cache.put_domain(g, &format!("d{i}.test"), false);
        }
        assert_eq!(cache.lock().domains.len(), 1);
    }
}
