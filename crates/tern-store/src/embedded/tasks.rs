//! Task records on the embedded store.

use super::*;

#[async_trait]
impl TaskStore for EmbeddedStore {
    async fn save_task(&self, task: &TaskRecord) -> Result<()> {
        let task = task.clone();
        self.inner
            .committer
            .write(move |txn| {
                let mut t = txn.open_table(TASKS).map_err(db_err)?;
                let key = task.id.as_u128();
                let cancelled_before = match t.get(key).map_err(db_err)? {
                    Some(v) => serde_json::from_str::<TaskRecord>(v.value())
                        .map(|r| r.cancel_requested)
                        .unwrap_or(false),
                    None => false,
                };
                let mut record = task.clone();
                record.cancel_requested |= cancelled_before;
                let json = serde_json::to_string(&record)
                    .map_err(|e| StoreError::corrupt(e.to_string()))?;
                t.insert(key, json.as_str()).map_err(db_err)?;
                Ok(())
            })
            .await
    }

    async fn get_task(&self, id: Uuid) -> Result<Option<TaskRecord>> {
        let txn = self.read()?;
        let t = txn.open_table(TASKS).map_err(db_err)?;
        let Some(v) = t.get(id.as_u128()).map_err(db_err)? else {
            return Ok(None);
        };
        serde_json::from_str(v.value())
            .map(Some)
            .map_err(|e| StoreError::corrupt(e.to_string()))
    }

    async fn list_tasks(&self) -> Result<Vec<TaskRecord>> {
        let txn = self.read()?;
        let t = txn.open_table(TASKS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db_err)? {
            let (_, v) = row.map_err(db_err)?;
            out.push(
                serde_json::from_str(v.value()).map_err(|e| StoreError::corrupt(e.to_string()))?,
            );
        }
        Ok(out)
    }

    async fn request_cancel(&self, id: Uuid) -> Result<bool> {
        self.inner
            .committer
            .write(move |txn| {
                let mut t = txn.open_table(TASKS).map_err(db_err)?;
                let current = match t.get(id.as_u128()).map_err(db_err)? {
                    Some(v) => Some(
                        serde_json::from_str::<TaskRecord>(v.value())
                            .map_err(|e| StoreError::corrupt(e.to_string()))?,
                    ),
                    None => None,
                };
                let Some(mut record) = current else {
                    return Ok(false);
                };
                record.cancel_requested = true;
                let json = serde_json::to_string(&record)
                    .map_err(|e| StoreError::corrupt(e.to_string()))?;
                t.insert(id.as_u128(), json.as_str()).map_err(db_err)?;
                Ok(true)
            })
            .await
    }

    async fn delete_task(&self, id: Uuid) -> Result<bool> {
        self.inner
            .committer
            .write(move |txn| {
                let mut t = txn.open_table(TASKS).map_err(db_err)?;
                let existed = t.remove(id.as_u128()).map_err(db_err)?.is_some();
                Ok(existed)
            })
            .await
    }
}
