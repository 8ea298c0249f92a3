//! Mail repositories on the embedded store: entries keyed by (repository, time-ordered key),
//! bodies in the body store with one reference per entry.

use super::*;
use crate::repositories::parse_key;
use crate::{MailRepositories, NewRepositoryMail, RepositoryMail};

fn from_json(json: &str) -> Result<RepositoryMail> {
    serde_json::from_str(json).map_err(|e| StoreError::corrupt(format!("repository mail: {e}")))
}

#[async_trait]
impl MailRepositories for EmbeddedStore {
    async fn store_in_repository(
        &self,
        body: StagedBody,
        mail: NewRepositoryMail,
    ) -> Result<RepositoryMail> {
        let id = self.inner.ids.next_id();
        let kept = RepositoryMail::new(id.uuid(), &body, mail);
        let json = serde_json::to_string(&kept).map_err(|e| StoreError::corrupt(e.to_string()))?;
        let (blob, _, inline, in_flight) = staged_parts(body);
        let repository = kept.repository.clone();
        self.inner
            .committer
            .write(move |txn| {
                mail::commit_body(txn, blob, 1, inline.as_deref())?;
                txn.open_table(REPOSITORIES)
                    .map_err(db_err)?
                    .insert(repository.as_str(), ())
                    .map_err(db_err)?;
                txn.open_table(REPOSITORY_MAILS)
                    .map_err(db_err)?
                    .insert((repository.as_str(), id.sort_key()), json.as_str())
                    .map_err(db_err)?;
                Ok(())
            })
            .await?;
        drop(in_flight);
        Ok(kept)
    }

    async fn create_repository(&self, repository: &str) -> Result<()> {
        let repository = repository.to_string();
        self.inner
            .committer
            .write(move |txn| {
                txn.open_table(REPOSITORIES)
                    .map_err(db_err)?
                    .insert(repository.as_str(), ())
                    .map_err(db_err)?;
                Ok(())
            })
            .await
    }

    async fn list_repositories(&self) -> Result<Vec<(String, u64)>> {
        self.read_blocking(|txn| {
            let names = txn.open_table(REPOSITORIES).map_err(db_err)?;
            let mails = txn.open_table(REPOSITORY_MAILS).map_err(db_err)?;
            let mut out = Vec::new();
            for row in names.iter().map_err(db_err)? {
                let name = row.map_err(db_err)?.0.value().to_string();
                let range = (name.as_str(), 0u128)..=(name.as_str(), u128::MAX);
                let count = mails.range(range).map_err(db_err)?.count() as u64;
                out.push((name, count));
            }
            Ok(out)
        })
        .await
    }

    async fn repository_mails(&self, repository: &str) -> Result<Vec<RepositoryMail>> {
        let repository = repository.to_string();
        self.read_blocking(move |txn| {
            let mails = txn.open_table(REPOSITORY_MAILS).map_err(db_err)?;
            let range = (repository.as_str(), 0u128)..=(repository.as_str(), u128::MAX);
            let mut out = Vec::new();
            for row in mails.range(range).map_err(db_err)? {
                out.push(from_json(row.map_err(db_err)?.1.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn repository_mail(&self, repository: &str, key: &str) -> Result<Option<RepositoryMail>> {
        let Some(id) = parse_key(key) else {
            return Ok(None);
        };
        let txn = self.read()?;
        let mails = txn.open_table(REPOSITORY_MAILS).map_err(db_err)?;
        let row = mails.get((repository, id.sort_key())).map_err(db_err)?;
        row.map(|v| from_json(v.value())).transpose()
    }

    async fn open_repository_body(
        &self,
        mail: &RepositoryMail,
    ) -> Result<Option<Box<dyn BodyReader>>> {
        self.open_blob(mail.blob).await
    }

    async fn remove_repository_mail(&self, repository: &str, key: &str) -> Result<bool> {
        let Some(id) = parse_key(key) else {
            return Ok(false);
        };
        let repository = repository.to_string();
        let (removed, files) = self
            .inner
            .committer
            .write(move |txn| {
                let old = txn
                    .open_table(REPOSITORY_MAILS)
                    .map_err(db_err)?
                    .remove((repository.as_str(), id.sort_key()))
                    .map_err(db_err)?
                    .map(|v| v.value().to_string());
                let Some(json) = old else {
                    return Ok((false, Vec::new()));
                };
                let blob = from_json(&json)?.blob.0.as_u128();
                Ok((true, mail::drop_blob_ref(txn, blob)?.into_iter().collect()))
            })
            .await?;
        self.remove_body_files(files).await;
        Ok(removed)
    }
}
