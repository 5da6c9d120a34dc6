//! What both versions share about one order: its id in the path, and status changes with
//! optimistic concurrency (v1 retries lost races; v2 makes the client name the version it saw).

use metrics::counter;
use serde_json::Value;
use uuid::Uuid;

use crate::api::body::{Pointer, Problems};
use crate::error::ApiError;
use crate::orders::{self, Order, OrderStatus};
use crate::store::Store;
use crate::telemetry::metrics::STATUS_TRANSITIONS;

/// Parses an order id from the path; anything that is not a UUID names no order.
pub fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| not_found(raw))
}

/// The 404 for an order id.
pub fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("no order with id {id:?}"))
}

/// Parses a status-change body: `{"status": "..."}`.
pub fn parse_status_change(body: &Value) -> Result<OrderStatus, ApiError> {
    let mut p = Problems::default();
    let status = p.object(body, Pointer::Root, &["status"]).and_then(|obj| {
        p.string(obj, Pointer::Root, "status", |s| {
            OrderStatus::parse(s)
                .ok_or("must be one of pending, paid, shipped, delivered, cancelled")
        })
    });
    p.finish(status)
}

/// Which versions of the order a status change may apply to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Whatever the current version is: a lost race is retried from the new state.
    Any,
    /// Only these (the client's `If-Match`): anything else is 412, including a lost race.
    Versions(Vec<i64>),
}

/// Applies a status change with optimistic concurrency: read, check the precondition and the
/// transition, write only if the version is unchanged. Concurrent requests never lose a
/// transition, and each transition has exactly one winner.
pub async fn change_status(
    store: &Store,
    id: Uuid,
    to: OrderStatus,
    expect: &Expect,
) -> Result<Order, ApiError> {
    loop {
        let mut order = store
            .get(id)
            .await?
            .ok_or_else(|| not_found(&id.to_string()))?;
        if let Expect::Versions(versions) = expect
            && !versions.contains(&order.version)
        {
            return Err(stale(&order));
        }
        let next = order
            .status
            .transition(to)
            .map_err(|e| ApiError::Conflict {
                detail: e.to_string(),
                current_status: e.from.as_str(),
            })?;
        let now = orders::now();
        if store.update_status(id, order.version, next, now).await? {
            counter!(STATUS_TRANSITIONS, "from" => order.status.as_str(), "to" => next.as_str())
                .increment(1);
            order.status = next;
            order.version += 1;
            order.updated_at = now;
            return Ok(order);
        }
        if let Expect::Versions(_) = expect {
            // Changed between our read and our write: the client's version is gone too.
            let current = store.get(id).await?;
            return Err(current.map_or_else(|| not_found(&id.to_string()), |o| stale(&o)));
        }
    }
}

/// The strong entity tag of an order: its version.
pub fn etag(order: &Order) -> String {
    format!("\"{}\"", order.version)
}

fn stale(order: &Order) -> ApiError {
    ApiError::PreconditionFailed {
        detail: format!(
            "the order is at version {}; If-Match names another. GET it again and retry with \
             its ETag",
            order.version
        ),
        etag: Some(etag(order)),
    }
}
