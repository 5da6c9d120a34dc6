//! The v2 request side, described for the OpenAPI document: the bodies, the query and the
//! conditional headers. The handlers parse them by hand, so these types are schema-only, each
//! mirroring what its parser accepts.

use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::api::openapi::{currency, customer_id, order_status, sku};

/// The body of `POST /api/v2/orders`. Unknown members are refused; every unit price must be in
/// the currency of the first one (422 otherwise), which becomes the order's currency.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrderV2 {
    /// Who orders.
    #[schema(schema_with = customer_id)]
    pub customer_id: String,
    /// 1 to 100 lines.
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<NewItemV2>,
}

/// One line of a new v2 order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewItemV2 {
    /// What is ordered.
    #[schema(schema_with = sku)]
    pub sku: String,
    /// How many.
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: u32,
    /// Price of one unit.
    pub unit_price: NewMoney,
}

/// An amount in minor units (cents for EUR, yen for JPY) and its currency.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMoney {
    /// 0 to 999999999999.
    #[schema(minimum = 0, maximum = 999_999_999_999_i64)]
    pub amount_minor: i64,
    /// ISO 4217 code.
    #[schema(schema_with = currency)]
    pub currency: String,
}

/// The query of `GET /api/v2/orders`; other parameters are ignored.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQueryV2 {
    /// Page size.
    #[param(nullable = false, minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<u32>,
    /// Where to continue: a `next_cursor` from an earlier page (422 for anything else).
    #[param(nullable = false, pattern = "^[A-Za-z0-9_-]+$")]
    pub cursor: Option<String>,
    /// Only orders in this status.
    #[param(nullable = false, schema_with = order_status)]
    pub status: Option<String>,
    /// Only this customer's orders.
    #[param(nullable = false, schema_with = customer_id)]
    pub customer_id: Option<String>,
    /// Only orders created at or after this instant (RFC 3339).
    #[param(nullable = false, format = DateTime)]
    pub created_from: Option<String>,
    /// Only orders created before this instant (RFC 3339).
    #[param(nullable = false, format = DateTime)]
    pub created_to: Option<String>,
}

/// The conditional request headers of the v2 order operations.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IfMatch {
    /// `*`, or the `ETag` of the version the change applies to (a list of tags is accepted;
    /// weak tags never match). Required: without it the answer is 428.
    #[serde(rename = "If-Match")]
    #[param(pattern = r#"^(\*|(W/)?"[!#-~]*"([ \t]*,[ \t]*(W/)?"[!#-~]*")*)$"#)]
    pub if_match: String,
}

/// The optional revalidation header of `GET /api/v2/orders/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IfNoneMatch {
    /// `*` or a list of entity tags: when one matches the current `ETag`, the answer is 304.
    #[serde(rename = "If-None-Match")]
    #[param(nullable = false)]
    pub if_none_match: Option<String>,
}
