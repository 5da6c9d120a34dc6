//! `/api/v2`: orders with money as `{"amount_minor", "currency"}`, cursor pagination that no
//! concurrent insert can disturb, created-at filters, and conditional updates (`ETag` on reads,
//! `If-Match` required on writes).

pub mod openapi;
pub mod orders;
pub mod wire;

use axum::Router;

use crate::state::AppState;

/// The v2 routes, to be nested under `/api/v2`, with the public OpenAPI document
/// (describing API-key security only when `secured`, as the API is served).
pub fn router(secured: bool) -> Router<AppState> {
    orders::router().route(
        crate::api::openapi::DOCUMENT_NAME,
        crate::api::openapi::route(move || openapi::document(secured)),
    )
}
