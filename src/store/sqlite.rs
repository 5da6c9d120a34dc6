//! SQLite backend (rusqlite), built so that a request never waits on another thread:
//!
//! - **Reads** that are bounded (one order by id, a keyset page of at most 100 rows, a ping)
//!   run on the calling worker thread, on a connection taken from a small stack of read
//!   connections, with cached prepared statements. WAL readers never wait for the writer.
//! - **Unbounded reads** (a count, an offset scan, the migration check) go to tokio's blocking
//!   pool, so that they cannot stall a worker.
//! - **Writes** go to the one writer thread ([`writer`]), which group-commits.
//!
//! Timestamps are fixed-width RFC 3339 text (microseconds, `Z`), so text order is time order.

mod idempotency;
mod migrate;
mod readers;
mod rows;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use uuid::Uuid;

use super::sql;
use super::{OrderRow, PoolStats, StoreError};
use crate::config::{DatabaseSettings, SqliteSynchronous};
use crate::orders::{ListFilter, Order, OrderStatus, Position, timestamp};

use rows::{decode, from_sqlite, insert, params, rows};

/// Prepared statements each connection keeps.
const STATEMENT_CACHE: usize = 32;

/// How to open connections to the database file.
#[derive(Debug, Clone)]
struct Connector {
    /// The file (or a shared in-memory database's URI).
    path: String,
    in_memory: bool,
    busy_timeout: Duration,
    synchronous: SqliteSynchronous,
}

impl Connector {
    fn from_settings(cfg: &DatabaseSettings) -> Result<Self, StoreError> {
        let url = cfg.url.expose();
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| StoreError::Config("expected sqlite:PATH or sqlite://PATH".into()))?;
        let (file, _options) = rest.split_once('?').unwrap_or((rest, ""));
        let in_memory = file.is_empty() || file == ":memory:";
        let path = if in_memory {
            // One in-memory database per store, shared by its connections.
            format!(
                "file:orders-{}?mode=memory&cache=shared",
                Uuid::now_v7().simple()
            )
        } else {
            file.to_string()
        };
        Ok(Self {
            path,
            in_memory,
            busy_timeout: cfg.busy_timeout,
            synchronous: cfg.sqlite_synchronous,
        })
    }

    fn open(&self, flags: OpenFlags) -> Result<Connection, StoreError> {
        let flags = flags | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(from_sqlite)?;
        conn.busy_timeout(self.busy_timeout).map_err(from_sqlite)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // The bundled SQLite (3.50) reads a bound `LIMIT` while planning, and then re-prepares
        // the statement every time that parameter is bound anew: a cached list statement was
        // parsed and planned again on every page. The query planner stability guarantee keeps
        // bound values out of planning, so a cached statement stays prepared. Nothing here
        // relies on them: no LIKE on a parameter, no partial index, no STAT4 samples (nothing
        // runs ANALYZE). Without the LIMIT's value a sort may look cheaper to the planner;
        // `every_listing_walks_an_index_in_order` checks that no listing sorts.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(from_sqlite)?;
        conn.execute_batch("PRAGMA foreign_keys = ON")
            .map_err(from_sqlite)?;
        Ok(conn)
    }

    /// The write connection: it creates the file (and its directory) and sets the journal.
    fn open_writer(&self) -> Result<Connection, StoreError> {
        if !self.in_memory
            && let Some(dir) = PathBuf::from(&self.path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let conn = self.open(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?;
        let synchronous = match self.synchronous {
            SqliteSynchronous::Off => "OFF",
            SqliteSynchronous::Normal => "NORMAL",
            SqliteSynchronous::Full => "FULL",
            SqliteSynchronous::Extra => "EXTRA",
        };
        // WAL: readers never wait for the writer. The WAL file is cut back to 64 MiB after a
        // checkpoint, so one burst of writes does not keep its disk space for ever.
        let journal = if self.in_memory { "MEMORY" } else { "WAL" };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = {journal}; PRAGMA synchronous = {synchronous}; \
             PRAGMA journal_size_limit = 67108864;"
        ))
        .map_err(from_sqlite)?;
        Ok(conn)
    }

    /// A read connection; it may not write. (An in-memory database, for tests, is one shared
    /// cache with table locks instead of a WAL: its readers read uncommitted rows rather than
    /// wait for the writer's lock.)
    fn open_reader(&self) -> Result<Connection, StoreError> {
        let conn = self.open(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?;
        let uncommitted = if self.in_memory { "ON" } else { "OFF" };
        conn.execute_batch(&format!(
            "PRAGMA query_only = ON; PRAGMA read_uncommitted = {uncommitted};"
        ))
        .map_err(from_sqlite)?;
        Ok(conn)
    }
}

/// Orders in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    connector: Connector,
    readers: Arc<readers::Readers>,
    max_idle: usize,
    /// Turns for reads in the blocking pool.
    blocking: tokio::sync::Semaphore,
    writer: writer::Writer,
}

impl SqliteStore {
    pub(super) fn open(cfg: &DatabaseSettings) -> Result<Self, StoreError> {
        let connector = Connector::from_settings(cfg)?;
        let max_idle = cfg.max_connections as usize;
        let readers = Arc::new(readers::Readers::new(max_idle, !connector.in_memory));
        let writer =
            writer::Writer::start(connector.clone(), cfg.write_queue as usize, readers.clone())
                .map_err(|e| StoreError::Config(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                connector,
                readers,
                max_idle,
                blocking: tokio::sync::Semaphore::new(max_idle.max(1)),
                writer,
            }),
        })
    }

    /// Runs `f` on a read connection, on this thread: for bounded statements only.
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.inner.readers.read(&self.inner.connector, f)
    }

    /// Runs `f` on a read connection in the blocking pool: for statements whose cost grows
    /// with the table. At most `database.max_connections` run at once (each holds a
    /// connection and its page cache); more wait their turn.
    async fn read_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let _turn = self
            .inner
            .blocking
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read(f))
            .await
            .map_err(|e| StoreError::Internal(format!("a blocking read failed: {e}")))?
    }

    fn writer(&self) -> &writer::Writer {
        &self.inner.writer
    }

    pub(super) fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        &migrate::MIGRATOR
    }

    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        self.inner.writer.alone(|s| migrate::run(s.conn)).await
    }

    pub(super) async fn applied_migrations(&self) -> Result<Vec<i64>, StoreError> {
        self.read_blocking(migrate::applied).await
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT 1")
                .and_then(|mut s| s.query_row([], |_| Ok(())))
                .map_err(from_sqlite)
        })
    }

    pub(super) async fn insert(&self, o: &mut Order, items: &str) -> Result<(), StoreError> {
        let (mut placed, items) = (o.clone(), items.to_string());
        let at = self
            .inner
            .writer
            .write(move |s| {
                placed.created_at = s.place()?;
                placed.updated_at = placed.created_at;
                insert(s.conn, &placed, &items)?;
                Ok(placed.created_at)
            })
            .await?;
        o.created_at = at;
        o.updated_at = at;
        Ok(())
    }

    pub(super) async fn get(&self, id: Uuid) -> Result<Option<OrderRow>, StoreError> {
        self.read(|c| {
            c.prepare_cached(sql::GET_ORDER)
                .and_then(|mut s| {
                    s.query_row([id.hyphenated().to_string()], decode)
                        .optional()
                })
                .map_err(from_sqlite)?
                .transpose()
        })
    }

    pub(super) async fn list(
        &self,
        filter: &ListFilter,
        limit: i64,
        offset: i64,
        cap: i64,
    ) -> Result<(Vec<OrderRow>, i64), StoreError> {
        // An offset scan and a count grow with the table: the blocking pool's.
        let (page, count) = (
            sql::list(filter, None, limit, Some(offset)),
            sql::count(filter, cap),
        );
        self.read_blocking(move |c| {
            let rows = rows(c, &page)?;
            let total = c
                .prepare_cached(&count.sql)
                .and_then(|mut s| s.query_row(params(&count), |r| r.get(0)))
                .map_err(from_sqlite)?;
            Ok((rows, total))
        })
        .await
    }

    pub(super) async fn list_after(
        &self,
        filter: &ListFilter,
        after: Option<Position>,
        limit: i64,
    ) -> Result<Vec<OrderRow>, StoreError> {
        let page = sql::list(filter, after, limit, None);
        self.read(|c| rows(c, &page))
    }

    pub(super) async fn update_status(
        &self,
        id: Uuid,
        version: i64,
        status: OrderStatus,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.inner
            .writer
            .write(move |s| {
                let changed = s
                    .conn
                    .prepare_cached(sql::UPDATE_STATUS)
                    .and_then(|mut st| {
                        st.execute(rusqlite::params![
                            status.as_str(),
                            timestamp::format(now),
                            id.hyphenated().to_string(),
                            version
                        ])
                    })
                    .map_err(from_sqlite)?;
                Ok(changed == 1)
            })
            .await
    }

    pub(super) fn pool_stats(&self) -> PoolStats {
        let (idle, readers) = self.inner.readers.counts();
        // The writer's connection counts as one in use.
        PoolStats {
            open: readers + 1,
            idle: u32::try_from(idle).unwrap_or(u32::MAX),
            max: u32::try_from(self.inner.max_idle).unwrap_or(u32::MAX) + 1,
        }
    }

    pub(super) async fn close(&self) {
        let store = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            store.inner.writer.stop();
            store.inner.readers.clear();
        })
        .await;
    }
}

#[cfg(test)]
mod tests;
