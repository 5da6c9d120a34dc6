//! PostgreSQL backend: native UUID, JSONB and TIMESTAMPTZ columns.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use uuid::Uuid;

use super::{OrderRow, StoreError};
use crate::config::DatabaseSettings;
use crate::orders::{ListFilter, Order, OrderStatus};

static MIGRATOR: Migrator = sqlx::migrate!("src/store/migrations/postgres");

const COLUMNS: &str = "id, customer_id, currency, items::text AS items, total_minor, status, \
                       created_at, updated_at, version";

/// Orders in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub(super) fn open(cfg: &DatabaseSettings) -> Result<Self, StoreError> {
        let opts = PgConnectOptions::from_str(cfg.url.expose())
            .map_err(|e| StoreError::Config(e.to_string()))?
            .application_name("orders-api")
            .options([(
                "statement_timeout",
                cfg.statement_timeout.as_millis().to_string(),
            )]);
        let pool = PgPoolOptions::new()
            .max_connections(cfg.max_connections)
            .min_connections(cfg.min_connections)
            .acquire_timeout(cfg.acquire_timeout)
            .connect_lazy_with(opts);
        Ok(Self { pool })
    }

    pub(super) fn migrator(&self) -> &'static Migrator {
        &MIGRATOR
    }

    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        Ok(MIGRATOR.run(&self.pool).await?)
    }

    pub(super) async fn applied_migrations(&self) -> Result<Vec<i64>, StoreError> {
        let table: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
                .fetch_one(&self.pool)
                .await?;
        if table.is_none() {
            return Ok(Vec::new());
        }
        Ok(
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(super) async fn insert(&self, o: &Order, items: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO orders (id, customer_id, currency, items, total_minor, status, \
             created_at, updated_at, version) VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9)",
        )
        .bind(o.id)
        .bind(o.customer_id.as_str())
        .bind(o.currency.code())
        .bind(items)
        .bind(o.total_minor)
        .bind(o.status.as_str())
        .bind(o.created_at)
        .bind(o.updated_at)
        .bind(o.version)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn get(&self, id: Uuid) -> Result<Option<OrderRow>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM orders WHERE id = $1"));
        let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
        row.map(|r| decode(&r)).transpose()
    }

    pub(super) async fn list(
        &self,
        filter: &ListFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<OrderRow>, i64), StoreError> {
        const WHERE: &str =
            "($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR customer_id = $2)";
        let status = filter.status.map(OrderStatus::as_str);
        let customer = filter.customer_id.as_ref().map(|c| c.as_str());
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM orders WHERE {WHERE} \
             ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
        ));
        let rows = sqlx::query(sql)
            .bind(status)
            .bind(customer)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        let count = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM orders WHERE {WHERE}"));
        let total: i64 = sqlx::query_scalar(count)
            .bind(status)
            .bind(customer)
            .fetch_one(&self.pool)
            .await?;
        let rows = rows.iter().map(decode).collect::<Result<_, _>>()?;
        Ok((rows, total))
    }

    pub(super) async fn update_status(
        &self,
        id: Uuid,
        version: i64,
        status: OrderStatus,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE orders SET status = $1, updated_at = $2, version = version + 1 \
             WHERE id = $3 AND version = $4",
        )
        .bind(status.as_str())
        .bind(now)
        .bind(id)
        .bind(version)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) fn pool_stats(&self) -> super::PoolStats {
        super::PoolStats {
            open: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.pool.options().get_max_connections(),
        }
    }

    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}

fn decode(r: &PgRow) -> Result<OrderRow, StoreError> {
    Ok(OrderRow {
        id: r.try_get("id")?,
        customer_id: r.try_get("customer_id")?,
        currency: r.try_get("currency")?,
        items: r.try_get("items")?,
        total_minor: r.try_get("total_minor")?,
        status: r.try_get("status")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        version: r.try_get("version")?,
    })
}
