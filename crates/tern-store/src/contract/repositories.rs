//! Mail repository cases: kept mail is durable with its body, listed per repository oldest
//! first, never collected while kept, and removed cleanly.

use super::*;
use crate::NewRepositoryMail;

fn kept(repository: &str, recipient: &str) -> NewRepositoryMail {
    NewRepositoryMail {
        repository: repository.into(),
        sender: "sender@remote.test".into(),
        recipients: vec![recipient.into()],
        state: "error".into(),
        error: Some("Mail loop detected".into()),
        remote_host: "client.test".into(),
        remote_addr: "192.0.2.7".into(),
    }
}

async fn body_of(b: &Backend, mail: &crate::RepositoryMail) -> Option<Vec<u8>> {
    let mut r = b.repositories.open_repository_body(mail).await.unwrap()?;
    let mut out = Vec::new();
    while let Some(chunk) = r.next_chunk().await.unwrap() {
        out.extend_from_slice(&chunk);
    }
    Some(out)
}

pub async fn repositories_keep_mail_until_removed(b: &Backend) {
    let repos = &b.repositories;
    let (error, other) = ("var/mail/error/", "var/mail/address-error/");
    repos.create_repository("var/mail/empty/").await.unwrap();
    let large: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    let mut stored = Vec::new();
    for (i, body) in [&b"Subject: one\r\n\r\n1\r\n"[..], &large, b"three"]
        .iter()
        .enumerate()
    {
        let mut w = b.mail.begin_body().await.unwrap();
        w.write(body).await.unwrap();
        let staged = w.finish().await.unwrap();
        let repo = if i == 2 { other } else { error };
        stored.push(
            repos
                .store_in_repository(staged, kept(repo, &format!("r{i}@x.test")))
                .await
                .unwrap(),
        );
    }
    let mut listed = repos.list_repositories().await.unwrap();
    listed.sort();
    assert_eq!(
        listed,
        vec![
            (other.to_string(), 1),
            ("var/mail/empty/".to_string(), 0),
            (error.to_string(), 2)
        ]
    );
    let in_error = repos.repository_mails(error).await.unwrap();
    assert_eq!(
        in_error,
        stored[..2].to_vec(),
        "oldest first, read back whole"
    );
    let first = &stored[0];
    assert_eq!(first.recipients, vec!["r0@x.test".to_string()]);
    assert_eq!(first.size, 19);
    assert!(first.last_updated_ms > 0);
    assert_eq!(
        repos
            .repository_mail(error, &first.key)
            .await
            .unwrap()
            .as_ref(),
        Some(first)
    );
    assert_eq!(
        repos.repository_mail(other, &first.key).await.unwrap(),
        None,
        "another repository's key"
    );
    assert_eq!(
        repos.repository_mail(error, "not-a-key").await.unwrap(),
        None
    );
    assert!(
        body_of(b, &stored[1]).await == Some(large),
        "large body whole"
    );
    // Kept bodies are referenced: the collector leaves them.
    for blob in all_bodies(b).await {
        b.collection
            .remove_body_if_unreferenced(blob)
            .await
            .unwrap();
    }
    assert_eq!(
        body_of(b, &stored[1]).await.map(|v| v.len()),
        Some(2_000_000)
    );
    // Removal takes the entry and frees its body.
    assert!(repos
        .remove_repository_mail(error, &stored[1].key)
        .await
        .unwrap());
    assert!(!repos
        .remove_repository_mail(error, &stored[1].key)
        .await
        .unwrap());
    assert_eq!(body_of(b, &stored[1]).await, None, "its body is gone");
    assert_eq!(
        repos.repository_mails(error).await.unwrap(),
        stored[..1].to_vec()
    );
    assert_eq!(
        body_of(b, &stored[0]).await.as_deref(),
        Some(&b"Subject: one\r\n\r\n1\r\n"[..])
    );
}
