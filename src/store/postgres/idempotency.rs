//! Idempotency records in PostgreSQL.

use std::sync::Arc;

use sqlx::Row;

use super::{PgStore, insert_query};
use crate::idempotency::{Hold, Render, StoredResponse};
use crate::orders::Order;
use crate::store::idempotency::{ExistingRecord, encode_headers};
use crate::store::{StoreError, sql};

impl PgStore {
    /// Takes the key for `hold` (see [`sql::TAKE_KEY`]); `false` when it is held or completed.
    pub(in crate::store) async fn take(&self, hold: &Hold) -> Result<bool, StoreError> {
        let taken = sqlx::query(sql::TAKE_KEY)
            .bind(&hold.scope)
            .bind(hold.key.as_str())
            .bind(&hold.fingerprint)
            .bind(hold.locked_until)
            .bind(hold.created_at)
            .bind(hold.expires_at)
            .execute(&self.pool)
            .await?;
        Ok(taken.rows_affected() == 1)
    }

    /// The record of the hold's scope and key, if there is one.
    pub(in crate::store) async fn existing(
        &self,
        hold: &Hold,
    ) -> Result<Option<ExistingRecord>, StoreError> {
        let row = sqlx::query(sql::EXISTING_KEY)
            .bind(&hold.scope)
            .bind(hold.key.as_str())
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(ExistingRecord {
            fingerprint: r.try_get("fingerprint")?,
            status: r.try_get("status")?,
            headers: r.try_get("headers")?,
            body: r.try_get("body")?,
        }))
    }

    pub(in crate::store) async fn insert_completing(
        &self,
        order: &mut Order,
        items: &str,
        hold: &Hold,
        render: &Arc<Render>,
    ) -> Result<Option<StoredResponse>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let at = insert_query(order, items).fetch_one(&mut *tx).await?;
        order.created_at = at;
        order.updated_at = at;
        let response = render(order).map_err(StoreError::Encode)?;
        let done = sqlx::query(sql::COMPLETE_KEY)
            .bind(i32::from(response.status))
            .bind(encode_headers(&response.headers))
            .bind(response.body.as_slice())
            .bind(&hold.scope)
            .bind(hold.key.as_str())
            .bind(hold.created_at)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some(response))
    }

    pub(in crate::store) async fn release(&self, hold: &Hold) -> Result<(), StoreError> {
        sqlx::query(sql::RELEASE_KEY)
            .bind(&hold.scope)
            .bind(hold.key.as_str())
            .bind(hold.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(in crate::store) async fn purge_idempotency(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(sqlx::AssertSqlSafe(sql::purge_keys("ctid")))
            .bind(now)
            .bind(batch)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
