//! Creating an order, shared by both versions: with an `Idempotency-Key`, the first request's
//! response is stored in the same transaction as the order, and repeats get it back (from any
//! replica) instead of creating a second order. A keyed create runs in a task of its own, so a
//! client that goes away (or a request timeout) cannot leave its key held half-way.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::auth::Principal;
use crate::config::IdempotencySettings;
use crate::error::ApiError;
use crate::idempotency::{self, Hold, IdempotencyKey, Render, Reservation, StoredResponse};
use crate::orders::{self, NewOrder, Order};
use crate::resilience::client_ip::ClientIp;
use crate::resilience::in_flight::Slot;
use crate::store::Store;
use crate::store::reach::Reach;
use crate::telemetry::metrics::{IDEMPOTENCY_REQUESTS, ORDERS_CREATED, counter_by};

/// The request's `Idempotency-Key` and the client it belongs to, if it sent one, with what a
/// keyed create needs to outlive its request: the request's in-flight slot, and the tracker
/// that shutdown waits on.
#[derive(Debug, Clone)]
pub struct Idempotency {
    key: Option<(IdempotencyKey, String)>,
    slot: Option<Slot>,
    tasks: TaskTracker,
}

impl<S> FromRequestParts<S> for Idempotency
where
    Arc<ClientIp>: FromRef<S>,
    TaskTracker: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let mut values = parts.headers.get_all(idempotency::HEADER).iter();
        let key = match (values.next(), values.next()) {
            (None, _) => None,
            (Some(v), None) => Some(
                IdempotencyKey::parse(v.as_bytes())
                    .map_err(|e| ApiError::BadRequest(format!("the Idempotency-Key header {e}")))?,
            ),
            (Some(_), Some(_)) => {
                return Err(ApiError::BadRequest(
                    "send at most one Idempotency-Key header".into(),
                ));
            }
        };
        // The client is worked out only for keyed requests: a plain create needs no scope.
        let key = key.map(|key| (key, scope(parts, &Arc::<ClientIp>::from_ref(state))));
        Ok(Self {
            slot: key
                .as_ref()
                .and_then(|_| parts.extensions.get::<Slot>().cloned()),
            key,
            tasks: TaskTracker::from_ref(state),
        })
    }
}

/// Whose keys these are: the API key's id when the request has one, else the client address
/// (behind trusted proxies, IPv6 by prefix), so one client can neither replay nor block
/// another's requests.
fn scope(parts: &Parts, clients: &ClientIp) -> String {
    if let Some(principal) = parts.extensions.get::<Principal>() {
        return format!("key:{}", principal.key_id);
    }
    match parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(peer)) => {
            let ip = clients.key(clients.resolve(peer.ip(), &parts.headers));
            format!("ip:{ip}")
        }
        None => "ip:unknown".into(),
    }
}

/// The 201 of a create: `wire` as JSON, its `Location`, and `extra` headers.
fn created(
    location: String,
    extra: Vec<(String, String)>,
    wire: &impl Serialize,
) -> Result<StoredResponse, String> {
    let mut headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("location".to_string(), location),
    ];
    headers.extend(extra);
    Ok(StoredResponse {
        status: StatusCode::CREATED.as_u16(),
        headers,
        body: serde_json::to_vec(wire).map_err(|e| format!("cannot encode an order: {e}"))?,
    })
}

/// What a version makes of a created order: its body, and its extra headers.
pub type Wire<W> = fn(&Order) -> (W, Vec<(String, String)>);

/// Creates the order `new` in the collection at `route` and answers 201 with what `wire`
/// makes of it, honouring the `Idempotency-Key` when there is one. `route` and the parsed
/// `body` are the request's fingerprint: a v1 and a v2 create differ. The response is made
/// after the store has given the order its place (its `created_at`, in commit order), and, for
/// a keyed create, is stored in the same transaction as the order.
pub async fn create<W: Serialize + 'static>(
    store: &Store,
    cfg: IdempotencySettings,
    idem: Idempotency,
    (route, body): (&'static str, &Value),
    new: NewOrder,
    wire: Wire<W>,
) -> Result<Response, ApiError> {
    let mut order = Order::create(new, orders::now());
    let render: Arc<Render> = Arc::new(move |order: &Order| {
        let (body, extra) = wire(order);
        created(format!("{route}/{}", order.id), extra, &body)
    });
    let Some((key, scope)) = idem.key else {
        store.insert(&mut order).await?;
        let response = render(&order).map_err(ApiError::Internal)?;
        return Ok(respond(response, &order, false));
    };
    let now = orders::now();
    let hold = Hold {
        scope,
        key,
        fingerprint: idempotency::fingerprint("POST", route, body),
        created_at: now,
        locked_until: later(now, cfg.lock_timeout),
        expires_at: later(now, cfg.ttl),
    };
    // Once a keyed create has started, it runs to its end in a task of its own, even if the
    // client goes away or the request times out: the hold is then either completed (a retry
    // gets the replay) or released (a retry starts afresh), never left to lapse. The task
    // keeps the request's in-flight slot, reports to the request's breaker call while that
    // lasts, and is tracked so that shutdown waits for it.
    let store = store.clone();
    let (slot, reach) = (idem.slot, Reach::current());
    let run = idem.tasks.spawn(
        async move {
            let _slot = slot;
            Reach::scope(reach, keyed(&store, &hold, order, &render)).await
        }
        .instrument(tracing::Span::current()),
    );
    run.await
        .map_err(|e| ApiError::Internal(format!("idempotent create task failed: {e}")))?
}

/// Reserves the key, then stores the order and completes the record in one transaction.
async fn keyed(
    store: &Store,
    hold: &Hold,
    mut order: Order,
    render: &Arc<Render>,
) -> Result<Response, ApiError> {
    let outcome = match store.reserve(hold).await {
        Ok(outcome) => outcome,
        Err(e) => {
            // The insert may have landed before the failure: give it back.
            release(store, hold).await;
            return Err(e.into());
        }
    };
    let label = match &outcome {
        Reservation::Acquired => "new",
        Reservation::Completed(_) => "replayed",
        Reservation::InProgress => "in_progress",
        Reservation::Mismatch => "mismatch",
    };
    counter_by(IDEMPOTENCY_REQUESTS, "outcome", label).increment(1);
    match outcome {
        Reservation::Acquired => {}
        Reservation::Completed(stored) => return Ok(respond(stored, &order, true)),
        Reservation::InProgress => return Err(ApiError::IdempotencyInProgress),
        Reservation::Mismatch => return Err(ApiError::IdempotencyMismatch),
    }
    match store.insert_completing(&mut order, hold, render).await {
        Ok(Some(response)) => Ok(respond(response, &order, false)),
        // Held past lock_timeout and taken over by a repeat: that one answers the client.
        Ok(None) => Err(ApiError::IdempotencyInProgress),
        Err(e) => {
            release(store, hold).await;
            Err(e.into())
        }
    }
}

/// Gives up a hold whose request failed, so that a retry is processed afresh. A release
/// deletes only this hold; if it fails too, the hold lapses at `lock_timeout`.
async fn release(store: &Store, hold: &Hold) {
    if let Err(e) = store.release(hold).await {
        tracing::warn!(error = %e, "cannot release an idempotency key; it lapses at lock_timeout");
    }
}

/// The response, counted as a created order unless it is a replay.
fn respond(stored: StoredResponse, order: &Order, replayed: bool) -> Response {
    if !replayed {
        counter_by(ORDERS_CREATED, "currency", order.currency.code()).increment(1);
    }
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut res = (status, stored.body).into_response();
    let headers = res.headers_mut();
    for (name, value) in &stored.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            headers.insert(name, value);
        }
    }
    if replayed {
        headers.insert(
            idempotency::REPLAYED_HEADER,
            HeaderValue::from_static("true"),
        );
    }
    res
}

/// `now + d`, saturating instead of overflowing on absurd durations.
fn later(now: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
