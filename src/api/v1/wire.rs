//! The v1 response bodies. Money is a decimal string with exactly the currency's minor-unit
//! digits ("9.99" EUR, "1200" JPY).

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::openapi::{currency, customer_id, order_status, sku};
use crate::orders::{Order, format_minor};

/// An order on the v1 wire.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderV1 {
    /// UUIDv7, assigned by the server.
    id: Uuid,
    #[schema(schema_with = customer_id)]
    customer_id: String,
    #[schema(schema_with = currency)]
    currency: &'static str,
    #[schema(min_items = 1, max_items = 100)]
    items: Vec<ItemV1>,
    /// Sum of the lines, with the currency's minor digits.
    #[schema(pattern = r"^(0|[1-9][0-9]*)(\.[0-9]{2,3})?$")]
    total: String,
    #[schema(schema_with = order_status)]
    status: &'static str,
    /// RFC 3339 UTC, microseconds.
    #[schema(format = DateTime)]
    created_at: String,
    /// RFC 3339 UTC, microseconds; equals `created_at` until the first change.
    #[schema(format = DateTime)]
    updated_at: String,
    /// 1 at creation, +1 on every change.
    #[schema(minimum = 1)]
    version: i64,
}

/// One line of a v1 order.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemV1 {
    #[schema(schema_with = sku)]
    sku: String,
    #[schema(minimum = 1, maximum = 1000)]
    quantity: u32,
    /// Price of one unit, with the currency's minor digits.
    #[schema(pattern = r"^(0|[1-9][0-9]*)(\.[0-9]{2,3})?$")]
    unit_price: String,
}

impl From<&Order> for OrderV1 {
    fn from(o: &Order) -> Self {
        let ts = crate::orders::timestamp::format;
        Self {
            id: o.id,
            customer_id: o.customer_id.as_str().to_string(),
            currency: o.currency.code(),
            items: o
                .items
                .iter()
                .map(|i| ItemV1 {
                    sku: i.sku.as_str().to_string(),
                    quantity: i.quantity.get(),
                    unit_price: format_minor(i.unit_price_minor, o.currency),
                })
                .collect(),
            total: format_minor(o.total_minor, o.currency),
            status: o.status.as_str(),
            created_at: ts(o.created_at),
            updated_at: ts(o.updated_at),
            version: o.version,
        }
    }
}

/// A page of orders on the v1 wire, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListV1 {
    pub(super) items: Vec<OrderV1>,
    /// The page size used.
    #[schema(minimum = 1, maximum = 100)]
    pub(super) limit: u32,
    /// Orders skipped.
    #[schema(minimum = 0)]
    pub(super) offset: u64,
    /// Orders matching the filter, on every page: exact up to 10100 (the deepest page any
    /// offset reaches); 10101 means 10101 or more.
    #[schema(minimum = 0, maximum = 10101)]
    pub(super) total: u64,
}
