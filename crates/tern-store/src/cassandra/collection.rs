//! Collection of unreferenced bodies on the cassandra store.

use super::*;
use futures_util::StreamExt;

#[async_trait]
impl BodyCollection for CassandraStore {
    fn all_bodies(&self) -> ScanStream<'_, BlobId> {
        let partitions = paged(self.clone(), |store, cursor| async move {
            store.scan_bodies_page(cursor, SCAN_PAGE).await
        });
        // An object whose upload finished but whose partition was never written (the node
        // stopped in between) is found only in the object store's listing.
        match &self.inner.objects {
            Some(objects) => partitions.chain(objects.list()).boxed(),
            None => partitions,
        }
    }

    async fn remove_body_if_unreferenced(&self, blob: BlobId) -> Result<bool> {
        let c = self.conn()?;
        // In-flight first, references second: a delivery clears its marker only after its
        // references are written, so a body seen neither in flight nor referenced can never
        // be referenced later.
        if c.first_row::<(Uuid,)>(&c.st.collector_select_in_flight, (blob.0,))
            .await?
            .is_some()
        {
            return Ok(false);
        }
        let row = c
            .first_row::<(Option<Vec<CqlTimeuuid>>, Option<i32>)>(
                &c.st.collector_select_refs,
                (blob.0,),
            )
            .await?;
        let Some((refs, chunks)) = row else {
            // No partition and no marker: an object left by an upload whose delivery never
            // wrote the partition (a delivery writes the partition before it clears the
            // marker), if there is one.
            return match &c.objects {
                Some(objects) if objects.contains(blob).await? => {
                    objects.remove(blob).await?;
                    Ok(true)
                }
                _ => Ok(false),
            };
        };
        if refs.is_some_and(|r| !r.is_empty()) {
            return Ok(false);
        }
        body::remove(c, blob.0, chunks == Some(0)).await?;
        Ok(true)
    }
}

impl CassandraStore {
    pub(crate) async fn scan_bodies_page(
        &self,
        cursor: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<ScanPage<BlobId>> {
        let c = self.conn()?;
        let (rows, next) = c
            .page::<(Uuid,)>(&c.st.scan_bodies, (), cursor, limit)
            .await?;
        Ok(ScanPage {
            items: rows.into_iter().map(|r| BlobId(r.0)).collect(),
            next,
        })
    }
}
