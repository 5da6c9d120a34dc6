//! v1 order handlers. Money is a decimal string with exactly the
//! currency's minor-unit digits ("9.99" EUR, "1200" JPY).

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use crate::api::body::{JsonBody, Pointer, Problems, QueryPairs};
use crate::api::create::{self, Idempotency};
use crate::api::openapi::{
    BadRequest, Conflict, IdempotencyKey, StatusChange, UnprocessableEntity,
};
use crate::api::status::{Expect, change_status, not_found, parse_id, parse_status_change};
use crate::api::v1::PREFIX;
use crate::api::v1::requests::{ListQueryV1, NewOrderV1};
use crate::api::v1::wire::{ListV1, OrderV1};
use crate::config::IdempotencySettings;
use crate::error::ApiError;
use crate::orders::{
    Currency, CustomerId, LineItem, ListFilter, MAX_ITEMS, NewOrder, Order, OrderStatus, Quantity,
    Sku, parse_minor,
};
use crate::state::AppState;
use crate::store::Store;

/// The path of the collection, for `Location` and the request fingerprint.
const COLLECTION: &str = "/api/v1/orders";

/// Default page size for listings.
pub const DEFAULT_LIMIT: u32 = 20;
/// Largest page size for listings.
pub const MAX_LIMIT: u32 = 100;
/// Largest `offset`: skipping rows costs a scan of them, so deeper pages are v2's (cursors).
pub const MAX_OFFSET: u64 = 10_000;
/// The largest `total` a listing reports: one more than the orders any v1 page can reach
/// (the deepest page ends at `MAX_OFFSET + MAX_LIMIT`). Counting scans what it counts, so a
/// count stops there; `total` = 10101 means "10101 or more".
pub const TOTAL_CAP: u64 = MAX_OFFSET + MAX_LIMIT as u64 + 1;

/// The v1 order routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(&format!("{PREFIX}/orders"), get(list).post(create))
        .route(
            &format!("{PREFIX}/orders/{{id}}"),
            get(fetch).patch(update_status),
        )
}

/// Parses a v1 create body, reporting every invalid field.
pub fn parse_new_order(body: &Value) -> Result<NewOrder, ApiError> {
    let mut p = Problems::default();
    let root = Pointer::Root;
    let Some(obj) = p.object(body, root, &["customer_id", "currency", "items"]) else {
        return p.finish(None);
    };
    let customer_id = p.string(obj, root, "customer_id", CustomerId::parse);
    let currency = p.string(obj, root, "currency", Currency::parse);
    let items = p.array(obj, root, "items", MAX_ITEMS, |p, line, at| {
        parse_item(p, line, at, currency)
    });
    p.finish(NewOrder::from_parts(customer_id, currency, items))
}

fn parse_item(
    p: &mut Problems,
    line: &Value,
    at: Pointer<'_>,
    currency: Option<Currency>,
) -> Option<LineItem> {
    let obj = p.object(line, at, &["sku", "quantity", "unit_price"])?;
    let sku = p.string(obj, at, "sku", Sku::parse);
    let quantity = p.integer(obj, at, "quantity", Quantity::try_from);
    let unit_price = match currency {
        Some(c) => p.string(obj, at, "unit_price", |s| parse_minor(s, c)),
        // Without a valid currency the digits cannot be judged, but the shape still can.
        None => {
            match obj.get("unit_price") {
                None | Some(Value::Null) => p.at(at.key("unit_price"), "is required"),
                Some(Value::String(_)) => {}
                Some(_) => p.at(at.key("unit_price"), "must be a string"),
            }
            None
        }
    };
    Some(LineItem {
        sku: sku?,
        quantity: quantity?,
        unit_price_minor: unit_price?,
    })
}

/// Creates an order.
#[utoipa::path(
    post,
    path = "/api/v1/orders",
    operation_id = "createOrder_v1",
    tag = "orders",
    params(IdempotencyKey),
    request_body(content = NewOrderV1, content_type = "application/json"),
    responses(
        (status = 201, description = "Created (or, for a repeated `Idempotency-Key`, the first \
            request's response replayed); `Location` names the order", body = OrderV1),
        (status = 409, response = Conflict),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(store): State<Store>,
    State(cfg): State<IdempotencySettings>,
    idem: Idempotency,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let new = parse_new_order(&body)?;
    create::create(
        &store,
        cfg,
        idem,
        (COLLECTION, &body),
        new,
        |order: &Order| (OrderV1::from(order), vec![]),
    )
    .await
}

/// Reads one order.
#[utoipa::path(
    get,
    path = "/api/v1/orders/{id}",
    operation_id = "getOrder_v1",
    tag = "orders",
    params(("id" = Uuid, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order", body = OrderV1),
    ),
    security(("bearer" = []))
)]
pub async fn fetch(
    State(store): State<Store>,
    Path(id): Path<String>,
) -> Result<Json<OrderV1>, ApiError> {
    let uuid = parse_id(&id)?;
    let order = store.get(uuid).await?.ok_or_else(|| not_found(&id))?;
    Ok(Json(OrderV1::from(&order)))
}

/// Parses `status`, `customer_id`, `limit` and `offset`, reporting every invalid parameter.
/// Other parameters are ignored.
fn parse_list_query(params: &[(String, String)]) -> Result<(ListFilter, u32, u64), ApiError> {
    let mut p = Problems::default();
    let mut filter = ListFilter::default();
    let mut limit = DEFAULT_LIMIT;
    let mut offset = 0;
    for (name, value) in params {
        match name.as_str() {
            "status" => match OrderStatus::parse(value) {
                Some(s) => filter.status = Some(s),
                None => p.param(
                    name,
                    "must be one of pending, paid, shipped, delivered, cancelled",
                ),
            },
            "customer_id" => match CustomerId::parse(value) {
                Ok(c) => filter.customer_id = Some(c),
                Err(e) => p.param(name, e),
            },
            "limit" => match value.parse::<u32>() {
                Ok(n @ 1..=MAX_LIMIT) => limit = n,
                _ => p.param(name, format!("must be an integer from 1 to {MAX_LIMIT}")),
            },
            "offset" => match value.parse::<u64>() {
                Ok(n @ 0..=MAX_OFFSET) => offset = n,
                _ => p.param(name, format!("must be an integer from 0 to {MAX_OFFSET}")),
            },
            _ => {}
        }
    }
    p.finish(Some((filter, limit, offset)))
}

/// Lists orders, newest first (ties broken by id), with offset pagination.
#[utoipa::path(
    get,
    path = "/api/v1/orders",
    operation_id = "listOrders_v1",
    tag = "orders",
    params(ListQueryV1),
    responses(
        (status = 200, description = "A page of orders", body = ListV1),
        (status = 400, response = BadRequest),
        (status = 422, response = UnprocessableEntity),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(store): State<Store>,
    QueryPairs(params): QueryPairs,
) -> Result<Json<ListV1>, ApiError> {
    let (filter, limit, offset) = parse_list_query(&params)?;
    let page = store.list(&filter, limit, offset, TOTAL_CAP).await?;
    Ok(Json(ListV1 {
        items: page.items.iter().map(OrderV1::from).collect(),
        limit,
        offset,
        total: page.total,
    }))
}

/// Moves an order to another status, if the state machine allows it.
#[utoipa::path(
    patch,
    path = "/api/v1/orders/{id}",
    operation_id = "changeOrderStatus_v1",
    tag = "orders",
    params(("id" = Uuid, Path, description = "The order's id")),
    request_body(content = StatusChange, content_type = "application/json"),
    responses(
        (status = 200, description = "The order after the change", body = OrderV1),
        (status = 409, response = Conflict),
    ),
    security(("bearer" = []))
)]
pub async fn update_status(
    State(store): State<Store>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<OrderV1>, ApiError> {
    let uuid = parse_id(&id)?;
    let to = parse_status_change(&body)?;
    let order = change_status(&store, uuid, to, &Expect::Any).await?;
    Ok(Json(OrderV1::from(&order)))
}
