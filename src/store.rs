//! Storage: SQLite (the default, one replica) or PostgreSQL (several replicas), chosen by the
//! URL scheme. SQL lives per backend in `store/sqlite.rs` and `store/postgres.rs`; both map rows
//! through [`OrderRow`] so that decoding rules exist once.

mod error;
mod postgres;
pub mod reach;
mod sql;
mod sqlite;

pub use error::StoreError;

use std::future::Future;
use std::time::{Instant, SystemTime};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::Backend;
use crate::config::DatabaseSettings;
use crate::orders::{
    Currency, CustomerId, LineItem, ListFilter, Order, OrderStatus, Position, Quantity, Sku,
};
use crate::telemetry::metrics::{DB_ERRORS, DB_QUERY_DURATION, counter_by, histogram_by};
use crate::telemetry::traces::{self, ClientSpan, Detail, SpanRecord};

/// Connection counts of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Open connections, idle or in use.
    pub open: u32,
    /// Open connections not in use.
    pub idle: u32,
    /// Capacity.
    pub max: u32,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    /// The orders on this page, newest first.
    pub items: Vec<Order>,
    /// How many orders match the filter, counted up to the cap the caller asked for: a count
    /// costs a scan of what it counts, so it stops there.
    pub total: u64,
}

/// The orders store over a lazily connected pool: building it never touches the network, so
/// the service can start (and report not-ready) while the database is down.
#[derive(Debug, Clone)]
pub enum Store {
    /// SQLite backend.
    Sqlite(sqlite::SqliteStore),
    /// PostgreSQL backend.
    Postgres(postgres::PgStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Store::Sqlite($s) => $call,
            Store::Postgres($s) => $call,
        }
    };
}

mod idempotency;

impl Store {
    /// Builds the pool for `cfg.url` without connecting.
    pub fn open(cfg: &DatabaseSettings) -> Result<Self, StoreError> {
        match cfg.url.backend() {
            Some(Backend::Sqlite) => sqlite::SqliteStore::open(cfg).map(Self::Sqlite),
            Some(Backend::Postgres) => postgres::PgStore::open(cfg).map(Self::Postgres),
            None => Err(StoreError::Config("unsupported scheme".into())),
        }
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    /// Applies pending migrations (PostgreSQL serialises concurrent runs with an advisory lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.observe("migrate", async { dispatch!(self, s => s.migrate().await) })
            .await
    }

    /// How many embedded migrations are not applied yet.
    pub async fn pending_migrations(&self) -> Result<usize, StoreError> {
        let applied = dispatch!(self, s => s.applied_migrations().await)?;
        let migrator = dispatch!(self, s => s.migrator());
        Ok(migrator
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .count())
    }

    /// A round trip to the database. Timed and counted but not traced: readiness probes call
    /// it every few seconds, and each would become a trace of its own.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.untraced("ping", async { dispatch!(self, s => s.ping().await) })
            .await
    }

    /// Times `op` and counts its failures, without a span: for work no request asked for.
    async fn untraced<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let start = Instant::now();
        let result = fut.await;
        record(&result, op, start);
        result
    }

    /// Stores a new order, giving it its place in the listing: `created_at` (and `updated_at`)
    /// are set when it commits, later than every order committed before it, so that the
    /// newest-first order is commit order.
    pub async fn insert(&self, order: &mut Order) -> Result<(), StoreError> {
        let items = encode_items(&order.items);
        self.observe("insert_order", async {
            dispatch!(self, s => s.insert(order, &items).await)
        })
        .await
    }

    /// One order by id.
    pub async fn get(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        self.observe("get_order", async {
            let row = dispatch!(self, s => s.get(id).await)?;
            row.map(Order::try_from).transpose()
        })
        .await
    }

    /// A page of orders, newest first, ties broken by id so the order is stable.
    pub async fn list(
        &self,
        filter: &ListFilter,
        limit: u32,
        offset: u64,
        count_up_to: u64,
    ) -> Result<Page, StoreError> {
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let cap = i64::try_from(count_up_to).unwrap_or(i64::MAX);
        self.observe("list_orders", async {
            let (rows, total) =
                dispatch!(self, s => s.list(filter, i64::from(limit), offset, cap).await)?;
            let items = rows
                .into_iter()
                .map(Order::try_from)
                .collect::<Result<_, _>>()?;
            Ok(Page {
                items,
                total: u64::try_from(total).unwrap_or_default(),
            })
        })
        .await
    }

    /// Up to `limit` orders strictly after `after` in the newest-first order (from the newest
    /// when `None`). Keyset paging: an insert between two pages can never skip or repeat a row.
    pub async fn list_after(
        &self,
        filter: &ListFilter,
        after: Option<Position>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        self.observe("list_orders", async {
            let rows = dispatch!(self, s => s.list_after(filter, after, i64::from(limit)).await)?;
            rows.into_iter().map(Order::try_from).collect()
        })
        .await
    }

    /// Sets the status if the order is still at `version`; `false` when someone else changed
    /// it first (or it is gone).
    pub async fn update_status(
        &self,
        id: Uuid,
        version: i64,
        status: OrderStatus,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.observe("update_status", async {
            dispatch!(self, s => s.update_status(id, version, status, now).await)
        })
        .await
    }

    /// Open, idle and maximum connections.
    pub fn pool_stats(&self) -> PoolStats {
        dispatch!(self, s => s.pool_stats())
    }

    /// Times `op` on the orders table, counts its failures and wraps it in a client span.
    async fn observe<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.observe_in("orders", op, fut).await
    }

    /// Times `op` on `table`, counts its failures and wraps it in a client span.
    async fn observe_in<T>(
        &self,
        table: &'static str,
        op: &'static str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        // The client span is for trace export only (no log line reads it): it is recorded only
        // inside a request that is itself recorded for export.
        let parent =
            crate::context::RequestContext::exported_parent().map(|p| (p, SystemTime::now()));
        let start = Instant::now();
        reach::Reach::started();
        let result = fut.await;
        reach::Reach::finished(&result);
        record(&result, op, start);
        if let Some(((trace_id, parent), started)) = parent {
            traces::submit(SpanRecord {
                trace_id,
                span_id: traces::new_span_id(),
                parent: Some(parent.span_id),
                remote_parent: false,
                trace_state: parent.trace_state,
                start: started,
                end: SystemTime::now(),
                detail: Detail::Client(ClientSpan {
                    system: match self {
                        Self::Sqlite(_) => "sqlite",
                        Self::Postgres(_) => "postgresql",
                    },
                    operation: op,
                    collection: table,
                    error: result.as_ref().err().map(StoreError::kind),
                }),
            });
        }
        result
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        dispatch!(self, s => s.close().await);
    }
}

/// The place of an order committed now: `now`, or just after the newest order so far when the
/// clock has not moved past it (the same microsecond, or a clock that stepped back).
pub(crate) fn commit_time(now: DateTime<Utc>, newest: Option<DateTime<Utc>>) -> DateTime<Utc> {
    match newest {
        Some(newest) if newest >= now => newest + chrono::TimeDelta::microseconds(1),
        _ => now,
    }
}

/// Latency and failure metrics of one database operation.
fn record<T>(result: &Result<T, StoreError>, op: &'static str, start: Instant) {
    histogram_by(DB_QUERY_DURATION, "operation", op).record(start.elapsed().as_secs_f64());
    if let Err(e) = result {
        counter_by(DB_ERRORS, "kind", e.kind()).increment(1);
    }
}

/// A line item as stored in the `items` JSON column.
#[derive(Serialize, Deserialize)]
struct StoredItem {
    sku: String,
    quantity: i64,
    unit_price_minor: i64,
}

pub(crate) fn encode_items(items: &[LineItem]) -> String {
    let stored: Vec<StoredItem> = items
        .iter()
        .map(|i| StoredItem {
            sku: i.sku.as_str().to_string(),
            quantity: i64::from(i.quantity.get()),
            unit_price_minor: i.unit_price_minor,
        })
        .collect();
    serde_json::to_string(&stored).unwrap_or_else(|_| "[]".into())
}

/// A row as both backends return it, before domain parsing.
pub(crate) struct OrderRow {
    pub(crate) id: Uuid,
    pub(crate) customer_id: String,
    pub(crate) currency: String,
    pub(crate) items: String,
    pub(crate) total_minor: i64,
    pub(crate) status: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) version: i64,
}

impl TryFrom<OrderRow> for Order {
    type Error = StoreError;

    fn try_from(row: OrderRow) -> Result<Self, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            id: row.id.to_string(),
            reason,
        };
        let stored: Vec<StoredItem> =
            serde_json::from_str(&row.items).map_err(|e| corrupt(format!("items: {e}")))?;
        let items = stored
            .into_iter()
            .map(|i| {
                Ok(LineItem {
                    sku: Sku::parse(&i.sku).map_err(|e| format!("sku {e}"))?,
                    quantity: Quantity::try_from(i.quantity)
                        .map_err(|e| format!("quantity {e}"))?,
                    unit_price_minor: i.unit_price_minor,
                })
            })
            .collect::<Result<_, String>>()
            .map_err(corrupt)?;
        Ok(Order {
            id: row.id,
            customer_id: CustomerId::parse(&row.customer_id)
                .map_err(|e| corrupt(format!("customer_id {e}")))?,
            currency: Currency::parse(&row.currency)
                .map_err(|e| corrupt(format!("currency {e}")))?,
            items,
            total_minor: row.total_minor,
            status: OrderStatus::parse(&row.status)
                .ok_or_else(|| corrupt(format!("status {:?}", row.status)))?,
            created_at: row.created_at,
            updated_at: row.updated_at,
            version: row.version,
        })
    }
}
