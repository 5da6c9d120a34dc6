//! Idempotency records on the [`Store`]: reserve a key, complete it in the same transaction
//! as the order it created, release it when the request fails, purge what expired. The
//! decisions live in [`crate::idempotency`]; the SQL per backend.

use chrono::{DateTime, Utc};

use super::{Store, StoreError, encode_items};
use crate::idempotency::{Hold, Render, Reservation, StoredResponse};
use crate::orders::Order;

/// A key purged between the failed insert and the read is simply tried again, this often.
const RESERVE_ATTEMPTS: usize = 3;

/// A record as both backends return it, before decoding.
pub(crate) struct ExistingRecord {
    pub(crate) fingerprint: String,
    pub(crate) status: Option<i64>,
    pub(crate) headers: Option<String>,
    pub(crate) body: Option<Vec<u8>>,
}

impl Store {
    /// Claims `hold.key` for `hold.scope`, or says why not (held, other payload, completed).
    pub async fn reserve(&self, hold: &Hold) -> Result<Reservation, StoreError> {
        self.observe_in("idempotency_keys", "reserve_idempotency_key", async {
            for _ in 0..RESERVE_ATTEMPTS {
                if dispatch!(self, s => s.take(hold).await)? {
                    return Ok(Reservation::Acquired);
                }
                if let Some(record) = dispatch!(self, s => s.existing(hold).await)? {
                    let response = decode(hold, record.status, record.headers, record.body)?;
                    return Ok(Reservation::of_existing(
                        &record.fingerprint,
                        &hold.fingerprint,
                        response,
                    ));
                }
            }
            Ok(Reservation::InProgress)
        })
        .await
    }

    /// Stores `order` (placed as by [`Store::insert`]) and completes `hold` with the response
    /// `render` makes of it, in one transaction: either both happen or neither. `None` (and
    /// nothing stored) when the hold was lost meanwhile.
    pub async fn insert_completing(
        &self,
        order: &mut Order,
        hold: &Hold,
        render: &std::sync::Arc<Render>,
    ) -> Result<Option<StoredResponse>, StoreError> {
        let items = encode_items(&order.items);
        self.observe("insert_order", async {
            dispatch!(self, s => s.insert_completing(order, &items, hold, render).await)
        })
        .await
    }

    /// Gives up `hold` (its request failed), so that a retry is processed afresh.
    pub async fn release(&self, hold: &Hold) -> Result<(), StoreError> {
        self.observe_in("idempotency_keys", "release_idempotency_key", async {
            dispatch!(self, s => s.release(hold).await)
        })
        .await
    }

    /// Deletes, at most `batch` per statement, completed records that expired by `now` and holds
    /// whose request ran out of time by then; returns how many. Background work: timed and
    /// counted, but not traced (each run would be a trace of its own).
    pub async fn purge_idempotency(
        &self,
        now: DateTime<Utc>,
        batch: u32,
    ) -> Result<u64, StoreError> {
        let mut purged = 0;
        loop {
            let n = self
                .untraced("purge_idempotency_keys", async {
                    dispatch!(self, s => s.purge_idempotency(now, i64::from(batch)).await)
                })
                .await?;
            purged += n;
            if n < u64::from(batch) {
                return Ok(purged);
            }
        }
    }
}

/// The headers column: a JSON array of `[name, value]` pairs.
pub(crate) fn encode_headers(headers: &[(String, String)]) -> String {
    serde_json::to_string(headers).unwrap_or_else(|_| "[]".into())
}

/// The stored response, or `None` while the record is held.
fn decode(
    hold: &Hold,
    status: Option<i64>,
    headers: Option<String>,
    body: Option<Vec<u8>>,
) -> Result<Option<StoredResponse>, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        id: format!("idempotency key {:?} of {}", hold.key.as_str(), hold.scope),
        reason,
    };
    let Some(status) = status else {
        return Ok(None);
    };
    let status = u16::try_from(status).map_err(|e| corrupt(format!("status: {e}")))?;
    let headers = serde_json::from_str(headers.as_deref().unwrap_or("[]"))
        .map_err(|e| corrupt(format!("headers: {e}")))?;
    Ok(Some(StoredResponse {
        status,
        headers,
        body: body.unwrap_or_default(),
    }))
}
