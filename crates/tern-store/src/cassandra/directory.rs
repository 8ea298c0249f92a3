//! Domains, users and mailboxes on the cassandra store.

use super::*;

#[async_trait]
impl Directory for CassandraStore {
    async fn add_domain(&self, domain: &str) -> Result<()> {
        let c = self.conn()?;
        c.exec(&c.st.insert_domain, (domain,)).await?;
        Ok(())
    }

    async fn remove_domain(&self, domain: &str) -> Result<bool> {
        let existed = self.domain_exists(domain).await?;
        let c = self.conn()?;
        c.exec(&c.st.delete_domain, (domain,)).await?;
        Ok(existed)
    }

    async fn domain_exists(&self, domain: &str) -> Result<bool> {
        let c = self.conn()?;
        Ok(c.first_row::<(String,)>(&c.st.select_domain, (domain,))
            .await?
            .is_some())
    }

    async fn list_domains(&self) -> Result<Vec<String>> {
        let c = self.conn()?;
        Ok(c.all_rows::<(String,)>(&c.st.list_domains, ())
            .await?
            .into_iter()
            .map(|r| r.0)
            .collect())
    }

    async fn put_user(&self, name: &str, password_hash: &str) -> Result<UserRecord> {
        let c = self.conn()?;
        let existing = c
            .first_row::<(Uuid,)>(&c.st.select_mailbox, (name, INBOX))
            .await?;
        let inbox = match existing {
            Some((id,)) => id,
            None => {
                // The one LWT: concurrent creations of the same user must agree on one INBOX.
                let candidate = Uuid::new_v4();
                c.exec(&c.st.create_mailbox, (name, INBOX, candidate))
                    .await?;
                c.first_row::<(Uuid,)>(&c.st.select_mailbox, (name, INBOX))
                    .await?
                    .map(|r| r.0)
                    .ok_or_else(|| StoreError::unavailable("INBOX creation not visible yet"))?
            }
        };
        c.exec(&c.st.insert_user, (name, password_hash, inbox))
            .await?;
        Ok(UserRecord {
            name: name.to_string(),
            password_hash: password_hash.to_string(),
            inbox: MailboxId(inbox),
        })
    }

    async fn get_user(&self, name: &str) -> Result<Option<UserRecord>> {
        let c = self.conn()?;
        let row = c
            .first_row::<(Option<String>, Option<Uuid>)>(&c.st.select_user, (name,))
            .await?;
        match row {
            Some((Some(hash), Some(inbox))) => Ok(Some(UserRecord {
                name: name.to_string(),
                password_hash: hash,
                inbox: MailboxId(inbox),
            })),
            Some(_) => Err(StoreError::corrupt(format!(
                "user {name} lacks a hash or an INBOX"
            ))),
            None => Ok(None),
        }
    }

    async fn delete_user(&self, name: &str) -> Result<bool> {
        let existed = self.get_user(name).await?.is_some();
        let c = self.conn()?;
        c.exec(&c.st.delete_user, (name,)).await?;
        Ok(existed)
    }

    async fn list_users(&self) -> Result<Vec<String>> {
        let c = self.conn()?;
        Ok(c.all_rows::<(String,)>(&c.st.list_users, ())
            .await?
            .into_iter()
            .map(|r| r.0)
            .collect())
    }

    async fn list_mailboxes(&self, user: &str) -> Result<Vec<MailboxInfo>> {
        let c = self.conn()?;
        let rows = c
            .all_rows::<(String, Uuid)>(&c.st.list_mailboxes, (user,))
            .await?;
        Ok(rows
            .into_iter()
            .map(|(name, id)| MailboxInfo {
                name,
                id: MailboxId(id),
            })
            .collect())
    }
}
