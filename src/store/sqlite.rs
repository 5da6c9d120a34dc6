//! SQLite backend: WAL, a busy timeout, and timestamps as fixed-width RFC 3339 text.

mod idempotency;

use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::migrate::Migrator;
use sqlx::query::Query;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use super::{OrderRow, StoreError};
use crate::config::{DatabaseSettings, SqliteSynchronous as Synchronous};
use crate::orders::{ListFilter, Order, OrderStatus, Position};

static MIGRATOR: Migrator = sqlx::migrate!("src/store/migrations/sqlite");

const COLUMNS: &str =
    "id, customer_id, currency, items, total_minor, status, created_at, updated_at, version";

/// Orders in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub(super) fn open(cfg: &DatabaseSettings) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(cfg.url.expose())
            .map_err(|e| StoreError::Config(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match cfg.sqlite_synchronous {
                Synchronous::Off => SqliteSynchronous::Off,
                Synchronous::Normal => SqliteSynchronous::Normal,
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Extra => SqliteSynchronous::Extra,
            })
            .busy_timeout(cfg.busy_timeout)
            .foreign_keys(true);
        let file = opts.get_filename().to_path_buf();
        let in_memory = file.as_os_str().is_empty() || file.to_string_lossy().contains(":memory:");
        if !in_memory
            && let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty())
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot create the database directory");
        }
        // An in-memory database lives and dies with its one connection.
        let (max, min, idle) = if in_memory {
            (1, 1, None)
        } else {
            (
                cfg.max_connections,
                cfg.min_connections,
                Some(std::time::Duration::from_secs(600)),
            )
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .min_connections(min)
            .idle_timeout(idle)
            .max_lifetime(if in_memory {
                None
            } else {
                Some(std::time::Duration::from_secs(1800))
            })
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
        let table: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_optional(&self.pool)
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
        let mut tx = self.write().await?;
        place(&mut tx, o).await?;
        insert_query(o, items).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A transaction holding SQLite's write lock from its first statement, so that what it
    /// reads (the newest order's place) cannot change before it commits.
    pub(super) async fn write(&self) -> Result<sqlx::Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    pub(super) async fn get(&self, id: Uuid) -> Result<Option<OrderRow>, StoreError> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM orders WHERE id = ?1"));
        let row = sqlx::query(sql)
            .bind(id.hyphenated().to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| decode(&r)).transpose()
    }

    pub(super) async fn list(
        &self,
        filter: &ListFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<OrderRow>, i64), StoreError> {
        let mut query = QueryBuilder::new(format!("SELECT {COLUMNS} FROM orders WHERE TRUE"));
        push_filter(&mut query, filter);
        query.push(" ORDER BY created_at DESC, id DESC LIMIT ");
        query.push_bind(limit).push(" OFFSET ").push_bind(offset);
        let rows = query.build().fetch_all(&self.pool).await?;
        let mut count = QueryBuilder::new("SELECT COUNT(*) FROM orders WHERE TRUE");
        push_filter(&mut count, filter);
        let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
        let rows = rows.iter().map(decode).collect::<Result<_, _>>()?;
        Ok((rows, total))
    }

    pub(super) async fn list_after(
        &self,
        filter: &ListFilter,
        after: Option<Position>,
        limit: i64,
    ) -> Result<Vec<OrderRow>, StoreError> {
        let mut query = QueryBuilder::new(format!("SELECT {COLUMNS} FROM orders WHERE TRUE"));
        push_filter(&mut query, filter);
        if let Some(p) = after {
            query.push(" AND (created_at, id) < (");
            query.push_bind(timestamp(p.created_at)).push(", ");
            query.push_bind(p.id.hyphenated().to_string()).push(")");
        }
        query.push(" ORDER BY created_at DESC, id DESC LIMIT ");
        query.push_bind(limit);
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(decode).collect()
    }

    pub(super) async fn update_status(
        &self,
        id: Uuid,
        version: i64,
        status: OrderStatus,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE orders SET status = ?1, updated_at = ?2, version = version + 1 \
             WHERE id = ?3 AND version = ?4",
        )
        .bind(status.as_str())
        .bind(timestamp(now))
        .bind(id.hyphenated().to_string())
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

/// Gives `o` its place after the newest order, under the write lock of `tx`.
pub(super) async fn place(
    tx: &mut sqlx::Transaction<'static, Sqlite>,
    o: &mut Order,
) -> Result<(), StoreError> {
    let newest: Option<String> = sqlx::query_scalar("SELECT max(created_at) FROM orders")
        .fetch_one(&mut **tx)
        .await?;
    let newest = newest.and_then(|t| DateTime::parse_from_rfc3339(&t).ok().map(|t| t.to_utc()));
    let at = super::commit_time(crate::orders::now(), newest);
    o.created_at = at;
    o.updated_at = at;
    Ok(())
}

/// The INSERT of one order, for the pool or a transaction.
fn insert_query<'q>(o: &Order, items: &str) -> Query<'q, Sqlite, SqliteArguments> {
    sqlx::query(
        "INSERT INTO orders (id, customer_id, currency, items, total_minor, status, \
         created_at, updated_at, version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .bind(o.id.hyphenated().to_string())
    .bind(o.customer_id.as_str().to_string())
    .bind(o.currency.code())
    .bind(items.to_string())
    .bind(o.total_minor)
    .bind(o.status.as_str())
    .bind(timestamp(o.created_at))
    .bind(timestamp(o.updated_at))
    .bind(o.version)
}

/// Appends ` AND ...` for each filter that is set: only present conditions reach the planner,
/// so each listing uses its index.
fn push_filter(query: &mut QueryBuilder<Sqlite>, filter: &ListFilter) {
    if let Some(status) = filter.status {
        query.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(customer) = &filter.customer_id {
        query
            .push(" AND customer_id = ")
            .push_bind(customer.as_str().to_string());
    }
    if let Some(from) = filter.created_from {
        query.push(" AND created_at >= ").push_bind(timestamp(from));
    }
    if let Some(to) = filter.created_to {
        query.push(" AND created_at < ").push_bind(timestamp(to));
    }
}

/// Fixed width (microseconds, `Z`) so that text order is time order.
pub(super) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn decode(r: &SqliteRow) -> Result<OrderRow, StoreError> {
    let id: String = r.try_get("id")?;
    let corrupt = |reason: String| StoreError::Corrupt {
        id: id.clone(),
        reason,
    };
    let time = |col: &str| -> Result<DateTime<Utc>, StoreError> {
        let text: String = r.try_get(col)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| corrupt(format!("{col}: {e}")))
    };
    Ok(OrderRow {
        id: Uuid::parse_str(&id).map_err(|e| corrupt(format!("id: {e}")))?,
        customer_id: r.try_get("customer_id")?,
        currency: r.try_get("currency")?,
        items: r.try_get("items")?,
        total_minor: r.try_get("total_minor")?,
        status: r.try_get("status")?,
        created_at: time("created_at")?,
        updated_at: time("updated_at")?,
        version: r.try_get("version")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LoadOptions, Settings};

    fn settings(dir: &std::path::Path, synchronous: Option<&str>) -> DatabaseSettings {
        let mut env = vec![
            ("APP_CONFIG_DIR".to_string(), "/nonexistent".to_string()),
            ("APP_AUTH__ENABLED".to_string(), "false".to_string()),
            (
                "APP_DATABASE__URL".to_string(),
                format!("sqlite://{}", dir.join("o.db").display()),
            ),
        ];
        if let Some(value) = synchronous {
            env.push(("APP_DATABASE__SQLITE_SYNCHRONOUS".into(), value.into()));
        }
        Settings::load(&LoadOptions {
            config_file: None,
            env,
        })
        .unwrap()
        .database
    }

    async fn pragma(store: &SqliteStore) -> i64 {
        sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&store.pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn commits_are_fsynced_unless_configured_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        // 2 is FULL, 1 NORMAL (sqlite.org/pragma.html#pragma_synchronous).
        let store = SqliteStore::open(&settings(dir.path(), None)).unwrap();
        assert_eq!(pragma(&store).await, 2);
        store.close().await;
        let store = SqliteStore::open(&settings(dir.path(), Some("normal"))).unwrap();
        assert_eq!(pragma(&store).await, 1);
        store.close().await;
    }
}
