//! Mail repositories on Cassandra: `mail_repositories (name)` lists them,
//! `repository_mails ((repository), mail_key)` holds one partition per repository (small: kept
//! mail waits for an operator), and each entry holds one reference to its body.

use super::*;
use crate::repositories::parse_key;
use crate::{MailRepositories, NewRepositoryMail, RepositoryMail};
use scylla::statement::batch::{Batch, BatchType};

fn from_json(json: &str) -> Result<RepositoryMail> {
    serde_json::from_str(json).map_err(|e| StoreError::corrupt(format!("repository mail: {e}")))
}

#[async_trait]
impl MailRepositories for CassandraStore {
    async fn store_in_repository(
        &self,
        body: StagedBody,
        mail: NewRepositoryMail,
    ) -> Result<RepositoryMail> {
        let c = self.conn()?;
        let id = self.inner.ids.next_id();
        let kept = RepositoryMail::new(id.uuid(), &body, mail);
        let json = serde_json::to_string(&kept).map_err(|e| StoreError::corrupt(e.to_string()))?;
        // The body with its reference first, then the entry that names it (as a delivery).
        body::commit(
            c,
            body.blob_id.0,
            body.size,
            body.payload,
            vec![timeuuid(id)],
        )
        .await?;
        drop(body.in_flight);
        c.exec(&c.st.insert_repository, (&kept.repository,)).await?;
        c.exec(
            &c.st.insert_repository_mail,
            (&kept.repository, timeuuid(id), json),
        )
        .await?;
        Ok(kept)
    }

    async fn create_repository(&self, repository: &str) -> Result<()> {
        let c = self.conn()?;
        c.exec(&c.st.insert_repository, (repository,)).await?;
        Ok(())
    }

    async fn list_repositories(&self) -> Result<Vec<(String, u64)>> {
        let c = self.conn()?;
        let names = c.all_rows::<(String,)>(&c.st.scan_repositories, ()).await?;
        let mut out = Vec::new();
        for (name,) in names {
            let count = c
                .first_row::<(i64,)>(&c.st.count_repository, (&name,))
                .await?
                .map_or(0, |r| r.0.max(0) as u64);
            out.push((name, count));
        }
        Ok(out)
    }

    async fn repository_mails(&self, repository: &str) -> Result<Vec<RepositoryMail>> {
        let c = self.conn()?;
        let rows = c
            .all_rows::<(String,)>(&c.st.select_repository_mails, (repository,))
            .await?;
        rows.iter().map(|(json,)| from_json(json)).collect()
    }

    async fn repository_mail(&self, repository: &str, key: &str) -> Result<Option<RepositoryMail>> {
        let Some(id) = parse_key(key) else {
            return Ok(None);
        };
        let c = self.conn()?;
        c.first_row::<(String,)>(&c.st.select_repository_mail, (repository, timeuuid(id)))
            .await?
            .map(|(json,)| from_json(&json))
            .transpose()
    }

    async fn open_repository_body(
        &self,
        mail: &RepositoryMail,
    ) -> Result<Option<Box<dyn BodyReader>>> {
        let c = self.conn()?;
        body::open(c.clone(), mail.blob.0).await
    }

    async fn remove_repository_mail(&self, repository: &str, key: &str) -> Result<bool> {
        let Some(mail) = self.repository_mail(repository, key).await? else {
            return Ok(false);
        };
        let c = self.conn()?;
        let id = timeuuid(parse_key(key).ok_or_else(|| StoreError::invalid("mail key"))?);
        // The entry and its body reference go together (a logged batch, not Paxos).
        let mut batch = Batch::new(BatchType::Logged);
        batch.append_statement(c.st.delete_repository_mail.clone());
        batch.append_statement(c.st.remove_blob_ref.clone());
        batch.set_consistency(self.inner.options.write_consistency);
        c.session
            .batch(&batch, ((repository, id), (vec![id], mail.blob.0)))
            .await
            .map_err(unavailable)?;
        body::release(c, mail.blob.0).await?;
        Ok(true)
    }
}
