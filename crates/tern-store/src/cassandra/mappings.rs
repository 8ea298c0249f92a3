//! The recipient rewrite table on Cassandra: table `mappings ((source), kind, target)`, one
//! partition per source, so resolving a recipient is one partition read per step.

use super::*;
use crate::{Mapping, MappingKind, RecipientRewrites};

fn kind(name: &str) -> Result<MappingKind> {
    MappingKind::parse(name).ok_or_else(|| StoreError::corrupt(format!("mapping kind {name:?}")))
}

#[async_trait]
impl RecipientRewrites for CassandraStore {
    async fn add_mapping(&self, source: &str, mapping: &Mapping) -> Result<()> {
        let c = self.conn()?;
        c.exec(
            &c.st.insert_mapping,
            (source, mapping.kind.name(), mapping.target.as_str()),
        )
        .await?;
        Ok(())
    }

    async fn remove_mapping(&self, source: &str, mapping: &Mapping) -> Result<bool> {
        let existed = self.mappings(source).await?.contains(mapping);
        let c = self.conn()?;
        c.exec(
            &c.st.delete_mapping,
            (source, mapping.kind.name(), mapping.target.as_str()),
        )
        .await?;
        Ok(existed)
    }

    async fn mappings(&self, source: &str) -> Result<Vec<Mapping>> {
        let c = self.conn()?;
        let rows = c
            .all_rows::<(String, String)>(&c.st.select_mappings, (source,))
            .await?;
        rows.into_iter()
            .map(|(k, target)| Ok(Mapping::new(kind(&k)?, target)))
            .collect()
    }

    async fn all_mappings(&self) -> Result<Vec<(String, Mapping)>> {
        let c = self.conn()?;
        let rows = c
            .all_rows::<(String, String, String)>(&c.st.scan_mappings, ())
            .await?;
        rows.into_iter()
            .map(|(source, k, target)| Ok((source, Mapping::new(kind(&k)?, target))))
            .collect()
    }
}
