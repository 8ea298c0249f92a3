//! Task records on the cassandra store.

use super::*;

#[async_trait]
impl TaskStore for CassandraStore {
    async fn save_task(&self, task: &TaskRecord) -> Result<()> {
        let c = self.conn()?;
        let json = serde_json::to_string(task).map_err(|e| StoreError::corrupt(e.to_string()))?;
        c.exec(&c.st.save_task, (json, task.id)).await?;
        if task.cancel_requested {
            c.exec(&c.st.cancel_task, (task.id,)).await?;
        }
        Ok(())
    }

    async fn get_task(&self, id: Uuid) -> Result<Option<TaskRecord>> {
        let c = self.conn()?;
        let row = c
            .first_row::<(Option<String>, Option<bool>)>(&c.st.select_task, (id,))
            .await?;
        match row {
            Some((Some(json), cancel)) => {
                let mut t: TaskRecord =
                    serde_json::from_str(&json).map_err(|e| StoreError::corrupt(e.to_string()))?;
                t.cancel_requested |= cancel.unwrap_or(false);
                Ok(Some(t))
            }
            _ => Ok(None),
        }
    }

    async fn list_tasks(&self) -> Result<Vec<TaskRecord>> {
        let c = self.conn()?;
        let rows = c
            .all_rows::<(Option<String>, Option<bool>)>(&c.st.list_tasks, ())
            .await?;
        let mut out = Vec::new();
        for (json, cancel) in rows {
            let Some(json) = json else { continue };
            let mut t: TaskRecord =
                serde_json::from_str(&json).map_err(|e| StoreError::corrupt(e.to_string()))?;
            t.cancel_requested |= cancel.unwrap_or(false);
            out.push(t);
        }
        Ok(out)
    }

    async fn request_cancel(&self, id: Uuid) -> Result<bool> {
        if self.get_task(id).await?.is_none() {
            return Ok(false);
        }
        let c = self.conn()?;
        c.exec(&c.st.cancel_task, (id,)).await?;
        Ok(true)
    }

    async fn delete_task(&self, id: Uuid) -> Result<bool> {
        if self.get_task(id).await?.is_none() {
            return Ok(false);
        }
        let c = self.conn()?;
        c.exec(&c.st.delete_task, (id,)).await?;
        Ok(true)
    }
}
