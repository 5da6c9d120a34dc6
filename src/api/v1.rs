//! `/api/v1`: orders with decimal-string money and offset pagination.

pub mod openapi;
pub mod orders;

use axum::Router;

use crate::state::AppState;

/// The v1 routes, to be nested under `/api/v1`, with the public OpenAPI document
/// (describing API-key security only when `secured`, as the API is served).
pub fn router(secured: bool) -> Router<AppState> {
    orders::router().route(
        crate::api::openapi::DOCUMENT_NAME,
        crate::api::openapi::route(move || openapi::document(secured)),
    )
}
