//! Rows in and out of SQLite: the order INSERT, a built query's rows (times as the fixed-width
//! text of [`crate::orders::timestamp`], so that text order is time order), and what a SQLite
//! error means.

use rusqlite::types::Value;
use rusqlite::{Connection, Row};
use uuid::Uuid;

use crate::orders::{Order, timestamp};
use crate::store::sql::{Param, Query};
use crate::store::{OrderRow, StoreError};

/// The INSERT of one order, placed.
pub(super) fn insert(conn: &Connection, o: &Order, items: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO orders (id, customer_id, currency, items, total_minor, status, \
         created_at, updated_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .and_then(|mut s| {
        s.execute(rusqlite::params![
            o.id.hyphenated().to_string(),
            o.customer_id.as_str(),
            o.currency.code(),
            items,
            o.total_minor,
            o.status.as_str(),
            timestamp::format(o.created_at),
            timestamp::format(o.updated_at),
            o.version,
        ])
    })
    .map_err(from_sqlite)?;
    Ok(())
}

/// The rows of a built query.
pub(super) fn rows(conn: &Connection, q: &Query) -> Result<Vec<OrderRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&q.sql).map_err(from_sqlite)?;
    let rows = stmt
        .query_map(params(q), decode)
        .map_err(from_sqlite)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(from_sqlite)?;
    rows.into_iter().collect()
}

/// A built query's parameters as SQLite holds them: times as fixed-width text, ids hyphenated.
pub(super) fn params(q: &Query) -> rusqlite::ParamsFromIter<Vec<Value>> {
    rusqlite::params_from_iter(
        q.params
            .iter()
            .map(|p| match p {
                Param::Text(s) => Value::Text(s.clone()),
                Param::Int(n) => Value::Integer(*n),
                Param::Time(t) => Value::Text(timestamp::format(*t)),
                Param::Id(id) => Value::Text(id.hyphenated().to_string()),
            })
            .collect(),
    )
}

/// A row, as far as SQLite can tell; the caller decodes the domain (a bad value is a corrupt
/// row, not a failed query).
pub(super) fn decode(r: &Row<'_>) -> rusqlite::Result<Result<OrderRow, StoreError>> {
    let id: String = r.get(0)?;
    let created_at: String = r.get(6)?;
    let updated_at: String = r.get(7)?;
    let fields = (
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(8)?,
    );
    Ok((|| {
        let corrupt = |reason: String| StoreError::Corrupt {
            id: id.clone(),
            reason,
        };
        let time = |col: &str, text: &str| {
            timestamp::parse(text).ok_or_else(|| corrupt(format!("{col}: {text:?}")))
        };
        let (customer_id, currency, items, total_minor, status, version) = fields;
        Ok(OrderRow {
            id: Uuid::parse_str(&id).map_err(|e| corrupt(format!("id: {e}")))?,
            customer_id,
            currency,
            items,
            total_minor,
            status,
            created_at: time("created_at", &created_at)?,
            updated_at: time("updated_at", &updated_at)?,
            version,
        })
    })())
}

/// What a SQLite error means for the caller: the database is busy, out of space or cannot be
/// read (503, a database failure), or a bug of ours (500).
pub(super) fn from_sqlite(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(
            C::DatabaseBusy
            | C::DatabaseLocked
            | C::CannotOpen
            | C::SystemIoFailure
            | C::DiskFull
            | C::OutOfMemory
            | C::ReadOnly
            | C::FileLockingProtocolFailed,
        ) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Internal(e.to_string()),
    }
}
