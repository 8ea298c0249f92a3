//! Directory cases: domains, users, INBOXes.

use super::*;

pub async fn domains_add_list_remove(b: &Backend) {
    let d = &b.directory;
    assert!(!d.domain_exists("example.com").await.unwrap());
    d.add_domain("example.com").await.unwrap();
    d.add_domain("example.com").await.unwrap();
    d.add_domain("example.org").await.unwrap();
    assert!(d.domain_exists("example.com").await.unwrap());
    let mut all = d.list_domains().await.unwrap();
    all.sort();
    assert_eq!(all, ["example.com", "example.org"]);
    assert!(d.remove_domain("example.com").await.unwrap());
    assert!(!d.remove_domain("example.com").await.unwrap());
    assert!(!d.domain_exists("example.com").await.unwrap());
}

pub async fn users_put_get_update_delete(b: &Backend) {
    let d = &b.directory;
    assert_eq!(d.get_user("a@x").await.unwrap(), None);
    let created = d.put_user("a@x", "hash1").await.unwrap();
    assert_eq!(created.password_hash, "hash1");
    let updated = d.put_user("a@x", "hash2").await.unwrap();
    assert_eq!(
        updated.inbox, created.inbox,
        "a password change keeps the INBOX"
    );
    assert_eq!(d.get_user("a@x").await.unwrap(), Some(updated));
    d.put_user("b@x", "h").await.unwrap();
    let mut users = d.list_users().await.unwrap();
    users.sort();
    assert_eq!(users, ["a@x", "b@x"]);
    let boxes = d.list_mailboxes("a@x").await.unwrap();
    assert_eq!(boxes.len(), 1);
    assert_eq!(
        (boxes[0].name.as_str(), boxes[0].id),
        ("INBOX", created.inbox)
    );
    assert!(d.delete_user("a@x").await.unwrap());
    assert!(!d.delete_user("a@x").await.unwrap());
    assert_eq!(d.get_user("a@x").await.unwrap(), None);
    assert_eq!(d.list_users().await.unwrap(), ["b@x"]);
    assert_ne!(
        d.get_user("b@x").await.unwrap().unwrap().inbox,
        created.inbox
    );
}

pub async fn recreated_user_finds_its_inbox(b: &Backend) {
    let d = &b.directory;
    let first = d.put_user("a@x", "h").await.unwrap();
    let id = deliver(b, b"Subject: kept\r\n\r\nhello\r\n", &[first.inbox]).await;
    d.delete_user("a@x").await.unwrap();
    let again = d.put_user("a@x", "h2").await.unwrap();
    assert_eq!(again.inbox, first.inbox);
    assert_eq!(ids(&b.mail.pop3_view(again.inbox).await.unwrap()), id);
}
