//! The v1 OpenAPI document: operations come from the handlers in [`super::orders`], response
//! schemas from [`super::wire`], and the request side from the schema-only types in
//! [`super::requests`].

use axum::body::Bytes;
use utoipa::OpenApi;

use super::orders;
use super::requests::NewOrderV1;
use super::wire::{ItemV1, ListV1, OrderV1};
use crate::api::openapi::{self, StatusChange, Version};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orders-api v1",
        version = "1.0.0",
        description = "Orders with decimal-string money and offset pagination. Deprecated: \
                       every response carries `Deprecation`, `Sunset` and a `Link` to v2."
    ),
    paths(orders::create, orders::fetch, orders::list, orders::update_status),
    components(schemas(OrderV1, ItemV1, ListV1, NewOrderV1, StatusChange)),
    tags((name = "orders", description = "Create, read, list and move orders through their life"))
)]
struct V1Doc;

/// The rendered v1 document; `secured`: whether the API asks for API keys.
pub fn document(secured: bool) -> Bytes {
    openapi::finish(
        V1Doc::openapi(),
        Version {
            name: "v1",
            deprecated: true,
            secured,
        },
    )
}
