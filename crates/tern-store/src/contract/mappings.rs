//! Recipient-rewriting cases: mappings are added idempotently, listed per source and in full,
//! and removed.

use super::*;
use crate::{Mapping, MappingKind};

pub async fn mappings_add_list_remove(b: &Backend) {
    let r = &b.rewrites;
    let alias = Mapping::new(MappingKind::Alias, "alice@example.com");
    let group_a = Mapping::new(MappingKind::Group, "a@example.com");
    let group_b = Mapping::new(MappingKind::Group, "b@remote.test");
    assert!(r.mappings("info@example.com").await.unwrap().is_empty());
    r.add_mapping("info@example.com", &alias).await.unwrap();
    r.add_mapping("info@example.com", &alias).await.unwrap();
    r.add_mapping("team@example.com", &group_a).await.unwrap();
    r.add_mapping("team@example.com", &group_b).await.unwrap();
    r.add_mapping(
        "old.example",
        &Mapping::new(MappingKind::DomainAlias, "example.com"),
    )
    .await
    .unwrap();
    assert_eq!(
        r.mappings("info@example.com").await.unwrap(),
        vec![alias.clone()]
    );
    let mut team = r.mappings("team@example.com").await.unwrap();
    team.sort();
    assert_eq!(team, vec![group_a.clone(), group_b.clone()]);
    // A source is matched exactly: no prefix or case folding in the store.
    assert!(r.mappings("info@example.co").await.unwrap().is_empty());
    assert!(r.mappings("team@example.com.x").await.unwrap().is_empty());
    let mut all = r.all_mappings().await.unwrap();
    all.sort();
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(all.contains(&(
        "old.example".to_string(),
        Mapping::new(MappingKind::DomainAlias, "example.com")
    )));
    assert!(r
        .remove_mapping("team@example.com", &group_a)
        .await
        .unwrap());
    assert!(!r
        .remove_mapping("team@example.com", &group_a)
        .await
        .unwrap());
    assert_eq!(r.mappings("team@example.com").await.unwrap(), vec![group_b]);
}
