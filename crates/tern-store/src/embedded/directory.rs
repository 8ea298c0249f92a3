//! Domains, users and mailboxes on the embedded store.

use super::*;

#[async_trait]
impl Directory for EmbeddedStore {
    async fn add_domain(&self, domain: &str) -> Result<()> {
        let domain = domain.to_string();
        self.write_admin(move |txn| {
            txn.open_table(DOMAINS)
                .map_err(db_err)?
                .insert(domain.as_str(), ())
                .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn remove_domain(&self, domain: &str) -> Result<bool> {
        let domain = domain.to_string();
        self.write_admin(move |txn| {
            let mut t = txn.open_table(DOMAINS).map_err(db_err)?;
            let existed = t.remove(domain.as_str()).map_err(db_err)?.is_some();
            Ok(existed)
        })
        .await
    }

    async fn domain_exists(&self, domain: &str) -> Result<bool> {
        let read_under = match self.inner.lookups.domain(domain) {
            Ok(known) => return Ok(known),
            Err(generation) => generation,
        };
        let txn = self.read()?;
        let t = txn.open_table(DOMAINS).map_err(db_err)?;
        let exists = t.get(domain).map_err(db_err)?.is_some();
        self.inner.lookups.put_domain(read_under, domain, exists);
        Ok(exists)
    }

    async fn list_domains(&self) -> Result<Vec<String>> {
        let txn = self.read()?;
        let t = txn.open_table(DOMAINS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db_err)? {
            out.push(row.map_err(db_err)?.0.value().to_string());
        }
        Ok(out)
    }

    async fn put_user(&self, name: &str, password_hash: &str) -> Result<UserRecord> {
        let (name, hash) = (name.to_string(), password_hash.to_string());
        let new_inbox = MailboxId::random();
        self.write_admin(move |txn| {
            txn.open_table(USERS)
                .map_err(db_err)?
                .insert(name.as_str(), hash.as_str())
                .map_err(db_err)?;
            let mut mailboxes = txn.open_table(MAILBOXES).map_err(db_err)?;
            let existing = mailboxes
                .get((name.as_str(), INBOX))
                .map_err(db_err)?
                .map(|v| v.value());
            let inbox = match existing {
                Some(id) => MailboxId(Uuid::from_u128(id)),
                None => {
                    mailboxes
                        .insert((name.as_str(), INBOX), new_inbox.0.as_u128())
                        .map_err(db_err)?;
                    new_inbox
                }
            };
            Ok(UserRecord {
                name: name.clone(),
                password_hash: hash.clone(),
                inbox,
            })
        })
        .await
    }

    async fn get_user(&self, name: &str) -> Result<Option<UserRecord>> {
        let read_under = match self.inner.lookups.user(name) {
            Ok(known) => return Ok(known),
            Err(generation) => generation,
        };
        let user = self.read_user(name)?;
        self.inner.lookups.put_user(read_under, name, user.clone());
        Ok(user)
    }

    async fn delete_user(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.write_admin(move |txn| {
            let existed = txn
                .open_table(USERS)
                .map_err(db_err)?
                .remove(name.as_str())
                .map_err(db_err)?
                .is_some();
            Ok(existed)
        })
        .await
    }

    async fn list_users(&self) -> Result<Vec<String>> {
        let txn = self.read()?;
        let t = txn.open_table(USERS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db_err)? {
            out.push(row.map_err(db_err)?.0.value().to_string());
        }
        Ok(out)
    }

    async fn list_mailboxes(&self, user: &str) -> Result<Vec<MailboxInfo>> {
        let txn = self.read()?;
        let t = txn.open_table(MAILBOXES).map_err(db_err)?;
        let mut out = Vec::new();
        // Mailbox names sort after "" and before any name starting with U+10FFFF.
        for row in t.range((user, "")..=(user, "\u{10FFFF}")).map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            out.push(MailboxInfo {
                name: k.value().1.to_string(),
                id: MailboxId(Uuid::from_u128(v.value())),
            });
        }
        Ok(out)
    }
}

impl EmbeddedStore {
    fn read_user(&self, name: &str) -> Result<Option<UserRecord>> {
        let txn = self.read()?;
        let users = txn.open_table(USERS).map_err(db_err)?;
        let Some(hash) = users.get(name).map_err(db_err)? else {
            return Ok(None);
        };
        let mailboxes = txn.open_table(MAILBOXES).map_err(db_err)?;
        let inbox = mailboxes
            .get((name, INBOX))
            .map_err(db_err)?
            .ok_or_else(|| StoreError::corrupt(format!("user {name} has no INBOX")))?
            .value();
        Ok(Some(UserRecord {
            name: name.to_string(),
            password_hash: hash.value().to_string(),
            inbox: MailboxId(Uuid::from_u128(inbox)),
        }))
    }
}
