//! Quota cases: limits per scope, and usage that follows deliveries and deletions.

use super::*;
use crate::{QuotaLimits, QuotaResource, QuotaScope, QuotaUsage};

pub async fn quota_limits_and_usage(b: &Backend) {
    let q = &b.quotas;
    let user = QuotaScope::User("alice@example.com".into());
    let domain = QuotaScope::Domain("example.com".into());
    assert_eq!(q.quota_limits(&user).await.unwrap(), QuotaLimits::default());
    q.set_quota_limit(&user, QuotaResource::Count, Some(10))
        .await
        .unwrap();
    q.set_quota_limit(&user, QuotaResource::Size, Some(-1))
        .await
        .unwrap();
    q.set_quota_limit(&domain, QuotaResource::Size, Some(5000))
        .await
        .unwrap();
    q.set_quota_limit(&QuotaScope::Global, QuotaResource::Count, Some(7))
        .await
        .unwrap();
    assert_eq!(
        q.quota_limits(&user).await.unwrap(),
        QuotaLimits {
            count: Some(10),
            size: Some(-1)
        }
    );
    assert_eq!(
        q.quota_limits(&domain).await.unwrap(),
        QuotaLimits {
            count: None,
            size: Some(5000)
        }
    );
    assert_eq!(
        q.quota_limits(&QuotaScope::Global).await.unwrap().count,
        Some(7)
    );
    q.set_quota_limit(&user, QuotaResource::Count, None)
        .await
        .unwrap();
    assert_eq!(q.quota_limits(&user).await.unwrap().count, None);

    let mb = MailboxId::random();
    let other = MailboxId::random();
    assert_eq!(q.quota_usage(mb).await.unwrap(), QuotaUsage::default());
    let ids = deliver(b, &[b'x'; 1000], &[mb, other]).await;
    deliver(b, &[b'y'; 300], &[mb]).await;
    assert_eq!(
        q.quota_usage(mb).await.unwrap(),
        QuotaUsage {
            count: 2,
            size: 1300
        }
    );
    assert_eq!(
        q.quota_usage(other).await.unwrap(),
        QuotaUsage {
            count: 1,
            size: 1000
        }
    );
    // Deleting releases usage; deleting again (or someone else's message) releases nothing.
    b.mail.delete_messages(mb, &[ids[0]]).await.unwrap();
    b.mail.delete_messages(mb, &[ids[0], ids[1]]).await.unwrap();
    assert_eq!(
        q.quota_usage(mb).await.unwrap(),
        QuotaUsage {
            count: 1,
            size: 300
        }
    );
    assert_eq!(
        q.quota_usage(other).await.unwrap(),
        QuotaUsage {
            count: 1,
            size: 1000
        }
    );
    q.set_quota_usage(mb, QuotaUsage { count: 4, size: 40 })
        .await
        .unwrap();
    assert_eq!(
        q.quota_usage(mb).await.unwrap(),
        QuotaUsage { count: 4, size: 40 }
    );
}
