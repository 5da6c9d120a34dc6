//! The v2 OpenAPI document: operations come from the handlers in [`super::orders`], response
//! schemas from [`super::wire`], and the request side from the schema-only types in
//! [`super::requests`].

use axum::body::Bytes;
use utoipa::OpenApi;

use super::orders;
use super::requests::{NewItemV2, NewMoney, NewOrderV2};
use super::wire::{ItemV2, Links, Money, OrderV2, PageV2};
use crate::api::openapi::{self, StatusChange, Version};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orders-api v2",
        version = "2.0.0",
        description = "Orders with money as integer minor units and a currency, cursor \
                       pagination, and conditional status changes (`ETag` / `If-Match`)."
    ),
    paths(orders::create, orders::fetch, orders::list, orders::update_status),
    components(schemas(OrderV2, ItemV2, Money, PageV2, Links, NewOrderV2, NewItemV2, NewMoney, StatusChange)),
    tags((name = "orders", description = "Create, read, list and move orders through their life"))
)]
struct V2Doc;

/// The rendered v2 document; `secured`: whether the API asks for API keys.
pub fn document(secured: bool) -> Bytes {
    openapi::finish(
        V2Doc::openapi(),
        Version {
            name: "v2",
            deprecated: false,
            secured,
        },
    )
}
