//! Recipient rewriting at RCPT time, as James's RecipientRewriteTable mailet: an address's
//! mappings (alias, forward, group, address) replace it by their targets, recursively; an
//! address without mappings has its domain's mappings applied (domain aliases and domain
//! mappings), and one with neither is final. A forward that names its own source keeps a copy
//! for the source. Depth is bounded (James: 10) and a cycle is an error, not a hang.

use futures_util::future::BoxFuture;
use tern_store::{MappingKind, RecipientRewrites, StoreError};

/// Rewriting steps followed from one recipient at most.
pub const MAX_DEPTH: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("recipient rewriting loops at {0}")]
    Loop(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The final addresses `address` is delivered to (itself when nothing rewrites it), without
/// duplicates, in the order the mappings gave them. Addresses are lower-cased.
pub async fn expand(
    rewrites: &dyn RecipientRewrites,
    address: &str,
) -> Result<Vec<String>, RewriteError> {
    let mut out = Vec::new();
    let mut path = Vec::new();
    expand_into(rewrites, address.to_ascii_lowercase(), &mut path, &mut out).await?;
    Ok(out)
}

fn expand_into<'a>(
    rewrites: &'a dyn RecipientRewrites,
    address: String,
    path: &'a mut Vec<String>,
    out: &'a mut Vec<String>,
) -> BoxFuture<'a, Result<(), RewriteError>> {
    Box::pin(async move {
        if path.contains(&address) || path.len() >= MAX_DEPTH {
            return Err(RewriteError::Loop(address));
        }
        // The domain's mappings apply only when the address has none, but they are read at the
        // same time: on Cassandra that is one round trip per step instead of two in a row.
        let domain = address.rsplit_once('@').map(|(_, d)| d);
        let (mappings, domain_mappings) = futures_util::join!(rewrites.mappings(&address), async {
            match domain {
                Some(d) => rewrites.mappings(d).await,
                None => Ok(Vec::new()),
            }
        });
        let mut mappings = mappings?;
        mappings.retain(|m| !m.kind.is_domain());
        mappings.sort();
        let mut next: Vec<String> = Vec::new();
        let mut keep_self = false;
        if mappings.is_empty() {
            if let Some((local, _)) = address.rsplit_once('@') {
                let mut domains = domain_mappings?;
                domains.retain(|m| m.kind.is_domain());
                domains.sort();
                next = domains
                    .iter()
                    .map(|m| format!("{local}@{}", m.target))
                    .collect();
            }
            if next.is_empty() {
                if !out.contains(&address) {
                    out.push(address);
                }
                return Ok(());
            }
        } else {
            for m in &mappings {
                if m.target == address && m.kind == MappingKind::Forward {
                    keep_self = true;
                } else {
                    next.push(m.target.clone());
                }
            }
        }
        if keep_self && !out.contains(&address) {
            out.push(address.clone());
        }
        path.push(address);
        for target in next {
            expand_into(rewrites, target, path, out).await?;
        }
        path.pop();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_store::{Mapping, MappingKind::*};

    async fn store(
        mappings: &[(&str, tern_store::MappingKind, &str)],
    ) -> (tern_store::embedded::EmbeddedStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let s = tern_store::embedded::EmbeddedStore::open(dir.path(), Default::default()).unwrap();
        for (source, kind, target) in mappings {
            s.add_mapping(source, &Mapping::new(*kind, *target))
                .await
                .unwrap();
        }
        (s, dir)
    }

    #[tokio::test]
    async fn aliases_groups_forwards_and_domains_resolve() {
        let (s, _dir) = store(&[
            ("info@example.com", Alias, "alice@example.com"),
            ("team@example.com", Group, "info@example.com"),
            ("team@example.com", Group, "bob@example.com"),
            ("team@example.com", Group, "carol@remote.test"),
            ("bob@example.com", Forward, "bob@example.com"),
            ("bob@example.com", Forward, "bob@elsewhere.test"),
            ("dave@example.com", Forward, "dave@elsewhere.test"),
            ("old.example", DomainAlias, "example.com"),
        ])
        .await;
        let e = |a: &'static str| {
            let s = s.clone();
            async move { expand(&s, a).await.unwrap() }
        };
        assert_eq!(e("nobody@example.com").await, vec!["nobody@example.com"]);
        assert_eq!(e("Info@Example.com").await, vec!["alice@example.com"]);
        assert_eq!(
            e("team@example.com").await,
            vec![
                "bob@example.com",
                "bob@elsewhere.test",
                "carol@remote.test",
                "alice@example.com"
            ]
        );
        assert_eq!(
            e("dave@example.com").await,
            vec!["dave@elsewhere.test"],
            "a forward without itself"
        );
        assert_eq!(
            e("info@old.example").await,
            vec!["alice@example.com"],
            "domain alias, then alias"
        );
    }

    #[tokio::test]
    async fn loops_and_depth_are_errors() {
        let (s, _dir) = store(&[
            ("a@x.test", Alias, "b@x.test"),
            ("b@x.test", Alias, "a@x.test"),
        ])
        .await;
        assert!(matches!(
            expand(&s, "a@x.test").await,
            Err(RewriteError::Loop(_))
        ));
        let chain: Vec<(String, String)> = (0..12)
            .map(|i| (format!("c{i}@x.test"), format!("c{}@x.test", i + 1)))
            .collect();
        for (a, b) in &chain {
            s.add_mapping(a, &Mapping::new(Alias, b.clone()))
                .await
                .unwrap();
        }
        assert!(matches!(
            expand(&s, "c0@x.test").await,
            Err(RewriteError::Loop(_))
        ));
        assert_eq!(expand(&s, "c5@x.test").await.unwrap(), vec!["c12@x.test"]);
    }
}
