//! The v2 wire: money as `{"amount_minor": 1234, "currency": "EUR"}`, RFC 3339 timestamps, and
//! opaque cursors. Bodies are parsed field by field so one 422 lists every problem.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::DateTime;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::body::{Pointer, Problems};
use crate::api::openapi::{currency, customer_id, order_status, sku};
use crate::error::ApiError;
use crate::orders::{
    Currency, CustomerId, LineItem, ListFilter, MAX_ITEMS, MAX_UNIT_PRICE_MINOR, NewOrder, Order,
    OrderStatus, Position, Quantity, Sku, timestamp,
};

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 20;
/// Largest page size.
pub const MAX_LIMIT: u32 = 100;

/// An amount in a currency's minor units (cents for EUR, yen for JPY).
#[derive(Debug, Serialize, ToSchema)]
pub struct Money {
    #[schema(minimum = 0)]
    amount_minor: i64,
    #[schema(schema_with = currency)]
    currency: &'static str,
}

impl Money {
    fn new(amount_minor: i64, currency: Currency) -> Self {
        Self {
            amount_minor,
            currency: currency.code(),
        }
    }
}

/// An order on the v2 wire.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderV2 {
    /// UUIDv7, assigned by the server.
    id: Uuid,
    #[schema(schema_with = customer_id)]
    customer_id: String,
    #[schema(schema_with = order_status)]
    status: &'static str,
    #[schema(min_items = 1, max_items = 100)]
    items: Vec<ItemV2>,
    /// Sum of the lines.
    total: Money,
    /// RFC 3339 UTC, microseconds.
    #[schema(format = DateTime)]
    created_at: String,
    /// RFC 3339 UTC, microseconds; equals `created_at` until the first change.
    #[schema(format = DateTime)]
    updated_at: String,
    /// 1 at creation, +1 on every change; the `ETag` is this number, quoted.
    #[schema(minimum = 1)]
    version: i64,
}

/// One line of a v2 order.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemV2 {
    #[schema(schema_with = sku)]
    sku: String,
    #[schema(minimum = 1, maximum = 1000)]
    quantity: u32,
    /// Price of one unit.
    unit_price: Money,
}

impl From<&Order> for OrderV2 {
    fn from(o: &Order) -> Self {
        Self {
            id: o.id,
            customer_id: o.customer_id.as_str().to_string(),
            status: o.status.as_str(),
            items: o
                .items
                .iter()
                .map(|i| ItemV2 {
                    sku: i.sku.as_str().to_string(),
                    quantity: i.quantity.get(),
                    unit_price: Money::new(i.unit_price_minor, o.currency),
                })
                .collect(),
            total: Money::new(o.total_minor, o.currency),
            created_at: timestamp::format(o.created_at),
            updated_at: timestamp::format(o.updated_at),
            version: o.version,
        }
    }
}

/// A page of orders, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageV2 {
    /// The orders.
    pub data: Vec<OrderV2>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true, pattern = "^[A-Za-z0-9_-]+$")]
    pub next_cursor: Option<String>,
    /// Ready-made URLs of this page and the next.
    pub links: Links,
}

/// `self` and `next` URLs, with the same filters and limit.
#[derive(Debug, Serialize, ToSchema)]
pub struct Links {
    /// This page.
    #[serde(rename = "self")]
    #[schema(pattern = "^/api/v2/orders\\?")]
    pub this: String,
    /// The next page, `null` on the last.
    #[schema(required = true, pattern = "^/api/v2/orders\\?")]
    pub next: Option<String>,
}

/// Parses a v2 create body, reporting every invalid field. The order's currency is the one
/// every unit price names; prices in several currencies are refused.
pub fn parse_new_order(body: &Value) -> Result<NewOrder, ApiError> {
    let mut p = Problems::default();
    let root = Pointer::Root;
    let Some(obj) = p.object(body, root, &["customer_id", "items"]) else {
        return p.finish(None);
    };
    let customer_id = p.string(obj, root, "customer_id", CustomerId::parse);
    let mut currency: Option<Currency> = None;
    let items = p.array(obj, root, "items", MAX_ITEMS, |p, line, at| {
        parse_item(p, line, at, &mut currency)
    });
    p.finish(NewOrder::from_parts(customer_id, currency, items))
}

fn parse_item(
    p: &mut Problems,
    line: &Value,
    at: Pointer<'_>,
    currency: &mut Option<Currency>,
) -> Option<LineItem> {
    let obj = p.object(line, at, &["sku", "quantity", "unit_price"])?;
    let sku = p.string(obj, at, "sku", Sku::parse);
    let quantity = p.integer(obj, at, "quantity", Quantity::try_from);
    let (amount, price_currency) = parse_money(p, obj, at, "unit_price");
    if let Some(c) = price_currency {
        match currency {
            None => *currency = Some(c),
            Some(first) if *first != c => p.at(
                at.key("unit_price").key("currency"),
                format!("must be {}, the currency of the first item", first.code()),
            ),
            Some(_) => {}
        }
    }
    Some(LineItem {
        sku: sku?,
        quantity: quantity?,
        unit_price_minor: amount.filter(|_| price_currency.is_some())?,
    })
}

/// A required money member `key` of the object `obj` at `at`: its amount and currency, each
/// `None` when invalid (both are checked, so every problem is reported).
fn parse_money(
    p: &mut Problems,
    obj: &Map<String, Value>,
    at: Pointer<'_>,
    key: &str,
) -> (Option<i64>, Option<Currency>) {
    let at = at.key(key);
    let money = match obj.get(key) {
        None | Some(Value::Null) => {
            p.at(at, "is required");
            return (None, None);
        }
        Some(v) => match p.object(v, at, &["amount_minor", "currency"]) {
            Some(m) => m,
            None => return (None, None),
        },
    };
    let amount = p.integer(money, at, "amount_minor", |n| match n {
        0..=MAX_UNIT_PRICE_MINOR => Ok(n),
        _ => Err(format!(
            "must be an integer from 0 to {MAX_UNIT_PRICE_MINOR}"
        )),
    });
    let currency = p.string(money, at, "currency", Currency::parse);
    (amount, currency)
}

/// A parsed listing query.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Which orders.
    pub filter: ListFilter,
    /// Page size.
    pub limit: u32,
    /// Where the page starts (after this order), or from the newest.
    pub after: Option<Position>,
}

/// Parses `limit`, `cursor`, `status`, `customer_id`, `created_from` and `created_to`,
/// reporting every invalid parameter. Other parameters are ignored.
pub fn parse_list_query(params: &[(String, String)]) -> Result<ListQuery, ApiError> {
    let mut p = Problems::default();
    let mut q = ListQuery {
        filter: ListFilter::default(),
        limit: DEFAULT_LIMIT,
        after: None,
    };
    for (name, value) in params {
        match name.as_str() {
            "status" => match OrderStatus::parse(value) {
                Some(s) => q.filter.status = Some(s),
                None => p.param(
                    name,
                    "must be one of pending, paid, shipped, delivered, cancelled",
                ),
            },
            "customer_id" => match CustomerId::parse(value) {
                Ok(c) => q.filter.customer_id = Some(c),
                Err(e) => p.param(name, e),
            },
            "limit" => match value.parse::<u32>() {
                Ok(n @ 1..=MAX_LIMIT) => q.limit = n,
                _ => p.param(name, format!("must be an integer from 1 to {MAX_LIMIT}")),
            },
            "cursor" => match decode_cursor(value) {
                Some(position) => q.after = Some(position),
                None => p.param(name, "is not a cursor this API issued"),
            },
            "created_from" | "created_to" => match DateTime::parse_from_rfc3339(value) {
                Ok(t) if name == "created_from" => q.filter.created_from = Some(t.to_utc()),
                Ok(t) => q.filter.created_to = Some(t.to_utc()),
                Err(_) => p.param(
                    name,
                    "must be an RFC 3339 timestamp such as 2026-11-23T00:00:00Z",
                ),
            },
            _ => {}
        }
    }
    p.finish(Some(q))
}

/// The cursor for a position: opaque to clients (base64url of the creation time in
/// microseconds and the id).
pub fn encode_cursor(at: Position) -> String {
    URL_SAFE_NO_PAD.encode(format!(
        "{}.{}",
        at.created_at.timestamp_micros(),
        at.id.simple()
    ))
}

/// Where `order` stands in the newest-first order.
pub fn position(order: &Order) -> Position {
    Position {
        created_at: order.created_at,
        id: order.id,
    }
}

/// The position a cursor names, if it is one this API could have issued: its time must be one
/// both databases represent (years 1 to 9999, as RFC 3339 writes them), so that a forged cursor
/// is refused here rather than by the database.
fn decode_cursor(raw: &str) -> Option<Position> {
    let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let (micros, id) = text.split_once('.')?;
    let created_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    (1..=9999)
        .contains(&chrono::Datelike::year(&created_at))
        .then_some(Position {
            created_at,
            id: Uuid::try_parse(id).ok()?,
        })
}

/// The query string that asks for the same listing with `cursor` (none: the first page).
pub fn query_string(q: &ListQuery, cursor: Option<&str>) -> String {
    let f = &q.filter;
    let mut parts = vec![format!("limit={}", q.limit)];
    if let Some(s) = f.status {
        parts.push(format!("status={}", s.as_str()));
    }
    if let Some(c) = &f.customer_id {
        parts.push(format!("customer_id={}", c.as_str()));
    }
    // RFC 3339 in UTC with `Z`: no `+` that a query string would need escaped.
    if let Some(t) = f.created_from {
        parts.push(format!("created_from={}", timestamp::format(t)));
    }
    if let Some(t) = f.created_to {
        parts.push(format!("created_to={}", timestamp::format(t)));
    }
    if let Some(c) = cursor {
        parts.push(format!("cursor={c}"));
    }
    parts.join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cursors_round_trip_and_reject_forgeries() {
        let new = parse_new_order(&json!({
            "customer_id": "c-1",
            "items": [{"sku": "A", "quantity": 1,
                       "unit_price": {"amount_minor": 5, "currency": "EUR"}}]
        }))
        .unwrap();
        let order = Order::create(new, crate::orders::now());
        let cursor = encode_cursor(position(&order));
        assert_eq!(decode_cursor(&cursor), Some(position(&order)));
        for forged in ["", "x", "!!!", &URL_SAFE_NO_PAD.encode("12.not-a-uuid")] {
            assert_eq!(decode_cursor(forged), None, "{forged:?}");
        }
    }

    #[test]
    fn mixed_currencies_are_refused_where_they_differ() {
        let err = parse_new_order(&json!({
            "customer_id": "c-1",
            "items": [
                {"sku": "A", "quantity": 1, "unit_price": {"amount_minor": 5, "currency": "EUR"}},
                {"sku": "B", "quantity": 1, "unit_price": {"amount_minor": 5, "currency": "USD"}}
            ]
        }))
        .unwrap_err();
        let ApiError::Validation { errors, .. } = err else {
            panic!("expected a validation error");
        };
        let pointers: Vec<_> = errors.iter().filter_map(|e| e.pointer.as_deref()).collect();
        assert_eq!(pointers, ["/items/1/unit_price/currency"]);
    }
}
