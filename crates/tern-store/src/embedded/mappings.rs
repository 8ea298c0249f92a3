//! The recipient rewrite table on the embedded store.

use super::*;
use crate::{Mapping, MappingKind, RecipientRewrites};

fn kind(name: &str) -> Result<MappingKind> {
    MappingKind::parse(name).ok_or_else(|| StoreError::corrupt(format!("mapping kind {name:?}")))
}

#[async_trait]
impl RecipientRewrites for EmbeddedStore {
    async fn add_mapping(&self, source: &str, mapping: &Mapping) -> Result<()> {
        let (source, kind, target) = (
            source.to_string(),
            mapping.kind.name(),
            mapping.target.clone(),
        );
        self.write_admin(move |txn| {
            txn.open_table(MAPPINGS)
                .map_err(db_err)?
                .insert((source.as_str(), kind, target.as_str()), ())
                .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn remove_mapping(&self, source: &str, mapping: &Mapping) -> Result<bool> {
        let (source, kind, target) = (
            source.to_string(),
            mapping.kind.name(),
            mapping.target.clone(),
        );
        self.write_admin(move |txn| {
            let removed = txn
                .open_table(MAPPINGS)
                .map_err(db_err)?
                .remove((source.as_str(), kind, target.as_str()))
                .map_err(db_err)?
                .is_some();
            Ok(removed)
        })
        .await
    }

    async fn mappings(&self, source: &str) -> Result<Vec<Mapping>> {
        let read_under = match self.inner.lookups.mappings(source) {
            Ok(known) => return Ok(known),
            Err(generation) => generation,
        };
        let txn = self.read()?;
        let t = txn.open_table(MAPPINGS).map_err(db_err)?;
        let mut out = Vec::new();
        // Kinds are capitalised ASCII names: every key of the source sorts between these.
        for row in t
            .range((source, "", "")..(source, "~", ""))
            .map_err(db_err)?
        {
            let (k, _) = row.map_err(db_err)?;
            let (_, kind_name, target) = k.value();
            out.push(Mapping::new(kind(kind_name)?, target));
        }
        self.inner
            .lookups
            .put_mappings(read_under, source, out.clone());
        Ok(out)
    }

    async fn all_mappings(&self) -> Result<Vec<(String, Mapping)>> {
        let txn = self.read()?;
        let t = txn.open_table(MAPPINGS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db_err)? {
            let (k, _) = row.map_err(db_err)?;
            let (source, kind_name, target) = k.value();
            out.push((source.to_string(), Mapping::new(kind(kind_name)?, target)));
        }
        Ok(out)
    }
}
