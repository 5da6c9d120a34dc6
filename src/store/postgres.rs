//! PostgreSQL backend: native UUID, JSONB and TIMESTAMPTZ columns.

mod idempotency;

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row};
use uuid::Uuid;

use super::sql::{self, Param, Query};
use super::{OrderRow, StoreError};
use crate::config::DatabaseSettings;
use crate::orders::{ListFilter, Order, OrderStatus, Position};

static MIGRATOR: Migrator = sqlx::migrate!("src/store/migrations/postgres");

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

    /// Runs the migrator on one connection of its own. The migrator takes a session advisory
    /// lock and, when it fails part-way (a migration the binary does not know, a checksum that
    /// differs), returns without releasing it. Back in the pool, that connection would hold the
    /// lock for good: every later run on every replica would wait on it, and the pool would
    /// never close. So a connection whose run failed is closed instead of returned, and its
    /// session ends with its lock.
    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        match MIGRATOR.run_direct(None, &mut *conn, false).await {
            Ok(()) => Ok(()),
            Err(e) => {
                if let Err(close) = sqlx::Connection::close(conn.detach()).await {
                    tracing::debug!(error = %close, "closing the failed migration's connection");
                }
                Err(e.into())
            }
        }
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

    pub(super) async fn insert(&self, o: &mut Order, items: &str) -> Result<(), StoreError> {
        let at = insert_query(o, items).fetch_one(&self.pool).await?;
        o.created_at = at;
        o.updated_at = at;
        Ok(())
    }

    pub(super) async fn get(&self, id: Uuid) -> Result<Option<OrderRow>, StoreError> {
        let row = sqlx::query(sql::GET_ORDER)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| decode(&r)).transpose()
    }

    pub(super) async fn list(
        &self,
        filter: &ListFilter,
        limit: i64,
        offset: i64,
        cap: i64,
    ) -> Result<(Vec<OrderRow>, i64), StoreError> {
        let page = sql::list(filter, None, limit, Some(offset));
        let rows = bound(&page).fetch_all(&self.pool).await?;
        let count = sql::count(filter, cap);
        let total: i64 = bound(&count).fetch_one(&self.pool).await?.try_get(0)?;
        let rows = rows.iter().map(decode).collect::<Result<_, _>>()?;
        Ok((rows, total))
    }

    pub(super) async fn list_after(
        &self,
        filter: &ListFilter,
        after: Option<Position>,
        limit: i64,
    ) -> Result<Vec<OrderRow>, StoreError> {
        let page = sql::list(filter, after, limit, None);
        let rows = bound(&page).fetch_all(&self.pool).await?;
        rows.iter().map(decode).collect()
    }

    pub(super) async fn update_status(
        &self,
        id: Uuid,
        version: i64,
        status: OrderStatus,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(sql::UPDATE_STATUS)
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

/// The INSERT of one order, for the pool or a transaction, returning its place. The place comes
/// from the one-row `order_clock`: the UPDATE takes that row's lock until the transaction ends,
/// and (in READ COMMITTED) reads the latest committed time, so every create commits after the
/// one before it and later than it, whichever replica runs it. A sequence would not do: its
/// values are handed out at insert, and transactions commit in any order.
fn insert_query<'q>(
    o: &Order,
    items: &str,
) -> sqlx::query::QueryScalar<'q, Postgres, DateTime<Utc>, PgArguments> {
    sqlx::query_scalar(
        "WITH clock AS (UPDATE order_clock \
         SET t = GREATEST(clock_timestamp(), t + interval '1 microsecond') RETURNING t) \
         INSERT INTO orders (id, customer_id, currency, items, total_minor, status, \
         created_at, updated_at, version) \
         SELECT $1, $2, $3, $4::jsonb, $5, $6, clock.t, clock.t, $7 FROM clock \
         RETURNING created_at",
    )
    .bind(o.id)
    .bind(o.customer_id.as_str().to_string())
    .bind(o.currency.code())
    .bind(items.to_string())
    .bind(o.total_minor)
    .bind(o.status.as_str())
    .bind(o.version)
}

/// A built query with its parameters bound as PostgreSQL types.
fn bound(q: &Query) -> sqlx::query::Query<'_, Postgres, PgArguments> {
    q.params.iter().fold(
        sqlx::query(sqlx::AssertSqlSafe(q.sql.as_str())),
        |query, p| match p {
            Param::Text(s) => query.bind(s.as_str()),
            Param::Int(n) => query.bind(*n),
            Param::Time(t) => query.bind(*t),
            Param::Id(id) => query.bind(*id),
        },
    )
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
