//! Idempotency records in PostgreSQL.

use sqlx::Row;

use super::{PgStore, insert_query};
use crate::idempotency::{Hold, Render, StoredResponse};
use crate::orders::Order;
use crate::store::StoreError;
use crate::store::idempotency::{ExistingRecord, encode_headers};

impl PgStore {
    /// Inserts the hold, or takes over a completed record that expired or a hold whose request
    /// ran out of time (a hold never expires by the TTL: its request may still be running);
    /// `false` when the key is held or completed.
    pub(in crate::store) async fn take(&self, hold: &Hold) -> Result<bool, StoreError> {
        let taken = sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, status, headers, body, \
             locked_until, created_at, expires_at) VALUES ($1, $2, $3, NULL, NULL, NULL, $4, $5, $6) \
             ON CONFLICT (scope, key) DO UPDATE SET fingerprint = excluded.fingerprint, \
             status = NULL, headers = NULL, body = NULL, locked_until = excluded.locked_until, \
             created_at = excluded.created_at, expires_at = excluded.expires_at \
             WHERE (idempotency_keys.status IS NOT NULL AND idempotency_keys.expires_at <= $5) \
             OR (idempotency_keys.status IS NULL AND idempotency_keys.locked_until <= $5)",
        )
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
        let row = sqlx::query(
            "SELECT fingerprint, CAST(status AS BIGINT) AS status, headers, body FROM idempotency_keys \
             WHERE scope = $1 AND key = $2",
        )
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
        render: &Render,
    ) -> Result<Option<StoredResponse>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let at = insert_query(order, items).fetch_one(&mut *tx).await?;
        order.created_at = at;
        order.updated_at = at;
        let response = render(order).map_err(StoreError::Encode)?;
        let done = sqlx::query(
            "UPDATE idempotency_keys SET status = $1, headers = $2, body = $3 \
             WHERE scope = $4 AND key = $5 AND created_at = $6 AND status IS NULL",
        )
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
        sqlx::query(
            "DELETE FROM idempotency_keys \
             WHERE scope = $1 AND key = $2 AND created_at = $3 AND status IS NULL",
        )
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
        let done = sqlx::query(
            "DELETE FROM idempotency_keys WHERE ctid IN \
             (SELECT ctid FROM idempotency_keys \
             WHERE (status IS NOT NULL AND expires_at <= $1) \
             OR (status IS NULL AND locked_until <= $1) LIMIT $2)",
        )
        .bind(now)
        .bind(batch)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
