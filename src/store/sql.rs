//! The SQL both backends run, written once. Placeholders are `$1`, `$2`, ... in the order they
//! first appear: PostgreSQL reads them as positional parameters, and SQLite as named ones that
//! it numbers in order of appearance, so one text binds the same way on both (a unit test of
//! the SQLite backend checks every statement). What truly differs (column types, the insert's
//! clock, a purge's row address) stays in the backend.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::orders::{ListFilter, Position};

/// The columns of an order, in the order the backends decode them. `items` is read as text on
/// both (it is `JSONB` on PostgreSQL).
macro_rules! order_columns {
    () => {
        "id, customer_id, currency, CAST(items AS TEXT) AS items, total_minor, status, \
         created_at, updated_at, version"
    };
}

/// [`order_columns!`] as a value.
pub(super) const ORDER_COLUMNS: &str = order_columns!();

/// One order by id: `$1` id.
pub(super) const GET_ORDER: &str =
    concat!("SELECT ", order_columns!(), " FROM orders WHERE id = $1");

/// A status change at a known version: `$1` status, `$2` updated_at, `$3` id, `$4` version.
pub(super) const UPDATE_STATUS: &str = "UPDATE orders SET status = $1, updated_at = $2, \
    version = version + 1 WHERE id = $3 AND version = $4";

/// The newest order's place, for the next one's.
pub(super) const NEWEST_CREATED_AT: &str = "SELECT max(created_at) FROM orders";

/// Takes an idempotency key: inserts the hold, or takes over a completed record that expired
/// or a hold whose request ran out of time (a hold never expires by the TTL: its request may
/// still be running). `$1` scope, `$2` key, `$3` fingerprint, `$4` locked_until, `$5`
/// created_at (now), `$6` expires_at. One row affected: taken.
pub(super) const TAKE_KEY: &str = "INSERT INTO idempotency_keys (scope, key, fingerprint, status, \
    headers, body, locked_until, created_at, expires_at) \
    VALUES ($1, $2, $3, NULL, NULL, NULL, $4, $5, $6) \
    ON CONFLICT (scope, key) DO UPDATE SET fingerprint = excluded.fingerprint, \
    status = NULL, headers = NULL, body = NULL, locked_until = excluded.locked_until, \
    created_at = excluded.created_at, expires_at = excluded.expires_at \
    WHERE (idempotency_keys.status IS NOT NULL AND idempotency_keys.expires_at <= $5) \
    OR (idempotency_keys.status IS NULL AND idempotency_keys.locked_until <= $5)";

/// The record of a scope's key: `$1` scope, `$2` key.
pub(super) const EXISTING_KEY: &str = "SELECT fingerprint, CAST(status AS BIGINT) AS status, \
    headers, body FROM idempotency_keys WHERE scope = $1 AND key = $2";

/// Completes exactly this hold with its response: `$1` status, `$2` headers, `$3` body, `$4`
/// scope, `$5` key, `$6` the hold's created_at.
pub(super) const COMPLETE_KEY: &str = "UPDATE idempotency_keys SET status = $1, headers = $2, \
    body = $3 WHERE scope = $4 AND key = $5 AND created_at = $6 AND status IS NULL";

/// Gives up exactly this hold: `$1` scope, `$2` key, `$3` the hold's created_at.
pub(super) const RELEASE_KEY: &str = "DELETE FROM idempotency_keys \
    WHERE scope = $1 AND key = $2 AND created_at = $3 AND status IS NULL";

/// What a purge deletes, given the backend's row address (`rowid`, `ctid`): `$1` now, `$2`
/// batch size.
pub(super) fn purge_keys(row_address: &str) -> String {
    format!(
        "DELETE FROM idempotency_keys WHERE {row_address} IN \
         (SELECT {row_address} FROM idempotency_keys \
         WHERE (status IS NOT NULL AND expires_at <= $1) \
         OR (status IS NULL AND locked_until <= $1) LIMIT $2)"
    )
}

/// A bound value, typed as the domain has it; each backend decides how its columns hold it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Param {
    /// Text.
    Text(String),
    /// An integer.
    Int(i64),
    /// A point in time.
    Time(DateTime<Utc>),
    /// An order id.
    Id(Uuid),
}

/// A statement built at run time, with its parameters in placeholder order.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Query {
    /// The SQL.
    pub sql: String,
    /// `$1`, `$2`, ...
    pub params: Vec<Param>,
}

impl Query {
    fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    /// Appends `fragment` followed by the next placeholder, bound to `param`.
    fn bind(&mut self, fragment: &str, param: Param) {
        self.params.push(param);
        self.sql.push_str(fragment);
        self.sql.push('$');
        self.sql.push_str(&self.params.len().to_string());
    }

    /// ` AND ...` for each filter that is set: only present conditions reach the planner, so
    /// each listing uses its index.
    fn filter(&mut self, filter: &ListFilter) {
        if let Some(status) = filter.status {
            self.bind(" AND status = ", Param::Text(status.as_str().into()));
        }
        if let Some(customer) = &filter.customer_id {
            self.bind(" AND customer_id = ", Param::Text(customer.as_str().into()));
        }
        if let Some(from) = filter.created_from {
            self.bind(" AND created_at >= ", Param::Time(from));
        }
        if let Some(to) = filter.created_to {
            self.bind(" AND created_at < ", Param::Time(to));
        }
    }
}

/// A page of the newest-first listing: strictly after `after` (keyset, v2) or past `offset`
/// rows (v1), at most `limit` orders. Ties in `created_at` cannot happen (each order's place is
/// after the previous one's), and are broken by id all the same.
pub(super) fn list(
    filter: &ListFilter,
    after: Option<Position>,
    limit: i64,
    offset: Option<i64>,
) -> Query {
    let mut q = Query::new(format!("SELECT {ORDER_COLUMNS} FROM orders WHERE TRUE"));
    q.filter(filter);
    if let Some(p) = after {
        q.bind(" AND (created_at, id) < (", Param::Time(p.created_at));
        q.bind(", ", Param::Id(p.id));
        q.sql.push(')');
    }
    q.sql.push_str(" ORDER BY created_at DESC, id DESC");
    q.bind(" LIMIT ", Param::Int(limit));
    if let Some(offset) = offset {
        q.bind(" OFFSET ", Param::Int(offset));
    }
    q
}

/// How many orders match `filter`, counting at most `cap` of them (a count scans what it
/// counts: bounded, it costs the same on a table of a thousand orders or of a billion).
pub(super) fn count(filter: &ListFilter, cap: i64) -> Query {
    let mut q = Query::new("SELECT COUNT(*) FROM (SELECT 1 FROM orders WHERE TRUE");
    q.filter(filter);
    q.bind(" LIMIT ", Param::Int(cap));
    // PostgreSQL wants every subquery in FROM named.
    q.sql.push_str(") AS matching");
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orders::{CustomerId, OrderStatus};

    #[test]
    fn placeholders_follow_the_parameters() {
        let filter = ListFilter {
            status: Some(OrderStatus::Paid),
            customer_id: CustomerId::parse("c-1").ok(),
            ..ListFilter::default()
        };
        let q = list(&filter, None, 20, Some(40));
        assert!(
            q.sql.ends_with(
                "WHERE TRUE AND status = $1 AND customer_id = $2 \
                 ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
            ),
            "{}",
            q.sql
        );
        assert_eq!(
            q.params,
            [
                Param::Text("paid".into()),
                Param::Text("c-1".into()),
                Param::Int(20),
                Param::Int(40)
            ]
        );
        assert_eq!(count(&ListFilter::default(), 7).params, [Param::Int(7)]);
    }
}
